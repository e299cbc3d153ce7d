// Quantization emulation (SageAttention-style): INT8 per-block Q and smoothed K, P.V in 16-bit or FP8 e4m3.
// Documented error bounds (relative L1 against float64 dense attention, all blocks kept, random normal
// inputs, N = 1024): see kBounds below; measured values are printed by each test.
#include <gtest/gtest.h>

#include <cstdio>

#include "sparge/blocks.h"
#include "test_util.h"

namespace sparge {
namespace {

TEST(Quant, Int8BlocksRoundWithinHalfAStep) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(test::fresh_seed());
  const auto x = at::randn({2, 3, 200, 64}, gen, at::TensorOptions(at::kDouble)) * 3.0;
  const auto r = quantize_int8_blocks(x, 64);  // blocks of 64, 64, 64, 8 rows
  ASSERT_EQ(r.scale.sizes(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_TRUE(r.values.equal(at::round(r.values)));
  EXPECT_LE(r.values.abs().max().item<double>(), 127.0);
  const auto step = r.scale.repeat_interleave(64, 2).narrow(2, 0, 200).unsqueeze(-1);
  const auto err = (r.values * step - x).abs();
  EXPECT_TRUE((err <= step / 2 + 1e-12).all().item<bool>());
  // The largest magnitude of each block maps to +-127 exactly.
  EXPECT_DOUBLE_EQ(r.values.narrow(2, 192, 8).abs().max().item<double>(), 127.0);
}

TEST(Quant, Fp8E4m3RoundsToNearestRepresentable) {
  const auto x =
      at::tensor({1.0, 1.0625, 1.1875, 0.3, 447.0, 1000.0, -1000.0, 0.001953125, 17.0}, at::kDouble);
  const auto r = round_to_fp8_e4m3(x);
  // 1.0625 is a tie between 1 and 1.125 (3 mantissa bits) -> even (1.0); 1.1875 -> 1.25 (even); 0.3 ->
  // 0.3125; 447 -> 448; out of range saturates to +-448; 2^-9 is the smallest subnormal; 17 -> 16 (step 2,
  // tie to even).
  const std::vector<double> expect = {1.0, 1.0, 1.25, 0.3125, 448.0, 448.0, -448.0, 0.001953125, 16.0};
  for (size_t i = 0; i < expect.size(); ++i)
    EXPECT_DOUBLE_EQ(r[i].item<double>(), expect[i]) << "x = " << x[i];
}

struct QuantCase {
  QuantMode mode;
  at::ScalarType dtype;
  bool causal;
  double bound;  // relative L1 against float64 dense
};

class QuantError : public ::testing::TestWithParam<QuantCase> {};

TEST_P(QuantError, WithinTheDocumentedBound) {
  const auto c = GetParam();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto in = random_qkv(1, 4, 2, 1024, 1024, 128, seed, at::TensorOptions(c.dtype));
  SpargeConfig cfg;
  cfg.causal = c.causal;
  cfg.quant = c.mode;
  const auto r =
      block_sparse_attention(in.q, in.k, in.v, test::full_mask(1, 4, 1024, 1024, 128, 64, c.causal), cfg);
  const auto ref = dense_attention_f64(in.q, in.k, in.v, c.causal).out;
  const double l1 = relative_l1(r.out, ref);
  std::printf("[ measured ] %s %s %s: relative L1 %.5f (bound %.3f)\n",
              std::string(to_string(c.mode)).c_str(), test::dtype_name(c.dtype).c_str(),
              c.causal ? "causal" : "non-causal", l1, c.bound);
  EXPECT_LT(l1, c.bound);
  EXPECT_TRUE(at::isfinite(r.out).all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(Modes, QuantError,
                         ::testing::Values(QuantCase{QuantMode::kInt8, at::kHalf, false, 0.02},
                                           QuantCase{QuantMode::kInt8, at::kBFloat16, false, 0.03},
                                           QuantCase{QuantMode::kInt8, at::kBFloat16, true, 0.03},
                                           QuantCase{QuantMode::kInt8Fp8, at::kHalf, false, 0.06},
                                           QuantCase{QuantMode::kInt8Fp8, at::kBFloat16, true, 0.06}));

TEST(Quant, Bf16BeyondTheFp16RangeStaysFinite) {
  // V entries of 1e5 overflow float16 (max 65504): bf16 inputs must never pass through fp16.
  auto in = random_qkv(1, 2, 2, 256, 256, 64, test::fresh_seed(), at::TensorOptions(at::kBFloat16));
  in.v = in.v * 1e5;
  const auto ref = dense_attention_f64(in.q, in.k, in.v, false).out;
  for (auto mode : {QuantMode::kInt8, QuantMode::kInt8Fp8}) {
    SpargeConfig cfg;
    cfg.quant = mode;
    cfg.simthreshd1 = {1.0};
    const auto r = spas_attention(in.q, in.k, in.v, cfg);
    EXPECT_TRUE(at::isfinite(r.out).all().item<bool>()) << to_string(mode);
    EXPECT_LT(relative_l1(r.out, ref), 0.05) << to_string(mode);
  }
}

TEST(Quant, KeySmoothingRemovesACommonOffset) {
  // A large offset shared by all keys (common in real K) would dominate the INT8 range without smoothing;
  // with it the error matches the offset-free case.
  const uint64_t seed = test::fresh_seed();
  auto in = random_qkv(1, 2, 2, 512, 512, 64, seed, at::TensorOptions(at::kFloat));
  SpargeConfig cfg;
  cfg.quant = QuantMode::kInt8;
  const auto mask = test::full_mask(1, 2, 512, 512, 128, 64, false);
  const double plain = relative_l1(block_sparse_attention(in.q, in.k, in.v, mask, cfg).out,
                                   dense_attention_f64(in.q, in.k, in.v, false).out);
  const auto k_off = in.k + 20.0;
  const double offset = relative_l1(block_sparse_attention(in.q, k_off, in.v, mask, cfg).out,
                                    dense_attention_f64(in.q, k_off, in.v, false).out);
  EXPECT_LT(offset, 1.5 * plain + 1e-3);
}

}  // namespace
}  // namespace sparge
