// Instantiation: MInference vertical-slash attention, fp16, head dim 128 (one file per (dtype, D) so they
// compile in parallel).
#include "vertical_slash_kernel.cuh"

namespace sparge::cuda {
template cudaError_t launch_vertical_slash_attention<DType::kFp16, 128>(const VerticalSlashParams&,
                                                                        cudaStream_t);
}  // namespace sparge::cuda
