// The keys of one query block of the vertical-slash kernel, as one sequence of 64-key steps: loop 1's slash
// tiles (steps 0 .. tiles-1), then loop 2's column chunks (steps tiles .. tiles + ceil(columns / 64) - 1).
// Each step's K and V rows are gathered into padded shared tiles by cp.async; thread tid copies 16-byte chunk
// tid % kChunks of tile rows row0 + i * kRowsPerStep (row0 = tid / kChunks, i < kRowsPerThread), so per step
// it needs the global key of each of its rows:
//   tile step (start t):    key = t + row, zero-filled where key >= Nk (the causal mask hides those keys);
//   column step (first c0): key = column_index[c0 + row], zero-filled where c0 + row >= column_count.
// The global loads a step needs (the tile start, or the thread's column indices) are issued by fetch() three
// steps before the step is computed and two before its copies are issued, so issuing never waits on them.
#pragma once

#include <cstdint>

#include "tile_ops.cuh"
#include "vertical_slash_params.h"

namespace sparge::cuda {

template <int kHeadDim>
class VsKeySteps {
 public:
  using Cfg = VsTileConfig<kHeadDim>;
  static constexpr int kRowsPerThread = Cfg::kRowsPerThread;

  // What fetch() loaded for one step: the tile start (loop 1) or the first column's position c0 (loop 2),
  // and in loop 2 the thread's column keys (-1: past column_count).
  struct Fetch {
    int start;
    int key[kRowsPerThread];
  };

  __device__ VsKeySteps(const VerticalSlashParams& p, int batch, int head, int q_block, int tid) {
    const int64_t row = (static_cast<int64_t>(batch) * p.heads_q + head) * p.num_q_blocks + q_block;
    tiles_ = __ldg(p.block_count + row);
    columns_ = __ldg(p.column_count + row);
    offsets_ = p.block_offset + row * p.max_tiles;
    cols_ = p.column_index + row * p.max_columns;
    steps_ = tiles_ + (columns_ + Cfg::kBlockN - 1) / Cfg::kBlockN;
    row0_ = tid / Cfg::kChunks;
    seq_k_ = p.seq_k;
  }
  __device__ int count() const { return steps_; }
  __device__ int columns() const { return columns_; }
  __device__ bool is_tile(int n) const { return n < tiles_; }

  // Issues step n's global loads into f (nothing for n past the last step).
  __device__ void fetch(int n, Fetch& f) const {
    if (n >= steps_) return;
    if (n < tiles_) {
      f.start = __ldg(offsets_ + n);
      return;
    }
    const int c0 = (n - tiles_) * Cfg::kBlockN;
    f.start = c0;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int c = c0 + row0_ + i * Cfg::kRowsPerStep;
      f.key[i] = c < columns_ ? __ldg(cols_ + c) : -1;
    }
  }

  // The global key of each of the thread's rows of step n (fetched into f), -1 for a zero-filled row.
  __device__ void keys(int n, const Fetch& f, int (&key)[kRowsPerThread]) const {
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int k = f.start + row0_ + i * Cfg::kRowsPerStep;
      key[i] = n < tiles_ ? (k < seq_k_ ? k : -1) : f.key[i];
    }
  }

 private:
  const int32_t* offsets_;
  const int32_t* cols_;
  int tiles_, columns_, steps_, row0_, seq_k_;
};

// Asynchronously gathers a kRows x kHeadDim tile: tile row row0 + i * kRowsPerStep (row0 = tid / kChunks)
// from global row key[i] (row stride in elements), 16 zero bytes where key[i] < 0. The thread's shared
// addresses are one base plus immediates (as tile::load_tile_async); the global ones one multiply per row.
template <int kRows, int kHeadDim, int kThreads, int kRowsPerThread, typename T>
__device__ __forceinline__ void gather_tile_async(uint32_t smem, const T* gmem, int64_t row_stride,
                                                  const int (&key)[kRowsPerThread], int tid) {
  using Layout = tile::SmemTile<kRows, kHeadDim>;
  constexpr int kRowsPerStep = kThreads / Layout::kChunks;
  static_assert(kRows == kRowsPerStep * kRowsPerThread, "the thread's rows cover the tile");
  const int row0 = tid / Layout::kChunks, chunk = tid % Layout::kChunks;
  const uint32_t dst = smem + Layout::offset(row0, chunk);
  const T* base = gmem + chunk * 8;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const bool valid = key[i] >= 0;
    const T* src = valid ? base + static_cast<int64_t>(key[i]) * row_stride : gmem;
    tile::cp_async_16(dst + Layout::offset(i * kRowsPerStep, 0), src, valid);
  }
}

}  // namespace sparge::cuda
