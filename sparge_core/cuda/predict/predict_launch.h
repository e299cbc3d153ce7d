// Host entry points of the stage-1 prediction kernels (no torch): the persistent statistics kernel per dtype
// in predict_<dtype>.cu, the score GEMM and the selection in predict_select.cu, and the legacy kernels
// (predict_legacy.cu, the GPU test's bit-exactness oracle).
#pragma once

#include <cuda_runtime_api.h>

#include "predict_params.h"

namespace sparge::cuda {

// K block sums, K mean and the Q / smoothed-K statistics: the plain passes (launch_k_mean, stats_pass_kernel)
// for the prediction, else (SPARGE_STATS_PASSES=0, or INT8 values only) the persistent kernel in one launch.
// head_dim is 64 or 128; p.counters: stats_counter_count(B * Hkv) int32 (zeroed by the persistent kernel's
// launcher, unused by the passes).
template <DType kDtype>
cudaError_t launch_stats(const StatsParams& p, int head_dim, cudaStream_t stream);
template <>
cudaError_t launch_stats<DType::kFp16>(const StatsParams&, int, cudaStream_t);
template <>
cudaError_t launch_stats<DType::kBf16>(const StatsParams&, int, cudaStream_t);

// INT8 Q and smoothed K without the prediction's statistics (predict_quant.cu): K block sums into k_sums (B,
// Hkv, NKB, D), the float64 K mean into k_mean (B, Hkv, D), then q.quant / q.quant_scale and k.quant /
// k.quant_scale (all four set), bit-identical to the statistics kernel's INT8 outputs. head_dim 64 or 128.
cudaError_t launch_quantize_qk(const StatsOperand& q, const StatsOperand& k, DType dtype, int batch,
                               int head_dim, float* k_sums, float* k_mean, cudaStream_t stream);
// Passes 1 and 2 of launch_quantize_qk alone: the K block sums and the float64 K mean (the prediction's
// bits).
cudaError_t launch_k_mean(const StatsOperand& k, DType dtype, int batch, int head_dim, float* k_sums,
                          float* k_mean, cudaStream_t stream);

// scores[b][m][n] = sum_d a[b][m][d] * c[b][n][d] for b < batch (row-major, float32, 16-byte aligned, dim 64
// or 128), each a sequential fma chain over d = 0 .. dim - 1: the compressed scores.
cudaError_t launch_scores(const float* a, const float* c, float* scores, int batch, int rows_a, int rows_c,
                          int dim, cudaStream_t stream);

// The selection of every mask row: a warp per row when num_k_blocks <= kWarpSelectMaxKeyBlocks, else one CTA
// per row (identical results).
cudaError_t launch_select(const SelectParams& p, cudaStream_t stream);

// The one-CTA-per-row selection for any size: grid (NQB, Hq, B).
cudaError_t launch_select_cta(const SelectParams& p, cudaStream_t stream);

// Dynamic shared memory of launch_select_cta for these sizes (the API checks it against the device limit).
size_t select_smem_bytes(int sort_size, int num_k_blocks);

namespace legacy {

// Statistics of every block of p.x, one CTA each: grid (num_blocks, heads, batch). head_dim 64 or 128.
cudaError_t launch_block_stats(const BlockStatsParams& p, DType dtype, int batch, int head_dim,
                               cudaStream_t stream);
// mean (B, H, D) = sum over the NB block sums (B, H, NB, D) / seq.
cudaError_t launch_block_mean(const float* sums, float* mean, int batch, int heads, int num_blocks, int seq,
                              int head_dim, cudaStream_t stream);
// The first score GEMM (64 x 64 tiles, 16-deep k steps).
cudaError_t launch_scores(const float* a, const float* c, float* scores, int batch, int rows_a, int rows_c,
                          int dim, cudaStream_t stream);

}  // namespace legacy

}  // namespace sparge::cuda
