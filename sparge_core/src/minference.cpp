// MInference baseline: the vertical-slash estimate, its 64x64 kernel index, the A-shape and block-sparse
// patterns, the per-head dispatch and the JSON config loader. The algorithm and the choices are listed in
// sparge/minference.h; the comments here say why each step looks the way it does.
#include "sparge/minference.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "internal.h"
#include "sparge/error.h"

namespace sparge {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kBlock = 64;           // BLOCK_M = BLOCK_N of MInference's kernels, and its pooling size
constexpr int64_t kLastQ = 64;           // queries of the vertical-slash estimate
constexpr int64_t kMinVertical = 30;     // v = max(vertical_size, 30)
constexpr int64_t kMinSlash = 50;        // s = max(slash_size, 50)
constexpr int64_t kForcedVertical = 30;  // col[0 .. 29] = +inf
constexpr int64_t kForcedSlash = 100;    // diag[0 .. 99] = +inf
// Scores of one chunk of query rows, (B, H, rows, Nk) in the math dtype plus the bool mask, stay under this
// (a 32-head 128K-token problem needs 64 GiB of float32 scores at once). Rows are independent, so chunking
// changes nothing.
constexpr int64_t kChunkBytes = int64_t{1} << 28;

using Pattern = MInferenceHead::Pattern;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

using detail::timed_ms;

void check_heads(const char* fn, const std::vector<MInferenceHead>& heads, int64_t heads_q) {
  const auto n = static_cast<int64_t>(heads.size());
  if (n != 1 && n != heads_q)
    detail::fail(fn, "argument `heads`: expected 1 entry or one per query head (", heads_q, "), got ", n);
  for (int64_t h = 0; h < n; ++h) {
    const auto& e = heads[h];
    const auto pat = static_cast<int>(e.pattern);
    if (pat < 0 || pat > static_cast<int>(Pattern::kBlockSparse))
      detail::fail(fn, "argument `heads[", h,
                   "].pattern`: expected kVerticalSlash, kAShape or kBlockSparse, got ", pat);
    if (e.vertical_size < 0)
      detail::fail(fn, "argument `heads[", h, "].vertical_size`: expected >= 0, got ", e.vertical_size);
    if (e.slash_size < 0)
      detail::fail(fn, "argument `heads[", h, "].slash_size`: expected >= 0, got ", e.slash_size);
    if (e.n_init < 0) detail::fail(fn, "argument `heads[", h, "].n_init`: expected >= 0, got ", e.n_init);
    // n_local >= 1 keeps the diagonal key, so every A-shape row computes at least one key.
    if (e.n_local < 1) detail::fail(fn, "argument `heads[", h, "].n_local`: expected >= 1, got ", e.n_local);
    if (e.top_blocks < 1)
      detail::fail(fn, "argument `heads[", h, "].top_blocks`: expected >= 1, got ", e.top_blocks);
  }
}

// Validates the MInference fields, then q, k (and v) through the shared checks (causal, so Nq <= Nk).
detail::Problem check_minference(const char* fn, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const MInferenceConfig& c) {
  if (!c.causal)
    detail::fail(
        fn,
        "argument `causal`: expected true (MInference is a causal-prefill method: its estimate reads "
        "the causally masked last queries), got false");
  SpargeConfig sc;
  sc.block_q = sc.block_k = kBlock;
  sc.causal = true;
  sc.scale = c.scale;
  sc.layout = c.layout;
  const auto p = detail::check_problem(fn, q, k, v, sc);
  check_heads(fn, c.heads, p.heads_q);
  const int cov = static_cast<int>(c.coverage);
  if (cov < 0 || cov > static_cast<int>(VsCoverage::kExactTokens))
    detail::fail(fn, "argument `coverage`: expected kKernelTiles or kExactTokens, got ", cov);
  if (!(c.budget_ratio > 0.0 && std::isfinite(c.budget_ratio)))
    detail::fail(fn, "argument `budget_ratio`: expected a finite value > 0, got ", c.budget_ratio);
  if (c.target_sparsity && !(*c.target_sparsity >= 0.0 && *c.target_sparsity < 1.0))
    detail::fail(fn, "argument `target_sparsity`: expected a value in [0, 1) or none, got ",
                 *c.target_sparsity);
  return p;
}

std::vector<MInferenceHead> expand_heads(const std::vector<MInferenceHead>& heads, int64_t heads_q) {
  return heads.size() == 1 ? std::vector<MInferenceHead>(heads_q, heads[0]) : heads;
}

// (B, Hq, R, D) x (B, Hkv, Nk, D)^T -> (B, Hq, R, Nk). The query heads sharing a kv head are stacked along
// the rows (head h = kv head * G + g), so one matmul per kv head serves the group and K is never repeated.
at::Tensor grouped_scores(const at::Tensor& q, const at::Tensor& k) {
  const int64_t B = q.size(0), H = q.size(1), R = q.size(2), D = q.size(3), Hkv = k.size(1);
  return at::matmul(q.reshape({B, Hkv, (H / Hkv) * R, D}), k.transpose(-1, -2)).view({B, H, R, k.size(2)});
}

// (B, Hq, R, Nk) x (B, Hkv, Nk, D) -> (B, Hq, R, D), grouped as above.
at::Tensor grouped_pv(const at::Tensor& p, const at::Tensor& v) {
  const int64_t B = p.size(0), H = p.size(1), R = p.size(2), Hkv = v.size(1);
  return at::matmul(p.reshape({B, Hkv, (H / Hkv) * R, p.size(3)}), v).view({B, H, R, v.size(3)});
}

// Causal (query, key) pairs of one (batch, head): row i sees diag(i) + 1 = i + Nk - Nq + 1 <= Nk keys.
int64_t causal_pairs(int64_t nq, int64_t nk) {
  return nq * (nk - nq + 1) + nq * (nq - 1) / 2;
}

int64_t causal_blocks(int64_t nq, int64_t nk) {
  return causal_valid_blocks(nq, nk, kBlock, kBlock, true, at::TensorOptions()).sum().item<int64_t>();
}

AttentionStats base_stats(int64_t batch, int64_t heads, int64_t nq, int64_t nk) {
  AttentionStats st;
  st.block_q = st.block_k = kBlock;
  st.stage2_group_rows = kBlock;  // no stage 2; the whole 64-row tile is the unit
  st.valid_pairs = batch * heads * causal_pairs(nq, nk);
  st.valid_blocks = batch * heads * causal_blocks(nq, nk);
  return st;
}

// (B, H, R, Nk) bool -> number of 64x64 blocks (query rows aligned at r0, a multiple of 64) holding a true.
int64_t blocks_touched(const at::Tensor& allowed) {
  const int64_t B = allowed.size(0), H = allowed.size(1), R = allowed.size(2), Nk = allowed.size(3);
  const int64_t rq = ceil_div(R, kBlock), nkb = ceil_div(Nk, kBlock);
  auto padded = at::zeros({B, H, rq * kBlock, nkb * kBlock}, allowed.options().dtype(at::kBool));
  padded.narrow(2, 0, R).narrow(3, 0, Nk).copy_(allowed);
  return padded.view({B, H, rq, kBlock, nkb, kBlock}).any(5).any(3).sum().item<int64_t>();
}

// (R, Nk) int64: offset diag(i) - j of key j for query rows i = r0 .. r1-1 (negative = in the future).
at::Tensor row_offsets(int64_t r0, int64_t r1, int64_t nk, int64_t off, const at::TensorOptions& device) {
  const auto lopt = device.dtype(at::kLong);
  return at::arange(r0, r1, lopt).view({-1, 1}) + off - at::arange(nk, lopt).view({1, -1});
}

// Keys each query row computes, for rows [r0, r1): (B, H, r1 - r0, Nk) bool (may be an expanded view).
using RowMask = std::function<at::Tensor(int64_t r0, int64_t r1)>;

struct MaskedOut {
  at::Tensor out;  // (B, H, Nq, D) math dtype
  at::Tensor lse;  // (B, H, Nq) math dtype, -inf for rows that compute no key
  AttentionStats stats;
};

// Exact attention over the keys `mask_rows` allows, by a masked softmax per chunk of query rows (chunks start
// at multiples of 64 so that the block statistics align with the 64x64 grid). qh (B, H, Nq, D), kh, vh
// (B, Hkv, Nk, D), all in the math dtype, HND.
MaskedOut run_masked(const at::Tensor& qh, const at::Tensor& kh, const at::Tensor& vh, double scale,
                     const RowMask& mask_rows) {
  const int64_t B = qh.size(0), H = qh.size(1), Nq = qh.size(2), Nk = kh.size(2);
  const int64_t per_row = std::max<int64_t>(1, B * H * Nk * (qh.element_size() + 1));
  const int64_t rows = std::max<int64_t>(kBlock, kChunkBytes / per_row / kBlock * kBlock);
  MaskedOut r;
  r.stats = base_stats(B, H, Nq, Nk);
  std::vector<at::Tensor> outs, lses;
  for (int64_t r0 = 0; r0 < Nq; r0 += rows) {
    const int64_t r1 = std::min(Nq, r0 + rows);
    const auto allowed = mask_rows(r0, r1);
    auto s = grouped_scores(qh.slice(2, r0, r1), kh) * scale;
    s = s.masked_fill(allowed.logical_not(), -kInf);
    const auto lse = at::logsumexp(s, -1, /*keepdim=*/true);  // -inf for a row without keys
    const auto lse_safe = at::where(lse > -kInf, lse, at::zeros({}, lse.options()));
    outs.push_back(grouped_pv(at::exp(s - lse_safe), vh));  // masked entries: exp(-inf) = 0
    lses.push_back(lse.squeeze(-1));
    r.stats.computed_pairs += allowed.sum().item<int64_t>();
    r.stats.computed_blocks += blocks_touched(allowed);
  }
  r.out = outs.size() == 1 ? outs[0] : at::cat(outs, 2);
  r.lse = lses.size() == 1 ? lses[0] : at::cat(lses, 2);
  return r;
}

// All causal keys (decode, and the dense reference).
RowMask causal_rows(int64_t batch, int64_t heads, int64_t nq, int64_t nk, const at::TensorOptions& device) {
  return [=](int64_t r0, int64_t r1) {
    return (row_offsets(r0, r1, nk, nk - nq, device) >= 0)
        .view({1, 1, r1 - r0, nk})
        .expand({batch, heads, -1, -1});
  };
}

// (B, H, C) index lists padded with -1 -> (B, H, n) bool marks.
at::Tensor marks(const at::Tensor& lists, int64_t n) {
  const auto idx = at::where(lists >= 0, lists, at::full({}, n, lists.options()));
  return at::zeros({lists.size(0), lists.size(1), n + 1}, lists.options().dtype(at::kBool))
      .scatter_(-1, idx, true)
      .narrow(-1, 0, n);
}

// kExactTokens rows: causal and (key marked vertical or its offset marked slash).
RowMask exact_rows(const VerticalSlash& vs) {
  const auto vmark = marks(vs.vertical, vs.seq_k), smark = marks(vs.slash, vs.seq_k);  // (B, H, Nk)
  const int64_t nq = vs.seq_q, nk = vs.seq_k;
  return [=](int64_t r0, int64_t r1) {
    const auto o = row_offsets(r0, r1, nk, nk - nq, vmark.options());  // (R, Nk)
    const std::array<int64_t, 4> sz = {vmark.size(0), vmark.size(1), r1 - r0, nk};
    const auto on_slash = smark.unsqueeze(2).expand(sz).gather(-1, o.clamp_min(0).expand(sz));
    return (on_slash | vmark.unsqueeze(2)) & (o >= 0);
  };
}

// kKernelTiles rows from the index: the keys of each query block's tiles (a difference array over key
// positions turns the tile starts into coverage) and its columns, expanded to the block's rows, AND causal.
// The causal AND is a no-op for the columns (they lie below the block's first diagonal key) and is the
// kernel's loop-1 mask for the tiles.
RowMask tile_rows(const VerticalSlashIndex& ix) {
  const int64_t nq = ix.seq_q, nk = ix.seq_k;
  return [=](int64_t r0, int64_t r1) {
    const int64_t B = ix.block_count.size(0), H = ix.block_count.size(1);
    const int64_t m0 = r0 / kBlock, nm = ceil_div(r1, kBlock) - m0;
    const int64_t width = nk + 2 * kBlock;  // tiles start below nk + 64 (see vertical_slash_index)
    const auto lopt = ix.block_offset.options().dtype(at::kLong);
    const auto starts = ix.block_offset.narrow(2, m0, nm).to(at::kLong);  // (B, H, nm, Smax)
    const auto live = starts >= 0;
    const auto none = at::full({}, width, lopt);
    const auto lo = at::where(live, starts, none),
               hi = at::where(live, (starts + kBlock).clamp_max(width), none);
    const auto one = live.to(at::kLong);
    const auto diff =
        at::zeros({B, H, nm, width + 1}, lopt).scatter_add_(-1, lo, one).scatter_add_(-1, hi, -one);
    auto cover = diff.cumsum(-1).narrow(-1, 0, nk) > 0;  // (B, H, nm, Nk)
    const auto cols = ix.column_index.narrow(2, m0, nm).to(at::kLong);
    cover = cover | marks(cols.reshape({B, H * nm, cols.size(3)}), nk).view({B, H, nm, nk});
    const auto rows = cover.unsqueeze(3).expand({B, H, nm, kBlock, nk}).reshape({B, H, nm * kBlock, nk});
    return rows.narrow(2, 0, r1 - r0) & (row_offsets(r0, r1, nk, nk - nq, lopt) >= 0);
  };
}

// A-shape rows: causal and (sink key or inside the window), per head.
RowMask a_shape_rows(const std::vector<MInferenceHead>& heads, int64_t batch, int64_t nq, int64_t nk,
                     const at::TensorOptions& device) {
  std::vector<int64_t> init, local;
  for (const auto& h : heads) {
    init.push_back(h.n_init);
    local.push_back(h.n_local);
  }
  const auto lopt = device.dtype(at::kLong);
  const int64_t H = static_cast<int64_t>(heads.size());
  const auto n_init = at::tensor(init, at::kLong).to(device.device()).view({1, H, 1, 1});
  const auto n_local = at::tensor(local, at::kLong).to(device.device()).view({1, H, 1, 1});
  return [=](int64_t r0, int64_t r1) {
    const auto o = row_offsets(r0, r1, nk, nk - nq, lopt).view({1, 1, r1 - r0, nk});
    const auto key = at::arange(nk, lopt).view({1, 1, 1, nk});
    return ((o >= 0) & ((key < n_init) | (o < n_local))).expand({batch, H, r1 - r0, nk});
  };
}

// x (B, H, M) -> its entries' indices by descending value (B, H, M). The stable sort breaks ties toward the
// lower index, so the choice below is deterministic on every device (and the forced +inf entries resolve to
// the first keys and the offsets nearest the diagonal).
at::Tensor descending_order(const at::Tensor& x) {
  return std::get<1>(x.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/true));
}

// order (B, H, M) from descending_order, counts per head -> (index lists (B, H, max count) ascending padded
// with -1, counts (B, H)): the counts[h] largest entries of each row.
std::pair<at::Tensor, at::Tensor> largest_sorted(const at::Tensor& order,
                                                 const std::vector<int64_t>& counts) {
  const int64_t B = order.size(0), H = order.size(1), M = order.size(2);
  const int64_t cmax = *std::max_element(counts.begin(), counts.end());
  const auto lopt = order.options().dtype(at::kLong);
  const auto cnt = at::tensor(counts, at::kLong).to(order.device());
  const auto keep =
      (at::arange(M, lopt).view({1, 1, M}) < cnt.view({1, H, 1})).expand({B, H, M}).contiguous();
  const auto chosen = at::zeros({B, H, M}, lopt.dtype(at::kBool)).scatter_(-1, order, keep);
  const auto keyed = at::where(chosen, at::arange(M, lopt).expand({B, H, M}), at::full({}, M, lopt));
  const auto sorted = std::get<0>(keyed.sort(-1)).narrow(-1, 0, cmax);
  auto list = at::where(sorted == M, at::full({}, -1, lopt), sorted).contiguous();
  return {list, cnt.view({1, H}).expand({B, H}).contiguous()};
}

// The estimate's scores before the budgets: per (b, h) the key and offset orders by descending col / diag
// (forced entries +inf). Selecting with any budgets re-ranks nothing: the v (s) first entries of an order.
struct VsScores {
  int64_t seq_q = 0, seq_k = 0;
  at::Tensor col_order, diag_order;  // (B, H, Nk) int64
};

// The estimate of sparge/minference.h up to the budgets. qh (B, H, Nq, D), kh (B, Hkv, Nk, D) in the math
// dtype, HND.
VsScores estimate_scores(const at::Tensor& qh, const at::Tensor& kh, double scale) {
  const int64_t B = qh.size(0), H = qh.size(1), Nq = qh.size(2), Nk = kh.size(2), off = Nk - Nq;
  const int64_t L = std::min(kLastQ, Nq);
  const auto lopt = qh.options().dtype(at::kLong);
  auto s = grouped_scores(qh.narrow(2, Nq - L, L), kh) * scale;              // (B, H, L, Nk)
  const auto diag_key = at::arange(L, lopt).view({-1, 1}) + (Nq - L + off);  // (L, 1): diag(r) of row r
  const auto keys = at::arange(Nk, lopt).view({1, -1});
  s = s.masked_fill(keys > diag_key, -kInf);
  const auto prob = at::softmax(s, -1);  // every row holds its diagonal key, so no row is all -inf

  auto col = prob.sum(2);  // (B, H, Nk) by key
  col.narrow(-1, 0, std::min(kForcedVertical, Nk)).fill_(kInf);
  // diag[o] gathers P[r, diag(r) - o]: the column axis of key_at runs over offsets o = 0 .. Nk-1.
  const auto key_at = diag_key - keys;  // (L, Nk)
  const std::array<int64_t, 4> sz = {B, H, L, Nk};
  auto dg = prob.gather(-1, key_at.clamp_min(0).expand(sz)).masked_fill((key_at < 0).expand(sz), 0.0).sum(2);
  dg.narrow(-1, 0, std::min(kForcedSlash, Nk)).fill_(kInf);
  VsScores r;
  r.seq_q = Nq;
  r.seq_k = Nk;
  r.col_order = descending_order(col);
  r.diag_order = descending_order(dg);
  return r;
}

// A budget scaled by the common ratio (exactly `size` at ratio 1), then floored and capped as the estimate
// does.
int64_t scaled_budget(int64_t size, double ratio, int64_t floor, int64_t nk) {
  const auto scaled = static_cast<int64_t>(std::llround(static_cast<double>(size) * ratio));
  return std::min(nk, std::max(scaled, floor));
}

// The selection with every head's budgets scaled by `ratio`; `heads` has H entries.
VerticalSlash select_budgets(const VsScores& sc, const std::vector<MInferenceHead>& heads, double ratio) {
  const int64_t Nk = sc.seq_k;
  std::vector<int64_t> nv, ns;
  for (const auto& h : heads) {
    nv.push_back(scaled_budget(h.vertical_size, ratio, kMinVertical, Nk));
    ns.push_back(scaled_budget(h.slash_size, ratio, kMinSlash, Nk));
  }
  VerticalSlash r;
  r.seq_q = sc.seq_q;
  r.seq_k = Nk;
  r.budget_ratio = ratio;
  std::tie(r.vertical, r.vertical_count) = largest_sorted(sc.col_order, nv);
  std::tie(r.slash, r.slash_count) = largest_sorted(sc.diag_order, ns);
  return r;
}

// Host copies of a VerticalSlash after validation: lists (B, H, C) and counts (B, H) as int64 on the CPU.
struct VsHost {
  at::Tensor vertical, vertical_count, slash, slash_count;
};

VsHost check_vs(const char* fn, const VerticalSlash& vs, bool need_diagonal) {
  if (vs.seq_q < 1 || vs.seq_k < vs.seq_q)
    detail::fail(fn, "argument `vs`: expected 1 <= seq_q <= seq_k (causal), got seq_q = ", vs.seq_q,
                 ", seq_k = ", vs.seq_k);
  const bool shapes_ok = vs.vertical.defined() && vs.slash.defined() && vs.vertical_count.defined() &&
                         vs.slash_count.defined() && vs.vertical.dim() == 3 && vs.slash.dim() == 3 &&
                         vs.vertical_count.dim() == 2 && vs.slash_count.dim() == 2;
  if (!shapes_ok)
    detail::fail(
        fn,
        "argument `vs`: expected defined lists (B, H, C) and counts (B, H), as minference_vertical_slash "
        "returns");
  const int64_t B = vs.vertical.size(0), H = vs.vertical.size(1);
  for (const auto* t : {&vs.slash, &vs.vertical_count, &vs.slash_count})
    if (t->size(0) != B || t->size(1) != H)
      detail::fail(fn, "argument `vs`: expected every list and count to start with (B, H) = (", B, ", ", H,
                   "), got ", t->sizes());
  for (const auto* t : {&vs.vertical, &vs.slash, &vs.vertical_count, &vs.slash_count}) {
    if (t->scalar_type() != at::kLong && t->scalar_type() != at::kInt)
      detail::fail(fn, "argument `vs`: expected int64 or int32 lists and counts, got ", t->scalar_type());
    if (t->device() != vs.vertical.device())
      detail::fail(fn, "argument `vs`: expected every tensor on ", vs.vertical.device(), ", got ",
                   t->device());
  }
  VsHost host;
  auto cpu = [](const at::Tensor& t) { return t.to(at::kCPU).to(at::kLong).contiguous(); };
  host.vertical = cpu(vs.vertical);
  host.vertical_count = cpu(vs.vertical_count);
  host.slash = cpu(vs.slash);
  host.slash_count = cpu(vs.slash_count);
  // Each list: count entries strictly ascending in [0, Nk), then -1 padding (the marks read every entry >=
  // 0).
  auto check_list = [&](const char* name, const at::Tensor& list, const at::Tensor& count) {
    const auto l = list.accessor<int64_t, 3>();
    const auto c = count.accessor<int64_t, 2>();
    const int64_t width = list.size(2);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t n = c[b][h];
        if (n < 0 || n > width)
          detail::fail(fn, "argument `vs.", name, "`: count at (b, h) = (", b, ", ", h, ") expected in [0, ",
                       width, "], got ", n);
        for (int64_t t = 0; t < width; ++t) {
          const int64_t x = l[b][h][t];
          const bool ok = t < n ? (x >= 0 && x < vs.seq_k && (t == 0 || x > l[b][h][t - 1])) : x == -1;
          if (!ok)
            detail::fail(fn, "argument `vs.", name, "`: expected ", n,
                         " strictly ascending entries in [0, seq_k = ", vs.seq_k,
                         ") then -1 padding at (b, h) = (", b, ", ", h, "), got ", x, " at position ", t);
        }
      }
  };
  check_list("vertical", host.vertical, host.vertical_count);
  check_list("slash", host.slash, host.slash_count);
  if (need_diagonal) {
    const auto l = host.slash.accessor<int64_t, 3>();
    const auto c = host.slash_count.accessor<int64_t, 2>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        if (c[b][h] < 1 || l[b][h][0] != 0)
          detail::fail(fn,
                       "argument `vs.slash`: expected offset 0 (the diagonal) selected at every (b, h), as ",
                       "the estimate guarantees (the kernel's index assumes it), missing at (b, h) = (", b,
                       ", ", h, ")");
  }
  return host;
}

// Block-sparse mask of sparge/minference.h. qh (B, H, Nq, D), kh (B, Hkv, Nk, D) math dtype, HND.
BlockMask block_sparse_select(const at::Tensor& qh, const at::Tensor& kh,
                              const std::vector<MInferenceHead>& heads) {
  const int64_t B = qh.size(0), H = qh.size(1), Nq = qh.size(2), Nk = kh.size(2);
  const int64_t nqb = ceil_div(Nq, kBlock), nkb = ceil_div(Nk, kBlock);
  const auto lopt = qh.options().dtype(at::kLong);
  // Zero-padded means divided by 64, as the original's padded reshape(..., 64, D).mean(-2).
  const auto qbar = detail::pad_blocks(qh, kBlock).mean(3);                            // (B, H, NQB, D)
  const auto kbar = detail::pad_blocks(kh, kBlock).mean(3);                            // (B, Hkv, NKB, D)
  const auto valid = causal_valid_blocks(Nq, Nk, kBlock, kBlock, true, qh.options());  // (NQB, NKB)
  const auto score = grouped_scores(qbar, kbar).masked_fill(valid.logical_not(), -kInf);
  std::vector<int64_t> top;
  for (const auto& h : heads) top.push_back(h.top_blocks);
  const auto count = at::minimum(at::tensor(top, at::kLong).to(qh.device()).view({1, H, 1}),
                                 valid.sum(-1).view({1, 1, nqb}));  // (1, H, NQB)
  const auto order = std::get<1>(score.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/true));
  const auto keep =
      (at::arange(nkb, lopt).view({1, 1, 1, nkb}) < count.unsqueeze(-1)).expand({B, H, nqb, nkb});
  const auto chosen =
      at::zeros({B, H, nqb, nkb}, lopt.dtype(at::kBool)).scatter_(-1, order, keep.contiguous());
  return BlockMask::from_dense(chosen & valid, kBlock, kBlock, Nq, Nk);
}

// The heads of one pattern: their q rows and the k, v they read. When the subset is every head, K and V keep
// their kv heads (grouped matmuls); otherwise each selected query head gets its kv head (group 1).
struct HeadSubset {
  at::Tensor q, k, v, index;  // index: (Hs) int64 query-head ids on the device
  std::vector<MInferenceHead> heads;
};

HeadSubset subset(const at::Tensor& qh, const at::Tensor& kh, const at::Tensor& vh,
                  const std::vector<int64_t>& ids, const std::vector<MInferenceHead>& heads, int64_t group) {
  HeadSubset s;
  s.index = at::tensor(ids, at::kLong).to(qh.device());
  for (int64_t h : ids) s.heads.push_back(heads[h]);
  if (static_cast<int64_t>(ids.size()) == qh.size(1)) {
    s.q = qh;
    s.k = kh;
    s.v = vh;
    return s;
  }
  const auto kv = at::div(s.index, group, "floor");
  s.q = qh.index_select(1, s.index);
  s.k = kh.index_select(1, kv);
  s.v = vh.defined() ? vh.index_select(1, kv) : vh;
  return s;
}

// Query-head ids per pattern (kVerticalSlash, kAShape, kBlockSparse).
std::array<std::vector<int64_t>, 3> heads_by_pattern(const std::vector<MInferenceHead>& heads) {
  std::array<std::vector<int64_t>, 3> ids;
  for (size_t h = 0; h < heads.size(); ++h)
    ids[static_cast<size_t>(heads[h].pattern)].push_back(static_cast<int64_t>(h));
  return ids;
}

// Per-head dense (B, Hs, Nq, Nk) token mask of a block mask: its blocks expanded to tokens, AND causal.
at::Tensor block_token_mask(const BlockMask& m) {
  auto t = m.dense.repeat_interleave(m.block_q, 2).repeat_interleave(m.block_k, 3);
  t = t.narrow(2, 0, m.seq_q).narrow(3, 0, m.seq_k);
  return t & (row_offsets(0, m.seq_q, m.seq_k, m.seq_k - m.seq_q, m.dense.options()) >= 0);
}

// Sum over i = 0 .. n-1 of max(x + i, 0).
int64_t sum_positive(int64_t x, int64_t n) {
  if (n <= 0) return 0;
  const int64_t last = x + n - 1;
  if (last <= 0) return 0;
  return x >= 0 ? n * x + n * (n - 1) / 2 : last * (last + 1) / 2;
}

// Sum over i = 0 .. n-1 of clamp(a + i, 0, w), w >= 0 (clamp(x, 0, w) = max(x, 0) - max(x - w, 0)).
int64_t sum_clamped(int64_t a, int64_t n, int64_t w) {
  return sum_positive(a, n) - sum_positive(a - w, n);
}

// Host copies (int32, contiguous) of an index after checking its shapes and the contract of
// sparge/minference.h.
struct IndexHost {
  at::Tensor block_count, block_offset, column_count, column_index;
};

// The shapes, dtypes and devices of an index (not its contents).
void check_index_shapes(const char* fn, const VerticalSlashIndex& ix) {
  if (ix.seq_q < 1 || ix.seq_k < ix.seq_q)
    detail::fail(fn, "argument `index`: expected 1 <= seq_q <= seq_k (causal), got seq_q = ", ix.seq_q,
                 ", seq_k = ", ix.seq_k);
  const auto& bc = ix.block_count;
  const auto& bo = ix.block_offset;
  const auto& cc = ix.column_count;
  const auto& ci = ix.column_index;
  if (!bc.defined() || !bo.defined() || !cc.defined() || !ci.defined() || bc.dim() != 3 || cc.dim() != 3 ||
      bo.dim() != 4 || ci.dim() != 4)
    detail::fail(fn,
                 "argument `index`: expected defined counts (B, Hq, NQB) and lists (B, Hq, NQB, *), as "
                 "vertical_slash_index returns");
  const int64_t nqb = ceil_div(ix.seq_q, kBlock);
  const std::array<int64_t, 3> lead = {bc.size(0), bc.size(1), nqb};
  for (const auto* t : {&bc, &cc, &bo, &ci})
    if (t->sizes().slice(0, 3) != at::IntArrayRef(lead))
      detail::fail(fn, "argument `index`: expected counts and lists to start with (B, Hq, NQB) = (", lead[0],
                   ", ", lead[1], ", ", nqb, ") (NQB = ceil(seq_q / 64)), got ", t->sizes());
  const std::array<std::pair<const char*, const at::Tensor*>, 4> named = {
      {{"block_count", &bc}, {"block_offset", &bo}, {"column_count", &cc}, {"column_index", &ci}}};
  for (const auto& [name, t] : named) {
    if (t->scalar_type() != at::kInt)
      detail::fail(fn, "argument `index.", name, "`: expected dtype int32, got ", t->scalar_type());
    if (t->device() != bc.device())
      detail::fail(fn, "argument `index.", name, "`: expected the device of index.block_count (", bc.device(),
                   "), got ", t->device());
  }
}

IndexHost check_index(const char* fn, const VerticalSlashIndex& ix) {
  check_index_shapes(fn, ix);
  const auto& bc = ix.block_count;
  const auto& bo = ix.block_offset;
  const auto& cc = ix.column_count;
  const auto& ci = ix.column_index;
  const int64_t nqb = ceil_div(ix.seq_q, kBlock);
  const std::array<int64_t, 3> lead = {bc.size(0), bc.size(1), nqb};
  IndexHost h;
  auto cpu = [](const at::Tensor& t) { return t.to(at::kCPU).contiguous(); };
  h.block_count = cpu(bc);
  h.block_offset = cpu(bo);
  h.column_count = cpu(cc);
  h.column_index = cpu(ci);
  const auto nb = h.block_count.accessor<int32_t, 3>(), nc = h.column_count.accessor<int32_t, 3>();
  const auto tiles = h.block_offset.accessor<int32_t, 4>(), cols = h.column_index.accessor<int32_t, 4>();
  const int64_t smax = bo.size(3), vmax = ci.size(3), nk = ix.seq_k, off = ix.seq_k - ix.seq_q;
  for (int64_t b = 0; b < lead[0]; ++b)
    for (int64_t hh = 0; hh < lead[1]; ++hh)
      for (int64_t m = 0; m < nqb; ++m) {
        if (nb[b][hh][m] < 0 || nb[b][hh][m] > smax)
          detail::fail(fn, "argument `index.block_count`: expected values in [0, ", smax, "], got ",
                       nb[b][hh][m], " at (b, h, m) = (", b, ", ", hh, ", ", m, ")");
        if (nc[b][hh][m] < 0 || nc[b][hh][m] > vmax)
          detail::fail(fn, "argument `index.column_count`: expected values in [0, ", vmax, "], got ",
                       nc[b][hh][m], " at (b, h, m) = (", b, ", ", hh, ", ", m, ")");
        for (int64_t t = 0; t < nb[b][hh][m]; ++t)
          if (tiles[b][hh][m][t] < 0 || tiles[b][hh][m][t] >= nk + kBlock)
            detail::fail(
                fn, "argument `index.block_offset`: expected tile starts in [0, seq_k + 64 = ", nk + kBlock,
                "), got ", tiles[b][hh][m][t], " at (b, h, m) = (", b, ", ", hh, ", ", m, ")");
        const int64_t first_diag = m * kBlock + off;
        for (int64_t c = 0; c < nc[b][hh][m]; ++c)
          if (cols[b][hh][m][c] < 0 || cols[b][hh][m][c] > first_diag)
            detail::fail(
                fn,
                "argument `index.column_index`: expected columns in [0, 64 m + seq_k - seq_q] (at or "
                "below the block's first diagonal key: loop 2 has no causal mask) = [0, ",
                first_diag, "], got ", cols[b][hh][m][c], " at (b, h, m) = (", b, ", ", hh, ", ", m, ")");
      }
  return h;
}

// index_stats on a CUDA index with tensor ops on its device: no host copy of the lists (hundreds of MB at
// N = 64K). The contract is checked there too; on a violation the host path runs to name the first one.
std::optional<AttentionStats> index_stats_device(const VerticalSlashIndex& ix) {
  const auto L = at::kLong;
  const auto bc = ix.block_count.to(L), cc = ix.column_count.to(L);
  const auto bo = ix.block_offset.to(L), ci = ix.column_index.to(L);
  const int64_t B = bc.size(0), H = bc.size(1), nqb = bc.size(2), smax = bo.size(3), vmax = ci.size(3);
  const int64_t nq = ix.seq_q, nk = ix.seq_k, off = nk - nq, nkb = ceil_div(nk, kBlock);
  const auto opt = bc.options();
  const auto r0 = (at::arange(nqb, opt) * kBlock).view({1, 1, nqb, 1});
  const auto rows = at::clamp_max(r0 + kBlock, nq) - r0, last_diag = r0 + rows - 1 + off;
  const auto in_tiles = at::arange(smax, opt).view({1, 1, 1, smax}) < bc.unsqueeze(-1);
  const auto in_cols = at::arange(vmax, opt).view({1, 1, 1, vmax}) < cc.unsqueeze(-1);
  // The contract (check_index): counts in range, tile starts in [0, Nk + 64), columns in [0, 64m + Nk - Nq].
  const auto bad = (bc < 0).sum() + (bc > smax).sum() + (cc < 0).sum() + (cc > vmax).sum() +
                   (in_tiles & ((bo < 0) | (bo >= nk + kBlock))).sum() +
                   (in_cols & ((ci < 0) | (ci > r0 + off))).sum();
  // Tiles: the causal pairs of [lo, hi) over the block's rows; key blocks lo / 64 .. (used_end - 1) / 64 (a
  // tile spans at most two). Columns: the block's rows each, one key block.
  const auto hi = at::clamp_max(bo + kBlock, nk);
  const auto tile_ok = in_tiles & (hi > bo);
  const auto a = r0 + off + 1 - bo;
  const auto tile_pairs = detail::sum_positive(a, rows) - detail::sum_positive(a - (hi - bo), rows);
  const auto pairs =
      at::where(tile_ok, tile_pairs, at::zeros_like(tile_pairs)).sum() + (in_cols.to(L) * rows).sum();
  const auto used_end = at::minimum(hi, last_diag + 1);
  const auto touches = tile_ok & (used_end > bo);
  // One row per (b, h, m) of nkb + 1 flags (the last one absorbs entries that touch nothing).
  const auto row = at::arange(B * H * nqb, opt).view({B, H, nqb, 1}) * (nkb + 1);
  const auto lo_blk = at::where(touches, at::floor_divide(bo, kBlock), at::full_like(bo, nkb));
  const auto hi_blk =
      at::where(touches, at::floor_divide(at::clamp_min(used_end - 1, 0), kBlock), at::full_like(bo, nkb));
  const auto col_blk =
      at::where(in_cols, at::floor_divide(at::clamp(ci, 0, nk - 1), kBlock), at::full_like(ci, nkb));
  auto flags = at::zeros({B * H * nqb * (nkb + 1)}, opt.dtype(at::kBool));
  for (const auto* blk : {&lo_blk, &hi_blk, &col_blk}) flags.index_fill_(0, (row + *blk).flatten(), true);
  const auto blocks = flags.view({B * H * nqb, nkb + 1}).narrow(1, 0, nkb).sum();
  const auto host = at::stack({bad, pairs, blocks}).cpu();
  const auto v = host.accessor<int64_t, 1>();
  if (v[0] != 0) return std::nullopt;
  AttentionStats st = base_stats(B, H, nq, nk);
  st.computed_pairs = v[1];
  st.computed_blocks = v[2];
  return st;
}

// vertical_slash_index_stats (a CUDA index: index_stats_device): valid counts as base_stats; per 64-row block
// m (rows r0 .. r1-1 < Nq) each tile [t, t + 64) computes for row r the keys [t, min(t + 64, Nk, diag(r) +
// 1)) and touches the key blocks of [t, min(t + 64, Nk, diag(r1 - 1) + 1)); each column computes its key for
// all r1 - r0 rows.
AttentionStats index_stats(const char* fn, const VerticalSlashIndex& ix) {
  if (ix.block_count.defined() && ix.block_count.is_cuda()) {
    check_index_shapes(fn, ix);
    if (auto st = index_stats_device(ix)) return *st;
  }
  const auto h = check_index(fn, ix);
  const int64_t B = h.block_count.size(0), H = h.block_count.size(1), nqb = h.block_count.size(2);
  const int64_t nq = ix.seq_q, nk = ix.seq_k, off = nk - nq, nkb = ceil_div(nk, kBlock);
  AttentionStats st = base_stats(B, H, nq, nk);
  const auto nb = h.block_count.accessor<int32_t, 3>(), nc = h.column_count.accessor<int32_t, 3>();
  const auto tiles = h.block_offset.accessor<int32_t, 4>(), cols = h.column_index.accessor<int32_t, 4>();
  std::vector<int64_t> stamp(static_cast<size_t>(nkb), -1);  // the last block id that touched a key block
  int64_t id = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t hh = 0; hh < H; ++hh)
      for (int64_t m = 0; m < nqb; ++m, ++id) {
        const int64_t r0 = m * kBlock, rows = std::min(nq, r0 + kBlock) - r0, last_diag = r0 + rows - 1 + off;
        auto touch = [&](int64_t kb) {
          if (stamp[static_cast<size_t>(kb)] != id) {
            stamp[static_cast<size_t>(kb)] = id;
            ++st.computed_blocks;
          }
        };
        for (int64_t i = 0; i < nb[b][hh][m]; ++i) {
          const int64_t lo = tiles[b][hh][m][i], hi = std::min(lo + kBlock, nk);
          if (hi <= lo) continue;
          st.computed_pairs += sum_clamped(r0 + off + 1 - lo, rows, hi - lo);
          const int64_t used_end = std::min(hi, last_diag + 1);
          for (int64_t kb = lo / kBlock; used_end > lo && kb <= (used_end - 1) / kBlock; ++kb) touch(kb);
        }
        for (int64_t i = 0; i < nc[b][hh][m]; ++i) {
          st.computed_pairs += rows;
          touch(cols[b][hh][m][i] / kBlock);
        }
      }
  return st;
}

// Pairs of the kExactTokens pattern, counted from its token mask in chunks of query rows (bounded memory).
int64_t exact_pairs(const VerticalSlash& vs) {
  const auto rows_of = exact_rows(vs);
  const int64_t B = vs.vertical.size(0), H = vs.vertical.size(1), nq = vs.seq_q, nk = vs.seq_k;
  const int64_t per_row = std::max<int64_t>(1, B * H * nk * 9);  // the bool mask + its int64 gather index
  const int64_t rows = std::max<int64_t>(1, kChunkBytes / per_row);
  int64_t pairs = 0;
  for (int64_t r0 = 0; r0 < nq; r0 += rows)
    pairs += rows_of(r0, std::min(nq, r0 + rows)).sum().item<int64_t>();
  return pairs;
}

// The vertical-slash selection of heads under config: budgets as given, or scaled by the common ratio that
// brings the token sparsity closest to config.target_sparsity (see MInferenceConfig). `index` is the kernel
// index of `vs` when the search built it (coverage kKernelTiles with a target), else undefined.
struct VsChoice {
  VerticalSlash vs;
  std::optional<VerticalSlashIndex> index;
};

constexpr int kRatioSteps = 20;              // bisection steps of the budget ratio
constexpr int kBracketSteps = 40;            // doublings / halvings that bracket the target
constexpr double kSparsityTolerance = 1e-3;  // stop once this close to the target

// `builder` (optional) replaces vertical_slash_index for the search's indexes.
VsChoice choose_vs(const at::Tensor& qh, const at::Tensor& kh, const std::vector<MInferenceHead>& heads,
                   double scale, const MInferenceConfig& c, const VsIndexBuilder& builder = {}) {
  const auto sc = estimate_scores(qh, kh, scale);
  const bool tiles = c.coverage == VsCoverage::kKernelTiles;
  auto make = [&](double ratio) {
    VsChoice ch;
    ch.vs = select_budgets(sc, heads, ratio);
    if (c.target_sparsity && tiles) ch.index = builder ? builder(ch.vs) : vertical_slash_index(ch.vs);
    return ch;
  };
  int64_t smallest = 0, largest = 0;  // non-zero budgets: at r = Nk / smallest every one is >= Nk
  for (const auto& h : heads)
    for (int64_t size : {h.vertical_size, h.slash_size})
      if (size > 0) {
        if (smallest == 0 || size < smallest) smallest = size;
        largest = std::max(largest, size);
      }
  if (!c.target_sparsity || smallest == 0) return make(c.budget_ratio);  // no search

  const double target = *c.target_sparsity;
  const double valid = static_cast<double>(qh.size(0) * qh.size(1) * causal_pairs(sc.seq_q, sc.seq_k));
  VsChoice best;
  double best_gap = kInf;
  // The sparsity at `ratio`, keeping the choice closest to the target (the first one on ties).
  auto probe = [&](double ratio) {
    auto ch = make(ratio);
    const int64_t pairs = tiles ? vertical_slash_index_pairs(*ch.index) : exact_pairs(ch.vs);
    const double sp = 1.0 - static_cast<double>(pairs) / valid;
    if (std::abs(sp - target) < best_gap) {
      best_gap = std::abs(sp - target);
      best = std::move(ch);
    }
    return sp;
  };
  // Sparsity falls as the ratio grows (longer prefixes of the same orders select supersets). A step builds
  // budgets proportional to the ratio, so the bracket grows from the configured ratio, not down from r_max.
  const double r_max = static_cast<double>(sc.seq_k) / static_cast<double>(smallest);
  if (target == 0.0) return make(r_max);  // every budget at Nk: every causal pair, exactly
  // Below r_min every budget rounds to 0 and sits at its floor: the sparsity no longer changes.
  const double r_min = 0.5 / static_cast<double>(largest);
  double lo = 0.0, hi = r_max, r = std::clamp(c.budget_ratio, r_min, r_max);
  const bool grow = probe(r) > target;  // too sparse: larger budgets
  (grow ? lo : hi) = r;
  for (int i = 0; i < kBracketSteps && best_gap > kSparsityTolerance; ++i) {
    if (grow ? r >= r_max : r <= r_min) break;
    r = grow ? std::min(2.0 * r, r_max) : std::max(0.5 * r, r_min);
    const bool sparse = probe(r) > target;
    (sparse ? lo : hi) = r;
    if (sparse != grow) break;  // bracketed
  }
  if (hi <= r_min) lo = hi;  // every budget at its floor: nothing left to search
  for (int i = 0; i < kRatioSteps && best_gap > kSparsityTolerance && lo < hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    (probe(mid) > target ? lo : hi) = mid;
  }
  return best;
}

std::optional<Pattern> lookup_pattern(std::string_view name) {
  if (name == "vertical_slash" || name == "vertical_and_slash") return Pattern::kVerticalSlash;
  if (name == "a_shape" || name == "stream_llm") return Pattern::kAShape;
  if (name == "block_sparse") return Pattern::kBlockSparse;
  return std::nullopt;
}

}  // namespace

MInferenceHead::Pattern parse_minference_pattern(std::string_view name) {
  if (const auto p = lookup_pattern(name)) return *p;
  detail::fail(__func__,
               "argument `name`: expected \"vertical_slash\", \"vertical_and_slash\", \"a_shape\", "
               "\"stream_llm\" or \"block_sparse\", got \"",
               std::string(name), "\"");
}

std::string_view to_string(MInferenceHead::Pattern p) {
  switch (p) {
    case Pattern::kVerticalSlash:
      return "vertical_slash";
    case Pattern::kAShape:
      return "a_shape";
    case Pattern::kBlockSparse:
      return "block_sparse";
  }
  return "unknown";
}

std::string_view to_string(VsCoverage c) {
  return c == VsCoverage::kKernelTiles ? "kernel_tiles" : "exact_tokens";
}

MInferenceHead minference_fallback_head() {
  MInferenceHead h;
  h.pattern = Pattern::kVerticalSlash;
  h.vertical_size = 1000;
  h.slash_size = 6096;
  return h;
}

MInferenceConfig minference_llama31_default() {
  MInferenceHead h = minference_fallback_head();
  h.vertical_size = 512;
  h.slash_size = 2048;
  MInferenceConfig c;
  c.heads = {h};
  return c;
}

std::vector<MInferenceConfig> load_minference_config(const std::string& json_path,
                                                     std::optional<int64_t> num_heads) {
  const char* fn = __func__;
  if (num_heads && *num_heads < 1)
    detail::fail(fn, "argument `num_heads`: expected >= 1 (or none), got ", *num_heads);
  std::ifstream in(json_path);
  if (!in) detail::fail(fn, "argument `json_path`: cannot open file `", json_path, "`");
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    detail::fail(fn, "file `", json_path, "`: invalid JSON (", e.what(), ")");
  }
  if (!doc.is_array())
    detail::fail(fn, "file `", json_path, "`: expected a list over layers, got a JSON ", doc.type_name());
  // A budget: a JSON integer in [0, 2^40] (token counts; larger values are certainly a mistake).
  auto as_count = [](const nlohmann::json& x) -> std::optional<int64_t> {
    constexpr int64_t kMax = int64_t{1} << 40;
    if (x.is_number_unsigned()) {
      const auto u = x.get<uint64_t>();
      return u <= static_cast<uint64_t>(kMax) ? std::optional<int64_t>(static_cast<int64_t>(u))
                                              : std::nullopt;
    }
    if (x.is_number_integer()) {
      const auto i = x.get<int64_t>();
      return i >= 0 && i <= kMax ? std::optional<int64_t>(i) : std::nullopt;
    }
    return std::nullopt;
  };
  std::vector<MInferenceConfig> layers;
  for (size_t l = 0; l < doc.size(); ++l) {
    const auto& obj = doc[l];
    if (!obj.is_object())
      detail::fail(fn, "file `", json_path, "`, layer ", l,
                   ": expected a dict {head index: [pattern, vertical_size, slash_size, score]}, got a JSON ",
                   obj.type_name());
    std::map<int64_t, MInferenceHead> found;
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      const std::string& key = it.key();
      // Every message below starts with the location: file, layer, head.
      const std::string at_head =
          "file `" + json_path + "`, layer " + std::to_string(l) + ", head \"" + key + "\": ";
      const bool digits = !key.empty() && key.size() <= 9 &&
                          std::all_of(key.begin(), key.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
      if (!digits) detail::fail(fn, at_head, "expected a head index (a non-negative decimal integer string)");
      const int64_t head = std::stoll(key);
      if (num_heads && head >= *num_heads)
        detail::fail(fn, at_head, "expected a head index < num_heads (", *num_heads, ")");
      const auto& e = it.value();
      if (!e.is_array() || e.size() != 4)
        detail::fail(fn, at_head, "expected [pattern, vertical_size, slash_size, score], got ", e.dump());
      if (!e[0].is_string()) detail::fail(fn, at_head, "pattern: expected a string, got ", e[0].dump());
      const auto pattern = lookup_pattern(e[0].get<std::string>());
      if (!pattern)
        detail::fail(fn, at_head,
                     "pattern: expected \"vertical_and_slash\", \"stream_llm\" or \"block_sparse\" (or "
                     "\"vertical_slash\", \"a_shape\"), got ",
                     e[0].dump());
      const auto vsize = as_count(e[1]), ssize = as_count(e[2]);
      if (!vsize)
        detail::fail(fn, at_head, "vertical_size: expected an integer in [0, 2^40], got ", e[1].dump());
      if (!ssize)
        detail::fail(fn, at_head, "slash_size: expected an integer in [0, 2^40], got ", e[2].dump());
      if (!e[3].is_number()) detail::fail(fn, at_head, "score: expected a number, got ", e[3].dump());
      MInferenceHead h = minference_fallback_head();
      h.pattern = *pattern;
      h.vertical_size = *vsize;
      h.slash_size = *ssize;
      if (*pattern == Pattern::kAShape) {
        // The original calls streaming_forward(q, k, v, vertical_size, slash_size) = (n_init, n_local).
        if (*ssize < 1)
          detail::fail(fn, at_head, "slash_size (the stream_llm window n_local): expected >= 1, got ",
                       *ssize);
        h.n_init = *vsize;
        h.n_local = *ssize;
      }
      found[head] = h;
    }
    MInferenceConfig c;
    const int64_t count = num_heads ? *num_heads : (found.empty() ? 1 : found.rbegin()->first + 1);
    c.heads.assign(static_cast<size_t>(count), minference_fallback_head());
    for (const auto& [head, h] : found) c.heads[static_cast<size_t>(head)] = h;
    layers.push_back(std::move(c));
  }
  return layers;
}

VerticalSlash minference_vertical_slash(const at::Tensor& q, const at::Tensor& k,
                                        const MInferenceConfig& config) {
  const auto p = check_minference(__func__, q, k, at::Tensor(), config);
  const auto dt = detail::math_dtype(q.scalar_type());
  return choose_vs(detail::to_hnd(q, config.layout).to(dt), detail::to_hnd(k, config.layout).to(dt),
                   expand_heads(config.heads, p.heads_q), p.scale, config)
      .vs;
}

double minference_budget_ratio(const at::Tensor& q, const at::Tensor& k, const MInferenceConfig& config) {
  return minference_budget_ratio(q, k, config, VsIndexBuilder());
}

double minference_budget_ratio(const at::Tensor& q, const at::Tensor& k, const MInferenceConfig& config,
                               const VsIndexBuilder& vs_index_builder) {
  const auto p = check_minference(__func__, q, k, at::Tensor(), config);
  const auto heads = expand_heads(config.heads, p.heads_q);
  const auto ids = heads_by_pattern(heads)[static_cast<size_t>(Pattern::kVerticalSlash)];
  if (!config.target_sparsity || p.seq_q == 1 || ids.empty()) return config.budget_ratio;
  const auto dt = detail::math_dtype(q.scalar_type());
  const auto s = subset(detail::to_hnd(q, config.layout).to(dt), detail::to_hnd(k, config.layout).to(dt),
                        at::Tensor(), ids, heads, p.group());
  return choose_vs(s.q, s.k, s.heads, p.scale, config, vs_index_builder).vs.budget_ratio;
}

VerticalSlashIndex vertical_slash_index(const VerticalSlash& vs) {
  const auto host = check_vs(__func__, vs, /*need_diagonal=*/true);
  const int64_t B = host.vertical.size(0), H = host.vertical.size(1);
  const int64_t nq = vs.seq_q, nk = vs.seq_k, off = nk - nq, nqb = ceil_div(nq, kBlock);
  const int64_t smax = host.slash.size(2), vmax = host.vertical.size(2);
  const auto iopt = at::TensorOptions(at::kInt);
  auto block_count = at::zeros({B, H, nqb}, iopt), column_count = at::zeros({B, H, nqb}, iopt);
  auto block_offset = at::full({B, H, nqb, smax}, -1, iopt),
       column_index = at::full({B, H, nqb, vmax}, -1, iopt);
  const auto V = host.vertical.accessor<int64_t, 3>(), S = host.slash.accessor<int64_t, 3>();
  const auto nv = host.vertical_count.accessor<int64_t, 2>(), ns = host.slash_count.accessor<int64_t, 2>();
  auto bc = block_count.accessor<int32_t, 3>(), cc = column_count.accessor<int32_t, 3>();
  auto bo = block_offset.accessor<int32_t, 4>(), ci = column_index.accessor<int32_t, 4>();
  std::vector<std::pair<int64_t, int64_t>> ranges;  // [first key, end) of the merged slash ranges, ascending
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t m = 0; m < nqb; ++m) {
        const int64_t end = m * kBlock + kBlock + off;  // E: the diagonal key after the block's last row
        ranges.clear();
        // Offsets from the largest: range ends ascending. An offset >= E puts the whole tile before key 0
        // (the kernel skips those); a tile that would start below 0 is clamped to [0, 64).
        for (int64_t t = ns[b][h] - 1; t >= 0; --t) {
          const int64_t o = S[b][h][t];
          if (o >= end) continue;
          const int64_t e = std::max(end - o, kBlock);
          if (ranges.empty() || e > ranges.back().second + kBlock) {
            ranges.emplace_back(e - kBlock, e);
          } else if (e > ranges.back().second) {
            ranges.back().second += kBlock;  // the kernel grows by one tile, not to e
          }
        }
        int32_t n = 0;
        for (const auto& [lo, hi] : ranges)
          for (int64_t t = lo; t < hi; t += kBlock) bo[b][h][m][n++] = static_cast<int32_t>(t);
        bc[b][h][m] = n;
        // Offset 0 < E always opens or reaches the last range, so `ranges` is not empty and its end is >= E.
        const int64_t last_end = ranges.back().second;
        int32_t nc = 0;
        size_t r = 0;
        for (int64_t t = 0; t < nv[b][h]; ++t) {
          const int64_t key = V[b][h][t];
          if (key >= last_end) break;  // the kernel drops verticals past the last range
          while (key >= ranges[r].second) ++r;
          if (key < ranges[r].first) ci[b][h][m][nc++] = static_cast<int32_t>(key);
        }
        cc[b][h][m] = nc;
      }
  VerticalSlashIndex ix;
  ix.seq_q = nq;
  ix.seq_k = nk;
  const auto dev = vs.vertical.device();
  ix.block_count = block_count.to(dev);
  ix.block_offset = block_offset.to(dev);
  ix.column_count = column_count.to(dev);
  ix.column_index = column_index.to(dev);
  return ix;
}

int64_t vertical_slash_index_pairs(const VerticalSlashIndex& index) {
  return index_stats(__func__, index).computed_pairs;
}

AttentionStats vertical_slash_index_stats(const VerticalSlashIndex& index) {
  return index_stats(__func__, index);
}

at::Tensor vertical_slash_token_mask(const VerticalSlash& vs, VsCoverage coverage) {
  if (coverage == VsCoverage::kKernelTiles) return tile_rows(vertical_slash_index(vs))(0, vs.seq_q);
  check_vs(__func__, vs, /*need_diagonal=*/false);
  return exact_rows(vs)(0, vs.seq_q);
}

AttentionResult vertical_slash_index_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               const VerticalSlashIndex& index,
                                               const MInferenceConfig& config) {
  SPARGE_CHECK(v.defined(), "argument `v`: expected a defined tensor");
  const auto p = check_minference(__func__, q, k, v, config);
  const int64_t B = p.batch, H = p.heads_q, Nq = p.seq_q, Nk = p.seq_k, D = p.head_dim, off = Nk - Nq;
  const int64_t nqb = ceil_div(Nq, kBlock), nkb = ceil_div(Nk, kBlock);
  SPARGE_CHECK(index.block_count.defined() && index.block_offset.defined() && index.column_count.defined() &&
                   index.column_index.defined(),
               "argument `index`: expected the tensors of vertical_slash_index");
  SPARGE_CHECK(index.seq_q == Nq && index.seq_k == Nk, "argument `index`: expected Nq = ", Nq, ", Nk = ", Nk,
               " (of q, k), got ", index.seq_q, ", ", index.seq_k);
  SPARGE_CHECK(index.block_count.sizes() == at::IntArrayRef({B, H, nqb}) &&
                   index.column_count.sizes() == at::IntArrayRef({B, H, nqb}) &&
                   index.block_offset.dim() == 4 && index.column_index.dim() == 4 &&
                   index.block_offset.sizes().slice(0, 3) == at::IntArrayRef({B, H, nqb}) &&
                   index.column_index.sizes().slice(0, 3) == at::IntArrayRef({B, H, nqb}),
               "argument `index`: expected counts (B, Hq, NQB) = (", B, ", ", H, ", ", nqb,
               ") and lists (B, Hq, NQB, *), got ", index.block_count.sizes(), " and ",
               index.block_offset.sizes());
  SPARGE_CHECK(index.block_offset.device() == q.device(), "argument `index`: expected device ", q.device(),
               ", got ", index.block_offset.device());

  const auto dt = detail::math_dtype(q.scalar_type());
  const auto opt = q.options().dtype(dt);
  const auto lopt = q.options().dtype(at::kLong);
  const auto qb = detail::pad_blocks(detail::to_hnd(q, config.layout).to(dt), kBlock);  // (B, H, NQB, 64, D)
  // K and V per query head, flattened so that a (b, h, key) gather is one index_select of rows.
  const auto kx =
      detail::expand_kv_heads(detail::to_hnd(k, config.layout).to(dt), p.group()).reshape({-1, D});
  const auto vx =
      detail::expand_kv_heads(detail::to_hnd(v, config.layout).to(dt), p.group()).reshape({-1, D});
  const auto base = (at::arange(B * H, lopt) * Nk).view({B, H, 1, 1});
  const auto rows = at::arange(nqb * kBlock, lopt).view({1, 1, nqb, kBlock, 1});
  const auto row_ok = rows < Nq;
  const auto diag = rows + off;

  auto m = at::full({B, H, nqb, kBlock}, -kInf, opt);
  auto l = at::zeros({B, H, nqb, kBlock}, opt);
  auto acc = at::zeros({B, H, nqb, kBlock, D}, opt);
  auto touched = at::zeros({B, H, nqb, nkb + 1}, lopt.dtype(at::kBool));
  AttentionStats st = base_stats(B, H, Nq, Nk);

  // One online-softmax step over W keys per query block: keys (B, H, NQB, W) in [0, Nk), allowed
  // (B, H, NQB, 64, W).
  auto step = [&](const at::Tensor& keys, const at::Tensor& allowed) {
    const int64_t W = keys.size(-1);
    const auto flat = (base + keys).flatten();
    const auto kg = kx.index_select(0, flat).view({B, H, nqb, W, D});
    const auto vg = vx.index_select(0, flat).view({B, H, nqb, W, D});
    auto s = at::matmul(qb, kg.transpose(-1, -2)) * p.scale;  // (B, H, NQB, 64, W)
    s = s.masked_fill(allowed.logical_not(), -kInf);
    const auto m_new = at::maximum(m, s.amax(-1));
    const auto m_safe = at::where(m_new > -kInf, m_new, at::zeros({}, opt));
    const auto alpha = at::exp(m - m_safe);
    const auto prob = at::exp(s - m_safe.unsqueeze(-1));
    l = l * alpha + prob.sum(-1);
    acc = acc * alpha.unsqueeze(-1) + at::matmul(prob, vg);
    m = m_new;
    st.computed_pairs += allowed.sum().item<int64_t>();
    const auto key_used = allowed.any(3);  // (B, H, NQB, W)
    touched.scatter_(-1, at::where(key_used, at::div(keys, kBlock, "floor"), at::full({}, nkb, lopt)), true);
  };

  // Loop 1: 64-key slash tiles at arbitrary offsets, with the causal mask (keys >= Nk fall under it too).
  const auto n_tiles = index.block_count.to(at::kLong);
  const auto lane = at::arange(kBlock, lopt);
  for (int64_t t = 0; t < index.block_offset.size(3); ++t) {
    const auto live = n_tiles > t;  // (B, H, NQB)
    if (!live.any().item<bool>()) break;
    const auto keys = index.block_offset.select(-1, t).to(at::kLong).unsqueeze(-1) + lane;  // (B, H, NQB, 64)
    const auto key_ok = (live.unsqueeze(-1) & (keys >= 0) & (keys < Nk)).unsqueeze(3);
    step(keys.clamp(0, Nk - 1), key_ok & row_ok & (keys.unsqueeze(3) <= diag));
  }
  // Loop 2: gathered vertical columns, 64 at a time, without a causal mask (as the kernel: they all lie
  // below the block's first diagonal key).
  const auto n_cols = index.column_count.to(at::kLong).unsqueeze(-1);
  for (int64_t c0 = 0; c0 < index.column_index.size(3); c0 += kBlock) {
    const int64_t w = std::min(kBlock, index.column_index.size(3) - c0);
    const auto live = (at::arange(c0, c0 + w, lopt) < n_cols);  // (B, H, NQB, w)
    if (!live.any().item<bool>()) break;
    const auto keys = index.column_index.narrow(-1, c0, w).to(at::kLong);
    step(keys.clamp(0, Nk - 1), live.unsqueeze(3) & row_ok);
  }
  st.computed_blocks = touched.narrow(-1, 0, nkb).sum().item<int64_t>();

  const auto has_any = l > 0;
  auto out = at::where(has_any.unsqueeze(-1), acc / l.clamp_min(1e-300).unsqueeze(-1), at::zeros({}, opt));
  out = out.view({B, H, nqb * kBlock, D}).narrow(2, 0, Nq);
  AttentionResult r;
  r.out = detail::from_hnd(out.to(q.scalar_type()), config.layout).contiguous();
  if (config.return_lse) {
    const auto lse = at::where(has_any, m + at::log(l.clamp_min(1e-300)), at::full({}, -kInf, opt));
    r.lse = lse.view({B, H, -1}).narrow(2, 0, Nq).to(at::kFloat);
  }
  r.stats = st;
  return r;
}

BlockMask minference_block_sparse_mask(const at::Tensor& q, const at::Tensor& k,
                                       const MInferenceConfig& config) {
  const auto p = check_minference(__func__, q, k, at::Tensor(), config);
  const auto dt = detail::math_dtype(q.scalar_type());
  return block_sparse_select(detail::to_hnd(q, config.layout).to(dt), detail::to_hnd(k, config.layout).to(dt),
                             expand_heads(config.heads, p.heads_q));
}

at::Tensor minference_token_mask(const at::Tensor& q, const at::Tensor& k, const MInferenceConfig& config) {
  const auto p = check_minference(__func__, q, k, at::Tensor(), config);
  const int64_t B = p.batch, H = p.heads_q, Nq = p.seq_q, Nk = p.seq_k;
  if (Nq == 1) return causal_rows(B, H, Nq, Nk, q.options())(0, Nq).contiguous();
  const auto heads = expand_heads(config.heads, H);
  const auto dt = detail::math_dtype(q.scalar_type());
  const auto qh = detail::to_hnd(q, config.layout).to(dt), kh = detail::to_hnd(k, config.layout).to(dt);
  auto mask = at::zeros({B, H, Nq, Nk}, q.options().dtype(at::kBool));
  const auto ids = heads_by_pattern(heads);
  for (size_t pat = 0; pat < ids.size(); ++pat) {
    if (ids[pat].empty()) continue;
    const auto s = subset(qh, kh, at::Tensor(), ids[pat], heads, p.group());
    at::Tensor part;
    switch (static_cast<Pattern>(pat)) {
      case Pattern::kVerticalSlash: {
        const auto ch = choose_vs(s.q, s.k, s.heads, p.scale, config);
        part = config.coverage == VsCoverage::kKernelTiles
                   ? tile_rows(ch.index ? *ch.index : vertical_slash_index(ch.vs))(0, Nq)
                   : exact_rows(ch.vs)(0, Nq);
        break;
      }
      case Pattern::kAShape:
        part = a_shape_rows(s.heads, B, Nq, Nk, q.options())(0, Nq);
        break;
      case Pattern::kBlockSparse:
        part = block_token_mask(block_sparse_select(s.q, s.k, s.heads));
        break;
    }
    mask.index_copy_(1, s.index, part.contiguous());
  }
  return mask;
}

AttentionResult minference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const MInferenceConfig& config,
                                     const VsIndexAttention& vs_index_attention,
                                     const VsIndexBuilder& vs_index_builder) {
  SPARGE_CHECK(v.defined(), "argument `v`: expected a defined tensor");
  const auto p = check_minference(__func__, q, k, v, config);
  const int64_t B = p.batch, H = p.heads_q, Nq = p.seq_q, Nk = p.seq_k;
  const auto heads = expand_heads(config.heads, H);
  const auto dt = detail::math_dtype(q.scalar_type());
  const auto opt = q.options().dtype(dt);
  const auto qh = detail::to_hnd(q, config.layout).to(dt);
  const auto kh = detail::to_hnd(k, config.layout).to(dt);
  const auto vh = detail::to_hnd(v, config.layout).to(dt);

  auto out = at::zeros({B, H, Nq, p.head_dim}, opt);
  auto lse = at::full({B, H, Nq}, -kInf, opt);
  AttentionStats st;
  st.block_q = st.block_k = st.stage2_group_rows = kBlock;
  auto put = [&](const at::Tensor& index, const at::Tensor& o, const at::Tensor& l) {
    out.index_copy_(1, index, o.to(dt));
    lse.index_copy_(1, index, l.to(dt));
  };

  if (Nq == 1) {
    // Decode: dense causal attention for every head, as the original (flash attention there).
    MaskedOut d;
    st.attention_ms =
        timed_ms(q.device(), [&] { d = run_masked(qh, kh, vh, p.scale, causal_rows(B, H, Nq, Nk, opt)); });
    out = d.out;
    lse = d.lse;
    st += d.stats;
  } else {
    const auto ids = heads_by_pattern(heads);
    for (size_t pat = 0; pat < ids.size(); ++pat) {
      if (ids[pat].empty()) continue;
      const auto s = subset(qh, kh, vh, ids[pat], heads, p.group());
      if (static_cast<Pattern>(pat) == Pattern::kBlockSparse) {
        BlockMask mask;
        const double predict_ms =
            timed_ms(q.device(), [&] { mask = block_sparse_select(s.q, s.k, s.heads); });
        SpargeConfig sc;
        sc.block_q = sc.block_k = kBlock;
        sc.causal = true;
        sc.scale = p.scale;
        sc.return_lse = true;
        auto r = block_sparse_attention(s.q, s.k, s.v, mask, sc);  // stage 2 off: pvthreshd = +inf
        r.stats.prediction_ms = predict_ms;
        put(s.index, r.out, r.lse);
        st += r.stats;
        continue;
      }
      const bool vertical_slash = static_cast<Pattern>(pat) == Pattern::kVerticalSlash;
      if (vertical_slash && vs_index_attention && config.coverage == VsCoverage::kKernelTiles) {
        // The hook (a kernel) on the index, with the heads' q, k, v in the input dtype.
        VerticalSlashIndex index;
        const double predict_ms = timed_ms(q.device(), [&] {
          auto ch = choose_vs(s.q, s.k, s.heads, p.scale, config, vs_index_builder);
          if (ch.index)
            index = std::move(*ch.index);  // built by the equal-sparsity search
          else
            index = vs_index_builder ? vs_index_builder(ch.vs) : vertical_slash_index(ch.vs);
        });
        const auto raw = subset(detail::to_hnd(q, config.layout), detail::to_hnd(k, config.layout),
                                detail::to_hnd(v, config.layout), ids[pat], heads, p.group());
        MInferenceConfig kc = config;
        kc.heads = s.heads;
        kc.scale = p.scale;
        kc.layout = Layout::kHND;
        kc.return_lse = true;
        kc.target_sparsity.reset();
        AttentionResult r;
        const double attention_ms =
            timed_ms(q.device(), [&] { r = vs_index_attention(raw.q, raw.k, raw.v, index, kc); });
        put(s.index, r.out, r.lse);
        auto part = vertical_slash_index_stats(index);
        part.prediction_ms = predict_ms;
        part.attention_ms = attention_ms;
        st += part;
        continue;
      }
      RowMask rows;
      AttentionStats part;
      part.prediction_ms = timed_ms(q.device(), [&] {
        if (!vertical_slash) {
          rows = a_shape_rows(s.heads, B, Nq, Nk, opt);
        } else {
          auto ch = choose_vs(s.q, s.k, s.heads, p.scale, config);
          rows = config.coverage == VsCoverage::kKernelTiles
                     ? tile_rows(ch.index ? std::move(*ch.index) : vertical_slash_index(ch.vs))
                     : exact_rows(ch.vs);
        }
      });
      MaskedOut r;
      part.attention_ms = timed_ms(q.device(), [&] { r = run_masked(s.q, s.k, s.v, p.scale, rows); });
      put(s.index, r.out, r.lse);
      st += r.stats;
      st += part;
    }
  }

  AttentionResult r;
  r.out = detail::from_hnd(out.to(q.scalar_type()), config.layout).contiguous();
  if (config.return_lse) r.lse = lse.to(at::kFloat);
  r.stats = st;
  return r;
}

}  // namespace sparge
