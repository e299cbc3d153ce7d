// Instantiation: the stage-1 statistics kernel for fp16 inputs, head dims 64 and 128.
#include "predict_launch.h"
#include "predict_stats_launch.cuh"

namespace sparge::cuda {

template <>
cudaError_t launch_stats<DType::kFp16>(const StatsParams& p, int head_dim, cudaStream_t stream) {
  if (head_dim == 64) return predict::launch_stats_kernel<DType::kFp16, 64>(p, stream);
  if (head_dim == 128) return predict::launch_stats_kernel<DType::kFp16, 128>(p, stream);
  return cudaErrorInvalidValue;
}

}  // namespace sparge::cuda
