// The CTA order of the Hopper kernel for unbalanced masks (launch.h, launch_heavy_rows_first): heavy mask
// rows (listed blocks >= kHeavyFactor times the mean over all rows) first, in their natural order, then every
// other row in its natural order. One CTA of 1024 threads, three passes over the counts (sum and heavy count
// in memory order, then the stable scatter in natural order; up to kCachedRows counts are read from global
// memory once, into shared memory). Each entry is the pair (natural position, count), so that a CTA of the
// attention kernel loads its tile and its row's count in one load instead of two dependent ones. The kernel
// lets the attention kernel launch at once (griddepcontrol.launch_dependents; the attention kernel, launched
// with programmatic stream serialization, waits for this grid with griddepcontrol.wait before its first
// load), so the attention grid's launch overlaps this kernel.
//
// Why this order: the hardware grid hands CTAs to SMs as SMs free up, in practice in linear order (greedy
// list scheduling; not a documented guarantee), so the kernel's time exceeds the mean load by at most the
// work of the tiles that start last. A row listing many times the mean number of blocks that starts in the
// last wave extends the kernel by its whole length; started first, it overlaps every other row. Rows within
// kHeavyFactor of the mean keep the natural, head-major order, whose concurrent CTAs share one head's K and V
// in L2 (a fully length-sorted order mixed the heads and lost that: hopper/NOTES.md, "Persistent grid
// trial"). Causal masks in particular: the natural order already runs each head's longest rows first, and
// their rows list at most twice the mean (the last query block sees every key block, the mean row half of
// them), below the factor, so a random causal mask keeps its order instead of mixing the heads' top rows into
// the first waves.
#include "launch.h"

namespace sparge::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kHeavyFactor = 4;    // > 2: a causal row lists at most ~twice the mean (file comment)
constexpr int kCachedRows = 8192;  // counts kept in shared memory (32 KB); beyond, passes read global memory

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
// L / NQB = batch * Hq + head) -> the row's listed-block count. tiles < 2^31: 32-bit arithmetic.
__device__ __forceinline__ int count_at(const int* counts, int L, int nqb) {
  const int group = L / nqb;
  return counts[static_cast<int64_t>(group) * nqb + (nqb - 1 - (L - group * nqb))];
}

__global__ void __launch_bounds__(kThreads)
    heavy_rows_first_kernel(const int* global_counts, int tiles, int nqb, int2* order) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  __shared__ long long sums[kWarps];
  __shared__ int ranks[kWarps];
  __shared__ int cached[kCachedRows];
  const bool cache = tiles <= kCachedRows;
  // The sum and the heavy count do not depend on the order: read the counts in memory order.
  long long local = 0;
  for (int i = threadIdx.x; i < tiles; i += kThreads) {
    const int c = global_counts[i];
    if (cache) cached[i] = c;
    local += c;
  }
  const long long total = block_sum(local, sums);  // (its barriers also publish `cached`)
  const int* counts = cache ? cached : global_counts;
  // heavy: count >= kHeavyFactor * mean, i.e. count * tiles >= kHeavyFactor * total (exact in 64 bits: counts
  // and tiles < 2^31); a row of 0 blocks is never heavy.
  const auto heavy = [&](int c) {
    return c > 0 && static_cast<long long>(c) * tiles >= kHeavyFactor * total;
  };
  long long n_heavy_local = 0;
  for (int i = threadIdx.x; i < tiles; i += kThreads) n_heavy_local += heavy(counts[i]);
  const long long n_heavy = block_sum(n_heavy_local, sums);

  // Stable scatter in natural order, kThreads positions per round: a position's rank among the round's heavy
  // (or light) ones from a ballot within its warp and the counts of the warps before it.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const unsigned below = (1u << lane) - 1u;
  long long heavy_before = 0, light_before = 0;  // positions placed by earlier rounds
  for (int base = 0; base < tiles; base += kThreads) {
    const int L = base + static_cast<int>(threadIdx.x);
    const bool valid = L < tiles;
    const int c = valid ? count_at(counts, L, nqb) : 0;
    const bool h = valid && heavy(c);
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
    if (valid) order[h ? heavy_before + heavy_rank : n_heavy + light_before + light_rank] = make_int2(L, c);
    const int round_size = tiles - base < kThreads ? tiles - base : kThreads;
    heavy_before += round_heavy;
    light_before += round_size - round_heavy;
  }
}

}  // namespace

cudaError_t launch_heavy_rows_first(const int* counts, int64_t tiles, int nqb, int* order,
                                    cudaStream_t stream) {
  if (tiles <= 0) return cudaSuccess;
  heavy_rows_first_kernel<<<1, kThreads, 0, stream>>>(counts, static_cast<int>(tiles), nqb,
                                                      reinterpret_cast<int2*>(order));
  return cudaGetLastError();
}

}  // namespace sparge::cuda
