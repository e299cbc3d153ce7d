// The Hopper kernel's tile order: mask rows sorted by decreasing listed-block count, so that the persistent
// CTAs, walking the order in snake bands (kernel_sm90.cuh), take the longest rows first and finish together.
// One CTA: a histogram of the counts in kBuckets coarse buckets (count * kBuckets / (NKB + 1): the order only
// needs to be roughly sorted), an exclusive scan from the largest bucket down, then a scatter (rows of one
// bucket in any order: each tile's output does not depend on when it runs).
#include <cuda_runtime_api.h>

#include <cstdint>

#include "launch_sm90.h"

namespace sparge::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kBuckets = 1024;

__global__ void __launch_bounds__(kThreads)
    tile_order_kernel(const int32_t* counts, int num_tiles, int num_k_blocks, int32_t* order) {
  __shared__ int hist[kBuckets];
  __shared__ int start[kBuckets];
  const int tid = threadIdx.x;
  const auto bucket = [&](int count) {  // 0 = the longest rows
    const int c = min(max(count, 0), num_k_blocks);
    return kBuckets - 1 - static_cast<int>(static_cast<int64_t>(c) * kBuckets / (num_k_blocks + 1));
  };
  for (int b = tid; b < kBuckets; b += kThreads) hist[b] = 0;
  __syncthreads();
  for (int t = tid; t < num_tiles; t += kThreads) atomicAdd(&hist[bucket(counts[t])], 1);
  __syncthreads();
  // Inclusive scan (Hillis-Steele, kBuckets == kThreads), then shift to exclusive.
  static_assert(kBuckets == kThreads, "one bucket per thread in the scan");
  int x = hist[tid];
  for (int offset = 1; offset < kBuckets; offset *= 2) {
    __syncthreads();
    start[tid] = x;
    __syncthreads();
    if (tid >= offset) x += start[tid - offset];
  }
  __syncthreads();
  start[tid] = x - hist[tid];
  __syncthreads();
  for (int t = tid; t < num_tiles; t += kThreads) order[atomicAdd(&start[bucket(counts[t])], 1)] = t;
}

}  // namespace

cudaError_t launch_tile_order_sm90(const int32_t* counts, int num_tiles, int num_k_blocks, int32_t* order,
                                   cudaStream_t stream) {
  if (num_tiles == 0) return cudaSuccess;
  tile_order_kernel<<<1, kThreads, 0, stream>>>(counts, num_tiles, num_k_blocks, order);
  return cudaGetLastError();
}

}  // namespace sparge::cuda
