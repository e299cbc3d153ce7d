// Instantiation: block-sparse attention, bf16, head dim 128 (one file per (dtype, D) so they compile in
// parallel).
#include "kernel.cuh"

namespace sparge::cuda {
template cudaError_t launch_block_sparse_attention<DType::kBf16, 128, Precision::k16Bit>(
    const AttentionParams&, cudaStream_t);
}  // namespace sparge::cuda
