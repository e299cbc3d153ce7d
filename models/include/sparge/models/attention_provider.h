// How a model computes attention: the one call a model makes where the reference implementation calls SDPA.
// Models never hard-wire a method; the runner passes a provider that picks the method (and its per-head
// parameters) for each layer, and records the statistics.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace sparge::models {

struct AttentionCall {
  int64_t layer = 0;
  bool causal = true;   // bottom-right aligned when Nq < Nk (query i sees keys 0 .. Nk - Nq + i)
  bool prefill = true;  // false for single-token decode steps (methods of the paper apply to prefill)
  double scale = 0.0;   // softmax scale (the model's; 1/sqrt(D) for Llama)
};

class AttentionProvider {
 public:
  virtual ~AttentionProvider() = default;
  // q: (B, Hq, Nq, D), k, v: (B, Hkv, Nk, D), Hq a multiple of Hkv (GQA), HND, contiguous in D.
  // Returns o: (B, Hq, Nq, D) in q's dtype.
  virtual at::Tensor attend(const AttentionCall& call, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v) = 0;
};

// Dense attention through torch scaled_dot_product_attention (cuDNN / FlashAttention on a GPU, the math
// kernel on a CPU), GQA by repeating K/V heads, bottom-right causal alignment for Nq != Nk.
class SdpaAttention final : public AttentionProvider {
 public:
  at::Tensor attend(const AttentionCall& call, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) override;
};

// The same as SdpaAttention, as a free function for providers that fall back to dense attention.
at::Tensor sdpa_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                          double scale);

}  // namespace sparge::models
