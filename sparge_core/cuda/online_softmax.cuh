// Online softmax of one warp's rows in log2 units, with the SpargeAttn stage-2 vote.
// A lane owns rows g and g + 8 of each m16 tile (g = lane / 4); the 4 lanes of a quad hold one row's columns.
//   m: running max of S * scale * log2(e) over the blocks not skipped (-inf before the first)
//   l: this lane's share of the running row sum (the quad's shares are summed once, in the epilogue)
// For a computed block with local row max m_blk (scaled):
//   stage 2: the row is negligible iff it has no allowed key here or m_blk - m < -pvthreshd;
//   update:  m' = max(m, m_blk); P = exp2(S * scale - m'); l = l * exp2(m - m') + rowsum(P); O *= exp2(m -
//   m')
// (m' = -inf is replaced by 0 in the exponents, so rows without any key keep l = 0 and O = 0).
#pragma once

#include "tile_ops.cuh"

namespace sparge::cuda {

template <int kMTiles, int kNTiles>
struct OnlineSoftmax {
  float m[kMTiles][2];
  float l[kMTiles][2];

  __device__ void init() {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        m[mt][hh] = tile::kNegInf;
        l[mt][hh] = 0.f;
      }
  }

  // m_blk (unscaled) = rowmax(S) per owned row; -inf for a row with no allowed key in the block.
  __device__ static void block_row_max(const float (&s)[kMTiles][kNTiles][4], float (&m_blk)[kMTiles][2]) {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float x = tile::kNegInf;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) x = fmaxf(x, fmaxf(s[mt][nt][2 * hh], s[mt][nt][2 * hh + 1]));
        m_blk[mt][hh] = tile::quad_max(x);
      }
  }

  // This lane's stage-2 vote over its rows: has = some row has an allowed key; negligible = every row is
  // negligible. pvthreshd = +inf (stage 2 off) leaves only "no allowed key" as negligible.
  __device__ void stage2_vote(const float (&m_blk)[kMTiles][2], float scale_log2, float pvthreshd, bool& has,
                              bool& negligible) const {
    has = false;
    negligible = true;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const bool row_has = m_blk[mt][hh] != tile::kNegInf;
        has |= row_has;
        negligible &= !row_has || (m_blk[mt][hh] * scale_log2 - m[mt][hh] < -pvthreshd);
      }
  }

  // s: S on entry, P = exp2(S * scale - m' + p_log2_scale) on exit (p_log2_scale: log2 of the factor P and l
  // carry, FP8's 448; 0 otherwise); rescales the accumulator rows by exp2(m - m').
  // kSkipUnitRescale: skip the rescale (warp-uniformly) when no row of the warp got a larger max: multiplying
  // by exp2(0) = 1 changes nothing, and after the first blocks a row's max rarely grows (a warp's 32 rows:
  // ~32 / n of the steps at step n), saving 64 (D = 64) or 128 (D = 128) FMULs per thread and step.
  template <bool kSkipUnitRescale, int kDTiles>
  __device__ void update(float (&s)[kMTiles][kNTiles][4], const float (&m_blk)[kMTiles][2], float scale_log2,
                         float p_log2_scale, float (&acc)[kMTiles][kDTiles][4]) {
    float alpha[kMTiles][2];
    bool rescale = false;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const float m_new = fmaxf(m[mt][hh], m_blk[mt][hh] * scale_log2);
        const float m_use = m_new == tile::kNegInf ? 0.f : m_new;
        alpha[mt][hh] = tile::exp2_approx(m[mt][hh] - m_use);  // exp2(m - m')
        rescale |= alpha[mt][hh] != 1.f;
        m[mt][hh] = m_new;
        const float shift = m_use - p_log2_scale;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            float& x = s[mt][nt][2 * hh + j];
            x = tile::exp2_approx(fmaf(x, scale_log2, -shift));  // P = exp2(S * scale - m' + log2 p)
            sum += x;
          }
        l[mt][hh] = l[mt][hh] * alpha[mt][hh] + sum;
      }
    if (kSkipUnitRescale && !__any_sync(tile::kFullWarp, rescale)) return;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mt][dt][i] *= alpha[mt][i / 2];
  }
};

}  // namespace sparge::cuda
