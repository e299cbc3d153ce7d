// SpargeAttn configuration: the parameters of one attention call (no torch types here).
//
// Units and conventions (see README "Algorithm contract"):
//   - thresholds are per query head: a vector of size 1 broadcasts, size Hq gives one value per head;
//   - simthreshd1 (theta) in [-1, 1]: a block is self-similar iff its mean pairwise cosine similarity >
//   theta;
//   - cdfthreshd (tau) in [0, 1]: top-p selection on the softmax of the compressed scores;
//   - topk in [0, 1]: fraction of the causal-valid key blocks of a row to keep (used when select == kTopk);
//   - pvthreshd > 0 (lambda = -pvthreshd), in log2 units of the scaled scores (s * scale * log2(e)), as in
//   the
//     kernels that use exp2: a computed block is skipped by stage 2 iff for every row of a group
//     rowmax(S_block) - m_prev < -pvthreshd. +infinity disables stage 2.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <vector>

namespace sparge {

enum class Layout { kHND, kNHD };  // (B, H, N, D) or (B, N, H, D)

enum class SelectMode { kCdf, kTopk };

// Precision of the attention math.
//   kNone:    no quantization (float32 math; float64 for float64 inputs);
//   kInt8:    INT8 per-block Q and smoothed K, P.V in the input's 16-bit type (fp16 -> fp16, bf16 -> bf16);
//   kInt8Fp8: INT8 per-block Q and smoothed K, P.V in FP8 e4m3 with per-channel V scales (SageAttention2).
enum class QuantMode { kNone, kInt8, kInt8Fp8 };

inline constexpr double kNoStage2 = std::numeric_limits<double>::infinity();

struct SpargeConfig {
  int64_t block_q = 128;        // query block size of the mask (and of Q quantization)
  int64_t block_k = 64;         // key block size of the mask (and of K quantization)
  bool causal = false;          // bottom-right aligned when Nq != Nk
  std::optional<double> scale;  // softmax scale; default 1/sqrt(D)
  Layout layout = Layout::kHND;

  // Stage 1: block-mask prediction.
  SelectMode select = SelectMode::kCdf;
  std::vector<double> simthreshd1 = {0.6};
  std::vector<double> cdfthreshd = {0.98};
  std::vector<double> topk = {0.5};
  // The reference implementation keeps the sorted prefix whose cumulative sum stays <= tau (the block that
  // crosses tau is dropped). true keeps the crossing block too, so that the kept mass is >= tau (nucleus
  // semantics).
  bool cdf_keep_crossing = false;
  bool attention_sink = false;  // key block 0 always computed

  // Stage 2: the sparse online-softmax filter.
  std::vector<double> pvthreshd = {kNoStage2};
  // Rows per stage-2 decision: 0 = the whole query block (CTA granularity); g > 0 = groups of g rows (one
  // warp's rows in a kernel; must divide block_q).
  int64_t stage2_group_rows = 0;

  QuantMode quant = QuantMode::kNone;
  bool return_lse = false;

  int64_t stage2_rows() const { return stage2_group_rows > 0 ? stage2_group_rows : block_q; }
};

std::string_view to_string(Layout v);
std::string_view to_string(SelectMode v);
std::string_view to_string(QuantMode v);
Layout parse_layout(std::string_view name);           // "HND" | "NHD"
SelectMode parse_select_mode(std::string_view name);  // "cdf" | "topk"
QuantMode parse_quant_mode(std::string_view name);    // "none" | "int8" | "int8_fp8"

}  // namespace sparge
