// FlexPrefill's block selection (bytedance/FlexPrefill `get_active_blocks`), vectorized over (batch, query
// head), plus the attention call over the selected blocks. The algorithm and the choices are listed in
// sparge/flexprefill.h; the comments here say why each step looks the way it does.
#include "sparge/flexprefill.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "internal.h"
#include "sparge/error.h"

namespace sparge {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Validates the configuration, then the tensors (through the shared check with causal off, so that Nq != Nk
// gets FlexPrefill's own message below rather than the generic bottom-right one).
detail::Problem check_flex(const char* fn, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const FlexPrefillConfig& c) {
  if (c.block < 1) detail::fail(fn, "argument `block`: expected >= 1, got ", c.block);
  if (!(c.gamma > 0.0 && c.gamma <= 1.0))
    detail::fail(fn, "argument `gamma`: expected a value in (0, 1], got ", c.gamma);
  if (!(c.tau >= 0.0)) detail::fail(fn, "argument `tau`: expected a value >= 0, got ", c.tau);
  if (c.min_budget < 0) detail::fail(fn, "argument `min_budget`: expected >= 0 tokens, got ", c.min_budget);
  if (c.max_budget && *c.max_budget < 1)
    detail::fail(fn, "argument `max_budget`: expected >= 1 tokens (or none), got ", *c.max_budget);
  if (!c.causal)
    detail::fail(fn,
                 "argument `causal`: expected true (FlexPrefill is a causal-prefill method: its vertical and "
                 "slash estimates read the causally masked last query block), got false");
  SpargeConfig sc;
  sc.block_q = sc.block_k = c.block;
  sc.causal = false;
  sc.scale = c.scale;
  sc.layout = c.layout;
  const auto p = detail::check_problem(fn, q, k, v, sc);
  if (p.seq_q != p.seq_k)
    detail::fail(fn,
                 "arguments `q`, `k`: expected equal sequence lengths (FlexPrefill is prefill-only, as the ",
                 "original, which asserts q_len == k_len), got Nq = ", p.seq_q, ", Nk = ", p.seq_k);
  return p;
}

// (B, H, N, D) -> (B, H, NB, D): the mean of each block's valid rows (a partial tail block divides by its
// true count, as the original's average pooling does).
at::Tensor block_means(const at::Tensor& x, int64_t block) {
  const int64_t n = x.size(2), nb = ceil_div(n, block);
  const auto sums = detail::pad_blocks(x, block).sum(3);
  const auto rows = at::clamp_max(n - at::arange(nb, x.options().dtype(at::kLong)) * block, block);
  return sums / rows.to(x.scalar_type()).view({1, 1, nb, 1});
}

// (B, H, N) -> (B, H, NB): sums over blocks of `block` consecutive entries from index 0 (tail zero-padded).
at::Tensor block_sums(const at::Tensor& x, int64_t block) {
  const int64_t n = x.size(-1), nb = ceil_div(n, block);
  const auto padded = nb * block == n ? x : at::constant_pad_nd(x, {0, nb * block - n}, 0.0);
  return padded.view({x.size(0), x.size(1), nb, block}).sum(-1);
}

// (B, H, N) -> (B, H, N): the cumulative sum of the entries sorted descending. The budgets count the largest
// entries whose running sum stays <= gamma, plus one, as the original does (select_of).
at::Tensor descending_cumsum(const at::Tensor& x) {
  return std::get<0>(x.sort(/*stable=*/false, /*dim=*/-1, /*descending=*/true)).cumsum(-1);
}

// (B, H, M) values -> (B, H, M) int64: indices by value descending. A stable sort breaks ties toward the
// lower index, so the choice is deterministic on every device (the original's topk leaves ties unspecified).
at::Tensor descending_order(const at::Tensor& x) {
  return std::get<1>(x.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/true));
}

// (B, H, M) order, (B, H) counts -> (B, H, M) bool: the first `count` entries of each row's order.
at::Tensor first_of(const at::Tensor& order, const at::Tensor& count) {
  const auto rank = at::arange(order.size(-1), order.options());
  return at::zeros(order.sizes(), order.options().dtype(at::kBool))
      .scatter_(-1, order, rank < count.unsqueeze(-1));
}

// sum_j p_j log(p_j / m_j) over the last axis with 0 log 0 = 0. m >= p / 2 wherever p > 0, so the log is
// finite there; where p = 0 the term is 0 whatever m is (the original computes 0 * log 0 = NaN).
at::Tensor kl_to_mixture(const at::Tensor& p, const at::Tensor& m) {
  return at::where(p > 0, p * at::log(p / m), at::zeros({}, p.options())).sum(-1);
}

using detail::timed_ms;

// Everything before the first comparison with gamma.
FlexPrefillEstimate estimate_of(const at::Tensor& q, const at::Tensor& k, const FlexPrefillConfig& c,
                                const detail::Problem& p) {
  const int64_t bs = c.block, N = p.seq_q, nb = ceil_div(N, bs);
  const int64_t B = p.batch, H = p.heads_q, Hkv = p.heads_kv, G = p.group(), D = p.head_dim;
  const auto dev = q.options();
  FlexPrefillEstimate e;
  e.block = bs;
  e.seq = N;
  e.min_blocks = ceil_div(c.min_budget, bs);
  e.max_blocks = c.max_budget ? std::min(ceil_div(*c.max_budget, bs), nb) : nb;
  if (N <= flexprefill_dense_threshold(c)) {
    e.dense_fallback = true;
    e.query_aware = at::zeros({B, H}, dev.dtype(at::kBool));
    return e;
  }

  const auto dt = detail::math_dtype(q.scalar_type());
  const auto lopt = dev.dtype(at::kLong);
  const auto qh = detail::to_hnd(q, c.layout).to(dt);
  const auto kh = detail::to_hnd(k, c.layout).to(dt);
  // The original scales the estimate by 1 / sqrt(D) whatever softmax_scale the attention uses; so do we.
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(D));

  // Last-query attention. The query heads sharing a kv head are stacked along the rows, so one matmul per kv
  // head serves the whole group and K is never repeated: (B, Hkv, G * n, D) x (B, Hkv, D, N).
  const int64_t n = std::min(bs, N);
  const auto lq = qh.narrow(2, N - n, n) * inv_sqrt_d;  // (B, H, n, D)
  auto s = at::matmul(lq.reshape({B, Hkv, G * n, D}), kh.transpose(-1, -2)).reshape({B, H, n, N});
  const auto rows = at::arange(n, lopt).view({-1, 1});  // last-query row i is token N - n + i
  const auto cols = at::arange(N, lopt).view({1, -1});
  s = s.masked_fill(cols > rows + (N - n), -kInf);
  const auto prob = at::softmax(s, -1);  // (B, H, n, N); every row has its own key, so no row is all -inf

  // Column means, and diagonal means: slash_tok[o] gathers P[i, N - n + i - o]; rows where that key would
  // be negative contribute 0, and the sum is divided by n (not by the rows having offset o) so that
  // slash_tok, like vert_tok, is a distribution summing to 1: gamma is a fraction of its mass.
  const auto vert_tok = prob.mean(2);         // (B, H, N)
  const auto key_at = rows + (N - n) - cols;  // (n, N): key index of row i at offset o
  const auto diag = prob.gather(-1, key_at.clamp_min(0).expand({B, H, n, N}))
                        .masked_fill((key_at < 0).expand({B, H, n, N}), 0.0);
  const auto slash_tok = diag.sum(2) / static_cast<double>(n);  // (B, H, N) indexed by offset o

  // The budgets count the largest entries whose running sum stays <= gamma (select_of): their sorted
  // cumulative sums.
  e.vertical_cumsum = descending_cumsum(vert_tok);
  e.slash_cumsum = descending_cumsum(slash_tok);

  // Block scores. slash_blk groups offsets by the key block that the last query (N - 1) sees at that offset,
  // (N - 1 - o) // bs, and numbers the groups from the diagonal: s = nb - 1 - that block. This is the
  // original's grouping (it sums the diagonals indexed by key column N - 1 - o in blocks from 0); it equals
  // o // bs when bs divides N. Flipping offsets to key columns, summing, and flipping back does exactly that.
  auto vert_blk = block_sums(vert_tok, bs);                      // (B, H, nb) by key block
  auto slash_blk = block_sums(slash_tok.flip(-1), bs).flip(-1);  // (B, H, nb) by block diagonal s

  // Pooled estimate of the last queries' block distribution, and its divergence from the true one.
  const auto kbar = block_means(kh, bs);  // (B, Hkv, nb, D)
  const auto est = at::softmax(
      at::matmul(lq.mean(2).reshape({B, Hkv, G, D}), kbar.transpose(-1, -2)).reshape({B, H, nb}), -1);
  // vert_blk already sums to 1 (each row of P does); dividing by its sum only removes rounding, so the
  // divergence is between two distributions as the square-root JS divergence assumes.
  const auto vd = vert_blk / vert_blk.sum(-1, /*keepdim=*/true);
  const auto mix = (est + vd) * 0.5;
  // Rounding can make the sum of the two non-negative KL terms a hair below 0; its square root is 0.
  const auto jsd = at::sqrt((0.5 * kl_to_mixture(est, mix) + 0.5 * kl_to_mixture(vd, mix)).clamp_min(0.0));
  e.query_aware = jsd < c.tau;  // (B, H)
  e.jsd = jsd.to(at::kDouble);

  // The first key block (sink) and the diagonal always win the ranking.
  vert_blk.select(-1, 0).fill_(kInf);
  slash_blk.select(-1, 0).fill_(kInf);
  e.vertical_order = descending_order(vert_blk);  // (B, H, nb) over key blocks v
  e.slash_order = descending_order(slash_blk);    // (B, H, nb) over block diagonals s

  // Query-aware selection, ranked for every head (nb x nb per head is cheap) and applied to the query-aware
  // ones: pooled Q against pooled K per query block, then GLOBAL coverage over the head's flattened map.
  const auto bi = at::arange(nb, lopt).view({-1, 1}), bj = at::arange(nb, lopt).view({1, -1});
  const auto lower = bj <= bi;                         // (nb, nb) block-causal
  const auto qbar = block_means(qh, bs) * inv_sqrt_d;  // (B, H, nb, D)
  auto a = at::matmul(qbar.reshape({B, Hkv, G * nb, D}), kbar.transpose(-1, -2)).reshape({B, H, nb, nb});
  a = at::softmax(a.masked_fill(lower.logical_not(), -kInf), -1).reshape({B, H, nb * nb});
  const auto [sorted, order] = a.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/true);
  e.pooled_cumsum = sorted.cumsum(-1);
  e.pooled_order = order;
  return e;
}

// The selection at gamma: budgets, the vertical and slash picks, the query-aware coverage.
FlexPrefillMask select_of(const FlexPrefillEstimate& e, double gamma) {
  const int64_t bs = e.block, N = e.seq, nb = ceil_div(N, bs);
  const int64_t B = e.query_aware.size(0), H = e.query_aware.size(1);
  const auto dev = e.query_aware.options();
  const auto lopt = dev.dtype(at::kLong);
  const auto valid = causal_valid_blocks(N, N, bs, bs, /*causal=*/true, dev);  // (nb, nb) lower triangle
  FlexPrefillMask r;
  r.query_aware = e.query_aware;
  if (e.dense_fallback) {
    r.dense_fallback = true;
    r.mask = BlockMask::from_dense(valid.expand({B, H, nb, nb}).contiguous(), bs, bs, N, N);
    return r;
  }

  // Budgets in blocks: nV = (tokens covering gamma) // bs + 1, counted as the original does (the entries
  // whose sorted cumulative sum stays <= gamma, plus one). Clamp order as the original: the lower bound
  // first, then the upper (which wins if max_budget < min_budget).
  auto budget = [&](const at::Tensor& cumsum) {
    return at::div((cumsum <= gamma).sum(-1) + 1, bs, "floor")
        .add_(1)
        .clamp_min_(e.min_blocks)
        .clamp_max_(e.max_blocks);
  };
  // Query-aware heads keep only the minimum vertical/slash budget (not clamped by max_budget, as in the
  // original). At least one block each: the first key block and the diagonal (see the header).
  const auto min_t = at::full({}, e.min_blocks, lopt);
  const auto num_v = at::where(e.query_aware, min_t, budget(e.vertical_cumsum)).clamp_min(1);
  const auto num_s = at::where(e.query_aware, min_t, budget(e.slash_cumsum)).clamp_min(1);

  const auto sel_v = first_of(e.vertical_order, num_v);  // (B, H, nb) over key blocks v
  const auto sel_s = first_of(e.slash_order, num_s);     // (B, H, nb) over block diagonals s
  const auto bi = at::arange(nb, lopt).view({-1, 1}), bj = at::arange(nb, lopt).view({1, -1});
  const auto lower = bj <= bi;  // (nb, nb) block-causal
  // Block (i, j) lies on diagonal i - j: read sel_s there (clamped where j > i, which `lower` removes).
  const auto on_slash = sel_s.index_select(-1, (bi - bj).clamp_min(0).flatten()).view({B, H, nb, nb});
  auto mask = (sel_v.unsqueeze(2) | on_slash) & lower;

  // Query-aware heads add the pooled map's entries kept by GLOBAL coverage (crossing entry dropped).
  const auto keep = e.pooled_cumsum <= gamma * static_cast<double>(nb);
  const auto chosen = at::zeros({B, H, nb * nb}, dev.dtype(at::kBool)).scatter_(-1, e.pooled_order, keep);
  mask = mask | (chosen.view({B, H, nb, nb}) & e.query_aware.view({B, H, 1, 1}));

  r.mask = BlockMask::from_dense(mask & valid, bs, bs, N, N);
  r.jsd = e.jsd;
  r.num_vertical = num_v;
  r.num_slash = num_s;
  return r;
}

}  // namespace

FlexPrefillConfig flexprefill_preset(std::string_view name) {
  FlexPrefillConfig c;
  if (name == "library") return c;
  if (name == "paper_llama31") {
    c.gamma = 0.95;
    return c;
  }
  detail::fail(__func__, "argument `name`: expected \"library\" or \"paper_llama31\", got \"",
               std::string(name), "\"");
}

int64_t flexprefill_dense_threshold(const FlexPrefillConfig& config) {
  SPARGE_CHECK(config.block >= 1, "argument `block`: expected >= 1, got ", config.block);
  SPARGE_CHECK(config.min_budget >= 0, "argument `min_budget`: expected >= 0 tokens, got ",
               config.min_budget);
  return std::max(2 * config.block, ceil_div(config.min_budget, config.block) * config.block);
}

FlexPrefillMask flexprefill_block_mask(const at::Tensor& q, const at::Tensor& k,
                                       const FlexPrefillConfig& config) {
  const auto p = check_flex(__func__, q, k, at::Tensor(), config);
  return select_of(estimate_of(q, k, config, p), config.gamma);
}

FlexPrefillEstimate flexprefill_estimate(const at::Tensor& q, const at::Tensor& k,
                                         const FlexPrefillConfig& config) {
  const auto p = check_flex(__func__, q, k, at::Tensor(), config);
  return estimate_of(q, k, config, p);
}

FlexPrefillMask flexprefill_select(const FlexPrefillEstimate& estimate, double gamma) {
  if (!(gamma > 0.0 && gamma <= 1.0))
    detail::fail(__func__, "argument `gamma`: expected a value in (0, 1], got ", gamma);
  if (estimate.block < 1 || !estimate.query_aware.defined() ||
      (!estimate.dense_fallback && !estimate.pooled_order.defined()))
    detail::fail(__func__,
                 "argument `estimate`: expected the result of flexprefill_estimate, got an empty one");
  return select_of(estimate, gamma);
}

AttentionResult flexprefill_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const FlexPrefillConfig& config) {
  SPARGE_CHECK(v.defined(), "argument `v`: expected a defined tensor");
  const auto p = check_flex(__func__, q, k, v, config);
  FlexPrefillMask m;
  const double predict_ms =
      timed_ms(q.device(), [&] { m = select_of(estimate_of(q, k, config, p), config.gamma); });
  SpargeConfig sc;
  sc.block_q = sc.block_k = config.block;
  sc.causal = true;
  sc.scale = config.scale;
  sc.layout = config.layout;
  sc.return_lse = config.return_lse;
  auto r = block_sparse_attention(q, k, v, m.mask, sc);
  r.stats.prediction_ms = predict_ms;
  return r;
}

}  // namespace sparge
