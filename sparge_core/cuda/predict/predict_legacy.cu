// The first GPU predictor's statistics and score kernels, unchanged (one CTA per block and pass, a separate
// float64 mean kernel, a 64 x 64 score GEMM with 16-deep k steps). The API uses only the mean kernel (pass 2
// of quantize_qk_int8 and of the prediction's statistics, predict_quant.cu); predict_legacy.cpp composes them
// with the one-CTA-per-row selection into legacy::predict_block_mask, the bit-exactness oracle of the GPU
// test (the persistent kernel of predict_kernels.cuh must reproduce these sums exactly).
#include "predict_common.cuh"
#include "predict_launch.h"

namespace sparge::cuda::legacy {
namespace {

using predict::Element;
using predict::kInt8Max;
using predict::load_row;
using predict::warp_max;
using predict::warp_sum;

constexpr int kLegacyStatsThreads = 128;  // 4 warps; warp w reads rows w, w + 4, ... of the block
constexpr int kLegacyStatsWarps = kLegacyStatsThreads / 32;
constexpr int kLegacyRowsPerStep = 4;  // rows a warp loads before reducing (memory-level parallelism)

// grid (num_blocks, heads, batch), kLegacyStatsThreads threads.
template <DType kDtype, int kD>
__global__ void __launch_bounds__(kLegacyStatsThreads) block_stats_kernel(BlockStatsParams p) {
  constexpr int kVec = kD / 32;
  using T = typename Element<kDtype>::T;
  __shared__ float s_sum[kLegacyStatsWarps][kD];
  __shared__ float s_unit[kLegacyStatsWarps][kD];
  __shared__ float s_amax[kLegacyStatsWarps];
  __shared__ float s_scale;

  const int blk = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = blk * p.block, rows = min(p.block, p.seq - row0);
  const T* base = static_cast<const T*>(p.x) + b * p.batch_stride + h * p.head_stride;
  const int64_t bh = static_cast<int64_t>(b) * p.heads + h;
  const float* shift = p.shift != nullptr ? p.shift + bh * kD : nullptr;

  // Each warp takes kLegacyRowsPerStep consecutive rows per step: their loads are in flight together, and
  // their norm reductions (warp shuffles) interleave.
  const bool need_unit = p.similarity != nullptr;
  float sum[kVec] = {}, unit[kVec] = {}, amax = 0.f;
  for (int r0 = warp * kLegacyRowsPerStep; r0 < rows; r0 += kLegacyStatsWarps * kLegacyRowsPerStep) {
    float v[kLegacyRowsPerStep][kVec];
#pragma unroll
    for (int u = 0; u < kLegacyRowsPerStep; ++u) {
      if (r0 + u < rows) {
        load_row<kDtype, kD>(base + static_cast<int64_t>(row0 + r0 + u) * p.row_stride, shift, lane, v[u]);
      } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e) v[u][e] = 0.f;  // zero rows add nothing anywhere
      }
    }
    float sq[kLegacyRowsPerStep];
#pragma unroll
    for (int u = 0; u < kLegacyRowsPerStep; ++u) {
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
        for (int u = 0; u < kLegacyRowsPerStep; ++u) sq[u] += __shfl_xor_sync(0xffffffffu, sq[u], o);
      }
#pragma unroll
      for (int u = 0; u < kLegacyRowsPerStep; ++u) {
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
  for (int c = threadIdx.x; c < kD; c += kLegacyStatsThreads) {
    float total = 0.f, unit_total = 0.f;
#pragma unroll
    for (int w = 0; w < kLegacyStatsWarps; ++w) {
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
      for (int w = 0; w < kLegacyStatsWarps; ++w) sim += s_sum[0][w];
      p.similarity[out_block] = sim;
    }
  }
  if (p.quant == nullptr) return;

  if (threadIdx.x == 0) {
    float m = 0.f;
    for (int w = 0; w < kLegacyStatsWarps; ++w) m = fmaxf(m, s_amax[w]);
    const float scale = m > 0.f ? m / kInt8Max : 1.f / kInt8Max;
    s_scale = scale;
    p.quant_scale[out_block] = scale;
  }
  __syncthreads();
  const float scale = s_scale;
  int8_t* qbase = p.quant + bh * static_cast<int64_t>(p.seq) * kD;
#pragma unroll 4
  for (int r = warp; r < rows; r += kLegacyStatsWarps) {  // second read of the block: an L2 hit
    float v[kVec];
    load_row<kDtype, kD>(base + static_cast<int64_t>(row0 + r) * p.row_stride, shift, lane, v);
    int8_t* out = qbase + static_cast<int64_t>(row0 + r) * kD + lane * kVec;
#pragma unroll
    for (int i = 0; i < kVec; ++i)
      out[i] = static_cast<int8_t>(fminf(fmaxf(rintf(v[i] / scale), -kInt8Max), kInt8Max));
  }
}

// grid (heads, batch), kLegacyMeanThreads threads: mean[c] = sum over blocks of sums[c] / seq in float64.
// Thread t sums column t % kD over a contiguous range of blocks (part t / kD); the parts combine in a fixed
// order.
constexpr int kLegacyMeanThreads = 1024;
static_assert(kLegacyMeanThreads == kMeanSplit, "the persistent kernel sums the K mean in these parts");
template <int kD>
__global__ void __launch_bounds__(kLegacyMeanThreads)
    mean_kernel(const float* __restrict__ sums, float* __restrict__ mean, int heads, int num_blocks,
                int seq) {
  constexpr int kParts = kLegacyMeanThreads / kD;
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

// scores = A C^T per batch entry: 64 x 64 output tiles, 256 threads with 4 x 4 outputs each, 16-deep k steps
// through shared memory (float32 FMA; the order of the sum over d differs from a BLAS, within float
// rounding).
constexpr int kLegacyGemmTile = 64, kLegacyGemmK = 16, kLegacyGemmThreads = 256;
__global__ void __launch_bounds__(kLegacyGemmThreads)
    scores_kernel(const float* __restrict__ a, const float* __restrict__ c, float* __restrict__ out,
                  int rows_a, int rows_c, int dim) {
  __shared__ float s_a[kLegacyGemmK][kLegacyGemmTile + 1], s_c[kLegacyGemmK][kLegacyGemmTile + 1];
  const int64_t b = blockIdx.z;
  a += b * rows_a * static_cast<int64_t>(dim);
  c += b * rows_c * static_cast<int64_t>(dim);
  out += b * rows_a * static_cast<int64_t>(rows_c);
  const int m0 = blockIdx.y * kLegacyGemmTile, n0 = blockIdx.x * kLegacyGemmTile;
  const int tm = threadIdx.x / 16,
            tn = threadIdx.x % 16;  // this thread's 4 x 4 outputs: rows tm + 16 i, cols tn + 16 j
  float acc[4][4] = {};
  for (int k0 = 0; k0 < dim; k0 += kLegacyGemmK) {
    for (int e = threadIdx.x; e < kLegacyGemmTile * kLegacyGemmK; e += kLegacyGemmThreads) {
      const int r = e / kLegacyGemmK,
                kk = e % kLegacyGemmK;  // consecutive threads read consecutive k of one row
      s_a[kk][r] =
          (m0 + r < rows_a && k0 + kk < dim) ? a[(m0 + r) * static_cast<int64_t>(dim) + k0 + kk] : 0.f;
      s_c[kk][r] =
          (n0 + r < rows_c && k0 + kk < dim) ? c[(n0 + r) * static_cast<int64_t>(dim) + k0 + kk] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kLegacyGemmK; ++kk) {
      float av[4], cv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        av[i] = s_a[kk][tm + 16 * i];
        cv[i] = s_c[kk][tn + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], cv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int m = m0 + tm + 16 * i, n = n0 + tn + 16 * j;
      if (m < rows_a && n < rows_c) out[m * static_cast<int64_t>(rows_c) + n] = acc[i][j];
    }
}

}  // namespace

template <DType kDtype>
static cudaError_t launch_block_stats_typed(const BlockStatsParams& p, int batch, int head_dim,
                                            cudaStream_t stream) {
  const dim3 grid(p.num_blocks, p.heads, batch);
  if (head_dim == 64) {
    block_stats_kernel<kDtype, 64><<<grid, kLegacyStatsThreads, 0, stream>>>(p);
  } else if (head_dim == 128) {
    block_stats_kernel<kDtype, 128><<<grid, kLegacyStatsThreads, 0, stream>>>(p);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_block_stats(const BlockStatsParams& p, DType dtype, int batch, int head_dim,
                               cudaStream_t stream) {
  return dtype == DType::kFp16 ? launch_block_stats_typed<DType::kFp16>(p, batch, head_dim, stream)
                               : launch_block_stats_typed<DType::kBf16>(p, batch, head_dim, stream);
}

cudaError_t launch_block_mean(const float* sums, float* mean, int batch, int heads, int num_blocks, int seq,
                              int head_dim, cudaStream_t stream) {
  const dim3 grid(heads, batch);
  if (head_dim == 64) {
    mean_kernel<64><<<grid, kLegacyMeanThreads, 0, stream>>>(sums, mean, heads, num_blocks, seq);
  } else if (head_dim == 128) {
    mean_kernel<128><<<grid, kLegacyMeanThreads, 0, stream>>>(sums, mean, heads, num_blocks, seq);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_scores(const float* a, const float* c, float* scores, int batch, int rows_a, int rows_c,
                          int dim, cudaStream_t stream) {
  const dim3 grid((rows_c + kLegacyGemmTile - 1) / kLegacyGemmTile,
                  (rows_a + kLegacyGemmTile - 1) / kLegacyGemmTile, batch);
  scores_kernel<<<grid, kLegacyGemmThreads, 0, stream>>>(a, c, scores, rows_a, rows_c, dim);
  return cudaGetLastError();
}

}  // namespace sparge::cuda::legacy
