// The attention-level task: inputs (Q, K, V) for each sample, from a named generator.
//
//   inputs            parameters (task.params; defaults)
//   structured_llm    batch 1, heads 8, kv_heads heads, seq 2048, head_dim 64, causal false, window 256,
//                     sharpness 6, noise 0.3, sink_tokens 16, sink_strength 4: a smooth latent shared by Q
//                     and K along the sequence (local attention) plus an attention sink
//                     (sparge::structured_qkv)
//   structured_visual batch 1, heads 8, head_dim 64, grid [T, H, W] = [8, 24, 40], waves 4, frequency 0.25,
//                     noise 0.3, order row_major (any token order: row_major, column_major, time_major,
//                     random, hilbert), text_tokens 0, amplitude 1: Q and K share a spatially smooth random
//                     field over the (T, H, W) grid (visual latents are locally correlated), tokens laid out
//                     in `order`, after text_tokens unstructured text tokens (joint attention); Q and K are
//                     scaled by amplitude (larger: more peaked attention); never causal
//   random            batch, heads, kv_heads, seq, head_dim, causal: independent standard normal Q, K, V
//   captured          Q/K/V stored as safetensors (path; q/k/v, or q.i/k.i/v.i for sample i), causal
//   model             Q/K/V of a language model's prefill on real text, captured through its hook: weights
//                     (default the SmolLM2 GGUF), corpus (default the Jargon File), seq 2048, offset 0,
//                     layers [0]; sample i is layer layers[i]; always causal
// Tensors are HND in the task's dtype on the task's device; every sample has its own seed (spec seed, index).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "lm_task.h"
#include "methods.h"

namespace sparge::runner {

struct AttentionSample {
  at::Tensor q, k, v;
  bool causal = false;
  int64_t layer = -1;  // the model layer the inputs come from (inputs: model), else -1
};

class AttentionTask {
 public:
  // Throws std::invalid_argument naming the parameter on bad input.
  AttentionTask(std::string inputs, const Params& params, at::ScalarType dtype, at::Device device);
  AttentionSample sample(int64_t index, uint64_t seed) const;

 private:
  std::string inputs_;
  at::ScalarType dtype_;
  at::Device device_;
  int64_t batch_ = 1, heads_ = 8, kv_heads_ = 8, seq_ = 2048, head_dim_ = 64;
  bool causal_ = false;
  double window_ = 256, sharpness_ = 6, noise_ = 0.3, sink_tokens_ = 16, sink_strength_ = 4;
  int64_t grid_t_ = 8, grid_h_ = 24, grid_w_ = 40, waves_ = 4, text_tokens_ = 0;
  double frequency_ = 0.25, amplitude_ = 1.0;
  std::string order_ = "row_major";
  std::string path_;              // captured inputs
  std::string weights_, corpus_;  // model inputs
  int64_t offset_ = 0;
  std::vector<int64_t> layers_;
  mutable std::vector<CapturedQkv> captured_;  // captured on the first sample
};

}  // namespace sparge::runner
