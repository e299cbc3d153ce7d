// Host entry points of the stage-1 prediction kernels (no torch): block statistics per dtype in
// predict_<dtype>.cu, the mean and the selection in predict_select.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "predict_params.h"

namespace sparge::cuda {

// Statistics of every block of p.x: grid (num_blocks, heads, batch). head_dim is 64 or 128.
template <DType kDtype>
cudaError_t launch_block_stats(const BlockStatsParams& p, int batch, int head_dim, cudaStream_t stream);
template <>
cudaError_t launch_block_stats<DType::kFp16>(const BlockStatsParams&, int, int, cudaStream_t);
template <>
cudaError_t launch_block_stats<DType::kBf16>(const BlockStatsParams&, int, int, cudaStream_t);

// mean (B, H, D) = sum over the NB block sums (B, H, NB, D) / seq.
cudaError_t launch_block_mean(const float* sums, float* mean, int batch, int heads, int num_blocks, int seq,
                              int head_dim, cudaStream_t stream);

// scores[b][m][n] = sum_d a[b][m][d] * c[b][n][d] for b < batch (row-major, float32): the compressed scores.
cudaError_t launch_scores(const float* a, const float* c, float* scores, int batch, int rows_a, int rows_c,
                          int dim, cudaStream_t stream);

// The selection of every mask row: grid (NQB, Hq, B).
cudaError_t launch_select(const SelectParams& p, cudaStream_t stream);

// Dynamic shared memory of launch_select for these sizes (the API checks it against the device limit).
size_t select_smem_bytes(int sort_size, int num_k_blocks);

}  // namespace sparge::cuda
