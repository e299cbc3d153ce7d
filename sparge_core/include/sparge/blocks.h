// Block-level building blocks shared by stage 1, the quantization emulation and the permutation study.
//   x: (B, H, N, D) floating point, HND. Blocks of `block` consecutive tokens; the last one may be partial
//   and is treated on its valid rows only (its mean divides by the true count).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace sparge {

// pooled: (B, H, NB, D) mean of each block's valid rows.
// similarity: (B, H, NB) mean pairwise cosine similarity of each block's valid rows, diagonal included,
// = || mean_i x_i / ||x_i|| ||^2 in [0, 1] (a zero row counts as a zero unit vector). Same dtype as x.
struct PooledBlocks {
  at::Tensor pooled, similarity;
};
PooledBlocks pool_blocks(const at::Tensor& x, int64_t block);

// SageAttention-style INT8 quantization with one scale per block (per b, h): scale = max|x| / 127 over the
// block, values = round(x / scale) clamped to [-127, 127], returned as integer-valued tensors of x's dtype
// (exact).
//   values: (B, H, N, D)   scale: (B, H, NB)   (a block of zeros gets scale 1 / 127 and values 0)
struct Int8Blocks {
  at::Tensor values, scale;
};
Int8Blocks quantize_int8_blocks(const at::Tensor& x, int64_t block);

// Rounds to the nearest FP8 e4m3 (finite-only "fn" variant, max 448) value after clamping to [-448, 448];
// returned in x's dtype.
at::Tensor round_to_fp8_e4m3(const at::Tensor& x);

inline constexpr double kInt8Max = 127.0;
inline constexpr double kFp8E4m3Max = 448.0;

}  // namespace sparge
