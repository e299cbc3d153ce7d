// Hopper kernel instantiation: fp16, D = 64, INT8 Q K^T, 16-bit P V (sm_90a only).
#include "launch_sm90.cuh"

namespace sparge::cuda {
template cudaError_t launch_block_sparse_attention_sm90<DType::kFp16, 64, Precision::kInt8>(
    const AttentionParams&, cudaStream_t);
}  // namespace sparge::cuda
