// The selection kernel and the launchers of the block-mean and selection kernels (dtype-independent: they
// read float32 statistics).
#include "predict_kernels.cuh"
#include "predict_launch.h"

namespace sparge::cuda {
namespace predict {

// Descending probability, then ascending block index: the order of a stable descending sort.
__device__ __forceinline__ bool ranks_before(float pa, int ia, float pb, int ib) {
  return pa > pb || (pa == pb && ia < ib);
}

// Exclusive prefix sum over the CTA of one value per thread (thread order); `total` gets the sum of all.
// s_warp: kWarps slots of shared memory. Contains two __syncthreads.
template <int kWarps, typename T>
__device__ T block_exclusive_scan(T v, T* s_warp, T& total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  T x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) s_warp[warp] = x;
  __syncthreads();
  T before = 0, all = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const T t = s_warp[w];
    before += w < warp ? t : T(0);
    all += t;
  }
  __syncthreads();
  total = all;
  return before + x - v;
}

// grid (num_q_blocks, heads_q, batch), kThreads threads (select_threads: about one per pair of sorted
// entries), dynamic shared memory: sort_size * (4 + 4) bytes (probabilities, indices) + num_k_blocks flags.
// Each thread owns a contiguous chunk of ranks (CDF) and of block indices (the CSR list), so both scans run
// in parallel and in a fixed order.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) select_kernel(SelectParams p) {
  constexpr int kWarps = kThreads / 32;
  extern __shared__ unsigned char smem[];
  float* s_prob = reinterpret_cast<float*>(smem);
  int* s_idx = reinterpret_cast<int*>(s_prob + p.sort_size);
  unsigned char* s_flag = reinterpret_cast<unsigned char*>(s_idx + p.sort_size);
  __shared__ float s_red[kWarps];
  __shared__ double s_dscan[kWarps];
  __shared__ int s_iscan[kWarps];

  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int nkb = p.num_k_blocks, heads_kv = p.heads_q / p.kv_group;
  const int64_t row = (static_cast<int64_t>(b) * p.heads_q + h) * p.num_q_blocks + i;
  const float* sim_k = p.sim_k + (static_cast<int64_t>(b) * heads_kv + h / p.kv_group) * nkb;
  const float* scores = p.scores + row * nkb;
  const bool inline_heads = p.heads_q <= SelectParams::kInlineHeads;
  const float theta = inline_heads ? p.simthreshd1_inline[h] : p.simthreshd1[h];
  const int off = p.seq_k - p.seq_q;
  const int q_first = i * p.block_q, q_last = min(q_first + p.block_q, p.seq_q) - 1;
  // Causal-valid key blocks of this row: j <= last_valid.
  const int last_valid = p.causal ? min(nkb - 1, (q_last + off) / p.block_k) : nkb - 1;

  // Compressed scores of the candidates (valid and self-similar key blocks); -inf elsewhere.
  float local_max = -INFINITY;
  int local_candidates = 0;
  for (int j = tid; j < p.sort_size; j += kThreads) {
    float s = -INFINITY;
    if (j <= last_valid && sim_k[j] > theta) {
      s = scores[j] * p.inv_sqrt_d;
      ++local_candidates;
    }
    s_prob[j] = s;
    local_max = fmaxf(local_max, s);
  }
  local_max = warp_max(local_max);
  if (lane == 0) s_red[warp] = local_max;
  __syncthreads();
  float row_max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) row_max = fmaxf(row_max, s_red[w]);
  __syncthreads();

  // Softmax (a row without candidates keeps all zeros). Padding entries get -1 so that they sort last.
  float local_sum = 0.f;
  for (int j = tid; j < p.sort_size; j += kThreads) {
    const float s = s_prob[j];
    const float e = (s == -INFINITY) ? 0.f : expf(s - row_max);
    s_prob[j] = j < nkb ? e : -1.f;
    s_idx[j] = j < nkb ? j : INT_MAX;
    local_sum += e;
  }
  local_sum = warp_sum(local_sum);
  if (lane == 0) s_red[warp] = local_sum;
  __syncthreads();
  float denom = 0.f;
  for (int w = 0; w < kWarps; ++w) denom += s_red[w];
  if (denom > 0.f)
    for (int j = tid; j < nkb; j += kThreads) s_prob[j] = s_prob[j] / denom;
  __syncthreads();

  // Bitonic sort of (probability, index) pairs into rank order.
  for (int k = 2; k <= p.sort_size; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int a = tid; a < p.sort_size; a += kThreads) {
        const int c = a ^ j;
        if (c > a) {
          const bool rank_order = (a & k) == 0;
          const bool swap = rank_order ? ranks_before(s_prob[c], s_idx[c], s_prob[a], s_idx[a])
                                       : ranks_before(s_prob[a], s_idx[a], s_prob[c], s_idx[c]);
          if (swap) {
            const float tp = s_prob[a];
            s_prob[a] = s_prob[c];
            s_prob[c] = tp;
            const int ti = s_idx[a];
            s_idx[a] = s_idx[c];
            s_idx[c] = ti;
          }
        }
      }
      __syncthreads();
    }
  }

  int n_candidates = 0;
  block_exclusive_scan<kWarps>(local_candidates, s_iscan, n_candidates);
  const int chunk = (nkb + kThreads - 1) / kThreads;
  const int j0 = min(nkb, tid * chunk), j1 = min(nkb, j0 + chunk);
  int keep;
  if (!p.use_topk) {
    const float tau = inline_heads ? p.cdfthreshd_inline[h] : p.cdfthreshd[h];
    if (tau >= 1.f) {
      keep = n_candidates;
    } else {
      // Cumulative sums in float64 rounded to float (as torch's CPU cumsum), counted where <= tau.
      double part = 0.0;
      for (int r = j0; r < j1; ++r) part += s_prob[r];
      double unused = 0.0;
      double acc = block_exclusive_scan<kWarps>(part, s_dscan, unused);
      int below = 0;
      for (int r = j0; r < j1; ++r) {
        acc += s_prob[r];
        below += static_cast<float>(acc) <= tau ? 1 : 0;
      }
      block_exclusive_scan<kWarps>(below, s_iscan, keep);
      if (p.keep_crossing) keep += 1;
    }
  } else {
    const double topk = inline_heads ? p.topk_inline[h] : p.topk[h];
    keep = static_cast<int>(floor(topk * (last_valid + 1) + 1e-6));
  }
  keep = max(min(keep, n_candidates), min(n_candidates, 1));

  // Flags in block order: selected by rank, then the forced and causal rules.
  for (int j = tid; j < nkb; j += kThreads) s_flag[j] = 0;
  __syncthreads();
  for (int r = tid; r < keep; r += kThreads) s_flag[s_idx[r]] = 1;
  __syncthreads();
  const bool q_forced = !(p.sim_q[row] > theta);
  int local_count = 0;
  for (int j = j0; j < j1; ++j) {
    const int k_first = j * p.block_k, k_last = min(k_first + p.block_k, p.seq_k) - 1;
    const bool valid = j <= last_valid;
    const bool diagonal = p.causal && k_last >= q_first + off && k_first <= q_last + off;
    const bool k_forced = !(sim_k[j] > theta);
    const bool on = valid && (s_flag[j] || k_forced || q_forced || diagonal || (p.attention_sink && j == 0));
    s_flag[j] = on ? 1 : 0;
    p.dense[row * nkb + j] = on;
    local_count += on ? 1 : 0;
  }
  int count = 0;
  int pos = block_exclusive_scan<kWarps>(local_count, s_iscan, count);
  if (tid == 0) p.counts[row] = count;
  int32_t* out = p.indices + row * nkb;
  for (int j = j0; j < j1; ++j)
    if (s_flag[j]) out[pos++] = j;
  for (int r = count + tid; r < nkb; r += kThreads) out[r] = -1;
}

// scores = A C^T per batch entry: 64 x 64 output tiles, 256 threads with 4 x 4 outputs each, 16-deep k steps
// through shared memory (float32 FMA; the order of the sum over d differs from a BLAS, within float
// rounding).
constexpr int kGemmTile = 64, kGemmK = 16, kGemmThreads = 256;
__global__ void __launch_bounds__(kGemmThreads)
    scores_kernel(const float* __restrict__ a, const float* __restrict__ c, float* __restrict__ out,
                  int rows_a, int rows_c, int dim) {
  __shared__ float s_a[kGemmK][kGemmTile + 1], s_c[kGemmK][kGemmTile + 1];
  const int64_t b = blockIdx.z;
  a += b * rows_a * static_cast<int64_t>(dim);
  c += b * rows_c * static_cast<int64_t>(dim);
  out += b * rows_a * static_cast<int64_t>(rows_c);
  const int m0 = blockIdx.y * kGemmTile, n0 = blockIdx.x * kGemmTile;
  const int tm = threadIdx.x / 16,
            tn = threadIdx.x % 16;  // this thread's 4 x 4 outputs: rows tm + 16 i, cols tn + 16 j
  float acc[4][4] = {};
  for (int k0 = 0; k0 < dim; k0 += kGemmK) {
    for (int e = threadIdx.x; e < kGemmTile * kGemmK; e += kGemmThreads) {
      const int r = e / kGemmK, kk = e % kGemmK;  // consecutive threads read consecutive k of one row
      s_a[kk][r] =
          (m0 + r < rows_a && k0 + kk < dim) ? a[(m0 + r) * static_cast<int64_t>(dim) + k0 + kk] : 0.f;
      s_c[kk][r] =
          (n0 + r < rows_c && k0 + kk < dim) ? c[(n0 + r) * static_cast<int64_t>(dim) + k0 + kk] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kGemmK; ++kk) {
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

}  // namespace predict

cudaError_t launch_block_mean(const float* sums, float* mean, int batch, int heads, int num_blocks, int seq,
                              int head_dim, cudaStream_t stream) {
  const dim3 grid(heads, batch);
  if (head_dim == 64) {
    predict::mean_kernel<64><<<grid, predict::kMeanThreads, 0, stream>>>(sums, mean, heads, num_blocks, seq);
  } else if (head_dim == 128) {
    predict::mean_kernel<128><<<grid, predict::kMeanThreads, 0, stream>>>(sums, mean, heads, num_blocks, seq);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_scores(const float* a, const float* c, float* scores, int batch, int rows_a, int rows_c,
                          int dim, cudaStream_t stream) {
  const dim3 grid((rows_c + predict::kGemmTile - 1) / predict::kGemmTile,
                  (rows_a + predict::kGemmTile - 1) / predict::kGemmTile, batch);
  predict::scores_kernel<<<grid, predict::kGemmThreads, 0, stream>>>(a, c, scores, rows_a, rows_c, dim);
  return cudaGetLastError();
}

size_t select_smem_bytes(int sort_size, int num_k_blocks) {
  return static_cast<size_t>(sort_size) * (sizeof(float) + sizeof(int)) + num_k_blocks;
}

template <int kThreads>
static cudaError_t launch_select_with(const SelectParams& p, dim3 grid, size_t smem, cudaStream_t stream) {
  if (smem > 48 * 1024) {
    auto* kernel = &predict::select_kernel<kThreads>;
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  predict::select_kernel<kThreads><<<grid, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_select(const SelectParams& p, cudaStream_t stream) {
  const size_t smem = select_smem_bytes(p.sort_size, p.num_k_blocks);
  const dim3 grid(p.num_q_blocks, p.heads_q, p.batch);
  // Threads ~ half the sorted entries (one compare-exchange each per bitonic step), 64 to 256.
  if (p.sort_size <= 128) return launch_select_with<64>(p, grid, smem, stream);
  if (p.sort_size <= 256) return launch_select_with<128>(p, grid, smem, stream);
  return launch_select_with<256>(p, grid, smem, stream);
}

}  // namespace sparge::cuda
