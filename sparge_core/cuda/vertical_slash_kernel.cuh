// The MInference vertical-slash attention kernel (mma.sync m16n8k16, sm_80+) and its launcher: per CTA one
// 64-row query block; the mainloop runs the block's key steps (VsKeySteps: slash tiles, then gathered column
// chunks), K and V double-buffered:
//   step n:  wait K(n), V(n); barrier; gather K(n+1), V(n+1) into the other stage | S = Q K(n)^T | mask
//            (tile: causal; column chunk: past column_count) | m' = max(m, rowmax S * scale),
//            P = exp2(S * scale - m'), l = l exp2(m - m') + rowsum P, O = O exp2(m - m') + P V(n)
// then the epilogue O = O / l, lse = (m + log2 l) ln 2 (rows without a key: 0 and -inf).
// Grid: (NQB, Hq, B); CTA x runs query block NQB - 1 - x (longest first: under the causal mask the last
// blocks have the most slash tiles).
#pragma once

#include "online_softmax.cuh"
#include "tile_ops.cuh"
#include "vertical_slash_keys.cuh"
#include "vertical_slash_params.h"

namespace sparge::cuda {

template <DType kDtype, int kHeadDim>
struct VsMainloop {
  using Cfg = VsTileConfig<kHeadDim>;
  using Elem = tile::Element<kDtype>;
  using T = typename Elem::type;
  using QTile = tile::SmemTile<Cfg::kBlockM, kHeadDim>;
  using KVTile = tile::SmemTile<Cfg::kBlockN, kHeadDim>;
  static_assert(QTile::kBytes == Cfg::kSmemQ && KVTile::kBytes == Cfg::kSmemK &&
                    KVTile::kBytes == Cfg::kSmemV,
                "VsTileConfig matches SmemTile");
  using Keys = VsKeySteps<kHeadDim>;
  static constexpr int kKSteps = kHeadDim / 16;     // MMA k steps of S = Q K^T
  static constexpr int kNTiles = Cfg::kBlockN / 8;  // n8 tiles of S
  static constexpr int kDTiles = kHeadDim / 8;      // n8 tiles of O
  using Softmax = OnlineSoftmax<1, kNTiles>;        // one m16 tile per warp
  using QFragments = uint32_t[kKSteps][4];          // the warp's Q A-fragments, held for the whole loop

  struct State {
    float acc[1][kDTiles][4];  // O (unnormalized), C-fragment layout
    Softmax softmax;
  };

  __device__ static void load_q_fragments(QFragments& qf, uint32_t q_smem, int warp, int lane) {
    const uint32_t q_base =
        q_smem + QTile::offset(warp * Cfg::kWarpRows + (lane % 8) + ((lane / 8) % 2) * 8, lane / 16);
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) tile::ldmatrix_x4(qf[kk], q_base + QTile::offset(0, kk * 2));
  }

  // S = Q K^T for the warp's 16 rows: s[0][nt] is the C fragment of keys nt*8.. of the step.
  __device__ static void scores(float (&s)[1][kNTiles][4], const QFragments& qf, uint32_t k_smem, int lane) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) s[0][nt][i] = 0.f;
    // K matrices: (keys 0-7, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 0-7), (keys 8-15, d 8-15) = b0b1,
    // b2b3 of key tile 2np, then of key tile 2np + 1.
    const uint32_t k_base = k_smem + KVTile::offset((lane % 8) + (lane / 16) * 8, (lane / 8) % 2);
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk)
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np) {
        uint32_t b[4];
        tile::ldmatrix_x4(b, k_base + KVTile::offset(np * 16, kk * 2));
        Elem::mma(s[0][2 * np], qf[kk], b[0], b[1]);  // S += Q K^T
        Elem::mma(s[0][2 * np + 1], qf[kk], b[2], b[3]);
      }
  }

  // S = -inf where position >= limit(row): a slash tile's key position is start + column and its limit the
  // causal end row + Nk - Nq + 1; a column chunk's position is c0 + column and its limit column_count. Rows
  // >= Nq get limit 0. row0: the warp's first query row.
  __device__ static void mask_scores(float (&s)[1][kNTiles][4], int row0, int start, bool causal,
                                     int causal_offset, int column_count, int seq_q, int lane) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int row = row0 + lane / 4 + hh * 8;
      const int limit = row >= seq_q ? 0 : causal ? row + causal_offset + 1 : column_count;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int j = 0; j < 2; ++j)
          if (start + nt * 8 + (lane % 4) * 2 + j >= limit) s[0][nt][2 * hh + j] = tile::kNegInf;
    }
  }

  // O += P V: P rounded to the element type, V read transposed by ldmatrix.
  __device__ static void accumulate_pv(float (&acc)[1][kDTiles][4], const float (&pr)[1][kNTiles][4],
                                       uint32_t v_smem, int lane) {
    // transposed V matrices: (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15)
    //                      = b0b1, b2b3 of d tile 2dp, then of d tile 2dp + 1
    const uint32_t v_base = v_smem + KVTile::offset((lane % 8) + ((lane / 8) % 2) * 8, lane / 16);
#pragma unroll
    for (int kk = 0; kk < Cfg::kBlockN / 16; ++kk) {
      uint32_t a[4];
      a[0] = Elem::pack(pr[0][2 * kk][0], pr[0][2 * kk][1]);
      a[1] = Elem::pack(pr[0][2 * kk][2], pr[0][2 * kk][3]);
      a[2] = Elem::pack(pr[0][2 * kk + 1][0], pr[0][2 * kk + 1][1]);
      a[3] = Elem::pack(pr[0][2 * kk + 1][2], pr[0][2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        uint32_t b[4];
        tile::ldmatrix_x4_trans(b, v_base + KVTile::offset(kk * 16, dp * 2));
        Elem::mma(acc[0][2 * dp], a, b[0], b[1]);  // O += P V
        Elem::mma(acc[0][2 * dp + 1], a, b[2], b[3]);
      }
    }
  }

  // Runs the query block's steps. q_tile: shared address of Q; kv_tiles: of stage 0's K tile (then stage 0's
  // V, stage 1's K, stage 1's V, Cfg::kSmemK apart); q_gmem: the block's first query row; k_gmem, v_gmem: row
  // 0 of the kv head. Every thread of the CTA must call this.
  __device__ static void run(State& st, const VerticalSlashParams& p, const Keys& keys, uint32_t q_tile,
                             uint32_t kv_tiles, const T* q_gmem, const T* k_gmem, const T* v_gmem, int q0) {
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int row0 = q0 + warp * Cfg::kWarpRows, causal_offset = p.seq_k - p.seq_q;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt)
#pragma unroll
      for (int i = 0; i < 4; ++i) st.acc[0][dt][i] = 0.f;
    st.softmax.init();
    const int steps = keys.count();
    if (steps == 0) return;

    // K and V rows of step n into stage `stage`, one cp.async group.
    const auto load_kv = [&](int n, const typename Keys::Fetch& f, int stage) {
      int key[Keys::kRowsPerThread];
      keys.keys(n, f, key);
      const uint32_t k_tile = kv_tiles + stage * Cfg::kStageBytes;
      gather_tile_async<Cfg::kBlockN, kHeadDim, Cfg::kThreads>(k_tile, k_gmem, p.k_row_stride, key, tid);
      gather_tile_async<Cfg::kBlockN, kHeadDim, Cfg::kThreads>(k_tile + Cfg::kSmemK, v_gmem, p.v_row_stride,
                                                               key, tid);
      tile::cp_async_commit();
    };
    typename Keys::Fetch next, after;  // steps n + 1 and n + 2 of iteration n
    keys.fetch(0, next);
    tile::load_tile_async<Cfg::kBlockM, kHeadDim, Cfg::kThreads>(q_tile, q_gmem, p.q_row_stride,
                                                                 min(Cfg::kBlockM, p.seq_q - q0), tid);
    load_kv(0, next, 0);  // Q, K(0) and V(0) in one group
    int start = next.start;
    keys.fetch(1, next);
    keys.fetch(2, after);

    QFragments qf;
    for (int n = 0; n < steps; ++n) {
      const int step_start = start;  // tile start or first column position of step n
      const uint32_t k_tile = kv_tiles + (n % 2) * Cfg::kStageBytes, v_tile = k_tile + Cfg::kSmemK;
      tile::cp_async_wait<0>();
      __syncthreads();  // K(n), V(n) landed; every warp is done with step n - 1, i.e. with stage (n + 1) % 2
      if (n == 0) load_q_fragments(qf, q_tile, warp, lane);
      if (n + 1 < steps) load_kv(n + 1, next, (n + 1) % 2);  // lands during this whole step
      start = next.start;
      next = after;
      keys.fetch(n + 3, after);

      float s[1][kNTiles][4];
      scores(s, qf, k_tile, lane);  // S = Q K^T
      const bool tile_step = keys.is_tile(n);
      const bool partial =
          row0 + Cfg::kWarpRows > p.seq_q || (tile_step ? step_start + Cfg::kBlockN - 1 > row0 + causal_offset
                                                        : step_start + Cfg::kBlockN > keys.columns());
      if (partial) mask_scores(s, row0, step_start, tile_step, causal_offset, keys.columns(), p.seq_q, lane);
      float m_blk[1][2];
      Softmax::block_row_max(s, m_blk);
      // A warp with no allowed key in this step would add exactly nothing.
      if (!__any_sync(tile::kFullWarp, m_blk[0][0] != tile::kNegInf || m_blk[0][1] != tile::kNegInf))
        continue;
      st.softmax.template update</*kSkipUnitRescale=*/true>(s, m_blk, p.scale_log2, 0.f, st.acc);  // s := P
      accumulate_pv(st.acc, s, v_tile, lane);                                                      // O += P V
    }
  }
};

// O = acc / l in the element type, staged through the warp's own 16 rows of the Q tile (only this warp read
// them, into registers, at step 0) and written with 16-byte stores; lse = (m + log2 l) ln 2. Rows without a
// key (l = 0) get O = 0 and lse = -inf; rows >= Nq are not written.
template <DType kDtype, int kHeadDim>
struct VsEpilogue {
  using Loop = VsMainloop<kDtype, kHeadDim>;
  using Cfg = typename Loop::Cfg;
  using T = typename Loop::T;
  using OTile = typename Loop::QTile;

  __device__ static void store(const typename Loop::State& st, const VerticalSlashParams& p,
                               uint32_t stage_tile, T* o_gmem, float* lse_row, int q0) {
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    tile::cp_async_wait<0>();
    __syncwarp();
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int row = warp * Cfg::kWarpRows + lane / 4 + hh * 8;  // row in the tile
      const float l = tile::quad_sum(st.softmax.l[0][hh]);
      const float inv_l = l > 0.f ? 1.f / l : 0.f;
      if (lse_row != nullptr && lane % 4 == 0 && q0 + row < p.seq_q)
        lse_row[q0 + row] = l > 0.f ? (st.softmax.m[0][hh] + log2f(l)) * tile::kLn2 : tile::kNegInf;
#pragma unroll
      for (int dt = 0; dt < Loop::kDTiles; ++dt) {
        const uint32_t packed =
            Loop::Elem::pack(st.acc[0][dt][2 * hh] * inv_l, st.acc[0][dt][2 * hh + 1] * inv_l);
        const uint32_t addr = stage_tile + OTile::offset(row, dt) + (lane % 4) * 4;
        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(packed));
      }
    }
    __syncwarp();
    constexpr int kChunks = OTile::kChunks;
    static_assert(Cfg::kWarpRows * kChunks % 32 == 0, "whole chunks per lane");
#pragma unroll
    for (int i = 0; i < Cfg::kWarpRows * kChunks / 32; ++i) {  // the warp's 16 x kChunks 16-byte chunks
      const int idx = lane + i * 32, r = warp * Cfg::kWarpRows + idx / kChunks, c = idx % kChunks;
      uint4 v;
      asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "r"(stage_tile + OTile::offset(r, c)));
      if (q0 + r < p.seq_q) *reinterpret_cast<uint4*>(o_gmem + (q0 + r) * p.o_row_stride + c * 8) = v;
    }
  }
};

template <DType kDtype, int kHeadDim>
__global__ void __launch_bounds__(VsTileConfig<kHeadDim>::kThreads)
    vertical_slash_attention_kernel(const __grid_constant__ VerticalSlashParams p) {
  using Cfg = VsTileConfig<kHeadDim>;
  using Loop = VsMainloop<kDtype, kHeadDim>;
  using T = typename Loop::T;
  extern __shared__ __align__(128) unsigned char smem[];

  const int q_block = p.num_q_blocks - 1 - static_cast<int>(blockIdx.x);
  const int head = blockIdx.y, batch = blockIdx.z, kv_head = head / p.kv_group;
  const int q0 = q_block * Cfg::kBlockM;
  const uint32_t q_tile = tile::smem_addr(smem);
  const T* q_gmem =
      static_cast<const T*>(p.q) + batch * p.q_batch_stride + head * p.q_head_stride + q0 * p.q_row_stride;
  const T* k_gmem = static_cast<const T*>(p.k) + batch * p.k_batch_stride + kv_head * p.k_head_stride;
  const T* v_gmem = static_cast<const T*>(p.v) + batch * p.v_batch_stride + kv_head * p.v_head_stride;
  T* o_gmem = static_cast<T*>(p.o) + batch * p.o_batch_stride + head * p.o_head_stride;
  float* lse_row =
      p.lse != nullptr ? p.lse + (static_cast<int64_t>(batch) * p.heads_q + head) * p.seq_q : nullptr;

  const typename Loop::Keys keys(p, batch, head, q_block, threadIdx.x);
  typename Loop::State st;
  Loop::run(st, p, keys, q_tile, q_tile + Cfg::kSmemQ, q_gmem, k_gmem, v_gmem, q0);
  VsEpilogue<kDtype, kHeadDim>::store(st, p, q_tile, o_gmem, lse_row, q0);
}

template <DType kDtype, int kHeadDim>
cudaError_t launch_vertical_slash_attention(const VerticalSlashParams& p, cudaStream_t stream) {
  using Cfg = VsTileConfig<kHeadDim>;
  const auto kernel = &vertical_slash_attention_kernel<kDtype, kHeadDim>;
  // Above 48 KiB a kernel must opt in to dynamic shared memory (per device; cheap enough to repeat).
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(p.num_q_blocks, p.heads_q, p.batch);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace sparge::cuda
