// Attention methods by name: every way of computing attention that a spec can name, created from YAML
// parameters.
//
//   type        what                                                                  parameters
//   dense       dense attention, float64 math (the accuracy oracle)                   -
//   sdpa        torch scaled_dot_product_attention (cuDNN/flash on a GPU)             -
//   sparge      SpargeAttn: stage-1 prediction + block-sparse attention with stage 2   block_q, block_k,
//   simthreshd1,
//               (CUDA kernels on a GPU for fp16/bf16, D 64/128, quant none;            cdfthreshd, topk,
//               select the LibTorch reference otherwise)                                      (cdf|topk),
//               pvthreshd,
//                                                                                      stage2_group_rows,
//                                                                                      quant
//                                                                                      (none|int8|int8_fp8),
//                                                                                      attention_sink,
//                                                                                      keep_crossing, backend
//                                                                                      (auto|reference|cuda)
//   sage        quantized dense attention (SageAttention: all blocks, INT8 Q.K, FP8    block_q, block_k,
//   quant
//               or 16-bit P.V), reference emulation
// q: (B, Hq, Nq, D), k, v: (B, Hkv, Nk, D), HND. Unknown parameters and bad values fail with the method id
// and key.
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
