// The kernel boundary of stage-1 prediction on the GPU: raw pointers, int64 strides, sizes and flags. No
// torch and no CUDA headers: predict_api.cpp fills these, the kernels in predict_kernels.cuh read them.
//
// Shapes (logical HND order, addressed through strides; the head-dim stride is 1):
//   x: (B, H, N, D) fp16/bf16, row stride and base 16-byte aligned (the API copies otherwise)
//   workspaces and outputs are contiguous float32 / int8 / int32 / bool as commented per field.
#pragma once

#include <cstdint>

#include "../params.h"  // DType

namespace sparge::cuda {

// One pass over the blocks of one tensor (Q, or K twice: block sums for the mean, then statistics).
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

// The selection of one mask row per CTA.
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

}  // namespace sparge::cuda
