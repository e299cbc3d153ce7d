// Block-sparse attention on the GPU: the mma.sync (sm_80+) FlashAttention-2-style kernel with the SpargeAttn
// stage-2 filter, non-quantized path. Same contract as sparge::block_sparse_attention (reference.h) with
// QuantMode::kNone on the same BlockMask; built only when SPARGE_CUDA is on (library sparge_cuda).
//
// Shapes (config.layout; NHD swaps the H and N axes, the output included; any strides with a contiguous last
// dimension, no copies):
//   q: (B, Hq, Nq, D)   k, v: (B, Hkv, Nk, D)   Hq % Hkv == 0   D in {64, 128}   float16 or bfloat16, CUDA
//   mask: block_q x block_k = kBlockQ x kBlockK, counts/indices on q's device
//   out: like q, contiguous in the layout; lse: (B, Hq, Nq) float32 natural log (config.return_lse)
// Stage 2: config.pvthreshd (1 or Hq values, log2 units, +inf off); config.stage2_group_rows selects the
// group that takes one skip decision: kStage2WarpRows (= 32, one warp's rows) or 0 / kBlockQ (the whole
// 128-row tile, a CTA-wide vote). The reference with the same stage2_group_rows makes the same decisions up
// to the rounding of S.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "sparge/block_mask.h"
#include "sparge/config.h"
#include "sparge/reference.h"

namespace sparge::cuda {

// Mask geometry of the kernel (cuda/tile_config.h holds the reasons): one mask block is one CTA tile.
inline constexpr int64_t kBlockQ = 128;
inline constexpr int64_t kBlockK = 64;
inline constexpr int64_t kStage2WarpRows = 32;  // rows of one warp: the per-warp stage-2 group

struct KernelOptions {
  // Fill AttentionResult::stats (block and token counts from the mask, stage-2 units and skips counted by the
  // kernel, attention_ms); costs a device synchronization. stage2_skipped_pairs is not counted (left 0).
  bool collect_stats = false;
  // Validate mask.counts / mask.indices on the device (counts in [0, NKB], listed indices in range and
  // strictly ascending); costs a synchronization. The kernel trusts the mask otherwise.
  bool check_mask = true;
  // Optional preallocated outputs (e.g. poisoned by tests): out like q (dtype, device, shape) and contiguous;
  // lse (B, Hq, Nq) float32 contiguous, used when config.return_lse.
  at::Tensor out, lse;
};

// "" when the kernel supports (q, k, v, config) with the given mask block sizes, else the first failed
// constraint (a validity predicate: callers fall back to the reference, tests mark the case unsupported).
std::string unsupported_reason(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const SpargeConfig& config, int64_t mask_block_q = kBlockQ,
                               int64_t mask_block_k = kBlockK);

// Block-sparse attention over `mask` (its block sizes must be kBlockQ x kBlockK); throws sparge::Error naming
// the argument on bad input. Rows whose mask computes no allowed key get out = 0, lse = -inf.
AttentionResult block_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const BlockMask& mask, const SpargeConfig& config,
                                       const KernelOptions& options = {});

}  // namespace sparge::cuda
