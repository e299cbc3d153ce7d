// XAttention baseline: the vectorized mask against a brute-force float64 oracle written with loops, threshold
// 1 against dense attention, a planted vertical + local pattern, the forced blocks, the split estimate /
// selection (one scoring, many thresholds) against one call per threshold, and bad arguments.
#include "sparge/xattention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "test_util.h"

namespace sparge {
namespace {

// Brute-force oracle of xattention.h, steps 1-5, one (batch, head) at a time with scalar loops: antidiagonal
// sums read straight from the token-level Q.K^T, the causal rules from their token definitions, and the
// greedy selection as a sorted walk. q, k: HND. Returns (B, Hq, NQB, NKB) bool on the CPU.
at::Tensor oracle_mask(const at::Tensor& q, const at::Tensor& k, const XAttentionConfig& c) {
  const auto qd = q.to(at::kDouble).cpu(), kd = k.to(at::kDouble).cpu();
  const int64_t B = q.size(0), Hq = q.size(1), Hkv = k.size(1), nq = q.size(2), nk = k.size(2), D = q.size(3);
  const int64_t G = Hq / Hkv, S = c.stride, blk = c.block, off = nk - nq;
  const int64_t nqb = (nq + blk - 1) / blk, nkb = (nk + blk - 1) / blk, rq = (nq + S - 1) / S,
                rk = (nk + S - 1) / S;
  const double scale = c.scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  auto out = at::zeros({B, Hq, nqb, nkb}, at::kBool);
  auto o = out.accessor<bool, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const auto qk = at::matmul(qd[b][h], kd[b][h / G].t()).contiguous();
      const auto a = qk.accessor<double, 2>();
      std::vector<double> score(nqb * nkb, 0.0);
      for (int64_t r = 0; r < rq; ++r) {
        const int64_t last_q = std::min(r * S + S - 1, nq - 1);
        std::vector<double> logit(rk, -std::numeric_limits<double>::infinity());
        for (int64_t col = 0; col < rk; ++col) {
          if (c.causal && col * S > last_q + off) continue;
          double sum = 0.0;
          for (int64_t j = 0; j < S; ++j) {
            const int64_t i = r * S + S - 1 - j, m = col * S + j;
            if (i < nq && m < nk) sum += a[i][m];
          }
          logit[col] = sum * scale / static_cast<double>(S);
        }
        const double mx = *std::max_element(logit.begin(), logit.end());
        double z = 0.0;
        for (auto& x : logit) z += (x = std::exp(x - mx));
        for (int64_t col = 0; col < rk; ++col) score[(r * S / blk) * nkb + col * S / blk] += logit[col] / z;
      }
      for (int64_t i = 0; i < nqb; ++i) {
        const int64_t q_first = i * blk, q_last = std::min(q_first + blk - 1, nq - 1);
        double total = 0.0, kept = 0.0;
        std::vector<std::pair<double, int64_t>> candidates;
        std::vector<bool> valid(nkb), forced(nkb);
        for (int64_t j = 0; j < nkb; ++j) {
          const int64_t k_first = j * blk, k_last = std::min(k_first + blk - 1, nk - 1);
          valid[j] = !c.causal || k_first <= q_last + off;
          const bool diagonal = c.causal && k_last >= q_first + off && k_first <= q_last + off;
          forced[j] = valid[j] && (j == 0 || diagonal);
          const double s = score[i * nkb + j];
          total += s;
          if (forced[j]) kept += s;
          if (valid[j] && !forced[j]) candidates.emplace_back(s, j);
          o[b][h][i][j] = forced[j] || (c.threshold >= 1.0 && valid[j]);
        }
        std::sort(candidates.begin(), candidates.end(), [](const auto& x, const auto& y) {
          return x.first > y.first || (x.first == y.first && x.second < y.second);
        });
        for (const auto& [s, j] : candidates) {
          if (!(kept < c.threshold * total)) break;
          o[b][h][i][j] = true;
          kept += s;
        }
      }
    }
  return out;
}

// counts and indices agree with dense (from_dense builds them; the check guards the contract).
void expect_consistent(const BlockMask& m) {
  const auto dense = m.dense.cpu(), counts = m.counts.cpu(), idx = m.indices.cpu();
  EXPECT_TRUE(counts.equal(dense.sum(-1, false, at::kInt)));
  const auto d = dense.accessor<bool, 4>();
  const auto ix = idx.accessor<int, 4>();
  for (int64_t b = 0; b < dense.size(0); ++b)
    for (int64_t h = 0; h < dense.size(1); ++h)
      for (int64_t i = 0; i < dense.size(2); ++i) {
        int64_t n = 0;
        for (int64_t j = 0; j < dense.size(3); ++j)
          if (d[b][h][i][j]) {
            ASSERT_EQ(ix[b][h][i][n++], j);
          }
        for (; n < dense.size(3); ++n) ASSERT_EQ(ix[b][h][i][n], -1);
      }
}

struct Case {
  int64_t batch, heads_q, heads_kv, seq_q, seq_k, block, stride;
  bool causal;
  double threshold;
};

std::string describe(const Case& c) {
  std::ostringstream os;
  os << "B " << c.batch << " Hq " << c.heads_q << " Hkv " << c.heads_kv << " Nq " << c.seq_q << " Nk "
     << c.seq_k << " block " << c.block << " stride " << c.stride << (c.causal ? " causal" : " non-causal")
     << " threshold " << c.threshold;
  return os.str();
}

XAttentionConfig config_of(const Case& c) {
  XAttentionConfig x;
  x.block = c.block;
  x.stride = c.stride;
  x.causal = c.causal;
  x.threshold = c.threshold;
  return x;
}

const std::vector<Case>& oracle_cases() {
  static const std::vector<Case> cases = {
      {1, 2, 2, 1024, 1024, 128, 8, true, 0.9},   {2, 4, 2, 1000, 1000, 128, 16, true, 0.9},
      {1, 4, 2, 300, 300, 64, 8, false, 0.8},     {2, 2, 1, 300, 1000, 128, 8, true, 0.9},
      {1, 2, 2, 1000, 1024, 64, 16, false, 0.9},  {1, 4, 2, 1024, 1024, 64, 16, true, 0.8},
      {2, 4, 2, 1000, 1000, 128, 8, false, 0.95}, {1, 1, 1, 250, 250, 16, 16, true, 0.9},
      {1, 2, 1, 777, 1300, 128, 8, true, 0.5},
  };
  return cases;
}

// Random inputs whose reduced softmax is far from uniform: q scaled by 10 gives reduced logits of standard
// deviation ~3.5 (10 * 8 * sqrt(S) / S at D = 64, S = 8), so a threshold of 0.9 drops blocks.
QKV peaked_random(const Case& c, uint64_t seed, at::ScalarType dtype) {
  auto in = random_qkv(c.batch, c.heads_q, c.heads_kv, c.seq_q, c.seq_k, 64, seed, at::TensorOptions(dtype));
  in.q = in.q * 10.0;
  return in;
}

TEST(XAttention, MatchesBruteForceOracleInFloat64) {
  for (const auto& c : oracle_cases()) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + describe(c));
    const auto in = peaked_random(c, seed, at::kDouble);
    const auto m = xattention_block_mask(in.q, in.k, config_of(c));
    const auto ref = oracle_mask(in.q, in.k, config_of(c));
    ASSERT_EQ(m.dense.sizes(), ref.sizes());
    EXPECT_EQ(m.block_q, c.block);
    EXPECT_EQ(m.block_k, c.block);
    EXPECT_EQ((m.dense != ref).sum().item<int64_t>(), 0) << "blocks differing from the oracle";
    expect_consistent(m);
    if (c.threshold < 0.95) {
      EXPECT_LT(m.dense.to(at::kDouble).mean().item<double>(),
                causal_valid_blocks(c.seq_q, c.seq_k, c.block, c.block, c.causal, {})
                    .to(at::kDouble)
                    .mean()
                    .item<double>())
          << "the inputs must give some sparsity for the comparison to mean something";
    }
  }
}

TEST(XAttention, Float32MathAgreesWithTheOracle) {
  // float32 scores may flip a decision sitting within rounding of the threshold; nearly all blocks agree.
  for (const auto& c : oracle_cases()) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + describe(c));
    const auto in = peaked_random(c, seed, at::kFloat);
    const auto m = xattention_block_mask(in.q, in.k, config_of(c));
    const auto ref = oracle_mask(in.q, in.k, config_of(c));
    EXPECT_LE((m.dense != ref).to(at::kDouble).mean().item<double>(), 0.01);
  }
}

TEST(XAttention, GqaBatchAndLayoutInvariances) {
  const Case c{2, 4, 2, 700, 900, 128, 8, true, 0.9};
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto in = peaked_random(c, seed, at::kFloat);
  const auto cfg = config_of(c);
  const auto m = xattention_block_mask(in.q, in.k, cfg);
  EXPECT_TRUE(m.dense.equal(xattention_block_mask(in.q, in.k.repeat_interleave(2, 1), cfg).dense))
      << "GQA = expanded kv heads";
  for (int64_t b = 0; b < 2; ++b)
    EXPECT_TRUE(m.dense.narrow(0, b, 1).equal(
        xattention_block_mask(in.q.narrow(0, b, 1), in.k.narrow(0, b, 1), cfg).dense))
        << "batch element " << b << " alone";
  auto nhd = cfg;
  nhd.layout = Layout::kNHD;
  EXPECT_TRUE(m.dense.equal(
      xattention_block_mask(in.q.transpose(1, 2).contiguous(), in.k.transpose(1, 2).contiguous(), nhd)
          .dense));
}

TEST(XAttention, LargerThresholdKeepsASuperset) {
  const Case c{1, 4, 2, 1000, 1000, 64, 8, true, 0.0};
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto in = peaked_random(c, seed, at::kDouble);
  auto cfg = config_of(c);
  at::Tensor prev;
  for (double t : {0.3, 0.8, 0.9, 0.95, 0.99}) {
    cfg.threshold = t;
    const auto m = xattention_block_mask(in.q, in.k, cfg).dense;
    if (prev.defined()) {
      EXPECT_FALSE((prev & m.logical_not()).any().item<bool>()) << "threshold " << t;
    }
    prev = m;
  }
}

TEST(XAttention, ThresholdOneKeepsEveryValidBlockAndEqualsDense) {
  for (const auto& c : std::vector<Case>{{1, 4, 2, 1000, 1000, 128, 8, true, 1.0},
                                         {2, 2, 1, 300, 1000, 128, 16, true, 1.0},
                                         {1, 2, 2, 300, 1024, 64, 8, false, 1.0}}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + describe(c));
    const auto in = peaked_random(c, seed, at::kDouble);
    const auto r = xattention_attention(in.q, in.k, in.v, config_of(c));
    const auto valid = causal_valid_blocks(c.seq_q, c.seq_k, c.block, c.block, c.causal, {});
    const auto m = xattention_block_mask(in.q, in.k, config_of(c));
    EXPECT_TRUE(m.dense.equal(valid.expand_as(m.dense)));
    EXPECT_EQ(r.stats.computed_blocks, r.stats.valid_blocks);
    EXPECT_EQ(r.stats.stage1_sparsity(), 0.0);
    EXPECT_EQ(r.stats.block_q, c.block);
    const auto dense = dense_attention_f64(in.q, in.k, in.v, c.causal);
    EXPECT_LT(relative_l1(r.out, dense.out), 1e-6);
  }
}

TEST(XAttention, AttentionMatchesMaskedDenseAndReportsSparsity) {
  const Case c{1, 4, 2, 1000, 1000, 128, 8, true, 0.8};
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto in = peaked_random(c, seed, at::kDouble);
  const auto r = xattention_attention(in.q, in.k, in.v, config_of(c));
  const auto m = xattention_block_mask(in.q, in.k, config_of(c));
  const auto ref = test::masked_attention_f64(in.q, in.k, in.v, test::token_mask(m, true), 1.0 / 8.0);
  EXPECT_LT(relative_l2(r.out, ref), 1e-12);
  EXPECT_EQ(r.stats.computed_blocks, m.dense.sum().item<int64_t>());
  EXPECT_GT(r.stats.stage1_sparsity(), 0.0);
  EXPECT_EQ(r.stats.stage2_skipped, 0);
}

// Structured inputs (local correlation over a 256-token window, sink) plus, in head 0 only, a planted
// vertical line: one key token every query attends to strongly. The antidiagonal of every reduced row crosses
// that key's column once, so its block carries a large share of every row's mass. Head 1 shows the local
// structure alone: with a window longer than a block, the block left of the diagonal carries a good part of
// every row's mass and is selected.
constexpr int64_t kPlantedN = 2048, kPlantedVertical = 700;  // key block 5 at block 128

QKV planted_vertical(uint64_t seed) {
  constexpr int64_t kN = kPlantedN, kVertical = kPlantedVertical;
  StructuredSpec spec;
  spec.heads_q = spec.heads_kv = 2;
  spec.seq_q = spec.seq_k = kN;
  spec.window = 256;
  spec.sharpness = 8.0;
  auto in = structured_qkv(spec, seed, at::TensorOptions(at::kDouble));
  // The vertical lives on its own channel (the last), cleared first so that the latent signal cannot weaken
  // it: q . k[kVertical] gains 4 * 224 = 896, a reduced logit of 896 / (sqrt(64) * 8) = 14 in every reduced
  // row. Local cells reach ~8 * correlation (+-1.4 where the latent is large: up to ~11.5, and ~30 cells of a
  // row share the local mass), unrelated cells ~N(0, 0.3): the vertical takes most of every row's mass.
  in.q.select(-1, 63).fill_(4.0);
  in.k.select(-1, 63).zero_();
  in.k[0][0][kVertical][63].fill_(224.0);
  return in;
}

TEST(XAttention, FindsPlantedVerticalAndLocalStructure) {
  constexpr int64_t kBlock = 128;
  const int64_t vb = kPlantedVertical / kBlock, nb = kPlantedN / kBlock;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto in = planted_vertical(seed);
  XAttentionConfig cfg;  // block 128, stride 8, threshold 0.9, causal
  const auto m = xattention_block_mask(in.q, in.k, cfg);
  const auto d = m.dense.accessor<bool, 4>();
  int64_t distant = 0, distant_kept = 0, left_kept = 0;
  for (int64_t i = 0; i < nb; ++i) {
    if (i >= vb) {
      EXPECT_TRUE(d[0][0][i][vb]) << "vertical block in row " << i;
    }
    if (i >= 2) left_kept += d[0][1][i][i - 1];
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t j = 1; j + 2 < i; ++j)
        if (j != vb || h == 1) {
          ++distant;
          distant_kept += d[0][h][i][j];
        }
  }
  EXPECT_GE(left_kept, nb - 3) << "head 1: blocks left of the diagonal kept in " << left_kept << " rows";
  EXPECT_LT(static_cast<double>(distant_kept), 0.2 * static_cast<double>(distant))
      << distant_kept << " of " << distant << " distant unrelated blocks kept";
}

TEST(XAttention, SinkAndDiagonalBlocksAreAlwaysKept) {
  for (const auto& c : std::vector<Case>{{2, 4, 2, 1000, 1000, 128, 8, true, 0.05},
                                         {1, 2, 1, 300, 1000, 64, 16, true, 0.05},
                                         {1, 2, 2, 1, 500, 128, 8, true, 0.05},
                                         {1, 2, 2, 777, 777, 48, 16, true, 0.3},
                                         {1, 2, 2, 1000, 700, 128, 8, false, 0.05}}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + describe(c));
    const auto in = peaked_random(c, seed, at::kFloat);
    const auto m = xattention_block_mask(in.q, in.k, config_of(c));
    EXPECT_TRUE(m.dense.select(-1, 0).all().item<bool>()) << "sink block";
    const auto diag = causal_diagonal_blocks(c.seq_q, c.seq_k, c.block, c.block, c.causal, {});
    EXPECT_TRUE((m.dense | diag.logical_not()).all().item<bool>()) << "diagonal blocks";
    const auto valid = causal_valid_blocks(c.seq_q, c.seq_k, c.block, c.block, c.causal, {});
    EXPECT_FALSE((m.dense & valid.logical_not()).any().item<bool>()) << "no causally invalid block";
    EXPECT_TRUE(test::token_mask(m, c.causal).any(-1).all().item<bool>()) << "every query row computes a key";
    expect_consistent(m);
  }
}

// Two masks are the same bit for bit: geometry, dense view, counts and indices.
void expect_identical(const BlockMask& a, const BlockMask& b, const std::string& what) {
  EXPECT_EQ(a.block_q, b.block_q) << what;
  EXPECT_EQ(a.block_k, b.block_k) << what;
  EXPECT_EQ(a.seq_q, b.seq_q) << what;
  EXPECT_EQ(a.seq_k, b.seq_k) << what;
  ASSERT_EQ(a.dense.sizes(), b.dense.sizes()) << what;
  EXPECT_TRUE(a.dense.equal(b.dense))
      << what << ": " << (a.dense != b.dense).sum().item<int64_t>() << " blocks differ";
  EXPECT_TRUE(a.counts.equal(b.counts)) << what << ": counts";
  EXPECT_TRUE(a.indices.equal(b.indices)) << what << ": indices";
}

// Thresholds visited out of order and repeated: a selection that changed the shared scores would show.
const std::vector<double> kThresholds = {0.9, 0.3, 1.0, 0.5, 0.05, 0.8, 0.999, 0.3};

// The split path (one xattention_scores, many xattention_select) against the one-call path (a fresh
// xattention_block_mask per threshold, scoring again each time): bit-identical masks, on random inputs of
// every oracle case in float64 and float32 and on the planted vertical + local input.
TEST(XAttention, SplitPathEqualsOneCallPathBitForBit) {
  struct Input {
    std::string name;
    QKV in;
    XAttentionConfig cfg;
  };
  std::vector<Input> inputs;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  uint64_t i = 0;
  for (const auto& c : oracle_cases())
    for (auto dtype : {at::kDouble, at::kFloat})
      inputs.push_back(
          {describe(c) + " " + test::dtype_name(dtype), peaked_random(c, seed + i++, dtype), config_of(c)});
  inputs.push_back({"planted vertical", planted_vertical(seed), XAttentionConfig{}});
  for (const auto& [name, in, cfg] : inputs) {
    SCOPED_TRACE(name);
    const auto scores = xattention_scores(in.q, in.k, cfg);
    EXPECT_EQ(scores.score.dim(), 4);
    std::vector<int64_t> kept;
    for (double t : kThresholds) {
      auto one = cfg;
      one.threshold = t;
      const auto split = xattention_select(scores, t);
      expect_identical(split, xattention_block_mask(in.q, in.k, one), "threshold " + std::to_string(t));
      kept.push_back(split.dense.sum().item<int64_t>());
    }
    // The thresholds must give different masks for the comparison to mean something.
    EXPECT_LT(*std::min_element(kept.begin(), kept.end()), *std::max_element(kept.begin(), kept.end()));
  }
}

// The runner's equal-sparsity mode: the bisection over selections from one set of scores visits the same
// thresholds and returns the same mask as the bisection over fresh xattention_block_mask calls (the search as
// it ran before the split), on random (causal and not) and planted inputs, and lands near the target.
TEST(XAttention, EqualSparsitySearchScoresOnce) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  struct Input {
    std::string name;
    QKV in;
    XAttentionConfig cfg;
  };
  const Case causal{1, 4, 2, 2048, 2048, 64, 8, true, 0.9},
      bidirectional{1, 2, 2, 1500, 1500, 64, 16, false, 0.9};
  const std::vector<Input> inputs = {
      {describe(causal), peaked_random(causal, seed, at::kFloat), config_of(causal)},
      {describe(bidirectional), peaked_random(bidirectional, seed + 1, at::kFloat), config_of(bidirectional)},
      {"planted vertical", planted_vertical(seed + 2), XAttentionConfig{}},
  };
  for (const auto& [name, in, cfg] : inputs)
    for (double target : {0.3, 0.5, 0.7}) {
      SCOPED_TRACE(name + " target " + std::to_string(target));
      std::vector<double> old_knobs, new_knobs;
      auto fresh = cfg;
      const auto old_mask = mask_at_token_sparsity(
          [&](double t) {
            old_knobs.push_back(t);
            fresh.threshold = t;
            return xattention_block_mask(in.q, in.k, fresh);
          },
          1e-3, 1.0, target, cfg.causal);
      const auto scores = xattention_scores(in.q, in.k, cfg);
      const auto new_mask = mask_at_token_sparsity(
          [&](double t) {
            new_knobs.push_back(t);
            return xattention_select(scores, t);
          },
          1e-3, 1.0, target, cfg.causal);
      EXPECT_EQ(old_knobs, new_knobs) << "the searches visit the same thresholds";
      EXPECT_GT(new_knobs.size(), 2u);
      expect_identical(old_mask, new_mask, "searched mask");
      // The knob the search returns reproduces its mask through the plain method (calibrate once, run fixed).
      const auto found = knob_at_token_sparsity([&](double t) { return xattention_select(scores, t); }, 1e-3,
                                                1.0, target, cfg.causal);
      expect_identical(found.mask, new_mask, "knob search mask");
      fresh.threshold = found.knob;
      expect_identical(xattention_block_mask(in.q, in.k, fresh), new_mask, "mask at the returned threshold");
      EXPECT_NEAR(token_sparsity(new_mask, cfg.causal), target, 0.1);
    }
}

TEST(XAttention, CudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const Case c{2, 4, 2, 1000, 1000, 128, 8, true, 0.9};
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto in = peaked_random(c, seed, at::kDouble);
  const auto cpu = xattention_block_mask(in.q, in.k, config_of(c));
  const auto gpu = xattention_block_mask(in.q.cuda(), in.k.cuda(), config_of(c));
  EXPECT_TRUE(gpu.dense.is_cuda());
  EXPECT_TRUE(cpu.dense.equal(gpu.dense.cpu()));
  const auto r = xattention_attention(in.q.cuda(), in.k.cuda(), in.v.cuda(), config_of(c));
  EXPECT_LT(relative_l2(r.out.cpu(), xattention_attention(in.q, in.k, in.v, config_of(c)).out), 1e-12);
}

TEST(XAttention, BadArgumentsNameTheArgument) {
  const auto f = at::TensorOptions(at::kFloat);
  const auto q = at::randn({1, 4, 64, 32}, f), k = at::randn({1, 2, 64, 32}, f),
             v = at::randn({1, 2, 64, 32}, f);
  auto with = [](auto edit) {
    XAttentionConfig c;
    edit(c);
    return c;
  };
  const XAttentionConfig ok;
  struct Bad {
    std::string name, expect;
    std::function<void()> call;
  };
  const std::vector<Bad> cases = {
      {"rank", "argument `q`: expected rank 4", [=] { xattention_block_mask(q[0], k, ok); }},
      {"dtype", "argument `q`: expected dtype float16, bfloat16, float32 or float64",
       [=] { xattention_block_mask(q.to(at::kInt), k, ok); }},
      {"dtype_mismatch", "argument `k`: expected the dtype of q",
       [=] { xattention_block_mask(q, k.to(at::kHalf), ok); }},
      {"heads", "must be a multiple",
       [=] {
         xattention_block_mask(q, at::randn({1, 3, 64, 32}, f), ok);
       }},
      {"block", "argument `block`: expected >= 1, got 0",
       [=] { xattention_block_mask(q, k, with([](auto& c) { c.block = 0; })); }},
      {"stride_zero", "argument `stride`: expected a divisor of block (128) >= 1, got 0",
       [=] { xattention_block_mask(q, k, with([](auto& c) { c.stride = 0; })); }},
      {"stride_not_divisor", "argument `stride`: expected a divisor of block (128) >= 1, got 7",
       [=] { xattention_block_mask(q, k, with([](auto& c) { c.stride = 7; })); }},
      {"threshold_zero", "argument `threshold`: expected a value in (0, 1], got 0",
       [=] { xattention_block_mask(q, k, with([](auto& c) { c.threshold = 0.0; })); }},
      {"threshold_big", "argument `threshold`: expected a value in (0, 1], got 1.5",
       [=] { xattention_block_mask(q, k, with([](auto& c) { c.threshold = 1.5; })); }},
      {"threshold_nan", "argument `threshold`",
       [=] { xattention_block_mask(q, k, with([](auto& c) { c.threshold = std::nan(""); })); }},
      {"scale", "argument `scale`",
       [=] { xattention_block_mask(q, k, with([](auto& c) { c.scale = -1.0; })); }},
      {"causal_long_q", "argument `causal`", [=] { xattention_block_mask(q, k.narrow(2, 0, 10), ok); }},
      {"v_missing", "argument `v`: expected a defined tensor",
       [=] { xattention_attention(q, k, at::Tensor(), ok); }},
      {"v_shape", "argument `v`: expected the shape of k",
       [=] {
         xattention_attention(q, k, at::randn({1, 2, 63, 32}, f), ok);
       }},
      {"attention_stride", "xattention_attention: argument `stride`",
       [=] { xattention_attention(q, k, v, with([](auto& c) { c.stride = 3; })); }},
      {"scores_stride", "xattention_scores: argument `stride`: expected a divisor of block (128) >= 1, got 3",
       [=] { xattention_scores(q, k, with([](auto& c) { c.stride = 3; })); }},
      {"scores_rank", "xattention_scores: argument `q`: expected rank 4",
       [=] { xattention_scores(q[0], k, ok); }},
      {"select_threshold_zero", "xattention_select: argument `threshold`: expected a value in (0, 1], got 0",
       [=] { xattention_select(xattention_scores(q, k, ok), 0.0); }},
      {"select_threshold_big", "xattention_select: argument `threshold`: expected a value in (0, 1], got 2",
       [=] { xattention_select(xattention_scores(q, k, ok), 2.0); }},
      {"select_threshold_nan", "xattention_select: argument `threshold`",
       [=] { xattention_select(xattention_scores(q, k, ok), std::nan("")); }},
      {"select_empty", "xattention_select: argument `scores`: expected the result of xattention_scores",
       [=] { xattention_select(XAttentionScores{}, 0.9); }},
      {"search_target", "mask_at_token_sparsity: argument `target`: expected a value in [0, 1), got 1",
       [=] {
         mask_at_token_sparsity([&](double t) { return xattention_select(xattention_scores(q, k, ok), t); },
                                1e-3, 1.0, 1.0, true);
       }},
      {"search_range", "mask_at_token_sparsity: arguments `lo`, `hi`: expected lo < hi, got 1, 0.5",
       [=] {
         mask_at_token_sparsity([&](double t) { return xattention_select(xattention_scores(q, k, ok), t); },
                                1.0, 0.5, 0.5, true);
       }},
  };
  for (const auto& c : cases) {
    try {
      c.call();
      ADD_FAILURE() << c.name << ": no error";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(dynamic_cast<const Error*>(&e), nullptr) << c.name << ": not a sparge::Error";
      EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos)
          << c.name << ": message \"" << e.what() << "\" lacks \"" << c.expect << "\"";
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << ": wrong exception type: " << e.what();
    }
  }
}

}  // namespace
}  // namespace sparge
