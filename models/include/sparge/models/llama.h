// LlamaForCausalLM on LibTorch: the Llama family of decoder-only models (Llama 2/3/3.1, SmolLM/SmolLM2,
// TinyLlama, Mistral without sliding window), loaded from a Hugging Face directory (config.json +
// safetensors, single or sharded) or from a GGUF file. Attention goes through an AttentionProvider (prefill:
// the configured method per layer; decode: whatever the provider does for prefill = false, dense in the
// runner).
//
// Numerics follow transformers' LlamaForCausalLM: RMSNorm in float32 then cast, RoPE tables computed in
// float32 and applied in the model dtype, SwiGLU MLP, logits in the model dtype.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "sparge/models/attention_provider.h"

namespace sparge::models {

class GgufFile;

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;          // llama3
  double high_freq_factor = 4.0;         // llama3
  int64_t original_max_position = 8192;  // llama3
};

struct LlamaConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_heads unless given
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  // RoPE on adjacent pairs (GGUF's stored Q/K row order) instead of rotate-half; the loader sets it only when
  // asked to keep GGUF rows as stored.
  bool rope_interleaved = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;

  // transformers' config.json of a LlamaForCausalLM (model_type llama/mistral; errors name the field).
  static LlamaConfig from_hf_json(const std::string& path);
  // llama.cpp's metadata of a GGUF file with general.architecture = llama.
  static LlamaConfig from_gguf(const GgufFile& file);
  // Checks every field (positive sizes, heads divide, ...); throws std::invalid_argument naming the field.
  void validate() const;
};

// Inverse frequencies of RoPE (head_dim / 2 values, float32), after rope scaling.
at::Tensor rope_inv_freq(const LlamaConfig& config);

struct KvCache {
  std::vector<at::Tensor> k, v;  // per layer: (B, Hkv, capacity, D)
  int64_t length = 0;            // filled positions
  int64_t capacity() const { return k.empty() ? 0 : k[0].size(2); }
};

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;  // compute dtype (bf16/fp16/fp32)
  at::Device device = at::kCPU;
  // GGUF: keep Q/K rows as stored (interleaved pairs) and use interleaved RoPE instead of undoing the
  // converter's permutation. Same logits either way; captured Q/K then differ from transformers' by a
  // permutation of D.
  bool gguf_keep_interleaved = false;
};

// Per-layer Q (after RoPE), K and V (the whole cache up to this step, after RoPE) of prefill calls:
// q: (B, Hq, Nq, D), k, v: (B, Hkv, Nk, D).
using CaptureHook =
    std::function<void(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v)>;

class LlamaForCausalLM {
 public:
  // path: a GGUF file, a Hugging Face directory (config.json + model.safetensors[.index.json]), or a
  // safetensors file / index with config.json beside it.
  static LlamaForCausalLM load(const std::string& path, const LoadOptions& options = {});

  const LlamaConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }

  KvCache make_cache(int64_t batch, int64_t capacity) const;

  // ids: (B, N) int64 on any device; appends N positions to `cache` (which must have room) and returns the
  // final normed hidden states (B, N, hidden). Attention of every layer goes through `attention` with prefill
  // = N > 1.
  at::Tensor forward(const at::Tensor& ids, KvCache& cache, AttentionProvider& attention) const;
  // hidden: (..., hidden) -> logits (..., vocab) in the model dtype.
  at::Tensor logits(const at::Tensor& hidden) const;
  // Negative log-likelihood (float64 sums are the caller's) of targets given hidden states, computed in
  // float32 chunks of rows so the (N, vocab) logits never exist at once: hidden (N, hidden), targets (N,) ->
  // (N,) float32.
  at::Tensor token_nll(const at::Tensor& hidden, const at::Tensor& targets, int64_t chunk_rows = 1024) const;

  // Prefill of ids (B, N) in chunks of `chunk` positions (0 = one call), returning the logits of the last
  // position (B, vocab).
  at::Tensor prefill(const at::Tensor& ids, KvCache& cache, AttentionProvider& attention,
                     int64_t chunk = 0) const;
  // Greedy decoding: prefill `prompt` (a single sequence) then append argmax tokens until an EOS id of the
  // config, an id of `stop_ids` after the first new token (LongBench's samsum stops at "\n" with min_length +
  // 1), or max_new_tokens; returns the new tokens (the stopping id not included).
  std::vector<int64_t> generate_greedy(const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                                       AttentionProvider& attention, int64_t prefill_chunk = 0,
                                       const std::vector<int64_t>& stop_ids = {}) const;

  void set_capture_hook(CaptureHook hook) { capture_ = std::move(hook); }

  // Named weights (transformers' names, e.g. model.layers.0.self_attn.q_proj.weight) for tests.
  at::Tensor weight(const std::string& hf_name) const;

 private:
  struct Layer {
    at::Tensor attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, mlp_norm, w_gate, w_up, w_down, b_gate, b_up,
        b_down;
  };
  LlamaConfig config_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  at::Tensor embed_, norm_, lm_head_, inv_freq_;
  std::vector<Layer> layers_;
  CaptureHook capture_;

  at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;
};

}  // namespace sparge::models
