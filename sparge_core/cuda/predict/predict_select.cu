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

// grid (num_q_blocks, heads_q, batch), kSelectThreads threads, dynamic shared memory:
// sort_size * (4 + 4) bytes (probabilities, indices) + num_k_blocks flags + head_dim floats.
__global__ void __launch_bounds__(kSelectThreads) select_kernel(SelectParams p) {
  extern __shared__ unsigned char smem[];
  float* s_prob = reinterpret_cast<float*>(smem);
  int* s_idx = reinterpret_cast<int*>(s_prob + p.sort_size);
  float* s_q = reinterpret_cast<float*>(s_idx + p.sort_size);
  unsigned char* s_flag = reinterpret_cast<unsigned char*>(s_q + p.head_dim);
  __shared__ float s_red[kSelectThreads / 32];
  __shared__ int s_keep;
  __shared__ int s_scan[kSelectThreads];

  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int nkb = p.num_k_blocks, hkv = h / p.kv_group, heads_kv = p.heads_q / p.kv_group;
  const int64_t row = (static_cast<int64_t>(b) * p.heads_q + h) * p.num_q_blocks + i;
  const int64_t kv_bh = static_cast<int64_t>(b) * heads_kv + hkv;
  const float theta = p.simthreshd1[h];
  const int off = p.seq_k - p.seq_q;
  const int q_first = i * p.block_q, q_last = min(q_first + p.block_q, p.seq_q) - 1;
  // Causal-valid key blocks of this row: j <= last_valid.
  const int last_valid = p.causal ? min(nkb - 1, (q_last + off) / p.block_k) : nkb - 1;

  for (int c = tid; c < p.head_dim; c += kSelectThreads) s_q[c] = p.pooled_q[row * p.head_dim + c];
  __syncthreads();

  // Compressed scores of the candidates (valid and self-similar key blocks); -inf elsewhere.
  float local_max = -INFINITY;
  for (int j = tid; j < p.sort_size; j += kSelectThreads) {
    float s = -INFINITY;
    if (j < nkb && j <= last_valid && p.sim_k[kv_bh * nkb + j] > theta) {
      const float* kp = p.pooled_k + (kv_bh * nkb + j) * p.head_dim;
      float dot = 0.f;
      for (int c = 0; c < p.head_dim; ++c) dot += s_q[c] * kp[c];
      s = dot * p.inv_sqrt_d;
    }
    s_prob[j] = s;
    local_max = fmaxf(local_max, s);
  }
  local_max = warp_max(local_max);
  if (lane == 0) s_red[warp] = local_max;
  __syncthreads();
  float row_max = -INFINITY;
  for (int w = 0; w < kSelectThreads / 32; ++w) row_max = fmaxf(row_max, s_red[w]);
  __syncthreads();

  // Softmax (a row without candidates keeps all zeros). Padding entries get -1 so that they sort last.
  float local_sum = 0.f;
  for (int j = tid; j < p.sort_size; j += kSelectThreads) {
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
  for (int w = 0; w < kSelectThreads / 32; ++w) denom += s_red[w];
  int n_candidates_local = 0;
  for (int j = tid; j < nkb; j += kSelectThreads) {
    if (denom > 0.f) s_prob[j] = s_prob[j] / denom;
    n_candidates_local += (j <= last_valid && p.sim_k[kv_bh * nkb + j] > theta) ? 1 : 0;
  }
  __syncthreads();

  // Bitonic sort of (probability, index) pairs.
  for (int k = 2; k <= p.sort_size; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int a = tid; a < p.sort_size; a += kSelectThreads) {
        const int c = a ^ j;
        if (c > a) {
          const bool ascending_block = (a & k) == 0;  // this sub-sequence goes in rank order
          const bool swap = ascending_block ? ranks_before(s_prob[c], s_idx[c], s_prob[a], s_idx[a])
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

  // Number of candidates (block reduction of the per-thread counts).
  s_scan[tid] = n_candidates_local;
  __syncthreads();
  if (tid == 0) {
    int n_candidates = 0;
    for (int t = 0; t < kSelectThreads; ++t) n_candidates += s_scan[t];
    int keep;
    if (!p.use_topk) {
      const float tau = p.cdfthreshd[h];
      if (tau >= 1.f) {
        keep = n_candidates;
      } else {
        double acc = 0.0;  // sequential float64 prefix sums rounded to float, as torch's CPU cumsum
        keep = 0;
        for (int r = 0; r < nkb; ++r) {
          acc += s_prob[r];
          keep += static_cast<float>(acc) <= tau ? 1 : 0;
        }
        if (p.keep_crossing) keep += 1;
      }
    } else {
      const int n_valid = last_valid + 1;
      keep = static_cast<int>(floor(p.topk[h] * n_valid + 1e-6));
    }
    keep = max(min(keep, n_candidates), min(n_candidates, 1));
    s_keep = keep;
  }
  __syncthreads();

  // Flags in block order: selected by rank, then the forced and causal rules.
  for (int j = tid; j < nkb; j += kSelectThreads) s_flag[j] = 0;
  __syncthreads();
  for (int r = tid; r < s_keep; r += kSelectThreads) s_flag[s_idx[r]] = 1;
  __syncthreads();
  const bool q_forced = !(p.sim_q[row] > theta);
  const int chunk = (nkb + kSelectThreads - 1) / kSelectThreads;
  const int j0 = min(nkb, tid * chunk), j1 = min(nkb, j0 + chunk);
  int local_count = 0;
  for (int j = j0; j < j1; ++j) {
    const int k_first = j * p.block_k, k_last = min(k_first + p.block_k, p.seq_k) - 1;
    const bool valid = j <= last_valid;
    const bool diagonal = p.causal && k_last >= q_first + off && k_first <= q_last + off;
    const bool k_forced = !(p.sim_k[kv_bh * nkb + j] > theta);
    const bool on = valid && (s_flag[j] || k_forced || q_forced || diagonal || (p.attention_sink && j == 0));
    s_flag[j] = on ? 1 : 0;
    p.dense[row * nkb + j] = on;
    local_count += on ? 1 : 0;
  }
  s_scan[tid] = local_count;
  __syncthreads();
  if (tid == 0) {  // exclusive scan of the per-thread counts
    int run = 0;
    for (int t = 0; t < kSelectThreads; ++t) {
      const int c = s_scan[t];
      s_scan[t] = run;
      run += c;
    }
    s_keep = run;  // the row's count
    p.counts[row] = run;
  }
  __syncthreads();
  int pos = s_scan[tid];
  int32_t* out = p.indices + row * nkb;
  for (int j = j0; j < j1; ++j)
    if (s_flag[j]) out[pos++] = j;
  for (int r = s_keep + tid; r < nkb; r += kSelectThreads) out[r] = -1;
}

}  // namespace predict

cudaError_t launch_block_mean(const float* sums, float* mean, int batch, int heads, int num_blocks, int seq,
                              int head_dim, cudaStream_t stream) {
  const dim3 grid(heads, batch);
  if (head_dim == 64) {
    predict::mean_kernel<64><<<grid, 64, 0, stream>>>(sums, mean, heads, num_blocks, seq);
  } else if (head_dim == 128) {
    predict::mean_kernel<128><<<grid, 128, 0, stream>>>(sums, mean, heads, num_blocks, seq);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

size_t select_smem_bytes(int sort_size, int num_k_blocks, int head_dim) {
  return static_cast<size_t>(sort_size) * (sizeof(float) + sizeof(int)) + head_dim * sizeof(float) +
         num_k_blocks;
}

cudaError_t launch_select(const SelectParams& p, cudaStream_t stream) {
  const size_t smem = select_smem_bytes(p.sort_size, p.num_k_blocks, p.head_dim);
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(
        predict::select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(p.num_q_blocks, p.heads_q, p.batch);
  predict::select_kernel<<<grid, predict::kSelectThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace sparge::cuda
