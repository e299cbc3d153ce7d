// Device vocabulary shared by the stage-1 prediction kernels: the 16-bit element types, warp reductions, and
// the lane -> element mapping of a row (lane owns the D / 32 consecutive elements lane * D / 32 ...). That
// mapping fixes the order of every per-row and per-column float sum, so the current and the legacy kernels
// must share it for their statistics to agree bit for bit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "predict_math.h"
#include "predict_params.h"

namespace sparge::cuda::predict {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kInt8Max = 127.f;

template <DType kDtype>
struct Element;
template <>
struct Element<DType::kFp16> {
  using T = __half;
  using T2 = __half2;
  static __device__ float2 to_float2(T2 v) { return __half22float2(v); }
};
template <>
struct Element<DType::kBf16> {
  using T = __nv_bfloat16;
  using T2 = __nv_bfloat162;
  static __device__ float2 to_float2(T2 v) { return __bfloat1622float2(v); }
};

// Two packed 16-bit elements as floats (bf16: the exact widening as two bit operations, one per element).
template <DType kDtype>
__device__ __forceinline__ float2 unpack2(uint32_t word) {
  if constexpr (kDtype == DType::kBf16) {
    return make_float2(__uint_as_float(word << 16), __uint_as_float(word & 0xffff0000u));
  } else {
    typename Element<kDtype>::T2 v;
    static_assert(sizeof(v) == sizeof(word), "two 16-bit elements per word");
    memcpy(&v, &word, sizeof(word));
    return Element<kDtype>::to_float2(v);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}
__device__ __forceinline__ int warp_sum_int(int v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Loads the kVec = D / 32 consecutive elements of a row that `lane` owns, as floats, minus the shift.
template <DType kDtype, int kD>
__device__ __forceinline__ void load_row(const typename Element<kDtype>::T* row, const float* shift, int lane,
                                         float (&v)[kD / 32]) {
  constexpr int kVec = kD / 32;
  static_assert(kVec % 2 == 0, "pairs of 16-bit elements");
  using T2 = typename Element<kDtype>::T2;
  const T2* p = reinterpret_cast<const T2*>(row + lane * kVec);
#pragma unroll
  for (int i = 0; i < kVec / 2; ++i) {
    const float2 f = Element<kDtype>::to_float2(p[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
  if (shift != nullptr) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] -= shift[lane * kVec + i];
  }
}

// round(v / scale) clamped to the INT8 range (round half to even, as torch's round).
__device__ __forceinline__ int8_t quantize_int8(float v, float scale) {
  return static_cast<int8_t>(fminf(fmaxf(rintf(v / scale), -kInt8Max), kInt8Max));
}

// quantize_int8 for the values of one block, whose scale is max|v| / 127 (so |v / scale| <= 127 (1 + 2^-24):
// the clamp never acts), without a division, rounding or conversion instruction per element
// (int8_round_bits, predict_math.h; 3 FMA-pipe operations and a byte permute). A scale outside
// quotient_fast_scale (extreme or non-finite inputs only) takes quantize_int8 itself.
struct Int8Quantizer {
  float scale, inv;
  bool fast;
  __device__ __forceinline__ explicit Int8Quantizer(float s)
      : scale(s), inv(0.f), fast(quotient_fast_scale(s)) {
#if defined(__CUDA_ARCH__)
    inv = __frcp_rn(s);  // RN(1 / s)
#endif
  }
  // kN = 2 or 4 values packed into the low kN bytes.
  template <int kN>
  __device__ __forceinline__ uint32_t pack(const float (&v)[kN]) const {
    static_assert(kN == 2 || kN == 4, "2 or 4 bytes");
    if (fast) {
      const auto bits = [&](int e) { return int8_round_bits(v[e], scale, inv); };
      const uint32_t lo = __byte_perm(bits(0), bits(1), 0x0040);  // bytes: v0, v1, v0, v0
      if constexpr (kN == 2) {
        return lo;
      } else {
        return __byte_perm(lo, __byte_perm(bits(2), bits(3), 0x0040), 0x5410);  // v0, v1, v2, v3
      }
    }
    uint32_t packed = 0;
#pragma unroll
    for (int e = 0; e < kN; ++e)
      packed |= static_cast<uint32_t>(static_cast<uint8_t>(quantize_int8(v[e], scale))) << (8 * e);
    return packed;
  }
};

}  // namespace sparge::cuda::predict
