// The Hopper (sm_90a) block-sparse attention kernel: the portable kernel's contract (params.h: same mask
// geometry 128 x 64, stage-2 filter, causal / GQA / tail / LSE semantics) on warpgroup MMAs fed by TMA.
//
// CTA = one 128-row query tile = one mask row, 3 warpgroups (384 threads):
//   warpgroup 0, the producer: two threads issue every TMA load: one the Q tile once and, for each listed key
//     block n, the K tile into stage n % kStages of the K ring; the other the V tiles into the V ring (each
//     pair of stages, one consumer step, with its own "full" and "empty" mbarriers in each ring: S = Q K^T
//     starts before V has landed, and K stages are free again as soon as S is computed, or after the
//     softmax where the sum check may recompute S from them). An odd count is
//     padded with a copy of the last block. The
//     producer keeps 24 registers (setmaxnreg) and gives the rest to the consumers.
//   warpgroups 1, 2, the consumers: 64 query rows each (rows 64 (wg - 1) ..), Q in registers (loaded once
//     from the swizzled tile). One step = two listed blocks (128 keys, consecutive stages = one operand):
//     S(j) = Q K(j)^T (m64n128k16 wgmma, K from shared memory), issued together with O += P(j-1) V(j-1)
//     (m64nDk16, V read N-major); wait for S(j) only; mask, online softmax in registers (log2 units, as the
//     portable kernel), stage-2 votes, P(j) while the tensor cores still run P(j-1) V(j-1); then wait for
//     that, release its stages (each warp arrives on their empty barriers), rescale O and round P(j) to the
//     16-bit type straight from the accumulator fragment (it is the wgmma A register fragment). Without stage
//     2, 16-bit P skips the row maxima while a row's partial sums prove its P bounded (the sum check; the
//     rare warp that fails it recomputes its S with mma.sync from the still-held K stages). The two
//     consumer warpgroups take turns issuing their MMAs (ping-pong, named barriers), so one's softmax
//     overlaps the other's MMAs.
// Shared memory: Q (128 x D), the K ring and the V ring (kStages x 64 x D each), every tile as D / 64 slices
// of 128-byte rows in the 128-byte swizzle (TMA writes it, wgmma reads it; see sm90_ops.cuh), then the
// mbarriers and the stage-2 vote flags. The epilogue stages O through the warpgroup's own Q rows (same
// swizzled layout) and stores it with TMA (rows >= Nq are clipped by the tensor map). Stage 2: a (32-row
// group, key block) unit is skipped exactly as in the portable kernel (m, l and O of the group's rows
// unchanged; the step's second block is judged against the maximum after its first). A warpgroup holds two
// groups and issues its P V MMAs as one: a group that skips zeroes its P and keeps its statistics, and the
// MMAs are skipped when every unit of the step's warpgroup (per-CTA vote: the tile) skips. The votes are
// exchanged through shared memory and a named barrier, only for heads with a finite pvthreshd; whether a
// group has an allowed key at all is decided from the indices. Grid: (NQB, Hq, B), query block NQB - 1 - x
// first (longest causal rows first), one CTA per SM; with AttentionParams::tile_order (the API's default on
// this path) the CTAs take the tiles in that order instead: mask rows listing >= 4x the mean first
// (tile_order.cu).
//
// Quantized precisions (params.h): Precision::kInt8 / kInt8Fp8 take INT8 Q and smoothed K with per-block
// scales: S is m64n128k32 s8 -> s32, Q in registers as before (D bytes per row: one 128-byte slice at D =
// 128, one 64-byte slice in the 64-byte swizzle at D = 64). The int32 scores become exact floats without the
// conversion unit (shared with exp2): x + 1.5 * 2^23 as float bits is exactly x + 12582912 for |x| < 2^22
// (|Q.K| <= D * 128^2 < 2^22), so an integer add and a float subtract. (Folding the bias into the exponent's
// shift instead rounds that shift at the bias's magnitude: measured on an H200, 10x the kernel-vs-emulation
// error.) Each block's scale q_scale * k_scale * scale_log2 multiplies in the exponent and the maxima.
// kInt8 keeps the 16-bit P V; kInt8Fp8 rounds P * 448 to e4m3 in the
// register order of the m64k32 A fragment (the V^T key permutation of params.h makes the S accumulators line
// up) and multiplies by the FP8 V^T tile (m64nDk32 e4m3, K-major: D rows of 64 key bytes per stage, 64-byte
// swizzle); the per-channel V scale and the factor 448 leave in the epilogue. O is staged in its own 16-bit
// tile (the INT8 Q tile is half its size).
#pragma once

#include <climits>

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "../params.h"
#include "../tile_ops.cuh"
#include "sm90_ops.cuh"

namespace sparge::cuda {

// The kernel parameters: the portable kernel's, plus the TMA descriptors of Q, K, V and O (4-D tensors D x N
// x H x B in the order of their strides; boxes of one swizzle width (128 bytes, 64 for INT8 at D = 64) x 128
// rows (Q) or 64 rows (K, V, O); FP8 V^T: Nk_pad x D x H x B, boxes 64 keys x D rows).
struct Sm90Params {
  AttentionParams p;
  int pingpong = 1;  // order the two consumer warpgroups' MMA issue (see the consumer loop)
  int lazy = 1;      // lazy rescaling on (16-bit P; see Sm90Config::kLazyLog2)
  unsigned producer_sleep_ns =
      0;  // the producer's back-off between empty-slot tries (sm90::mbar_wait_backoff)
  CUtensorMap q_map, k_map, v_map, o_map;
};

template <int kHeadDim, Precision kQk = Precision::k16Bit>
struct Sm90Config {
  static_assert(kHeadDim == 64 || kHeadDim == 128, "the Hopper kernel is instantiated for D = 64 and 128");
  static constexpr bool kInt8 = kQk != Precision::k16Bit;     // INT8 Q and K tiles, s32 scores
  static constexpr bool kFp8Pv = kQk == Precision::kInt8Fp8;  // FP8 P and V^T
  static constexpr int kBlockM = 128, kBlockN = 64;  // the mask geometry (one stage holds one key block)
  static constexpr int kStepBlocks = 2;  // key blocks per consumer step: S is 64 x 128 per warpgroup
  static constexpr int kStepKeys = kStepBlocks * kBlockN;
  static constexpr int kConsumerGroups = 2;  // warpgroups of 64 rows
  static constexpr int kThreads = 128 * (1 + kConsumerGroups);
  static constexpr int kConsumerWarps = 4 * kConsumerGroups;
  // Q and K tiles: rows of D elements of kQkBytes, in column slices of the swizzle width (128 bytes; the
  // 64-byte rows of INT8 at D = 64 in the 64-byte swizzle). A k step of S reads 32 bytes of a row (k16 of
  // 16-bit, k32 of INT8).
  static constexpr int kQkBytes = kInt8 ? 1 : 2;
  static constexpr int kQkRowBytes = kHeadDim * kQkBytes;
  static constexpr int kQkSwizzle = kQkRowBytes < 128 ? kQkRowBytes : 128;
  static constexpr int kQkSlices = kQkRowBytes / kQkSwizzle;
  static constexpr int kQkSliceElems = kQkSwizzle / kQkBytes;
  static constexpr int kQkSteps = kQkRowBytes / 32;       // k steps of S = Q K^T
  static constexpr int kStepsPerSlice = kQkSwizzle / 32;  // of them within one slice
  static constexpr int kQSliceBytes = kBlockM * kQkSwizzle;
  static constexpr int kQBytes = kQkSlices * kQSliceBytes;
  static constexpr int kKSliceBytes = kBlockN * kQkSwizzle;  // one stage's rows of one slice
  static constexpr int kKBytes = kQkSlices * kKSliceBytes;   // one stage of K
  // V: 16-bit (keys x D, the N-major operand of P V) in D / 64 slices of 128-byte rows; FP8 V^T (D rows of
  // 64 key bytes, K-major) in the 64-byte swizzle.
  static constexpr int kVSlices = kFp8Pv ? 1 : kHeadDim / 64;
  static constexpr int kVSliceBytes = kFp8Pv ? kHeadDim * kBlockN : kBlockN * 128;
  static constexpr int kVBytes = kVSlices * kVSliceBytes;  // one stage of V
  // O staging (16-bit, D / 64 slices of 128 rows x 128 bytes): the Q tile itself for 16-bit Q, else its own.
  static constexpr int kOSliceBytes = kBlockM * 128;
  static constexpr int kOStageBytes = kInt8 ? (kHeadDim / 64) * kOSliceBytes : 0;
  // Stages (one key block each, in pairs for the 128-key steps): the producer runs this many blocks ahead (a
  // sparse row's next block is anywhere in memory). K and V rings are slice-major ([slice][stage][rows]), so
  // two consecutive stages are one 128-row operand per slice. 16-bit: 224 KiB (D = 128, the most that fits)
  // / 144 KiB (D = 64) with Q; INT8 Q K^T: 193 / 121 KiB; with FP8 P V (8 stages): 177 / 89 KiB.
  static constexpr int kStages = kFp8Pv || kHeadDim == 64 ? 8 : 6;
  static_assert(kStages % kStepBlocks == 0, "a step's stages are consecutive");
  static constexpr int kKRingSliceBytes = kStages * kKSliceBytes;  // distance between slices in a ring
  static constexpr int kVRingSliceBytes = kStages * kVSliceBytes;
  static constexpr int kKRingBytes = kQkSlices * kKRingSliceBytes;
  static constexpr int kVRingBytes = kVSlices * kVRingSliceBytes;
  // mbarriers: q_full, then per pair of stages (one consumer step) k_full, v_full, k_empty, v_empty [S / 2]
  // each; then stage-2 flags: 2 parities x 2 votes
  // x 8 warps.
  static constexpr int kBarrierBytes = 8 * (1 + 4 * (kStages / kStepBlocks));
  static constexpr int kFlagBytes = 2 * 2 * kConsumerWarps * 4;
  static constexpr int kSmemBytes = 1024 /* alignment slack */ + kQBytes + kOStageBytes + kKRingBytes +
                                    kVRingBytes + kBarrierBytes + kFlagBytes;
  static_assert(kSmemBytes <= 227 * 1024, "fits the 227 KiB of an sm_90 CTA");
  // The int32 -> float conversion of quantized scores: bits(x + kScoreBias) as float = x + 12582912.
  static constexpr int kScoreBiasBits = 0x4B400000;
  static constexpr float kScoreBias = 12582912.f;
  // log2 of the factor P and l carry: 448 (the e4m3 maximum) for FP8 P, 1 otherwise.
  static constexpr float kPLog2Scale = kFp8Pv ? 8.807354922057604f : 0.f;
  // Lazy rescaling (as FlashAttention-4): the softmax stabilizer of a row moves to the running maximum only
  // when that exceeds it by more than this (log2 units), so P <= 2^kLazyLog2 in a full step (in a step that
  // passes the sum check, P < kSumBound) and most steps skip the O
  // rescale (every step that raises some row's maximum of the warp did before: nearly all of a sparse row's).
  // O, l and the LSE are exact in any stabilizer; only P's rounding points move. FP8 P carries 448 = its
  // maximum already: no slack there.
  static constexpr float kLazyLog2 = kFp8Pv ? 0.f : 8.f;  // (0 also where Sm90Params::lazy is off)
  // The sum check of 16-bit P (the kernel's kSumCheck): a step keeps its stabilizer without any row maximum
  // while every row's partial sums stay below this (so does every P: < the fp16 maximum 65504).
  static constexpr float kSumBound = 32768.f;
  // Registers: 384 threads at 168 each at launch; the producer drops to 24, the consumers take 240.
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
};

// kStage2: some head has a finite pvthreshd (p.pvthreshd != nullptr). Without it the step needs no votes and
// no per-block skip state: blocks without an allowed key are masked to -inf like any other masked score.
template <DType kDtype, int kHeadDim, Precision kQk, Stage2Granularity kGranularity, bool kStage2>
__global__ void __launch_bounds__(Sm90Config<kHeadDim, kQk>::kThreads, 1)
    sm90_block_sparse_attention_kernel(const __grid_constant__ Sm90Params prm) {
#if defined(SPARGE_SM90_ENABLED)
  using Cfg = Sm90Config<kHeadDim, kQk>;
  constexpr bool kInt8 = Cfg::kInt8, kFp8Pv = Cfg::kFp8Pv;
  // The sum check (see the consumer loop) for 16-bit P without stage 2 (stage 2 judges against the true
  // maximum; FP8 P must stay below 448 relative to it). SPARGE_SM90_NO_SUM_CHECK: off, for A/B timing; the
  // diagnostics time the step with its maximum.
#if defined(SPARGE_SM90_NO_SUM_CHECK) || defined(SPARGE_SM90_DIAG_MMA_ONLY) || \
    defined(SPARGE_SM90_DIAG_NO_MAX) || defined(SPARGE_SM90_DIAG_NO_EXP)
  constexpr bool kSumCheck = false;
#else
  constexpr bool kSumCheck = !kStage2 && !kFp8Pv;
#endif
  using Elem = tile::Element<kDtype>;
  constexpr int kS = Cfg::kStages;
  constexpr int kNTiles = Cfg::kStepKeys / 8;  // n8 tiles of S: 64 floats per thread
  constexpr int kHalfTiles = kNTiles / 2;      // n8 tiles of one key block
  constexpr int kDTiles = kHeadDim / 8;        // n8 tiles of O: D / 2 floats per thread
  const AttentionParams& p = prm.p;

  extern __shared__ uint8_t smem_raw[];
  uint32_t base = (sm90::smem_addr(smem_raw) + 1023u) & ~1023u;
  // Opaque from here on: ptxas would otherwise rematerialize it (and every barrier address and wgmma
  // descriptor derived from it) from %cgactaid in every step of the consumer loop.
  asm volatile("" : "+r"(base));
  const uint32_t q_smem = base;
  const uint32_t o_stage = kInt8 ? q_smem + Cfg::kQBytes : q_smem;
  const uint32_t k_ring = q_smem + Cfg::kQBytes + Cfg::kOStageBytes;
  const uint32_t v_ring = k_ring + Cfg::kKRingBytes;
  const uint32_t bars = v_ring + Cfg::kVRingBytes;
  const uint32_t q_full = bars;
  // One full and one empty barrier per K and V pair of stages (stage s: pair s / 2): the producer expects
  // both blocks' bytes on the pair's full barrier, the consumers wait once and release once per step.
  constexpr int kPairs = kS / Cfg::kStepBlocks;
  // (Unsigned: s / 2 of a signed s costs two more instructions per address in the consumer loop.)
  const auto pair_bar = [&](int first, int s) { return bars + 8u * (first + static_cast<unsigned>(s) / 2u); };
  const auto k_full = [&](int s) { return pair_bar(1, s); };
  const auto v_full = [&](int s) { return pair_bar(1 + kPairs, s); };
  const auto k_empty = [&](int s) { return pair_bar(1 + 2 * kPairs, s); };
  const auto v_empty = [&](int s) { return pair_bar(1 + 3 * kPairs, s); };
  const uint32_t flags = bars + Cfg::kBarrierBytes;

  // The tile and its row's count: from the natural position of this CTA, or from the (position, count) pair
  // AttentionParams::tile_order gives it (heavy mask rows first; one load and two divisions per CTA). With an
  // order the launch is a programmatic dependent one: wait for the order's grid (and, through it, every
  // earlier one) before the first load. (Without such a launch the wait returns at once.) The entry's load is
  // a coherent one: the order's grid may have written it after this grid started.
  struct Tile {
    int x, head, batch, count;
  };
  const Tile tile = [&] {
    if (p.tile_order == nullptr) {
      const int x = static_cast<int>(blockIdx.x), head = static_cast<int>(blockIdx.y);
      const int batch = static_cast<int>(blockIdx.z);
      return Tile{x, head, batch,
                  __ldg(p.mask_counts + (static_cast<int64_t>(batch) * p.heads_q + head) * p.num_q_blocks +
                        (p.num_q_blocks - 1 - x))};
    }
    asm volatile("griddepcontrol.wait;" ::: "memory");
    const int2 entry = reinterpret_cast<const int2*>(
        p.tile_order)[(static_cast<int64_t>(blockIdx.z) * p.heads_q + blockIdx.y) * p.num_q_blocks +
                      blockIdx.x];
    const int group = entry.x / p.num_q_blocks;
    return Tile{entry.x - group * p.num_q_blocks, group % p.heads_q, group / p.heads_q, entry.y};
  }();
  const int q_block = p.num_q_blocks - 1 - tile.x;
  const int head = tile.head, batch = tile.batch, kv_head = head / p.kv_group;
  const int q0 = q_block * Cfg::kBlockM;
  const int64_t mask_row = (static_cast<int64_t>(batch) * p.heads_q + head) * p.num_q_blocks + q_block;
  const int count = tile.count;
  const int32_t* indices = p.mask_indices + mask_row * p.num_k_blocks;
  // Blocks loaded: an odd count is padded with a copy of the last block (finite data; its scores are masked).
  const int loaded = count + (count & 1);

  const int tid = threadIdx.x, warp_group = tid / 128, lane = tid % 32;
  if (tid == 0) {
    sm90::mbar_init(q_full, 1);
    for (int s = 0; s < kS; s += Cfg::kStepBlocks) {
      sm90::mbar_init(k_full(s), 1);
      sm90::mbar_init(v_full(s), 1);
      sm90::mbar_init(k_empty(s), Cfg::kConsumerWarps);
      sm90::mbar_init(v_empty(s), Cfg::kConsumerWarps);
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();

  if (warp_group == 0) {  // ---------------- producer ----------------
    // Two threads: lane 0 of warp 0 loads Q and the K ring, lane 0 of warp 1 the V ring. K stages are
    // released as soon as S is computed (with the sum check: after the softmax), V stages after P V:
    // separate loaders keep K ahead of the (later) V releases.
    sm90::regs_dealloc<Cfg::kProducerRegs>();
    const int pwarp = tid / 32;
    if (lane != 0 || pwarp > 1 || count == 0) return;
    const bool is_k = pwarp == 0;
    if (is_k) {
      sm90::tma_prefetch_desc(&prm.q_map);
      sm90::tma_prefetch_desc(&prm.k_map);
      sm90::mbar_expect_tx(q_full, Cfg::kQBytes);
#pragma unroll
      for (int c = 0; c < Cfg::kQkSlices; ++c)
        sm90::tma_load_4d(&prm.q_map, q_smem + c * Cfg::kQSliceBytes, q_full, Cfg::kQkSliceElems * c, q0,
                          head, batch);
    } else {
      sm90::tma_prefetch_desc(&prm.v_map);
    }
    const void* map = is_k ? static_cast<const void*>(&prm.k_map) : static_cast<const void*>(&prm.v_map);
    const uint32_t ring = is_k ? k_ring : v_ring;
    int kb_next = __ldg(indices);
    for (int n = 0; n < loaded; ++n) {
      const int s = n % kS, kb = kb_next;
      if (n + 1 < count) kb_next = __ldg(indices + n + 1);
      const uint32_t full = is_k ? k_full(s) : v_full(s);
      if (n % 2 == 0) {  // the pair's first block: wait for its stages, expect both blocks' bytes
        sm90::mbar_wait_backoff(is_k ? k_empty(s) : v_empty(s), ((n / kS) & 1) ^ 1, prm.producer_sleep_ns);
        sm90::mbar_expect_tx(full, 2 * (is_k ? Cfg::kKBytes : Cfg::kVBytes));
      }
      if (is_k) {
#pragma unroll
        for (int c = 0; c < Cfg::kQkSlices; ++c)
          sm90::tma_load_4d(map, ring + c * Cfg::kKRingSliceBytes + s * Cfg::kKSliceBytes, full,
                            Cfg::kQkSliceElems * c, kb * Cfg::kBlockN, kv_head, batch);
      } else if constexpr (kFp8Pv) {  // V^T: the block's 64 key bytes of every one of the D rows
        sm90::tma_load_4d(map, ring + s * Cfg::kVSliceBytes, full, kb * Cfg::kBlockN, 0, kv_head, batch);
      } else {
#pragma unroll
        for (int c = 0; c < Cfg::kVSlices; ++c)
          sm90::tma_load_4d(map, ring + c * Cfg::kVRingSliceBytes + s * Cfg::kVSliceBytes, full, 64 * c,
                            kb * Cfg::kBlockN, kv_head, batch);
      }
    }
    return;
  }

  // ---------------- consumers ----------------
  sm90::regs_alloc<Cfg::kConsumerRegs>();
  const int wg = warp_group - 1;                     // rows 64 wg .. 64 wg + 63 of the tile
  const int wtid = tid % 128, warp = wtid / 32;      // warp within the warpgroup: rows 16 warp ..
  const int cwarp = wg * 4 + warp;                   // consumer warp 0..7
  const int group = cwarp / 2;                       // 32-row stage-2 group 0..3 of the tile
  const int wg_row0 = q0 + 64 * wg;                  // first row of the warpgroup
  const int row_a = wg_row0 + 16 * warp + lane / 4;  // the thread's rows: row_a, row_a + 8
  const int causal_offset = p.seq_k - p.seq_q;
  const float pvthreshd = kStage2 ? p.pvthreshd[head] : __builtin_huge_valf();
  const bool stage2_on = kStage2 && pvthreshd != __builtin_huge_valf();
  const float scale_log2 = p.scale_log2;
  const float lazy_log2 = prm.lazy ? Cfg::kLazyLog2 : 0.f;
  // Quantized: the tile's Q scale and the kv head's K scales (one per key block).
  const float q_scale = kInt8 ? __ldg(p.q_scale + mask_row) : 1.f;
  const float* k_scale_row =
      kInt8 ? p.k_scale + (static_cast<int64_t>(batch) * p.heads_kv + kv_head) * p.num_k_blocks : nullptr;

  float o[kDTiles * 4];
#pragma unroll
  for (int i = 0; i < kDTiles * 4; ++i) o[i] = 0.f;
  // m: the running row maxima (log2 units; stage 2 judges against them; with the sum check only updated by
  // full steps, so it may lag: it only feeds the stabilizer's decision, which stays the same); ns: the
  // softmax stabilizers (the maxima when last moved, see kLazyLog2) minus kPLog2Scale, which P, l and O are
  // relative to (the LSE too).
  float m[2] = {tile::kNegInf, tile::kNegInf}, ns[2] = {tile::kNegInf, tile::kNegInf}, l[2] = {0.f, 0.f};
  int units = 0, skipped = 0;
  const bool counting =
      kGranularity == Stage2Granularity::kCta ? (wg == 0 && wtid == 0) : (lane == 0 && warp % 2 == 0);
  const bool count_units = !kStage2 && counting && p.stage2_units != nullptr;  // (without stage 2)
  // Whether rows [r0, r0 + rows) hold an allowed key in [key0, key0 + 64) (structural, from the indices).
  const auto rows_have_key = [&](int r0, int rows, int key0) {
    const int last = min(r0 + rows, p.seq_q) - 1;
    if (last < r0 || key0 >= p.seq_k) return false;
    return !p.causal || key0 <= last + causal_offset;
  };
  // The step's block geometry as two loop-invariant key limits of the warpgroup's rows (block starts key0 are
  // multiples of 64, -1 for the padding block): the block has an allowed key for some row iff 0 <= key0 <
  // wg_has_limit (rows_have_key(wg_row0, 64, key0)); every key of it is allowed for every row (no masking)
  // iff 0 <= key0 and key0 + 64 <= wg_full_limit (all 64 rows below seq_q, the block below seq_k and, causal,
  // below the first row's diagonal).
  const int wg_last = min(wg_row0 + 64, p.seq_q) - 1;
  const int wg_has_limit =
      wg_last < wg_row0 ? 0 : (p.causal ? min(p.seq_k, wg_last + causal_offset + 1) : p.seq_k);
  const int wg_full_limit = wg_row0 + 64 > p.seq_q ? INT_MIN
                            : p.causal             ? min(p.seq_k, wg_row0 + causal_offset + 1)
                                                   : p.seq_k;
  // Whether stage-2 unit g (a 32-row group, or the whole tile for per-CTA stage 2) has an allowed key in the
  // block starting at key0 (-1: the padding block, none).
  const auto unit_has_key = [&](int g, int key0) {
    if (key0 < 0) return false;
    return kGranularity == Stage2Granularity::kCta ? rows_have_key(q0, Cfg::kBlockM, key0)
                                                   : rows_have_key(q0 + 32 * g, 32, key0);
  };

  // Q A-fragments of the warpgroup's rows, in registers for the whole loop (S = Q K^T then reads only K from
  // shared memory): k step kk (32 bytes of the row: 16 16-bit or 32 INT8 columns) holds (row, bytes 4t..)
  // (row + 8, ..) (row, 16 + 4t..) (row + 8, ..), i.e. 16-byte chunks 2 (kk % steps per slice) and + 1 of
  // slice kk / steps per slice, swizzled (rows r and r + 8 share the swizzle phase in both widths).
  uint32_t qa[Cfg::kQkSteps][4];
  if (count > 0) {
    sm90::mbar_wait(q_full, 0);
    const int r = 64 * wg + 16 * warp + lane / 4;  // row within the 128-row slices
#pragma unroll
    for (int kk = 0; kk < Cfg::kQkSteps; ++kk)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int chunk = 2 * (kk % Cfg::kStepsPerSlice) + i / 2, row = r + 8 * (i % 2);
        const uint32_t addr = q_smem + (kk / Cfg::kStepsPerSlice) * Cfg::kQSliceBytes +
                              row * Cfg::kQkSwizzle + sm90::swizzled_chunk<Cfg::kQkSwizzle>(chunk, row) * 16 +
                              4 * (lane % 4);
        qa[kk][i] = sm90::ld_shared_u32(addr);
      }
  }

  // Software pipeline within the warpgroup, one step = two key blocks (stages s, s + 1): step j issues S(j) =
  // Q K(j)^T (64 x 128), then P(j-1) V(j-1), waits for S(j) only, and runs the softmax of step j while the
  // tensor cores work on P(j-1) V(j-1); then waits for that, releases its stages and rescales O.
  constexpr int kPvSteps = Cfg::kStepKeys / (kFp8Pv ? 32 : 16);  // k steps of P V per step
  // The operand descriptors of stage 0 (a stage's and k step's descriptor is one add away: desc_advance).
  const uint64_t k_desc0 = sm90::make_desc<Cfg::kQkSwizzle>(k_ring, 16, 8 * Cfg::kQkSwizzle);
  const uint64_t v_desc0 =
      kFp8Pv ? sm90::make_desc<64>(v_ring, 16, 512) : sm90::make_desc(v_ring, Cfg::kVRingSliceBytes, 1024);
  uint32_t pa[kPvSteps][4];  // P(j - 1) as A fragments, pending
  bool pending = false;
  int pending_stage = 0;
  uint32_t pending_parity = 0;
  const auto issue_pv = [&](int stage) {
    const uint32_t v_units = stage * (Cfg::kVSliceBytes / 16);  // the stage's offset in 16-byte units
    if constexpr (kFp8Pv) {
      // V^T of the step: k step kk (32 keys) is bytes 32 (kk % 2) of stage `stage + kk / 2`'s D rows (8-row
      // groups 512 bytes apart).
#pragma unroll
      for (int kk = 0; kk < kPvSteps; ++kk) {
        const uint64_t dv =
            sm90::desc_advance_units(v_desc0, v_units + ((kk / 2) * Cfg::kVSliceBytes + (kk % 2) * 32) / 16);
        if constexpr (kHeadDim == 128) {
          sm90::wgmma_rs_m64n128k32_e4m3(o, pa[kk], dv);
        } else {
          sm90::wgmma_rs_m64n64k32_e4m3(o, pa[kk], dv);
        }
      }
      sm90::wgmma_commit();
      return;
    }
    // V of the step: 128 keys over the two stages (contiguous per slice), 16 keys = 2048 bytes; N = D spans
    // the slices (leading byte offset = the ring's slice distance).
#pragma unroll
    for (int kk = 0; kk < kPvSteps; ++kk) {
      const uint64_t dv = sm90::desc_advance_units(v_desc0, v_units + kk * 2048 / 16);
      if constexpr (kDtype == DType::kBf16) {
        if constexpr (kHeadDim == 128) {
          sm90::wgmma_rs_m64n128k16_bf16_nmajor(o, pa[kk], dv);
        } else {
          sm90::wgmma_rs_m64n64k16_bf16_nmajor(o, pa[kk], dv);
        }
      } else {
        if constexpr (kHeadDim == 128) {
          sm90::wgmma_rs_m64n128k16_f16_nmajor(o, pa[kk], dv);
        } else {
          sm90::wgmma_rs_m64n64k16_f16_nmajor(o, pa[kk], dv);
        }
      }
    }
    sm90::wgmma_commit();
  };
  // The sum check's fallback: this warp's S of the step at stage `stage` (its 16 rows x 128 keys) again, with
  // warp-level MMAs from the held K stages and the Q fragments in registers (a warp's slice of the m64 wgmma
  // A fragment is the m16n8k16 / m16n8k32 A fragment, and its accumulators of an n8 tile the m16n8 C
  // fragment); INT8 scores biased as after the wgmma. 16-bit: equal to the wgmma's S up to the summation
  // order.
  const auto recompute_s = [&](int stage, float(&out)[kNTiles * 4]) {
    using Op = tile::QkOperand<kDtype, kQk>;
#pragma unroll
    for (int t = 0; t < kNTiles; ++t) {
      typename Op::Acc d[4] = {0, 0, 0, 0};
      const int row = 8 * t + lane / 4;  // key row of the step (its two stages are consecutive per slice)
#pragma unroll
      for (int kk = 0; kk < Cfg::kQkSteps; ++kk) {
        const uint32_t row_addr = k_ring + (kk / Cfg::kStepsPerSlice) * Cfg::kKRingSliceBytes +
                                  stage * Cfg::kKSliceBytes + row * Cfg::kQkSwizzle + 4 * (lane % 4);
        const int chunk = 2 * (kk % Cfg::kStepsPerSlice);
        const uint32_t b0 =
            sm90::ld_shared_u32(row_addr + sm90::swizzled_chunk<Cfg::kQkSwizzle>(chunk, row) * 16);
        const uint32_t b1 =
            sm90::ld_shared_u32(row_addr + sm90::swizzled_chunk<Cfg::kQkSwizzle>(chunk + 1, row) * 16);
        Op::mma(d, qa[kk], b0, b1);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if constexpr (kInt8) {
          out[4 * t + i] = __int_as_float(d[i] + Cfg::kScoreBiasBits);
        } else {
          out[4 * t + i] = d[i];
        }
      }
    }
  };
  // Each warp arrives once per step on the pair's empty barrier (the warpgroup's wgmma wait has returned).
  const auto release = [&](bool k, int stage) {
    __syncwarp();
    if (sm90::elect_one()) sm90::mbar_arrive(k ? k_empty(stage) : v_empty(stage));
  };
  // Exchanges this warp's stage-2 vote (slot: parity and vote index) and returns (group skips, the
  // warpgroup's other group skips).
  const auto exchange = [&](bool negligible, int slot_index, bool& group_skips, bool& other_skips) {
    negligible = __all_sync(tile::kFullWarp, negligible);
    const uint32_t slot = flags + slot_index * Cfg::kConsumerWarps * 4;
    if (lane == 0) sm90::st_shared_u32(slot + cwarp * 4, negligible ? 1u : 0u);
    if constexpr (kGranularity == Stage2Granularity::kCta) {
      sm90::named_barrier_sync(1, 128 * Cfg::kConsumerGroups);
      uint32_t all = 1;
#pragma unroll
      for (int w = 0; w < Cfg::kConsumerWarps; ++w) {
        all &= sm90::ld_shared_u32(slot + w * 4);
      }
      group_skips = all != 0;
      other_skips = group_skips;
    } else {
      sm90::named_barrier_sync(2 + wg, 128);
      uint32_t f[4];
#pragma unroll
      for (int w = 0; w < 4; ++w) f[w] = sm90::ld_shared_u32(slot + (wg * 4 + w) * 4);
      const bool first = (f[0] & f[1]) != 0, second = (f[2] & f[3]) != 0;  // the two groups' votes
      group_skips = warp < 2 ? first : second;
      other_skips = warp < 2 ? second : first;
    }
  };

  if (prm.pingpong && wg == 1 && count > 0) sm90::named_barrier_arrive(6, 256);
  const int steps = loaded / Cfg::kStepBlocks;
  // The next step's two key blocks (-1: the padding block) and, quantized, their K scales (the padding block
  // reuses block 0's), loaded one step ahead: the S MMAs of a step and its block geometry wait on no load.
  int kb_next[2] = {count > 0 ? __ldg(indices) : 0, count > 1 ? __ldg(indices + 1) : -1};
  float ks_next[2] = {1.f, 1.f};
  const auto load_k_scales = [&] {
    if constexpr (kInt8) {
      ks_next[0] = __ldg(k_scale_row + kb_next[0]);
      ks_next[1] = __ldg(k_scale_row + (kb_next[1] >= 0 ? kb_next[1] : kb_next[0]));
    }
  };
  if (count > 0) load_k_scales();
  int stage = 0;       // the step's first stage, n0 % kS
  uint32_t phase = 0;  // the ring's pass parity, (n0 / kS) & 1 (kept by increments: kS is not a power of 2)
  for (int j = 0; j < steps; ++j) {
    const int n0 = Cfg::kStepBlocks * j, s = stage;
    const uint32_t parity = phase;
    stage += Cfg::kStepBlocks;
    if (stage == kS) {
      stage = 0;
      phase ^= 1;
    }
    int key0[2];  // first key of each block; the padding block (n0 + 1 == count) gets -1
    key0[0] = kb_next[0] * Cfg::kBlockN;
    key0[1] = kb_next[1] >= 0 ? kb_next[1] * Cfg::kBlockN : -1;
    const float k_scale[2] = {ks_next[0], ks_next[1]};
    if (n0 + 2 < count) {
      kb_next[0] = __ldg(indices + n0 + 2);
      kb_next[1] = n0 + 3 < count ? __ldg(indices + n0 + 3) : -1;
      load_k_scales();
    }
    bool blk_has[2];  // the warpgroup's rows have an allowed key in the block (structural)
#pragma unroll
    for (int b = 0; b < 2; ++b)
      blk_has[b] = static_cast<unsigned>(key0[b]) < static_cast<unsigned>(wg_has_limit);
    // Log2-unit multiplier of each block's raw scores (quantized: times q_scale * k_scale, rounded first as
    // in the reference emulation).
    float ss[2] = {scale_log2, scale_log2};
    // Quantized: the scores stay biased floats f = x + kScoreBias (exact, no subtraction per element) and
    // the exponent takes f * ss + (shift - kScoreBias * ss) in one FMA, exactly as x * ss + shift: ss is
    // truncated to 22 significant bits (relative change < 2^-22), so ebias = kScoreBias * ss (2 bits times
    // 22) is exact, and the stabilizer is kept on a grid of 2 ulp(ebias) (`grid`, a power of two), so that
    // -ns - ebias is exact too (no rounding at the bias's magnitude).
    float ebias[2] = {0.f, 0.f}, grid = 0.f, inv_grid = 0.f;
    if constexpr (kInt8) {
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        ss[b] = (q_scale * k_scale[b]) * scale_log2;
        ss[b] = __int_as_float(__float_as_int(ss[b]) & ~3);
        ebias[b] = Cfg::kScoreBias * ss[b];
        grid = fmaxf(grid, __int_as_float(__float_as_int(ebias[b]) & 0x7f800000) * 0x1p-22f);
      }
      grid = fmaxf(grid, 0x1p-100f);  // (ceil(n / grid) * grid stays finite and exact)
      inv_grid = __int_as_float((254 << 23) - __float_as_int(grid));  // 2^-k for grid = 2^k, exact
    }

    float sc[kNTiles * 4];
    int32_t si[kInt8 ? kNTiles * 4 : 1];  // quantized: the s32 accumulators of S
    sm90::mbar_wait(k_full(s), parity);
    if (pending) {
      sm90::mbar_wait(v_full(pending_stage), pending_parity);
    }
    sm90::fence_operands(o);
    // S = Q K^T, and O += P(j-1) V(j-1) behind it; each branch waits for S itself. Branches around MMAs and
    // their waits must be visibly warp-uniform (a vote) or ptxas serializes every wgmma.
    const auto issue_s = [&] {
      const uint32_t k_units = s * (Cfg::kKSliceBytes / 16);  // the stage's offset in 16-byte units
#pragma unroll
      for (int kk = 0; kk < Cfg::kQkSteps; ++kk) {
        const uint64_t db = sm90::desc_advance_units(
            k_desc0,
            k_units +
                ((kk / Cfg::kStepsPerSlice) * Cfg::kKRingSliceBytes + (kk % Cfg::kStepsPerSlice) * 32) / 16);
        if constexpr (kInt8) {
          sm90::wgmma_rs_m64n128k32_s8(si, qa[kk], db, kk > 0);
        } else if constexpr (kDtype == DType::kBf16) {
          sm90::wgmma_rs_m64n128k16_bf16(sc, qa[kk], db, kk > 0);
        } else {
          sm90::wgmma_rs_m64n128k16_f16(sc, qa[kk], db, kk > 0);
        }
      }
      sm90::wgmma_commit();
    };
    // Ping-pong (FlashAttention-3): the warpgroups take turns issuing their MMAs, so one's softmax runs while
    // the other's MMAs occupy the tensor cores. Warpgroup 1 hands the first turn to warpgroup 0 (before the
    // loop) and skips its hand-over after its last step, so every sync meets exactly one arrive.
    const bool hand_over = __all_sync(tile::kFullWarp, prm.pingpong && (wg == 0 || j + 1 < steps));
    if (prm.pingpong) sm90::named_barrier_sync(6 + wg, 256);
    sm90::wgmma_fence();
    if (pending) {
      issue_s();
      issue_pv(pending_stage);
      if (hand_over) sm90::named_barrier_arrive(6 + (wg ^ 1), 256);
      sm90::wgmma_wait<1>();
    } else {
      issue_s();
      if (hand_over) sm90::named_barrier_arrive(6 + (wg ^ 1), 256);
      sm90::wgmma_wait<0>();
    }
    if constexpr (kInt8) {
      sm90::fence_operands(si);
#pragma unroll
      for (int i = 0; i < kNTiles * 4; ++i)
        sc[i] = __int_as_float(si[i] + Cfg::kScoreBiasBits);  // exactly float(si[i]) + kScoreBias
    } else {
      sm90::fence_operands(sc);
    }
    // With the sum check (below) the K stages stay held through the softmax: its fallback recomputes S.
    if constexpr (!kSumCheck) release(true, s);  // S(j) is done: its K stages are free

    // Masks both blocks (scores of keys no row may see become -inf: their P is exactly 0).
    const auto mask_scores = [&] {
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        const bool needs_mask = !(key0[b] >= 0 && key0[b] + Cfg::kBlockN <= wg_full_limit);
        if (needs_mask) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int row = row_a + 8 * h;
            const int key_end = p.causal ? min(p.seq_k, row + causal_offset + 1) : p.seq_k;
            const int limit = row < p.seq_q && blk_has[b] ? key_end : -1;
#pragma unroll
            for (int jj = 0; jj < kHalfTiles; ++jj)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int t = b * kHalfTiles + jj;
                if (key0[b] + 8 * jj + 2 * (lane % 4) + e >= limit) sc[4 * t + 2 * h + e] = tile::kNegInf;
              }
          }
        }
      }
    };
    mask_scores();

    bool skip[2] = {false, false}, wg_skip[2], compute = false;
    float alpha[2] = {1.f, 1.f};
    bool rescale = false;
    // P = exp2(S * ss + shift) in place for the thread's row h (stage 2: 0 in skipped blocks); returns the
    // row's partial sum over the thread's columns.
    const auto exponentiate = [&](int h, const float(&shift)[2]) {
      float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int t = 0; t < kNTiles; ++t)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = sc[4 * t + 2 * h + e];
          const int b = t / kHalfTiles;
#if defined(SPARGE_SM90_DIAG_NO_EXP)  // diagnostic (wrong outputs): no exponential at all
          const float pv = fmaf(x, ss[b], shift[b]);
#else
          const float pv = tile::exp2_approx(fmaf(x, ss[b], shift[b]));
#endif
          if constexpr (kStage2) {
            x = skip[b] ? 0.f : pv;
          } else {
            x = pv;
          }
          sum[t % 4] += x;
        }
      return (sum[0] + sum[1]) + (sum[2] + sum[3]);
    };
    if constexpr (!kStage2) {
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        if (count_units) units += unit_has_key(group, key0[b]);
        wg_skip[b] = !blk_has[b];
      }
      compute = __all_sync(tile::kFullWarp, !(wg_skip[0] && wg_skip[1]));
    }
    // The sum check (16-bit P without stage 2; FlashAttention-4's lazy rescaling without the maximum): a warp
    // whose rows all have a stabilizer exponentiates against it straight away, and every P of a row is at
    // most the row's partial sum, so partial sums below kSumBound (< the fp16 maximum) prove that no P
    // overflowed or left the 16-bit range: the step needs no row maximum at all (its tree and shuffles are a
    // fifth of the step's instructions). Otherwise (a row maximum moved far past its stabilizer, or NaN) the
    // warp recomputes its S from the held K stages and takes the full step. INT8 keeps the stabilizer on
    // the step's grid (see ebias): a step with a coarser grid takes the full step. Off where lazy rescaling
    // is off (Sm90Params::lazy = 0, SPARGE_SM90_LAZY=0). Rows with NaN scores fail it every step (still
    // correct: the full step propagates the NaN).
    bool full = true;
    if constexpr (kSumCheck) {
      bool ready = ns[0] != tile::kNegInf && ns[1] != tile::kNegInf;
      if constexpr (kInt8) {
#pragma unroll
        for (int h = 0; h < 2; ++h) ready &= ceilf(ns[h] * inv_grid) * grid == ns[h];
      }
      if (compute && prm.lazy && __all_sync(tile::kFullWarp, ready)) {
        float row_sum[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float shift[2] = {-ns[h] - ebias[0], -ns[h] - ebias[1]};
          row_sum[h] = exponentiate(h, shift);
        }
        if (__all_sync(tile::kFullWarp, row_sum[0] < Cfg::kSumBound && row_sum[1] < Cfg::kSumBound)) {
          l[0] += row_sum[0];
          l[1] += row_sum[1];
          full = false;
        } else {
          recompute_s(s, sc);
          mask_scores();
        }
      }
    }
    if (full) {
      // The thread's partial row maxima mx[b][h] over its columns of block b (raw scores; -inf: no allowed
      // key).
      float mx[2][2];
#pragma unroll
      for (int b = 0; b < 2; ++b)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if constexpr (kInt8) {
            // INT8: every unmasked score is a positive biased float (x + 1.5 * 2^23 > 0) and a masked one is
            // -inf (sign bit set), so the order of the floats is the signed-integer order of their bits: a
            // tree of 3-input integer maxima (VIMNMX3, Hopper's DPX instructions), 8 instructions of depth 3
            // for the 16 scores instead of 15 FMNMX. Exact: the maximum is one of the scores, bit for bit.
            static_assert(kHalfTiles == 8);
            int v[2 * kHalfTiles];
#pragma unroll
            for (int jj = 0; jj < kHalfTiles; ++jj)
#pragma unroll
              for (int e = 0; e < 2; ++e)
                v[2 * jj + e] = __float_as_int(sc[4 * (b * kHalfTiles + jj) + 2 * h + e]);
            int a[5];
#pragma unroll
            for (int i = 0; i < 5; ++i) a[i] = __vimax3_s32(v[3 * i], v[3 * i + 1], v[3 * i + 2]);
            mx[b][h] = __int_as_float(max(__vimax3_s32(a[0], a[1], a[2]), __vimax3_s32(a[3], a[4], v[15])));
          } else {
            // Four independent chains (the loop is latency-bound: few warps per scheduler).
            static_assert(kHalfTiles % 4 == 0);
            float x[4];
#pragma unroll
            for (int jj = 0; jj < kHalfTiles; ++jj) {
              const int t = b * kHalfTiles + jj;
              const float pair = fmaxf(sc[4 * t + 2 * h], sc[4 * t + 2 * h + 1]);
              x[jj % 4] = jj < 4 ? pair : fmaxf(x[jj % 4], pair);
            }
            mx[b][h] = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
          }
#if defined(SPARGE_SM90_DIAG_NO_MAX)  // diagnostic (wrong outputs): a constant row maximum, no reduction
          mx[b][h] = 0.f;
#endif
          if constexpr (kInt8) mx[b][h] -= Cfg::kScoreBias;  // exact (-inf stays -inf)
        }

      // Stage 2, per key block in order (block 1 is judged against the maximum after block 0): structural
      // "has an allowed key", then the vote where stage 2 is on. A skipped block gets P = 0 and leaves m and
      // l unchanged. Without stage 2 (the unit count is above; masking already zeroed P) the step's row
      // maximum is one quad reduction of the thread's scaled block maxima (scaling by ss > 0 is monotone: the
      // same value as scaling each block's reduced maximum, in half the shuffles).
      float m_run[2] = {m[0], m[1]};
      if constexpr (kStage2) {
#pragma unroll
        for (int b = 0; b < 2; ++b) {
          float m_blk[2];  // the block's row maxima (unscaled)
#pragma unroll
          for (int h = 0; h < 2; ++h) m_blk[h] = tile::quad_max(mx[b][h]);
          const bool group_has = unit_has_key(group, key0[b]), other_has = unit_has_key(group ^ 1, key0[b]);
          bool group_skips = !group_has, other_skips = !other_has;
          if (stage2_on) {
            bool negligible = true;
#pragma unroll
            for (int h = 0; h < 2; ++h)
              negligible &= m_blk[h] == tile::kNegInf || (m_blk[h] * ss[b] - m_run[h] < -pvthreshd);
            exchange(negligible, 2 * (j % 2) + b, group_skips, other_skips);
          }
          if (counting && group_has) {
            ++units;
            skipped += group_skips;
          }
          wg_skip[b] = kGranularity == Stage2Granularity::kCta ? group_skips : (group_skips && other_skips);
          skip[b] = group_skips;
          if (group_skips) continue;
#pragma unroll
          for (int h = 0; h < 2; ++h) m_run[h] = fmaxf(m_run[h], m_blk[h] * ss[b]);
        }
      } else {
#pragma unroll
        for (int h = 0; h < 2; ++h)
          m_run[h] = fmaxf(m_run[h], tile::quad_max(fmaxf(mx[0][h] * ss[0], mx[1][h] * ss[1])));
      }
      if constexpr (kStage2) compute = __all_sync(tile::kFullWarp, !(wg_skip[0] && wg_skip[1]));

        // Online softmax of the thread's two rows over the step's blocks. P = exp2(S * scale - m') with m'
        // the stabilizer: the maximum after both blocks (of the step, and of m, which may lag after steps
        // that passed the sum check), or an earlier maximum at most kLazyLog2 below the step's (the portable
        // kernel rescales block 0's P by exp2(m_0 - m') after the fact instead: equal up to rounding); masked
        // scores are -inf, so their P is exactly 0. FP8 P carries 448.
#ifndef SPARGE_SM90_DIAG_MMA_ONLY
      if (compute) {
#else  // diagnostic build (-DSPARGE_SM90_DIAG_MMA_ONLY, wrong outputs): no softmax, P = S rounded; times the
       // MMA and TMA pipeline alone (hopper/NOTES.md, "MMA ceiling")
      if (false) {
#endif
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float m_new = m_run[h];
          m[h] = m_new;
          // The stabilizer as ns = m' - kPLog2Scale (the exponent's shift is -ns). -inf + kLazyLog2 = -inf:
          // the first allowed key always sets it. Quantized: rounded up to the step's grid (a power of two:
          // exact; moves only for a coarser grid than before), so that -ns - ebias[b] is exact.
          const float n_new = m_new - Cfg::kPLog2Scale;
          float n_stab = n_new > ns[h] + lazy_log2 ? n_new : ns[h];
          if constexpr (kInt8) {  // (a multiply by the power of two 1 / grid, not a division: this is on the
                                  // step's critical path)
            if (n_stab != tile::kNegInf) n_stab = ceilf(n_stab * inv_grid) * grid;
          }
          const float n_use = n_stab == tile::kNegInf ? 0.f : n_stab;  // (every P of the row is 0 then)
          alpha[h] = tile::exp2_approx(ns[h] - n_use);
          rescale |= alpha[h] != 1.f;
          ns[h] = n_stab;
          float shift[2];
#pragma unroll
          for (int b = 0; b < 2; ++b) shift[b] = -n_use - ebias[b];
          l[h] = l[h] * alpha[h] + exponentiate(h, shift);
        }
      }
    }
    if constexpr (kSumCheck) release(true, s);
    sm90::wgmma_wait<0>();  // P(j-1) V(j-1) done (unconditional: ptxas must see O complete on every path)
    sm90::fence_operands(o);
    if (pending) release(false, pending_stage);
    if (compute) {
      if (__any_sync(tile::kFullWarp, rescale)) {
#pragma unroll
        for (int i = 0; i < kDTiles * 4; ++i) o[i] *= alpha[(i / 2) % 2];
      }
      if constexpr (kFp8Pv) {
        // k step kk = S n8 tiles 4 kk .. 4 kk + 3: positions 4t.. of a row are keys 2t, 2t + 1 of tiles 4 kk
        // and 4 kk + 1 (the V^T permutation), positions 16 + 4t.. those of tiles 4 kk + 2 and 4 kk + 3.
#pragma unroll
        for (int kk = 0; kk < kPvSteps; ++kk) {
          const float* x = sc + 16 * kk;
          pa[kk][0] = tile::pack_e4m3x4(x[0], x[1], x[4], x[5]);
          pa[kk][1] = tile::pack_e4m3x4(x[2], x[3], x[6], x[7]);
          pa[kk][2] = tile::pack_e4m3x4(x[8], x[9], x[12], x[13]);
          pa[kk][3] = tile::pack_e4m3x4(x[10], x[11], x[14], x[15]);
        }
      } else {
#pragma unroll
        for (int kk = 0; kk < kPvSteps; ++kk) {
          pa[kk][0] = Elem::pack(sc[8 * kk + 0], sc[8 * kk + 1]);
          pa[kk][1] = Elem::pack(sc[8 * kk + 2], sc[8 * kk + 3]);
          pa[kk][2] = Elem::pack(sc[8 * kk + 4], sc[8 * kk + 5]);
          pa[kk][3] = Elem::pack(sc[8 * kk + 6], sc[8 * kk + 7]);
        }
      }
      pending = true;
      pending_stage = s;
      pending_parity = parity;
    } else {  // nothing to add: release the stages once their V has landed (the producer reuses them)
      pending = false;
      sm90::mbar_wait(v_full(s), parity);
      release(false, s);
    }
  }
  if (pending) {
    sm90::mbar_wait(v_full(pending_stage), pending_parity);
    sm90::fence_operands(o);
    sm90::wgmma_fence();
    issue_pv(pending_stage);
    sm90::wgmma_wait<0>();
    sm90::fence_operands(o);
    release(false, pending_stage);
  }

  // ---------------- epilogue ----------------
  const uint32_t o_wg = o_stage + wg * 64 * 128;  // the warpgroup's rows within every O slice
  float* lse_row =
      p.lse != nullptr ? p.lse + (static_cast<int64_t>(batch) * p.heads_q + head) * p.seq_q : nullptr;
  float inv_l[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float lt = tile::quad_sum(l[h]);
    inv_l[h] = lt > 0.f ? 1.f / lt : 0.f;
    const int row = row_a + 8 * h;
    if (lse_row != nullptr && lane % 4 == 0 && row < p.seq_q)
      lse_row[row] = lt > 0.f ? (ns[h] + log2f(lt)) * tile::kLn2 : tile::kNegInf;
  }
  // FP8 P V: O column c carries the kv head's V scale c.
  const float* v_scale_row =
      kFp8Pv ? p.v_scale + (static_cast<int64_t>(batch) * p.heads_kv + kv_head) * kHeadDim : nullptr;
  // O into the warpgroup's rows of the staging tile (16-bit Q: its own Q rows, whose last reads completed
  // with its last S MMA), swizzled as TMA expects: 16-byte chunk c of row r at chunk c ^ (r % 8).
#pragma unroll
  for (int j = 0; j < kDTiles; ++j) {
    float2 vs = make_float2(1.f, 1.f);
    if constexpr (kFp8Pv) vs = __ldg(reinterpret_cast<const float2*>(v_scale_row + 8 * j + 2 * (lane % 4)));
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = 64 * wg + 16 * warp + lane / 4 + 8 * h;  // row within the 128-row O slice
      const int chunk = j % 8;
      const uint32_t addr =
          o_stage + (j / 8) * Cfg::kOSliceBytes + r * 128 + ((chunk ^ (r % 8)) * 16) + (lane % 4) * 4;
      const uint32_t packed =
          Elem::pack(o[4 * j + 2 * h] * (inv_l[h] * vs.x), o[4 * j + 2 * h + 1] * (inv_l[h] * vs.y));
      sm90::st_shared_u32(addr, packed);
    }
  }
  sm90::fence_proxy_async_smem();
  sm90::named_barrier_sync(4 + wg, 128);
  if (wtid == 0 && wg_row0 < p.seq_q) {
#pragma unroll
    for (int c = 0; c < kHeadDim / 64; ++c)
      sm90::tma_store_4d(&prm.o_map, o_wg + c * Cfg::kOSliceBytes, 64 * c, wg_row0, head, batch);
    sm90::tma_store_commit();
    sm90::tma_store_wait_read();
  }
  if (units > 0 && p.stage2_units != nullptr)
    atomicAdd(reinterpret_cast<unsigned long long*>(p.stage2_units), static_cast<unsigned long long>(units));
  if (skipped > 0 && p.stage2_skipped != nullptr)
    atomicAdd(reinterpret_cast<unsigned long long*>(p.stage2_skipped),
              static_cast<unsigned long long>(skipped));
#else
  __trap();  // built without sm_90a code: the API only launches this kernel on sm_90 devices
#endif
}

}  // namespace sparge::cuda
