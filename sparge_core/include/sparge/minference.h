// MInference baseline (microsoft/MInference: minference/modules/minference_forward.py, csrc/
// vertical_slash_index.cu, ops/pit_sparse_flash_attention_v2.py, ops/streaming_kernel.py,
// ops/block_sparse_flash_attention.py) on LibTorch tensor ops (CPU and CUDA tensors). Facts from the public
// code are summarized in spec/baselines.md ("MInference vertical-slash estimate").
//
// Shapes as in reference.h (layout HND; NHD swaps the H and N axes of q, k, v and the output):
//   q: (B, Hq, Nq, D)   k, v: (B, Hkv, Nk, D)   Hq % Hkv == 0 (query head h reads kv head h / (Hq / Hkv); K
//   and V are never repeated). Any batch (the original runs batch 1 per head).
// Causal prefill only, bottom-right aligned when Nq < Nk: query row i has the diagonal key diag(i) = i + Nk -
// Nq and sees keys j <= diag(i) (the original is self-attention, Nq == Nk; its formulas are written here with
// diag(i) in place of i). Math in float32 (float64 for float64 inputs); outputs in the input dtype.
// Decode (Nq == 1) computes dense causal attention for every head, as the original (flash attention there).
// There is no length gate: short prefills run the sparse pattern too (the original has none either, which is
// why it is slower than dense below ~10K tokens, MInference issue #33); note that budgets >= Nk make a
// vertical-slash head dense.
//
// Three per-head patterns (MInferenceHead::Pattern):
//
// 1. Vertical-slash (the only pattern of the shipped configs). Estimate per (batch, query head), scale = the
//    softmax scale (config.scale, default 1/sqrt(D), as the original's 1/sqrt(head_dim)):
//      v = min(Nk, max(vertical_size, 30)); s = min(Nk, max(slash_size, 50)); L = min(64, Nq)
//      the last L query rows r = Nq-L .. Nq-1: S = Q[r] K^T * scale, key j > diag(r) -> -inf;
//      P = softmax(S) (float32; float64 for float64 inputs)
//      col[j]  = sum_r P[r, j];                 col[0 .. 29] = +inf  (the first 30 keys are forced)
//      diag[o] = sum_r P[r, diag(r) - o] for offsets o = 0 .. Nk-1 (o = distance below the diagonal; rows
//                whose key diag(r) - o < 0 add 0);  diag[0 .. 99] = +inf  (100 local diagonals forced)
//      vertical = the v largest col entries, slash = the s largest diag entries (ties: the lower index
//      first, so among the forced entries the first keys and the offsets nearest the diagonal win; the
//      original's topk leaves ties unspecified). Offset 0 (the diagonal) is therefore always selected.
//    Two readings of "the keys a row computes" (VsCoverage):
//      kExactTokens: keys j <= diag(i) with j in vertical or diag(i) - j in slash: the token-level pattern.
//      kKernelTiles: what MInference's kernel computes from the 64x64 index (vertical_slash_index below):
//        for each 64-row query block, every causal key of its slash tiles (64 contiguous keys each) plus its
//        gathered vertical columns. A tile holds the selected diagonal for all 64 rows but also the
//        neighbouring diagonals (up to 63 on each side), and merged ranges can extend by up to 63 more keys,
//        so this is a superset of kExactTokens (it holds the diagonal, hence every vertical not in a tile):
//        the pattern whose accuracy and cost MInference actually has. Default.
//
// 2. A-shape (the original's "stream_llm" / a_shape, streaming_kernel.py): n_init sink keys + an n_local
//    window: row i computes keys j <= diag(i) with j < n_init or diag(i) - j < n_local (token exact, as the
//    original's two masked passes merged by LSE).
//
// 3. Block-sparse (block_sparse_flash_attention.py): Qbar, Kbar = 64-token means (the tail block is zero
//    padded and divided by 64, as the original's padded reshape-mean), scores Qbar Kbar^T (no scale, no
//    softmax), candidates = causal_valid_blocks (64x64, bottom-right); per query block the
//    min(top_blocks, #candidates) best key blocks (ties: lower block first), applied by
//    sparge::block_sparse_attention (stage 2 off). The original clamps top-k to floor(N / 64) blocks, which
//    drops one block of the last query block when 64 does not divide N and N / 64 < top_k; here the clamp is
//    the row's valid count. Key blocks are chosen per query head (the original repeats K to the query heads).
//
// Statistics (AttentionStats, 64x64 blocks): valid = causal (query, key) pairs / causal-valid 64x64 blocks;
// computed_pairs = pairs the pattern computes (causal only); computed_blocks = 64x64 blocks holding at least
// one computed pair ("blocks touched": a slash tile at an arbitrary offset touches two key blocks).
// prediction_ms = estimate + index conversion (or pooled block scores), attention_ms = the attention.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sparge/block_mask.h"
#include "sparge/config.h"
#include "sparge/reference.h"

namespace sparge {

struct MInferenceHead {
  enum class Pattern { kVerticalSlash, kAShape, kBlockSparse };
  Pattern pattern = Pattern::kVerticalSlash;
  int64_t vertical_size = 1000, slash_size = 6096;  // vertical-slash budgets (>= 0; raised to 30 / 50)
  int64_t n_init = 128, n_local = 3968;             // A-shape: sink keys (>= 0), window (>= 1)
  int64_t top_blocks = 100;                         // block-sparse: key blocks per query block (>= 1)
};

// Which keys a vertical-slash head computes (see the header comment): the kernel's 64-key tiles (default) or
// exactly the selected columns and diagonals.
enum class VsCoverage { kKernelTiles, kExactTokens };

struct MInferenceConfig {
  // One entry broadcasts to every query head; otherwise one entry per query head (Hq).
  std::vector<MInferenceHead> heads = std::vector<MInferenceHead>(1);  // one default head
  bool causal = true;           // must be true: MInference is a causal-prefill method
  std::optional<double> scale;  // softmax scale of the estimate and the attention; default 1/sqrt(D)
  Layout layout = Layout::kHND;
  VsCoverage coverage = VsCoverage::kKernelTiles;
  bool return_lse = false;  // minference_attention fills AttentionResult::lse ((B, Hq, Nq) float32, HND)
  // Equal-sparsity mode (a budget ratio), in [0, 1): every vertical-slash head's vertical_size and slash_size
  // are scaled by one common ratio r (llround(size * r), then the usual floors 30 / 50 and cap Nk), r
  // searched per call in (0, r_max] (r_max: every non-zero budget reaches Nk) so that the token-level
  // sparsity of the vertical-slash heads, 1 - computed pairs / causal pairs under `coverage`, comes closest
  // to the target: doubling or halving from r = budget_ratio until the target is bracketed, then bisection
  // (at most 20 steps, stopping within 1e-3; a step costs O(r) as the budgets grow with r). The estimate runs
  // once: each step re-selects from its stored column and diagonal scores, builds the index and counts its
  // pairs (vertical_slash_index_pairs; kExactTokens counts the token mask in row chunks, O(Nq Nk) per step).
  // A-shape and block-sparse heads keep their budgets. Unset: the budgets scaled by budget_ratio.
  std::optional<double> target_sparsity;
  // The common budget scale without target_sparsity (1: the budgets as given); the ratio a target_sparsity
  // call chose (VerticalSlash::budget_ratio) reproduces its selection here without the search. > 0.
  double budget_ratio = 1.0;
};

// "vertical_slash" | "vertical_and_slash" -> kVerticalSlash; "a_shape" | "stream_llm" -> kAShape;
// "block_sparse" -> kBlockSparse.
MInferenceHead::Pattern parse_minference_pattern(std::string_view name);
std::string_view to_string(MInferenceHead::Pattern p);  // "vertical_slash" | "a_shape" | "block_sparse"
std::string_view to_string(VsCoverage c);               // "kernel_tiles" | "exact_tokens"

// The head the original uses for a head missing from its config: vertical-slash (1000, 6096).
MInferenceHead minference_fallback_head();
// Llama-3.1-8B-Instruct default (MInference v2 config): vertical-slash (512, 2048) for every head.
MInferenceConfig minference_llama31_default();

// Loads MInference's JSON config: a list over layers of {"<head index>": [pattern, vertical_size,
// slash_size, score], ...}, e.g. [{"0": ["vertical_and_slash", 1000, 6096, 0.9]}]. Pattern names:
// "vertical_and_slash" (vertical_size, slash_size), "stream_llm" (A-shape with n_init = vertical_size,
// n_local = slash_size, as the original passes them to streaming_forward), "block_sparse" (top 100 blocks;
// the original ignores both sizes); the aliases of parse_minference_pattern are accepted too. The score is a
// number and is ignored. Per layer, heads missing from the dict get minference_fallback_head(); the head list
// has num_heads entries when given (an index >= num_heads is an error), else max index + 1 (a single
// fallback entry for an empty dict). Layers beyond the file's length use the fallback too in the original
// (not represented here: the caller knows the model's layer count). Errors name the file, the layer and the
// head.
std::vector<MInferenceConfig> load_minference_config(const std::string& json_path,
                                                     std::optional<int64_t> num_heads = std::nullopt);

// The vertical-slash estimate: per (batch, query head), sorted index lists padded with -1.
struct VerticalSlash {
  int64_t seq_q = 0, seq_k = 0;
  at::Tensor vertical;        // (B, Hq, Vmax) int64: selected key indices ascending, then -1
  at::Tensor vertical_count;  // (B, Hq) int64: v of the head
  at::Tensor slash;           // (B, Hq, Smax) int64: selected offsets (diag(i) - key) ascending, then -1
  at::Tensor slash_count;     // (B, Hq) int64: s of the head
  double budget_ratio = 1.0;  // the common budget scale r: the one target_sparsity chose, else config's
};

// The estimate above for every query head (with each head's vertical_size / slash_size, whatever its
// pattern; with config.target_sparsity the ratio is bisected over all these heads). Any Nq >= 1
// (minference_attention never calls it for decode, Nq == 1, which is dense). Outputs live on q's device.
VerticalSlash minference_vertical_slash(const at::Tensor& q, const at::Tensor& k,
                                        const MInferenceConfig& config);

// The budget ratio minference_attention runs with: with config.target_sparsity, the one its search selects
// over the vertical-slash heads (as minference_attention does); else, or without vertical-slash heads or for
// decode (Nq == 1), config.budget_ratio. A config with this ratio and no target gives the same attention
// without the search.
double minference_budget_ratio(const at::Tensor& q, const at::Tensor& k, const MInferenceConfig& config);

// MInference's kernel index (csrc/vertical_slash_index.cu, BLOCK_M = BLOCK_N = 64), per (b, h, query block
// m) with rows [64m, 64m + 64) and E = 64m + 64 + Nk - Nq (the diagonal key after the block's last row):
//   offsets o < E, from the largest to the smallest, give range ends e = max(E - o, 64); the first e opens
//   the range [e - 64, e); a later e > end + 64 closes it and opens [e - 64, e); a later e in (end, end + 64]
//   extends the range by exactly 64 keys (end += 64, which may run past e); otherwise e is inside it.
//   block_offset = the first key of each 64-key tile of the ranges (ascending; not 64-aligned), block_count
//   their number (<= s); column_index = the vertical keys below the last range's end that lie in no range
//   (ascending), column_count their number. Keys >= Nk of a tile are masked by causality.
// The kernel then runs loop 1 over the tiles with the causal mask and loop 2 over the columns in chunks of
// 64 without one: every column lies below the block's first diagonal key because the diagonal (offset 0)
// is selected, which this function requires of every (b, h) (the estimate guarantees it).
// Padding is -1 (the original zero-fills; only the counts are read). Computed on the CPU (sequential index
// bookkeeping, after validating the lists), returned on the device of vs; cuda::vertical_slash_index
// (sparge/cuda_minference.h) computes the same tensors on the GPU.
struct VerticalSlashIndex {
  static constexpr int64_t kBlockM = 64, kBlockN = 64;
  int64_t seq_q = 0, seq_k = 0;
  at::Tensor block_count;   // (B, Hq, NQB) int32, NQB = ceil(Nq / 64)
  at::Tensor block_offset;  // (B, Hq, NQB, Smax) int32
  at::Tensor column_count;  // (B, Hq, NQB) int32
  at::Tensor column_index;  // (B, Hq, NQB, Vmax) int32
};
VerticalSlashIndex vertical_slash_index(const VerticalSlash& vs);

// The index contract that vertical_slash_index satisfies and the attention kernels rely on (checked by
// vertical_slash_index_pairs / _stats here and by cuda::vertical_slash_attention on the device):
//   0 <= block_count <= Smax, 0 <= column_count <= Vmax;
//   every listed tile start t in [0, Nk + 64) (a tile may reach past Nk: those keys are masked);
//   every listed column c in [0, 64m + Nk - Nq], i.e. at or below the block's first diagonal key, so that
//   loop 2 needs no causal mask (vertical_slash_index gives c < 64m + Nk - Nq).
// Tiles of one block do not overlap and no column lies in a tile (vertical_slash_index guarantees it; the
// counts below and the attention count a repeated key twice, as the original kernel would compute it twice).
//
// Computed (query, key) pairs of the index form without the token mask: per 64-row block, the causal pairs of
// each tile (a closed form over the block's rows) plus column_count x the block's rows < Nq; O(tiles +
// columns): a CPU index on the host, a CUDA index with tensor ops on its device (no host copy of the lists;
// on a contract violation the host check runs and names it). Equals vertical_slash_token_mask(vs,
// kKernelTiles).sum() for index = vertical_slash_index(vs).
int64_t vertical_slash_index_pairs(const VerticalSlashIndex& index);
// The statistics vertical_slash_index_attention reports (block sizes 64, valid and computed pairs and 64x64
// blocks; times 0), from the index alone, in the same pass.
AttentionStats vertical_slash_index_stats(const VerticalSlashIndex& index);

// (B, Hq, Nq, Nk) bool on vs's device: the keys each query row computes under `coverage` (causal applied).
// For tests and small problems (the attention builds it per chunk of rows).
at::Tensor vertical_slash_token_mask(const VerticalSlash& vs, VsCoverage coverage);

// Attention computed from the index form, as the kernel does: online softmax per 64-row query block over
// loop 1 (the slash tiles, causal mask) then loop 2 (the gathered columns, 64 at a time). Uses config.scale,
// layout and return_lse; stats as above (prediction_ms = 0). Rows that compute no key give out = 0, lse =
// -inf.
AttentionResult vertical_slash_index_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               const VerticalSlashIndex& index,
                                               const MInferenceConfig& config);

// The block-sparse pattern's mask for every query head (with each head's top_blocks, whatever its pattern):
// (B, Hq, NQB, NKB), blocks 64x64, only causal-valid blocks.
BlockMask minference_block_sparse_mask(const at::Tensor& q, const at::Tensor& k,
                                       const MInferenceConfig& config);

// (B, Hq, Nq, Nk) bool: the keys each query row computes under `config` (each head its own pattern; all
// causal keys when Nq == 1). minference_attention equals dense attention restricted to this mask.
at::Tensor minference_token_mask(const at::Tensor& q, const at::Tensor& k, const MInferenceConfig& config);

// Attention of vertical-slash heads from their index form, e.g. cuda::vertical_slash_attention (the hook by
// which a kernel library serves minference_attention; sparge_core itself has no CUDA code). Called with
//   q: (B, Hs, Nq, D), k, v: (B, Hs or Hkv, Nk, D) HND, in the input dtype (Hs: the vertical-slash heads;
//   GQA kept when every head is vertical-slash), the index of those heads, and a config with layout kHND,
//   scale resolved, return_lse true;
// it returns out (B, Hs, Nq, D) HND and lse (B, Hs, Nq) float32 as vertical_slash_index_attention defines
// them. Its stats are ignored: minference_attention counts from the index and times the call.
using VsIndexAttention =
    std::function<AttentionResult(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const VerticalSlashIndex& index, const MInferenceConfig& config)>;

// Builds the index of an estimate as vertical_slash_index does (the same tensors), e.g.
// cuda::vertical_slash_index on the device: the hook by which a kernel library replaces the host loop. Called
// with the estimate of the vertical-slash heads (on the inputs' device); returns their index on that device.
using VsIndexBuilder = std::function<VerticalSlashIndex(const VerticalSlash& vs)>;

// minference_budget_ratio above with the search's indexes built by `vs_index_builder` (empty: the host
// vertical_slash_index); cuda::minference_budget_ratio passes cuda::vertical_slash_index. The same ratio.
double minference_budget_ratio(const at::Tensor& q, const at::Tensor& k, const MInferenceConfig& config,
                               const VsIndexBuilder& vs_index_builder);

// The whole MInference prefill call: per head its pattern; vertical-slash and A-shape heads by a masked
// softmax over query-row chunks (bounded memory), block-sparse heads by block_sparse_attention. With
// `vs_index_attention` (and coverage kKernelTiles) the vertical-slash heads run through it on their index
// instead (cuda::minference_attention passes the CUDA kernel); that index comes from `vs_index_builder` when
// given (cuda::minference_attention passes cuda::vertical_slash_index), else from vertical_slash_index;
// the equal-sparsity search (config.target_sparsity) builds its indexes the same way and hands over the one
// it selected. `vs_index_builder` is used only together with `vs_index_attention` (the masked path keeps the
// host index).
AttentionResult minference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const MInferenceConfig& config,
                                     const VsIndexAttention& vs_index_attention = {},
                                     const VsIndexBuilder& vs_index_builder = {});

}  // namespace sparge
