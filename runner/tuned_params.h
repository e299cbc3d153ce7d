// The tuned-parameter file: what `sparge tune` writes and what a `sparge` method loads with `tuned: PATH`.
//
// Human-readable JSON, one object:
//   format "sparge-tuned-params", version 1
//   model        {id, path, hash, family, dtype, layers, heads, kv_heads, head_dim}: what was tuned; hash is
//                model_hash() of the weights (checked when a run loads the file for a model)
//   targets      {l1, l2, dense_below, tau_steps, lambda_steps, lambda_max}: the bounds and search settings
//   calibration  {id, ...}: the calibration data (id names it: corpus file and content hash, windows)
//   config       {block_q, block_k, quant, stage2_group_rows, attention_sink, keep_crossing}: the fixed part
//                of the SpargeConfig the thresholds belong to
//   backend      "cuda kernels" or "reference (LibTorch)": what evaluated the candidates
//   layers       [{layer, seconds, passes, head_evals, heads: [{head, simthreshd1, cdfthreshd, pvthreshd
//                (null = stage 2 off), dense, sparsity, l1, l1_with_stage2}, ...]}, ...] in tuning order
//   complete     true once every requested layer is in `layers` (a killed tune leaves false; rerun resumes)
//   checksum     FNV-1a 64 of the canonical dump of `layers` (16 hex digits): a file whose values changed
//                without it is refused. To edit values by hand on purpose, delete the checksum field.
//   provenance   {git_hash, date, environment}
// Loading validates every field (ranges, one entry per head, unique layers) and throws std::invalid_argument
// naming the file and the field.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "sparge/config.h"
#include "sparge/tune.h"

namespace sparge::runner {

struct TunedLayer {
  int64_t layer = 0;
  std::vector<HeadParams> heads;
  double seconds = 0.0;
  int64_t passes = 0, head_evals = 0;
};

struct TunedParams {
  nlohmann::json model = nlohmann::json::object();        // id, path, hash, family, dtype, shapes
  nlohmann::json calibration = nlohmann::json::object();  // id and its parameters
  nlohmann::json provenance = nlohmann::json::object();
  TuneTargets targets;
  SpargeConfig config;  // block sizes, quant, stage2_group_rows, attention_sink, cdf_keep_crossing
  std::string backend;
  std::vector<TunedLayer> layers;
  bool complete = false;
  std::string checksum;  // of `layers` as loaded (tuned_from_json); keys run caches on the file's content

  const TunedLayer* find(int64_t layer) const;
  // `config` with layer's per-head thresholds (apply_tuned). Throws std::invalid_argument when the layer is
  // not in the file or has another number of heads than `heads_q` (> 0).
  SpargeConfig layer_config(int64_t layer, int64_t heads_q, const std::string& path) const;
};

nlohmann::json to_json(const TunedParams& p);  // with the checksum
TunedParams tuned_from_json(const nlohmann::json& j,
                            const std::string& path);  // validates; path for messages

// Atomic write (temporary file + rename): a killed tune leaves the previous complete file.
void save_tuned_params(const std::string& path, const TunedParams& p);
TunedParams load_tuned_params(const std::string& path);

// A content hash of model weights (a file, or the *.safetensors / *.gguf / *.bin files of a directory):
// "fnv1a64:" + 16 hex digits over each file's name, size, first and last 16 MiB. Fast for multi-GB
// checkpoints and different for any other checkpoint in practice.
std::string model_hash(const std::string& weights);

}  // namespace sparge::runner
