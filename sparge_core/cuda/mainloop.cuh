// The mainloop of one CTA: the query tile against its listed key blocks, K and V double-buffered.
//   q tile: (kBlockM, D) in shared memory; per listed key block: K, V tiles (kBlockN, D) in stage n % 2.
//   step n:  wait K(n), V(n); barrier; start K(n+1), V(n+1) into the other stage | S = Q K(n)^T | mask
//            | row max, stage-2 vote | unless the group skips: P = exp2(S * scale - m'),
//            O = O * exp2(m - m') + P V(n)
// One CTA barrier per step (FlashAttention-2's single K and V buffers need two), and the next block's K and
// V have a whole step to land (a sparse row's next listed block is as far away in memory as any other).
// Each warp owns kWarpRows query rows; warp w's rows are rows [w * kWarpRows, (w + 1) * kWarpRows) of the
// tile. Precision::kInt8: Q and K tiles hold INT8 values, S = int32 (Q K^T) * q_scale * k_scale(n) in
// float, then the same softmax, stage 2 and 16-bit P V. Precision::kInt8Fp8: the same S; P = exp2(S * scale
// - m' + log2 448) in FP8 e4m3 (the row sum l carries the factor 448 too) times the FP8 V^T tile (kHeadDim
// rows of kBlockN keys, see params.h), accumulated into O (accumulate_pv_fp8 says why not two-level); the
// per-channel V scale is applied in the epilogue.
#pragma once

#include <type_traits>

#include "block_mask_iterator.cuh"
#include "online_softmax.cuh"
#include "tile_config.h"
#include "tile_ops.cuh"

namespace sparge::cuda {

template <DType kDtype, int kHeadDim, Stage2Granularity kGranularity, Precision kQk>
struct Mainloop {
  using Cfg = TileConfig<kHeadDim, kQk>;
  using Elem = tile::Element<kDtype>;
  using T = typename Elem::type;
  using Qk = tile::QkOperand<kDtype, kQk>;
  using QkT = typename Qk::type;                           // element type of the Q and K tiles
  static constexpr bool kInt8 = kQk != Precision::k16Bit;  // INT8 Q and K tiles
  static constexpr bool kFp8Pv = Cfg::kFp8Pv;              // FP8 P and V^T
  using VT = std::conditional_t<kFp8Pv, uint8_t, T>;       // element type of V in global memory
  // log2 of the factor P carries: 448 (the e4m3 maximum) for FP8, 1 otherwise.
  static constexpr float kPLog2Scale = kFp8Pv ? 8.807354922057604f : 0.f;
  // SmemTile counts 16-bit columns: an INT8 row of D bytes is D / 2 of them.
  static constexpr int kQkCols = kHeadDim * Cfg::kQkBytes / 2;
  using QTile = tile::SmemTile<Cfg::kBlockM, kQkCols>;
  using KTile = tile::SmemTile<Cfg::kBlockN, kQkCols>;
  using VTile = std::conditional_t<kFp8Pv, tile::SmemTile<kHeadDim, Cfg::kBlockN / 2>,
                                   tile::SmemTile<Cfg::kBlockN, kHeadDim>>;
  static_assert(QTile::kBytes == Cfg::kSmemQ && KTile::kBytes == Cfg::kSmemK && VTile::kBytes == Cfg::kSmemV,
                "tile_config.h matches SmemTile");
  static constexpr int kKSteps = kHeadDim / Qk::kStepElems;  // MMA k steps of S = Q K^T
  static constexpr int kMTiles = Cfg::kMTiles;
  static constexpr int kNTiles = Cfg::kBlockN / 8;  // n8 tiles of S
  static constexpr int kDTiles = kHeadDim / 8;      // n8 tiles of O
  using Softmax = OnlineSoftmax<kMTiles, kNTiles>;
  // D = 64: the warp's Q fragments (32 registers) stay in registers for the whole loop, a fifth fewer
  // ldmatrix per block; D = 128 would need 64 more registers next to the 128-float accumulator, so Q is
  // re-read from smem.
  static constexpr bool kQInRegisters = kHeadDim == 64;
  using QFragments = uint32_t[kKSteps][kMTiles][4];
  // Skip the accumulator rescale when no row max grew (see OnlineSoftmax::update). Per-warp stage 2 only:
  // with the per-CTA vote's two CTA reductions in the loop, the extra branch made ptxas spill 128 bytes
  // inside the loop at D = 128 (24 without it).
  static constexpr bool kSkipUnitRescale = kGranularity == Stage2Granularity::kWarp;

  // Per-warp state that the epilogue consumes.
  struct State {
    float acc[kMTiles][kDTiles][4];  // O (unnormalized), C-fragment layout
    Softmax softmax;
    int units = 0, skipped = 0;  // stage-2 (row group, key block) units, counted by one thread per group
  };

  // The warp's Q A-fragments for every k step (kQInRegisters).
  __device__ static void load_q_fragments(QFragments& qf, uint32_t q_smem, int warp, int lane) {
    const uint32_t q_base =
        q_smem + QTile::offset(warp * Cfg::kWarpRows + (lane % 8) + ((lane / 8) % 2) * 8, lane / 16);
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk)
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
        tile::ldmatrix_x4(qf[kk][mt], q_base + QTile::offset(mt * 16, kk * 2));
  }

  // S = Q K^T for the warp's rows: s[mt][nt] is the C fragment of rows mt*16.., keys nt*8.. of the block.
  // INT8: the exact int32 dot products as floats; their scale q_scale * k_scale is folded into the softmax's
  // multiplier (score_scale in run: one FMUL per step instead of one per score, ~10% of the instructions
  // of a step at D = 128 in this issue-bound loop).
  __device__ static void scores(float (&s)[kMTiles][kNTiles][4], const QFragments& qf, uint32_t q_smem,
                                uint32_t k_smem, int warp, int lane) {
    if constexpr (kInt8) {
      int acc[kMTiles][kNTiles][4];
      qk_mma(acc, qf, q_smem, k_smem, warp, lane);
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
          for (int i = 0; i < 4; ++i)
            s[mt][nt][i] = static_cast<float>(acc[mt][nt][i]);  // int32 -> float: exact below 2^24
    } else {
      qk_mma(s, qf, q_smem, k_smem, warp, lane);
    }
  }

  // acc = Q K^T in the accumulator type of Qk (float or int32).
  template <typename Acc>
  __device__ static void qk_mma(Acc (&acc)[kMTiles][kNTiles][4], const QFragments& qf, uint32_t q_smem,
                                uint32_t k_smem, int warp, int lane) {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0;
    // Q matrices: (rows 0-7, d 0-7), (rows 8-15, d 0-7), (rows 0-7, d 8-15), (rows 8-15, d 8-15) = a0..a3;
    // K matrices: (keys 0-7, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 0-7), (keys 8-15, d 8-15)
    //           = b0b1, b2b3 of key tile 2np, then of key tile 2np + 1. Per-lane bases + immediates:
    const uint32_t q_base =
        q_smem + QTile::offset(warp * Cfg::kWarpRows + (lane % 8) + ((lane / 8) % 2) * 8, lane / 16);
    const uint32_t k_base = k_smem + KTile::offset((lane % 8) + (lane / 16) * 8, (lane / 8) % 2);
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        if constexpr (kQInRegisters) {
#pragma unroll
          for (int i = 0; i < 4; ++i) a[mt][i] = qf[kk][mt][i];
        } else {
          tile::ldmatrix_x4(a[mt], q_base + QTile::offset(mt * 16, kk * 2));
        }
      }
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np) {
        uint32_t b[4];
        tile::ldmatrix_x4(b, k_base + KTile::offset(np * 16, kk * 2));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          Qk::mma(acc[mt][2 * np], a[mt], b[0], b[1]);  // S += Q K^T
          Qk::mma(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }

  // S = -inf where the key is not allowed: query row >= Nq, key >= Nk, or (causal) key > row + Nk - Nq.
  // row0 / key0: global index of the warp's first row and of the block's first key.
  __device__ static void mask_scores(float (&s)[kMTiles][kNTiles][4], const AttentionParams& p, int row0,
                                     int key0, int lane) {
    const int causal_offset = p.seq_k - p.seq_q;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int row = row0 + mt * 16 + lane / 4 + hh * 8;
        const int key_end =
            p.causal ? min(p.seq_k, row + causal_offset + 1) : p.seq_k;  // first disallowed key
        const int limit = row < p.seq_q ? key_end : 0;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int key = key0 + nt * 8 + (lane % 4) * 2 + j;
            if (key >= limit) s[mt][nt][2 * hh + j] = tile::kNegInf;
          }
      }
  }

  // Whether the warp's rows x the block's keys hold a disallowed pair (only such tiles pay for mask_scores).
  __device__ static bool needs_mask(const AttentionParams& p, int row0, int key0) {
    return key0 + Cfg::kBlockN > p.seq_k || row0 + Cfg::kWarpRows > p.seq_q ||
           (p.causal && key0 + Cfg::kBlockN - 1 > row0 + p.seq_k - p.seq_q);
  }

  // O += P V: P (the exponentiated S fragments) rounded to the element type, V read transposed by ldmatrix.
  __device__ static void accumulate_pv(float (&acc)[kMTiles][kDTiles][4],
                                       const float (&pr)[kMTiles][kNTiles][4], uint32_t v_smem, int lane) {
    // transposed V matrices: (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15)
    //                      = b0b1, b2b3 of d tile 2dp, then of d tile 2dp + 1
    const uint32_t v_base = v_smem + VTile::offset((lane % 8) + ((lane / 8) % 2) * 8, lane / 16);
#pragma unroll
    for (int kk = 0; kk < Cfg::kBlockN / 16; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        a[mt][0] = Elem::pack(pr[mt][2 * kk][0], pr[mt][2 * kk][1]);
        a[mt][1] = Elem::pack(pr[mt][2 * kk][2], pr[mt][2 * kk][3]);
        a[mt][2] = Elem::pack(pr[mt][2 * kk + 1][0], pr[mt][2 * kk + 1][1]);
        a[mt][3] = Elem::pack(pr[mt][2 * kk + 1][2], pr[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        uint32_t b[4];
        tile::ldmatrix_x4_trans(b, v_base + VTile::offset(kk * 16, dp * 2));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          Elem::mma(acc[mt][2 * dp], a[mt], b[0], b[1]);  // O += P V
          Elem::mma(acc[mt][2 * dp + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }

  // O += P V in FP8: P (already scaled by 448) rounded to e4m3, V^T tile of FP8 rows (d) over permuted keys.
  // A fragment of k step kk (32 keys = S n8 tiles 4kk..4kk + 3): positions 4t..4t + 3 of a row are keys 2t,
  // 2t + 1 of tile 4kk and of tile 4kk + 1 (the V^T permutation), positions 16 + 4t.. those of tiles 4kk + 2
  // and 4kk + 3. Per d tile, one ldmatrix.x4 brings the B fragments of both k steps (the row's 64 key bytes
  // as four 16-byte matrices). The MMAs accumulate into O directly. SageAttention2 sums each block in fresh
  // registers first (the FP8 MMA adds with fewer than float32's mantissa bits on sm_89/90); measured on an
  // H100 that two-level sum bought nothing here (kernel vs float32 emulation 1e-4 - 3e-3 relative L2 either
  // way, N up to 32768) and cost 11-15% of the time (128 more FADDs per thread and step in an issue-bound
  // loop), so it is not done.
  __device__ static void accumulate_pv_fp8(float (&acc)[kMTiles][kDTiles][4],
                                           const float (&pr)[kMTiles][kNTiles][4], uint32_t vt_smem,
                                           int lane) {
    static_assert(Cfg::kBlockN == 64, "one ldmatrix.x4 covers a V^T row's 64 key bytes");
    uint32_t a[2][kMTiles][4];
#pragma unroll
    for (int kk = 0; kk < 2; ++kk)
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        const float(&s0)[4] = pr[mt][4 * kk];
        const float(&s1)[4] = pr[mt][4 * kk + 1];
        const float(&s2)[4] = pr[mt][4 * kk + 2];
        const float(&s3)[4] = pr[mt][4 * kk + 3];
        a[kk][mt][0] = tile::pack_e4m3x4(s0[0], s0[1], s1[0], s1[1]);
        a[kk][mt][1] = tile::pack_e4m3x4(s0[2], s0[3], s1[2], s1[3]);
        a[kk][mt][2] = tile::pack_e4m3x4(s2[0], s2[1], s3[0], s3[1]);
        a[kk][mt][3] = tile::pack_e4m3x4(s2[2], s2[3], s3[2], s3[3]);
      }
    // Matrix i (lanes 8i..8i + 7 give its rows): d rows dt*8..dt*8 + 7, key positions 16i..16i + 15, i.e.
    // b0, b1 of k step 0, then b0, b1 of k step 1.
    const uint32_t vt_base = vt_smem + VTile::offset(lane % 8, lane / 8);
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      uint32_t b[4];
      tile::ldmatrix_x4(b, vt_base + VTile::offset(dt * 8, 0));
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        tile::mma_e4m3(acc[mt][dt], a[0][mt], b[0], b[1]);
        tile::mma_e4m3(acc[mt][dt], a[1][mt], b[2], b[3]);
      }
    }
  }

  // A Q / K row pointer in 16-bit columns (INT8: two values per column).
  __device__ static auto as_cols(const QkT* x) {
    if constexpr (kInt8) {
      return reinterpret_cast<const uint16_t*>(x);
    } else {
      return x;
    }
  }

  // Runs the CTA's key blocks. q_tile: shared-memory address of Q; kv_tiles: of stage 0's K tile, followed by
  // stage 0's V, stage 1's K, stage 1's V (Cfg::kStageBytes apart); q_gmem: the tile's first query row;
  // k_gmem, v_gmem: row 0 of the kv head (FP8: of its V^T). INT8: q_scale of the tile, k_scale_row: the kv
  // head's k_scale (16-bit: unused). Fills the warp's state (every thread of the CTA must call this).
  __device__ static void run(State& st, const AttentionParams& p, BlockMaskIterator& it, uint32_t q_tile,
                             uint32_t kv_tiles, const QkT* q_gmem, const QkT* k_gmem, const VT* v_gmem,
                             int q0, float pvthreshd, float q_scale, const float* k_scale_row) {
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int row0 = q0 + warp * Cfg::kWarpRows;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt)
#pragma unroll
        for (int i = 0; i < 4; ++i) st.acc[mt][dt][i] = 0.f;
    st.softmax.init();
    if (it.empty()) return;

    // Q and K rows as 16-bit columns (an INT8 row of D bytes: D / 2 of them; the API keeps INT8 row strides
    // even, the 16-byte alignment of every row).
    const auto* q_cols = as_cols(q_gmem);
    const auto* k_cols = as_cols(k_gmem);
    const int64_t q_col_stride = kInt8 ? p.q_row_stride / 2 : p.q_row_stride;
    const int64_t k_col_stride = kInt8 ? p.k_row_stride / 2 : p.k_row_stride;
    // K and V of key block kb into stage `stage`, one cp.async group.
    const auto load_kv = [&](int kb, int stage) {
      const int key0 = kb * Cfg::kBlockN, rows = min(Cfg::kBlockN, p.seq_k - key0);
      const uint32_t k_tile = kv_tiles + stage * Cfg::kStageBytes;
      tile::load_tile_async<Cfg::kBlockN, kQkCols, Cfg::kThreads>(k_tile, k_cols + key0 * k_col_stride,
                                                                  k_col_stride, rows, tid);
      if constexpr (kFp8Pv) {  // V^T: kHeadDim rows of the block's kBlockN (padded, zero) key bytes
        tile::load_tile_async<kHeadDim, Cfg::kBlockN / 2, Cfg::kThreads>(
            k_tile + Cfg::kSmemK, reinterpret_cast<const uint16_t*>(v_gmem + key0), p.v_row_stride / 2,
            kHeadDim, tid);
      } else {
        tile::load_tile_async<Cfg::kBlockN, kHeadDim, Cfg::kThreads>(
            k_tile + Cfg::kSmemK, v_gmem + key0 * p.v_row_stride, p.v_row_stride, rows, tid);
      }
      tile::cp_async_commit();
    };
    tile::load_tile_async<Cfg::kBlockM, kQkCols, Cfg::kThreads>(q_tile, q_cols, q_col_stride,
                                                                min(Cfg::kBlockM, p.seq_q - q0), tid);
    load_kv(it.peek(), 0);  // Q, K(0) and V(0) in one group

    const bool counting = kGranularity == Stage2Granularity::kCta ? tid == 0 : lane == 0;
    QFragments qf;
    for (int n = 0; n < it.count(); ++n) {
      const int kb = it.advance(n), key0 = kb * Cfg::kBlockN;
      const uint32_t k_tile = kv_tiles + (n % 2) * Cfg::kStageBytes, v_tile = k_tile + Cfg::kSmemK;
      // INT8: this block's K scale (a global load issued before the barrier, needed after the MMAs).
      // S * score_scale is the score in log2 units (INT8: times q_scale * k_scale, rounded first as in the
      // reference emulation).
      const float score_scale = kInt8 ? (q_scale * __ldg(k_scale_row + kb)) * p.scale_log2 : p.scale_log2;
      tile::cp_async_wait<0>();
      __syncthreads();  // K(n), V(n) landed; every warp is done with step n - 1, i.e. with stage (n + 1) % 2
      if (kQInRegisters && n == 0) load_q_fragments(qf, q_tile, warp, lane);
      if (it.peek() >= 0) load_kv(it.peek(), (n + 1) % 2);  // lands during this whole step

      float s[kMTiles][kNTiles][4];
      scores(s, qf, q_tile, k_tile, warp, lane);  // S = Q K^T
      if (needs_mask(p, row0, key0)) mask_scores(s, p, row0, key0, lane);
      float m_blk[kMTiles][2];
      Softmax::block_row_max(s, m_blk);
      bool has, negligible;
      st.softmax.stage2_vote(m_blk, score_scale, pvthreshd, has, negligible);
      const bool warp_has = __any_sync(tile::kFullWarp, has);

      bool group_has, group_skips;
      if constexpr (kGranularity == Stage2Granularity::kCta) {
        group_skips = __syncthreads_and(negligible);
        group_has = __syncthreads_or(has);
      } else {
        group_skips = __all_sync(tile::kFullWarp, negligible);
        group_has = warp_has;
      }
      if (counting && group_has) {
        ++st.units;
        st.skipped += group_skips;
      }
      // A skipped group leaves m, l and O unchanged; a warp with no allowed key here would add exactly
      // nothing.
      if (group_skips || !warp_has) continue;
      st.softmax.template update<kSkipUnitRescale>(s, m_blk, score_scale, kPLog2Scale, st.acc);  // s := P
      if constexpr (kFp8Pv) {
        accumulate_pv_fp8(st.acc, s, v_tile, lane);  // O += P V
      } else {
        accumulate_pv(st.acc, s, v_tile, lane);
      }
    }
  }
};

}  // namespace sparge::cuda
