// The MInference index on the device (VerticalSlashIndexParams, vertical_slash_params.h): the same tensors as
// the host sparge::vertical_slash_index (src/minference.cpp), bit for bit. No torch here.
//
// One thread per (b, h, query block m), m fastest: the 32 lanes of a warp usually share (b, h), so they read
// the same slash and vertical entries in the same iteration (one broadcast load) and run the same number of
// iterations. A thread walks its head's slash offsets from the largest to the smallest (range ends
// ascending), keeping only the open range [lo, hi) in registers; when a range closes (a later end lies more
// than one tile past it, or the list ends) it writes the range's tiles and merges the vertical list up to
// the range's end in the same pass: keys below lo are columns, keys in [lo, hi) are covered by the range,
// and after the last range the remaining keys (>= its end) are dropped. This is the host loop's rule
// without storing the ranges.
#include <algorithm>
#include <cstdint>

#include "vertical_slash_params.h"

namespace sparge::cuda {
namespace {

constexpr int64_t kTile = 64;  // BLOCK_M = BLOCK_N of the index
constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads) vertical_slash_index_kernel(VerticalSlashIndexParams p) {
  const int64_t total = p.batch * p.heads * p.num_q_blocks;
  const int64_t offset = p.seq_k - p.seq_q;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; item < total;
       item += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = item % p.num_q_blocks, bh = item / p.num_q_blocks;
    const int64_t* slash = p.slash + bh * p.smax;
    const int64_t* vertical = p.vertical + bh * p.vmax;
    const int64_t ns = min(max(__ldg(p.slash_count + bh), int64_t{0}), p.smax);
    const int64_t nv = min(max(__ldg(p.vertical_count + bh), int64_t{0}), p.vmax);
    int32_t* tiles = p.block_offset + item * p.smax;
    int32_t* columns = p.column_index + item * p.vmax;

    const int64_t end = m * kTile + kTile + offset;  // E: the diagonal key after the block's last row
    int64_t n_tiles = 0, n_columns = 0, next_vertical = 0;
    int64_t lo = 0, hi = 0;
    bool open = false;
    // Writes the tiles of [lo, hi) and consumes the verticals below hi: those below lo lie between the
    // previous range and this one (columns), those in [lo, hi) inside this range (dropped).
    const auto close_range = [&] {
      for (int64_t t = lo; t < hi; t += kTile) tiles[n_tiles++] = static_cast<int32_t>(t);
      for (; next_vertical < nv; ++next_vertical) {
        const int64_t key = __ldg(vertical + next_vertical);
        if (key >= hi) break;
        if (key < lo) columns[n_columns++] = static_cast<int32_t>(key);
      }
    };
    for (int64_t t = ns - 1; t >= 0; --t) {
      const int64_t o = __ldg(slash + t);
      if (o >= end) continue;                 // the whole tile lies before key 0
      const int64_t e = max(end - o, kTile);  // a tile starting below 0 is clamped to [0, 64)
      if (!open || e > hi + kTile) {
        if (open) close_range();
        lo = e - kTile;
        hi = e;
        open = true;
      } else if (e > hi) {
        hi += kTile;  // grows by one tile, not to e
      }
    }
    if (open) close_range();  // verticals at or past the last range's end stay unused (dropped)
    p.block_count[item] = static_cast<int32_t>(n_tiles);
    p.column_count[item] = static_cast<int32_t>(n_columns);
  }
}

}  // namespace

cudaError_t launch_vertical_slash_index(const VerticalSlashIndexParams& p, cudaStream_t stream) {
  const int64_t total = p.batch * p.heads * p.num_q_blocks;
  if (total == 0) return cudaSuccess;
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // the grid-stride loop covers the rest
  const auto blocks = static_cast<unsigned>(std::min((total + kThreads - 1) / kThreads, kMaxBlocks));
  vertical_slash_index_kernel<<<blocks, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace sparge::cuda
