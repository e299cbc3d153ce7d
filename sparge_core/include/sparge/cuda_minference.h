// MInference vertical-slash attention on the GPU: the mma.sync (sm_80+) kernel that computes the index form
// (sparge/minference.h: VerticalSlashIndex, 64-row query blocks) exactly as
// sparge::vertical_slash_index_attention defines it: per 64-row query block, online softmax over loop 1 (the
// 64-key slash tiles at arbitrary key offsets, bottom-right causal mask, keys >= Nk masked) then loop 2 (the
// gathered column keys, 64 at a time, the last chunk partial). S and P V in the input's 16-bit type, float32
// accumulation. Built only when SPARGE_CUDA is on (library sparge_cuda).
//
// Shapes (config.layout; NHD swaps the H and N axes, the output included; any strides with a contiguous last
// dimension, no copies):
//   q: (B, Hq, Nq, D)   k, v: (B, Hkv, Nk, D)   Hq % Hkv == 0 (query head h reads kv head h / (Hq / Hkv))
//   Nq <= Nk (causal, bottom-right)   D in {64, 128}   float16 or bfloat16, CUDA
//   index: of (B, Hq) heads, int32 tensors on q's device, satisfying the contract of sparge/minference.h
//   out: like q, contiguous in the layout; lse: (B, Hq, Nq) float32 natural log (config.return_lse)
// Rows that compute no key get out = 0 and lse = -inf. Uses config.causal (must be true), scale, layout and
// return_lse; the head budgets and the coverage are the index's business (the kernel computes kKernelTiles).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "sparge/minference.h"
#include "sparge/reference.h"

namespace sparge::cuda {

struct VerticalSlashOptions {
  // Validate the index on the device (counts in range, tile starts in [0, Nk + 64), columns at or below their
  // block's first diagonal key); costs a synchronization. The kernel trusts the index otherwise.
  bool check_index = true;
  // Fill AttentionResult::stats (vertical_slash_index_stats, counted on the device; attention_ms);
  // synchronizes.
  bool collect_stats = false;
  // Optional preallocated outputs (e.g. poisoned by tests): out like q (dtype, device, shape) and contiguous;
  // lse (B, Hq, Nq) float32 contiguous, used when config.return_lse.
  at::Tensor out, lse;
};

// "" when the kernel supports (q, k, v) (CUDA, float16 / bfloat16, rank 4, D 64 / 128, grid limits), else
// the first failed constraint, naming the argument (callers fall back to the reference).
std::string vertical_slash_unsupported_reason(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const MInferenceConfig& config);

// Vertical-slash attention from the index; throws sparge::Error naming the argument on bad input.
AttentionResult vertical_slash_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const VerticalSlashIndex& index, const MInferenceConfig& config,
                                         const VerticalSlashOptions& options = {});

// sparge::vertical_slash_index on the GPU (vertical_slash_index.cu, one thread per (b, h, query block)): the
// same four int32 tensors, bit for bit (same shapes, same -1 padding), on vs's CUDA device, enqueued on the
// current stream: no host synchronization and no host copy of the lists. Checked on the host (errors name the
// argument): seq_q, seq_k (1 <= Nq <= Nk, Nk small enough for int32 tile starts), every tensor defined, on
// the device of vs.vertical, int64 (int32 is converted on the device), lists (B, H, C) and counts (B, H) with
// one (B, H). The list contents are trusted, not validated (that would need a host copy): they must be what
// the host version accepts (count entries strictly ascending in [0, Nk), then -1; offset 0 in every slash
// list), as minference_vertical_slash returns. Counts are clamped to [0, C], so invalid contents give an
// unspecified index but no out-of-bounds access; a (b, h) whose slash list has no offset below a block's
// E (e.g. no offset 0) gets that block 0 tiles and 0 columns.
VerticalSlashIndex vertical_slash_index(const VerticalSlash& vs);

// sparge::minference_budget_ratio with the search's indexes built by vertical_slash_index above (q, k on a
// CUDA device; no host copy of the lists per step). The same ratio.
double minference_budget_ratio(const at::Tensor& q, const at::Tensor& k, const MInferenceConfig& config);

// As vertical_slash_unsupported_reason, plus config.coverage must be kKernelTiles (kExactTokens is computed
// by the reference only).
std::string minference_unsupported_reason(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          const MInferenceConfig& config);

// sparge::minference_attention with the vertical-slash heads on the kernel and their index built by
// vertical_slash_index above (the estimate, A-shape and block-sparse heads and decode stay on the LibTorch
// reference, on the GPU; with config.target_sparsity the budget search still builds and counts host
// indexes). Throws sparge::Error with
// minference_unsupported_reason when the case does not qualify.
AttentionResult minference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const MInferenceConfig& config);

}  // namespace sparge::cuda
