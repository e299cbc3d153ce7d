// Tile sizes of the block-sparse attention kernel: the one table of tuning decisions, each with its reason.
// Host-includable (the API reads the block sizes a mask must have from here).
#pragma once

namespace sparge::cuda {

// Per head dimension. The mask's block sizes must equal (kBlockM, kBlockN): one mask block is one CTA tile.
template <int kHeadDim>
struct TileConfig {
  static_assert(kHeadDim == 64 || kHeadDim == 128, "the mma.sync kernel is instantiated for D = 64 and 128");

  // 128 query rows per CTA: the query block of SpargeConfig's default mask (and of the reference
  // implementation on sm80/89), and large enough that each K/V tile read from global memory serves 128 rows.
  static constexpr int kBlockM = 128;
  // 64 keys per tile: the key block of the default mask; S for 32 rows x 64 keys is 64 float registers per
  // thread, which with the D = 128 accumulator (128 floats) stays under the 255-register limit without
  // spills.
  static constexpr int kBlockN = 64;
  // 4 warps x 32 rows: each K/V fragment loaded from shared memory feeds two m16 MMAs (half the shared-memory
  // traffic of 16 rows per warp); 128 threads also make one 16-byte cp.async per thread per 8 tile rows (D =
  // 128).
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kWarpRows = kBlockM / kWarps;  // = 32, the per-warp stage-2 group (stage2_group_rows)
  static constexpr int kMTiles = kWarpRows / 16;      // m16 MMA tiles per warp
  static_assert(kWarpRows % 16 == 0, "a warp owns whole m16 tiles");

  // Shared memory: Q (kBlockM x D), one K and one V tile (kBlockN x D), 16-bit elements, rows padded by 16
  // bytes (bank-conflict-free ldmatrix), FlashAttention-2 schedule (V(n) loads during S = Q K(n)^T, K(n+1)
  // during softmax and P V(n)): 36 KiB (D = 64), 68 KiB (D = 128): 3 CTAs fit an SM's shared memory at D =
  // 128.
  static constexpr int kSmemRowBytes = kHeadDim * 2 + 16;
  static constexpr int kSmemQ = kBlockM * kSmemRowBytes;
  static constexpr int kSmemKV = kBlockN * kSmemRowBytes;
  static constexpr int kSmemBytes = kSmemQ + 2 * kSmemKV;
};

// Block sizes the kernels need in a BlockMask (the same for every instantiated head dimension).
inline constexpr int kKernelBlockQ = TileConfig<64>::kBlockM;
inline constexpr int kKernelBlockK = TileConfig<64>::kBlockN;
inline constexpr int kKernelWarpRows = TileConfig<64>::kWarpRows;
static_assert(TileConfig<128>::kBlockM == kKernelBlockQ && TileConfig<128>::kBlockN == kKernelBlockK &&
                  TileConfig<128>::kWarpRows == kKernelWarpRows,
              "one mask geometry for every head dimension");

}  // namespace sparge::cuda
