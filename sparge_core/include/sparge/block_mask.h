// BlockMask: which (query block, key block) tiles an attention call computes.
//
// Per (batch, head, query block) a sorted list of key-block indices, stored as counts + fixed-width padded
// rows (the layout kernels index directly), plus the dense boolean view used by tests and statistics.
//   dense:   (B, H, NQB, NKB) bool
//   counts:  (B, H, NQB) int32, number of key blocks computed for the row
//   indices: (B, H, NQB, NKB) int32, the first counts[b,h,i] entries ascending, the rest -1
// NQB = ceil(Nq / block_q), NKB = ceil(Nk / block_k); the last blocks may be partial.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

namespace sparge {

struct BlockMask {
  int64_t block_q = 0, block_k = 0;
  int64_t seq_q = 0, seq_k = 0;  // token counts Nq, Nk
  at::Tensor dense, counts, indices;

  int64_t num_q_blocks() const { return (seq_q + block_q - 1) / block_q; }
  int64_t num_k_blocks() const { return (seq_k + block_k - 1) / block_k; }

  // dense: (B, H, NQB, NKB) bool on any device; validates the shape against the sizes.
  static BlockMask from_dense(const at::Tensor& dense, int64_t block_q, int64_t block_k, int64_t seq_q,
                              int64_t seq_k);
};

// The same (query, key) token pairs at finer blocks: every block of `mask` splits into (mask.block_q /
// block_q) x (mask.block_k / block_k) blocks (both must divide). E.g. a 128 x 128 baseline mask for the CUDA
// kernel's 128 x 64 tiles. Throws sparge::Error otherwise.
BlockMask refine_block_mask(const BlockMask& mask, int64_t block_q, int64_t block_k);

// (NQB, NKB) int64: the causal-allowed (query, key) pairs inside each block (all pairs when !causal), so that
// (mask.dense * counts).sum() is a mask's computed pairs whatever its block size. Closed form: O(NQB * NKB)
// memory at any sequence length (no per-row tensor).
at::Tensor block_pair_counts(int64_t seq_q, int64_t seq_k, int64_t block_q, int64_t block_k, bool causal,
                             const at::TensorOptions& device);

// 1 - computed / causal-valid (query, key) pairs of `mask` over all its (batch, head) rows: the token-level
// sparsity every method is compared by.
double token_sparsity(const BlockMask& mask, bool causal);

// Equal-sparsity search of a method with one monotone knob (XAttention's threshold, FlexPrefill's gamma):
// token sparsity falls as the knob grows in [lo, hi]. Evaluates mask_of(hi), then bisects `steps` times
// (stopping early once within 1e-3 of `target`) and returns the mask whose token_sparsity came closest to
// `target` (the first such mask on ties). mask_of is called at most steps + 1 times; estimate-once methods
// pass a selection over a precomputed estimate (xattention_select, flexprefill_select).
BlockMask mask_at_token_sparsity(const std::function<BlockMask(double)>& mask_of, double lo, double hi,
                                 double target, bool causal, int steps = 12);

// The same search, returning the knob of the chosen mask too: mask_of(knob) reproduces `mask` (a caller can
// calibrate a method's knob once, then run the method with it fixed).
struct KnobSearch {
  BlockMask mask;
  double knob = 0.0;
};
KnobSearch knob_at_token_sparsity(const std::function<BlockMask(double)>& mask_of, double lo, double hi,
                                  double target, bool causal, int steps = 12);

// (NQB, NKB) bool: blocks holding at least one causal-allowed (query, key) pair; all true when !causal.
// Causal is bottom-right aligned: query i sees key j iff j <= i + seq_k - seq_q.
at::Tensor causal_valid_blocks(int64_t seq_q, int64_t seq_k, int64_t block_q, int64_t block_k, bool causal,
                               const at::TensorOptions& device);

// (NQB, NKB) bool: for causal attention, the key blocks holding the diagonal key (i + seq_k - seq_q) of some
// row i of the query block. Forcing them guarantees every query row at least one computed key. All false when
// !causal.
at::Tensor causal_diagonal_blocks(int64_t seq_q, int64_t seq_k, int64_t block_q, int64_t block_k, bool causal,
                                  const at::TensorOptions& device);

}  // namespace sparge
