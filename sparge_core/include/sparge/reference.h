// The SpargeAttn reference implementation on LibTorch tensor ops (any device): the oracle every kernel is
// tested against. It follows the algorithm contract in README.md ("Algorithm contract") exactly.
//
// Shapes (layout HND; NHD swaps the H and N axes of every tensor, the output included):
//   q: (B, Hq, Nq, D)   k, v: (B, Hkv, Nk, D)   Hq % Hkv == 0 (query head h reads kv head h / (Hq / Hkv))
//   out: like q (same dtype and layout)   lse: (B, Hq, Nq) float32, natural log (always HND order)
// dtypes: float16, bfloat16, float32, float64. Math runs in float32 (float64 for float64 inputs) except where
// the quantization mode says otherwise.
#pragma once

#include <ATen/core/Tensor.h>

#include "sparge/block_mask.h"
#include "sparge/config.h"
#include "sparge/stats.h"

namespace sparge {

struct AttentionResult {
  at::Tensor out;
  at::Tensor lse;  // defined iff config.return_lse
  AttentionStats stats;
};

// Stage 1: predicts the block mask from Q and K (smoothed K, pooling, self-similarity judge, compressed-score
// softmax, CDF or top-k selection, forced rows/columns, causal and sink rules). Mask heads are query heads.
BlockMask predict_block_mask(const at::Tensor& q, const at::Tensor& k, const SpargeConfig& config);

// Block-sparse attention over a given mask (per query head), with the stage-2 filter of `config` inside the
// online softmax, processed in ascending key-block order. Rows whose mask computes no allowed key get out =
// 0, lse = -inf. The mask's block sizes override config.block_q / block_k.
AttentionResult block_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const BlockMask& mask, const SpargeConfig& config);

// Prediction + block-sparse attention: the whole SpargeAttn call.
AttentionResult spas_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const SpargeConfig& config);

// Dense attention computed in float64 (the accuracy oracle), returned in float64 in the input layout. lse as
// above.
AttentionResult dense_attention_f64(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    bool causal, std::optional<double> scale = std::nullopt,
                                    Layout layout = Layout::kHND, bool return_lse = false);

// Relative errors of `out` against `ref` (any dtypes; computed in float64).
double relative_l2(const at::Tensor& out, const at::Tensor& ref);  // ||out - ref||_2 / ||ref||_2
double relative_l1(const at::Tensor& out, const at::Tensor& ref);  // sum|out - ref| / sum|ref|

}  // namespace sparge
