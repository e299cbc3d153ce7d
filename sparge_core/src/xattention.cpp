// XAttention baseline: antidiagonal block scoring and threshold selection (see sparge/xattention.h for the
// algorithm and the tail, causal and GQA rules).
//
// Vectorized form of the antidiagonal sum: with Q and K zero-padded, the reduced row r of Q is the S rows
// r*S .. r*S+S-1 in reversed order concatenated into one vector of S*D, the reduced column c of K is the S
// rows c*S .. c*S+S-1 in order, so R = Qr . Kr^T is one matmul of inner size S*D (j-th slice of Qr holds
// Q[r*S + S-1-j], j-th slice of Kr holds K[c*S + j]). Kr is a plain view of K.
#include "sparge/xattention.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <tuple>
#include <vector>

#include "internal.h"
#include "sparge/error.h"

namespace sparge {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Reduced scores of one chunk are (B, Hq, rows, reduced keys) in the math dtype; query blocks are processed
// in chunks keeping that under ~1 GiB (a 128K-token head at stride 8 alone needs 16K x 16K floats). Rows are
// independent (softmax per reduced row, block sums per query block), so chunking changes nothing.
constexpr int64_t kChunkBytes = int64_t{1} << 30;

// Validates the XAttention fields, then q and k through the shared checks; returns the problem sizes.
detail::Problem check_xattention(const char* fn, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const XAttentionConfig& c) {
  if (c.block < 1) detail::fail(fn, "argument `block`: expected >= 1, got ", c.block);
  if (c.stride < 1 || c.block % c.stride != 0)
    detail::fail(fn, "argument `stride`: expected a divisor of block (", c.block, ") >= 1, got ", c.stride);
  if (!(c.threshold > 0.0 && c.threshold <= 1.0))
    detail::fail(fn, "argument `threshold`: expected a value in (0, 1], got ", c.threshold);
  SpargeConfig sc;
  sc.block_q = sc.block_k = c.block;
  sc.causal = c.causal;
  sc.scale = c.scale;
  sc.layout = c.layout;
  return detail::check_problem(fn, q, k, v, sc);
}

using detail::timed_ms;

// (B, H, N, D) zero-padded to `rows` tokens.
at::Tensor pad_rows(const at::Tensor& x, int64_t rows) {
  return rows == x.size(2) ? x : at::constant_pad_nd(x, {0, 0, 0, rows - x.size(2)}, 0.0);
}

// (B, Hq, NQB, NKB) block scores: per (query block, key block) the summed reduced softmax probabilities.
at::Tensor block_scores(const at::Tensor& q, const at::Tensor& k, const XAttentionConfig& c,
                        const detail::Problem& p) {
  const int64_t S = c.stride, bs = c.block / S;  // reduced cells per block side
  const int64_t nqb = (p.seq_q + c.block - 1) / c.block, nkb = (p.seq_k + c.block - 1) / c.block;
  const int64_t rq_pad = nqb * bs, rk_pad = nkb * bs;  // reduced rows / columns, padded to whole blocks
  const int64_t B = p.batch, Hq = p.heads_q, Hkv = p.heads_kv, G = p.group(), D = p.head_dim;
  const int64_t off = p.seq_k - p.seq_q;
  const auto dt = detail::math_dtype(q.scalar_type());
  const auto lopt = q.options().dtype(at::kLong);

  // Qr: (B, Hq, rq_pad, S*D), each reduced row's S query rows reversed. Kr: (B, Hkv, rk_pad, S*D).
  const auto qh = pad_rows(detail::to_hnd(q, c.layout).to(dt), rq_pad * S);
  const auto kh = pad_rows(detail::to_hnd(k, c.layout).to(dt), rk_pad * S);
  const auto qr = qh.reshape({B, Hq, rq_pad, S, D}).flip(3).reshape({B, Hq, rq_pad, S * D});
  const auto kr_t = kh.reshape({B, Hkv, rk_pad, S * D}).transpose(-1, -2);  // (B, Hkv, S*D, rk_pad)
  const double factor = p.scale / static_cast<double>(S);

  // Reduced key c holds a real token iff c*S < Nk; its first key is c*S.
  const auto col_first = at::arange(rk_pad, lopt).view({1, -1}) * S;  // (1, rk_pad)
  const auto col_real = col_first < p.seq_k;

  const int64_t per_block = std::max<int64_t>(1, B * Hq * bs * rk_pad * at::elementSize(dt));
  const int64_t chunk = std::clamp<int64_t>(kChunkBytes / per_block, 1, nqb);
  std::vector<at::Tensor> parts;
  for (int64_t i0 = 0; i0 < nqb; i0 += chunk) {
    const int64_t nb = std::min(chunk, nqb - i0), r0 = i0 * bs, rows = nb * bs;
    // Query heads of one kv head are folded into the rows: (B, Hkv, G * rows, S*D) . (B, Hkv, S*D, rk_pad),
    // so K is never repeated; the result viewed as (B, Hq, rows, rk_pad) has head h = kv * G + g.
    const auto qc = qr.narrow(2, r0, rows).reshape({B, Hkv, G * rows, S * D});
    auto logits = at::matmul(qc, kr_t).view({B, Hq, rows, rk_pad}) * factor;

    // Reduced query r holds a real token iff r*S < Nq; its last real query is min(r*S + S-1, Nq-1).
    const auto row_first = at::arange(r0, r0 + rows, lopt).view({-1, 1}) * S;  // (rows, 1)
    auto allowed = (row_first < p.seq_q) & col_real;                           // (rows, rk_pad)
    if (c.causal) {
      const auto row_last = at::clamp_max(row_first + (S - 1), p.seq_q - 1);
      allowed = allowed & (col_first <= row_last + off);
    }
    logits = logits.masked_fill(allowed.logical_not(), -kInf);
    // Padded reduced rows are all -inf: their NaN softmax becomes 0 (they carry no mass).
    const auto prob = at::where(allowed, at::softmax(logits, -1), at::zeros({}, logits.options()));
    parts.push_back(prob.view({B, Hq, nb, bs, nkb, bs}).sum({3, 5}));  // (B, Hq, nb, NKB)
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts, 2);
}

}  // namespace

namespace {

// xattention_scores after the checks.
XAttentionScores scores_of(const at::Tensor& q, const at::Tensor& k, const XAttentionConfig& config,
                           const detail::Problem& p) {
  const int64_t blk = config.block;
  XAttentionScores s;
  s.block = blk;
  s.seq_q = p.seq_q;
  s.seq_k = p.seq_k;
  s.causal = config.causal;
  s.valid = causal_valid_blocks(p.seq_q, p.seq_k, blk, blk, config.causal, q.options());  // (NQB, NKB)
  s.score = block_scores(q, k, config, p);                                                // (B, Hq, NQB, NKB)
  auto forced = causal_diagonal_blocks(p.seq_q, p.seq_k, blk, blk, config.causal, q.options());
  forced.select(-1, 0).fill_(true);  // the sink
  s.forced = forced & s.valid;
  const auto candidate = s.valid & s.forced.logical_not();

  const auto zero = at::zeros({}, s.score.options());
  s.total = s.score.sum(-1, /*keepdim=*/true);                                            // (B, Hq, NQB, 1)
  const auto forced_mass = at::where(s.forced, s.score, zero).sum(-1, /*keepdim=*/true);  // (B, Hq, NQB, 1)
  // Non-candidates get -1 (probability sums are >= 0) so they sort last; stable sort: ties keep ascending
  // block order.
  const auto keyed = at::where(candidate, s.score, at::full({}, -1.0, s.score.options()));
  std::tie(s.sorted, s.order) = keyed.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/true);
  const auto mass = at::clamp_min(s.sorted, 0.0);
  // Kept mass before adding the t-th candidate: forced mass + the t candidates before it (exclusive sum).
  const int64_t nkb = s.score.size(-1);
  s.before = forced_mass + at::constant_pad_nd(mass.cumsum(-1).narrow(-1, 0, nkb - 1), {1, 0}, 0.0);
  return s;
}

// xattention_select after the checks: one comparison per sorted candidate, scattered back to block order.
BlockMask select_of(const XAttentionScores& scores, double threshold) {
  const int64_t blk = scores.block;
  const auto& sc = scores.score;
  if (threshold >= 1.0) {
    const auto all = scores.valid.expand({sc.size(0), sc.size(1), sc.size(2), sc.size(3)}).contiguous();
    return BlockMask::from_dense(all, blk, blk, scores.seq_q, scores.seq_k);
  }
  const auto take = (scores.before < threshold * scores.total) & (scores.sorted >= 0.0);
  const auto selected = at::zeros_like(take).scatter_(-1, scores.order, take);
  const auto mask = (selected | scores.forced) & scores.valid;
  return BlockMask::from_dense(mask, blk, blk, scores.seq_q, scores.seq_k);
}

}  // namespace

XAttentionScores xattention_scores(const at::Tensor& q, const at::Tensor& k, const XAttentionConfig& config) {
  return scores_of(q, k, config, check_xattention(__func__, q, k, at::Tensor(), config));
}

BlockMask xattention_select(const XAttentionScores& scores, double threshold) {
  if (!(threshold > 0.0 && threshold <= 1.0))
    detail::fail(__func__, "argument `threshold`: expected a value in (0, 1], got ", threshold);
  if (scores.block < 1 || !scores.score.defined() || !scores.before.defined())
    detail::fail(__func__, "argument `scores`: expected the result of xattention_scores, got an empty one");
  return select_of(scores, threshold);
}

BlockMask xattention_block_mask(const at::Tensor& q, const at::Tensor& k, const XAttentionConfig& config) {
  const auto p = check_xattention(__func__, q, k, at::Tensor(), config);
  if (config.threshold >= 1.0) {
    // Every causal-valid block: no scoring needed.
    const int64_t blk = config.block;
    const auto valid = causal_valid_blocks(p.seq_q, p.seq_k, blk, blk, config.causal, q.options());
    const auto all = valid.expand({p.batch, p.heads_q, valid.size(0), valid.size(1)}).contiguous();
    return BlockMask::from_dense(all, blk, blk, p.seq_q, p.seq_k);
  }
  return select_of(scores_of(q, k, config, p), config.threshold);
}

AttentionResult xattention_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const XAttentionConfig& config) {
  SPARGE_CHECK(v.defined(), "argument `v`: expected a defined tensor");
  check_xattention(__func__, q, k, v, config);
  BlockMask mask;
  const double predict_ms = timed_ms(q.device(), [&] { mask = xattention_block_mask(q, k, config); });
  SpargeConfig sc;
  sc.block_q = sc.block_k = config.block;
  sc.causal = config.causal;
  sc.scale = config.scale;
  sc.layout = config.layout;
  sc.pvthreshd = {kNoStage2};
  sc.quant = QuantMode::kNone;
  auto r = block_sparse_attention(q, k, v, mask, sc);
  r.stats.prediction_ms = predict_ms;
  return r;
}

}  // namespace sparge
