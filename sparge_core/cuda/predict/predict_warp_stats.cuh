// The statistics kernel of the prediction (similarities and pooled means, no INT8 values) with the legacy
// kernel's warp structure and no CTA barrier in its loop: the four warps of a CTA process each block item
// together, warp w the rows of legacy warp w ("set" w: rows 4 w + 16 s + u, s = 0, 1, ..., u < 4) straight
// from global memory into registers, and the last warp to finish its set of an item (a shared-memory
// counter) adds the four sets' sums in order and writes the outputs. It shares the CTA kernel's work queue
// (order, decoding, K-mean tickets, ready flags) and per-block arithmetic (predict_kernels.cuh).
// Why a second kernel: the CTA kernel's per-item cost (CTA barriers, the shared-memory stage and its fill,
// a thread-0 spin that holds four warps) was about half of its instructions and a sixth of its stall samples
// (hopper/NOTES.md). Here a warp computes one round (4 steps of its set: 16 rows, 4 KiB at D = 128) while the
// loads of its next round (of this item or of the next) are issued step by step, a K-mean wait holds each
// warp only until the flag is seen, and no warp waits for another's arithmetic. A first version with one
// warp per item (results/kernels/h100/warp_stats_trial) was slower: 4x the items in progress pushed K's
// second read out of L2. The INT8 variants keep the CTA kernel: their second use of a block's values
// (quantizing with the block's scale) reads them from registers there.
//
// Items: warp 0 publishes the CTA's items (queue ids) into a ring of kSplitRing shared-memory slots two items
// ahead of its own; the slot of item k also receives the four sets' sums and is freed by k's epilogue, before
// item k + kSplitRing is published into it. Every wait is on a smaller item or on warp 0 publishing, which
// waits only on epilogues of items two behind its own: no cycle (and the global argument of the CTA kernel
// holds per CTA).
//
// Bit-exactness with the legacy kernel: each warp accumulates its set in the legacy order (steps s
// ascending, rows u ascending, per-row norms as in the CTA kernel: inverse_row_norm), the epilogue adds the
// sets in order 0..3 from 0, and the similarity replays the legacy reduction (a butterfly over the 32
// columns of each legacy warp, then the warps in order) on this lane -> column mapping. Rows past a block's
// end add nothing: unshifted they are zero words (0 added to a sum that is never -0 leaves it unchanged),
// shifted they are replaced by zeros after the shift (kTail), and steps wholly past the end are skipped.
#pragma once

#include "predict_kernels.cuh"

namespace sparge::cuda::predict {

// Stores kN = 2 or 4 consecutive floats (8 or 16 bytes, aligned).
template <int kN>
__device__ __forceinline__ void store_floats(float* dst, const float (&v)[kN]) {
  static_assert(kN == 2 || kN == 4, "2 or 4 floats");
  if constexpr (kN == 4) {
    *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    *reinterpret_cast<float2*>(dst) = make_float2(v[0], v[1]);
  }
}

constexpr int kWarpStatsThreads = 128;  // one warp per legacy set of a block's rows
constexpr int kWarpStatsCtasPerSm = 4;  // 16 warps per SM at <= 128 registers per thread

template <DType kDtype, int kD>
struct WarpStats {
  using T = typename Element<kDtype>::T;
  static constexpr int kVec = kD / 32;     // columns per lane: lane * kVec ..
  static constexpr int kWords = kVec / 2;  // 32-bit words per lane and row
  static constexpr int kRoundSteps = 4;    // steps of one set per round: 16 rows (4 KiB at D = 128)
  static constexpr int kRows = kRoundSteps * kRowsPerStep;
  static constexpr int kSets = kStatsWarps;                 // the legacy kernel's warps
  static constexpr int kStepStride = kSets * kRowsPerStep;  // rows between a set's consecutive steps
  static_assert(kWords == 1 || kWords == 2, "head dim 64 or 128");

  struct Round {
    uint32_t w[kRows][kWords];
  };
  // Loads step t of a round into r (rows 16 t + u relative to the round's first row; those at or past `left`
  // get zero words). `at` points at the lane's words of the step's first row and moves on to the next step's.
  // The L2 policy: evict-first for data read for the last time, evict-normal for a K-sum item's rows (read
  // again by its K-stats item).
  static __device__ __forceinline__ void load_step(Round& r, int t, const T*& at, int64_t stride, int left,
                                                   uint64_t policy) {
#pragma unroll
    for (int u = 0; u < kRowsPerStep; ++u) {
      const int j = t * kRowsPerStep + u;
      uint32_t v[kWords] = {};
      if (t * kStepStride + u < left) load_words(v, at, policy);
#pragma unroll
      for (int i = 0; i < kWords; ++i) r.w[j][i] = v[i];
      at += stride;
    }
    at += (kStepStride - kRowsPerStep) * stride;
  }
  static __device__ __forceinline__ void load_words(uint32_t (&v)[kWords], const T* at, uint64_t policy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (kWords == 2) {
      asm volatile("ld.global.nc.L2::cache_hint.v2.u32 {%0, %1}, [%2], %3;"
                   : "=r"(v[0]), "=r"(v[1])
                   : "l"(at), "l"(policy));
    } else {
      asm volatile("ld.global.nc.L2::cache_hint.u32 %0, [%1], %2;" : "=r"(v[0]) : "l"(at), "l"(policy));
    }
#else
    (void)policy;
    memcpy(v, at, sizeof(v));
#endif
  }

  // Adds the round's steps that begin before `left` rows to one set's sums (kShift: minus the K mean;
  // kSumsOnly: column sums only; kTail: `left` may end inside a step, whose missing rows are zeroed after the
  // shift). After step t, fetch(t) issues the loads of step t of the next round: its registers replace those
  // of the step just used, so about one round of loads is in flight all the time at the register cost of one
  // round and one step.
  template <bool kShift, bool kSumsOnly, bool kTail, typename Fetch>
  static __device__ __forceinline__ void accumulate(const Round& r, int left, const float (&shift)[kVec],
                                                    float (&sum)[kVec], float (&unit)[kVec], int lane,
                                                    Fetch& fetch) {
#pragma unroll
    for (int t = 0; t < kRoundSteps; ++t) {
      if (t * kStepStride < left) step<kShift, kSumsOnly, kTail>(r, t, left, shift, sum, unit, lane);
      fetch(t);
    }
  }

  template <bool kShift, bool kSumsOnly, bool kTail>
  static __device__ __forceinline__ void step(const Round& r, int t, int left, const float (&shift)[kVec],
                                              float (&sum)[kVec], float (&unit)[kVec], int lane) {
    float v[kRowsPerStep][kVec];
#pragma unroll
    for (int u = 0; u < kRowsPerStep; ++u) {
#pragma unroll
      for (int i = 0; i < kWords; ++i) {
        const float2 f = unpack2<kDtype>(r.w[t * kRowsPerStep + u][i]);
        v[u][2 * i] = f.x;
        v[u][2 * i + 1] = f.y;
      }
      if constexpr (kShift) {
#pragma unroll
        for (int e = 0; e < kVec; ++e) v[u][e] -= shift[e];
      }
      if constexpr (kTail) {
        const bool in = t * kStepStride + u < left;
#pragma unroll
        for (int e = 0; e < kVec; ++e) v[u][e] = in ? v[u][e] : 0.f;
      }
    }
    float sq[kRowsPerStep];
#pragma unroll
    for (int u = 0; u < kRowsPerStep; ++u) {
      sq[u] = 0.f;
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        sum[e] += v[u][e];
        if constexpr (!kSumsOnly) sq[u] += v[u][e] * v[u][e];
      }
    }
    if constexpr (!kSumsOnly) {
      const float inv_own = inverse_row_norm(sq, lane);
#pragma unroll
      for (int u = 0; u < kRowsPerStep; ++u) {
        const float inv = __shfl_sync(kFullMask, inv_own, u * 8);  // lanes 8u.. hold row u
#pragma unroll
        for (int e = 0; e < kVec; ++e) unit[e] += v[u][e] * inv;
      }
    }
  }

  // ||mean of unit rows||^2 from the lane's column means, in the legacy order: each legacy warp w owned
  // columns 32 w .. 32 w + 31 (lanes 32 w / kVec .., kVec columns each), squared them and reduced with
  // xor 16, 8, 4, 2, 1 over its columns (here: lane xor 16 / kVec .. 1, then column xor kVec / 2 .. 1 within
  // the lane), then the warps' sums were added in order from 0 (warps without columns at D = 64 add 0).
  static __device__ __forceinline__ float similarity(const float (&mean_unit)[kVec], int lane) {
    float m[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) m[e] = 0.f + mean_unit[e] * mean_unit[e];
#pragma unroll
    for (int o = 16 / kVec; o > 0; o >>= 1) {
#pragma unroll
      for (int e = 0; e < kVec; ++e) m[e] += __shfl_xor_sync(kFullMask, m[e], o);
    }
#pragma unroll
    for (int h = kVec / 2; h > 0; h >>= 1) {
      float n[kVec];
#pragma unroll
      for (int e = 0; e < kVec; ++e) n[e] = m[e] + m[e ^ h];
#pragma unroll
      for (int e = 0; e < kVec; ++e) m[e] = n[e];
    }
    float sim = 0.f;
#pragma unroll
    for (int w = 0; w < kVec; ++w) sim += __shfl_sync(kFullMask, m[0], w * (32 / kVec));
    (void)lane;
    return sim;
  }
};

// The end of a K-sum item: its block sums to the workspace; the worker finishing a part of the group's blocks
// adds the part in float64 (block order), the one finishing the last part adds the parts in order, writes the
// mean and releases the group's ready flag (the legacy mean kernel's order, see predict_params.h).
template <int kD>
__device__ __forceinline__ void finish_k_sum(const StatsParams& p, int64_t g, int blk,
                                             const float (&total)[kD / 32], int lane) {
  constexpr int kVec = kD / 32, kParts = mean_parts(kD);
  const int nkb = p.k.num_blocks, per = (nkb + kParts - 1) / kParts, used_parts = (nkb + per - 1) / per;
  const int part = blk / per, j0 = part * per, j1 = min(nkb, j0 + per);
  const int64_t col = g * nkb * static_cast<int64_t>(kD) + lane * kVec;
  store_floats<kVec>(p.k_sums + col + static_cast<int64_t>(blk) * kD, total);
  int* group_counters = p.counters + 1 + g * kGroupCounters;
  __syncwarp();  // the warp's sums are written before lane 0's release
  int last = 0;
  if (lane == 0) last = take_last_ticket(group_counters + part, j1 - j0);
  if (!__shfl_sync(kFullMask, last, 0)) return;
  __syncwarp();  // lane 0 acquired the other workers' block sums (the CTA kernel's thread 0 + barrier)
  double acc[kVec] = {};
#pragma unroll 4  // 4 x kVec loads in flight (the registers of the next round's loads are live here)
  for (int j = j0; j < j1; ++j) {
#pragma unroll
    for (int e = 0; e < kVec; ++e) acc[e] += __ldcg(p.k_sums + col + static_cast<int64_t>(j) * kD + e);
  }
  double* parts = p.k_parts + g * kParts * kD + lane * kVec;
#pragma unroll
  for (int e = 0; e < kVec; ++e) parts[part * kD + e] = acc[e];
  __syncwarp();
  if (lane == 0) last = take_last_ticket(group_counters + kMaxMeanParts, used_parts);
  if (!__shfl_sync(kFullMask, last, 0)) return;
  __syncwarp();
#pragma unroll
  for (int e = 0; e < kVec; ++e) {
    double total_e = 0.0;
#pragma unroll
    for (int q = 0; q < kParts; ++q) total_e += q < used_parts ? __ldcg(parts + q * kD + e) : 0.0;
    p.k_mean[g * kD + lane * kVec + e] = static_cast<float>(total_e / p.k.seq);
  }
  __syncwarp();
  if (lane == 0) {
    ::cuda::atomic_ref<int, ::cuda::thread_scope_device> ready(group_counters[kMaxMeanParts + 1]);
    ready.store(1, ::cuda::memory_order_release);
  }
}

// The CTA's ring of items (shared memory): item number k of the CTA (k = 0, 1, ...) sits in slot k %
// kSplitRing from its publication (warp 0, two items ahead of its own) until its epilogue has read the four
// sets' sums. Flags are block-scope atomics (acquire / release), spun on by lane 0 of a warp.
constexpr int kSplitRing = 4;
template <int kD>
struct alignas(16) SplitRing {
  float sum[kSplitRing][kStatsWarps][kD];   // each set's column sums of the slot's item
  float unit[kSplitRing][kStatsWarps][kD];  // ... and unit-row sums
  int id[kSplitRing];                       // the queue id of the slot's item (>= num_items: the end)
  int seq[kSplitRing];                      // k of the item published in the slot
  int arrived[kSplitRing];                  // warps done with their set of it
  int freed[kSplitRing];                    // k of the last item whose epilogue finished in the slot
};

__device__ __forceinline__ int load_acquire_block(int* x) {
  return ::cuda::atomic_ref<int, ::cuda::thread_scope_block>(*x).load(::cuda::memory_order_acquire);
}
__device__ __forceinline__ void store_release_block(int* x, int v) {
  ::cuda::atomic_ref<int, ::cuda::thread_scope_block>(*x).store(v, ::cuda::memory_order_release);
}
// Lane 0 spins until *x == v (acquire).
__device__ __forceinline__ void spin_until_block(int* x, int v) {
  while (load_acquire_block(x) != v) __nanosleep(32);
}

// grid: persistent (kWarpStatsCtasPerSm per SM at most), kWarpStatsThreads threads = one warp per set.
template <DType kDtype, int kD>
__global__ void __launch_bounds__(kWarpStatsThreads, kWarpStatsCtasPerSm)
    warp_stats_kernel(const StatsParams p) {
  using S = WarpStats<kDtype, kD>;
  using T = typename S::T;
  using Round = typename S::Round;
  constexpr int kVec = S::kVec, kSets = S::kSets;
  constexpr int kItemRowsPerRound = S::kRows * kSets;  // rows of an item covered by one round of each set
  static_assert(kWarpStatsThreads / 32 == kSets, "one warp per set");
  __shared__ SplitRing<kD> ring;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x < kSplitRing) {
    ring.seq[threadIdx.x] = -1;
    ring.arrived[threadIdx.x] = 0;
    ring.freed[threadIdx.x] = static_cast<int>(threadIdx.x) - kSplitRing;
  }
  __syncthreads();  // the only CTA barrier

  // Warp 0 publishes the CTA's items: lane 0 holds the next queue id (`reserved`, its atomic issued one
  // publication early), `published` counts the items published.
  int reserved = 0, published = 0;
  if (warp == 0 && lane == 0) reserved = atomicAdd(p.counters, 1);
  const auto publish_upto = [&](int k) {  // warp 0: items up to k, each once its slot is free
    if (lane == 0) {
      while (published <= k && (published == 0 || ring.id[(published - 1) % kSplitRing] < p.num_items)) {
        const int slot = published % kSplitRing;
        spin_until_block(&ring.freed[slot], published - kSplitRing);
        const int id = reserved;
        if (id < p.num_items) reserved = atomicAdd(p.counters, 1);
        ring.id[slot] = id;
        store_release_block(&ring.seq[slot], published);
        ++published;
      }
    }
    __syncwarp();
  };
  const auto item_of = [&](int k) {  // the queue id of the CTA's item k, once published
    int id = 0;
    if (lane == 0) {
      spin_until_block(&ring.seq[k % kSplitRing], k);
      id = ring.id[k % kSplitRing];
    }
    id = __shfl_sync(kFullMask, id, 0);
    __syncwarp();  // lane 0's acquire orders the slot's earlier readers before this warp's writes to it
    return id;
  };

  // The loader's cursor: the round it issued last. The CTA's item number k, its queue id, rows and kind, the
  // round within this warp's set, the rounds per set, the item's first row and row stride.
  struct Cursor {
    int k, id, rows, round, rounds;
    ItemKind kind;
    const T* base;
    int64_t stride;
    __device__ int first(int set) const { return round * kItemRowsPerRound + set * kRowsPerStep; }
  };
  const auto open = [&](Cursor& c, int k) {
    c.k = k;
    c.id = item_of(k);
    c.round = 0;
    if (c.id >= p.num_items) return;
    const Item it = decode_item(p, c.id);
    const ItemRows<T> r = item_rows<T>(p, it);
    c.rows = r.rows;
    c.rounds = (r.rows + kItemRowsPerRound - 1) / kItemRowsPerRound;
    c.kind = it.kind;
    c.base = r.base;
    c.stride = r.row_stride;
  };
  if (warp == 0) publish_upto(1);
  Cursor l;
  open(l, 0);
  if (l.id >= p.num_items) return;

  // The L2 policies of the loads (see load_step).
  uint64_t keep_policy = 0, stream_policy = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(keep_policy));
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(stream_policy));
#endif
  // The loads of the loader's round, step by step: fetch(t) after the computation of step t of the round
  // before (or all at once for the first round).
  const auto fetcher = [&](Round& r) {
    const int first = l.first(warp);
    const bool live = l.id < p.num_items;
    const T* at = live ? l.base + first * l.stride + lane * kVec : nullptr;
    const int left = live ? l.rows - first : 0;
    const uint64_t policy = l.kind == ItemKind::kKSum ? keep_policy : stream_policy;
    return [&r, at, left, policy, stride = l.stride](int t) mutable {
      S::load_step(r, t, at, stride, left, policy);
    };
  };
  const auto advance = [&]() {
    if (++l.round < l.rounds) return;
    open(l, l.k + 1);
  };

  // This warp's set sums of the current item, the K mean of a K-stats item.
  float sum[kVec] = {}, unit[kVec] = {}, shift[kVec] = {};
  // One round: `now` holds the round of cursor c (the loader's before it advances); the loads of the next
  // round go into `later` step by step while `now` is computed, then the set's end and the item's epilogue.
  const auto step = [&](Round& now, Round& later) {
    const Cursor c = l;
    if (c.id >= p.num_items) return false;
    if (warp == 0 && c.round == 0) publish_upto(c.k + 2);
    advance();
    auto fetch = fetcher(later);
    if (c.round == 0 && c.kind == ItemKind::kKStats) {
      const Item it = decode_item(p, c.id);
      const int64_t g = static_cast<int64_t>(it.b) * p.k.heads + it.h;
      if (lane == 0) wait_for_flag(p.counters + 1 + g * kGroupCounters + kMaxMeanParts + 1);
      __syncwarp();
#pragma unroll
      for (int e = 0; e < kVec; ++e) shift[e] = __ldcg(p.k_mean + g * kD + lane * kVec + e);
    }
    const int left = c.rows - c.first(warp);
    if (c.kind == ItemKind::kKSum) {
      S::template accumulate<false, true, false>(now, left, shift, sum, unit, lane, fetch);
    } else if (c.kind == ItemKind::kQStats) {
      S::template accumulate<false, false, false>(now, left, shift, sum, unit, lane, fetch);
    } else if (c.rows % kRowsPerStep == 0) {
      S::template accumulate<true, false, false>(now, left, shift, sum, unit, lane, fetch);
    } else {
      S::template accumulate<true, false, true>(now, left, shift, sum, unit, lane, fetch);
    }
    if (c.round + 1 < c.rounds) return true;

    // The set's end: its sums to the slot; the last warp of the item (block-scope acq_rel counter) adds the
    // four sets in order (the legacy epilogue) and writes the outputs.
    const int slot = c.k % kSplitRing;
    store_floats<kVec>(&ring.sum[slot][warp][lane * kVec], sum);
    store_floats<kVec>(&ring.unit[slot][warp][lane * kVec], unit);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      sum[e] = 0.f;
      unit[e] = 0.f;
    }
    __syncwarp();
    int last = 0;
    if (lane == 0) {
      ::cuda::atomic_ref<int, ::cuda::thread_scope_block> arrived(ring.arrived[slot]);
      last = arrived.fetch_add(1, ::cuda::memory_order_acq_rel) == kSets - 1;
    }
    if (!__shfl_sync(kFullMask, last, 0)) return true;
    __syncwarp();
    float out[kVec], mean_unit[kVec];
    const float count = static_cast<float>(c.rows);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      float t = 0.f, ut = 0.f;
#pragma unroll
      for (int w = 0; w < kSets; ++w) {
        t += ring.sum[slot][w][lane * kVec + e];
        ut += ring.unit[slot][w][lane * kVec + e];
      }
      out[e] = t;
      mean_unit[e] = ut / count;
    }
    __syncwarp();  // every lane has read the slot
    if (lane == 0) {
      ring.arrived[slot] = 0;
      store_release_block(&ring.freed[slot], c.k);
    }
    const Item it = decode_item(p, c.id);
    const bool is_q = c.kind == ItemKind::kQStats;
    const int64_t bh = static_cast<int64_t>(it.b) * (is_q ? p.q.heads : p.k.heads) + it.h;
    const int64_t out_block = bh * (is_q ? p.q.num_blocks : p.k.num_blocks) + it.blk;
    if (c.kind == ItemKind::kKSum) {
      finish_k_sum<kD>(p, bh, it.blk, out, lane);
      return true;
    }
#pragma unroll
    for (int e = 0; e < kVec; ++e) out[e] = out[e] / count;
    store_floats<kVec>((is_q ? p.q.pooled : p.k.pooled) + out_block * kD + lane * kVec, out);
    const float sim = S::similarity(mean_unit, lane);
    if (lane == 0) (is_q ? p.q.similarity : p.k.similarity)[out_block] = sim;
    return true;
  };

  Round a, b;
  {
    auto fetch = fetcher(a);
#pragma unroll
    for (int t = 0; t < S::kRoundSteps; ++t) fetch(t);
  }
  while (step(a, b) && step(b, a)) {
  }
}

}  // namespace sparge::cuda::predict
