// Epilogue of one CTA: O = acc / l in the element type, staged through the warp's own rows of the Q tile
// (each warp only ever read its own Q rows, so no CTA barrier is needed) and written with 16-byte coalesced
// stores; LSE = (m + log2 l) * ln 2. Rows that computed no key (l = 0) get O = 0 and LSE = -inf; rows >= Nq
// are not written. Also flushes the stage-2 counters (one atomic per counting thread).
// INT8 Q: the 16-bit staging rows are twice as long as the INT8 Q rows, so a warp's staging area overlaps
// other warps' Q rows (and the first K/V stage): one CTA barrier first (every warp done with the mainloop).
#pragma once

#include "mainloop.cuh"

namespace sparge::cuda {

template <DType kDtype, int kHeadDim, Stage2Granularity kGranularity, Precision kQk>
struct Epilogue {
  using Loop = Mainloop<kDtype, kHeadDim, kGranularity, kQk>;
  using Cfg = typename Loop::Cfg;
  using Elem = typename Loop::Elem;
  using T = typename Loop::T;
  using OTile = tile::SmemTile<Cfg::kBlockM, kHeadDim>;  // 16-bit staging rows from the start of smem
  static_assert(OTile::kBytes == Cfg::kSmemO && OTile::kBytes <= Cfg::kSmemBytes, "staging fits");

  // o_gmem: row 0 of the (batch, head) output; lse_row: lse of row 0 of the (batch, head), or nullptr;
  // v_scale_row: FP8 P V only, the kv head's kHeadDim V scales (O = acc / l * v_scale per column, and P and l
  // carry the factor 448, removed from the LSE).
  __device__ static void store(typename Loop::State& st, const AttentionParams& p, uint32_t stage_tile,
                               T* o_gmem, float* lse_row, const float* v_scale_row, int q0) {
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    tile::cp_async_wait<0>();
    if constexpr (Loop::kInt8) {
      __syncthreads();
    } else {
      __syncwarp();
    }
#pragma unroll
    for (int mt = 0; mt < Loop::kMTiles; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int row = warp * Cfg::kWarpRows + mt * 16 + lane / 4 + hh * 8;  // row in the tile
        const float l = tile::quad_sum(st.softmax.l[mt][hh]);
        const float inv_l = l > 0.f ? 1.f / l : 0.f;
        if (lse_row != nullptr && lane % 4 == 0 && q0 + row < p.seq_q)
          lse_row[q0 + row] =
              l > 0.f ? (st.softmax.m[mt][hh] + log2f(l) - Loop::kPLog2Scale) * tile::kLn2 : tile::kNegInf;
#pragma unroll
        for (int dt = 0; dt < Loop::kDTiles; ++dt) {
          float2 f = make_float2(inv_l, inv_l);
          if constexpr (Loop::kFp8Pv) {
            const float2 vs = __ldg(reinterpret_cast<const float2*>(v_scale_row + dt * 8 + (lane % 4) * 2));
            f = make_float2(inv_l * vs.x, inv_l * vs.y);
          }
          const uint32_t packed = Elem::pack(st.acc[mt][dt][2 * hh] * f.x, st.acc[mt][dt][2 * hh + 1] * f.y);
          const uint32_t addr = stage_tile + OTile::offset(row, dt) + (lane % 4) * 4;
          asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(packed));
        }
      }
    __syncwarp();
    constexpr int kChunks = OTile::kChunks;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {  // the warp's kWarpRows x kChunks 16-byte chunks, 32 per step
      const int idx = lane + i * 32, r = warp * Cfg::kWarpRows + idx / kChunks, c = idx % kChunks;
      uint4 v;
      asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "r"(stage_tile + OTile::offset(r, c)));
      if (q0 + r < p.seq_q) *reinterpret_cast<uint4*>(o_gmem + (q0 + r) * p.o_row_stride + c * 8) = v;
    }
    static_assert(Cfg::kWarpRows * kChunks % 32 == 0, "whole chunks per lane");

    if (st.units > 0 && p.stage2_units != nullptr)
      atomicAdd(reinterpret_cast<unsigned long long*>(p.stage2_units),
                static_cast<unsigned long long>(st.units));
    if (st.skipped > 0 && p.stage2_skipped != nullptr)
      atomicAdd(reinterpret_cast<unsigned long long*>(p.stage2_skipped),
                static_cast<unsigned long long>(st.skipped));
  }
};

}  // namespace sparge::cuda
