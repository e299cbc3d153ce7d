// With every block kept, no quantization and stage 2 off, SpargeAttn equals dense attention computed in
// float64, over the shape matrix: N in {1, 63, 113, 128, 239, 1023}, GQA ratios 1/2/4/8 (8 query heads),
// causal or not, Nq == Nk, Nq < Nk (and Nq > Nk when not causal), D cycling 64/128/80, dtypes and layouts
// cycling, odd block sizes. To add a case: extend cases() below.
#include <gtest/gtest.h>

#include "test_util.h"

namespace sparge {
namespace {

struct Case {
  int64_t seq_q, seq_k, ratio, head_dim, block_q, block_k;
  bool causal;
  at::ScalarType dtype;
  Layout layout;
  std::string name() const {
    return "Nq" + std::to_string(seq_q) + "_Nk" + std::to_string(seq_k) + "_g" + std::to_string(ratio) +
           "_D" + std::to_string(head_dim) + "_b" + std::to_string(block_q) + "x" + std::to_string(block_k) +
           (causal ? "_causal_" : "_full_") + test::dtype_name(dtype) + "_" + std::string(to_string(layout));
  }
};

std::vector<Case> cases() {
  const int64_t ns[] = {1, 63, 113, 128, 239, 1023};
  const int64_t ratios[] = {1, 2, 4, 8};
  const int64_t dims[] = {64, 128, 80};
  const at::ScalarType dtypes[] = {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble};
  const std::pair<int64_t, int64_t> blocks[] = {{128, 64}, {64, 128}, {32, 48}};
  std::vector<Case> out;
  int i = 0;
  for (int64_t n : ns)
    for (int64_t r : ratios)
      for (bool causal : {false, true}) {
        // Nq == Nk, Nq < Nk (a chunk of queries at the end), and Nq > Nk for non-causal attention.
        std::vector<std::pair<int64_t, int64_t>> lens = {{n, n}, {std::max<int64_t>(1, n / 3), n}};
        if (!causal) lens.push_back({n, std::max<int64_t>(1, n / 2 + 1)});
        for (auto [nq, nk] : lens) {
          const auto [bq, bk] = blocks[i % 3];
          out.push_back(
              {nq, nk, r, dims[i % 3], bq, bk, causal, dtypes[i % 4], i % 2 ? Layout::kNHD : Layout::kHND});
          ++i;
        }
      }
  return out;
}

class DenseEquivalence : public ::testing::TestWithParam<Case> {};

TEST_P(DenseEquivalence, AllBlocksEqualDenseFloat64) {
  const Case c = GetParam();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t hq = 8, hkv = hq / c.ratio, b = 2;
  auto in = random_qkv(b, hq, hkv, c.seq_q, c.seq_k, c.head_dim, seed, at::TensorOptions(c.dtype));
  if (c.layout == Layout::kNHD) {
    in.q = in.q.transpose(1, 2).contiguous();
    in.k = in.k.transpose(1, 2).contiguous();
    in.v = in.v.transpose(1, 2).contiguous();
  }
  SpargeConfig cfg;
  cfg.block_q = c.block_q;
  cfg.block_k = c.block_k;
  cfg.causal = c.causal;
  cfg.layout = c.layout;
  cfg.return_lse = true;
  const auto ref = dense_attention_f64(in.q, in.k, in.v, c.causal, std::nullopt, c.layout, true);
  const double tol = test::exact_tolerance(c.dtype);

  // 1. the block-sparse path over a mask of every valid block
  const auto mask = test::full_mask(b, hq, c.seq_q, c.seq_k, c.block_q, c.block_k, c.causal);
  const auto r1 = block_sparse_attention(in.q, in.k, in.v, mask, cfg);
  ASSERT_EQ(r1.out.sizes(), in.q.sizes());
  ASSERT_EQ(r1.out.scalar_type(), c.dtype);
  EXPECT_LT(relative_l2(r1.out, ref.out), tol);
  EXPECT_LT((r1.lse.to(at::kDouble) - ref.lse).abs().max().item<double>(),
            c.dtype == at::kDouble ? 1e-5 : 2e-3);
  EXPECT_DOUBLE_EQ(r1.stats.stage1_sparsity(), 0.0);
  EXPECT_DOUBLE_EQ(r1.stats.token_density(), 1.0);

  // 2. the whole SpargeAttn call with thresholds that keep everything: theta = 1 makes every block "not
  //    self-similar" (sim > 1 never holds), so every row and column is forced.
  cfg.simthreshd1 = {1.0};
  const auto r2 = spas_attention(in.q, in.k, in.v, cfg);
  EXPECT_LT(relative_l2(r2.out, ref.out), tol);
  EXPECT_EQ(r2.stats.computed_blocks, r2.stats.valid_blocks);
  EXPECT_EQ(r2.stats.stage2_skipped, 0);
}

INSTANTIATE_TEST_SUITE_P(ShapeMatrix, DenseEquivalence, ::testing::ValuesIn(cases()),
                         [](const auto& tp) { return tp.param.name(); });

TEST(DenseEquivalence, CausalValidPairsCount) {
  // Causal, Nq = Nk = n: n (n + 1) / 2 allowed pairs per head; bottom-right aligned Nq < Nk adds Nk - Nq per
  // row.
  const auto in = random_qkv(1, 2, 2, 100, 130, 64, test::fresh_seed(), at::TensorOptions(at::kFloat));
  SpargeConfig cfg;
  cfg.causal = true;
  cfg.block_q = 32;
  cfg.block_k = 32;
  const auto r = block_sparse_attention(in.q, in.k, in.v, test::full_mask(1, 2, 100, 130, 32, 32, true), cfg);
  EXPECT_EQ(r.stats.valid_pairs, 2 * (100 * 101 / 2 + 100 * 30));
  EXPECT_EQ(r.stats.computed_pairs, r.stats.valid_pairs);
}

}  // namespace
}  // namespace sparge
