// Token orders: permutations of the (T, H, W) token grid of an image or video latent, applied before
// block-sparse attention so that each block of consecutive tokens covers a compact region (SpargeAttn,
// "Hilbert curve permutation"). No torch types here.
//
// Conventions:
//   - the natural order is row-major over (T, H, W): token (t, h, w) has linear index t*H*W + h*W + w;
//   - a permutation `perm` has size T*H*W and perm[i] = the row-major linear index of the token placed at
//     position i of the new order, so reordering a sequence x is y[i] = x[perm[i]];
//   - invert_permutation(perm)[perm[i]] = i, so undoing the reorder is x[j] = y[inv[j]].
// Errors are sparge::Error (a std::invalid_argument) with a message naming the bad argument.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace sparge {

// The token grid (T, H, W); an image is t = 1. Every dim must be >= 1.
struct Grid3 {
  int64_t t = 1, h = 1, w = 1;
  // Number of tokens t*h*w. Throws sparge::Error naming `grid` when a dim is < 1 or t*h*w overflows int64.
  int64_t size() const;
};

enum class TokenOrder {
  kRowMajor,     // identity: t outer, then h, then w
  kColumnMajor,  // within each frame w outer, h inner; frames in order
  kTimeMajor,    // "timeline" order of the SpargeAttn paper: (h, w) outer in row-major, t inner
  kRandom,       // uniform permutation from std::mt19937_64(seed), reproducible across standard libraries
  kHilbert,      // generalized Hilbert curve over (T, H, W): consecutive tokens are grid neighbours
};

// name: "row_major" | "column_major" | "time_major" | "random" | "hilbert".
// Throws sparge::Error naming `order` and the accepted values otherwise.
TokenOrder parse_token_order(std::string_view name);
std::string_view to_string(TokenOrder order);

// perm of size grid.size(), perm[i] = row-major linear index of the token at position i of `order`.
// `seed` is used by kRandom only. Throws sparge::Error naming `grid` for a bad grid.
std::vector<int64_t> token_permutation(const Grid3& grid, TokenOrder order, uint64_t seed = 0);

// Generalized Hilbert curve over a grid of any sizes (not only powers of two; 2D when t == 1; any dims may be
// 1). Returns a permutation as above such that every two consecutive positions are grid neighbours
// (|dt| + |dh| + |dw| == 1). Power-of-two squares (cubes) give the classic Hilbert (octree) order: every
// aligned run of 4^k (8^k) positions fills an aligned 2^k square (cube).
std::vector<int64_t> hilbert_order(const Grid3& grid);

// perm: a permutation of [0, n). Returns inv with inv[perm[i]] = i (so perm[inv[j]] = j).
// Throws sparge::Error naming `perm` when an entry is out of range or repeated.
std::vector<int64_t> invert_permutation(const std::vector<int64_t>& perm);

}  // namespace sparge
