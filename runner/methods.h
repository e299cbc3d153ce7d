// Attention methods by name: every way of computing attention that a spec can name, created from YAML
// parameters. Unknown parameters and bad values fail with the method id and key.
// clang-format off
//   type        what                                                            parameters (defaults)
//   dense       dense attention, float64 math (the accuracy oracle)             -
//   sdpa        torch scaled_dot_product_attention (cuDNN/flash on a GPU)       -
//   sparge      SpargeAttn: stage-1 prediction + block-sparse attention with    block_q 128, block_k 64, simthreshd1 0.6,
//               stage 2 (CUDA kernels on a GPU for fp16/bf16, D 64/128, 128x64  cdfthreshd 0.98, topk 0.5, select cdf|topk,
//               blocks; the LibTorch reference otherwise)                       pvthreshd inf, stage2_group_rows 32,
//                                                                               quant none|int8|int8_fp8, attention_sink,
//                                                                               keep_crossing, backend auto|reference|cuda
//               or with per-layer, per-head thresholds from `sparge tune`:      tuned PATH, backend, stage2 true
//   sage        quantized dense attention (SageAttention), reference emulation  block_q, block_k, quant
//   xattention  XAttention: antidiagonal scoring, threshold selection with      block 128, stride 8, threshold 0.9,
//               forced sink and diagonal blocks (mask on LibTorch ops; the      backend, target_sparsity (token level:
//               attention on the CUDA kernel on a GPU)                          the scores computed once per call, the
//                                                                               threshold bisected over the selection)*
//   flexprefill FlexPrefill: per head query-aware (pooled Q.K coverage) or      preset library|paper_llama31 (gamma 0.9 |
//               vertical-slash (last-block estimate) by a JS-divergence test;   0.95), block 128, gamma, tau 0.1, min_budget
//               dense under max(256, min_budget) tokens; non-causal or chunked  1024, max_budget (0: none), backend
//               (Nq != Nk) calls run dense                                      target_sparsity (one estimate per call,
//                                                                               gamma bisected over the selection)*
//   minference  MInference: vertical-slash heads (last-64-query estimate,       pattern vertical_slash|a_shape|block_sparse,
//               forced first 30 keys and 100 diagonals), A-shape or block-      vertical_size 512, slash_size 2048 (the
//               sparse heads; causal only; the vertical-slash heads on the      Llama-3.1-8B default), n_init 128, n_local
//               CUDA vertical-slash kernel on a GPU (fp16/bf16, D 64/128,       3968, top_blocks 100, coverage kernel_tiles|
//               coverage kernel_tiles), everything else on the LibTorch         exact_tokens, config (MInference JSON),
//               reference (any device)                                          backend, target_sparsity (token level: one
//                                                                               ratio scales every vertical_size and
//                                                                               slash_size, searched per call)*
// clang-format on
// *Equal sparsity: the knob is searched on each call's inputs by prepare() (below), which the engine does not
// time; the timed call is the method with that knob fixed, as it runs when deployed with a chosen knob.
// q: (B, Hq, Nq, D), k, v: (B, Hkv, Nk, D), HND.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sparge/reference.h"
#include "tuned_params.h"

namespace sparge::runner {

// A parameter value from a spec: the scalar's text (YAML scalars) or a list of them.
struct ParamValue {
  std::vector<std::string> items;
  bool is_list = false;
};
using Params = std::map<std::string, ParamValue>;

class AttentionMethod {
 public:
  virtual ~AttentionMethod() = default;
  // Runs attention; stats are filled where the method has them (dense methods: no sparsity). layer: the
  // model layer the call belongs to (-1 when unknown, e.g. synthetic inputs); methods with per-layer
  // parameters (sparge with `tuned:`) pick them by it.
  virtual AttentionResult run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                              int64_t layer) = 0;
  // Harness work on these inputs that is not part of the method (the equal-sparsity knob searches, marked *
  // above): the engine calls it untimed before it times run() on the same inputs. run() on the same q and k
  // (same storage, unmodified) and the same causal and layer reuses what prepare() found, until the next
  // prepare(); run() on other inputs does that work itself first.
  virtual void prepare(const at::Tensor& /*q*/, const at::Tensor& /*k*/, const at::Tensor& /*v*/,
                       bool /*causal*/, int64_t /*layer*/) {}
  // Which implementation ran last (e.g. "cuda kernels" or "reference"), for the results' provenance.
  virtual std::string backend() const = 0;
  // The tuned parameters a method runs with (sparge with `tuned:`), else null: the engine checks them against
  // the spec's model and keys its cache on their checksum.
  virtual const TunedParams* tuned() const { return nullptr; }
};

struct MethodInfo {
  std::string type, summary;
};
const std::vector<MethodInfo>& registered_methods();

// id: the method's key in the spec (named in errors).
std::unique_ptr<AttentionMethod> make_method(const std::string& id, const std::string& type,
                                             const Params& params);

}  // namespace sparge::runner
