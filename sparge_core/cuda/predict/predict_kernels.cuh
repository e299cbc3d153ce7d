// Stage-1 prediction: the block-statistics kernels (device code; the launchers are in
// predict_stats_launch.cuh): the persistent stats_kernel described here (SPARGE_STATS_PASSES=0, and
// quantize_qk_int8's SPARGE_QK_INT8_PASSES=0) and, at the end, stats_pass_kernel (the prediction's default:
// one CTA per block after the K sums and mean of predict_quant.cu, the same per-block arithmetic and bits).
// The selection and the score GEMM are in predict_select.cu.
//
// One launch computes, for every (batch, kv head) group g of K and every query head of Q:
//   K block sums -> the float64 K mean of g -> the smoothed-K block statistics (pooled means, similarity
//   ||mean of unit rows||^2, INT8 values and scales), and the same statistics of the Q blocks.
// Work items (one block of rows each; a K item of the prediction variant two consecutive blocks where both
// fit one chunk: StatsParams::k_item_blocks) come from an atomic queue in this order (L = lookahead):
//   Ksum(0) .. Ksum(L-1), Ksum(L), Kstats(0), Ksum(L+1), Kstats(1), ..., Kstats(G-1), then every Q item,
// so that a group's K is read once from DRAM where L groups of K fit in L2: its second read (Kstats, L to 2 L
// groups of items later) hits L2 (L: see kInFlightItemsPerCta). The CTA finishing the last K-sum item of a
// part of g adds that part in float64 (a ticket counter finds it); the one finishing the last part adds the
// parts, writes the mean and releases the group's ready flag; Kstats items of g, their rows already loaded,
// spin (acquire) on that flag (rarely: the lookahead is chosen so that the mean is ready).
// Pipelining: each CTA stages the rows of an item (up to kChunkRows) in shared memory with 16-byte cp.async
// copies. As soon as item i's rows are moved from the stage into registers, the copies of item i + 1 are
// issued into it, so they are in flight during item i's arithmetic, epilogue and any K-stats wait (the
// memory system does not idle while a CTA computes). Each warp copies exactly the rows it reads, so
// cp.async.wait_all + __syncwarp order the stage's accesses; no CTA barrier guards it. Blocks of more than
// kChunkRows rows (any block size is valid) copy their later chunks and wait for them at once (slow path).
// Deadlock freedom: items are dequeued in increasing order and an item only waits on items with smaller
// indices that never wait themselves (K-sum items and the mean work done by the CTA finishing them); a CTA
// that holds an item is running, so by induction on the index every item completes, whatever the number of
// CTAs resident. (A CTA holds up to three items: the one it processes, the next one, whose copies are in
// flight, and the one after, reserved. Both are larger than the current one, are processed in order, and
// their copies wait on nothing, so the argument is unchanged.)
//
// Bit-exactness: the per-block arithmetic is the legacy block_stats_kernel's (predict_legacy.cu): 4 warps,
// warp w accumulates rows 4w + 16s + u (s = 0, 1, ..., u < 4) in that order into per-lane column sums, the
// per-row squared norm reduces in the butterfly pairing xor 16, 8, 4, 2, 1 (here with 6 shuffles for 4 rows,
// then one sqrtf and one division per lane instead of 4, broadcast), the warps combine in order w = 0..3,
// the mean of K sums the block sums in the legacy mean kernel's order. So statistics, masks and INT8 values
// are bit-identical to the legacy predictor's; the GPU test checks it. (The stage only moves bits: the
// registers hold the same words as direct global loads would; the rows past a tail block's end are replaced
// by zeros in the arithmetic, as the legacy kernel's zero rows.)
#pragma once

#include <cuda/atomic>

#include "predict_common.cuh"

namespace sparge::cuda::predict {

// Tuning table (one place; each value with its reason).
constexpr int kStatsThreads = 128;  // 4 warps: the legacy per-block warp structure (fixes the sum order)
constexpr int kStatsWarps = kStatsThreads / 32;
constexpr int kRowsPerStep = 4;  // rows a warp reduces together (one transposed norm reduction)
// Steps held in registers (and rows of the shared-memory stage): 8 x 16 = 128 rows, a whole 128-row Q block.
constexpr int kChunkSteps = 8;
constexpr int kChunkRows = kChunkSteps * kStatsWarps * kRowsPerStep;
// <= 128 registers per thread and ~37 KiB of shared memory per CTA at D = 128 (the 32 KiB stage; ~18 KiB at
// D = 64): 4 CTAs per SM on sm_80 / sm_90 (2 on sm_89 at D = 128: 100 KiB per SM). Each CTA keeps its next
// item's 16-32 KiB of copies in flight nearly all the time: 64-128 KiB per SM, several times DRAM latency x
// bandwidth per SM.
constexpr int kStatsCtasPerSm = 4;
// The K-sum lookahead L (launcher): with NKI K items per group (NKB, or NKB / 2 with two-block items),
// between the last K-sum item of group g and its first K-stats item the queue holds (L + g) NKI items for g <
// L and 2 L NKI after (L NKI at least), and the CTAs hold up to three items each (processed, copies in
// flight, reserved), so L is the least with L x NKI >= kInFlightItemsPerCta x grid: the mean is ready before
// its K-stats items are processed (a profile with L from an L2 byte budget, L = 1 at N = 32K, showed the CTAs
// spinning on it for 15% of their time). The group's K is then read again after L to 2 L groups of K-sum
// reads (kept in L2) and the streamed evict-first reads between: an L2 hit while those fit in L2 (N = 32K:
// L = 4, 32 MB, with one-block items; 7 with two), else a second DRAM read of K, which costs less than
// spinning.
constexpr int kInFlightItemsPerCta = 3;
constexpr int kMeanUnroll = 16;       // float64 part sums: loads in flight per thread
constexpr int kMaxSpinSleepNs = 256;  // back-off cap of the K-stats wait

enum class ItemKind { kKSum, kKStats, kQStats };
struct Item {
  ItemKind kind;
  int b, h, blk;  // blk: the first block
  int blocks;     // consecutive blocks of the item (K items: up to StatsParams::k_item_blocks; Q: 1)
};

// The work item at queue position `item` (order in the file comment).
__device__ __forceinline__ Item decode_item(const StatsParams& p, int item) {
  const int nki = p.k_items, groups = p.batch * p.k.heads, ahead = p.lookahead;
  const int k_items = 2 * groups * nki;
  Item it;
  it.blocks = 1;
  int g;
  if (item < k_items) {
    const int chunk = p.k_items_div.div(item);  // one group's K-sum or K-stats items
    it.blk = (item - chunk * nki) * p.k_item_blocks;
    it.blocks = min(p.k_item_blocks, p.k.num_blocks - it.blk);
    if (chunk < ahead) {
      it.kind = ItemKind::kKSum;
      g = chunk;
    } else if (chunk < 2 * groups - ahead) {
      const int t = chunk - ahead;
      it.kind = t % 2 == 0 ? ItemKind::kKSum : ItemKind::kKStats;
      g = t % 2 == 0 ? ahead + t / 2 : t / 2;
    } else {
      it.kind = ItemKind::kKStats;
      g = chunk - groups;
    }
    it.b = p.k_heads_div.div(g);
    it.h = g - it.b * p.k.heads;
  } else {
    const int i = item - k_items, bh = p.q_blocks_div.div(i);
    it.kind = ItemKind::kQStats;
    it.blk = i - bh * p.q.num_blocks;
    it.b = p.q_heads_div.div(bh);
    it.h = bh - it.b * p.q.heads;
  }
  return it;
}

// 16-byte asynchronous global -> shared copies (cp.async.cg: cached in L2 only), sm_80+; a synchronous copy
// on older architectures (not built by default).
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t policy = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
#endif
  return policy;
}
// dst: a shared-memory address (__cvta_generic_to_shared), 16-byte aligned; src 16-byte aligned.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
#else
  const uint4 v = __ldg(static_cast<const uint4*>(src));
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
#endif
}
// The same with an L2 cache policy (evict_first_policy: data read for the last time).
__device__ __forceinline__ void cp_async_16_hint(uint32_t dst, const void* src, uint64_t policy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
               "l"(policy)
               : "memory");
#else
  (void)policy;
  const uint4 v = __ldcs(static_cast<const uint4*>(src));
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
#endif
}
// Waits until this thread's copies are complete (visible to this thread; __syncwarp / __syncthreads share
// them).
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

// sq: this lane's partial sums of squares of 4 rows. Reduces them over the warp with the legacy butterfly's
// pairing (lanes xor 16, then 8, 4, 2, 1; float addition is commutative, so each partial sum is the same
// value) in 6 shuffles instead of 20: at xor 16 each lane keeps 2 of the rows and sends the other 2, at xor 8
// it keeps 1. Returns 1 / sqrtf(sum) of row (lane >> 3) & 3 (the legacy division), or 0 for a zero row: the
// legacy kernel skips such a row, here it adds its elements (+-0) times 0, which leaves every unit-row sum
// unchanged but for the sign of a zero sum (squared away in the similarity).
__device__ __forceinline__ float inverse_row_norm(const float (&sq)[kRowsPerStep], int lane) {
  static_assert(kRowsPerStep == 4, "two halving steps");
  const bool hi = (lane & 16) != 0, mid = (lane & 8) != 0;
  const float r0 = (hi ? sq[2] : sq[0]) + __shfl_xor_sync(kFullMask, hi ? sq[0] : sq[2], 16);
  const float r1 = (hi ? sq[3] : sq[1]) + __shfl_xor_sync(kFullMask, hi ? sq[1] : sq[3], 16);
  float s = (mid ? r1 : r0) + __shfl_xor_sync(kFullMask, mid ? r0 : r1, 8);
  s += __shfl_xor_sync(kFullMask, s, 4);
  s += __shfl_xor_sync(kFullMask, s, 2);
  s += __shfl_xor_sync(kFullMask, s, 1);
  const float norm = sqrtf(s);
  return norm > 0.f ? 1.f / norm : 0.f;
}

// One block of rows of one CTA item: raw 16-bit values of up to kChunkRows rows in registers (filled from the
// shared-memory stage, or by load() straight from global memory), the per-lane column sums, unit-row sums and
// max|x| of this warp's rows.
template <DType kDtype, int kD>
struct BlockWorker {
  static constexpr int kVec = kD / 32;     // elements per lane and row
  static constexpr int kWords = kVec / 2;  // 32-bit words per lane and row
  static_assert(kWords == 1 || kWords == 2, "head dim 64 or 128");
  using T = typename Element<kDtype>::T;

  uint32_t raw[kChunkSteps][kRowsPerStep][kWords];
  float sum[kVec] = {}, unit[kVec] = {}, amax = 0.f;

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      sum[e] = 0.f;
      unit[e] = 0.f;
    }
    amax = 0.f;
  }

  // The row of (step s, slot u) of warp w in the chunk starting at row c0: the legacy row order.
  static __device__ __forceinline__ int row_of(int c0, int s, int warp, int u) {
    return c0 + s * (kStatsWarps * kRowsPerStep) + warp * kRowsPerStep + u;
  }

  // The stage: kChunkRows rows of kD 16-bit elements in shared memory, row r at word r * kD / 2.
  static constexpr int kStageWords = kChunkRows * kD / 2;
  static constexpr int kCopiesPerRow = kD * 2 / 16;                        // 16-byte copies per row
  static constexpr int kRowsPerCopy = 32 / kCopiesPerRow;                  // rows of one warp-wide copy
  static constexpr int kCopies = kChunkRows / kStatsWarps / kRowsPerCopy;  // copies per lane

  // Issues the asynchronous copies of the first min(rows, kChunkRows) rows at base into the stage; rows >=
  // `rows` are not copied (fill() gives them zeros). Each warp copies exactly the rows that fill() gives it,
  // so cp.async wait + __syncwarp order a warp's copies before its reads and its reads before its next
  // copies; no CTA barrier guards the stage. Streaming (data read for the last time): evict-first in L2, like
  // the former __ldcs loads; otherwise the default policy (a K-sum item's K stays in L2 for the K-stats one).
  static __device__ __forceinline__ void stage(uint32_t* stage, const T* base, int64_t row_stride, int rows,
                                               int warp, int lane, bool streaming) {
    static_assert(kRowsPerStep % kRowsPerCopy == 0, "a copy's rows are in one step");
    // Copy j covers the warp's rows j * kRowsPerCopy + sub: row rj + rt (rj per copy, rt per lane).
    const int sub = lane / kCopiesPerRow, col = lane % kCopiesPerRow, rt = row_of(0, 0, warp, sub);
    const T* src = base + static_cast<int64_t>(rt) * row_stride + col * 8;
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(stage)) + (rt * kD + col * 8) * 2;
    const uint64_t policy = streaming ? evict_first_policy() : 0;
#pragma unroll
    for (int j = 0; j < kCopies; ++j) {
      const int k = j * kRowsPerCopy, rj = row_of(0, k / kRowsPerStep, 0, k % kRowsPerStep);
      if (row_of(0, k / kRowsPerStep, warp, 0) >= rows) break;  // warp-uniform: the steps fill() reads
      if (rj + rt < rows) {
        const T* s = src + static_cast<int64_t>(rj) * row_stride;
        if (streaming) {
          cp_async_16_hint(dst + rj * kD * 2, s, policy);
        } else {
          cp_async_16(dst + rj * kD * 2, s);
        }
      }
    }
  }

  // Fills the registers from the stage (after this warp's copies completed): raw[s][u] holds the lane's
  // words of row row_of(0, s, warp, u) for every step begun before `rows` (a warp-uniform bound); the rows of
  // a step past `rows` (a tail) hold stale stage words, which accumulate<..., kTail> replaces by zeros and
  // store_int8 skips, and later steps are not read at all.
  __device__ __forceinline__ void fill(const uint32_t* stage, int rows, int warp, int lane) {
#pragma unroll
    for (int s = 0; s < kChunkSteps; ++s) {
      if (row_of(0, s, warp, 0) >= rows) break;
#pragma unroll
      for (int u = 0; u < kRowsPerStep; ++u) {
        const uint32_t* src = stage + row_of(0, s, warp, u) * (kD / 2) + lane * kWords;
        if constexpr (kWords == 2) {
          const uint2 w = *reinterpret_cast<const uint2*>(src);
          raw[s][u][0] = w.x;
          raw[s][u][1] = w.y;
        } else {
          raw[s][u][0] = *src;
        }
      }
    }
  }

  // fill() straight from global memory (the statistics pass, stats_pass_kernel): the lane's words of the
  // warp's rows of the chunk at base, streamed (last read); rows of a begun step past `rows` hold zeros.
  __device__ __forceinline__ void load(const T* base, int64_t row_stride, int rows, int warp, int lane) {
#pragma unroll
    for (int s = 0; s < kChunkSteps; ++s) {
      if (row_of(0, s, warp, 0) >= rows) break;
#pragma unroll
      for (int u = 0; u < kRowsPerStep; ++u) {
        const int r = row_of(0, s, warp, u);
        const T* src = base + static_cast<int64_t>(r) * row_stride + lane * kVec;
        if (r >= rows) {
#pragma unroll
          for (int i = 0; i < kWords; ++i) raw[s][u][i] = 0u;
        } else if constexpr (kWords == 2) {
          const uint2 w = __ldcs(reinterpret_cast<const uint2*>(src));
          raw[s][u][0] = w.x;
          raw[s][u][1] = w.y;
        } else {
          raw[s][u][0] = __ldcs(reinterpret_cast<const unsigned*>(src));
        }
      }
    }
  }

  // Row (s, u) as floats, and minus the shift.
  __device__ __forceinline__ void unpack_row(int s, int u, float (&v)[kVec]) const {
#pragma unroll
    for (int i = 0; i < kWords; ++i) {
      const float2 f = unpack2<kDtype>(raw[s][u][i]);
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
  }
  __device__ __forceinline__ void unpack_row(int s, int u, const float (&shift)[kVec],
                                             float (&v)[kVec]) const {
    unpack_row(s, u, v);
#pragma unroll
    for (int e = 0; e < kVec; ++e) v[e] -= shift[e];
  }

  // Accumulates the loaded chunk in the legacy order. kShift: subtract the K mean; kSumsOnly: column sums
  // only (the first pass over K); kUnit: unit-row sums (similarity); kAmax: max|x| (quantization); kTail:
  // rows may end inside a step (rows % 16 != 0), whose missing rows must add nothing (the fill's zero words
  // minus the shift would), else every step begun is whole and no element needs a select.
  // Steps before s_lo are skipped (the chunk's first block of a two-block item, already accumulated).
  template <bool kShift, bool kSumsOnly, bool kUnit, bool kAmax, bool kTail>
  __device__ __forceinline__ void accumulate(int rows, int c0, int s_lo, const float (&shift)[kVec], int warp,
                                             int lane) {
#pragma unroll
    for (int s = 0; s < kChunkSteps; ++s) {
      if (s < s_lo) continue;
      if (row_of(c0, s, warp, 0) >= rows) break;  // warp-uniform: the legacy loop's bound
      float v[kRowsPerStep][kVec];
#pragma unroll
      for (int u = 0; u < kRowsPerStep; ++u) {
        if constexpr (kShift) {
          unpack_row(s, u, shift, v[u]);
        } else {
          unpack_row(s, u, v[u]);
        }
        if constexpr (kTail) {
          const bool valid = row_of(c0, s, warp, u) < rows;
#pragma unroll
          for (int e = 0; e < kVec; ++e) v[u][e] = valid ? v[u][e] : 0.f;
        }
      }
      float sq[kRowsPerStep];
#pragma unroll
      for (int u = 0; u < kRowsPerStep; ++u) {
        sq[u] = 0.f;
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
          sum[e] += v[u][e];
          if constexpr (!kSumsOnly && kUnit) sq[u] += v[u][e] * v[u][e];
          if constexpr (!kSumsOnly && kAmax) amax = fmaxf(amax, fabsf(v[u][e]));
        }
      }
      if constexpr (!kSumsOnly && kUnit) {
        const float inv_own = inverse_row_norm(sq, lane);
#pragma unroll
        for (int u = 0; u < kRowsPerStep; ++u) {
          const float inv = __shfl_sync(kFullMask, inv_own, u * 8);  // lanes 8u.. hold row u
#pragma unroll
          for (int e = 0; e < kVec; ++e) unit[e] += v[u][e] * inv;
        }
      }
    }
    (void)lane;
  }

  // INT8 values of the chunk's rows from the registers; out points at the block's first row, lane's first
  // element.
  template <bool kShift>
  __device__ __forceinline__ void store_int8(int8_t* out, int rows, int s_lo, const float (&shift)[kVec],
                                             const Int8Quantizer& quant, int warp) const {
#pragma unroll
    for (int s = 0; s < kChunkSteps; ++s) {
      if (s < s_lo) continue;
      if (row_of(0, s, warp, 0) >= rows) break;  // warp-uniform
#pragma unroll
      for (int u = 0; u < kRowsPerStep; ++u) {
        const int r = row_of(0, s, warp, u);
        if (r < rows) {
          float v[kVec];
          if constexpr (kShift) {
            unpack_row(s, u, shift, v);
          } else {
            unpack_row(s, u, v);
          }
          store_int8_row(out + static_cast<int64_t>(r) * kD, v, quant);
        }
      }
    }
  }

  // INT8 values of a block longer than a chunk, its rows read again from memory (the slow path).
  static __device__ __forceinline__ void store_int8_reread(int8_t* out, const T* base, int64_t row_stride,
                                                           int rows, const float (&shift)[kVec],
                                                           const Int8Quantizer& quant, int warp, int lane) {
    for (int r = warp; r < rows; r += kStatsWarps) {
      const T* src = base + static_cast<int64_t>(r) * row_stride + lane * kVec;
      float v[kVec];
#pragma unroll
      for (int i = 0; i < kVec / 2; ++i) {
        const float2 f = unpack2<kDtype>(*reinterpret_cast<const uint32_t*>(src + 2 * i));
        v[2 * i] = f.x - shift[2 * i];
        v[2 * i + 1] = f.y - shift[2 * i + 1];
      }
      store_int8_row(out + static_cast<int64_t>(r) * kD, v, quant);
    }
  }

  static __device__ __forceinline__ void store_int8_row(int8_t* dst, const float (&v)[kVec],
                                                        const Int8Quantizer& quant) {
    const uint32_t packed = quant.pack<kVec>(v);
    if constexpr (kVec == 4) {
      __stcs(reinterpret_cast<unsigned*>(dst), packed);
    } else {
      __stcs(reinterpret_cast<unsigned short*>(dst), static_cast<unsigned short>(packed));
    }
  }
};

// The INT8 scale of a block from the warps' max|x| (max / 127; 1 / 127 for an all-zero block).
__device__ __forceinline__ float int8_block_scale(const float* s_amax) {
  float m = 0.f;
#pragma unroll
  for (int wi = 0; wi < kStatsWarps; ++wi) m = fmaxf(m, s_amax[wi]);
  return m > 0.f ? m / kInt8Max : 1.f / kInt8Max;
}

// ||mean of unit rows||^2 of a block from each thread's part (the legacy order: butterfly within a warp,
// then the warps in order), written to *dst by thread 0. Contains a CTA barrier.
__device__ __forceinline__ void block_similarity(float part, float* s_red, int tid, int warp, int lane,
                                                 float* dst) {
  part = warp_sum(part);
  if (lane == 0) s_red[warp] = part;
  __syncthreads();
  if (tid == 0) {
    float sim = 0.f;
#pragma unroll
    for (int wi = 0; wi < kStatsWarps; ++wi) sim += s_red[wi];
    *dst = sim;
  }
}

// Thread 0 spins until the flag is set (acquire: the K mean written before its release is visible).
__device__ __forceinline__ void wait_for_flag(int* flag) {
  ::cuda::atomic_ref<int, ::cuda::thread_scope_device> f(*flag);
  int sleep_ns = 32;
  while (f.load(::cuda::memory_order_acquire) == 0) {
    __nanosleep(sleep_ns);
    sleep_ns = min(2 * sleep_ns, kMaxSpinSleepNs);
  }
}

// Thread 0: takes a ticket (acq_rel: releases this CTA's earlier writes, ordered before it by the preceding
// __syncthreads, and acquires those of the earlier ticket holders); true for the last of `expected`.
__device__ __forceinline__ bool take_last_ticket(int* counter, int expected) {
  ::cuda::atomic_ref<int, ::cuda::thread_scope_device> c(*counter);
  return c.fetch_add(1, ::cuda::memory_order_acq_rel) == expected - 1;
}

// The rows of item `it` (all its blocks): the first row's address, the row stride and the row count (short of
// blocks x block rows for the tail).
template <typename T>
struct ItemRows {
  const T* base;
  int64_t row_stride;
  int row0, rows;
};
template <typename T>
__device__ __forceinline__ ItemRows<T> item_rows(const StatsParams& p, const Item& it) {
  const bool is_q = it.kind == ItemKind::kQStats;
  const StatsOperand& o = is_q ? p.q : p.k;
  ItemRows<T> r;
  r.row_stride = o.row_stride;
  r.row0 = it.blk * o.block;
  r.rows = min(it.blocks * o.block, o.seq - r.row0);
  r.base = static_cast<const T*>(o.x) + it.b * o.batch_stride + it.h * o.head_stride +
           static_cast<int64_t>(r.row0) * r.row_stride;
  return r;
}

// grid: persistent (kStatsCtasPerSm per SM at most), kStatsThreads threads. See the file comment. kUnit:
// the similarities are computed (pointers set for Q and K), kQuant: the INT8 values (likewise); the launcher
// checks both operands agree.
template <DType kDtype, int kD, bool kUnit, bool kQuant>
__global__ void __launch_bounds__(kStatsThreads, kStatsCtasPerSm) stats_kernel(const StatsParams p) {
  using W = BlockWorker<kDtype, kD>;
  using T = typename Element<kDtype>::T;
  constexpr int kVec = W::kVec;
  constexpr int kParts = mean_parts(kD);
  __shared__ alignas(16) uint32_t s_stage[W::kStageWords];  // a chunk of rows: this item's, then the next's
  __shared__ float s_sum[kStatsWarps][kD];
  __shared__ float s_unit[kStatsWarps][kD];
  __shared__ float s_amax[kStatsWarps];
  __shared__ float s_red[kStatsWarps];
  __shared__ float s_scale;
  __shared__ int s_item;
  __shared__ bool s_last_part, s_last_group;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (tid == 0) s_item = atomicAdd(p.counters, 1);
  __syncthreads();
  int item = s_item;
  if (item < p.num_items) {
    const Item it = decode_item(p, item);
    const ItemRows<T> r = item_rows<T>(p, it);
    W::stage(s_stage, r.base, r.row_stride, r.rows, warp, lane, it.kind != ItemKind::kKSum);
  }
  __syncthreads();                                  // every thread has read s_item
  if (tid == 0) s_item = atomicAdd(p.counters, 1);  // the next item (published by the loop's barrier)
  while (item < p.num_items) {
    // Every thread is done with the previous item's shared buffers (s_sum ... s_scale); s_item (the next
    // item, reserved one item ahead) is visible.
    __syncthreads();
    const int next = s_item;
    int reserved = p.num_items;  // thread 0: the item after next (to s_item after the epilogue's barrier)
    if (tid == 0 && next < p.num_items) reserved = atomicAdd(p.counters, 1);
    const Item it = decode_item(p, item);
    const bool is_q = it.kind == ItemKind::kQStats, is_sum = it.kind == ItemKind::kKSum;
    const ItemRows<T> cur = item_rows<T>(p, it);
    const T* base = cur.base;
    const int64_t row_stride = cur.row_stride;
    const int row0 = cur.row0, rows = cur.rows;
    // The operand's fields, selected one by one (no local copy of the parameter struct).
    const int heads = is_q ? p.q.heads : p.k.heads, seq = is_q ? p.q.seq : p.k.seq;
    const int num_blocks = is_q ? p.q.num_blocks : p.k.num_blocks;
    float* pooled = is_sum ? nullptr : is_q ? p.q.pooled : p.k.pooled;
    float* similarity = is_sum ? nullptr : is_q ? p.q.similarity : p.k.similarity;
    int8_t* quant = is_sum ? nullptr : is_q ? p.q.quant : p.k.quant;
    float* quant_scale = is_q ? p.q.quant_scale : p.k.quant_scale;

    const int64_t bh = static_cast<int64_t>(it.b) * heads + it.h;  // the group g for K items

    float shift[kVec] = {};
    W w;
    // Chunk c0 of the block (kChunkRows rows; one chunk unless the block has more rows) from the stage into
    // registers. Chunk 0's copies were issued one item earlier (in flight during the previous item); those of
    // chunk c0 > 0 (the slow path of blocks > kChunkRows rows) here, waited for at once. After the last
    // chunk, the next item's first chunk is issued: its copies overwrite only this warp's rows, already read,
    // and are in flight during this item's arithmetic, epilogue and K-stats wait; they wait on nothing.
    const auto next_chunk = [&](int c0) {
      cp_async_wait_all();  // this lane's copies of the chunk (the only ones in flight)
      __syncwarp();         // ... and those of the warp's other lanes: the warp's rows are in the stage
      w.fill(s_stage, rows - c0, warp, lane);
      __syncwarp();  // every lane has read the warp's rows before they are overwritten
      if (c0 + kChunkRows >= rows && next < p.num_items) {
        const Item ni = decode_item(p, next);
        const ItemRows<T> nr = item_rows<T>(p, ni);
        W::stage(s_stage, nr.base, nr.row_stride, nr.rows, warp, lane, ni.kind != ItemKind::kKSum);
      }
    };
    next_chunk(0);
    if (it.kind == ItemKind::kKStats) {
      if (tid == 0) wait_for_flag(p.counters + 1 + bh * kGroupCounters + kMaxMeanParts + 1);
      __syncthreads();
#pragma unroll
      for (int e = 0; e < kVec; ++e) shift[e] = __ldcg(p.k_mean + bh * kD + lane * kVec + e);
    }
    // The item's blocks one after another: two only where both are in the registers (rows <= kChunkRows) and
    // the block is a multiple of 16 rows, so that the second block's rows sit with the legacy warps from
    // step s_lo on.
    for (int sub = 0; sub < it.blocks; ++sub) {
      const int block = is_q ? p.q.block : p.k.block;
      const int sub_row0 = sub * block, s_lo = sub_row0 / (kStatsWarps * kRowsPerStep);
      const int rows_end = sub + 1 < it.blocks ? sub_row0 + block : rows;  // the block's end in the item
      const int64_t out_block = bh * num_blocks + it.blk + sub;
      // Steps whole (no select per element) unless the block ends inside one (a tail block, or a block size
      // not a multiple of 16).
      const bool tail = rows_end % (kStatsWarps * kRowsPerStep) != 0;
      if (sub > 0) {
        __syncthreads();  // every thread is done with the previous block's shared buffers
        w.zero();
      }
      for (int c0 = 0; c0 < rows_end; c0 += kChunkRows) {
        if (c0 > 0) {
          W::stage(s_stage, base + static_cast<int64_t>(c0) * row_stride, row_stride, rows - c0, warp, lane,
                   !is_sum);
          next_chunk(c0);
        }
        if (is_sum) {  // sums only: the tail's selects cost little here (one instantiation)
          w.template accumulate<false, true, false, false, true>(rows_end, c0, s_lo, shift, warp, lane);
        } else if (is_q) {
          if (tail) {
            w.template accumulate<false, false, kUnit, kQuant, true>(rows_end, c0, s_lo, shift, warp, lane);
          } else {
            w.template accumulate<false, false, kUnit, kQuant, false>(rows_end, c0, s_lo, shift, warp, lane);
          }
        } else {
          if (tail) {
            w.template accumulate<true, false, kUnit, kQuant, true>(rows_end, c0, s_lo, shift, warp, lane);
          } else {
            w.template accumulate<true, false, kUnit, kQuant, false>(rows_end, c0, s_lo, shift, warp, lane);
          }
        }
      }

#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        s_sum[warp][lane * kVec + i] = w.sum[i];
        s_unit[warp][lane * kVec + i] = w.unit[i];
      }
      if (kQuant && !is_sum) {
        const float m = warp_max(w.amax);
        if (lane == 0) s_amax[warp] = m;
      }
      __syncthreads();

      // Column totals in a fixed warp order (the legacy epilogue), then the block's outputs.
      const float count = static_cast<float>(rows_end - sub_row0);
      float sim_part = 0.f;
      for (int c = tid; c < kD; c += kStatsThreads) {
        float total = 0.f, unit_total = 0.f;
#pragma unroll
        for (int wi = 0; wi < kStatsWarps; ++wi) {
          total += s_sum[wi][c];
          unit_total += s_unit[wi][c];
        }
        if (is_sum) p.k_sums[out_block * kD + c] = total;
        if (pooled != nullptr) pooled[out_block * kD + c] = total / count;
        const float mean_unit = unit_total / count;
        sim_part += mean_unit * mean_unit;
      }

      if (is_sum) {
        // The last block of a part adds the part's block sums in float64 (block order); the last part adds
        // the parts in order and publishes the mean (the legacy mean kernel's order, see predict_params.h).
        const int nkb = num_blocks, per = (nkb + kParts - 1) / kParts, used_parts = (nkb + per - 1) / per;
        const int part = (it.blk + sub) / per, j0 = part * per, j1 = min(nkb, j0 + per);
        int* group_counters = p.counters + 1 + bh * kGroupCounters;
        __syncthreads();  // the block sums of every thread are written
        if (tid == 0) s_last_part = take_last_ticket(group_counters + part, j1 - j0);
        __syncthreads();
        if (s_last_part) {
          if (tid < kD) {
            const float* col = p.k_sums + bh * nkb * static_cast<int64_t>(kD) + tid;
            double acc = 0.0;
#pragma unroll kMeanUnroll
            for (int j = j0; j < j1; ++j) acc += __ldcg(col + static_cast<int64_t>(j) * kD);
            p.k_parts[(bh * kParts + part) * kD + tid] = acc;
          }
          __syncthreads();
          if (tid == 0) s_last_group = take_last_ticket(group_counters + kMaxMeanParts, used_parts);
          __syncthreads();
          if (s_last_group) {
            if (tid < kD) {
              double total = 0.0;
#pragma unroll
              for (int q = 0; q < kParts; ++q)
                total += q < used_parts ? __ldcg(p.k_parts + (bh * kParts + q) * kD + tid) : 0.0;
              p.k_mean[bh * kD + tid] = static_cast<float>(total / seq);
            }
            __syncthreads();
            if (tid == 0) {
              ::cuda::atomic_ref<int, ::cuda::thread_scope_device> ready(group_counters[kMaxMeanParts + 1]);
              ready.store(1, ::cuda::memory_order_release);
            }
          }
        }
      } else {
        if (kUnit) {
          block_similarity(sim_part, s_red, tid, warp, lane, similarity + out_block);
        }
        if (kQuant) {
          if (tid == 0) {
            const float scale = int8_block_scale(s_amax);
            s_scale = scale;
            quant_scale[out_block] = scale;
          }
          __syncthreads();
          const Int8Quantizer quantizer(s_scale);
          int8_t* out = quant + (bh * seq + row0) * kD + lane * kVec;
          if (rows <= kChunkRows) {  // the item is still in registers
            if (is_q) {
              w.template store_int8<false>(out, rows_end, s_lo, shift, quantizer, warp);
            } else {
              w.template store_int8<true>(out, rows_end, s_lo, shift, quantizer, warp);
            }
          } else {
            W::store_int8_reread(out, base, row_stride, rows, shift, quantizer, warp, lane);  // an L2 hit
          }
        }
      }
    }
    if (tid == 0) s_item = reserved;  // every thread read s_item before the barrier after s_sum's writes
    item = next;
  }
}

// The statistics as plain passes (the prediction's default; SPARGE_STATS_PASSES=0 runs stats_kernel): after
// launch_k_mean (the K block sums in the legacy order and the float64 mean kernel), one CTA per block of
// smoothed K and of Q (K's blocks first and last block first: the heads whose sums were taken last are still
// in L2), its rows loaded straight into the BlockWorker's registers, then stats_kernel's arithmetic and
// epilogue of a K-stats or Q-stats item: bit-identical outputs, no queue, tickets or staged copies. grid: B
// Hkv NKB + B Hq NQB, kStatsThreads threads; k_items = B Hkv NKB.
template <DType kDtype, int kD, bool kQuant>
__global__ void __launch_bounds__(kStatsThreads, kStatsCtasPerSm)
    stats_pass_kernel(const StatsParams p, int64_t k_items) {
  using W = BlockWorker<kDtype, kD>;
  using T = typename Element<kDtype>::T;
  constexpr int kVec = W::kVec;
  __shared__ float s_sum[kStatsWarps][kD];
  __shared__ float s_unit[kStatsWarps][kD];
  __shared__ float s_amax[kStatsWarps];
  __shared__ float s_red[kStatsWarps];
  __shared__ float s_scale;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const bool is_q = blockIdx.x >= k_items;
  const StatsOperand& o = is_q ? p.q : p.k;
  const int64_t item = is_q ? blockIdx.x - k_items : k_items - 1 - blockIdx.x;
  const int64_t bh = item / o.num_blocks;
  const int blk = static_cast<int>(item - bh * o.num_blocks);
  const int b = static_cast<int>(bh / o.heads), h = static_cast<int>(bh - int64_t{b} * o.heads);
  const int row0 = blk * o.block, rows = min(o.block, o.seq - row0);
  const int64_t row_stride = o.row_stride;
  const T* base = static_cast<const T*>(o.x) + b * o.batch_stride + h * o.head_stride +
                  static_cast<int64_t>(row0) * row_stride;
  const int64_t out_block = bh * o.num_blocks + blk;

  float shift[kVec] = {};
  if (!is_q) {
#pragma unroll
    for (int e = 0; e < kVec; ++e) shift[e] = p.k_mean[bh * kD + lane * kVec + e];
  }
  W w;
  const bool tail = rows % (kStatsWarps * kRowsPerStep) != 0;  // as stats_kernel: selects only in a tail
  for (int c0 = 0; c0 < rows; c0 += kChunkRows) {
    w.load(base + static_cast<int64_t>(c0) * row_stride, row_stride, rows - c0, warp, lane);
    if (is_q) {
      if (tail) {
        w.template accumulate<false, false, true, kQuant, true>(rows, c0, 0, shift, warp, lane);
      } else {
        w.template accumulate<false, false, true, kQuant, false>(rows, c0, 0, shift, warp, lane);
      }
    } else {
      if (tail) {
        w.template accumulate<true, false, true, kQuant, true>(rows, c0, 0, shift, warp, lane);
      } else {
        w.template accumulate<true, false, true, kQuant, false>(rows, c0, 0, shift, warp, lane);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    s_sum[warp][lane * kVec + i] = w.sum[i];
    s_unit[warp][lane * kVec + i] = w.unit[i];
  }
  if (kQuant) {
    const float m = warp_max(w.amax);
    if (lane == 0) s_amax[warp] = m;
  }
  __syncthreads();
  // Column totals in a fixed warp order (the legacy epilogue), then the block's outputs. (Written out as in
  // stats_kernel: a helper shared by both made ptxas spill more in stats_kernel's prediction variants.)
  const float count = static_cast<float>(rows);
  float sim_part = 0.f;
  for (int c = tid; c < kD; c += kStatsThreads) {
    float total = 0.f, unit_total = 0.f;
#pragma unroll
    for (int wi = 0; wi < kStatsWarps; ++wi) {
      total += s_sum[wi][c];
      unit_total += s_unit[wi][c];
    }
    if (o.pooled != nullptr) o.pooled[out_block * kD + c] = total / count;
    const float mean_unit = unit_total / count;
    sim_part += mean_unit * mean_unit;
  }
  block_similarity(sim_part, s_red, tid, warp, lane, o.similarity + out_block);
  if constexpr (kQuant) {
    if (tid == 0) {
      const float scale = int8_block_scale(s_amax);
      s_scale = scale;
      o.quant_scale[out_block] = scale;
    }
    __syncthreads();
    const Int8Quantizer quantizer(s_scale);
    int8_t* out = o.quant + (bh * o.seq + row0) * kD + lane * kVec;
    if (rows <= kChunkRows) {  // the block is still in the registers
      if (is_q) {
        w.template store_int8<false>(out, rows, 0, shift, quantizer, warp);
      } else {
        w.template store_int8<true>(out, rows, 0, shift, quantizer, warp);
      }
    } else {
      W::store_int8_reread(out, base, row_stride, rows, shift, quantizer, warp, lane);
    }
  }
}

}  // namespace sparge::cuda::predict
