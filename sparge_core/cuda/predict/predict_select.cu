// The selection kernels (a warp per mask row up to kWarpSelectMaxKeyBlocks key blocks, else a CTA per row;
// identical results) and the score GEMM, with their launchers (dtype-independent: they read float32
// statistics).
#include "predict_common.cuh"
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

// The CTA kernel's thread count for a row of sort_size sorted entries (about one per pair of entries). The
// warp kernel reproduces that kernel's reduction orders, so both take it from here.
__host__ __device__ constexpr int cta_select_threads(int sort_size) {
  return sort_size <= 128 ? 64 : sort_size <= 256 ? 128 : 256;
}

constexpr int kWarpSelectRows = 4;  // mask rows (one per warp) per CTA of the warp selection

// Position p of a warp's sorted row in shared memory: the low 5 bits XOR the next 5, so that the 32 lanes
// storing their kPer consecutive ranks (p = lane * kPer + r) hit 32 different banks; a bijection on every
// aligned group of 32 positions, so reads of 32 consecutive ranks stay conflict-free too.
__device__ __forceinline__ int sorted_slot(int p) {
  return p ^ ((p >> 5) & 31);
}

// Sorts the 32 * kPer values of a warp (lane holds positions lane * kPer + r) into descending order: a
// bitonic network, compare-exchanges in registers for strides < kPer and across lanes (one shuffle per
// value) above. Only values move: ties are resolved afterwards by block index (select_warp_kernel).
template <int kPer>
__device__ __forceinline__ void warp_sort_descending(float (&v)[kPer], int lane) {
  constexpr int kLogPer = kPer == 1 ? 0 : kPer == 2 ? 1 : kPer == 4 ? 2 : kPer == 8 ? 3 : 4;
  static_assert((1 << kLogPer) == kPer, "kPer: a power of two <= 16");
  constexpr int kLogN = kLogPer + 5;
#pragma unroll
  for (int lk = 1; lk <= kLogN; ++lk) {
#pragma unroll
    for (int lj = lk - 1; lj >= 0; --lj) {
      const int k = 1 << lk, j = 1 << lj;
      if (lj < kLogPer) {  // partner: register r ^ j of this lane
#pragma unroll
        for (int r = 0; r < kPer; ++r) {
          if ((r & j) == 0) {
            const bool descending = ((lane * kPer + r) & k) == 0;
            const float a = v[r], b = v[r | j];
            const float hi = fmaxf(a, b), lo = fminf(a, b);
            v[r] = descending ? hi : lo;
            v[r | j] = descending ? lo : hi;
          }
        }
      } else {  // partner: the same register of lane ^ (j / kPer)
        const int m = j >> kLogPer;
        const bool lower = (lane & m) == 0;
#pragma unroll
        for (int r = 0; r < kPer; ++r) {
          const bool descending = ((lane * kPer + r) & k) == 0;
          const float other = __shfl_xor_sync(kFullMask, v[r], m);
          v[r] = lower == descending ? fmaxf(v[r], other) : fminf(v[r], other);
        }
      }
    }
  }
}

// grid ceil(rows / kWarpSelectRows), kWarpSelectRows warps: one mask row per warp, rows of at most
// 32 * kPer key blocks (kPer = sort_size / 32, at least 1). Same results as select_kernel bit for bit: the
// softmax denominator, the float64 CDF scan and the counts follow that kernel's reduction orders exactly
// (emulating its cta_select_threads(sort_size) threads), and the selected set is the same: the ranks < keep
// of the stable descending order are every block with probability > p* (the probability of rank keep - 1)
// and the first keep - #{> p*} blocks with probability == p* in block order. So only the values are sorted
// (a register bitonic network), and the ties are counted in block order with ballots.
template <int kPer>
__global__ void __launch_bounds__(kWarpSelectRows * 32) select_warp_kernel(SelectParams p) {
  constexpr int kN = 32 * kPer;
  constexpr int kThreadsV = cta_select_threads(kN);  // kN is sort_size rounded up to 32: the same count
  constexpr int kWarpsV = kThreadsV / 32;
  __shared__ float s_sorted[kWarpSelectRows][kN];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpSelectRows + warp;  // (b, h, i) row-major
  if (row >= static_cast<int64_t>(p.batch) * p.heads_q * p.num_q_blocks) return;  // no CTA barrier below
  const int i = static_cast<int>(row % p.num_q_blocks);
  const int64_t bhq = row / p.num_q_blocks;
  const int h = static_cast<int>(bhq % p.heads_q), b = static_cast<int>(bhq / p.heads_q);
  const int nkb = p.num_k_blocks, heads_kv = p.heads_q / p.kv_group;
  const float* sim_k = p.sim_k + (static_cast<int64_t>(b) * heads_kv + h / p.kv_group) * nkb;
  const float* scores = p.scores + row * nkb;
  const bool inline_heads = p.heads_q <= SelectParams::kInlineHeads;
  const float theta = inline_heads ? p.simthreshd1_inline[h] : p.simthreshd1[h];
  const int off = p.seq_k - p.seq_q;
  const int q_first = i * p.block_q, q_last = min(q_first + p.block_q, p.seq_q) - 1;
  // Causal-valid key blocks of this row: j <= last_valid.
  const int last_valid = p.causal ? min(nkb - 1, (q_last + off) / p.block_k) : nkb - 1;

  // Register r holds key block j = 32 r + lane (block order). Compressed scores of the candidates (valid
  // and self-similar key blocks); -inf elsewhere.
  float prob[kPer];
  float row_max = -INFINITY;
  int candidates = 0;
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int j = 32 * r + lane;
    float s = -INFINITY;
    if (j <= last_valid && sim_k[j] > theta) {
      s = scores[j] * p.inv_sqrt_d;
      ++candidates;
    }
    prob[r] = s;
    row_max = fmaxf(row_max, s);
  }
  row_max = warp_max(row_max);
  const int n_candidates = warp_sum_int(candidates);

  // Softmax. The denominator in select_kernel's order: its thread t = 32 w + lane adds j = t, t + kThreadsV,
  // ... (here registers r = w, w + kWarpsV, ...), each of its warps reduces in a butterfly, then the warps in
  // order. Padding entries get -1 so that they sort last.
  float part[kWarpsV];
#pragma unroll
  for (int w = 0; w < kWarpsV; ++w) part[w] = 0.f;
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const float e = (prob[r] == -INFINITY) ? 0.f : expf(prob[r] - row_max);
    prob[r] = e;
    part[r % kWarpsV] += e;
  }
  float denom = 0.f;
#pragma unroll
  for (int w = 0; w < kWarpsV; ++w) denom += warp_sum(part[w]);
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int j = 32 * r + lane;
    prob[r] = j < nkb ? (denom > 0.f ? prob[r] / denom : prob[r]) : -1.f;
  }

  // The probabilities in descending order, rank by rank in shared memory.
  float* sorted = s_sorted[warp];
  {
    float v[kPer];
#pragma unroll
    for (int r = 0; r < kPer; ++r) v[r] = prob[r];
    warp_sort_descending<kPer>(v, lane);
#pragma unroll
    for (int r = 0; r < kPer; ++r) sorted[sorted_slot(lane * kPer + r)] = v[r];
  }
  __syncwarp();

  int keep;
  if (!p.use_topk) {
    const float tau = inline_heads ? p.cdfthreshd_inline[h] : p.cdfthreshd[h];
    if (tau >= 1.f) {
      keep = n_candidates;
    } else {
      // Cumulative sums in float64 rounded to float, counted where <= tau, as select_kernel computes them:
      // its thread t owns ranks [t * chunk, (t + 1) * chunk), adds them in float64, takes an exclusive scan
      // of those parts (Hillis-Steele within a warp, the warp totals in order, (before + x) - part), then
      // adds its ranks one by one.
      const int chunk = (nkb + kThreadsV - 1) / kThreadsV;
      double part_sum[kWarpsV], x[kWarpsV];
#pragma unroll
      for (int w = 0; w < kWarpsV; ++w) {
        const int t = 32 * w + lane;
        const int j0 = min(nkb, t * chunk), j1 = min(nkb, j0 + chunk);
        double s = 0.0;
        for (int r = j0; r < j1; ++r) s += sorted[sorted_slot(r)];
        part_sum[w] = s;
        x[w] = s;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          const double y = __shfl_up_sync(kFullMask, x[w], o);
          if (lane >= o) x[w] += y;
        }
      }
      double before = 0.0;  // the totals of the earlier (emulated) warps, added in order
      int below = 0;
#pragma unroll
      for (int w = 0; w < kWarpsV; ++w) {
        const int t = 32 * w + lane;
        const int j0 = min(nkb, t * chunk), j1 = min(nkb, j0 + chunk);
        double acc = before + x[w] - part_sum[w];
        before += __shfl_sync(kFullMask, x[w], 31);
        for (int r = j0; r < j1; ++r) {
          acc += sorted[sorted_slot(r)];
          below += static_cast<float>(acc) <= tau ? 1 : 0;
        }
      }
      keep = warp_sum_int(below);
      if (p.keep_crossing) keep += 1;
    }
  } else {
    const double topk = inline_heads ? p.topk_inline[h] : p.topk[h];
    keep = static_cast<int>(floor(topk * (last_valid + 1) + 1e-6));
  }
  keep = max(min(keep, n_candidates), min(n_candidates, 1));

  // The selected set: probability > p*, and the first `need` blocks (block order) with probability == p*.
  float pstar = 0.f;
  int need = 0;
  if (keep > 0) {
    pstar = sorted[sorted_slot(keep - 1)];
    int greater = 0;
#pragma unroll
    for (int r = 0; r < kPer; ++r) greater += (32 * r + lane < nkb && prob[r] > pstar) ? 1 : 0;
    need = keep - warp_sum_int(greater);
  }

  // Flags in block order: selected, then the forced and causal rules; the CSR list by ballots.
  const bool q_forced = !(p.sim_q[row] > theta);
  const unsigned lanes_below = (1u << lane) - 1u;
  int count = 0, ties = 0;
  bool* dense = p.dense + row * nkb;
  int32_t* out = p.indices + row * nkb;
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int j = 32 * r + lane;
    const bool in = j < nkb;
    const bool tie = keep > 0 && in && prob[r] == pstar;
    const unsigned tie_mask = __ballot_sync(kFullMask, tie);
    const bool selected =
        keep > 0 && in && (prob[r] > pstar || (tie && ties + __popc(tie_mask & lanes_below) < need));
    ties += __popc(tie_mask);
    bool on = false;
    if (in) {
      const int k_first = j * p.block_k, k_last = min(k_first + p.block_k, p.seq_k) - 1;
      const bool valid = j <= last_valid;
      const bool diagonal = p.causal && k_last >= q_first + off && k_first <= q_last + off;
      const bool k_forced = !(sim_k[j] > theta);
      on = valid && (selected || k_forced || q_forced || diagonal || (p.attention_sink && j == 0));
      dense[j] = on;
    }
    const unsigned on_mask = __ballot_sync(kFullMask, on);
    if (on) out[count + __popc(on_mask & lanes_below)] = j;
    count += __popc(on_mask);
  }
  if (lane == 0) p.counts[row] = count;
  for (int pos = count + lane; pos < nkb; pos += 32) out[pos] = -1;
}

// scores = A C^T per batch entry: 64 x 64 output tiles, 256 threads with 4 x 4 outputs each (rows tm + 16 i,
// columns tn + 16 j), the operands staged 64 columns of d at a time in padded shared rows and read as float4.
// Each output is one fma chain over d = 0, 1, ..., dim - 1 from 0, as in the legacy kernel (bit-identical
// scores); the legacy kernel's 16-deep steps with a barrier pair each were latency-bound (~20 us at 8K).
constexpr int kScoreTile = 64, kScoreChunk = 64, kScoreThreads = 256;
constexpr int kScorePitch =
    kScoreChunk + 4;  // +16 bytes: the 16 rows a warp reads per float4 spread over banks
__global__ void __launch_bounds__(kScoreThreads)
    scores_kernel(const float* __restrict__ a, const float* __restrict__ c, float* __restrict__ out,
                  int rows_a, int rows_c, int dim) {
  __shared__ __align__(16) float s_a[kScoreTile][kScorePitch];
  __shared__ __align__(16) float s_c[kScoreTile][kScorePitch];
  const int64_t b = blockIdx.z;
  a += b * rows_a * static_cast<int64_t>(dim);
  c += b * rows_c * static_cast<int64_t>(dim);
  out += b * rows_a * static_cast<int64_t>(rows_c);
  const int m0 = blockIdx.y * kScoreTile, n0 = blockIdx.x * kScoreTile;
  const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
  constexpr int kQuads = kScoreChunk / 4;  // float4 per staged row
  float acc[4][4] = {};
  for (int k0 = 0; k0 < dim; k0 += kScoreChunk) {
#pragma unroll
    for (int it = 0; it < kScoreTile * kQuads / kScoreThreads; ++it) {
      const int e = threadIdx.x + it * kScoreThreads, r = e / kQuads, q4 = e % kQuads;  // coalesced rows
      const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
      const float4 va =
          m0 + r < rows_a
              ? *reinterpret_cast<const float4*>(a + (m0 + r) * static_cast<int64_t>(dim) + k0 + 4 * q4)
              : zero;
      const float4 vc =
          n0 + r < rows_c
              ? *reinterpret_cast<const float4*>(c + (n0 + r) * static_cast<int64_t>(dim) + k0 + 4 * q4)
              : zero;
      *reinterpret_cast<float4*>(&s_a[r][4 * q4]) = va;
      *reinterpret_cast<float4*>(&s_c[r][4 * q4]) = vc;
    }
    __syncthreads();
#pragma unroll 4
    for (int q4 = 0; q4 < kQuads; ++q4) {
      float4 av[4], cv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        av[i] = *reinterpret_cast<const float4*>(&s_a[tm + 16 * i][4 * q4]);
        cv[i] = *reinterpret_cast<const float4*>(&s_c[tn + 16 * i][4 * q4]);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc[i][j] = fmaf(av[i].x, cv[j].x, acc[i][j]);  // S += a[d] c[d], d ascending
          acc[i][j] = fmaf(av[i].y, cv[j].y, acc[i][j]);
          acc[i][j] = fmaf(av[i].z, cv[j].z, acc[i][j]);
          acc[i][j] = fmaf(av[i].w, cv[j].w, acc[i][j]);
        }
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

cudaError_t launch_scores(const float* a, const float* c, float* scores, int batch, int rows_a, int rows_c,
                          int dim, cudaStream_t stream) {
  if (dim % predict::kScoreChunk != 0) return cudaErrorInvalidValue;
  const dim3 grid((rows_c + predict::kScoreTile - 1) / predict::kScoreTile,
                  (rows_a + predict::kScoreTile - 1) / predict::kScoreTile, batch);
  predict::scores_kernel<<<grid, predict::kScoreThreads, 0, stream>>>(a, c, scores, rows_a, rows_c, dim);
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

cudaError_t launch_select_cta(const SelectParams& p, cudaStream_t stream) {
  const size_t smem = select_smem_bytes(p.sort_size, p.num_k_blocks);
  const dim3 grid(p.num_q_blocks, p.heads_q, p.batch);
  switch (predict::cta_select_threads(p.sort_size)) {
    case 64:
      return launch_select_with<64>(p, grid, smem, stream);
    case 128:
      return launch_select_with<128>(p, grid, smem, stream);
    default:
      return launch_select_with<256>(p, grid, smem, stream);
  }
}

template <int kPer>
static cudaError_t launch_select_warp(const SelectParams& p, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads_q * p.num_q_blocks;
  const dim3 grid(static_cast<unsigned>((rows + predict::kWarpSelectRows - 1) / predict::kWarpSelectRows));
  predict::select_warp_kernel<kPer><<<grid, predict::kWarpSelectRows * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_select(const SelectParams& p, cudaStream_t stream) {
  static_assert(kWarpSelectMaxKeyBlocks == 32 * 16, "the largest warp instantiation holds 16 per lane");
  if (p.num_k_blocks > kWarpSelectMaxKeyBlocks) return launch_select_cta(p, stream);
  switch (p.sort_size <= 32 ? 1 : p.sort_size / 32) {
    case 1:
      return launch_select_warp<1>(p, stream);
    case 2:
      return launch_select_warp<2>(p, stream);
    case 4:
      return launch_select_warp<4>(p, stream);
    case 8:
      return launch_select_warp<8>(p, stream);
    default:
      return launch_select_warp<16>(p, stream);
  }
}

}  // namespace sparge::cuda
