// Instantiation: block-sparse attention, INT8 Q and smoothed K, P V in FP8 e4m3 (QuantMode::kInt8Fp8;
// sm_89+), fp16 inputs, head dim 64 (one file per (dtype, D, precision) so they compile in parallel).
#include "kernel.cuh"

namespace sparge::cuda {
template cudaError_t launch_block_sparse_attention<DType::kFp16, 64, Precision::kInt8Fp8>(
    const AttentionParams&, cudaStream_t);
}  // namespace sparge::cuda
