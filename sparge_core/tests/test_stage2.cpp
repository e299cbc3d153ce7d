// Stage 2 (the pvthreshd / lambda filter inside the online softmax): what is skipped, at which granularity,
// and the error it costs. Scores are in log2 units: S * scale * log2(e).
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "test_util.h"

namespace sparge {
namespace {

constexpr int64_t kD = 64, kBlock = 64;

// One query block of 64 rows and two key blocks: q rows = a u; key block `big` rows = a u (score a^2 scale
// log2e in log2 units), the other key block's rows are orthogonal to u (score 0). Rows [0, rows_with_gap) of
// the query block see that gap; the other rows get q = a u + a w, with key block `other` rows = a w +
// (orthogonal noise), so that they score equally in both blocks.
struct TwoBlocks {
  at::Tensor q, k, v;
  double gap_log2;  // log2-unit gap between the two blocks' row maxima for the gapped rows
};
TwoBlocks two_blocks(int64_t big, int64_t rows_with_gap, double gap_log2, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opt = at::TensorOptions(at::kDouble);
  const auto basis = std::get<0>(at::linalg_qr(at::randn({kD, kD}, gen, opt)));  // orthonormal columns
  const auto u = basis.select(1, 0), w = basis.select(1, 1);
  const double scale_log2 = std::numbers::log2e / std::sqrt(double(kD));
  const double a = std::sqrt(gap_log2 / scale_log2);
  auto q = (a * u).expand({kBlock, kD}).clone();
  q.narrow(0, rows_with_gap, kBlock - rows_with_gap).add_(a * w);
  auto k = at::zeros({2 * kBlock, kD}, opt);
  k.narrow(0, big * kBlock, kBlock).copy_((a * u).expand({kBlock, kD}));
  // The other block: a w plus a little noise orthogonal to u and w.
  const auto noise = at::matmul(at::randn({kBlock, kD - 2}, gen, opt), basis.narrow(1, 2, kD - 2).t()) * 0.1;
  k.narrow(0, (1 - big) * kBlock, kBlock).copy_((a * w).expand({kBlock, kD}) + noise);
  const auto v = at::randn({1, 1, 2 * kBlock, kD}, gen, opt);
  return {q.view({1, 1, kBlock, kD}).to(at::kFloat), k.view({1, 1, 2 * kBlock, kD}).to(at::kFloat),
          v.to(at::kFloat), gap_log2};
}

SpargeConfig two_block_config(double pvthreshd, int64_t group_rows) {
  SpargeConfig c;
  c.block_q = kBlock;
  c.block_k = kBlock;
  c.pvthreshd = {pvthreshd};
  c.stage2_group_rows = group_rows;
  return c;
}

TEST(Stage2, BlockFarBelowTheRunningMaxIsSkippedWithinTheBound) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto in = two_blocks(/*big=*/0, /*rows_with_gap=*/kBlock, /*gap_log2=*/14.0, seed);
  const auto mask = test::full_mask(1, 1, kBlock, 2 * kBlock, kBlock, kBlock, false);
  const auto ref = dense_attention_f64(in.q, in.k, in.v, false);
  const auto skipped = block_sparse_attention(in.q, in.k, in.v, mask, two_block_config(10.0, 0));
  EXPECT_EQ(skipped.stats.stage2_groups, 2);   // one 64-row group x two key blocks
  EXPECT_EQ(skipped.stats.stage2_skipped, 1);  // key block 1
  EXPECT_EQ(skipped.stats.stage2_skipped_pairs, kBlock * kBlock);
  // Bound: the skipped mass of a row is at most (keys skipped) * 2^-pvthreshd of its max term, so
  // |o - o_ref| <= 2 * kBlock * 2^-pvthreshd * max|v|.
  const double max_err = (skipped.out.to(at::kDouble) - ref.out).abs().max().item<double>();
  const double bound = 2.0 * kBlock * std::exp2(-10.0) * in.v.abs().max().item<double>();
  EXPECT_LT(max_err, bound);
  EXPECT_GT(max_err, 1e-6) << "the skipped block did carry some weight";
  // A threshold above the gap computes it.
  const auto kept = block_sparse_attention(in.q, in.k, in.v, mask, two_block_config(20.0, 0));
  EXPECT_EQ(kept.stats.stage2_skipped, 0);
  EXPECT_LT(relative_l2(kept.out, ref.out), 5e-6);
}

TEST(Stage2, TheFirstComputedBlockIsNeverSkippedAndOrderIsAscending) {
  // The big block comes second: the first block sets a low running max, the second raises it; nothing is
  // skipped even with a tiny threshold.
  const auto in = two_blocks(/*big=*/1, kBlock, 14.0, test::fresh_seed());
  const auto mask = test::full_mask(1, 1, kBlock, 2 * kBlock, kBlock, kBlock, false);
  const auto r = block_sparse_attention(in.q, in.k, in.v, mask, two_block_config(1e-3, 0));
  EXPECT_EQ(r.stats.stage2_skipped, 0);
  EXPECT_LT(relative_l2(r.out, dense_attention_f64(in.q, in.k, in.v, false).out), 5e-6);
}

TEST(Stage2, PerWarpGroupsSkipWhereTheWholeTileCannot) {
  // Rows 0..31 see a gap of 14 (log2) between the blocks; rows 32..63 score both blocks alike.
  const auto in = two_blocks(/*big=*/0, /*rows_with_gap=*/32, 14.0, test::fresh_seed());
  const auto mask = test::full_mask(1, 1, kBlock, 2 * kBlock, kBlock, kBlock, false);
  const auto tile = block_sparse_attention(in.q, in.k, in.v, mask, two_block_config(10.0, 0));
  EXPECT_EQ(tile.stats.stage2_group_rows, kBlock);
  EXPECT_EQ(tile.stats.stage2_skipped, 0);
  const auto warp = block_sparse_attention(in.q, in.k, in.v, mask, two_block_config(10.0, 32));
  EXPECT_EQ(warp.stats.stage2_group_rows, 32);
  EXPECT_EQ(warp.stats.stage2_groups, 4);
  EXPECT_EQ(warp.stats.stage2_skipped, 1);
  // The rows that did not skip are exact.
  const auto ref = dense_attention_f64(in.q, in.k, in.v, false).out;
  EXPECT_LT(relative_l2(warp.out.narrow(2, 32, 32), ref.narrow(2, 32, 32)), 5e-6);
}

TEST(Stage2, LargeThresholdSkipsNothingAndChangesNothing) {
  StructuredSpec spec;
  spec.seq_q = spec.seq_k = 1000;
  spec.sharpness = 12.0;
  const auto in = structured_qkv(spec, test::fresh_seed(), at::TensorOptions(at::kFloat));
  SpargeConfig cfg;
  cfg.causal = true;
  cfg.simthreshd1 = {1.0};  // every block computed
  const auto off = spas_attention(in.q, in.k, in.v, cfg);
  cfg.pvthreshd = {1e4};
  const auto large = spas_attention(in.q, in.k, in.v, cfg);
  EXPECT_EQ(large.stats.stage2_skipped, 0);
  EXPECT_TRUE(large.out.equal(off.out));
}

TEST(Stage2, SmallerThresholdsSkipMoreAndStayWithinTheBound) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  StructuredSpec spec;
  spec.seq_q = spec.seq_k = 2048;
  spec.sharpness = 24.0;  // peaked attention: far blocks are far below the running max
  spec.window = 64;
  const auto in = structured_qkv(spec, seed, at::TensorOptions(at::kFloat));
  const auto ref = dense_attention_f64(in.q, in.k, in.v, false).out;
  SpargeConfig cfg;
  cfg.simthreshd1 = {1.0};
  cfg.stage2_group_rows = 32;
  // float32 math error without stage 2: the floor under every bound below.
  const double base_err =
      (spas_attention(in.q, in.k, in.v, cfg).out.to(at::kDouble) - ref).abs().max().item<double>();
  double last_skip = -1.0;
  const int64_t nkb = (spec.seq_k + cfg.block_k - 1) / cfg.block_k;
  for (double t : {40.0, 20.0, 12.0, 8.0, 5.0}) {
    cfg.pvthreshd = {t};
    const auto r = spas_attention(in.q, in.k, in.v, cfg);
    const double skip = r.stats.stage2_skip_fraction();
    EXPECT_GE(skip, last_skip) << "pvthreshd " << t;
    last_skip = skip;
    const double max_err = (r.out.to(at::kDouble) - ref).abs().max().item<double>();
    EXPECT_LT(max_err,
              2.0 * nkb * cfg.block_k * std::exp2(-t) * in.v.abs().max().item<double>() + 2 * base_err);
  }
  EXPECT_GT(last_skip, 0.3) << "structured input with pvthreshd 5 should skip a good part of the blocks";
}

}  // namespace
}  // namespace sparge
