// Instantiation: block-sparse attention, INT8 Q and smoothed K (QuantMode::kInt8), P V in bf16, head dim 128
// (one file per (dtype, D, Q K^T precision) so they compile in parallel).
#include "kernel.cuh"

namespace sparge::cuda {
template cudaError_t launch_block_sparse_attention<DType::kBf16, 128, Precision::kInt8>(
    const AttentionParams&, cudaStream_t);
}  // namespace sparge::cuda
