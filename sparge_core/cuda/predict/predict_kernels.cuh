// Stage-1 prediction kernels (device code). The arithmetic follows the reference (src/predict.cpp,
// src/blocks.cpp) step by step so that the masks agree except at floating-point ties:
//   block_stats_kernel: per (block, head, batch) CTA, one pass over the block's rows: sums, mean, similarity
//                       = ||mean_i x_i / ||x_i|| ||^2, max|x| and the INT8 values (rows re-read from L2);
//   mean_kernel:        K's token mean per (batch, kv head) from the block sums (float64, fixed order);
//   select_kernel (predict_select.cu): per mask row (query block, head, batch): compressed scores, softmax, a
//   bitonic sort
//                       (probability descending, block index ascending: the reference's stable sort), the CDF
//                       accumulated sequentially in float64 (as torch's CPU cumsum), top-k, the forced rows
//                       and columns, the causal rules, and the row's ascending CSR list.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cstdint>

#include "predict_params.h"

namespace sparge::cuda::predict {

constexpr int kStatsThreads = 128;  // 4 warps; warp w reads rows w, w + 4, ... of the block
constexpr int kStatsWarps = kStatsThreads / 32;
constexpr int kRowsPerStep = 4;  // rows a warp loads before reducing (memory-level parallelism)
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

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
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

// grid (num_blocks, heads, batch), kStatsThreads threads.
template <DType kDtype, int kD>
__global__ void __launch_bounds__(kStatsThreads) block_stats_kernel(BlockStatsParams p) {
  constexpr int kVec = kD / 32;
  using T = typename Element<kDtype>::T;
  __shared__ float s_sum[kStatsWarps][kD];
  __shared__ float s_unit[kStatsWarps][kD];
  __shared__ float s_amax[kStatsWarps];
  __shared__ float s_scale;

  const int blk = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = blk * p.block, rows = min(p.block, p.seq - row0);
  const T* base = static_cast<const T*>(p.x) + b * p.batch_stride + h * p.head_stride;
  const int64_t bh = static_cast<int64_t>(b) * p.heads + h;
  const float* shift = p.shift != nullptr ? p.shift + bh * kD : nullptr;

  // Each warp takes kRowsPerStep consecutive rows per step: their loads are in flight together, and their
  // norm reductions (warp shuffles) interleave.
  const bool need_unit = p.similarity != nullptr;
  float sum[kVec] = {}, unit[kVec] = {}, amax = 0.f;
  for (int r0 = warp * kRowsPerStep; r0 < rows; r0 += kStatsWarps * kRowsPerStep) {
    float v[kRowsPerStep][kVec];
#pragma unroll
    for (int u = 0; u < kRowsPerStep; ++u) {
      if (r0 + u < rows) {
        load_row<kDtype, kD>(base + static_cast<int64_t>(row0 + r0 + u) * p.row_stride, shift, lane, v[u]);
      } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e) v[u][e] = 0.f;  // zero rows add nothing anywhere
      }
    }
    float sq[kRowsPerStep];
#pragma unroll
    for (int u = 0; u < kRowsPerStep; ++u) {
      sq[u] = 0.f;
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        sum[e] += v[u][e];
        sq[u] += v[u][e] * v[u][e];
        amax = fmaxf(amax, fabsf(v[u][e]));
      }
    }
    if (need_unit) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
        for (int u = 0; u < kRowsPerStep; ++u) sq[u] += __shfl_xor_sync(0xffffffffu, sq[u], o);
      }
#pragma unroll
      for (int u = 0; u < kRowsPerStep; ++u) {
        const float norm = sqrtf(sq[u]);
        if (norm > 0.f) {
          const float inv =
              1.f / norm;  // one division per row (the reference divides each element: within 1 ulp)
#pragma unroll
          for (int e = 0; e < kVec; ++e) unit[e] += v[u][e] * inv;  // a zero row adds nothing
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    s_sum[warp][lane * kVec + i] = sum[i];
    s_unit[warp][lane * kVec + i] = unit[i];
  }
  amax = warp_max(amax);
  if (lane == 0) s_amax[warp] = amax;
  __syncthreads();

  // Column totals in a fixed warp order (deterministic), then the block's outputs.
  const float count = static_cast<float>(rows);
  const int64_t out_block = bh * p.num_blocks + blk;
  float sim_part = 0.f;
  for (int c = threadIdx.x; c < kD; c += kStatsThreads) {
    float total = 0.f, unit_total = 0.f;
#pragma unroll
    for (int w = 0; w < kStatsWarps; ++w) {
      total += s_sum[w][c];
      unit_total += s_unit[w][c];
    }
    if (p.sums != nullptr) p.sums[out_block * kD + c] = total;
    if (p.pooled != nullptr) p.pooled[out_block * kD + c] = total / count;
    const float mean_unit = unit_total / count;
    sim_part += mean_unit * mean_unit;
  }
  if (p.similarity != nullptr) {
    __syncthreads();  // s_sum is reused for the similarity reduction
    sim_part = warp_sum(sim_part);
    if (lane == 0) s_sum[0][warp] = sim_part;
    __syncthreads();
    if (threadIdx.x == 0) {
      float sim = 0.f;
      for (int w = 0; w < kStatsWarps; ++w) sim += s_sum[0][w];
      p.similarity[out_block] = sim;
    }
  }
  if (p.quant == nullptr) return;

  if (threadIdx.x == 0) {
    float m = 0.f;
    for (int w = 0; w < kStatsWarps; ++w) m = fmaxf(m, s_amax[w]);
    const float scale = m > 0.f ? m / kInt8Max : 1.f / kInt8Max;
    s_scale = scale;
    p.quant_scale[out_block] = scale;
  }
  __syncthreads();
  const float scale = s_scale;
  int8_t* qbase = p.quant + bh * static_cast<int64_t>(p.seq) * kD;
#pragma unroll 4
  for (int r = warp; r < rows; r += kStatsWarps) {  // second read of the block: an L2 hit
    float v[kVec];
    load_row<kDtype, kD>(base + static_cast<int64_t>(row0 + r) * p.row_stride, shift, lane, v);
    int8_t* out = qbase + static_cast<int64_t>(row0 + r) * kD + lane * kVec;
#pragma unroll
    for (int i = 0; i < kVec; ++i)
      out[i] = static_cast<int8_t>(fminf(fmaxf(rintf(v[i] / scale), -kInt8Max), kInt8Max));
  }
}

// grid (heads, batch), kMeanThreads threads: mean[c] = sum over blocks of sums[c] / seq in float64. Thread t
// sums column t % kD over a contiguous range of blocks (part t / kD); the parts combine in a fixed order.
constexpr int kMeanThreads = 1024;
template <int kD>
__global__ void __launch_bounds__(kMeanThreads)
    mean_kernel(const float* __restrict__ sums, float* __restrict__ mean, int heads, int num_blocks,
                int seq) {
  constexpr int kParts = kMeanThreads / kD;
  __shared__ double s_part[kParts][kD];
  const int64_t bh = static_cast<int64_t>(blockIdx.y) * heads + blockIdx.x;
  const int c = threadIdx.x % kD, part = threadIdx.x / kD;
  const int per = (num_blocks + kParts - 1) / kParts;
  const int j0 = min(num_blocks, part * per), j1 = min(num_blocks, j0 + per);
  double acc = 0.0;
#pragma unroll 8
  for (int j = j0; j < j1; ++j) acc += sums[(bh * num_blocks + j) * kD + c];
  s_part[part][c] = acc;
  __syncthreads();
  if (part == 0) {
    double total = 0.0;
    for (int q = 0; q < kParts; ++q) total += s_part[q][c];
    mean[bh * kD + c] = static_cast<float>(total / seq);
  }
}

}  // namespace sparge::cuda::predict
