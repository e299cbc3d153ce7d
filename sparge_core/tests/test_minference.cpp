// MInference baseline (sparge/minference.h): an independent plain-loop float64 oracle of the vertical-slash
// estimate, of the kernel's index conversion (a literal two-pointer walk, as csrc/vertical_slash_index.cu
// does it) and of the attention; full budgets give dense attention; planted columns and diagonals are found;
// the index form equals the mask form; the JSON loader; decode; GQA, batch, layout, low precision, device;
// bad arguments. Fresh random inputs every run (seeds are printed on failure).
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "sparge/minference.h"
#include "test_util.h"

namespace sparge {
namespace {

using Pattern = MInferenceHead::Pattern;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kB = 64;

MInferenceHead vs_head(int64_t v, int64_t s) {
  MInferenceHead h;
  h.pattern = Pattern::kVerticalSlash;
  h.vertical_size = v;
  h.slash_size = s;
  return h;
}
MInferenceHead a_shape_head(int64_t n_init, int64_t n_local) {
  MInferenceHead h;
  h.pattern = Pattern::kAShape;
  h.n_init = n_init;
  h.n_local = n_local;
  return h;
}
MInferenceHead block_head(int64_t top) {
  MInferenceHead h;
  h.pattern = Pattern::kBlockSparse;
  h.top_blocks = top;
  return h;
}
MInferenceConfig config_of(std::vector<MInferenceHead> heads, VsCoverage cov = VsCoverage::kKernelTiles) {
  MInferenceConfig c;
  c.heads = std::move(heads);
  c.coverage = cov;
  return c;
}

struct Qkv {
  at::Tensor q, k, v;
};
// HND q (B, H, Nq, D), k, v (B, Hkv, Nk, D) of N(0, 1) entries.
Qkv random_qkv(int64_t b, int64_t h, int64_t hkv, int64_t nq, int64_t nk, int64_t d, at::ScalarType dtype,
               uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto o = at::TensorOptions(at::kDouble);
  return {at::randn({b, h, nq, d}, gen, o).to(dtype), at::randn({b, hkv, nk, d}, gen, o).to(dtype),
          at::randn({b, hkv, nk, d}, gen, o).to(dtype)};
}

// ---------------------------------------------------------------------------------------------------------
// The oracle, written from the algorithm text with plain loops over float64 arrays, sharing no code with the
// implementation.
struct Arr {  // contiguous float64 (B, H, N, D) view
  at::Tensor t;
  const double* p;
  int64_t H, N, D;
  explicit Arr(const at::Tensor& x)
      : t(x.to(at::kDouble).contiguous()),
        p(t.data_ptr<double>()),
        H(t.size(1)),
        N(t.size(2)),
        D(t.size(3)) {}
  const double* row(int64_t b, int64_t h, int64_t n) const { return p + ((b * H + h) * N + n) * D; }
};

double dot(const double* a, const double* b, int64_t d) {
  double s = 0.0;
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

// The `count` largest entries of x (ties: lower index first), returned ascending.
std::vector<int64_t> top_ascending(const std::vector<double>& x, int64_t count) {
  std::vector<int64_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return x[a] > x[b]; });
  idx.resize(static_cast<size_t>(std::min<int64_t>(count, static_cast<int64_t>(x.size()))));
  std::sort(idx.begin(), idx.end());
  return idx;
}

struct OracleVs {
  std::vector<std::vector<int64_t>> vertical, slash;  // per b * H + h
};

OracleVs oracle_estimate(const at::Tensor& q_in, const at::Tensor& k_in,
                         const std::vector<MInferenceHead>& heads, double scale) {
  const Arr q(q_in), k(k_in);
  const int64_t B = q_in.size(0), H = q.H, Nq = q.N, Nk = k.N, D = q.D, G = H / k.H, off = Nk - Nq;
  const int64_t L = std::min<int64_t>(64, Nq);
  OracleVs r;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const auto& hd = heads[heads.size() == 1 ? 0 : h];
      std::vector<double> col(Nk, 0.0), dg(Nk, 0.0);
      for (int64_t rr = 0; rr < L; ++rr) {
        const int64_t i = Nq - L + rr, di = i + off;
        std::vector<double> s(di + 1);
        for (int64_t j = 0; j <= di; ++j) s[j] = dot(q.row(b, h, i), k.row(b, h / G, j), D) * scale;
        const double mx = *std::max_element(s.begin(), s.end());
        double sum = 0.0;
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (int64_t j = 0; j <= di; ++j) {
          col[j] += s[j] / sum;
          dg[di - j] += s[j] / sum;
        }
      }
      for (int64_t j = 0; j < std::min<int64_t>(30, Nk); ++j) col[j] = kInf;
      for (int64_t o = 0; o < std::min<int64_t>(100, Nk); ++o) dg[o] = kInf;
      r.vertical.push_back(top_ascending(col, std::min(Nk, std::max<int64_t>(hd.vertical_size, 30))));
      r.slash.push_back(top_ascending(dg, std::min(Nk, std::max<int64_t>(hd.slash_size, 50))));
    }
  return r;
}

// The kernel's conversion as a literal two-pointer walk: verticals ascending, offsets descending; per query
// block a running slash range [start, end) that a new range end either extends by one 64-key tile or
// replaces (saving the old one); verticals before the running range are columns.
struct OracleIndex {
  std::vector<std::vector<int64_t>> tiles, cols;  // per (b * H + h) * NQB + m
};

OracleIndex oracle_index(const OracleVs& vs, int64_t nq, int64_t nk) {
  const int64_t nqb = (nq + kB - 1) / kB, off = nk - nq;
  OracleIndex r;
  for (size_t bh = 0; bh < vs.vertical.size(); ++bh) {
    const auto& V = vs.vertical[bh];
    auto S = vs.slash[bh];
    std::sort(S.rbegin(), S.rend());
    for (int64_t m = 0; m < nqb; ++m) {
      const int64_t end = m * kB + kB + off;
      std::vector<int64_t> tiles, cols;
      size_t vi = 0, si = 0;
      auto next_v = [&] { return vi < V.size() ? V[vi++] : end + kB; };
      int64_t v_at = next_v();
      int64_t s_at = si < S.size() ? S[si++] : -1;
      while (s_at >= end && si < S.size()) s_at = S[si++];
      s_at = s_at >= end ? end + kB : std::max(end - s_at, kB);
      int64_t lo = s_at - kB, hi = s_at;
      auto save = [&] {
        for (int64_t t = lo; t < hi; t += kB) tiles.push_back(t);
      };
      while (true) {
        if (v_at < hi) {
          if (v_at < lo) cols.push_back(v_at);
          v_at = next_v();
          continue;
        }
        if (si >= S.size()) {
          save();
          break;
        }
        s_at = std::max(end - S[si++], kB);
        if (s_at > hi + kB) {
          save();
          lo = s_at - kB;
          hi = s_at;
        } else if (s_at > hi) {
          hi += kB;
        }
      }
      r.tiles.push_back(tiles);
      r.cols.push_back(cols);
    }
  }
  return r;
}

// (B, H, Nq, Nk) bool from a predicate allowed(b, h, i, j).
at::Tensor oracle_mask(int64_t B, int64_t H, int64_t nq, int64_t nk,
                       const std::function<bool(int64_t, int64_t, int64_t, int64_t)>& allowed) {
  auto m = at::zeros({B, H, nq, nk}, at::kBool);
  auto a = m.accessor<bool, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < nk; ++j) a[b][h][i][j] = allowed(b, h, i, j);
  return m;
}

at::Tensor oracle_exact_mask(const OracleVs& vs, int64_t B, int64_t H, int64_t nq, int64_t nk) {
  std::vector<std::set<int64_t>> V, S;
  for (size_t i = 0; i < vs.vertical.size(); ++i) {
    V.emplace_back(vs.vertical[i].begin(), vs.vertical[i].end());
    S.emplace_back(vs.slash[i].begin(), vs.slash[i].end());
  }
  return oracle_mask(B, H, nq, nk, [&](int64_t b, int64_t h, int64_t i, int64_t j) {
    const int64_t o = i + nk - nq - j;
    return o >= 0 && (V[b * H + h].count(j) > 0 || S[b * H + h].count(o) > 0);
  });
}

at::Tensor oracle_tile_mask(const OracleIndex& ix, int64_t B, int64_t H, int64_t nq, int64_t nk) {
  const int64_t nqb = (nq + kB - 1) / kB;
  return oracle_mask(B, H, nq, nk, [&](int64_t b, int64_t h, int64_t i, int64_t j) {
    const size_t at = static_cast<size_t>((b * H + h) * nqb + i / kB);
    const bool causal = j <= i + nk - nq;
    for (int64_t t : ix.tiles[at])
      if (causal && j >= t && j < t + kB) return true;
    return std::find(ix.cols[at].begin(), ix.cols[at].end(), j) != ix.cols[at].end();  // the kernel: no mask
  });
}

// Attention over a token mask with plain loops in float64: (B, H, Nq, D); rows without keys give 0.
at::Tensor oracle_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                            const at::Tensor& mask, double scale) {
  const Arr q(q_in), k(k_in), v(v_in);
  const int64_t B = q_in.size(0), H = q.H, Nq = q.N, Nk = k.N, D = q.D, G = H / k.H;
  const auto a = mask.accessor<bool, 4>();
  auto out = at::zeros({B, H, Nq, D}, at::kDouble);
  auto o = out.accessor<double, 4>();
  std::vector<double> s(Nk);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Nq; ++i) {
        double mx = -kInf;
        for (int64_t j = 0; j < Nk; ++j) {
          s[j] = a[b][h][i][j] ? dot(q.row(b, h, i), k.row(b, h / G, j), D) * scale : -kInf;
          mx = std::max(mx, s[j]);
        }
        if (mx == -kInf) continue;
        double sum = 0.0;
        for (int64_t j = 0; j < Nk; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int64_t j = 0; j < Nk; ++j)
          if (s[j] > 0)
            for (int64_t d = 0; d < D; ++d) o[b][h][i][d] += s[j] / sum * v.row(b, h / G, j)[d];
      }
  return out;
}

// Index lists (B, H, C) padded with -1 -> per (b * H + h) vectors.
std::vector<std::vector<int64_t>> lists(const at::Tensor& t) {
  const auto c = t.to(at::kCPU).to(at::kLong).contiguous();
  const auto a = c.accessor<int64_t, 3>();
  std::vector<std::vector<int64_t>> out;
  for (int64_t b = 0; b < c.size(0); ++b)
    for (int64_t h = 0; h < c.size(1); ++h) {
      std::vector<int64_t> row;
      for (int64_t i = 0; i < c.size(2) && a[b][h][i] >= 0; ++i) row.push_back(a[b][h][i]);
      out.push_back(row);
    }
  return out;
}

// Index tensors (B, H, NQB, C) with counts (B, H, NQB) -> per (b * H + h) * NQB + m vectors.
std::vector<std::vector<int64_t>> index_rows(const at::Tensor& list, const at::Tensor& count) {
  const auto l = list.to(at::kCPU).to(at::kLong).contiguous(),
             c = count.to(at::kCPU).to(at::kLong).contiguous();
  const auto la = l.accessor<int64_t, 4>();
  const auto ca = c.accessor<int64_t, 3>();
  std::vector<std::vector<int64_t>> out;
  for (int64_t b = 0; b < l.size(0); ++b)
    for (int64_t h = 0; h < l.size(1); ++h)
      for (int64_t m = 0; m < l.size(2); ++m) {
        std::vector<int64_t> row;
        for (int64_t i = 0; i < ca[b][h][m]; ++i) row.push_back(la[b][h][m][i]);
        out.push_back(row);
      }
  return out;
}

double scale_of(const at::Tensor& q) {
  return 1.0 / std::sqrt(static_cast<double>(q.size(3)));
}

// ---------------------------------------------------------------------------------------------------------
struct Shape {
  int64_t b, h, hkv, nq, nk, d;
};

TEST(MInferenceOracle, EstimateIndexAndAttentionMatchLoops) {
  // Budgets below N so that the top-k truncates; sizes below the floors (30, 50) exercise the max().
  const std::vector<MInferenceHead> heads4 = {vs_head(40, 60), vs_head(0, 120), vs_head(90, 0),
                                              vs_head(35, 55)};
  for (const auto& sh : {Shape{2, 4, 2, 300, 300, 16}, Shape{1, 4, 1, 200, 300, 16},
                         Shape{2, 2, 2, 40, 40, 8}, Shape{1, 4, 4, 130, 131, 8}}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " Nq " + std::to_string(sh.nq) + " Nk " +
                 std::to_string(sh.nk));
    const auto [q, k, v] = random_qkv(sh.b, sh.h, sh.hkv, sh.nq, sh.nk, sh.d, at::kDouble, seed);
    const std::vector<MInferenceHead> heads(heads4.begin(), heads4.begin() + sh.h);
    const auto want = oracle_estimate(q, k, heads, scale_of(q));
    const auto vs = minference_vertical_slash(q, k, config_of(heads));
    EXPECT_EQ(lists(vs.vertical), want.vertical);
    EXPECT_EQ(lists(vs.slash), want.slash);
    for (int64_t h = 0; h < sh.h; ++h) {
      EXPECT_EQ(vs.vertical_count[0][h].item<int64_t>(), static_cast<int64_t>(want.vertical[h].size()));
      EXPECT_EQ(vs.slash_count[0][h].item<int64_t>(), static_cast<int64_t>(want.slash[h].size()));
    }

    const auto want_ix = oracle_index(want, sh.nq, sh.nk);
    const auto ix = vertical_slash_index(vs);
    EXPECT_EQ(index_rows(ix.block_offset, ix.block_count), want_ix.tiles);
    EXPECT_EQ(index_rows(ix.column_index, ix.column_count), want_ix.cols);

    const auto exact = oracle_exact_mask(want, sh.b, sh.h, sh.nq, sh.nk);
    const auto tiles = oracle_tile_mask(want_ix, sh.b, sh.h, sh.nq, sh.nk);
    EXPECT_TRUE(at::equal(vertical_slash_token_mask(vs, VsCoverage::kExactTokens), exact));
    EXPECT_TRUE(at::equal(vertical_slash_token_mask(vs, VsCoverage::kKernelTiles), tiles));
    for (auto [cov, mask] :
         {std::pair{VsCoverage::kExactTokens, exact}, std::pair{VsCoverage::kKernelTiles, tiles}}) {
      const auto r = minference_attention(q, k, v, config_of(heads, cov));
      const auto ref = oracle_attention(q, k, v, mask, scale_of(q));
      EXPECT_LT(relative_l1(r.out, ref), 1e-12) << to_string(cov);
      EXPECT_EQ(r.stats.computed_pairs, mask.sum().item<int64_t>()) << to_string(cov);
      EXPECT_EQ(r.stats.valid_pairs, sh.b * sh.h * (sh.nq * (sh.nk - sh.nq + 1) + sh.nq * (sh.nq - 1) / 2));
    }
  }
}

// The block-sparse pattern against loops: zero-padded 64-token means, unscaled pooled scores, per query block
// the top min(top, valid) causal-valid key blocks (ties: lower block first).
TEST(MInferenceOracle, BlockSparseMaskMatchesLoops) {
  for (const auto& sh : {Shape{2, 4, 2, 300, 300, 16}, Shape{1, 2, 1, 200, 330, 8}}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    const auto [q, k, v] = random_qkv(sh.b, sh.h, sh.hkv, sh.nq, sh.nk, sh.d, at::kDouble, seed);
    const std::vector<MInferenceHead> heads = {block_head(2), block_head(1), block_head(3), block_head(100)};
    const std::vector<MInferenceHead> hs(heads.begin(), heads.begin() + sh.h);
    const int64_t nqb = (sh.nq + kB - 1) / kB, nkb = (sh.nk + kB - 1) / kB, off = sh.nk - sh.nq;
    const Arr qa(q), ka(k);
    auto want = at::zeros({sh.b, sh.h, nqb, nkb}, at::kBool);
    auto w = want.accessor<bool, 4>();
    for (int64_t b = 0; b < sh.b; ++b)
      for (int64_t h = 0; h < sh.h; ++h) {
        auto pool = [&](const Arr& x, int64_t hh, int64_t blk) {
          std::vector<double> m(sh.d, 0.0);
          for (int64_t t = blk * kB; t < std::min((blk + 1) * kB, x.N); ++t)
            for (int64_t d = 0; d < sh.d; ++d) m[d] += x.row(b, hh, t)[d] / kB;
          return m;
        };
        for (int64_t i = 0; i < nqb; ++i) {
          const auto qm = pool(qa, h, i);
          const int64_t last_row = std::min((i + 1) * kB, sh.nq) - 1;
          std::vector<double> score;
          for (int64_t j = 0; j < nkb && j * kB <= last_row + off; ++j)
            score.push_back(dot(qm.data(), pool(ka, h / (sh.h / sh.hkv), j).data(), sh.d));
          for (int64_t j : top_ascending(score, hs[h].top_blocks)) w[b][h][i][j] = true;
        }
      }
    const auto m = minference_block_sparse_mask(q, k, config_of(hs));
    EXPECT_TRUE(at::equal(m.dense, want));
    // The attention goes through block_sparse_attention over exactly these blocks.
    const auto r = minference_attention(q, k, v, config_of(hs));
    const auto ref = oracle_attention(q, k, v, test::token_mask(m, true), scale_of(q));
    EXPECT_LT(relative_l1(r.out, ref), 1e-12);
  }
}

// Full budgets compute every causal key: exactly dense attention, density 1.
TEST(MInferenceCoverage, FullBudgetsGiveDenseAttention) {
  for (int64_t n : {300, 1000, 2048}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " N " + std::to_string(n));
    // Batch 2 with GQA; batch 1 at N = 2048 keeps the float64 run short on small machines.
    const auto [q, k, v] = random_qkv(n < 2048 ? 2 : 1, 4, 2, n, n, 32, at::kDouble, seed);
    const auto dense = dense_attention_f64(q, k, v, /*causal=*/true);
    const int64_t nkb = (n + kB - 1) / kB;
    const std::vector<std::pair<std::string, MInferenceConfig>> configs = {
        {"vs kernel", config_of({vs_head(n, 0)}, VsCoverage::kKernelTiles)},
        {"vs exact", config_of({vs_head(n, 0)}, VsCoverage::kExactTokens)},
        {"vs exact slash", config_of({vs_head(0, n)}, VsCoverage::kExactTokens)},
        {"a_shape window", config_of({a_shape_head(0, n)})},
        {"a_shape sinks", config_of({a_shape_head(n, 1)})},
        {"block_sparse", config_of({block_head(nkb)})},
        {"mixed", config_of({vs_head(n, 0), a_shape_head(128, n), block_head(nkb), vs_head(0, n)})},
    };
    for (const auto& [name, c] : configs) {
      const auto r = minference_attention(q, k, v, c);
      EXPECT_LT(relative_l1(r.out, dense.out), 1e-6) << name;
      EXPECT_EQ(r.stats.computed_pairs, r.stats.valid_pairs) << name;
      EXPECT_EQ(r.stats.computed_blocks, r.stats.valid_blocks) << name;
      EXPECT_EQ(r.stats.block_q, 64) << name;
    }
  }
}

// No length gate: the Llama-3.1 default (512, 2048) on a short prompt covers every key, i.e. runs dense work.
TEST(MInferenceCoverage, DefaultOnShortInputIsDense) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto [q, k, v] = random_qkv(1, 4, 2, 300, 300, 32, at::kFloat, seed);
  const auto c = minference_llama31_default();
  ASSERT_EQ(c.heads.size(), 1u);
  EXPECT_EQ(c.heads[0].pattern, Pattern::kVerticalSlash);
  EXPECT_EQ(c.heads[0].vertical_size, 512);
  EXPECT_EQ(c.heads[0].slash_size, 2048);
  const auto r = minference_attention(q, k, v, c);
  EXPECT_LT(relative_l2(r.out, dense_attention_f64(q, k, v, true).out), test::exact_tolerance(at::kFloat));
  EXPECT_DOUBLE_EQ(r.stats.token_density(), 1.0);
  EXPECT_EQ(minference_fallback_head().vertical_size, 1000);
  EXPECT_EQ(minference_fallback_head().slash_size, 6096);
}

// Strong vertical columns (beyond the forced first 30 keys) and a diagonal 500 tokens back are found by the
// estimate with budgets of only 5 entries beyond the forced ones.
TEST(MInferencePlanted, VerticalColumnsAndDistantSlashAreFound) {
  constexpr int64_t N = 2048, D = 64, kBack = 500;
  const std::vector<int64_t> columns = {200, 777, 1500};
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto o = at::TensorOptions(at::kDouble);
  // Dimensions 0..47 carry a random unit code per position (query i matches key i - 500), dimensions 48..63
  // a shared direction that only the planted columns' keys have. Logits after the 1/8 scale: 10 for a match.
  auto code = at::randn({2, N, 48}, gen, o);
  code = code / code.norm(2, {-1}, true);
  auto u = at::randn({16}, gen, o);
  u = u / u.norm();
  const double a = std::sqrt(80.0);
  auto q = at::zeros({2, 1, N, D}, o), k = at::zeros({2, 1, N, D}, o);
  q.narrow(3, 0, 48).copy_(a * code.unsqueeze(1));
  q.narrow(3, 48, 16).copy_((a * u).expand({2, 1, N, 16}));
  k.narrow(3, 0, 48).narrow(2, 0, N - kBack).copy_(a * code.narrow(1, kBack, N - kBack).unsqueeze(1));
  for (int64_t c : columns) k.select(2, c).narrow(-1, 48, 16).copy_((a * u).expand({2, 1, 16}));
  // Two query heads on one kv head (GQA); the second head's queries are the first's, so both find it.
  const auto qq = at::cat({q, q}, 1).to(at::kFloat), kk = k.to(at::kFloat);
  const auto vs = minference_vertical_slash(qq, kk, config_of({vs_head(35, 105)}));
  for (const auto& row : lists(vs.vertical)) {
    EXPECT_EQ(row.size(), 35u);
    for (int64_t c : columns) EXPECT_TRUE(std::count(row.begin(), row.end(), c)) << "column " << c;
    for (int64_t j = 0; j < 30; ++j) EXPECT_TRUE(std::count(row.begin(), row.end(), j)) << "forced key " << j;
  }
  for (const auto& row : lists(vs.slash)) {
    EXPECT_EQ(row.size(), 105u);
    EXPECT_TRUE(std::count(row.begin(), row.end(), kBack)) << "offset " << kBack;
    for (int64_t d = 0; d < 100; ++d)
      EXPECT_TRUE(std::count(row.begin(), row.end(), d)) << "forced offset " << d;
  }
  // The tiles of the last query block cover every row's key 500 back (merging may shift the tile starts).
  const auto ix = vertical_slash_index(vs);
  const auto tiles = index_rows(ix.block_offset, ix.block_count);
  const int64_t last = N / kB - 1;
  for (int64_t key = last * kB - kBack; key < N - kBack; ++key)
    EXPECT_TRUE(std::any_of(tiles[last].begin(), tiles[last].end(),
                            [&](int64_t t) { return key >= t && key < t + kB; }))
        << "key " << key;
  const auto mask = vertical_slash_token_mask(vs, VsCoverage::kExactTokens);
  for (int64_t i : {int64_t{600}, int64_t{1234}, N - 1}) {
    EXPECT_TRUE(mask[1][1][i][i - kBack].item<bool>()) << "row " << i;
    for (int64_t c : columns)
      if (c <= i) {
        EXPECT_TRUE(mask[0][0][i][c].item<bool>()) << "row " << i << " column " << c;
      }
  }
}

// The kernel's index form (loop 1 over 64-key tiles with the causal mask, loop 2 over gathered columns)
// equals the mask form, output, LSE and statistics; the exact-token pattern is a subset of it.
TEST(MInferenceIndex, IndexFormEqualsMaskForm) {
  const std::vector<MInferenceHead> heads = {vs_head(40, 60), vs_head(64, 200), vs_head(100, 50),
                                             vs_head(31, 51)};
  for (const auto& sh :
       {Shape{2, 4, 2, 300, 300, 16}, Shape{2, 4, 2, 1000, 1000, 16}, Shape{1, 4, 2, 700, 1000, 16}}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " Nq " + std::to_string(sh.nq) + " Nk " +
                 std::to_string(sh.nk));
    const auto [q, k, v] = random_qkv(sh.b, sh.h, sh.hkv, sh.nq, sh.nk, sh.d, at::kDouble, seed);
    auto c = config_of(heads);
    c.return_lse = true;
    const auto vs = minference_vertical_slash(q, k, c);
    const auto ix = vertical_slash_index(vs);
    const auto by_index = vertical_slash_index_attention(q, k, v, ix, c);
    const auto by_mask = minference_attention(q, k, v, c);
    const auto mask = vertical_slash_token_mask(vs, VsCoverage::kKernelTiles);
    const auto ref = test::masked_attention_f64(q, k, v, mask, scale_of(q));
    EXPECT_LT(relative_l1(by_index.out, ref), 1e-12);
    EXPECT_LT(relative_l1(by_mask.out, ref), 1e-12);
    EXPECT_LT((by_index.lse - by_mask.lse).abs().max().item<double>(), 1e-4);
    EXPECT_EQ(by_index.stats.computed_pairs, mask.sum().item<int64_t>());
    EXPECT_EQ(by_index.stats.computed_pairs, by_mask.stats.computed_pairs);
    EXPECT_EQ(by_index.stats.computed_blocks, by_mask.stats.computed_blocks);
    EXPECT_EQ(by_index.stats.valid_blocks, by_mask.stats.valid_blocks);
    EXPECT_LE(by_mask.stats.computed_blocks, by_mask.stats.valid_blocks);
    const auto exact = vertical_slash_token_mask(vs, VsCoverage::kExactTokens);
    EXPECT_TRUE((exact & mask.logical_not()).any().item<bool>() == false)
        << "exact tokens not within the tiles";
    EXPECT_LT(exact.sum().item<int64_t>(), mask.sum().item<int64_t>());

    // Structure: tiles ascending and disjoint; columns ascending, outside every tile, below the block's
    // first diagonal key (so loop 2 needs no causal mask); counts within the list widths.
    const auto tiles = index_rows(ix.block_offset, ix.block_count);
    const auto cols = index_rows(ix.column_index, ix.column_count);
    const int64_t nqb = (sh.nq + kB - 1) / kB, off = sh.nk - sh.nq;
    for (size_t r = 0; r < tiles.size(); ++r) {
      const int64_t m = static_cast<int64_t>(r) % nqb;
      ASSERT_FALSE(tiles[r].empty());
      EXPECT_LE(static_cast<int64_t>(tiles[r].size()), ix.block_offset.size(3));
      for (size_t t = 1; t < tiles[r].size(); ++t) EXPECT_GE(tiles[r][t], tiles[r][t - 1] + kB);
      for (size_t t = 0; t < cols[r].size(); ++t) {
        if (t > 0) {
          EXPECT_GT(cols[r][t], cols[r][t - 1]);
        }
        EXPECT_LT(cols[r][t], m * kB + off);
        for (int64_t s : tiles[r]) EXPECT_FALSE(cols[r][t] >= s && cols[r][t] < s + kB);
      }
    }
  }
}

// 64x64 blocks (query rows from 0) holding at least one true of a (B, H, Nq, Nk) mask.
int64_t blocks_of(const at::Tensor& mask) {
  const int64_t B = mask.size(0), H = mask.size(1), nq = mask.size(2), nk = mask.size(3);
  const int64_t nqb = (nq + kB - 1) / kB, nkb = (nk + kB - 1) / kB;
  auto padded = at::zeros({B, H, nqb * kB, nkb * kB}, at::kBool);
  padded.narrow(2, 0, nq).narrow(3, 0, nk).copy_(mask);
  return padded.view({B, H, nqb, kB, nkb, kB}).any(5).any(3).sum().item<int64_t>();
}

// The index-form counts (no token mask): pairs equal the kernel-tile mask's count and the statistics equal
// those of the index attention, over random shapes (Nq < Nk, Nq = 1, tiles running past Nk) and budgets.
TEST(MInferenceIndex, PairCountsFromTheIndexEqualTheTokenMask) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<Shape> shapes = {{2, 4, 2, 300, 300, 8}, {1, 2, 1, 100, 100, 8},  {1, 4, 4, 1, 77, 8},
                                     {2, 2, 1, 130, 131, 8}, {1, 4, 2, 513, 1000, 8}, {1, 2, 2, 64, 64, 8},
                                     {1, 3, 1, 700, 700, 8}};
  for (const auto& sh : shapes) {
    SCOPED_TRACE("Nq " + std::to_string(sh.nq) + " Nk " + std::to_string(sh.nk));
    const auto [q, k, v] = random_qkv(sh.b, sh.h, sh.hkv, sh.nq, sh.nk, sh.d, at::kFloat, rng());
    std::vector<MInferenceHead> heads;
    for (int64_t h = 0; h < sh.h; ++h)
      heads.push_back(vs_head(static_cast<int64_t>(rng() % 200), static_cast<int64_t>(rng() % 400)));
    const auto c = config_of(heads);
    const auto vs = minference_vertical_slash(q, k, c);
    const auto ix = vertical_slash_index(vs);
    const auto mask = vertical_slash_token_mask(vs, VsCoverage::kKernelTiles);
    EXPECT_EQ(vertical_slash_index_pairs(ix), mask.sum().item<int64_t>());
    const auto st = vertical_slash_index_stats(ix);
    const auto ref = vertical_slash_index_attention(q, k, v, ix, c).stats;
    EXPECT_EQ(st.computed_pairs, ref.computed_pairs);
    EXPECT_EQ(st.computed_blocks, ref.computed_blocks);
    EXPECT_EQ(st.computed_blocks, blocks_of(mask));
    EXPECT_EQ(st.valid_pairs, ref.valid_pairs);
    EXPECT_EQ(st.valid_blocks, ref.valid_blocks);
    EXPECT_EQ(st.block_q, 64);
    EXPECT_EQ(st.block_k, 64);
  }
  // A hand-made index: one block with a tile starting past Nk (computes nothing), a tile straddling Nk and
  // two columns; another block with only columns; Nq = Nk = 100, so block 1 holds rows 64 .. 99.
  VerticalSlashIndex ix;
  ix.seq_q = ix.seq_k = 100;
  const auto i32 = at::TensorOptions(at::kInt);
  ix.block_count = at::tensor({1, 2}, i32).view({1, 1, 2});
  ix.block_offset = at::tensor({0, -1, 50, 108}, i32).view({1, 1, 2, 2});
  ix.column_count = at::tensor({0, 2}, i32).view({1, 1, 2});
  ix.column_index = at::tensor({-1, -1, 3, 40}, i32).view({1, 1, 2, 2});
  // Block 0: tile [0, 64), rows 0 .. 63: 64 * 65 / 2 pairs. Block 1: tile [50, 100) for rows 64 .. 99: row r
  // sees keys 50 .. r, r - 49 of them: sum 15 .. 50 = 36 * 65 / 2; tile [108, 164): none; columns: 2 * 36.
  EXPECT_EQ(vertical_slash_index_pairs(ix), 64 * 65 / 2 + 36 * 65 / 2 + 2 * 36);
  // Blocks: (0, 0); (1, 0) by both columns and the tile's keys 50 .. 63, (1, 1) by keys 64 .. 99.
  EXPECT_EQ(vertical_slash_index_stats(ix).computed_blocks, 3);
}

// Equal-sparsity mode: one budget ratio for every vertical-slash head, bisected on the token-level sparsity;
// the selection is the budgets' own at that ratio, the attention is the index attention of that selection,
// and the sparsity lands on the target (tile coverage in jumps of whole tiles: looser).
TEST(MInferenceEqualSparsity, BudgetRatioHitsTheTargetSparsity) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t N = 1024;
  const auto [q, k, v] = random_qkv(2, 4, 2, N, N, 16, at::kFloat, seed);
  const std::vector<MInferenceHead> heads = {vs_head(64, 128), vs_head(32, 256), vs_head(100, 100),
                                             vs_head(0, 200)};
  // The exact-token count is a masked pass over all pairs per bisection step (slow on a CPU): one target.
  for (const auto& [cov, target] :
       {std::pair{VsCoverage::kKernelTiles, 0.5}, std::pair{VsCoverage::kKernelTiles, 0.75},
        std::pair{VsCoverage::kKernelTiles, 0.0}, std::pair{VsCoverage::kExactTokens, 0.7}}) {
    SCOPED_TRACE(std::string(to_string(cov)) + " target " + std::to_string(target));
    auto c = config_of(heads, cov);
    c.target_sparsity = target;
    const auto vs = minference_vertical_slash(q, k, c);
    const double ratio = vs.budget_ratio;
    EXPECT_GT(ratio, 0.0);
    // The selection equals the plain estimate with every budget scaled by the ratio.
    std::vector<MInferenceHead> scaled = heads;
    for (auto& h : scaled) {
      h.vertical_size = std::llround(static_cast<double>(h.vertical_size) * ratio);
      h.slash_size = std::llround(static_cast<double>(h.slash_size) * ratio);
    }
    const auto plain = minference_vertical_slash(q, k, config_of(scaled, cov));
    EXPECT_TRUE(at::equal(vs.vertical, plain.vertical));
    EXPECT_TRUE(at::equal(vs.slash, plain.slash));
    EXPECT_EQ(plain.budget_ratio, 1.0);
    const auto r = minference_attention(q, k, v, c);
    const double sparsity = 1.0 - r.stats.token_density();
    // The ratio alone (no search) reproduces the call: how the runner calibrates once, then times the call.
    EXPECT_EQ(minference_budget_ratio(q, k, c), ratio);
    auto fixed = c;
    fixed.target_sparsity.reset();
    fixed.budget_ratio = ratio;
    const auto by_ratio = minference_attention(q, k, v, fixed);
    EXPECT_TRUE(at::equal(r.out, by_ratio.out));
    EXPECT_EQ(r.stats.computed_pairs, by_ratio.stats.computed_pairs);
    if (target == 0.0) {
      EXPECT_EQ(r.stats.computed_pairs, r.stats.valid_pairs);
    } else {
      EXPECT_NEAR(sparsity, target, cov == VsCoverage::kKernelTiles ? 0.02 : 0.005);
    }
    EXPECT_EQ(r.stats.computed_pairs, minference_token_mask(q, k, c).sum().item<int64_t>());
    const auto by_budgets = minference_attention(q, k, v, config_of(scaled, cov));
    EXPECT_TRUE(at::equal(r.out, by_budgets.out));
    if (cov == VsCoverage::kKernelTiles) {
      EXPECT_EQ(r.stats.computed_pairs, vertical_slash_index_pairs(vertical_slash_index(vs)));
    }
    std::printf("%s target %.2f: ratio %.4f sparsity %.4f\n", std::string(to_string(cov)).c_str(), target,
                ratio, sparsity);
  }
  // Mixed patterns: only the vertical-slash heads are scaled (the A-shape head keeps its window).
  auto c = config_of({vs_head(64, 128), a_shape_head(16, 100), vs_head(32, 256), vs_head(100, 100)});
  c.target_sparsity = 0.7;
  const auto mask = minference_token_mask(q, k, c);
  const auto want_a = oracle_mask(
      2, 1, N, N, [&](int64_t, int64_t, int64_t i, int64_t j) { return j <= i && (j < 16 || i - j < 100); });
  EXPECT_TRUE(at::equal(mask.narrow(1, 1, 1), want_a));
  const auto vs_heads = at::tensor({0, 2, 3}, at::kLong);
  const auto vs_pairs = mask.index_select(1, vs_heads).sum().item<double>();
  const double valid = 2.0 * 3.0 * static_cast<double>(N * (N + 1) / 2);
  EXPECT_NEAR(1.0 - vs_pairs / valid, 0.7, 0.02);
  // The ratio of the mixed config is searched over its vertical-slash heads only, as the attention does.
  auto fixed = c;
  fixed.target_sparsity.reset();
  fixed.budget_ratio = minference_budget_ratio(q, k, c);
  EXPECT_NE(fixed.budget_ratio, 1.0);
  EXPECT_TRUE(at::equal(minference_token_mask(q, k, fixed), mask));
}

// Mixed per-head patterns with GQA and batch 2: the attention equals dense attention restricted to
// minference_token_mask, the A-shape heads of that mask match the rule, the LSE matches, and NHD layout
// gives the same result.
TEST(MInferenceHeads, MixedPatternsEqualMaskedAttention) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t N = 1000, off = 0;
  const auto [q, k, v] = random_qkv(2, 4, 2, N, N, 16, at::kDouble, seed);
  auto c = config_of({vs_head(40, 60), a_shape_head(64, 100), block_head(3), vs_head(100, 300)});
  c.return_lse = true;
  const auto mask = minference_token_mask(q, k, c);
  const auto r = minference_attention(q, k, v, c);
  EXPECT_LT(relative_l1(r.out, test::masked_attention_f64(q, k, v, mask, scale_of(q))), 1e-12);
  EXPECT_EQ(r.stats.computed_pairs, mask.sum().item<int64_t>());
  const auto want_a = oracle_mask(2, 1, N, N, [&](int64_t, int64_t, int64_t i, int64_t j) {
    return j <= i + off && (j < 64 || i + off - j < 100);
  });
  EXPECT_TRUE(at::equal(mask.narrow(1, 1, 1), want_a));
  // LSE of the masked scores.
  const auto kk = k.repeat_interleave(2, 1);
  const auto s = (at::matmul(q, kk.transpose(-1, -2)) * scale_of(q)).masked_fill(mask.logical_not(), -kInf);
  EXPECT_LT((r.lse.to(at::kDouble) - at::logsumexp(s, -1)).abs().max().item<double>(), 1e-4);
  // NHD layout.
  auto cn = c;
  cn.layout = Layout::kNHD;
  const auto rn = minference_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), cn);
  EXPECT_LT(relative_l1(rn.out.transpose(1, 2), r.out), 1e-14);
  // The exact-token coverage on the same heads is a sub-pattern: fewer computed pairs.
  const auto re = minference_attention(q, k, v, config_of(c.heads, VsCoverage::kExactTokens));
  EXPECT_LT(re.stats.computed_pairs, r.stats.computed_pairs);
}

// Decode (Nq = 1) is dense whatever the pattern.
TEST(MInferenceDecode, SingleQueryEqualsDense) {
  for (int64_t nk : {300, 1000}) {
    for (auto dt : {at::kFloat, at::kDouble}) {
      const uint64_t seed = test::fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " Nk " + std::to_string(nk) + " " + test::dtype_name(dt));
      const auto [q, k, v] = random_qkv(2, 4, 2, 1, nk, 32, dt, seed);
      const auto dense = dense_attention_f64(q, k, v, true);
      for (const auto& c :
           {config_of({vs_head(30, 50)}), config_of({a_shape_head(0, 1)}), config_of({block_head(1)})}) {
        const auto r = minference_attention(q, k, v, c);
        EXPECT_LT(relative_l1(r.out, dense.out), dt == at::kDouble ? 1e-12 : 1e-6);
        EXPECT_EQ(r.stats.computed_pairs, r.stats.valid_pairs);
        EXPECT_EQ(r.stats.valid_pairs, 2 * 4 * nk);
        EXPECT_TRUE(minference_token_mask(q, k, c).all().item<bool>());
      }
    }
  }
}

// 16-bit inputs: the math runs in float32 and the output is rounded once.
TEST(MInferenceDtypes, LowPrecisionFullBudgetsNearDense) {
  for (auto dt : {at::kHalf, at::kBFloat16, at::kFloat}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + test::dtype_name(dt));
    const auto [q, k, v] = random_qkv(2, 4, 2, 300, 300, 32, dt, seed);
    const auto dense = dense_attention_f64(q, k, v, true);
    for (const auto& c : {config_of({vs_head(300, 0)}), config_of({vs_head(300, 0), a_shape_head(0, 300),
                                                                   block_head(5), vs_head(0, 300)})}) {
      const auto r = minference_attention(q, k, v, c);
      EXPECT_EQ(r.out.scalar_type(), dt);
      EXPECT_LT(relative_l2(r.out, dense.out), test::exact_tolerance(dt));
    }
  }
}

// CPU and CUDA tensors give the same estimate, index and attention.
TEST(MInferenceDevice, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible to torch";
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto [q, k, v] = random_qkv(2, 4, 2, 1000, 1000, 64, at::kDouble, seed);
  const auto c = config_of({vs_head(40, 60), a_shape_head(64, 100), block_head(3), vs_head(100, 300)});
  const auto cpu = minference_attention(q, k, v, c);
  const auto gpu = minference_attention(q.cuda(), k.cuda(), v.cuda(), c);
  EXPECT_LT(relative_l1(gpu.out.cpu(), cpu.out), 1e-10);
  EXPECT_EQ(gpu.stats.computed_pairs, cpu.stats.computed_pairs);
  const auto vs_c = minference_vertical_slash(q, k, c),
             vs_g = minference_vertical_slash(q.cuda(), k.cuda(), c);
  EXPECT_TRUE(at::equal(vs_g.vertical.cpu(), vs_c.vertical));
  EXPECT_TRUE(at::equal(vs_g.slash.cpu(), vs_c.slash));
  const auto ix = vertical_slash_index(vs_g);
  EXPECT_TRUE(ix.block_offset.is_cuda());
  EXPECT_LT(relative_l1(vertical_slash_index_attention(q.cuda(), k.cuda(), v.cuda(), ix, c).out.cpu(),
                        vertical_slash_index_attention(q, k, v, vertical_slash_index(vs_c), c).out),
            1e-10);
}

// ---------------------------------------------------------------------------------------------------------
// JSON loader.
struct TempFile {
  std::filesystem::path path;
  explicit TempFile(const std::string& text) {
    path = std::filesystem::temp_directory_path() /
           ("sparge_minference_" + std::to_string(test::fresh_seed()) + ".json");
    std::ofstream(path) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

void expect_same(const MInferenceHead& got, const MInferenceHead& want, const std::string& where) {
  EXPECT_EQ(got.pattern, want.pattern) << where;
  EXPECT_EQ(got.vertical_size, want.vertical_size) << where;
  EXPECT_EQ(got.slash_size, want.slash_size) << where;
  EXPECT_EQ(got.n_init, want.n_init) << where;
  EXPECT_EQ(got.n_local, want.n_local) << where;
  EXPECT_EQ(got.top_blocks, want.top_blocks) << where;
}

TEST(MInferenceConfigFile, LoaderRoundTripsRandomConfigs) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr int64_t kLayers = 3, kHeads = 8;
  const char* names[] = {"vertical_and_slash", "stream_llm", "block_sparse"};
  nlohmann::json doc = nlohmann::json::array();
  std::vector<std::vector<MInferenceHead>> want(
      kLayers, std::vector<MInferenceHead>(kHeads, minference_fallback_head()));
  for (int64_t l = 0; l < kLayers; ++l) {
    nlohmann::json layer = nlohmann::json::object();
    for (int64_t h = 0; h < kHeads; ++h) {
      if (rng() % 4 == 0) continue;  // missing: the fallback head
      const int which = static_cast<int>(rng() % 3);
      const int64_t vsize = static_cast<int64_t>(rng() % 5000),
                    ssize = 1 + static_cast<int64_t>(rng() % 8000);
      layer[std::to_string(h)] = {names[which], vsize, ssize, static_cast<double>(rng() % 1000) / 1000.0};
      auto& w = want[l][h];
      w.pattern = static_cast<Pattern>(which);
      w.vertical_size = vsize;
      w.slash_size = ssize;
      if (w.pattern == Pattern::kAShape) {
        w.n_init = vsize;
        w.n_local = ssize;
      }
    }
    doc.push_back(layer);
  }
  const TempFile f(doc.dump());
  const auto got = load_minference_config(f.path.string(), kHeads);
  ASSERT_EQ(static_cast<int64_t>(got.size()), kLayers);
  for (int64_t l = 0; l < kLayers; ++l) {
    ASSERT_EQ(static_cast<int64_t>(got[l].heads.size()), kHeads);
    EXPECT_TRUE(got[l].causal);
    for (int64_t h = 0; h < kHeads; ++h)
      expect_same(got[l].heads[h], want[l][h], "layer " + std::to_string(l) + " head " + std::to_string(h));
  }
}

TEST(MInferenceConfigFile, LoaderSizesWithoutNumHeads) {
  const TempFile f(R"([{"0": ["vertical_and_slash", 1000, 6096, 0.9], "2": ["stream_llm", 100, 800, 0.5],
    "1": ["block_sparse", 10, 1, 0.3]}, {}, {"3": ["vertical_and_slash", 3500, 100, 1]}])");
  const auto got = load_minference_config(f.path.string());
  ASSERT_EQ(got.size(), 3u);
  ASSERT_EQ(got[0].heads.size(), 3u);
  EXPECT_EQ(got[0].heads[0].pattern, Pattern::kVerticalSlash);
  EXPECT_EQ(got[0].heads[1].pattern, Pattern::kBlockSparse);
  EXPECT_EQ(got[0].heads[1].top_blocks, 100);
  EXPECT_EQ(got[0].heads[2].pattern, Pattern::kAShape);
  EXPECT_EQ(got[0].heads[2].n_init, 100);
  EXPECT_EQ(got[0].heads[2].n_local, 800);
  ASSERT_EQ(got[1].heads.size(), 1u);
  expect_same(got[1].heads[0], minference_fallback_head(), "empty layer");
  ASSERT_EQ(got[2].heads.size(), 4u);
  expect_same(got[2].heads[1], minference_fallback_head(), "missing head");
  EXPECT_EQ(got[2].heads[3].vertical_size, 3500);
  EXPECT_EQ(got[2].heads[3].slash_size, 100);
}

TEST(MInferenceConfigFile, LoaderRejectsMalformedFilesNamingTheLocation) {
  struct Bad {
    std::string text;
    std::vector<std::string> expect;  // fragments of the message (besides the file name)
    std::optional<int64_t> num_heads;
  };
  const std::vector<Bad> cases = {
      {"[{", {"invalid JSON"}, std::nullopt},
      {R"({"0": ["vertical_and_slash", 1, 2, 0]})", {"expected a list over layers"}, std::nullopt},
      {"[[1, 2]]", {"layer 0", "expected a dict"}, std::nullopt},
      {R"([{}, {"x": ["vertical_and_slash", 1, 2, 0]}])",
       {"layer 1, head \"x\"", "head index"},
       std::nullopt},
      {R"([{"-1": ["vertical_and_slash", 1, 2, 0]}])", {"layer 0, head \"-1\""}, std::nullopt},
      {R"([{"0": ["vertical_and_slash", 1, 2]}])",
       {"layer 0, head \"0\"", "[pattern, vertical_size"},
       std::nullopt},
      {R"([{}, {}, {"5": ["dense", 1, 2, 0]}])", {"layer 2, head \"5\"", "pattern"}, std::nullopt},
      {R"([{"0": [7, 1, 2, 0]}])", {"layer 0, head \"0\"", "pattern: expected a string"}, std::nullopt},
      {R"([{"0": ["vertical_and_slash", -5, 2, 0]}])", {"head \"0\"", "vertical_size"}, std::nullopt},
      {R"([{"0": ["vertical_and_slash", 10.5, 2, 0]}])", {"head \"0\"", "vertical_size"}, std::nullopt},
      {R"([{"0": ["vertical_and_slash", 1, "2", 0]}])", {"head \"0\"", "slash_size"}, std::nullopt},
      {R"([{"0": ["vertical_and_slash", 1, 2, "high"]}])", {"head \"0\"", "score"}, std::nullopt},
      {R"([{"3": ["stream_llm", 1, 0, 0]}])", {"layer 0, head \"3\"", "n_local"}, std::nullopt},
      {R"([{"2": ["vertical_and_slash", 1, 2, 0]}])", {"layer 0, head \"2\"", "num_heads (2)"}, int64_t{2}},
  };
  for (const auto& c : cases) {
    const TempFile f(c.text);
    try {
      load_minference_config(f.path.string(), c.num_heads);
      ADD_FAILURE() << "no error for " << c.text;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(f.path.string()), std::string::npos) << msg;
      for (const auto& frag : c.expect)
        EXPECT_NE(msg.find(frag), std::string::npos) << "'" << frag << "' in " << msg;
    }
  }
  EXPECT_THROW(load_minference_config("/nonexistent/minference.json"), Error);
  const TempFile ok("[]");
  EXPECT_TRUE(load_minference_config(ok.path.string()).empty());
  try {
    load_minference_config(ok.path.string(), int64_t{0});
    ADD_FAILURE() << "num_heads 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("argument `num_heads`"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------------------
TEST(MInferenceErrors, BadArgumentsNameTheArgument) {
  const auto f = at::TensorOptions(at::kFloat);
  const auto q = at::randn({1, 4, 128, 32}, f), k = at::randn({1, 2, 128, 32}, f),
             v = at::randn({1, 2, 128, 32}, f);
  const MInferenceConfig ok;
  auto with = [&](auto edit) {
    MInferenceConfig c = ok;
    edit(c);
    return c;
  };
  const auto vs = minference_vertical_slash(q, k, ok);
  // Default budgets on 128 keys select every offset 0 .. 127: dropping the first entry removes the
  // diagonal.
  auto vs_no_diag = vs;
  vs_no_diag.slash = vs.slash.narrow(-1, 1, vs.slash.size(-1) - 1).contiguous();
  vs_no_diag.slash_count = vs.slash_count - 1;
  auto vs_unsorted = vs;
  vs_unsorted.vertical = vs.vertical.flip(-1).contiguous();
  struct Case {
    std::string name, expect;
    std::function<void()> call;
  };
  const std::vector<Case> cases = {
      {"causal", "argument `causal`",
       [&] { minference_attention(q, k, v, with([](auto& c) { c.causal = false; })); }},
      {"heads_size", "argument `heads`: expected 1 entry or one per query head (4), got 3",
       [&] { minference_attention(q, k, v, with([](auto& c) { c.heads.resize(3); })); }},
      {"vertical_size", "argument `heads[0].vertical_size`: expected >= 0",
       [&] { minference_attention(q, k, v, with([](auto& c) { c.heads[0].vertical_size = -1; })); }},
      {"slash_size", "argument `heads[0].slash_size`",
       [&] { minference_vertical_slash(q, k, with([](auto& c) { c.heads[0].slash_size = -3; })); }},
      {"n_init", "argument `heads[0].n_init`",
       [&] { minference_attention(q, k, v, with([](auto& c) { c.heads = {a_shape_head(-1, 10)}; })); }},
      {"n_local", "argument `heads[2].n_local`: expected >= 1",
       [&] {
         minference_attention(q, k, v, with([](auto& c) {
                                c.heads = {vs_head(1, 1), vs_head(1, 1), a_shape_head(1, 0), vs_head(1, 1)};
                              }));
       }},
      {"top_blocks", "argument `heads[0].top_blocks`",
       [&] { minference_block_sparse_mask(q, k, with([](auto& c) { c.heads = {block_head(0)}; })); }},
      {"pattern", "argument `heads[0].pattern`",
       [&] {
         minference_token_mask(q, k, with([](auto& c) { c.heads[0].pattern = static_cast<Pattern>(7); }));
       }},
      {"coverage", "argument `coverage`",
       [&] {
         minference_attention(q, k, v, with([](auto& c) { c.coverage = static_cast<VsCoverage>(5); }));
       }},
      {"scale", "argument `scale`",
       [&] { minference_attention(q, k, v, with([](auto& c) { c.scale = -1.0; })); }},
      {"long_q", "argument `causal`",
       [&] { minference_attention(q, k.narrow(2, 0, 64), v.narrow(2, 0, 64), ok); }},
      {"gqa", "must be a multiple",
       [&] {
         minference_attention(q, at::randn({1, 3, 128, 32}), at::randn({1, 3, 128, 32}), ok);
       }},
      {"dtype", "argument `k`: expected the dtype of q",
       [&] { minference_attention(q, k.to(at::kHalf), v, ok); }},
      {"v", "argument `v`: expected a defined tensor", [&] { minference_attention(q, k, at::Tensor(), ok); }},
      {"rank", "argument `q`: expected rank 4", [&] { minference_vertical_slash(q[0], k, ok); }},
      {"no_diagonal", "argument `vs.slash`: expected offset 0", [&] { vertical_slash_index(vs_no_diag); }},
      {"unsorted", "argument `vs.vertical`",
       [&] { vertical_slash_token_mask(vs_unsorted, VsCoverage::kExactTokens); }},
      {"vs_sizes", "argument `vs`: expected 1 <= seq_q <= seq_k",
       [&] {
         auto bad = vs;
         bad.seq_q = 0;
         vertical_slash_index(bad);
       }},
      {"index_shape", "argument `index`",
       [&] { vertical_slash_index_attention(q.narrow(2, 0, 64), k, v, vertical_slash_index(vs), ok); }},
      {"pattern_name", "argument `name`", [&] { parse_minference_pattern("dense"); }},
      {"target_sparsity", "argument `target_sparsity`: expected a value in [0, 1)",
       [&] { minference_attention(q, k, v, with([](auto& c) { c.target_sparsity = 1.0; })); }},
      {"budget_ratio", "argument `budget_ratio`: expected a finite value > 0, got 0",
       [&] { minference_budget_ratio(q, k, with([](auto& c) { c.budget_ratio = 0.0; })); }},
      {"index_column", "argument `index.column_index`: expected columns in [0, 64 m + seq_k - seq_q]",
       [&] {
         auto ix = vertical_slash_index(vs);
         ix.column_count = ix.column_count.clone();
         ix.column_index = ix.column_index.clone();
         ix.column_count.index_put_({0, 0, 0}, 1);
         ix.column_index.index_put_({0, 0, 0, 0}, 1);  // block 0's first diagonal key is 0
         vertical_slash_index_pairs(ix);
       }},
      {"index_tile", "argument `index.block_offset`: expected tile starts in [0, seq_k + 64 = 192)",
       [&] {
         auto ix = vertical_slash_index(vs);
         ix.block_offset = ix.block_offset.clone();
         ix.block_offset.index_put_({0, 1, 0, 0}, 192);
         vertical_slash_index_stats(ix);
       }},
      {"index_dtype", "argument `index.block_count`: expected dtype int32",
       [&] {
         auto ix = vertical_slash_index(vs);
         ix.block_count = ix.block_count.to(at::kLong);
         vertical_slash_index_pairs(ix);
       }},
  };
  for (const auto& c : cases) {
    try {
      c.call();
      ADD_FAILURE() << c.name << ": no exception";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(dynamic_cast<const Error*>(&e), nullptr) << c.name << ": not a sparge::Error";
      EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << c.name << ": " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << ": wrong exception type: " << e.what();
    }
  }
  EXPECT_EQ(parse_minference_pattern("vertical_and_slash"), Pattern::kVerticalSlash);
  EXPECT_EQ(parse_minference_pattern("stream_llm"), Pattern::kAShape);
  EXPECT_EQ(parse_minference_pattern("block_sparse"), Pattern::kBlockSparse);
  EXPECT_EQ(to_string(Pattern::kAShape), "a_shape");
}

}  // namespace
}  // namespace sparge
