// The CTA order of the Hopper kernel for unbalanced masks (launch.h, launch_heavy_rows_first): heavy mask
// rows (listed blocks >= twice the mean over all rows) first, in their natural order, then every other row in
// its natural order. One CTA of 1024 threads, three passes over the counts (sum, heavy count, stable
// scatter); a few microseconds for the 4096 rows of B = 1, H = 16, N = 32K.
//
// Why this order: the hardware grid hands CTAs to SMs in linear order as SMs free up (greedy list
// scheduling), so the makespan exceeds the mean load by at most the work of the tiles that start last. A row
// listing many times the mean number of blocks that starts in the last wave extends the kernel by its whole
// length; started first, it overlaps every other row. Rows within a factor of two of the mean (uniform random
// masks, causal rows, which the natural order already takes longest first) keep the natural, head-major
// order, whose concurrent CTAs share one head's K and V in L2 (a fully length-sorted order mixed the heads
// and lost that: hopper/NOTES.md, "Persistent grid trial").
#include "launch.h"

namespace sparge::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

// Block-wide sum of one value per thread (every thread gets it). `scratch`: kWarps values.
template <typename T>
__device__ T block_sum(T x, T* scratch) {
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch free (an earlier call's readers are done)
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  return total;
}

// Natural position L (the grid's linear CTA index without an order: q block NQB - 1 - (L % NQB) of row group
// L / NQB = batch * Hq + head) -> the row's listed-block count.
__device__ __forceinline__ int count_at(const int* counts, int64_t L, int nqb) {
  const int64_t group = L / nqb;
  const int x = static_cast<int>(L - group * nqb);
  return counts[group * nqb + (nqb - 1 - x)];
}

__global__ void __launch_bounds__(kThreads)
    heavy_rows_first_kernel(const int* counts, int64_t tiles, int nqb, int* order) {
  __shared__ long long sums[kWarps];
  __shared__ int ranks[kWarps];
  long long local = 0;
  for (int64_t L = threadIdx.x; L < tiles; L += kThreads) local += count_at(counts, L, nqb);
  const long long total = block_sum(local, sums);
  // heavy: count >= 2 * mean, i.e. count * tiles >= 2 * total (exact in 64-bit: counts <= 2^31, tiles <
  // 2^31); a row of 0 blocks is never heavy.
  const auto heavy = [&](int c) { return c > 0 && static_cast<long long>(c) * tiles >= 2 * total; };
  long long n_heavy_local = 0;
  for (int64_t L = threadIdx.x; L < tiles; L += kThreads) n_heavy_local += heavy(count_at(counts, L, nqb));
  const long long n_heavy = block_sum(n_heavy_local, sums);

  // Stable scatter, kThreads positions per round: a position's rank among the round's heavy (or light) ones
  // from a ballot within its warp and the counts of the warps before it.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const unsigned below = (1u << lane) - 1u;
  long long heavy_before = 0, light_before = 0;  // positions placed by earlier rounds
  for (int64_t base = 0; base < tiles; base += kThreads) {
    const int64_t L = base + threadIdx.x;
    const bool valid = L < tiles;
    const bool h = valid && heavy(count_at(counts, L, nqb));
    const unsigned ballot = __ballot_sync(0xffffffffu, h);
    __syncthreads();  // ranks free
    if (lane == 0) ranks[warp] = __popc(ballot);
    __syncthreads();
    int heavy_warps_before = 0, round_heavy = 0;
    for (int w = 0; w < kWarps; ++w) {
      heavy_warps_before += w < warp ? ranks[w] : 0;
      round_heavy += ranks[w];
    }
    const int heavy_rank = heavy_warps_before + __popc(ballot & below);
    const int light_rank = static_cast<int>(threadIdx.x) - heavy_rank;
    if (valid) {
      const long long pos = h ? heavy_before + heavy_rank : n_heavy + light_before + light_rank;
      order[pos] = static_cast<int>(L);
    }
    const int round_size = static_cast<int>(tiles - base < kThreads ? tiles - base : kThreads);
    heavy_before += round_heavy;
    light_before += round_size - round_heavy;
  }
}

}  // namespace

cudaError_t launch_heavy_rows_first(const int* counts, int64_t tiles, int nqb, int* order,
                                    cudaStream_t stream) {
  if (tiles <= 0) return cudaSuccess;
  heavy_rows_first_kernel<<<1, kThreads, 0, stream>>>(counts, tiles, nqb, order);
  return cudaGetLastError();
}

}  // namespace sparge::cuda
