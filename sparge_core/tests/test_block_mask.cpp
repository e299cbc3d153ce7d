// Any block mask: the block-sparse attention equals dense float64 attention with that mask materialized to
// tokens (rows with no computed key give 0 and lse = -inf); the CSR view matches the dense view; the causal
// block geometry matches brute force.
#include <gtest/gtest.h>

#include <array>

#include "test_util.h"

namespace sparge {
namespace {

struct MaskCase {
  int64_t seq_q, seq_k, ratio, head_dim, block_q, block_k;
  bool causal;
  double density;
};

class AnyMask : public ::testing::TestWithParam<MaskCase> {};

TEST_P(AnyMask, EqualsDenseWithMaterializedMask) {
  const auto c = GetParam();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t b = 2, hq = 8, hkv = hq / c.ratio;
  const auto in = random_qkv(b, hq, hkv, c.seq_q, c.seq_k, c.head_dim, seed, at::TensorOptions(at::kFloat));
  const int64_t nqb = (c.seq_q + c.block_q - 1) / c.block_q, nkb = (c.seq_k + c.block_k - 1) / c.block_k;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1);
  const auto dense = at::rand({b, hq, nqb, nkb}, gen) < c.density;
  const auto mask = BlockMask::from_dense(dense, c.block_q, c.block_k, c.seq_q, c.seq_k);

  SpargeConfig cfg;
  cfg.causal = c.causal;
  cfg.return_lse = true;
  const auto r = block_sparse_attention(in.q, in.k, in.v, mask, cfg);
  const auto allowed = test::token_mask(mask, c.causal);
  const auto ref = test::masked_attention_f64(in.q, in.k, in.v, allowed, 1.0 / std::sqrt(double(c.head_dim)));
  if (ref.abs().max().item<double>() > 0) {
    EXPECT_LT(relative_l2(r.out, ref), 5e-6);
  } else {
    EXPECT_EQ(r.out.abs().max().item<float>(), 0.0f);  // an empty mask computes nothing
  }
  // Rows without any allowed key: exactly zero output and lse = -inf.
  const auto empty = allowed.any(-1).logical_not();  // (B, H, Nq)
  if (empty.any().item<bool>()) {
    EXPECT_EQ(r.out.masked_select(empty.unsqueeze(-1)).abs().max().item<float>(), 0.0f);
    EXPECT_TRUE(at::isneginf(r.lse.masked_select(empty)).all().item<bool>());
  }
  // Accounting: computed blocks are the valid selected ones; computed pairs the allowed token pairs.
  const auto valid =
      causal_valid_blocks(c.seq_q, c.seq_k, c.block_q, c.block_k, c.causal, at::TensorOptions());
  EXPECT_EQ(r.stats.computed_blocks, (dense & valid).sum().item<int64_t>());
  EXPECT_EQ(r.stats.computed_pairs, allowed.sum().item<int64_t>());
}

INSTANTIATE_TEST_SUITE_P(Masks, AnyMask,
                         ::testing::Values(MaskCase{239, 239, 1, 64, 128, 64, false, 0.5},
                                           MaskCase{239, 239, 2, 64, 64, 128, true, 0.5},
                                           MaskCase{113, 300, 4, 80, 32, 32, true, 0.3},
                                           MaskCase{1023, 1023, 1, 128, 128, 64, true, 0.25},
                                           MaskCase{300, 113, 2, 64, 48, 16, false, 0.1},
                                           MaskCase{63, 63, 1, 64, 16, 16, false, 0.0},
                                           MaskCase{128, 128, 8, 64, 128, 64, false, 1.0}));

TEST(BlockMask, CsrMatchesDense) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(test::fresh_seed());
  const auto dense = at::rand({2, 3, 5, 9}, gen) < 0.4;
  const auto m = BlockMask::from_dense(dense, 64, 32, 300, 280);
  ASSERT_EQ(m.counts.sizes(), (std::vector<int64_t>{2, 3, 5}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t i = 0; i < 5; ++i) {
        std::vector<int> expect;
        for (int j = 0; j < 9; ++j)
          if (dense[b][h][i][j].item<bool>()) expect.push_back(j);
        const int n = m.counts[b][h][i].item<int>();
        ASSERT_EQ(n, static_cast<int>(expect.size()));
        for (int j = 0; j < 9; ++j) EXPECT_EQ(m.indices[b][h][i][j].item<int>(), j < n ? expect[j] : -1);
      }
}

// Refining to finer blocks keeps exactly the same token pairs (tails included).
TEST(BlockMask, RefineKeepsTheTokenPairs) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(test::fresh_seed());
  for (const bool causal : {false, true}) {
    const int64_t nq = 300, nk = 300;
    const auto dense = at::rand({2, 3, 3, 3}, gen) < 0.5;  // 128 x 128 blocks over 300 tokens
    const auto m = BlockMask::from_dense(dense, 128, 128, nq, nk);
    const auto f = refine_block_mask(m, 128, 64);
    EXPECT_EQ(f.block_k, 64);
    EXPECT_EQ(f.num_k_blocks(), 5);
    EXPECT_TRUE(at::equal(test::token_mask(f, causal), test::token_mask(m, causal)));
    const auto g = refine_block_mask(m, 32, 16);
    EXPECT_TRUE(at::equal(test::token_mask(g, causal), test::token_mask(m, causal)));
  }
  const auto m = BlockMask::from_dense(at::ones({1, 1, 1, 1}, at::kBool), 128, 128, 100, 100);
  EXPECT_THROW(refine_block_mask(m, 128, 48), std::invalid_argument);
}

// Token-level sparsity from block pair counts equals counting the materialized token mask.
TEST(BlockMask, TokenSparsityCountsTokenPairs) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(test::fresh_seed());
  for (const bool causal : {false, true})
    for (const auto& [nq, nk, bq, bk] :
         std::vector<std::array<int64_t, 4>>{{300, 300, 128, 64}, {113, 300, 32, 48}}) {
      const auto dense = at::rand({2, 3, (nq + bq - 1) / bq, (nk + bk - 1) / bk}, gen) < 0.5;
      const auto m = BlockMask::from_dense(dense, bq, bk, nq, nk);
      const auto tokens = test::token_mask(m, causal).sum().item<double>();
      const auto all = test::token_mask(BlockMask::from_dense(at::ones_like(dense), bq, bk, nq, nk), causal)
                           .sum()
                           .item<double>();
      EXPECT_NEAR(token_sparsity(m, causal), 1.0 - tokens / all, 1e-12);
    }
}

TEST(BlockMask, RejectsWrongShape) {
  const auto dense = at::ones({1, 1, 3, 3}, at::kBool);
  EXPECT_THROW(BlockMask::from_dense(dense, 64, 64, 300, 128), Error);  // needs 5 x 2 blocks
  EXPECT_THROW(BlockMask::from_dense(dense.to(at::kInt), 64, 64, 192, 192), Error);
}

TEST(CausalGeometry, MatchesBruteForce) {
  for (auto [nq, nk, bq, bk] : std::vector<std::array<int64_t, 4>>{{100, 100, 32, 32},
                                                                   {100, 230, 64, 32},
                                                                   {1, 77, 128, 64},
                                                                   {239, 239, 128, 64},
                                                                   {50, 51, 16, 48},
                                                                   {300, 129, 128, 64},
                                                                   {77, 5, 16, 4}}) {
    const auto valid = causal_valid_blocks(nq, nk, bq, bk, true, at::TensorOptions());
    const auto diag = causal_diagonal_blocks(nq, nk, bq, bk, true, at::TensorOptions());
    const auto pairs = block_pair_counts(nq, nk, bq, bk, true, at::TensorOptions());
    const auto pairs_full = block_pair_counts(nq, nk, bq, bk, false, at::TensorOptions());
    EXPECT_EQ(pairs.scalar_type(), at::kLong);  // exact counts (callers sum them as int64)
    EXPECT_EQ(pairs_full.scalar_type(), at::kLong);
    for (int64_t i = 0; i * bq < nq; ++i)
      for (int64_t j = 0; j * bk < nk; ++j) {
        bool any = false, has_diag = false;
        int64_t allowed = 0, all = 0;
        for (int64_t r = i * bq; r < std::min(nq, (i + 1) * bq); ++r)
          for (int64_t s = j * bk; s < std::min(nk, (j + 1) * bk); ++s) {
            any |= s <= r + nk - nq;
            has_diag |= s == r + nk - nq;
            allowed += s <= r + nk - nq;
            ++all;
          }
        EXPECT_EQ(valid[i][j].item<bool>(), any) << i << "," << j;
        EXPECT_EQ(diag[i][j].item<bool>(), has_diag) << i << "," << j;
        EXPECT_EQ(pairs[i][j].item<int64_t>(), allowed) << i << "," << j;
        EXPECT_EQ(pairs_full[i][j].item<int64_t>(), all) << i << "," << j;
      }
  }
}

}  // namespace
}  // namespace sparge
