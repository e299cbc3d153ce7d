// The kernel boundary of stage-1 prediction on the GPU: raw pointers, int64 strides, sizes and flags. No
// torch and no CUDA headers: predict_api.cpp fills these, the kernels (predict_kernels.cuh,
// predict_select.cu, predict_legacy.cu) read them.
//
// Shapes (logical HND order, addressed through strides; the head-dim stride is 1):
//   x: (B, H, N, D) fp16/bf16, row stride and base 16-byte aligned (the API copies otherwise)
//   workspaces and outputs are contiguous float32 / float64 / int8 / int32 / bool as commented per field.
#pragma once

#include <cstdint>

#include "../params.h"     // DType
#include "predict_math.h"  // FastDiv

namespace sparge::cuda {

// The float64 K mean adds the float32 block sums in kMeanSplit / D contiguous parts (each summed in block
// order), then the parts in order: the fixed order of the first predictor's 1024-thread mean kernel, kept so
// that the smoothing vector, hence every smoothed-K statistic and the masks, stay bit-identical.
constexpr int kMeanSplit = 1024;
constexpr int mean_parts(int head_dim) {
  return kMeanSplit / head_dim;
}
constexpr int kMaxMeanParts = kMeanSplit / 64;

// int32 counters of the statistics kernel, zeroed by its launcher before each launch: [0] the work-queue
// head, then per (batch, kv head) group kGroupCounters: the kMaxMeanParts part tickets, the group ticket, the
// mean-ready flag.
constexpr int kGroupCounters = kMaxMeanParts + 2;
constexpr int64_t stats_counter_count(int64_t groups) {
  return 1 + groups * kGroupCounters;
}

// One of Q and K for the statistics kernel: the input and the per-block outputs (nullptr: not computed).
struct StatsOperand {
  const void* x = nullptr;
  int64_t batch_stride = 0, head_stride = 0, row_stride = 0;
  int heads = 0, seq = 0, block = 0, num_blocks = 0;
  float* pooled = nullptr;       // (B, H, NB, D) block means of the (smoothed) rows
  float* similarity = nullptr;   // (B, H, NB) ||mean of unit rows||^2; nullptr skips the row norms
  int8_t* quant = nullptr;       // (B, H, N, D) INT8 values round(x / scale), or nullptr (no quantization)
  float* quant_scale = nullptr;  // (B, H, NB) max|x| / 127 per block
};

// The persistent statistics kernel: K block sums -> K mean -> smoothed-K statistics, and Q statistics, in one
// launch (the work-queue order is described in predict_kernels.cuh).
struct StatsParams {
  StatsOperand q, k;  // k's outputs are those of the smoothed K
  int batch = 0;
  float* k_sums = nullptr;    // (B, Hkv, NKB, D) workspace: K block sums
  double* k_parts = nullptr;  // (B, Hkv, mean_parts(D), D) workspace: float64 part sums of the K mean
  float* k_mean = nullptr;    // (B, Hkv, D) output: the smoothing vector
  int* counters = nullptr;    // stats_counter_count(B * Hkv) int32 (the launcher zeroes them)
  // Set by the launcher: K-sum groups issued ahead of the K statistics, the number of work items, and the
  // divisors of the item decoding (K items per group, kv heads, Q blocks, query heads).
  // k_item_blocks: K blocks per K item (2 where two fit one chunk of the stage and keep the legacy row ->
  // warp mapping, else 1); k_items: K items per group (ceil(NKB / k_item_blocks)).
  int lookahead = 1, num_items = 0, k_item_blocks = 1, k_items = 0;
  predict::FastDiv k_items_div, k_heads_div, q_blocks_div, q_heads_div;
};

// The selection of one mask row (a warp per row up to kWarpSelectMaxKeyBlocks key blocks, else a CTA).
struct SelectParams {
  const float* scores =
      nullptr;  // (B, Hq, NQB, NKB) pooled_q . pooled_k (smoothed K), before the D^-0.5 scale
  const float* sim_q = nullptr;  // (B, Hq, NQB)
  const float* sim_k = nullptr;  // (B, Hkv, NKB)
  // Per-query-head thresholds travel inside the parameters (no host-to-device copy per call) when Hq <=
  // kInlineHeads, else as device arrays of Hq values.
  static constexpr int kInlineHeads = 128;
  float simthreshd1_inline[kInlineHeads] = {}, cdfthreshd_inline[kInlineHeads] = {};
  double topk_inline[kInlineHeads] = {};
  const float* simthreshd1 = nullptr;  // (Hq) device, when Hq > kInlineHeads
  const float* cdfthreshd = nullptr;
  const double* topk = nullptr;
  int batch = 0, heads_q = 0, kv_group = 1;
  int seq_q = 0, seq_k = 0, block_q = 0, block_k = 0, num_q_blocks = 0, num_k_blocks = 0;
  int sort_size = 0;  // next power of two >= num_k_blocks
  float inv_sqrt_d = 0.f;
  bool causal = false, use_topk = false, keep_crossing = false, attention_sink = false;
  bool* dense = nullptr;       // (B, Hq, NQB, NKB)
  int32_t* counts = nullptr;   // (B, Hq, NQB)
  int32_t* indices = nullptr;  // (B, Hq, NQB, NKB) ascending, padded with -1
};

// Rows of at most this many key blocks are selected by one warp (registers + 2 KiB of shared memory).
constexpr int kWarpSelectMaxKeyBlocks = 512;

// Legacy (predict_legacy.cu, the bit-exactness oracle of the GPU test): one pass over the blocks of one
// tensor, one CTA per block.
struct BlockStatsParams {
  const void* x = nullptr;
  int64_t batch_stride = 0, head_stride = 0, row_stride = 0;
  int heads = 0, seq = 0, block = 0, num_blocks = 0;
  const float* shift = nullptr;  // (B, H, D) subtracted from every row (K smoothing), or nullptr
  float* sums = nullptr;         // (B, H, NB, D) block sums (first K pass), or nullptr
  float* pooled = nullptr;       // (B, H, NB, D) block means of the (shifted) rows, or nullptr
  float* similarity = nullptr;   // (B, H, NB) ||mean of unit rows||^2, or nullptr
  int8_t* quant = nullptr;       // (B, H, N, D) INT8 values round(x / scale), or nullptr (no quantization)
  float* quant_scale = nullptr;  // (B, H, NB) max|x| / 127 per block
};

}  // namespace sparge::cuda
