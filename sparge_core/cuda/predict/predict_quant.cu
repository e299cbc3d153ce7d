// INT8 Q and smoothed K without the prediction's statistics (quantize_qk_int8: the quantized attention with a
// given mask): three plain passes instead of the persistent statistics kernel, which does per block the
// prediction's bookkeeping (work queue, staged rows, tickets) and ran at ~1.5 TB/s in this role. Passes 1 and
// 2 (launch_k_mean) are also the first two passes of the prediction's statistics (stats_pass_kernel).
//   1. k_block_sums_kernel: the K block sums, one CTA per block, in the legacy kernel's order (4 warps, warp
//   w
//      adds rows 4 w + 16 s + u, s = 0, 1, ..., u < 4, into per-lane column sums; the warps combine in
//      order), so the sums, hence the float64 mean, are the prediction's bit for bit;
//   2. the float64 K mean (the legacy mean kernel, predict_legacy.cu: the prediction's part order);
//   3. quantize_blocks_kernel: per block of Q and of K - mean, max |x| -> scale = max / 127 -> INT8 values
//      (Int8Quantizer, as the statistics kernel), the block held in registers between its two uses. K's
//      blocks go first and in reverse order, so the heads whose sums were taken last are still in L2.
// Bytes at N = 32K, H = 16, D = 128, bf16: K twice, Q once, the INT8 values once: 512 MB.
#include <type_traits>

#include "predict_common.cuh"
#include "predict_launch.h"

namespace sparge::cuda {
namespace {

using predict::Element;
using predict::Int8Quantizer;
using predict::kInt8Max;
using predict::unpack2;
using predict::warp_max;

// The K block sums (pass 1).
constexpr int kSumThreads = 128;  // 4 warps: the legacy row -> warp mapping fixes the order of each sum
constexpr int kSumWarps = kSumThreads / 32;
constexpr int kSumRowsPerStep = 4;
constexpr int kSumStepRows = kSumWarps * kSumRowsPerStep;  // 16 rows per step of the four warps
// Steps whose loads are issued together: 4 x 16 = 64 rows (a 64-row K block in one round, 16 KiB at D = 128).
constexpr int kSumStepsPerRound = 4;

// grid (B * H * NB), kSumThreads threads: sums (B, H, NB, D) of the rows of each block of k.x.
template <DType kDtype, int kD>
__global__ void __launch_bounds__(kSumThreads) k_block_sums_kernel(StatsOperand k, float* __restrict__ sums) {
  constexpr int kVec = kD / 32;  // lane owns columns lane * kVec .. + kVec (predict_common.cuh)
  constexpr int kWords = kVec / 2;
  using T = typename Element<kDtype>::T;
  __shared__ float s_sum[kSumWarps][kD];

  const int64_t item = blockIdx.x;
  const int64_t bh = item / k.num_blocks;
  const int blk = static_cast<int>(item - bh * k.num_blocks);
  const int b = static_cast<int>(bh / k.heads), h = static_cast<int>(bh - int64_t{b} * k.heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = blk * k.block, rows = min(k.block, k.seq - row0);
  const T* base = static_cast<const T*>(k.x) + b * k.batch_stride + h * k.head_stride +
                  static_cast<int64_t>(row0) * k.row_stride + lane * kVec;

  float sum[kVec] = {};
  for (int first = warp * kSumRowsPerStep; first < rows; first += kSumStepsPerRound * kSumStepRows) {
    uint32_t w[kSumStepsPerRound][kSumRowsPerStep][kWords];
#pragma unroll
    for (int s = 0; s < kSumStepsPerRound; ++s) {
#pragma unroll
      for (int u = 0; u < kSumRowsPerStep; ++u) {
        const int r = first + s * kSumStepRows + u;
        const T* src = base + static_cast<int64_t>(r) * k.row_stride;
        if (r >= rows) {
#pragma unroll
          for (int i = 0; i < kWords; ++i) w[s][u][i] = 0u;  // the legacy zero rows: +0 adds nothing
        } else if constexpr (kWords == 2) {
          const uint2 v = __ldg(reinterpret_cast<const uint2*>(src));  // kept in L2 for pass 3
          w[s][u][0] = v.x;
          w[s][u][1] = v.y;
        } else {
          w[s][u][0] = __ldg(reinterpret_cast<const unsigned*>(src));
        }
      }
    }
#pragma unroll
    for (int s = 0; s < kSumStepsPerRound; ++s) {
      if (first + s * kSumStepRows >= rows) break;  // the legacy loop ends at its first step past the block
#pragma unroll
      for (int u = 0; u < kSumRowsPerStep; ++u) {
#pragma unroll
        for (int i = 0; i < kWords; ++i) {
          const float2 f = unpack2<kDtype>(w[s][u][i]);
          sum[2 * i] += f.x;
          sum[2 * i + 1] += f.y;
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kVec; ++i) s_sum[warp][lane * kVec + i] = sum[i];
  __syncthreads();
  for (int c = threadIdx.x; c < kD; c += kSumThreads) {
    float total = 0.f;
#pragma unroll
    for (int wi = 0; wi < kSumWarps; ++wi) total += s_sum[wi][c];
    sums[item * kD + c] = total;
  }
}

// The quantization (pass 3).
constexpr int kQuantThreads = 256;
constexpr int kQuantWarps = kQuantThreads / 32;
constexpr int kQuantVecs = 8;  // 16-byte vectors (8 elements) a thread holds: 32 KiB per CTA
constexpr int kElemsPerVec = 8;

struct QuantizeParams {
  StatsOperand q, k;    // quant and quant_scale set on both
  const float* k_mean;  // (B, Hkv, D), subtracted from every K row
  int64_t k_items = 0;  // B * Hkv * NKB: the first items of the grid are K's blocks, last block first
};

template <DType kDtype, int kD>
__global__ void __launch_bounds__(kQuantThreads) quantize_blocks_kernel(const QuantizeParams p) {
  constexpr int kRowVecs = kD / kElemsPerVec;             // vectors per row: 16 or 8
  constexpr int kRowsPerPass = kQuantThreads / kRowVecs;  // rows per vector slot: 16 or 32
  constexpr int kChunkRows = kRowsPerPass * kQuantVecs;   // rows held in registers: 128 or 256
  static_assert(kQuantThreads % kRowVecs == 0, "a thread keeps one column vector for every row");
  using T = typename Element<kDtype>::T;
  __shared__ float s_amax[kQuantWarps];

  const bool is_k = blockIdx.x < p.k_items;
  const StatsOperand& o = is_k ? p.k : p.q;
  const int64_t item = is_k ? p.k_items - 1 - blockIdx.x : blockIdx.x - p.k_items;
  const int64_t bh = item / o.num_blocks;
  const int blk = static_cast<int>(item - bh * o.num_blocks);
  const int b = static_cast<int>(bh / o.heads), h = static_cast<int>(bh - int64_t{b} * o.heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int col = tid % kRowVecs * kElemsPerVec, row_in_pass = tid / kRowVecs;
  const int row0 = blk * o.block, rows = min(o.block, o.seq - row0);
  const T* base = static_cast<const T*>(o.x) + b * o.batch_stride + h * o.head_stride +
                  static_cast<int64_t>(row0) * o.row_stride + col;

  float shift[kElemsPerVec] = {};  // Q: x - 0 is x, bit for bit
  if (is_k) {
    const float4* m = reinterpret_cast<const float4*>(p.k_mean + bh * kD + col);
    const float4 lo = m[0], hi = m[1];
    const float s[kElemsPerVec] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
    for (int e = 0; e < kElemsPerVec; ++e) shift[e] = s[e];
  }
  const auto load = [&](int r) { return __ldcs(reinterpret_cast<const uint4*>(base + r * o.row_stride)); };
  const auto values = [&](const uint4& w, float(&v)[kElemsPerVec]) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = unpack2<kDtype>(words[i]);
      v[2 * i] = f.x - shift[2 * i];
      v[2 * i + 1] = f.y - shift[2 * i + 1];
    }
  };
  const auto add_amax = [&](const uint4& w, float& amax) {
    float v[kElemsPerVec];
    values(w, v);
#pragma unroll
    for (int e = 0; e < kElemsPerVec; ++e) amax = fmaxf(amax, fabsf(v[e]));
  };

  // max |x| of the block: the first kChunkRows rows stay in registers, later ones (blocks longer than that)
  // are read twice.
  uint4 held[kQuantVecs];
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < kQuantVecs; ++i) {
    const int r = row_in_pass + i * kRowsPerPass;
    held[i] = r < rows ? load(r) : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int i = 0; i < kQuantVecs; ++i)
    if (row_in_pass + i * kRowsPerPass < rows) add_amax(held[i], amax);
  for (int r = kChunkRows + row_in_pass; r < rows; r += kRowsPerPass) add_amax(load(r), amax);
  amax = warp_max(amax);
  if (lane == 0) s_amax[warp] = amax;
  __syncthreads();
  float m = 0.f;
#pragma unroll
  for (int wi = 0; wi < kQuantWarps; ++wi) m = fmaxf(m, s_amax[wi]);
  const float scale = m > 0.f ? m / kInt8Max : 1.f / kInt8Max;  // the statistics kernel's scale
  if (tid == 0) o.quant_scale[bh * o.num_blocks + blk] = scale;

  const Int8Quantizer quantizer(scale);
  int8_t* out = o.quant + (bh * o.seq + row0) * kD + col;
  const auto store = [&](const uint4& w, int r) {
    float v[kElemsPerVec];
    values(w, v);
    const float lo[4] = {v[0], v[1], v[2], v[3]}, hi[4] = {v[4], v[5], v[6], v[7]};
    __stcs(reinterpret_cast<uint2*>(out + static_cast<int64_t>(r) * kD),
           make_uint2(quantizer.pack<4>(lo), quantizer.pack<4>(hi)));
  };
#pragma unroll
  for (int i = 0; i < kQuantVecs; ++i) {
    const int r = row_in_pass + i * kRowsPerPass;
    if (r < rows) store(held[i], r);
  }
  for (int r = kChunkRows + row_in_pass; r < rows; r += kRowsPerPass) store(load(r), r);
}

template <DType kDtype, int kD>
cudaError_t launch_k_mean_typed(const StatsOperand& k, int batch, float* k_sums, float* k_mean,
                                cudaStream_t stream) {
  const int64_t k_items = int64_t{batch} * k.heads * k.num_blocks;
  k_block_sums_kernel<kDtype, kD><<<static_cast<unsigned>(k_items), kSumThreads, 0, stream>>>(k, k_sums);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  return legacy::launch_block_mean(k_sums, k_mean, batch, k.heads, k.num_blocks, k.seq, kD, stream);
}

template <DType kDtype, int kD>
cudaError_t launch_quantize_typed(const StatsOperand& q, const StatsOperand& k, int batch, float* k_sums,
                                  float* k_mean, cudaStream_t stream) {
  const cudaError_t e = launch_k_mean_typed<kDtype, kD>(k, batch, k_sums, k_mean, stream);
  if (e != cudaSuccess) return e;
  QuantizeParams p;
  p.q = q;
  p.k = k;
  p.k_mean = k_mean;
  p.k_items = int64_t{batch} * k.heads * k.num_blocks;
  const int64_t q_items = int64_t{batch} * q.heads * q.num_blocks;
  quantize_blocks_kernel<kDtype, kD>
      <<<static_cast<unsigned>(p.k_items + q_items), kQuantThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

// dtype x head dim (64 or 128) -> launch<kDtype, kD>().
template <typename Launch>
cudaError_t dispatch(DType dtype, int head_dim, const Launch& launch) {
  if (dtype == DType::kFp16) {
    if (head_dim == 64)
      return launch(std::integral_constant<DType, DType::kFp16>(), std::integral_constant<int, 64>());
    if (head_dim == 128)
      return launch(std::integral_constant<DType, DType::kFp16>(), std::integral_constant<int, 128>());
  } else {
    if (head_dim == 64)
      return launch(std::integral_constant<DType, DType::kBf16>(), std::integral_constant<int, 64>());
    if (head_dim == 128)
      return launch(std::integral_constant<DType, DType::kBf16>(), std::integral_constant<int, 128>());
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_k_mean(const StatsOperand& k, DType dtype, int batch, int head_dim, float* k_sums,
                          float* k_mean, cudaStream_t stream) {
  return dispatch(dtype, head_dim, [&](auto t, auto d) {
    return launch_k_mean_typed<decltype(t)::value, decltype(d)::value>(k, batch, k_sums, k_mean, stream);
  });
}

cudaError_t launch_quantize_qk(const StatsOperand& q, const StatsOperand& k, DType dtype, int batch,
                               int head_dim, float* k_sums, float* k_mean, cudaStream_t stream) {
  if (q.quant == nullptr || q.quant_scale == nullptr || k.quant == nullptr || k.quant_scale == nullptr)
    return cudaErrorInvalidValue;
  return dispatch(dtype, head_dim, [&](auto t, auto d) {
    return launch_quantize_typed<decltype(t)::value, decltype(d)::value>(q, k, batch, k_sums, k_mean, stream);
  });
}

}  // namespace sparge::cuda
