// XAttention baseline (mit-han-lab/x-attention): block-mask prediction by antidiagonal scoring, on LibTorch
// ops (any device). Facts from the public code are summarized in spec/baselines.md ("XAttention").
//
// Shapes as in reference.h (layout HND; NHD swaps H and N):
//   q: (B, Hq, Nq, D)   k, v: (B, Hkv, Nk, D)   Hq % Hkv == 0 (query head h reads kv head h / (Hq / Hkv))
// The mask has block_q = block_k = `block` and one row set per query head: (B, Hq, NQB, NKB).
//
// Algorithm (S = stride, d = head dim, scale = 1/sqrt(d) unless given, off = Nk - Nq):
//   1. Reduced scores, one per (S query rows) x (S keys) tile, summed along the tile's antidiagonal with the
//      query order reversed:   R[r, c] = scale / S * sum_{j=0..S-1} Q[r*S + S-1-j] . K[c*S + j]
//      Tails: Q and K are zero-padded to a multiple of S (a padded row adds 0 to the sum); a reduced row or
//      column exists iff it holds at least one real token, so ceil(Nq / S) x ceil(Nk / S) reduced cells.
//   2. Causal at reduced granularity, bottom-right aligned: reduced key c is allowed for reduced query r iff
//      c*S <= min(r*S + S-1, Nq-1) + off (its first key is visible to the last real query of r). This is
//      causal_valid_blocks() with blocks of S; the diagonal cell keeps its whole antidiagonal, as upstream.
//      Every reduced row keeps at least c = 0 (Nq <= Nk is required for causal).
//   3. P = softmax over c of the allowed R[r, :] (float32; float64 for float64 inputs), so each reduced row
//      carries mass 1.
//   4. Block scores: P summed over the (block/S) x (block/S) reduced cells of each (query block, key block);
//      partial tail blocks sum the cells they hold. A row's total is its number of reduced rows.
//   5. Per (b, h, query block): forced = the sink (key block 0) and, when causal, the diagonal blocks
//      (causal_diagonal_blocks: every query row then computes a key). The other causal-valid blocks are
//      added in descending score order (ties: lower block index first) while the kept mass (forced blocks
//      included) is still < threshold * row total: the block that crosses the threshold is kept.
//      threshold >= 1 keeps every causal-valid block (a floating-point cumulative sum may reach the total
//      before the last, tiny, block). Non-causal: only the sink is forced.
// Differences from upstream, on purpose: any batch (upstream asserts 1), GQA without expanding K to the
// query heads, token-exact bottom-right causality when Nq != Nk (upstream aligns at chunk granularity), and
// an optional custom softmax scale (upstream always uses 1/sqrt(d)).
//
// Thresholds used upstream: 0.9 (default, estimation) and 0.8 (prefill runs); per-head tables exist too.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "sparge/block_mask.h"
#include "sparge/config.h"
#include "sparge/reference.h"

namespace sparge {

struct XAttentionConfig {
  int64_t block = 128;     // mask block size (queries and keys); upstream kernels use 128
  int64_t stride = 8;      // antidiagonal stride S (upstream: 8 or 16); must divide `block`
  double threshold = 0.9;  // kept fraction of each row's mass, in (0, 1]; 0.8 is upstream's prefill value
  bool causal = true;      // bottom-right aligned when Nq != Nk
  std::optional<double> scale;  // softmax scale of the scores; default 1/sqrt(D)
  Layout layout = Layout::kHND;
};

// The XAttention block mask (block_q = block_k = config.block) of q against k. Equals
// xattention_select(xattention_scores(q, k, config), config.threshold) (threshold >= 1 skips the scoring).
BlockMask xattention_block_mask(const at::Tensor& q, const at::Tensor& k, const XAttentionConfig& config);

// The estimate split from the selection, so that a search over the threshold (the runner's equal-sparsity
// mode) scores once and selects many times. Everything here is threshold-independent: steps 1-4 and the
// ordering of step 5; xattention_select only compares the cumulative masses with threshold * total. Tensors
// live on q's device, in the math dtype (float32; float64 for float64 inputs).
struct XAttentionScores {
  int64_t block = 0, seq_q = 0, seq_k = 0;
  bool causal = true;
  at::Tensor score;   // (B, Hq, NQB, NKB) block scores: summed reduced softmax probabilities (step 4)
  at::Tensor valid;   // (NQB, NKB) bool: causal-valid blocks
  at::Tensor forced;  // (NQB, NKB) bool: sink and (causal) diagonal blocks, valid ones only
  at::Tensor total;   // (B, Hq, NQB, 1) row totals of `score`
  at::Tensor sorted;  // (B, Hq, NQB, NKB) candidate scores sorted descending (stable), non-candidates -1
  at::Tensor order;   // (B, Hq, NQB, NKB) int64: the key block of each sorted entry
  at::Tensor before;  // (B, Hq, NQB, NKB) kept mass before the t-th sorted candidate (forced mass included)
};

// Steps 1-4 of the algorithm plus the threshold-independent part of step 5 (config.threshold is validated
// but not used).
XAttentionScores xattention_scores(const at::Tensor& q, const at::Tensor& k, const XAttentionConfig& config);

// Step 5 at `threshold` in (0, 1] over precomputed scores: bit-identical to xattention_block_mask with the
// same configuration and that threshold. `scores` is not modified (it may be selected from again).
BlockMask xattention_select(const XAttentionScores& scores, double threshold);

// Prediction + attention: the mask above applied by block_sparse_attention (reference float math, stage 2
// off). stats: block counts and sparsity of the mask (stage 1), prediction and attention times.
AttentionResult xattention_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const XAttentionConfig& config);

}  // namespace sparge
