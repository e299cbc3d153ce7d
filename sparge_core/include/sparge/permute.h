// Token permutations for visual models: reorder the visual tokens of Q, K, V along a token order (Hilbert
// curve, row-major, ...) before attention and restore the output order afterwards. Text tokens stay in place.
//
//   x: (B, H, N, D) in HND or (B, N, H, D) in NHD; the visual tokens are x[..., offset : offset +
//   perm.size(), ...] in row-major grid order; perm[i] = grid index of the token placed at visual position i
//   (sparge/token_order.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "sparge/config.h"

namespace sparge {

at::Tensor permute_tokens(const at::Tensor& x, const std::vector<int64_t>& perm, int64_t offset = 0,
                          Layout layout = Layout::kHND);
at::Tensor unpermute_tokens(const at::Tensor& x, const std::vector<int64_t>& perm, int64_t offset = 0,
                            Layout layout = Layout::kHND);

// Mean block self-similarity (the paper's Sim-q / Sim-k): the mean over (batch, head, block) of
// pool_blocks(x, block).similarity, x in `layout`. Partial tail blocks count on their valid rows.
double mean_block_similarity(const at::Tensor& x, int64_t block, Layout layout = Layout::kHND);

}  // namespace sparge
