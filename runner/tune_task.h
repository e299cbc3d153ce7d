// `sparge tune <spec.yaml>`: tunes SpargeAttn's per-layer, per-head thresholds on calibration inputs and
// writes the tuned-parameter file (tuned_params.h) that run specs load with a `sparge` method's `tuned:
// PATH`.
//
// A tune spec has a `tune:` section instead of methods/metrics:
//   metadata: {name, version, description?}
//   model: {family: llama, weights, dtype}          calibration from text: the model's prefill of corpus
//   windows task: {name: attention, inputs, samples, params} or calibration from an attention task's inputs
//   (no model):
//                                                   its samples are the calibration inputs of one layer
//                                                   (layer 0; inputs: model gives each sample its model
//                                                   layer)
//   tune:
//     l1: 0.08                                      stage-1 bound (theta, tau); relative L1 vs float64 dense
//     l2: 0.09                                      stage-1 + stage-2 bound (pvthreshd)
//     method: {block_q: 128, block_k: 64, quant: none, stage2_group_rows: 32, attention_sink: false,
//              keep_crossing: false, backend: auto}  the fixed part of the configuration (the defaults shown)
//     calibration: {corpus: data/corpus/jargon.txt, seq_len: 1024, samples: 2, offset: 0, stride: seq_len}
//                                                   the text windows (model calibration only)
//     search: {dense_below: 0.1, tau_steps: 8, lambda_steps: 8, lambda_max: 50}   TuneTargets
//     layers: [0, 1, ...]                           default: every layer of the model
//   device: auto | cpu | cuda
//   output: results/tuned/NAME.json                 the parameter file (default results/tuned/<name>.json)
//
// Candidates run on the CUDA kernels (predict_block_mask + block_sparse_attention) on a GPU for fp16/bf16
// with 128 x 64 blocks and D 64/128 (backend auto or cuda), on the LibTorch reference otherwise. The file is
// rewritten after every layer: a killed tune resumes with the layers it has (same model, targets,
// calibration and configuration; otherwise it refuses unless restart is set). One progress line per layer
// on stderr.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sparge/tune.h"

namespace sparge::runner {

struct TuneOptions {
  std::vector<std::string> overrides;  // "path.to.key=value"
  std::string device;                  // "" (the spec's), cpu, cuda or auto
  std::string output;                  // "" (the spec's output)
  bool progress = true;                // one line per layer on stderr
  bool restart = false;                // ignore (overwrite) an existing file with other settings
};

struct TuneSummary {
  std::string output, backend;
  int64_t layers = 0, tuned = 0, resumed = 0;  // requested, tuned now, taken from the existing file
  double seconds = 0.0;                        // wall clock of this invocation (capture included)
  double tune_seconds = 0.0;                   // sum of the per-layer tuning times of this invocation
  bool interrupted = false;
};

// The tuner's evaluation pass for inputs like (q, k, v) under `config`: the CUDA kernels (fused prediction +
// block-sparse attention) when `backend` is auto or cuda and they support the case, else the LibTorch
// reference (backend cuda then throws, saying why). `chosen` names the one returned.
TunePass tune_pass_for(const std::string& backend, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, const SpargeConfig& config, std::string& chosen);

// Throws SpecError or std::invalid_argument (naming the key) on a bad spec before any work.
TuneSummary tune_spec(const std::string& path, const TuneOptions& options);

}  // namespace sparge::runner
