// The Hopper (sm_90a) block-sparse attention kernel: the portable kernel's contract (params.h: same mask
// geometry 128 x 64, stage-2 filter, causal / GQA / tail / LSE semantics) on warpgroup MMAs fed by TMA.
//
// CTA = one 128-row query tile = one mask row, 3 warpgroups (384 threads):
//   warpgroup 0, the producer: one thread issues every TMA load: the Q tile once, then for each listed key
//     block n the K and V tiles into stage n % kStages of a ring (K and V with separate "full" mbarriers, so
//     S = Q K^T starts before V has landed); it first waits for the stage's "empty" mbarrier. It keeps 24
//     registers (setmaxnreg) and gives the rest to the consumers.
//   warpgroups 1, 2, the consumers: 64 query rows each (rows 64 (wg - 1) ..): per listed block, S = Q K^T
//     (m64n64k16 wgmma, both operands from shared memory), mask, online softmax in registers (log2 units,
//     as the portable kernel), stage-2 vote, P rounded to the 16-bit type straight from the accumulator
//     fragment (it is the wgmma A register fragment), O += P V (m64nDk16, V read N-major), then each warp
//     arrives on the stage's empty barrier. The two consumer warpgroups run independently, so one's softmax
//     overlaps the other's MMAs.
// Shared memory: Q (128 x D) then kStages x (K, V) tiles of 64 x D, each as D / 64 slices of 128-byte rows in
// the 128-byte swizzle (TMA writes it, wgmma reads it; see sm90_ops.cuh), then the mbarriers and the stage-2
// vote flags. The epilogue stages O through the warpgroup's own Q rows (same swizzled layout) and stores it
// with TMA (rows >= Nq are clipped by the tensor map).
// Stage 2: a (32-row group, key block) unit is skipped exactly as in the portable kernel (m, l and O of the
// group's rows unchanged). A warpgroup holds two groups and issues its P V MMAs as one: a group that skips
// zeroes its P and keeps its statistics, and the MMAs are skipped when both groups (per-CTA vote: the whole
// tile) skip. The vote's flags are exchanged through shared memory and a named barrier, only for heads with a
// finite pvthreshd; whether a group has an allowed key at all is decided from the indices.
// Grid: (NQB, Hq, B), query block NQB - 1 - x first (longest causal rows first), one CTA per SM.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "../params.h"
#include "../tile_ops.cuh"
#include "sm90_ops.cuh"

namespace sparge::cuda {

// The kernel parameters: the portable kernel's, plus the TMA descriptors of Q, K, V and O (4-D tensors D x N x
// H x B in the order of their strides; boxes 64 x 128 (Q), 64 x 64 (K, V, O)).
struct Sm90Params {
  AttentionParams p;
  CUtensorMap q_map, k_map, v_map, o_map;
};

template <int kHeadDim>
struct Sm90Config {
  static_assert(kHeadDim == 64 || kHeadDim == 128, "the Hopper kernel is instantiated for D = 64 and 128");
  static constexpr int kBlockM = 128, kBlockN = 64;
  static constexpr int kConsumerGroups = 2;  // warpgroups of 64 rows
  static constexpr int kThreads = 128 * (1 + kConsumerGroups);
  static constexpr int kConsumerWarps = 4 * kConsumerGroups;
  static constexpr int kSlices = kHeadDim / 64;  // 64-element (128-byte) column slices of every tile
  static constexpr int kQSliceBytes = kBlockM * 128;
  static constexpr int kKvSliceBytes = kBlockN * 128;
  static constexpr int kQBytes = kSlices * kQSliceBytes;
  static constexpr int kKBytes = kSlices * kKvSliceBytes;
  static constexpr int kStageBytes = 2 * kKBytes;  // K then V
  // Stages in flight: the producer runs this many blocks ahead (a sparse row's next block is anywhere in
  // memory). 160 KiB (D = 128) / 144 KiB (D = 64) with Q.
  static constexpr int kStages = kHeadDim == 128 ? 4 : 8;
  // mbarriers: q_full, k_full[S], v_full[S], empty[S]; then stage-2 flags: 2 parities x 8 warps.
  static constexpr int kBarrierBytes = 8 * (1 + 3 * kStages);
  static constexpr int kFlagBytes = 2 * kConsumerWarps * 4;
  static constexpr int kSmemBytes = 1024 /* alignment slack */ + kQBytes + kStages * kStageBytes +
                                    kBarrierBytes + kFlagBytes;
  // Registers: 384 threads at 168 each at launch; the producer drops to 24, the consumers take 240.
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
};

template <DType kDtype, int kHeadDim, Stage2Granularity kGranularity>
__global__ void __launch_bounds__(Sm90Config<kHeadDim>::kThreads, 1)
    sm90_block_sparse_attention_kernel(const __grid_constant__ Sm90Params prm) {
#if defined(SPARGE_SM90_ENABLED)
  using Cfg = Sm90Config<kHeadDim>;
  using Elem = tile::Element<kDtype>;
  constexpr int kS = Cfg::kStages;
  constexpr int kNTiles = Cfg::kBlockN / 8;  // n8 tiles of S: 32 floats per thread
  constexpr int kDTiles = kHeadDim / 8;      // n8 tiles of O: D / 2 floats per thread
  const AttentionParams& p = prm.p;

  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = (sm90::smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t q_smem = base;
  const uint32_t kv_smem = q_smem + Cfg::kQBytes;
  const uint32_t bars = kv_smem + kS * Cfg::kStageBytes;
  const uint32_t q_full = bars;
  const auto k_full = [&](int s) { return bars + 8 * (1 + s); };
  const auto v_full = [&](int s) { return bars + 8 * (1 + kS + s); };
  const auto empty = [&](int s) { return bars + 8 * (1 + 2 * kS + s); };
  const uint32_t flags = bars + Cfg::kBarrierBytes;
  const auto k_tile = [&](int s) { return kv_smem + s * Cfg::kStageBytes; };

  const int q_block = p.num_q_blocks - 1 - static_cast<int>(blockIdx.x);
  const int head = blockIdx.y, batch = blockIdx.z, kv_head = head / p.kv_group;
  const int q0 = q_block * Cfg::kBlockM;
  const int64_t mask_row = (static_cast<int64_t>(batch) * p.heads_q + head) * p.num_q_blocks + q_block;
  const int count = __ldg(p.mask_counts + mask_row);
  const int32_t* indices = p.mask_indices + mask_row * p.num_k_blocks;

  const int tid = threadIdx.x, warp_group = tid / 128, lane = tid % 32;
  if (tid == 0) {
    sm90::mbar_init(q_full, 1);
    for (int s = 0; s < kS; ++s) {
      sm90::mbar_init(k_full(s), 1);
      sm90::mbar_init(v_full(s), 1);
      sm90::mbar_init(empty(s), Cfg::kConsumerWarps);
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();

  if (warp_group == 0) {  // ---------------- producer ----------------
    sm90::regs_dealloc<Cfg::kProducerRegs>();
    if (tid != 0 || count == 0) return;
    sm90::tma_prefetch_desc(&prm.q_map);
    sm90::tma_prefetch_desc(&prm.k_map);
    sm90::tma_prefetch_desc(&prm.v_map);
    sm90::mbar_expect_tx(q_full, Cfg::kQBytes);
#pragma unroll
    for (int c = 0; c < Cfg::kSlices; ++c)
      sm90::tma_load_4d(&prm.q_map, q_smem + c * Cfg::kQSliceBytes, q_full, 64 * c, q0, head, batch);
    int kb_next = __ldg(indices);
    for (int n = 0; n < count; ++n) {
      const int s = n % kS, kb = kb_next;
      if (n + 1 < count) kb_next = __ldg(indices + n + 1);
      sm90::mbar_wait(empty(s), ((n / kS) & 1) ^ 1);
      const int key0 = kb * Cfg::kBlockN;
      sm90::mbar_expect_tx(k_full(s), Cfg::kKBytes);
#pragma unroll
      for (int c = 0; c < Cfg::kSlices; ++c)
        sm90::tma_load_4d(&prm.k_map, k_tile(s) + c * Cfg::kKvSliceBytes, k_full(s), 64 * c, key0, kv_head,
                          batch);
      sm90::mbar_expect_tx(v_full(s), Cfg::kKBytes);
#pragma unroll
      for (int c = 0; c < Cfg::kSlices; ++c)
        sm90::tma_load_4d(&prm.v_map, k_tile(s) + Cfg::kKBytes + c * Cfg::kKvSliceBytes, v_full(s), 64 * c,
                          key0, kv_head, batch);
    }
    return;
  }

  // ---------------- consumers ----------------
  sm90::regs_alloc<Cfg::kConsumerRegs>();
  const int wg = warp_group - 1;                  // rows 64 wg .. 64 wg + 63 of the tile
  const int wtid = tid % 128, warp = wtid / 32;   // warp within the warpgroup: rows 16 warp ..
  const int cwarp = wg * 4 + warp;                // consumer warp 0..7
  const int group = cwarp / 2;                    // 32-row stage-2 group 0..3 of the tile
  const int wg_row0 = q0 + 64 * wg;               // first row of the warpgroup
  const int row_a = wg_row0 + 16 * warp + lane / 4;  // the thread's rows: row_a, row_a + 8
  const int causal_offset = p.seq_k - p.seq_q;
  const float pvthreshd = p.pvthreshd != nullptr ? p.pvthreshd[head] : __builtin_huge_valf();
  const bool stage2_on = pvthreshd != __builtin_huge_valf();
  const float scale_log2 = p.scale_log2;

  float o[kDTiles * 4];
#pragma unroll
  for (int i = 0; i < kDTiles * 4; ++i) o[i] = 0.f;
  float m[2] = {tile::kNegInf, tile::kNegInf}, l[2] = {0.f, 0.f};
  int units = 0, skipped = 0;
  const bool counting = kGranularity == Stage2Granularity::kCta ? (wg == 0 && wtid == 0)
                                                                : (lane == 0 && warp % 2 == 0);
  // Whether rows [r0, r0 + rows) hold an allowed key in [key0, key0 + 64) (structural, from the indices).
  const auto rows_have_key = [&](int r0, int rows, int key0) {
    const int last = min(r0 + rows, p.seq_q) - 1;
    if (last < r0 || key0 >= p.seq_k) return false;
    return !p.causal || key0 <= last + causal_offset;
  };

  if (count > 0) sm90::mbar_wait(q_full, 0);
  const uint32_t q_wg = q_smem + wg * 64 * 128;  // the warpgroup's rows within every Q slice
  int kb_next = count > 0 ? __ldg(indices) : 0;
  for (int n = 0; n < count; ++n) {
    const int s = n % kS;
    const uint32_t parity = (n / kS) & 1;
    const int kb = kb_next;
    if (n + 1 < count) kb_next = __ldg(indices + n + 1);
    const int key0 = kb * Cfg::kBlockN;
    const bool wg_has = rows_have_key(wg_row0, 64, key0);

    float sc[kNTiles * 4];
    sm90::mbar_wait(k_full(s), parity);
    if (wg_has) {  // S = Q K^T (warpgroup-uniform branch)
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kHeadDim / 16; ++kk) {
        const uint32_t off = (kk % 4) * 32;  // 16 elements = 32 bytes along the 128-byte row
        const uint64_t da = sm90::make_desc(q_wg + (kk / 4) * Cfg::kQSliceBytes + off, 16, 1024);
        const uint64_t db = sm90::make_desc(k_tile(s) + (kk / 4) * Cfg::kKvSliceBytes + off, 16, 1024);
        if constexpr (kDtype == DType::kBf16) {
          sm90::wgmma_ss_m64n64k16_bf16(sc, da, db, kk > 0);
        } else {
          sm90::wgmma_ss_m64n64k16_f16(sc, da, db, kk > 0);
        }
      }
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90::fence_operands(sc);
    }

    // Stage-2 groups: structural "has an allowed key", then the vote where stage 2 is on.
    const int group_row0 = q0 + 32 * group;
    bool group_has, group_skips, other_skips = true;  // other_skips: the warpgroup's other group
    const int other = group ^ 1;
    const bool other_has = rows_have_key(q0 + 32 * other, 32, key0);
    if constexpr (kGranularity == Stage2Granularity::kCta) {
      group_has = rows_have_key(q0, Cfg::kBlockM, key0);
    } else {
      group_has = rows_have_key(group_row0, 32, key0);
    }
    group_skips = !group_has;
    other_skips = !other_has;
    float m_blk[2] = {tile::kNegInf, tile::kNegInf};
    if (wg_has) {
      const bool needs_mask = key0 + Cfg::kBlockN > p.seq_k || wg_row0 + 64 > p.seq_q ||
                              (p.causal && key0 + Cfg::kBlockN - 1 > wg_row0 + causal_offset);
      if (needs_mask) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = row_a + 8 * h;
          const int key_end = p.causal ? min(p.seq_k, row + causal_offset + 1) : p.seq_k;
          const int limit = row < p.seq_q ? key_end : 0;
#pragma unroll
          for (int j = 0; j < kNTiles; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e)
              if (key0 + 8 * j + 2 * (lane % 4) + e >= limit) sc[4 * j + 2 * h + e] = tile::kNegInf;
        }
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float x = tile::kNegInf;
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) x = fmaxf(x, fmaxf(sc[4 * j + 2 * h], sc[4 * j + 2 * h + 1]));
        m_blk[h] = tile::quad_max(x);
      }
    }
    if (stage2_on) {
      // This warp's vote: every row negligible (no allowed key, or its block max below the running max by
      // more than pvthreshd).
      bool negligible = true;
#pragma unroll
      for (int h = 0; h < 2; ++h)
        negligible &= m_blk[h] == tile::kNegInf || (m_blk[h] * scale_log2 - m[h] < -pvthreshd);
      negligible = __all_sync(tile::kFullWarp, negligible);
      const uint32_t slot = flags + ((n % 2) * Cfg::kConsumerWarps) * 4;
      if (lane == 0) asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(slot + cwarp * 4), "r"(negligible ? 1u : 0u));
      if constexpr (kGranularity == Stage2Granularity::kCta) {
        sm90::named_barrier_sync(1, 128 * Cfg::kConsumerGroups);
        uint32_t all = 1;
#pragma unroll
        for (int w = 0; w < Cfg::kConsumerWarps; ++w) {
          uint32_t f;
          asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(f) : "r"(slot + w * 4));
          all &= f;
        }
        group_skips = all != 0;
        other_skips = group_skips;
      } else {
        sm90::named_barrier_sync(2 + wg, 128);
        uint32_t f[4];
#pragma unroll
        for (int w = 0; w < 4; ++w)
          asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(f[w]) : "r"(slot + (wg * 4 + w) * 4));
        const bool first = (f[0] & f[1]) != 0, second = (f[2] & f[3]) != 0;  // the two groups' votes
        group_skips = warp < 2 ? first : second;
        other_skips = warp < 2 ? second : first;
      }
    }
    if (counting && group_has) {
      ++units;
      skipped += group_skips;
    }

    sm90::mbar_wait(v_full(s), parity);  // also before releasing a stage whose V is not read
    const bool wg_skips = kGranularity == Stage2Granularity::kCta ? group_skips : (group_skips && other_skips);
    if (wg_has && !wg_skips) {
      // Online softmax of the thread's two rows (a skipping group keeps m, l and O: P = 0).
      uint32_t pa[Cfg::kBlockN / 16][4];
      float alpha[2];
      bool rescale = false;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float m_new = group_skips ? m[h] : fmaxf(m[h], m_blk[h] * scale_log2);
        const float m_use = m_new == tile::kNegInf ? 0.f : m_new;
        alpha[h] = tile::exp2_approx(m[h] - m_use);
        rescale |= alpha[h] != 1.f;
        m[h] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kNTiles; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = sc[4 * j + 2 * h + e];
            x = group_skips ? 0.f : tile::exp2_approx(fmaf(x, scale_log2, -m_use));
            sum += x;
          }
        l[h] = l[h] * alpha[h] + sum;
      }
#pragma unroll
      for (int kk = 0; kk < Cfg::kBlockN / 16; ++kk) {
        pa[kk][0] = Elem::pack(sc[8 * kk + 0], sc[8 * kk + 1]);
        pa[kk][1] = Elem::pack(sc[8 * kk + 2], sc[8 * kk + 3]);
        pa[kk][2] = Elem::pack(sc[8 * kk + 4], sc[8 * kk + 5]);
        pa[kk][3] = Elem::pack(sc[8 * kk + 6], sc[8 * kk + 7]);
      }
      if (__any_sync(tile::kFullWarp, rescale)) {
#pragma unroll
        for (int i = 0; i < kDTiles * 4; ++i) o[i] *= alpha[(i / 2) % 2];
      }
      // O += P V: V slices are 64 keys x 128 bytes; a k step of 16 keys is 2048 bytes further.
      const uint32_t v_tile = k_tile(s) + Cfg::kKBytes;
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < Cfg::kBlockN / 16; ++kk) {
        const uint64_t dv = sm90::make_desc(v_tile + kk * 2048, Cfg::kKvSliceBytes, 1024);
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
      sm90::wgmma_wait<0>();
      sm90::fence_operands(o);
    }
    __syncwarp();
    if (lane == 0) sm90::mbar_arrive(empty(s));
  }

  // ---------------- epilogue ----------------
  float* lse_row =
      p.lse != nullptr ? p.lse + (static_cast<int64_t>(batch) * p.heads_q + head) * p.seq_q : nullptr;
  float inv_l[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float lt = tile::quad_sum(l[h]);
    inv_l[h] = lt > 0.f ? 1.f / lt : 0.f;
    const int row = row_a + 8 * h;
    if (lse_row != nullptr && lane % 4 == 0 && row < p.seq_q)
      lse_row[row] = lt > 0.f ? (m[h] + log2f(lt)) * tile::kLn2 : tile::kNegInf;
  }
  // O into the warpgroup's Q rows (its last reads of them completed with its last S MMA), swizzled as TMA
  // expects: 16-byte chunk c of row r at chunk c ^ (r % 8).
#pragma unroll
  for (int j = 0; j < kDTiles; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = 64 * wg + 16 * warp + lane / 4 + 8 * h;  // row within the 128-row Q slice
      const int chunk = j % 8;
      const uint32_t addr = q_smem + (j / 8) * Cfg::kQSliceBytes + r * 128 + ((chunk ^ (r % 8)) * 16) +
                            (lane % 4) * 4;
      const uint32_t packed = Elem::pack(o[4 * j + 2 * h] * inv_l[h], o[4 * j + 2 * h + 1] * inv_l[h]);
      asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(packed));
    }
  sm90::fence_proxy_async_smem();
  sm90::named_barrier_sync(4 + wg, 128);
  if (wtid == 0 && wg_row0 < p.seq_q) {
#pragma unroll
    for (int c = 0; c < Cfg::kSlices; ++c)
      sm90::tma_store_4d(&prm.o_map, q_wg + c * Cfg::kQSliceBytes, 64 * c, wg_row0, head, batch);
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
