// Instantiation: MInference vertical-slash attention, bf16, head dim 64 (one file per (dtype, D) so they
// compile in parallel).
#include "vertical_slash_kernel.cuh"

namespace sparge::cuda {
template cudaError_t launch_vertical_slash_attention<DType::kBf16, 64>(const VerticalSlashParams&,
                                                                       cudaStream_t);
}  // namespace sparge::cuda
