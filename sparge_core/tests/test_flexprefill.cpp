// FlexPrefill baseline (sparge/flexprefill.h): an independent plain-loop float64 oracle, the dense fallback,
// full coverage, planted vertical-slash and query-aware heads, layout / GQA / device invariance,
// low-precision inputs, the split estimate / selection (one estimate, many gammas) against one call per
// gamma, and bad arguments. Fresh random inputs every run (seeds are printed on failure).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "sparge/flexprefill.h"
#include "test_util.h"

namespace sparge {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------------------
// The oracle: FlexPrefill of one (batch, query head) at a time with plain loops over float64 arrays, written
// from the algorithm text (sparge/flexprefill.h), sharing no code with the implementation.
struct OracleMask {
  at::Tensor dense;         // (B, H, nb, nb) bool
  at::Tensor query_aware;   // (B, H) bool
  at::Tensor num_v, num_s;  // (B, H) int64 (0 under the fallback)
  std::vector<double> jsd;  // B * H (NaN under the fallback)
  bool fallback = false;
};

// Tokens needed for the descending running sum to reach gamma: entries with cumulative sum <= gamma, plus 1.
int64_t cover(std::vector<double> x, double gamma) {
  std::sort(x.begin(), x.end(), std::greater<double>());
  double cum = 0.0;
  int64_t count = 0;
  for (double v : x) {
    cum += v;
    if (cum <= gamma) ++count;
  }
  return count + 1;
}

// The first `count` indices of x ordered by value descending, ties by index ascending.
std::vector<bool> top(const std::vector<double>& x, int64_t count) {
  std::vector<int64_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return x[a] > x[b]; });
  std::vector<bool> sel(x.size(), false);
  for (int64_t r = 0; r < std::min<int64_t>(count, static_cast<int64_t>(x.size())); ++r) sel[idx[r]] = true;
  return sel;
}

// Softmax of x in place.
void softmax_inplace(std::vector<double>& x) {
  const double mx = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (double& v : x) sum += (v = std::exp(v - mx));
  for (double& v : x) v /= sum;
}

OracleMask oracle(const at::Tensor& q_in, const at::Tensor& k_in, const FlexPrefillConfig& c) {
  const auto q = q_in.to(at::kDouble).contiguous(), k = k_in.to(at::kDouble).contiguous();
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3), Hkv = k.size(1), G = H / Hkv;
  const int64_t bs = c.block, nb = (N + bs - 1) / bs;
  const double* qp = q.data_ptr<double>();
  const double* kp = k.data_ptr<double>();
  auto Q = [&](int64_t b, int64_t h, int64_t t, int64_t d) { return qp[((b * H + h) * N + t) * D + d]; };
  auto K = [&](int64_t b, int64_t h, int64_t t, int64_t d) { return kp[((b * Hkv + h) * N + t) * D + d]; };
  OracleMask out;
  out.dense = at::zeros({B, H, nb, nb}, at::kBool);
  out.query_aware = at::zeros({B, H}, at::kBool);
  out.num_v = at::zeros({B, H}, at::kLong);
  out.num_s = at::zeros({B, H}, at::kLong);
  out.jsd.assign(B * H, std::nan(""));
  auto mask = out.dense.accessor<bool, 4>();
  const int64_t min_blocks = (c.min_budget + bs - 1) / bs;
  const int64_t max_blocks = c.max_budget ? std::min((*c.max_budget + bs - 1) / bs, nb) : nb;
  out.fallback = N <= std::max(2 * bs, min_blocks * bs);
  const double inv = 1.0 / std::sqrt(static_cast<double>(D));

  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      if (out.fallback) {
        for (int64_t i = 0; i < nb; ++i)
          for (int64_t j = 0; j <= i; ++j) mask[b][h][i][j] = true;
        continue;
      }
      const int64_t kv = h / G, n = std::min(bs, N);
      // Last queries, scaled; their causal attention rows.
      std::vector<std::vector<double>> P(n, std::vector<double>(N, 0.0));
      std::vector<double> mean_q(D, 0.0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t t = N - n + i;
        std::vector<double> row(t + 1);
        for (int64_t j = 0; j <= t; ++j) {
          double s = 0.0;
          for (int64_t d = 0; d < D; ++d) s += Q(b, h, t, d) * inv * K(b, kv, j, d);
          row[j] = s;
        }
        softmax_inplace(row);
        for (int64_t j = 0; j <= t; ++j) P[i][j] = row[j];
        for (int64_t d = 0; d < D; ++d) mean_q[d] += Q(b, h, t, d) * inv / static_cast<double>(n);
      }
      std::vector<double> vert(N, 0.0), slash(N, 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < N; ++j) vert[j] += P[i][j] / static_cast<double>(n);
      for (int64_t o = 0; o < N; ++o)
        for (int64_t i = 0; i < n; ++i) {
          const int64_t j = N - n + i - o;
          if (j >= 0) slash[o] += P[i][j] / static_cast<double>(n);
        }
      int64_t nv = std::min(std::max(cover(vert, c.gamma) / bs + 1, min_blocks), max_blocks);
      int64_t ns = std::min(std::max(cover(slash, c.gamma) / bs + 1, min_blocks), max_blocks);

      std::vector<double> vblk(nb, 0.0), sblk(nb, 0.0);
      for (int64_t j = 0; j < N; ++j) vblk[j / bs] += vert[j];
      for (int64_t o = 0; o < N; ++o) sblk[nb - 1 - (N - 1 - o) / bs] += slash[o];

      // Pooled keys and queries (means of the valid rows).
      auto pooled = [&](auto&& X, int64_t blk) {
        std::vector<double> m(D, 0.0);
        const int64_t r0 = blk * bs, r1 = std::min(N, r0 + bs);
        for (int64_t t = r0; t < r1; ++t)
          for (int64_t d = 0; d < D; ++d) m[d] += X(t, d) / static_cast<double>(r1 - r0);
        return m;
      };
      std::vector<std::vector<double>> kbar(nb), qbar(nb);
      for (int64_t j = 0; j < nb; ++j) {
        kbar[j] = pooled([&](int64_t t, int64_t d) { return K(b, kv, t, d); }, j);
        qbar[j] = pooled([&](int64_t t, int64_t d) { return Q(b, h, t, d) * inv; }, j);
      }
      auto dot = [&](const std::vector<double>& x, const std::vector<double>& y) {
        double s = 0.0;
        for (int64_t d = 0; d < D; ++d) s += x[d] * y[d];
        return s;
      };
      std::vector<double> est(nb);
      for (int64_t j = 0; j < nb; ++j) est[j] = dot(mean_q, kbar[j]);
      softmax_inplace(est);
      const double vsum = std::accumulate(vblk.begin(), vblk.end(), 0.0);
      double kl_e = 0.0, kl_v = 0.0;
      for (int64_t j = 0; j < nb; ++j) {
        const double pe = est[j], pv = vblk[j] / vsum, m = 0.5 * (pe + pv);
        if (pe > 0) kl_e += pe * std::log(pe / m);
        if (pv > 0) kl_v += pv * std::log(pv / m);
      }
      const double jsd = std::sqrt(std::max(0.0, 0.5 * kl_e + 0.5 * kl_v));
      const bool qa = jsd < c.tau;
      out.jsd[b * H + h] = jsd;
      if (qa) nv = ns = min_blocks;
      nv = std::max<int64_t>(nv, 1);
      ns = std::max<int64_t>(ns, 1);
      out.query_aware[b][h] = qa;
      out.num_v[b][h] = nv;
      out.num_s[b][h] = ns;

      vblk[0] = kInf;
      sblk[0] = kInf;
      const auto vsel = top(vblk, nv), ssel = top(sblk, ns);
      for (int64_t i = 0; i < nb; ++i)
        for (int64_t j = 0; j <= i; ++j) mask[b][h][i][j] = vsel[j] || ssel[i - j];

      if (qa) {
        std::vector<double> flat(nb * nb, 0.0);
        for (int64_t i = 0; i < nb; ++i) {
          std::vector<double> row(i + 1);
          for (int64_t j = 0; j <= i; ++j) row[j] = dot(qbar[i], kbar[j]);
          softmax_inplace(row);
          for (int64_t j = 0; j <= i; ++j) flat[i * nb + j] = row[j];
        }
        std::vector<int64_t> idx(nb * nb);
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int64_t x, int64_t y) { return flat[x] > flat[y]; });
        double cum = 0.0;
        for (int64_t e : idx) {
          cum += flat[e];
          const int64_t i = e / nb, j = e % nb;
          if (cum <= c.gamma * static_cast<double>(nb) && j <= i) mask[b][h][i][j] = true;
        }
      }
    }
  return out;
}

// ---------------------------------------------------------------------------------------------------------

FlexPrefillConfig make_config(double gamma, double tau, int64_t min_budget, std::optional<int64_t> max_budget,
                              int64_t block = 128) {
  FlexPrefillConfig c;
  c.gamma = gamma;
  c.tau = tau;
  c.min_budget = min_budget;
  c.max_budget = max_budget;
  c.block = block;
  return c;
}

at::Tensor full_causal(int64_t b, int64_t h, int64_t n, int64_t bs) {
  return test::full_mask(b, h, n, n, bs, bs, true).dense;
}

// Inputs: kStructured = structured_qkv (local attention plus a sink), kRandom = standard normal (diffuse
// attention), kMixed = batch entry 0 structured, entry 1 random (both head kinds in one call). B 2, Hq 4, Hkv
// 2, D 64, float64.
enum Kind { kStructured, kRandom, kMixed };

QKV inputs_of(Kind kind, int64_t n, uint64_t seed) {
  const auto f64 = at::TensorOptions(at::kDouble);
  StructuredSpec spec;
  spec.batch = 2;
  spec.heads_q = 4;
  spec.heads_kv = 2;
  spec.seq_q = spec.seq_k = n;
  QKV in = kind == kRandom ? random_qkv(2, 4, 2, n, n, 64, seed, f64) : structured_qkv(spec, seed, f64);
  if (kind == kMixed) {
    const auto rnd = random_qkv(2, 4, 2, n, n, 64, seed + 1, f64);
    in.q[1].copy_(rnd.q[1]);
    in.k[1].copy_(rnd.k[1]);
    in.v[1].copy_(rnd.v[1]);
  }
  return in;
}

struct OracleCase {
  int64_t n;
  FlexPrefillConfig cfg;
  Kind kind;
};

const std::vector<OracleCase>& oracle_cases() {
  static const std::vector<OracleCase> cases = {
      {1000, make_config(0.9, 0.1, 256, std::nullopt), kStructured},
      {1300, make_config(0.9, 0.1, 256, std::nullopt), kMixed},
      {2048, make_config(0.9, 0.1, 256, std::nullopt), kMixed},
      {2048, make_config(0.6, 0.0, 128, 512), kStructured},  // every head vertical-slash, max_budget clamps
      {1300, make_config(0.95, 10.0, 128, std::nullopt), kStructured},  // every head query-aware
      {2048, make_config(0.9, 10.0, 384, std::nullopt), kRandom},       // random inputs, query-aware
      {1300, make_config(0.8, 0.0, 0, std::nullopt), kRandom},       // min_budget 0: budgets still >= 1 block
      {1000, make_config(0.9, 0.1, 128, std::nullopt, 64), kMixed},  // another block size, tail of 40
      {1300, make_config(0.5, 0.2, 256, 256), kStructured},          // max_budget == min_budget
  };
  return cases;
}

std::string describe(const OracleCase& tc) {
  return "N " + std::to_string(tc.n) + " gamma " + std::to_string(tc.cfg.gamma) + " tau " +
         std::to_string(tc.cfg.tau) + " block " + std::to_string(tc.cfg.block) + " kind " +
         std::to_string(static_cast<int>(tc.kind));
}

TEST(FlexPrefill, MatchesBruteForceOracle) {
  int64_t vs_heads = 0, qa_heads = 0;
  for (const auto& tc : oracle_cases()) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + describe(tc));
    const auto in = inputs_of(tc.kind, tc.n, seed);
    const auto got = flexprefill_block_mask(in.q, in.k, tc.cfg);
    const auto want = oracle(in.q, in.k, tc.cfg);
    ASSERT_FALSE(want.fallback);
    ASSERT_FALSE(got.dense_fallback);
    EXPECT_TRUE(got.query_aware.equal(want.query_aware)) << got.query_aware << want.query_aware;
    EXPECT_TRUE(got.num_vertical.equal(want.num_v)) << got.num_vertical << want.num_v;
    EXPECT_TRUE(got.num_slash.equal(want.num_s)) << got.num_slash << want.num_s;
    for (int64_t e = 0; e < 8; ++e)
      EXPECT_NEAR(got.jsd.flatten()[e].item<double>(), want.jsd[e], 1e-9) << "head " << e;
    const auto differ = (got.mask.dense != want.dense);
    EXPECT_FALSE(differ.any().item<bool>()) << differ.sum().item<int64_t>() << " blocks differ";
    const auto qa = got.query_aware.sum().item<int64_t>();
    qa_heads += qa;
    vs_heads += 8 - qa;
    // Structured heads have jsd ~0.15-0.5 at N = 2048, random ones ~0.05: both kinds in one call.
    if (tc.kind == kMixed && tc.n == 2048) {
      EXPECT_GT(qa, 0);
      EXPECT_LT(qa, 8);
    }
    std::printf(
        "N %lld block %lld gamma %.2f tau %.2f: %lld/8 heads query-aware (jsd %.3f..%.3f), block density "
        "%.3f\n",
        static_cast<long long>(tc.n), static_cast<long long>(tc.cfg.block), tc.cfg.gamma, tc.cfg.tau,
        static_cast<long long>(qa), got.jsd.min().item<double>(), got.jsd.max().item<double>(),
        got.mask.dense.to(at::kDouble).mean().item<double>());
    // The mask is applied as given: the attention equals float64 attention under the token mask.
    if (tc.n == 1300 && tc.cfg.tau == 0.2) {
      const auto r = flexprefill_attention(in.q, in.k, in.v, tc.cfg);
      const auto ref = test::masked_attention_f64(in.q, in.k, in.v, test::token_mask(got.mask, true), 0.125);
      EXPECT_LT(relative_l1(r.out, ref), 1e-10);
      EXPECT_EQ(r.stats.computed_blocks, got.mask.dense.sum().item<int64_t>());
      EXPECT_EQ(r.stats.valid_blocks, 8 * 11 * 12 / 2);
      EXPECT_LT(r.stats.stage1_sparsity(), 1.0);
    }
  }
  EXPECT_GT(vs_heads, 0) << "the cases must exercise vertical-slash heads";
  EXPECT_GT(qa_heads, 0) << "the cases must exercise query-aware heads";
}

TEST(FlexPrefill, DenseFallbackForShortInputs) {
  struct Case {
    int64_t n, min_budget;
    bool fallback;
  };
  // Threshold max(2 * 128, ceil(min_budget / 128) * 128): 256 always; 1024 for the default min_budget.
  for (const auto& tc : std::vector<Case>{{256, 0, true},
                                          {200, 0, true},
                                          {257, 0, false},
                                          {256, 1024, true},
                                          {1000, 1024, true},
                                          {1024, 1000, true},
                                          {1025, 1024, false},
                                          {1300, 1280, false},
                                          {1300, 1281, true}}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " N " + std::to_string(tc.n) + " min_budget " +
                 std::to_string(tc.min_budget));
    auto cfg = flexprefill_preset("library");
    cfg.min_budget = tc.min_budget;
    EXPECT_EQ(tc.n <= flexprefill_dense_threshold(cfg), tc.fallback);
    const auto in = random_qkv(2, 4, 2, tc.n, tc.n, 64, seed, at::TensorOptions(at::kDouble));
    const auto m = flexprefill_block_mask(in.q, in.k, cfg);
    EXPECT_EQ(m.dense_fallback, tc.fallback);
    if (!tc.fallback) continue;
    const int64_t nb = (tc.n + 127) / 128;
    EXPECT_TRUE(m.mask.dense.equal(full_causal(2, 4, tc.n, 128)));
    EXPECT_FALSE(m.query_aware.any().item<bool>());
    const auto r = flexprefill_attention(in.q, in.k, in.v, cfg);
    const auto ref = dense_attention_f64(in.q, in.k, in.v, true);
    EXPECT_LT(relative_l1(r.out, ref.out), 1e-6);
    EXPECT_EQ(r.stats.computed_blocks, 8 * nb * (nb + 1) / 2);
    EXPECT_DOUBLE_EQ(r.stats.stage1_sparsity(), 0.0);
  }
}

TEST(FlexPrefill, GammaOneCoversEverything) {
  // gamma = 1: the budgets reach every token, so every vertical block is kept (tau = 0: no head is
  // query-aware, whose global coverage at gamma = 1 would depend on rounding).
  for (int64_t n : {1000, 1300, 2048}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " N " + std::to_string(n));
    StructuredSpec spec;
    spec.batch = 2;
    spec.heads_q = 4;
    spec.heads_kv = 2;
    spec.seq_q = spec.seq_k = n;
    const auto in = structured_qkv(spec, seed, at::TensorOptions(at::kDouble));
    const auto cfg = make_config(1.0, 0.0, 256, std::nullopt);
    const auto m = flexprefill_block_mask(in.q, in.k, cfg);
    EXPECT_FALSE(m.dense_fallback);
    EXPECT_TRUE(m.mask.dense.equal(full_causal(2, 4, n, 128)));
    const auto r = flexprefill_attention(in.q, in.k, in.v, cfg);
    EXPECT_LT(relative_l1(r.out, dense_attention_f64(in.q, in.k, in.v, true).out), 1e-6);
  }
}

// Two heads of N = 2048 (16 blocks of 128), D = 64:
//   head 0, vertical-slash: a smooth latent shared by Q and K (attention near the diagonal) plus one key
//     (token kVertical) that every query attends to strongly, along a dimension the latent does not use;
//   head 1, query-aware: key block j holds direction e_j (orthonormal), query block i holds e_pi(i) with
//     pi(i) in [1, i - 1] (i >= 2): each query block attends to its own earlier key block, so no vertical or
//     slash explains the map, but block pooling does; the pooled estimate of the last block agrees with its
//     true attention (the JS divergence is ~0), which is FlexPrefill's query-aware criterion.
constexpr int64_t kN = 2048, kD = 64, kNb = 16, kVertical = 5 * 128 + 37;

struct Planted {
  at::Tensor q, k, v;
  std::vector<int64_t> pi;  // head 1: the key block of each query block
};

Planted planted(uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opt = at::TensorOptions(at::kDouble);
  StructuredSpec spec;
  spec.heads_q = spec.heads_kv = 1;
  spec.seq_q = spec.seq_k = kN;
  spec.head_dim = kD;
  spec.sink_tokens = 0;
  const auto base = structured_qkv(spec, seed ^ 0x9e3779b97f4a7c15ULL, opt);
  auto q0 = base.q.clone(), k0 = base.k.clone();
  q0.select(-1, kD - 1).fill_(3.0);  // every query: 3 e_63
  k0.select(-1, kD - 1).zero_();
  k0[0][0][kVertical][kD - 1] = 25.0;  // the vertical key: score 3 * 25 / 8 = 9.4

  const auto dirs = std::get<0>(at::linalg_qr(at::randn({kD, kNb}, gen, opt)));  // (D, nb) orthonormal
  std::vector<int64_t> pi(kNb, 0);
  for (int64_t i = 2; i < kNb; ++i)
    pi[i] = 1 + at::randint(i - 1, {1}, gen, at::TensorOptions(at::kLong)).item<int64_t>();
  auto q1 = 0.05 * at::randn({1, 1, kN, kD}, gen, opt), k1 = 0.05 * at::randn({1, 1, kN, kD}, gen, opt);
  for (int64_t i = 0; i < kNb; ++i) {
    k1[0][0].narrow(0, i * 128, 128).add_(8.0 * dirs.select(1, i));      // keys of block i: 8 e_i
    q1[0][0].narrow(0, i * 128, 128).add_(8.0 * dirs.select(1, pi[i]));  // queries: 8 e_pi(i), score 8
  }
  Planted p;
  p.q = at::cat({q0, q1}, 1);
  p.k = at::cat({k0, k1}, 1);
  p.v = at::randn({1, 2, kN, kD}, gen, opt);
  p.pi = pi;
  return p;
}

TEST(FlexPrefill, PlantedVerticalSlashHead) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto p = planted(seed);
  // nV = (tokens covering gamma) // 128 + 1 with key block 0 forced first: a vertical holding most of the
  // last queries' mass makes nV = 1 (block 0 only), a FlexPrefill property. min_budget 512 gives 4 slots:
  // block 0, and 3 for the 15 other key blocks, of which the local blocks next to the diagonal (14, 15)
  // usually take two; the vertical's block must win a slot against the other 12.
  const auto cfg = make_config(0.9, 0.1, 512, std::nullopt);
  const auto m = flexprefill_block_mask(p.q, p.k, cfg);
  const auto d = m.mask.dense[0][0];
  SCOPED_TRACE("jsd " + std::to_string(m.jsd[0][0].item<double>()) + " nV " +
               std::to_string(m.num_vertical[0][0].item<int64_t>()) + " nS " +
               std::to_string(m.num_slash[0][0].item<int64_t>()));
  EXPECT_FALSE(m.query_aware[0][0].item<bool>()) << "classified vertical-slash";
  const int64_t vb = kVertical / 128;
  for (int64_t i = 0; i < kNb; ++i) {
    EXPECT_TRUE(d[i][i].item<bool>()) << "diagonal block " << i;
    EXPECT_TRUE(d[i][0].item<bool>()) << "first key block, row " << i;
    if (i >= vb) {
      EXPECT_TRUE(d[i][vb].item<bool>()) << "vertical's key block, row " << i;
    }
  }
  EXPECT_LT(d.sum().item<int64_t>(), kNb * (kNb + 1) / 2) << "sparse";
  // Oracle agreement on the planted input too.
  EXPECT_TRUE(m.mask.dense.equal(oracle(p.q, p.k, cfg).dense));
}

TEST(FlexPrefill, PlantedQueryAwareHead) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto p = planted(seed);
  auto cfg = make_config(0.9, 0.1, 128, std::nullopt);
  const auto m = flexprefill_block_mask(p.q, p.k, cfg);
  SCOPED_TRACE("jsd " + std::to_string(m.jsd[0][1].item<double>()));
  EXPECT_TRUE(m.query_aware[0][1].item<bool>()) << "classified query-aware";
  EXPECT_EQ(m.num_vertical[0][1].item<int64_t>(), 1);
  EXPECT_EQ(m.num_slash[0][1].item<int64_t>(), 1);
  // Every pooled row is one-hot at pi(i) (probability >= e^8 / (e^8 + 15) > 0.99, all other entries < 0.01),
  // so the global coverage keeps the floor(gamma * nb) = 14 largest of those, rows 0 and 1 included; at least
  // 12 of the rows i >= 2 keep their block (i, pi(i)), which no vertical (budget 1: key block 0) or slash
  // (budget 1: the diagonal) covers.
  auto kept = [&](const FlexPrefillMask& fm) {
    int64_t n = 0;
    for (int64_t i = 2; i < kNb; ++i) n += fm.mask.dense[0][1][i][p.pi[i]].item<bool>();
    return n;
  };
  EXPECT_GE(kept(m), 12);
  // Forced vertical-slash (tau = 0) keeps far fewer of them.
  cfg.tau = 0.0;
  const auto vs = flexprefill_block_mask(p.q, p.k, cfg);
  EXPECT_FALSE(vs.query_aware[0][1].item<bool>());
  EXPECT_LT(kept(vs), kept(m));
}

TEST(FlexPrefill, LayoutGqaAndBatchInvariance) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  StructuredSpec spec;
  spec.batch = 2;
  spec.heads_q = 4;
  spec.heads_kv = 2;
  spec.seq_q = spec.seq_k = 1300;
  const auto in = structured_qkv(spec, seed, at::TensorOptions(at::kDouble));
  const auto cfg = make_config(0.9, 0.1, 256, std::nullopt);
  const auto hnd = flexprefill_block_mask(in.q, in.k, cfg);
  // NHD input: the same mask, the output transposed.
  auto ncfg = cfg;
  ncfg.layout = Layout::kNHD;
  const auto qn = in.q.transpose(1, 2).contiguous(), kn = in.k.transpose(1, 2).contiguous(),
             vn = in.v.transpose(1, 2).contiguous();
  EXPECT_TRUE(flexprefill_block_mask(qn, kn, ncfg).mask.dense.equal(hnd.mask.dense));
  const auto out_nhd = flexprefill_attention(qn, kn, vn, ncfg).out;
  const auto out_hnd = flexprefill_attention(in.q, in.k, in.v, cfg).out;
  EXPECT_LT(relative_l1(out_nhd.transpose(1, 2), out_hnd), 1e-12);
  // GQA reads kv head h / 2: the same as materialized repeated heads.
  const auto mha = flexprefill_block_mask(in.q, in.k.repeat_interleave(2, 1), cfg);
  EXPECT_TRUE(mha.mask.dense.equal(hnd.mask.dense));
  EXPECT_TRUE(mha.query_aware.equal(hnd.query_aware));
  // Batch entries are independent: each alone gives its slice of the batched mask.
  for (int64_t b = 0; b < 2; ++b) {
    const auto one = flexprefill_block_mask(in.q.narrow(0, b, 1), in.k.narrow(0, b, 1), cfg);
    EXPECT_TRUE(one.mask.dense.equal(hnd.mask.dense.narrow(0, b, 1))) << "batch " << b;
  }
}

TEST(FlexPrefill, LowPrecisionInputs) {
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + test::dtype_name(dtype));
    StructuredSpec spec;
    spec.batch = 2;
    spec.heads_q = 4;
    spec.heads_kv = 2;
    spec.seq_q = spec.seq_k = 1300;
    const auto in = structured_qkv(spec, seed, at::TensorOptions(dtype));
    auto cfg = flexprefill_preset("paper_llama31");
    cfg.min_budget = 256;
    cfg.return_lse = true;
    const auto m = flexprefill_block_mask(in.q, in.k, cfg);
    EXPECT_EQ(m.jsd.scalar_type(), at::kDouble);
    const auto valid = causal_valid_blocks(1300, 1300, 128, 128, true, at::TensorOptions());
    const auto diag = causal_diagonal_blocks(1300, 1300, 128, 128, true, at::TensorOptions());
    EXPECT_FALSE((m.mask.dense & valid.logical_not()).any().item<bool>()) << "causal-valid blocks only";
    EXPECT_TRUE((m.mask.dense | diag.logical_not()).all().item<bool>()) << "diagonal kept";
    EXPECT_TRUE(m.mask.dense.select(-1, 0).all().item<bool>()) << "first key block kept";
    const auto r = flexprefill_attention(in.q, in.k, in.v, cfg);
    EXPECT_EQ(r.out.scalar_type(), dtype);
    EXPECT_TRUE(at::isfinite(r.out).all().item<bool>());
    EXPECT_TRUE(at::isfinite(r.lse).all().item<bool>());
    EXPECT_GE(r.stats.prediction_ms, 0.0);
    EXPECT_EQ(r.stats.block_q, 128);
    // Same mask as the float64 path except near threshold ties: allow 2% of the rows to differ.
    const auto m64 = flexprefill_block_mask(in.q.to(at::kDouble), in.k.to(at::kDouble), cfg);
    const auto rows = (m.mask.dense != m64.mask.dense).any(-1);
    std::printf("%s: %lld of %lld mask rows differ from the float64 path\n", test::dtype_name(dtype).c_str(),
                static_cast<long long>(rows.sum().item<int64_t>()), static_cast<long long>(rows.numel()));
    EXPECT_LE(rows.sum().item<int64_t>(), std::max<int64_t>(2, rows.numel() / 50));
  }
}

TEST(FlexPrefill, Presets) {
  const auto lib = flexprefill_preset("library");
  EXPECT_EQ(lib.block, 128);
  EXPECT_DOUBLE_EQ(lib.gamma, 0.9);
  EXPECT_DOUBLE_EQ(lib.tau, 0.1);
  EXPECT_EQ(lib.min_budget, 1024);
  EXPECT_FALSE(lib.max_budget.has_value());
  EXPECT_TRUE(lib.causal);
  const auto paper = flexprefill_preset("paper_llama31");
  EXPECT_DOUBLE_EQ(paper.gamma, 0.95);
  EXPECT_EQ(paper.min_budget, 1024);
  EXPECT_EQ(flexprefill_dense_threshold(lib), 1024);
}

// Two FlexPrefill results are the same bit for bit: the mask (dense, counts, indices) and every per-head
// field.
void expect_identical(const FlexPrefillMask& a, const FlexPrefillMask& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.dense_fallback, b.dense_fallback);
  EXPECT_EQ(a.mask.block_q, b.mask.block_q);
  EXPECT_EQ(a.mask.seq_q, b.mask.seq_q);
  ASSERT_EQ(a.mask.dense.sizes(), b.mask.dense.sizes());
  EXPECT_TRUE(a.mask.dense.equal(b.mask.dense))
      << (a.mask.dense != b.mask.dense).sum().item<int64_t>() << " blocks differ";
  EXPECT_TRUE(a.mask.counts.equal(b.mask.counts));
  EXPECT_TRUE(a.mask.indices.equal(b.mask.indices));
  EXPECT_TRUE(a.query_aware.equal(b.query_aware));
  for (const auto& [x, y, name] :
       {std::tuple{a.jsd, b.jsd, "jsd"}, std::tuple{a.num_vertical, b.num_vertical, "num_vertical"},
        std::tuple{a.num_slash, b.num_slash, "num_slash"}}) {
    ASSERT_EQ(x.defined(), y.defined()) << name;
    if (x.defined()) {
      EXPECT_TRUE(x.equal(y)) << name << "\n" << x << "\n" << y;
    }
  }
}

// Gammas visited out of order and repeated: a selection that changed the shared estimate would show.
const std::vector<double> kGammas = {0.9, 0.3, 1.0, 0.05, 0.8, 0.3};

// The split path (one flexprefill_estimate, many flexprefill_select) against the one-call path (a fresh
// flexprefill_block_mask per gamma, estimating again each time): bit-identical results on the oracle cases'
// inputs (random, structured, mixed heads; other blocks, budgets and tau), the dense fallback and the planted
// vertical-slash / query-aware heads.
TEST(FlexPrefill, SplitPathEqualsOneCallPathBitForBit) {
  struct Input {
    std::string name;
    at::Tensor q, k;
    FlexPrefillConfig cfg;
  };
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<Input> inputs;
  uint64_t i = 0;
  for (const auto& tc : oracle_cases()) {
    const auto in = inputs_of(tc.kind, tc.n, seed + i++);
    inputs.push_back({describe(tc), in.q, in.k, tc.cfg});
  }
  const auto p = planted(seed);
  inputs.push_back({"planted, min_budget 512", p.q, p.k, make_config(0.9, 0.1, 512, std::nullopt)});
  inputs.push_back({"planted, min_budget 128", p.q, p.k, make_config(0.9, 0.1, 128, std::nullopt)});
  StructuredSpec spec;  // float32 math path: 1 x 8 query heads (2 kv) x 2048 tokens
  spec.heads_q = 8;
  spec.heads_kv = 2;
  spec.seq_q = spec.seq_k = 2048;
  const auto f32 = structured_qkv(spec, seed, at::TensorOptions(at::kFloat));
  inputs.push_back({"float32 structured", f32.q, f32.k, make_config(0.9, 0.1, 256, std::nullopt)});
  const auto short_in = inputs_of(kRandom, 900, seed);
  inputs.push_back({"dense fallback", short_in.q, short_in.k, flexprefill_preset("library")});
  int64_t qa_heads = 0, vs_heads = 0;
  for (const auto& [name, q, k, cfg] : inputs) {
    SCOPED_TRACE(name);
    const auto estimate = flexprefill_estimate(q, k, cfg);
    std::vector<int64_t> kept;
    for (double g : kGammas) {
      auto one = cfg;
      one.gamma = g;
      const auto split = flexprefill_select(estimate, g);
      expect_identical(split, flexprefill_block_mask(q, k, one), "gamma " + std::to_string(g));
      kept.push_back(split.mask.dense.sum().item<int64_t>());
    }
    if (estimate.dense_fallback) {
      EXPECT_EQ(name, "dense fallback");
      continue;
    }
    qa_heads += estimate.query_aware.sum().item<int64_t>();
    vs_heads += estimate.query_aware.logical_not().sum().item<int64_t>();
    // The gammas must give different masks for the comparison to mean something (unless the budgets are
    // pinned by max_budget <= min_budget).
    if (!cfg.max_budget || *cfg.max_budget > cfg.min_budget) {
      EXPECT_LT(*std::min_element(kept.begin(), kept.end()), *std::max_element(kept.begin(), kept.end()));
    }
  }
  EXPECT_GT(qa_heads, 0) << "query-aware heads exercised";
  EXPECT_GT(vs_heads, 0) << "vertical-slash heads exercised";
}

// The runner's equal-sparsity mode: the bisection over selections from one estimate visits the same gammas
// and returns the same mask as the bisection over fresh flexprefill_block_mask calls (the search as it ran
// before the split), on structured, mixed and planted inputs.
TEST(FlexPrefill, EqualSparsitySearchEstimatesOnce) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  struct Input {
    std::string name;
    at::Tensor q, k;
    FlexPrefillConfig cfg;
  };
  const auto structured = inputs_of(kStructured, 2048, seed), mixed = inputs_of(kMixed, 2048, seed + 1);
  const auto p = planted(seed + 2);
  const std::vector<Input> inputs = {
      {"structured", structured.q, structured.k, make_config(0.9, 0.1, 128, std::nullopt)},
      {"mixed", mixed.q, mixed.k, make_config(0.9, 0.1, 128, std::nullopt)},
      {"planted", p.q, p.k, make_config(0.9, 0.1, 128, std::nullopt)},
  };
  for (const auto& [name, q, k, cfg] : inputs)
    for (double target : name == "structured" ? std::vector<double>{0.3, 0.7} : std::vector<double>{0.5}) {
      SCOPED_TRACE(name + " target " + std::to_string(target));
      std::vector<double> old_knobs, new_knobs;
      auto fresh = cfg;
      const auto t0 = std::chrono::steady_clock::now();
      const auto old_mask = mask_at_token_sparsity(
          [&](double g) {
            old_knobs.push_back(g);
            fresh.gamma = g;
            return flexprefill_block_mask(q, k, fresh).mask;
          },
          1e-3, 1.0, target, true);
      const auto t1 = std::chrono::steady_clock::now();
      const auto estimate = flexprefill_estimate(q, k, cfg);
      const auto t2 = std::chrono::steady_clock::now();
      const auto new_mask = mask_at_token_sparsity(
          [&](double g) {
            new_knobs.push_back(g);
            return flexprefill_select(estimate, g).mask;
          },
          1e-3, 1.0, target, true);
      const auto t3 = std::chrono::steady_clock::now();
      const auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
      EXPECT_EQ(old_knobs, new_knobs) << "the searches visit the same gammas";
      EXPECT_GT(new_knobs.size(), 2u);
      EXPECT_TRUE(old_mask.dense.equal(new_mask.dense));
      EXPECT_TRUE(old_mask.indices.equal(new_mask.indices));
      std::printf(
          "%s target %.1f: token sparsity %.3f after %zu selections; search %.1f ms re-estimating, %.1f ms "
          "estimate + %.1f ms selections\n",
          name.c_str(), target, token_sparsity(new_mask, true), new_knobs.size(), ms(t0, t1), ms(t1, t2),
          ms(t2, t3));
    }
}

TEST(FlexPrefill, CudaMatchesCpu) {
  if (!at::hasCUDA())
    GTEST_SKIP() << "no CUDA device on this machine: the FlexPrefill GPU check runs on the GPU machine";
  for (auto dtype : {at::kDouble, at::kBFloat16}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + test::dtype_name(dtype));
    StructuredSpec spec;
    spec.batch = 2;
    spec.heads_q = 8;
    spec.heads_kv = 2;
    spec.seq_q = spec.seq_k = 3000;
    const auto in = structured_qkv(spec, seed, at::TensorOptions(dtype));
    const auto cfg = make_config(0.9, 0.1, 512, std::nullopt);
    const auto cpu = flexprefill_block_mask(in.q, in.k, cfg);
    const auto gpu = flexprefill_block_mask(in.q.cuda(), in.k.cuda(), cfg);
    EXPECT_TRUE(gpu.mask.dense.is_cuda());
    // GPU ops round differently from CPU ops: a row on a threshold tie may differ; allow 1% of the rows.
    const auto rows = (gpu.mask.dense.cpu() != cpu.mask.dense).any(-1);
    EXPECT_LE(rows.sum().item<int64_t>(), std::max<int64_t>(1, rows.numel() / 100));
    EXPECT_LE((gpu.query_aware.cpu() != cpu.query_aware).sum().item<int64_t>(), 1);
    const auto r = flexprefill_attention(in.q.cuda(), in.k.cuda(), in.v.cuda(), cfg);
    EXPECT_TRUE(at::isfinite(r.out).all().item<bool>());
  }
}

TEST(FlexPrefill, BadArgumentsThrow) {
  const auto f = at::TensorOptions(at::kFloat);
  const auto q = at::randn({1, 4, 300, 32}, f), k = at::randn({1, 2, 300, 32}, f),
             v = at::randn({1, 2, 300, 32}, f);
  auto with = [](auto edit) {
    FlexPrefillConfig c;
    edit(c);
    return c;
  };
  const FlexPrefillConfig ok;
  struct Bad {
    std::string expect;
    std::function<void()> call;
  };
  const std::vector<Bad> cases = {
      {"argument `gamma`: expected a value in (0, 1]",
       [&] { flexprefill_block_mask(q, k, with([](auto& c) { c.gamma = 0.0; })); }},
      {"argument `gamma`", [&] { flexprefill_block_mask(q, k, with([](auto& c) { c.gamma = 1.5; })); }},
      {"argument `gamma`",
       [&] { flexprefill_block_mask(q, k, with([](auto& c) { c.gamma = std::nan(""); })); }},
      {"argument `tau`: expected a value >= 0",
       [&] { flexprefill_block_mask(q, k, with([](auto& c) { c.tau = -0.1; })); }},
      {"argument `min_budget`: expected >= 0",
       [&] { flexprefill_block_mask(q, k, with([](auto& c) { c.min_budget = -1; })); }},
      {"argument `max_budget`: expected >= 1",
       [&] { flexprefill_block_mask(q, k, with([](auto& c) { c.max_budget = 0; })); }},
      {"argument `block`: expected >= 1",
       [&] { flexprefill_block_mask(q, k, with([](auto& c) { c.block = 0; })); }},
      {"argument `causal`: expected true",
       [&] { flexprefill_block_mask(q, k, with([](auto& c) { c.causal = false; })); }},
      {"argument `scale`", [&] { flexprefill_attention(q, k, v, with([](auto& c) { c.scale = -1.0; })); }},
      {"argument `q`: expected rank 4", [&] { flexprefill_block_mask(q[0], k, ok); }},
      {"argument `q`: expected dtype", [&] { flexprefill_block_mask(q.to(at::kInt), k, ok); }},
      {"argument `k`: expected the dtype of q", [&] { flexprefill_block_mask(q, k.to(at::kHalf), ok); }},
      {"must be a multiple",
       [&] {
         flexprefill_block_mask(q, at::randn({1, 3, 300, 32}), ok);
       }},
      {"arguments `q`, `k`: expected equal sequence lengths",
       [&] { flexprefill_block_mask(q.narrow(2, 0, 200), k, ok); }},
      {"argument `v`: expected the shape of k",
       [&] { flexprefill_attention(q, k, v.narrow(2, 0, 100), ok); }},
      {"argument `v`: expected a defined tensor", [&] { flexprefill_attention(q, k, at::Tensor(), ok); }},
      {"argument `name`: expected \"library\" or \"paper_llama31\"", [] { flexprefill_preset("paper"); }},
      {"flexprefill_estimate: argument `tau`: expected a value >= 0",
       [&] { flexprefill_estimate(q, k, with([](auto& c) { c.tau = -1.0; })); }},
      {"flexprefill_estimate: arguments `q`, `k`: expected equal sequence lengths",
       [&] { flexprefill_estimate(q.narrow(2, 0, 200), k, ok); }},
      {"flexprefill_select: argument `gamma`: expected a value in (0, 1], got 0",
       [&] { flexprefill_select(flexprefill_estimate(q, k, ok), 0.0); }},
      {"flexprefill_select: argument `gamma`: expected a value in (0, 1], got 1.5",
       [&] { flexprefill_select(flexprefill_estimate(q, k, ok), 1.5); }},
      {"flexprefill_select: argument `gamma`",
       [&] { flexprefill_select(flexprefill_estimate(q, k, ok), std::nan("")); }},
      {"flexprefill_select: argument `estimate`: expected the result of flexprefill_estimate",
       [&] { flexprefill_select(FlexPrefillEstimate{}, 0.9); }},
  };
  for (const auto& bc : cases) {
    SCOPED_TRACE(bc.expect);
    try {
      bc.call();
      ADD_FAILURE() << "no exception";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(dynamic_cast<const Error*>(&e), nullptr) << "a sparge::Error";
      EXPECT_NE(std::string(e.what()).find(bc.expect), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace sparge
