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

}  // namespace sparge::cuda::predict
