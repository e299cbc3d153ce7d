// Tile sizes of the block-sparse attention kernel: the one table of tuning decisions, each with its reason.
// Host-includable (the API reads the block sizes a mask must have from here).
#pragma once

#include "params.h"

namespace sparge::cuda {

// Per head dimension and Q K^T precision. The mask's block sizes must equal (kBlockM, kBlockN): one mask
// block is one CTA tile.
template <int kHeadDim, Precision kQk = Precision::k16Bit>
struct TileConfig {
  static_assert(kHeadDim == 64 || kHeadDim == 128, "the mma.sync kernel is instantiated for D = 64 and 128");

  // 128 query rows per CTA: the query block of SpargeConfig's default mask (and of the reference
  // implementation on sm80/89), and large enough that each K/V tile read from global memory serves 128 rows.
  // Also the INT8 quantization block of Q: one q_scale per CTA.
  static constexpr int kBlockM = 128;
  // 64 keys per tile: the key block of the default mask; S for 32 rows x 64 keys is 64 float registers per
  // thread, which with the D = 128 accumulator (128 floats) stays under the 255-register limit without
  // spills. Also the INT8 quantization block of K: one k_scale per step.
  static constexpr int kBlockN = 64;
  // 4 warps x 32 rows: each K/V fragment loaded from shared memory feeds two m16 MMAs (half the shared-memory
  // traffic of 16 rows per warp); 128 threads also make one 16-byte cp.async per thread per 8 tile rows (D =
  // 128).
  // Occupancy: 255 registers x 128 threads allow 2 CTAs per SM, which `__launch_bounds__(kThreads, 2)` would
  // not change (the cap stays 255), so the kernel only states kThreads.
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kWarpRows = kBlockM / kWarps;  // = 32, the per-warp stage-2 group (stage2_group_rows)
  static constexpr int kMTiles = kWarpRows / 16;      // m16 MMA tiles per warp
  static_assert(kWarpRows % 16 == 0, "a warp owns whole m16 tiles");

  // Shared memory: Q (kBlockM x D), and K and V tiles (kBlockN x D) in two stages, rows padded by 16 bytes
  // (bank-conflict-free ldmatrix; also for INT8 rows of 64 / 128 bytes: the 8 rows of one ldmatrix matrix
  // then start 20 / 36 words apart, 8 distinct 4-bank groups). Q and K are 16-bit or INT8 (half the bytes:
  // one 16-byte chunk holds 16 values, and the m16n8k32 fragments read by ldmatrix.b16 have exactly the
  // m16n8k16 chunk pattern), V is always 16-bit. Two stages: block n + 1's K and V load during all of step n
  // with one CTA barrier per step (FlashAttention-2's single K and V buffers: two barriers per step, and
  // K(n + 1) only has softmax + P V(n) to land). 16-bit: 54 KiB (D = 64), 102 KiB (D = 128): at D = 128 two
  // CTAs still fit an SM's 227 KiB, and the registers (255 x 128 threads) allow no more than two anyway.
  // INT8: 39 / 72 KiB (three CTAs would fit the memory; the registers still allow two).
  // FP8 P V (kInt8Fp8): the V tile is V^T, kHeadDim rows of kBlockN one-byte keys (+ 16 bytes of padding:
  // rows 80 bytes = 20 words apart, conflict-free ldmatrix as for INT8 rows), 10 KiB at D = 128 instead of
  // 17 KiB; smem 57 KiB at D = 128.
  static constexpr bool kFp8Pv = kQk == Precision::kInt8Fp8;
  static constexpr int kQkBytes = kQk == Precision::k16Bit ? 2 : 1;  // bytes per Q / K element
  static constexpr int kQkRowBytes = kHeadDim * kQkBytes + 16;
  static constexpr int kVRowBytes = kFp8Pv ? kBlockN + 16 : kHeadDim * 2 + 16;
  static constexpr int kVRows = kFp8Pv ? kHeadDim : kBlockN;
  static constexpr int kSmemQ = kBlockM * kQkRowBytes;
  static constexpr int kSmemK = kBlockN * kQkRowBytes;
  static constexpr int kSmemV = kVRows * kVRowBytes;
  static constexpr int kStages = 2;
  static constexpr int kStageBytes = kSmemK + kSmemV;  // K then V
  // The epilogue stages O (16-bit, kBlockM rows) from the start of shared memory: with INT8 Q that spans
  // more than the Q tile, so the allocation covers it (it always does: K and V stages follow Q).
  static constexpr int kSmemO = kBlockM * (kHeadDim * 2 + 16);
  static constexpr int kSmemBytes =
      kSmemQ + kStages * kStageBytes > kSmemO ? kSmemQ + kStages* kStageBytes : kSmemO;
};

// Block sizes the kernels need in a BlockMask (the same for every instantiated head dimension).
inline constexpr int kKernelBlockQ = TileConfig<64>::kBlockM;
inline constexpr int kKernelBlockK = TileConfig<64>::kBlockN;
inline constexpr int kKernelWarpRows = TileConfig<64>::kWarpRows;
static_assert(TileConfig<128>::kBlockM == kKernelBlockQ && TileConfig<128>::kBlockN == kKernelBlockK &&
                  TileConfig<128>::kWarpRows == kKernelWarpRows,
              "one mask geometry for every head dimension");

}  // namespace sparge::cuda
