// The quantization arithmetic of the GPU kernels (cuda/predict/predict_math.h: the INT8 values of stage 1 and
// the FP8 V operand), replayed on the host: the kernels compute the same float operations (FMA, RN(1 / s)
// for __frcp_rn), so these checks hold bit for bit on the device. The claim under test: the division-free
// quotient equals the IEEE quotient, and the biased-float rounding equals clamp(rint(v / scale)), on random
// and on adversarial inputs (quotients within a few ulps of a half-integer, the block maximum itself).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "../cuda/predict/predict_math.h"
#include "test_util.h"

namespace sparge {
namespace {

using cuda::predict::FastDiv;
using cuda::predict::int8_round_bits;
using cuda::predict::quotient_fast_scale;
using cuda::predict::rn_quotient;

// The kernels' reference: round(v / scale) clamped to +-127, half to even (the legacy kernel and the CPU
// reference).
int reference_int8(float v, float scale) {
  return static_cast<int>(std::fmin(std::fmax(std::rint(v / scale), -127.f), 127.f));
}
int fast_int8(float v, float scale) {
  const float inv = 1.f / scale;  // RN(1 / scale), as __frcp_rn
  return static_cast<int8_t>(int8_round_bits(v, scale, inv) & 0xffu);
}

// A block maximum with a random sign-free magnitude over [2^-100, 2^100] (the fast scales and more).
float random_amax(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> e(-100.0, 100.0), m(1.0, 2.0);
  return static_cast<float>(std::ldexp(m(rng), static_cast<int>(e(rng))));
}

TEST(PredictMath, QuotientIsTheIeeeQuotient) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  int64_t checked = 0;
  for (int i = 0; i < 2000000; ++i) {
    const float amax = random_amax(rng), scale = i % 2 ? amax / 127.f : amax / 448.f;
    ASSERT_TRUE(quotient_fast_scale(scale));
    const float v = static_cast<float>(unit(rng) * amax);
    const float exact = v / scale;
    if (std::fabs(exact) < 0x1p-125f) continue;  // underflow: documented as inexact (rounds to 0 anyway)
    ASSERT_EQ(rn_quotient(v, scale, 1.f / scale), exact) << "v = " << v << ", scale = " << scale;
    ++checked;
  }
  EXPECT_GT(checked, 1900000);
}

TEST(PredictMath, Int8RoundingMatchesTheDivisionNearEveryHalfStep) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  int64_t checked = 0, ties = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const float amax = random_amax(rng), scale = amax / 127.f;
    // The block maximum itself maps to +-127; zero and the smallest values to 0.
    for (const float v : {amax, -amax, 0.f, -0.f, amax * 1e-30f, std::nextafter(0.f, 1.f)}) {
      ASSERT_EQ(fast_int8(v, scale), reference_int8(v, scale)) << "v = " << v << ", scale = " << scale;
    }
    // v near (k + 1/2) scale and k scale for every k: the quotient within a few ulps of a rounding boundary.
    for (int k = -128; k <= 127; ++k) {
      for (const double f : {0.5, 0.0}) {
        float v = static_cast<float>((k + f) * static_cast<double>(scale));
        for (int s = 0; s < 4; ++s) v = std::nextafter(v, -INFINITY);
        for (int s = 0; s < 9; ++s, v = std::nextafter(v, INFINITY)) {
          if (std::fabs(v) > amax) continue;  // outside the block's range (the scale is max|v| / 127)
          const float q = v / scale;
          ties += q == std::floor(q) + 0.5f;
          ASSERT_EQ(fast_int8(v, scale), reference_int8(v, scale))
              << "v = " << v << ", scale = " << scale << ", v / scale = " << q;
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 400 * 255 * 2 * 8);
  EXPECT_GT(ties, 0) << "no exact half-integer quotient was exercised";
  std::printf("checked %lld values near rounding boundaries (%lld exact ties)\n",
              static_cast<long long>(checked), static_cast<long long>(ties));
}

TEST(PredictMath, ExtremeScalesLeaveTheFastPath) {
  EXPECT_TRUE(quotient_fast_scale(1.f / 127.f));
  EXPECT_FALSE(quotient_fast_scale(0x1p-126f));
  EXPECT_FALSE(quotient_fast_scale(0x1p121f));
  EXPECT_FALSE(quotient_fast_scale(INFINITY));
  EXPECT_FALSE(quotient_fast_scale(NAN));
}

// The statistics kernel decodes work items with FastDiv (the device takes __umulhi, the same product).
TEST(PredictMath, FastDivIsIntegerDivision) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> numerator(0, 0x7fffffff), small(1, 4096), large(1, 0x7fffffff);
  std::vector<int> divisors = {1,   2,   3,   5,   7,    16,   63,    64,    65,         127,
                               128, 129, 255, 256, 1000, 4096, 65535, 65536, 0x40000000, 0x7fffffff};
  for (int i = 0; i < 200; ++i) divisors.push_back(i % 2 ? small(rng) : large(rng));
  for (const int d : divisors) {
    const FastDiv f(d);
    std::vector<int> ns = {0, 1, d - 1, d, 0x7fffffff, 0x7ffffffe};
    if (d < 0x7fffffff) ns.push_back(d + 1);
    for (int k = 0; k < 2000; ++k) ns.push_back(numerator(rng));
    for (int k = 1; k < 50; ++k) {  // around multiples of d
      const int64_t m = static_cast<int64_t>(d) * (k * 977 % 4093);
      if (m < 0x7fffffff) ns.insert(ns.end(), {static_cast<int>(m), static_cast<int>(m > 0 ? m - 1 : 0)});
    }
    for (const int n : ns) ASSERT_EQ(f.div(n), n / d) << n << " / " << d;
  }
}

}  // namespace
}  // namespace sparge
