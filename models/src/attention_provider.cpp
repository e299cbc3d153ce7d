// Dense attention for models (see attention_provider.h).
#include "sparge/models/attention_provider.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace sparge::models {

at::Tensor sdpa_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                          double scale) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    throw std::invalid_argument("sdpa_attention: q, k, v must be (B, H, N, D)");
  const int64_t nq = q.size(2), nk = k.size(2);
  if (q.size(1) % k.size(1) != 0)
    throw std::invalid_argument("sdpa_attention: query heads " + std::to_string(q.size(1)) +
                                " are not a multiple of key/value heads " + std::to_string(k.size(1)));
  if (nq > nk)
    throw std::invalid_argument("sdpa_attention: more queries than keys (" + std::to_string(nq) + " > " +
                                std::to_string(nk) + ")");
  std::optional<at::Tensor> mask;
  bool is_causal = false;
  if (causal && nq == nk) {
    is_causal = true;
  } else if (causal && nq > 1) {
    // Bottom-right alignment: query i sees keys 0 .. nk - nq + i.
    const auto opts = q.options().dtype(at::kLong);
    mask = at::arange(nk, opts).unsqueeze(0) <= (at::arange(nq, opts) + (nk - nq)).unsqueeze(1);
  }
  // A single query at the end sees every key: no mask.
  const bool gqa = q.size(1) != k.size(1);
  return at::scaled_dot_product_attention(q, k, v, mask, 0.0, is_causal,
                                          scale > 0 ? std::optional<double>(scale) : std::nullopt, gqa);
}

at::Tensor SdpaAttention::attend(const AttentionCall& call, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v) {
  return sdpa_attention(q, k, v, call.causal, call.scale);
}

}  // namespace sparge::models
