// Language-model tasks: a Llama-family model (models::LlamaForCausalLM) whose prefill attention is the method
// under test, scored by the text evaluators of eval/. One unit of work (cached, resumable) is one sample:
//
//   task.name      one sample is                       metrics                                   task.params
//   perplexity     one sliding window of the stream    perplexity, word_perplexity,             corpus,
//   format (text|
//                                                      byte_perplexity, bits_per_byte           wikitext),
//                                                      seq_len,
//                                                                                                stride,
//                                                                                                max_tokens
//   niah           one (length, depth, round) trial    niah_score (0/1; heatmap files per        haystack,
//   lengths,
//                                                      method: heatmap_<point>_<method>.json,    depths,
//                                                      rounds, .csv)
//                                                                                                digits,
//                                                                                                max_new_tokens,
//                                                                                                chat
//   longbench      one example of the datasets         longbench_score (per dataset round(100    data_dir,
//   datasets,
//                                                      mean, 2), averaged over datasets)         max_length
//   infinitebench  one longbook_choice_eng example     infinitebench_accuracy                    path,
//   max_length,
//                                                                                                chat
// Every task also reports the prefill attention statistics summed over all attention calls of the samples:
// stage1_sparsity, stage2_skipped, pv_density, attention_ms and attention_tops (dense-equivalent throughput
// of the method's attention calls, the paper's Speed column), plus prefill_tokens. Common parameters:
// prefill_chunk (0: whole prompt at once), dense_layers (method parameter: layers that run dense attention).
//
// model: {family: llama, weights: PATH, dtype}; PATH may be ${ENV_VAR}: a GGUF file or a Hugging Face
// directory (config.json, tokenizer.json, model.safetensors[.index.json]). The model is loaded once per
// process.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "methods.h"

namespace sparge::models {
class LlamaForCausalLM;
class Tokenizer;
}  // namespace sparge::models

namespace sparge::runner {

// Whether task.name names a language-model task.
bool is_lm_task(const std::string& name);
// The LM metrics (registered in metrics.cpp under these names).
bool is_lm_metric(const std::string& name);
// Whether a task ("attention" or an LM task) computes `metric` (specs with several tasks skip the others).
bool metric_applies(const std::string& task, const std::string& metric);

struct LmModelSpec {
  std::string family = "llama", weights;
  at::ScalarType dtype = at::kBFloat16;
};

class LmTask {
 public:
  // Loads the model and tokenizer (cached per process) and the task's data; throws std::invalid_argument
  // naming the parameter, or the weights path and what is missing.
  LmTask(const std::string& name, const Params& params, const LmModelSpec& model, at::Device device,
         uint64_t seed);
  ~LmTask();

  int64_t num_samples() const;
  // A stable description of sample i for cache keys and logs ("window 3 [3072, 4096)", "niah 4096 x 50% r0").
  std::string sample_id(int64_t i) const;
  // Runs sample i with `method` on prefill attention (dense for decode and for dense_layers). Returns
  // {"metrics": {name: value}, "raw": {sums for ratio metrics}, "info": {...}}.
  nlohmann::json run(int64_t i, AttentionMethod& method, const std::set<int64_t>& dense_layers) const;
  // The final value of `metric` over a method's records; stderr (NaN where undefined) for mean-aggregated
  // ones.
  std::pair<double, double> reduce(const std::string& metric, const std::string& aggregation,
                                   const std::vector<nlohmann::json>& records) const;
  // Files beside results.json for one method (NIAH: heatmap_<name>.json and .csv).
  void write_artifacts(const std::string& dir, const std::string& method,
                       const std::vector<nlohmann::json>& records) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Q (after RoPE), K and V of the prefill of the first `seq` tokens of `corpus` (from token `offset`) at each
// of `layers`, captured through the model's hook (float32 forward, causal); one {q, k, v} per layer in
// `layers` order, HND on the CPU. The model is the process-wide cached one of `weights`.
struct CapturedQkv {
  at::Tensor q, k, v;
};
std::vector<CapturedQkv> capture_model_qkv(const std::string& weights, const std::string& corpus, int64_t seq,
                                           int64_t offset, const std::vector<int64_t>& layers);

// The general capture: one prefill of `seq` tokens per offset with `model` (its dtype) on `device`;
// windows[w] holds one {q, k, v} per entry of `layers` (all layers when empty), on `device`.
struct ModelCapture {
  std::vector<std::vector<CapturedQkv>> windows;
  std::vector<int64_t> layers;
  int64_t num_layers = 0, corpus_tokens = 0;
};
ModelCapture capture_model(const LmModelSpec& model, at::Device device, const std::string& corpus,
                           int64_t seq, const std::vector<int64_t>& offsets, std::vector<int64_t> layers);

// ${VAR} expansion of a path from a spec; `what` (e.g. model.weights) and the variable are named when it is
// unset.
std::string expand_env(const std::string& spec_value, const std::string& what);
std::string resolve_weights_path(const std::string& spec_value);  // find_path(expand_env(v, "model.weights"))
// A path from a spec: as given, else relative to the source tree when it exists there (specs name data/...
// from the repository root).
std::string find_path(const std::string& p);

}  // namespace sparge::runner
