// The FP8 V operand of Precision::kInt8Fp8 (launch.h, QuantizeVParams): per-channel scales over the whole
// sequence, then V^T in e4m3 with the key permutation of params.h (fp8_key_position). Matches the
// reference emulation (src/attention.cpp): scale = amax / 448 in float32 (1 / 448 for an all-zero channel),
// value = e4m3(v / scale) with IEEE division, round to nearest even and saturation to +-448.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "launch.h"
#include "predict/predict_math.h"
#include "tile_ops.cuh"

namespace sparge::cuda {
namespace {

constexpr float kFp8Max = 448.f;
constexpr int kAmaxThreads = 256;
constexpr int kAmaxRows = 512;  // rows per CTA of the column max
constexpr int kTileKeys = 64;   // keys per CTA of the transpose (a multiple of 16: whole permutation groups)
constexpr int kTransposeThreads = 128;

template <typename T>
__device__ __forceinline__ float to_float(T x) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(x);
  } else {
    return __bfloat162float(x);
  }
}

// grid (ceil(N / kAmaxRows), H, B): max |v| per channel of kAmaxRows rows, merged into amax_work with an
// integer atomicMax (non-negative floats order like their bit patterns; amax_work starts at zero).
template <typename T, int kD>
__global__ void __launch_bounds__(kAmaxThreads) column_amax_kernel(QuantizeVParams p) {
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  constexpr int kRowThreads = kAmaxThreads / kChunks;
  __shared__ float s_max[kRowThreads][kD];
  const int b = blockIdx.z, h = blockIdx.y, tid = threadIdx.x;
  const int chunk = tid % kChunks, r0 = tid / kChunks;
  const int row_begin = blockIdx.x * kAmaxRows, row_end = min(p.seq, row_begin + kAmaxRows);
  const T* base = static_cast<const T*>(p.v) + b * p.batch_stride + h * p.head_stride + chunk * 8;
  float m[8] = {};
  for (int r = row_begin + r0; r < row_end; r += kRowThreads) {
    const uint4 raw = *reinterpret_cast<const uint4*>(base + static_cast<int64_t>(r) * p.row_stride);
    const T* x = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) m[i] = fmaxf(m[i], fabsf(to_float(x[i])));
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) s_max[r0][chunk * 8 + i] = m[i];
  __syncthreads();
  for (int c = tid; c < kD; c += kAmaxThreads) {
    float x = 0.f;
    for (int r = 0; r < kRowThreads; ++r) x = fmaxf(x, s_max[r][c]);
    atomicMax(reinterpret_cast<int*>(p.amax_work) + (static_cast<int64_t>(b) * p.heads + h) * kD + c,
              __float_as_int(x));
  }
}

// grid (n_pad / kTileKeys, H, B): kTileKeys keys x kD channels through shared memory (rows padded by one
// element: the four 16-key groups read by a quad land 8 banks apart), written as kD rows of kTileKeys bytes,
// each thread one 16-byte run of one row (four consecutive threads: one row's 64 contiguous bytes).
template <typename T, int kD>
__global__ void __launch_bounds__(kTransposeThreads) transpose_quantize_kernel(QuantizeVParams p) {
  constexpr int kStride = kD + 1;
  __shared__ T s_v[kTileKeys * kStride];
  // Values are divided by the scale (IEEE), as the reference does: rn_quotient with the reciprocal, or the
  // division itself for a scale outside quotient_fast_scale (CTA-uniform: s_fast).
  __shared__ float s_scale[kD], s_inv[kD];
  __shared__ int s_fast;
  const int b = blockIdx.z, h = blockIdx.y, tid = threadIdx.x, key0 = blockIdx.x * kTileKeys;
  const int64_t bh = static_cast<int64_t>(b) * p.heads + h;
  if (tid == 0) s_fast = 1;
  __syncthreads();
  for (int c = tid; c < kD; c += kTransposeThreads) {
    const float amax = p.amax_work[bh * kD + c];
    const float scale = amax > 0.f ? amax / kFp8Max : 1.f / kFp8Max;
    s_scale[c] = scale;
    s_inv[c] = __frcp_rn(scale);
    if (!predict::quotient_fast_scale(scale)) s_fast = 0;
    if (blockIdx.x == 0) p.v_scale[bh * kD + c] = scale;
  }
  const T* base = static_cast<const T*>(p.v) + b * p.batch_stride + h * p.head_stride;
  constexpr int kChunks = kD / 8;
  for (int c = tid; c < kTileKeys * kChunks; c += kTransposeThreads) {
    const int r = c / kChunks, chunk = c % kChunks, key = key0 + r;
    uint4 raw = make_uint4(0, 0, 0, 0);  // keys >= N: zero
    if (key < p.seq)
      raw = *reinterpret_cast<const uint4*>(base + static_cast<int64_t>(key) * p.row_stride + chunk * 8);
    const T* x = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) s_v[r * kStride + chunk * 8 + i] = x[i];
  }
  __syncthreads();
  uint8_t* out = p.vt + bh * kD * static_cast<int64_t>(p.n_pad) + key0;
  const auto quantize = [&](auto fast) {  // std::true_type: rn_quotient, std::false_type: the division
    for (int c = tid; c < kD * (kTileKeys / 16); c += kTransposeThreads) {
      const int d = c / (kTileKeys / 16), g = c % (kTileKeys / 16);
      const float scale = s_scale[d], inv = s_inv[d];
      float q[16];
#pragma unroll
      for (int pos = 0; pos < 16; ++pos) {
        const float x = to_float(s_v[(g * 16 + fp8_key_at_position(pos)) * kStride + d]);
        if constexpr (decltype(fast)::value) {
          q[pos] = predict::rn_quotient(x, scale, inv);
        } else {
          q[pos] = __fdiv_rn(x, scale);
        }
      }
      uint4 packed;
      packed.x = tile::pack_e4m3x4(q[0], q[1], q[2], q[3]);
      packed.y = tile::pack_e4m3x4(q[4], q[5], q[6], q[7]);
      packed.z = tile::pack_e4m3x4(q[8], q[9], q[10], q[11]);
      packed.w = tile::pack_e4m3x4(q[12], q[13], q[14], q[15]);
      *reinterpret_cast<uint4*>(out + static_cast<int64_t>(d) * p.n_pad + g * 16) = packed;
    }
  };
  if (s_fast != 0) {
    quantize(std::true_type{});
  } else {
    quantize(std::false_type{});
  }
}

template <typename T, int kD>
cudaError_t launch_with(const QuantizeVParams& p, cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(p.amax_work, 0, sizeof(float) * p.batch * p.heads * kD, stream);
  if (err != cudaSuccess) return err;
  const dim3 amax_grid((p.seq + kAmaxRows - 1) / kAmaxRows, p.heads, p.batch);
  column_amax_kernel<T, kD><<<amax_grid, kAmaxThreads, 0, stream>>>(p);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const dim3 grid(p.n_pad / kTileKeys, p.heads, p.batch);
  transpose_quantize_kernel<T, kD><<<grid, kTransposeThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_quantize_v_fp8(const QuantizeVParams& p, DType dtype, cudaStream_t stream) {
  if (p.n_pad % kTileKeys != 0 || (p.head_dim != 64 && p.head_dim != 128)) return cudaErrorInvalidValue;
  if (dtype == DType::kFp16)
    return p.head_dim == 64 ? launch_with<__half, 64>(p, stream) : launch_with<__half, 128>(p, stream);
  return p.head_dim == 64 ? launch_with<__nv_bfloat16, 64>(p, stream)
                          : launch_with<__nv_bfloat16, 128>(p, stream);
}

}  // namespace sparge::cuda
