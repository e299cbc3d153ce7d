// Instantiation: stage-1 block statistics for fp16 inputs, head dims 64 and 128.
#include "predict_kernels.cuh"
#include "predict_launch.h"

namespace sparge::cuda {

template <>
cudaError_t launch_block_stats<DType::kFp16>(const BlockStatsParams& p, int batch, int head_dim,
                                             cudaStream_t stream) {
  const dim3 grid(p.num_blocks, p.heads, batch);
  if (head_dim == 64) {
    predict::block_stats_kernel<DType::kFp16, 64><<<grid, predict::kStatsThreads, 0, stream>>>(p);
  } else if (head_dim == 128) {
    predict::block_stats_kernel<DType::kFp16, 128><<<grid, predict::kStatsThreads, 0, stream>>>(p);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace sparge::cuda
