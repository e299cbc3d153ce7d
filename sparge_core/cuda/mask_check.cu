// Device-side validation of a block mask's lists (launch.h, launch_check_mask): one warp per mask row reads
// its count and its listed indices once; errors are OR-ed into one flag word (read by the API with one
// synchronization), instead of a dozen elementwise torch passes over a dense (B, H, NQB, NKB) expansion.
#include "launch.h"

namespace sparge::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 2048;

__global__ void __launch_bounds__(kThreads)
    check_mask_kernel(const int* counts, const int* indices, int64_t rows, int nkb, int* flags) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  int bad = 0;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32; row < rows;
       row += warps) {
    const int count = counts[row];  // warp-uniform
    if (count < 0 || count > nkb) {
      bad |= kMaskBadCount;
      continue;
    }
    const int* list = indices + row * nkb;
    for (int j = lane; j < count; j += 32) {
      const int x = list[j];
      if (x < 0 || x >= nkb) bad |= kMaskBadIndex;
      if (j > 0 && x <= list[j - 1]) bad |= kMaskNotAscending;
    }
  }
  bad = __reduce_or_sync(0xffffffffu, bad);
  if (lane == 0 && bad != 0) atomicOr(flags, bad);
}

}  // namespace

cudaError_t launch_check_mask(const int* counts, const int* indices, int64_t rows, int nkb, int* flags,
                              cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  const int64_t blocks = (rows + kThreads / 32 - 1) / (kThreads / 32);
  check_mask_kernel<<<static_cast<int>(blocks < kMaxBlocks ? blocks : kMaxBlocks), kThreads, 0, stream>>>(
      counts, indices, rows, nkb, flags);
  return cudaGetLastError();
}

}  // namespace sparge::cuda
