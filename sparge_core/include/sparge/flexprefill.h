// FlexPrefill (bytedance/FlexPrefill, `get_active_blocks` in flex_prefill_attention.py) as a baseline: its
// block-mask selection on LibTorch tensor ops (CPU and CUDA tensors), applied by the reference block-sparse
// attention (sparge::block_sparse_attention, stage 2 off). Mask heads are query heads.
//
// Shapes (layout HND; NHD swaps the H and N axes of q, k, v and the output):
//   q: (B, Hq, N, D)   k, v: (B, Hkv, N, D)   Hq % Hkv == 0 (query head h reads kv head h / (Hq / Hkv); K is
//   never repeated). Causal prefill only, Nq == Nk (as in the original). Any batch (the original asserts 1).
//
// Selection per (batch, query head), bs = block, nb = ceil(N / bs), all scores scaled by 1 / sqrt(D):
//   Lq = the last min(bs, N) queries; P = softmax(Lq K^T) with the causal rule (bottom-right, query N-n+i
//   sees keys <= N-n+i). vert_tok[j]  = (1/n) sum_i P[i, j] slash_tok[o] = (1/n) sum_i P[i, (N-n+i) - o]   (o
//   = query - key offset; a row without that offset adds 0) budgets: nV = (tokens of the descending-sorted
//   vert_tok whose cumsum reaches gamma) // bs + 1, nS likewise from slash_tok; clamped to >= ceil(min_budget
//   / bs) blocks, then to <= min(ceil(max_budget / bs), nb). vert_blk[j]  = sum of vert_tok over key block j
//   slash_blk[s] = sum of slash_tok over the offsets o whose key, seen from the last query N-1, lies in key
//                  block nb-1-s, i.e. (N-1-o) // bs == nb-1-s (the original's grouping; = o // bs when bs |
//                  N). s is a block diagonal: s = 0 is the diagonal, blocks (i + s, i).
//   est = softmax over key blocks of mean_i(Lq[i]) . Kbar^T, Kbar = mean of each key block's valid rows
//   jsd = sqrt(0.5 KL(est || m) + 0.5 KL(vd || m)), m = (est + vd) / 2, vd = vert_blk / sum(vert_blk)
//   query_aware = jsd < tau; for those heads nV = nS = ceil(min_budget / bs)
//   vert_blk[0] = +inf, slash_blk[0] = +inf (the first key block and the diagonal are always kept);
//   Vsel = the nV largest vert_blk, Ssel = the nS largest slash_blk (ties: the lower index first)
//   mask = {(i, v): v in Vsel, v <= i} U {(i + s, i): s in Ssel, i + s < nb}
//   query-aware heads add: Qbar = mean of each query block's valid rows; A = softmax per row of
//   Qbar Kbar^T / sqrt(D) over the block-causal key blocks (j <= i); the entries of A flattened over the
//   whole head (total mass nb) sorted descending, kept while the cumulative sum stays <= gamma * nb (global
//   coverage, the crossing entry dropped, as in the original); mask |= kept.
//   Finally mask &= causal_valid_blocks.
// Dense fallback: N <= flexprefill_dense_threshold(config) = max(2 bs, ceil(min_budget / bs) bs) gives the
// full causal mask (the original runs dense flash attention there).
//
// Choices where the original is silent or asks for a decision (flexprefill.cpp explains each):
//   - math in float32 for 16/32-bit inputs (the original multiplies in bf16, softmax in float32), float64 for
//     float64 inputs;
//   - the estimation always scales by 1 / sqrt(D), as the original does; config.scale only changes the
//     attention itself;
//   - 0 log 0 = 0 in the divergence (the original gives NaN there, which classifies the head vertical-slash),
//     and the square root of a rounding-negative sum is 0;
//   - nV, nS >= 1 always (with min_budget = 0 a query-aware head would otherwise get no vertical/slash
//     block; the original's zero padding of the top-k lists adds the same first column and diagonal
//     whenever any head of the call has a budget > 0);
//   - the budget divisor is bs (the original hard-codes 128, its default block).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "sparge/block_mask.h"
#include "sparge/config.h"
#include "sparge/reference.h"

namespace sparge {

struct FlexPrefillConfig {
  int64_t block = 128;                // bs: query and key block size of the mask, tokens
  double gamma = 0.9;                 // attention coverage in (0, 1]
  double tau = 0.1;                   // query-aware threshold on the square-root JS divergence, >= 0
  int64_t min_budget = 1024;          // tokens (rounded up to blocks), >= 0
  std::optional<int64_t> max_budget;  // tokens (rounded up to blocks), >= 1; nullopt = no upper clamp
  bool causal = true;                 // must be true: the method is defined for causal prefill only
  std::optional<double> scale;        // softmax scale of the attention; default 1 / sqrt(D)
  Layout layout = Layout::kHND;
  bool return_lse = false;  // flexprefill_attention fills AttentionResult::lse
};

// "library" (bytedance/FlexPrefill defaults: gamma 0.9) | "paper_llama31" (the paper's Llama-3.1 setting:
// gamma 0.95); both block 128, tau 0.1, min_budget 1024, no max_budget.
FlexPrefillConfig flexprefill_preset(std::string_view name);

// Sequence lengths N <= this use the full causal mask: max(2 * block, ceil(min_budget / block) * block).
int64_t flexprefill_dense_threshold(const FlexPrefillConfig& config);

struct FlexPrefillMask {
  BlockMask mask;          // (B, Hq, nb, nb), blocks bs x bs, only causal-valid blocks
  at::Tensor query_aware;  // (B, Hq) bool; all false under the dense fallback
  at::Tensor jsd;          // (B, Hq) float64: the square-root JS divergence; undefined under the fallback
  at::Tensor
      num_vertical;      // (B, Hq) int64: nV in blocks after clamps and the query-aware override; undefined
  at::Tensor num_slash;  // (B, Hq) int64: nS likewise; undefined under the fallback
  bool dense_fallback = false;
};

// The FlexPrefill block mask of (q, k) (see above). All outputs live on q's device.
FlexPrefillMask flexprefill_block_mask(const at::Tensor& q, const at::Tensor& k,
                                       const FlexPrefillConfig& config);

// The estimate split from the selection, so that a search over gamma (the runner's equal-sparsity mode) runs
// the last-block attention, the JS-divergence test and the pooled map once and selects many times. Everything
// here is gamma-independent: the head classification, the descending-sorted cumulative sums the budgets and
// the global coverage compare with gamma, and the vertical / slash rankings. Tensors live on q's device;
// float ones in the math dtype (float32; float64 for float64 inputs). Under the dense fallback only
// `query_aware` is set.
struct FlexPrefillEstimate {
  int64_t block = 0, seq = 0;              // bs, N
  int64_t min_blocks = 0, max_blocks = 0;  // the budget clamps in blocks
  bool dense_fallback = false;
  at::Tensor query_aware;      // (B, Hq) bool
  at::Tensor jsd;              // (B, Hq) float64
  at::Tensor vertical_cumsum;  // (B, Hq, N) cumulative sum of vert_tok sorted descending
  at::Tensor slash_cumsum;     // (B, Hq, N) likewise of slash_tok
  at::Tensor vertical_order;   // (B, Hq, nb) int64: key blocks by vert_blk descending (block 0 first)
  at::Tensor slash_order;      // (B, Hq, nb) int64: block diagonals by slash_blk descending (diagonal first)
  at::Tensor pooled_cumsum;    // (B, Hq, nb * nb) cumulative sum of the pooled map sorted descending
  at::Tensor pooled_order;     // (B, Hq, nb * nb) int64: the flat (i * nb + j) entry of each sorted value
};

// Everything of flexprefill_block_mask that does not depend on gamma (config.gamma is validated, not used).
FlexPrefillEstimate flexprefill_estimate(const at::Tensor& q, const at::Tensor& k,
                                         const FlexPrefillConfig& config);

// The selection at coverage `gamma` in (0, 1] from an estimate: bit-identical to flexprefill_block_mask with
// the estimate's configuration and that gamma. `estimate` is not modified (it may be selected from again).
FlexPrefillMask flexprefill_select(const FlexPrefillEstimate& estimate, double gamma);

// flexprefill_block_mask + sparge::block_sparse_attention over that mask (causal, no stage 2, no
// quantization). stats: the block-sparse attention's (blocks bs x bs), prediction_ms = the mask's time.
AttentionResult flexprefill_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const FlexPrefillConfig& config);

}  // namespace sparge
