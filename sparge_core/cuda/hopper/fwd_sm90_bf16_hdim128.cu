// Hopper kernel instantiation: bf16, D = 128, 16-bit Q K^T and P V (sm_90a only).
#include "launch_sm90.cuh"

namespace sparge::cuda {
template cudaError_t launch_block_sparse_attention_sm90<DType::kBf16, 128, Precision::k16Bit>(
    const AttentionParams&, cudaStream_t);
}  // namespace sparge::cuda
