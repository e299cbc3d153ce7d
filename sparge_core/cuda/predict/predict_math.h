// Scalar arithmetic of the quantization kernels (stage-1 INT8, FP8 V) that the host tests replay bit for bit
// (no CUDA headers: compiled by nvcc for the device and by the C++ compiler for the tests).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SPARGE_PREDICT_HD __host__ __device__ __forceinline__
#else
#define SPARGE_PREDICT_HD inline
#endif

namespace sparge::cuda::predict {

// RN(v / scale), the IEEE quotient, given inv = RN(1 / scale), without a division: q0 = RN(v inv), r = v -
// scale q0 (exact in one FMA), q = RN(q0 + r inv) (Markstein's theorem, for a normal scale
// (quotient_fast_scale) and no underflow: a quotient below 2^-126 may be off in its last bits, far below any
// rounding step of an 8-bit format).
SPARGE_PREDICT_HD float rn_quotient(float v, float scale, float inv) {
  const float q0 = v * inv;
  const float r = fmaf(-scale, q0, v);
  return fmaf(r, inv, q0);
}

// round-half-even(v / scale) as float bits whose low byte is that integer in two's complement, for
// |v / scale| < 2^22: q + 1.5 * 2^23 rounds the quotient q to an integer, half to even, and 0x4B400000 (its
// bits at q = 0) has a zero low byte, so the low byte is the integer modulo 256. No rounding or conversion
// instruction.
SPARGE_PREDICT_HD uint32_t int8_round_bits(float v, float scale, float inv) {
  const float biased = rn_quotient(v, scale, inv) + 12582912.f;
  uint32_t bits;
  std::memcpy(&bits, &biased, sizeof(bits));
  return bits;
}

// The scales for which rn_quotient is exact (normal, with margin for the reciprocal).
SPARGE_PREDICT_HD bool quotient_fast_scale(float scale) {
  return scale >= 0x1p-120f && scale <= 0x1p120f;
}

// Division of non-negative int32 numerators by a fixed positive divisor with one multiply-high, one add and
// one shift (round-up multiplier: s = ceil(log2 d), m = floor(2^32 (2^s - d) / d) + 1, n / d = (mulhi(n, m) +
// n) >> s for 0 <= n < 2^31): the work-item decoding of the statistics kernel divides by runtime sizes per
// item.
struct FastDiv {
  uint32_t m = 1;
  int shift = 0, d = 1;
  FastDiv() = default;
  explicit FastDiv(int divisor) : d(divisor) {
    while ((int64_t{1} << shift) < divisor) ++shift;
    m = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - divisor)) / divisor + 1);
  }
  SPARGE_PREDICT_HD int div(int n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(static_cast<uint32_t>(n), m);
#else
    const uint32_t hi = static_cast<uint32_t>((uint64_t{static_cast<uint32_t>(n)} * m) >> 32);
#endif
    return static_cast<int>((hi + static_cast<uint32_t>(n)) >> shift);
  }
};

}  // namespace sparge::cuda::predict
