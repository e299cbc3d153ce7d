// Stage 1 (block-mask prediction) on hand-made inputs whose answer is known, plus invariances.
#include <gtest/gtest.h>

#include <cmath>

#include "sparge/blocks.h"
#include "test_util.h"

namespace sparge {
namespace {

constexpr int64_t kD = 64, kBlock = 64;

// (1, 1, nb * block, D): block i's rows are dirs[i] + noise * N(0, 1) per entry.
at::Tensor rows_from_directions(const at::Tensor& dirs, int64_t block, double noise, at::Generator& gen) {
  const auto x = dirs.repeat_interleave(block, 0);
  return (x + noise * at::randn(x.sizes(), gen, x.options())).view({1, 1, -1, dirs.size(1)});
}

at::Tensor unit_rows(int64_t n, at::Generator& gen) {
  const auto d = at::randn({n, kD}, gen, at::TensorOptions(at::kDouble));
  return d / d.norm(2, {-1}, true);
}

std::vector<int64_t> row_blocks(const BlockMask& m, int64_t i, int64_t h = 0) {
  std::vector<int64_t> out;
  for (int64_t j = 0; j < m.counts[0][h][i].item<int>(); ++j)
    out.push_back(m.indices[0][h][i][j].item<int>());
  return out;
}

SpargeConfig base_config() {
  SpargeConfig c;
  c.block_q = kBlock;
  c.block_k = kBlock;
  c.simthreshd1 = {0.5};
  return c;
}

TEST(Stage1, PlantedHeavyKeyBlockIsSelected) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto u = unit_rows(1, gen);
  auto kdirs = unit_rows(8, gen);
  kdirs[5] = 6.0 * u[0];  // the heavy key block
  const auto k = rows_from_directions(kdirs, kBlock, 0.02, gen);
  const auto q = rows_from_directions((6.0 * u).expand({8, kD}).contiguous(), kBlock, 0.02, gen);
  auto cfg = base_config();
  cfg.cdfthreshd = {0.5};
  const auto m = predict_block_mask(q, k, cfg);
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(row_blocks(m, i), std::vector<int64_t>{5}) << "query block " << i;
}

TEST(Stage1, NonSimilarBlocksForceTheirRowAndColumn) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto u = unit_rows(1, gen);
  auto kdirs = unit_rows(8, gen);
  kdirs[5] = 6.0 * u[0];
  auto k = rows_from_directions(kdirs, kBlock, 0.02, gen);
  auto q = rows_from_directions((6.0 * u).expand({8, kD}).contiguous(), kBlock, 0.02, gen);
  // Key block 3 and query block 2 become white noise: mean pairwise cosine ~ 1/64, far below theta = 0.5.
  k.narrow(2, 3 * kBlock, kBlock).copy_(at::randn({1, 1, kBlock, kD}, gen, k.options()));
  q.narrow(2, 2 * kBlock, kBlock).copy_(at::randn({1, 1, kBlock, kD}, gen, q.options()));
  auto cfg = base_config();
  cfg.cdfthreshd = {0.5};
  const auto m = predict_block_mask(q, k, cfg);
  EXPECT_TRUE(m.dense.select(-1, 3).all().item<bool>()) << "the non-similar key block's column is forced";
  EXPECT_EQ(row_blocks(m, 2), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}))
      << "non-similar query row forced";
  for (int64_t i : {0, 1, 3, 7})
    EXPECT_EQ(row_blocks(m, i), (std::vector<int64_t>{3, 5})) << "query block " << i;
}

// Key blocks with constant rows give exactly known compressed scores: with q rows = sqrt(D) e0 and key block
// j rows = s_j e0 + e1, smoothing subtracts the same vector from every key, so P~ = softmax(s).
struct KnownScores {
  at::Tensor q, k;
  std::vector<int64_t> by_prob;  // key blocks in descending P~
};
KnownScores known_scores() {
  // P~ in descending order 0.4, 0.2, 0.15, 0.1, 0.05, 0.05, 0.03, 0.02 (cumulative 0.4, 0.6, 0.75, 0.85, 0.9,
  // 0.95, 0.98, 1.0), assigned to key blocks in a scrambled order; the tie (0.05) resolves to the lower block
  // index.
  const double probs[] = {0.4, 0.2, 0.15, 0.1, 0.05, 0.05, 0.03, 0.02};
  const std::vector<int64_t> block_of_rank = {3, 0, 6, 1, 2, 7, 5, 4};
  auto k = at::zeros({1, 1, 8 * kBlock, kD}, at::kDouble);
  for (int r = 0; r < 8; ++r) {
    auto blk = k.narrow(2, block_of_rank[r] * kBlock, kBlock);
    blk.select(-1, 0).fill_(std::log(probs[r]));
    blk.select(-1, 1).fill_(1.0);
  }
  auto q = at::zeros({1, 1, 2 * kBlock, kD}, at::kDouble);
  q.select(-1, 0).fill_(std::sqrt(static_cast<double>(kD)));
  return {q, k, block_of_rank};
}

std::vector<int64_t> sorted_prefix(const std::vector<int64_t>& by_prob, size_t n) {
  std::vector<int64_t> v(by_prob.begin(), by_prob.begin() + n);
  std::sort(v.begin(), v.end());
  return v;
}

TEST(Stage1, CdfAndTopkKeepTheExpectedCounts) {
  const auto s = known_scores();
  auto cfg = base_config();
  struct Expect {
    SelectMode mode;
    double value;
    bool crossing;
    size_t n;
  };
  for (const auto& e : {Expect{SelectMode::kCdf, 0.7, false, 2}, Expect{SelectMode::kCdf, 0.7, true, 3},
                        Expect{SelectMode::kCdf, 0.86, false, 4}, Expect{SelectMode::kCdf, 0.3, false, 1},
                        Expect{SelectMode::kCdf, 0.0, true, 1}, Expect{SelectMode::kCdf, 1.0, false, 8},
                        Expect{SelectMode::kCdf, 0.92, false, 5}, Expect{SelectMode::kTopk, 0.25, false, 2},
                        Expect{SelectMode::kTopk, 0.5, false, 4}, Expect{SelectMode::kTopk, 0.0, false, 1},
                        Expect{SelectMode::kTopk, 0.3, false, 2}, Expect{SelectMode::kTopk, 1.0, false, 8}}) {
    cfg.select = e.mode;
    cfg.cdf_keep_crossing = e.crossing;
    (e.mode == SelectMode::kCdf ? cfg.cdfthreshd : cfg.topk) = {e.value};
    const auto m = predict_block_mask(s.q, s.k, cfg);
    for (int64_t i = 0; i < 2; ++i)
      EXPECT_EQ(row_blocks(m, i), sorted_prefix(s.by_prob, e.n))
          << to_string(e.mode) << " " << e.value << (e.crossing ? " keeping the crossing block" : "");
  }
}

TEST(Stage1, CausalRowsAreNeverEmptyAndDiagonalsAreKept) {
  for (auto [nq, nk, bq, bk] : std::vector<std::array<int64_t, 4>>{{1000, 1000, 128, 64},
                                                                   {1000, 1000, 64, 128},
                                                                   {300, 1000, 128, 64},
                                                                   {239, 239, 32, 48},
                                                                   {1, 200, 64, 64}}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " Nq " + std::to_string(nq) + " Nk " + std::to_string(nk));
    StructuredSpec spec;
    spec.seq_q = nq;
    spec.seq_k = nk;
    const auto in = structured_qkv(spec, seed, at::TensorOptions(at::kFloat));
    SpargeConfig cfg;
    cfg.block_q = bq;
    cfg.block_k = bk;
    cfg.causal = true;
    cfg.simthreshd1 = {-1.0};  // every block similar: nothing forced but the causal rules
    cfg.cdfthreshd = {0.0};    // the sparsest selection
    cfg.return_lse = true;
    const auto m = predict_block_mask(in.q, in.k, cfg);
    const auto diag = causal_diagonal_blocks(nq, nk, bq, bk, true, at::TensorOptions());
    EXPECT_TRUE((m.dense | diag.logical_not()).all().item<bool>()) << "every diagonal block is kept";
    EXPECT_TRUE(test::token_mask(m, true).any(-1).all().item<bool>()) << "every query row computes a key";
    const auto valid = causal_valid_blocks(nq, nk, bq, bk, true, at::TensorOptions());
    EXPECT_FALSE((m.dense & valid.logical_not()).any().item<bool>()) << "no future block";
    const auto r = block_sparse_attention(in.q, in.k, in.v, m, cfg);
    EXPECT_TRUE(at::isfinite(r.lse).all().item<bool>());
  }
}

TEST(Stage1, AttentionSinkKeepsKeyBlockZero) {
  const auto s = known_scores();  // key block 0 has rank 1 (P~ 0.2)
  auto cfg = base_config();
  cfg.cdfthreshd = {0.3};  // keeps only block 3
  EXPECT_EQ(row_blocks(predict_block_mask(s.q, s.k, cfg), 0), std::vector<int64_t>{3});
  cfg.attention_sink = true;
  EXPECT_EQ(row_blocks(predict_block_mask(s.q, s.k, cfg), 0), (std::vector<int64_t>{0, 3}));
}

TEST(Stage1, PartialTailBlockIsJudgedOnItsValidRows) {
  // Choice: a partial tail block is pooled and judged on its valid rows only (the reference implementation
  // reads zero padding, divides by a zero norm and forces the block dense through NaN). Three similar tail
  // rows are self-similar and, with a small P~, not selected.
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto u = unit_rows(1, gen);
  auto kdirs = unit_rows(5, gen);
  kdirs[1] = 6.0 * u[0];
  const auto k = rows_from_directions(kdirs, kBlock, 0.02, gen).narrow(2, 0, 4 * kBlock + 3).contiguous();
  const auto q = rows_from_directions((6.0 * u).expand({2, kD}).contiguous(), kBlock, 0.02, gen);
  const auto sim = pool_blocks(k - k.mean(2, true), kBlock).similarity;
  EXPECT_GT(sim[0][0][4].item<double>(), 0.9);
  auto cfg = base_config();
  cfg.cdfthreshd = {0.5};
  const auto m = predict_block_mask(q, k, cfg);
  EXPECT_EQ(row_blocks(m, 0), std::vector<int64_t>{1});
  // The tail mean divides by 3, not 64.
  const auto pooled = pool_blocks(k, kBlock).pooled;
  EXPECT_LT((pooled[0][0][4] - k[0][0].narrow(0, 4 * kBlock, 3).mean(0)).abs().max().item<double>(), 1e-12);
}

TEST(Stage1, SimilarityEqualsMeanPairwiseCosine) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(test::fresh_seed());
  const auto x = at::randn({1, 2, 150, 16}, gen, at::TensorOptions(at::kDouble)) + 0.7;
  const auto sim = pool_blocks(x, 64).similarity;  // blocks of 64, 64, 22 rows
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t b = 0; b < 3; ++b) {
      const auto rows = x[0][h].narrow(0, b * 64, std::min<int64_t>(64, 150 - b * 64));
      const auto unit = rows / rows.norm(2, {-1}, true);
      const double brute =
          at::matmul(unit, unit.t()).mean().item<double>();  // Gram matrix, diagonal included
      EXPECT_NEAR(sim[0][h][b].item<double>(), brute, 1e-12);
    }
}

TEST(Stage1, GqaPredictsLikeExpandedHeads) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  StructuredSpec spec;
  spec.heads_q = 8;
  spec.heads_kv = 2;
  spec.seq_q = spec.seq_k = 700;
  const auto in = structured_qkv(spec, seed, at::TensorOptions(at::kFloat));
  SpargeConfig cfg;
  cfg.cdfthreshd = {0.9};
  cfg.causal = true;
  const auto gqa = predict_block_mask(in.q, in.k, cfg);
  const auto mha = predict_block_mask(in.q, in.k.repeat_interleave(4, 1), cfg);
  EXPECT_TRUE(gqa.dense.equal(mha.dense));
  EXPECT_LT(gqa.dense.to(at::kFloat).mean().item<float>(), 0.9f)
      << "structured input must give some sparsity";
}

TEST(Stage1, LayoutDoesNotChangeTheMask) {
  StructuredSpec spec;
  spec.seq_q = spec.seq_k = 500;
  const auto in = structured_qkv(spec, test::fresh_seed(), at::TensorOptions(at::kBFloat16));
  SpargeConfig cfg;
  const auto hnd = predict_block_mask(in.q, in.k, cfg);
  cfg.layout = Layout::kNHD;
  const auto nhd =
      predict_block_mask(in.q.transpose(1, 2).contiguous(), in.k.transpose(1, 2).contiguous(), cfg);
  EXPECT_TRUE(hnd.dense.equal(nhd.dense));
}

TEST(Stage1, PerHeadThresholds) {
  StructuredSpec spec;
  spec.heads_q = spec.heads_kv = 2;
  spec.seq_q = spec.seq_k = 1024;
  const auto in = structured_qkv(spec, test::fresh_seed(), at::TensorOptions(at::kFloat));
  SpargeConfig cfg;
  cfg.simthreshd1 = {-1.0};
  cfg.cdfthreshd = {1.0, 0.5};
  const auto m = predict_block_mask(in.q, in.k, cfg);
  EXPECT_TRUE(m.dense.select(1, 0).all().item<bool>()) << "tau = 1 keeps every block";
  EXPECT_FALSE(m.dense.select(1, 1).all().item<bool>()) << "tau = 0.5 drops some";
}

}  // namespace
}  // namespace sparge
