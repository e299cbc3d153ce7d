// The kernel boundary of the MInference vertical-slash attention kernel (vertical_slash_kernel.cuh): the
// params struct, the tile table and the launchers, one instantiation per (dtype, head dim) in
// vs_fwd_<dtype>_hdim<D>.cu. No torch here: vertical_slash_api.cpp checks the inputs and fills the params.
//
// The computation is sparge::vertical_slash_index_attention (sparge/minference.h): per (batch, query head,
// 64-row query block m), online softmax over
//   loop 1: the block's slash tiles, 64 contiguous keys from block_offset[t] (any key offset, not
//   64-aligned),
//           causal mask bottom-right (key <= row + Nk - Nq; keys >= Nk fall under it);
//   loop 2: the block's gathered column keys, 64 at a time, the last chunk partial; no causal mask (the index
//           contract puts every column at or below the block's first diagonal key; the API checks it).
// Shapes, addressed through strides in logical HND order (HND and NHD both work without copies):
//   q, o: (B, Hq, Nq, D)   k, v: (B, Hkv, Nk, D)   last dimension contiguous, other strides multiples of 8
//   elements, base pointers 16-byte aligned; lse: (B, Hq, Nq) float32 contiguous, natural log (nullptr: not
//   written); block_count, column_count: (B, Hq, NQB) int32 contiguous; block_offset: (B, Hq, NQB, max_tiles)
//   and column_index: (B, Hq, NQB, max_columns) int32 contiguous, the first counts entries of each row valid.
// Rows that compute no key get o = 0 and lse = -inf.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "params.h"

namespace sparge::cuda {

struct VerticalSlashParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;

  // Strides in elements, logical (batch, head, row) order; the head-dim stride is 1.
  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;
  int64_t o_batch_stride = 0, o_head_stride = 0, o_row_stride = 0;

  int batch = 0, heads_q = 0, heads_kv = 0, seq_q = 0, seq_k = 0, head_dim = 0;
  int kv_group = 1;        // heads_q / heads_kv: query head h reads kv head h / kv_group
  float scale_log2 = 0.f;  // softmax scale * log2(e): scores live in log2 units

  const int32_t* block_count = nullptr;
  const int32_t* block_offset = nullptr;
  const int32_t* column_count = nullptr;
  const int32_t* column_index = nullptr;
  int num_q_blocks = 0, max_tiles = 0, max_columns = 0;  // NQB = ceil(Nq / 64), the list widths
};

// Tile sizes, each with its reason.
template <int kHeadDim>
struct VsTileConfig {
  static_assert(kHeadDim == 64 || kHeadDim == 128,
                "the vertical-slash kernel is instantiated for D = 64, 128");
  // One CTA per 64-row query block: the index (MInference's BLOCK_M = 64) lists tiles and columns per 64
  // rows.
  static constexpr int kBlockM = 64;
  // 64 keys per step: a slash tile is 64 contiguous keys (BLOCK_N), loop 2 gathers 64 columns at a time.
  static constexpr int kBlockN = 64;
  // 4 warps x 16 rows (one m16 MMA tile each): 128 threads make one 16-byte cp.async per thread per 8 (D =
  // 128) or 16 (D = 64) tile rows; 2 warps x 32 rows would halve the warps per SM at the same shared memory.
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kWarpRows = kBlockM / kWarps;
  static_assert(kWarpRows == 16, "a warp owns one m16 tile");
  // Shared memory: Q (64 x D) and two stages of K and V tiles (64 x D each), rows padded by 16 bytes
  // (conflict-free ldmatrix, see tile::SmemTile). Two stages: step n + 1's gathered rows land during all of
  // step n with one CTA barrier per step. 45 KiB (D = 64), 85 KiB (D = 128: two CTAs per SM).
  static constexpr int kRowBytes = kHeadDim * 2 + 16;
  static constexpr int kSmemQ = kBlockM * kRowBytes;
  static constexpr int kSmemK = kBlockN * kRowBytes;
  static constexpr int kSmemV = kBlockN * kRowBytes;
  static constexpr int kStages = 2;
  static constexpr int kStageBytes = kSmemK + kSmemV;  // K then V
  static constexpr int kSmemBytes = kSmemQ + kStages * kStageBytes;
  // Gathered K / V rows: thread tid copies 16-byte chunk tid % kChunks of kRowsPerThread rows per tile.
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kRowsPerStep = kThreads / kChunks;
  static constexpr int kRowsPerThread = kBlockN / kRowsPerStep;  // 4 (D = 64), 8 (D = 128)
  static_assert(kThreads % kChunks == 0 && kBlockN % kRowsPerStep == 0, "whole rows per thread");
};

// Launches the kernel for p (already validated) on `stream`; returns the launch error, if any.
template <DType kDtype, int kHeadDim>
cudaError_t launch_vertical_slash_attention(const VerticalSlashParams& p, cudaStream_t stream);

#define SPARGE_DECLARE_VS_LAUNCH(DTYPE, HDIM)                                                          \
  extern template cudaError_t launch_vertical_slash_attention<DTYPE, HDIM>(const VerticalSlashParams&, \
                                                                           cudaStream_t);
SPARGE_DECLARE_VS_LAUNCH(DType::kFp16, 64)
SPARGE_DECLARE_VS_LAUNCH(DType::kFp16, 128)
SPARGE_DECLARE_VS_LAUNCH(DType::kBf16, 64)
SPARGE_DECLARE_VS_LAUNCH(DType::kBf16, 128)
#undef SPARGE_DECLARE_VS_LAUNCH

// The index builder (vertical_slash_index.cu): sparge::vertical_slash_index (sparge/minference.h) on the
// device, one thread per (b, h, query block m). Inputs int64 contiguous: vertical (B, H, vmax) and slash
// (B, H, smax) ascending then -1, their counts (B, H). Outputs int32 contiguous, filled with -1 by the caller
// (the kernel writes only the listed entries and the counts): block_count, column_count (B, H, NQB),
// block_offset (B, H, NQB, smax), column_index (B, H, NQB, vmax). The contents are trusted (the API checks
// shapes and dtypes only); counts are clamped to [0, width], so every read and write stays in bounds.
struct VerticalSlashIndexParams {
  const int64_t* vertical = nullptr;
  const int64_t* vertical_count = nullptr;
  const int64_t* slash = nullptr;
  const int64_t* slash_count = nullptr;
  int32_t* block_count = nullptr;
  int32_t* block_offset = nullptr;
  int32_t* column_count = nullptr;
  int32_t* column_index = nullptr;
  int64_t batch = 0, heads = 0, num_q_blocks = 0, vmax = 0, smax = 0;
  int64_t seq_q = 0, seq_k = 0;
};

// Launches the index builder for p on `stream`; returns the launch error, if any (none for an empty grid).
cudaError_t launch_vertical_slash_index(const VerticalSlashIndexParams& p, cudaStream_t stream);

}  // namespace sparge::cuda
