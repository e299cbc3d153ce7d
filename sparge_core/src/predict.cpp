// Stage 1 of SpargeAttn: predict the block mask from Q and K.
//
//   q: (B, Hq, Nq, D), k: (B, Hkv, Nk, D) (any layout; handled in HND)   ->   BlockMask over (B, Hq, NQB,
//   NKB)
//
// Steps (README "Algorithm contract", stage 1):
//   1. Ks = K - mean_tokens(K)  (per b, kv head; softmax is invariant to it)
//   2. pooled block means of Q and Ks over valid rows; self-similarity sim = ||mean of unit rows||^2
//   3. S~ = pooled_q . pooled_k^T * D^-0.5; columns of non-similar key blocks and causally invalid blocks ->
//   -inf
//   4. P~ = softmax rows; candidates sorted by P~ descending (stable: ties keep ascending block order)
//   5. CDF mode keeps the prefix whose cumulative sum stays <= tau (+ the crossing block if
//   cdf_keep_crossing;
//      everything when tau >= 1); top-k mode keeps floor(topk * causal-valid blocks of the row); at least one
//   6. OR forced columns (non-similar key blocks), forced rows (non-similar query blocks), the sink, and in
//   causal
//      attention the diagonal blocks; AND causal-valid.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "internal.h"
#include "sparge/blocks.h"
#include "sparge/reference.h"

namespace sparge {

// Numerical slack of floor(topk * n): 0.29 * 100 is 28.999999999999996 in binary floating point.
inline constexpr double kTopkSlack = 1e-6;

BlockMask predict_block_mask(const at::Tensor& q, const at::Tensor& k, const SpargeConfig& config) {
  const auto p = detail::check_problem(__func__, q, k, at::Tensor(), config);
  const int64_t bq = config.block_q, bk = config.block_k;
  const auto dt = detail::math_dtype(q.scalar_type());
  const auto opt = q.options().dtype(dt);
  const auto qh = detail::to_hnd(q, config.layout).to(dt);
  const auto kh = detail::to_hnd(k, config.layout).to(dt);
  const auto ks = kh - kh.mean(2, /*keepdim=*/true);  // (B, Hkv, Nk, D)

  const auto pq = pool_blocks(qh, bq);  // pooled (B, Hq, NQB, D), similarity (B, Hq, NQB)
  const auto pk = pool_blocks(ks, bk);  // pooled (B, Hkv, NKB, D), similarity (B, Hkv, NKB)
  const auto pooled_k = pk.pooled.repeat_interleave(p.group(), 1);   // (B, Hq, NKB, D)
  const auto sim_k = pk.similarity.repeat_interleave(p.group(), 1);  // (B, Hq, NKB)
  const int64_t nkb = pooled_k.size(2);

  const auto theta = detail::per_head(config.simthreshd1, p.heads_q, opt).view({1, -1, 1});
  const auto q_similar = (pq.similarity > theta).unsqueeze(-1);  // (B, Hq, NQB, 1)
  const auto k_similar = (sim_k > theta).unsqueeze(2);           // (B, Hq, 1, NKB)
  const auto valid = causal_valid_blocks(p.seq_q, p.seq_k, bq, bk, config.causal, q.options());  // (NQB, NKB)
  const auto candidate = valid & k_similar;  // (B, Hq, NQB, NKB)

  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(p.head_dim));
  auto score = at::matmul(pq.pooled, pooled_k.transpose(-1, -2)) * inv_sqrt_d;
  score = score.masked_fill(candidate.logical_not(), -std::numeric_limits<double>::infinity());
  // A row without candidates is all -inf: its softmax is NaN, replaced by zeros (nothing to select).
  const auto prob = at::where(candidate, at::softmax(score, -1), at::zeros({}, opt));
  const auto [sorted, order] = prob.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/true);

  const auto n_candidates = candidate.sum(-1);  // (B, Hq, NQB) int64
  at::Tensor keep;                              // (B, Hq, NQB) int64: blocks to keep from the sorted order
  if (config.select == SelectMode::kCdf) {
    const auto tau = detail::per_head(config.cdfthreshd, p.heads_q, opt).view({1, -1, 1, 1});
    keep = (sorted.cumsum(-1) <= tau).sum(-1);
    if (config.cdf_keep_crossing) keep = keep + 1;
    keep = at::where(tau.squeeze(-1) >= 1.0, n_candidates, keep);
  } else {
    const auto frac =
        detail::per_head(config.topk, p.heads_q, q.options().dtype(at::kDouble)).view({1, -1, 1});
    const auto n_valid = valid.sum(-1).to(at::kDouble).view({1, 1, -1});  // (1, 1, NQB)
    keep = at::floor(frac * n_valid + kTopkSlack).to(at::kLong).expand_as(n_candidates);
  }
  keep = at::maximum(at::minimum(keep, n_candidates), at::clamp_max(n_candidates, 1));  // >= 1 when possible

  const auto rank = at::arange(nkb, q.options().dtype(at::kLong));
  const auto selected =
      at::zeros_like(candidate).scatter_(-1, order, rank.view({1, 1, 1, -1}) < keep.unsqueeze(-1));

  auto final_mask = selected | k_similar.logical_not() | q_similar.logical_not();
  final_mask = final_mask | causal_diagonal_blocks(p.seq_q, p.seq_k, bq, bk, config.causal, q.options());
  if (config.attention_sink) final_mask.select(-1, 0).fill_(true);
  final_mask = final_mask & valid;
  return BlockMask::from_dense(final_mask, bq, bk, p.seq_q, p.seq_k);
}

}  // namespace sparge
