// `sparge tune` (see tune_task.h).
#include "tune_task.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "attention_task.h"
#include "common.h"
#include "lm_task.h"
#include "params.h"
#include "posix_fs.h"
#include "sparge/tune.h"
#include "spec.h"
#include "tuned_params.h"
#if SPARGE_HAVE_CUDA
#include "sparge/cuda_attention.h"
#include "sparge/cuda_predict.h"
#endif

namespace sparge::runner {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string hex8(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08llx", static_cast<unsigned long long>(h & 0xffffffffULL));
  return buf;
}

std::string base_name(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// One layer's calibration inputs.
struct LayerInputs {
  int64_t layer = 0;
  std::vector<QkvSample> inputs;
  bool causal = false;
};

#if SPARGE_HAVE_CUDA
// The tuner's evaluation pass on the CUDA kernels: the fused predictor (with the INT8 operands when the
// configuration quantizes) and the block-sparse kernel.
PassResult cuda_pass(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const SpargeConfig& c) {
  const bool quant = c.quant != QuantMode::kNone;
  auto pred = cuda::predict_block_mask(q, k, c, quant);
  cuda::KernelOptions o;
  o.check_mask = false;
  cuda::set_int8_operands(o, pred);
  PassResult r;
  r.out = cuda::block_sparse_attention(q, k, v, pred.mask, c, o).out;
  r.mask = std::move(pred.mask);
  return r;
}
#endif

// The pass for these inputs (tune_pass_for on the first calibration input).
TunePass choose_pass(const std::string& backend, const LayerInputs& x, const SpargeConfig& base,
                     std::string& chosen) {
  SpargeConfig c = base;
  c.causal = x.causal;
  const auto& s = x.inputs.front();
  return tune_pass_for(backend, s.q, s.k, s.v, c, chosen);
}

// The model entry is compared on the spec's keys (the file adds the shapes it saw).
std::string resume_mismatch(const json& prev, const json& now) {
  for (const auto& [key, value] : now["model"].items())
    if (!prev["model"].contains(key) || prev["model"][key] != value)
      return "model." + key + " differs (file: " + prev["model"].value(key, json()).dump() +
             ", spec: " + value.dump() + ")";
  for (const char* key : {"targets", "calibration", "config"})
    if (prev[key] != now[key])
      return std::string(key) + " differs (file: " + prev[key].dump() + ", spec: " + now[key].dump() + ")";
  return "";
}

std::string fixed(double x, int digits) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(digits);
  s << x;
  return s.str();
}

}  // namespace

TunePass tune_pass_for(const std::string& backend, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, const SpargeConfig& config, std::string& chosen) {
  std::string why = "a CPU device or a build without CUDA";
#if SPARGE_HAVE_CUDA
  if (backend != "reference" && q.is_cuda()) {
    why = config.block_q == cuda::kBlockQ && config.block_k == cuda::kBlockK
              ? cuda::unsupported_reason(q, k, v, config)
              : "block sizes are not 128 x 64";
    if (why.empty()) {
      chosen = "cuda kernels";
      return cuda_pass;
    }
  }
#else
  (void)q, (void)k, (void)v, (void)config;
#endif
  if (backend == "cuda")
    throw std::invalid_argument("tune.method.backend: cuda cannot run these inputs (" + why + ")");
  chosen = "reference (LibTorch)";
  return reference_pass;
}

TuneSummary tune_spec(const std::string& path, const TuneOptions& options) {
  clear_stop();
  const auto t0 = Clock::now();
  auto spec = load_spec(path);
  for (const auto& o : options.overrides) apply_override(spec, o);
  const YAML::Node& root = spec.root;
  if (!root["tune"])
    throw std::invalid_argument(path +
                                ": no tune: section (`sparge tune` takes a tune spec, `sparge run` an "
                                "experiment spec)");
  const auto name = root["metadata"]["name"].as<std::string>();
  const auto device = resolve_device(!options.device.empty() ? options.device
                                     : root["device"]        ? root["device"].as<std::string>()
                                                             : "auto");
  const auto tn = root["tune"];

  // Targets, search settings and the fixed configuration: every key read, unknown ones refused.
  TuneTargets targets;
  targets.l1 = tn["l1"].as<double>();
  targets.l2 = tn["l2"].as<double>();
  if (targets.l2 < targets.l1)
    throw std::invalid_argument("tune.l2: expected a bound >= tune.l1 (" + std::to_string(targets.l1) +
                                "), got " + std::to_string(targets.l2));
  const auto search_params = to_params(tn["search"], {}), method_params = to_params(tn["method"], {}),
             calibration_params = to_params(tn["calibration"], {});  // ParamReader keeps a reference
  ParamReader sr("tune.search", search_params);
  targets.dense_below = sr.number("dense_below", 0.1);
  targets.tau_steps = static_cast<int>(sr.integer("tau_steps", 8, 1));
  targets.lambda_steps = static_cast<int>(sr.integer("lambda_steps", 8, 0));
  targets.lambda_max = sr.number("lambda_max", 50.0);
  sr.reject_unread();
  ParamReader mr("tune.method", method_params);
  SpargeConfig base;
  base.block_q = mr.integer("block_q", 128, 1);
  base.block_k = mr.integer("block_k", 64, 1);
  base.quant = parse_quant_mode(mr.text("quant", "none", {"none", "int8", "int8_fp8"}));
  base.stage2_group_rows = mr.integer("stage2_group_rows", 32, 0);
  base.attention_sink = mr.flag("attention_sink", false);
  base.cdf_keep_crossing = mr.flag("keep_crossing", false);
  base.select = SelectMode::kCdf;
  const auto backend = mr.text("backend", "auto", {"auto", "reference", "cuda"});
  mr.reject_unread();

  TuneSummary summary;
  summary.output = !options.output.empty() ? options.output
                   : root["output"]        ? root["output"].as<std::string>()
                                           : "results/tuned/" + name + ".json";
  const auto dtype = parse_dtype(
      root["model"] && root["model"]["dtype"] ? root["model"]["dtype"].as<std::string>() : "float32");

  // What is tuned and on what: the header of the file (and the resume check).
  TunedParams out;
  out.targets = targets;
  out.config = base;
  std::vector<int64_t> layers;
  // Calibration from a model (text) or from an attention task's inputs.
  LmModelSpec ms;
  std::string corpus;
  int64_t seq_len = 0;
  std::vector<int64_t> offsets;
  const bool from_task = static_cast<bool>(root["task"]);
  std::unique_ptr<AttentionTask> task;
  int64_t task_samples = 0;
  if (from_task) {
    const auto tk = root["task"];
    if (tk["name"].as<std::string>() != "attention" || !tk["inputs"])
      throw std::invalid_argument(
          "task: a tune spec's task must be the attention task with inputs (the "
          "calibration inputs); language models calibrate on tune.calibration text");
    if (tn["calibration"])
      throw std::invalid_argument(
          "tune.calibration: text windows apply to a model; this spec calibrates on "
          "its task's inputs (remove one of them)");
    task = std::make_unique<AttentionTask>(tk["inputs"].as<std::string>(), to_params(tk["params"], {}), dtype,
                                           device);
    task_samples = tk["samples"] ? tk["samples"].as<int64_t>() : 1;
    out.model = {{"id", "attention:" + tk["inputs"].as<std::string>()}, {"dtype", c10::toString(dtype)}};
    out.calibration = {
        {"id", "attention task " + hex8(fnv1a64(canonical_yaml(tk))) + " x " + std::to_string(task_samples)},
        {"task", canonical_yaml(tk)}};
  } else {
    const auto model = root["model"];
    ms.family = model && model["family"] ? model["family"].as<std::string>() : "llama";
    if (ms.family == "none") ms.family = "llama";
    ms.weights = model && model["weights"] ? model["weights"].as<std::string>() : "";
    if (ms.weights.empty())
      throw std::invalid_argument(
          "model.weights: a tune spec without a task calibrates a model: give its weights");
    ms.dtype = dtype;
    ParamReader cr("tune.calibration", calibration_params);
    corpus = cr.text("corpus", "data/corpus/jargon.txt");
    seq_len = cr.integer("seq_len", 1024, 2);
    const auto samples = cr.integer("samples", 2, 1);
    const auto offset = cr.integer("offset", 0, 0);
    const auto stride = cr.integer("stride", seq_len, 1);
    cr.reject_unread();
    for (int64_t i = 0; i < samples; ++i) offsets.push_back(offset + i * stride);
    const auto weights = resolve_weights_path(ms.weights);
    std::ifstream cf(find_path(expand_env(corpus, "tune.calibration.corpus")), std::ios::binary);
    if (!cf) throw std::invalid_argument("tune.calibration.corpus: cannot read " + corpus);
    std::stringstream text;
    text << cf.rdbuf();
    out.model = {{"id", base_name(weights)},
                 {"path", ms.weights},
                 {"hash", model_hash(weights)},
                 {"family", ms.family},
                 {"dtype", c10::toString(dtype)}};
    const auto corpus_hash = hex8(fnv1a64(text.str()));
    out.calibration = {{"id", base_name(corpus) + "#" + corpus_hash + " tokens " + std::to_string(offset) +
                                  "+" + std::to_string(seq_len) + " x " + std::to_string(samples) +
                                  " stride " + std::to_string(stride)},
                       {"corpus", corpus},
                       {"corpus_hash", corpus_hash},
                       {"seq_len", seq_len},
                       {"samples", samples},
                       {"offset", offset},
                       {"stride", stride}};
  }
  if (tn["layers"]) layers = tn["layers"].as<std::vector<int64_t>>();

  // Resume: keep the finished layers of a file with the same header.
  const json now = to_json(out);
  if (posix::exists(summary.output) && !options.restart) {
    TunedParams prev;
    try {
      prev = load_tuned_params(summary.output);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(e.what()) + " (delete it or pass --restart to tune anew)");
    }
    const auto why = resume_mismatch(to_json(prev), now);
    if (!why.empty())
      throw std::invalid_argument("output " + summary.output + " holds a tune with other settings: " + why +
                                  " (pass --restart to overwrite it, or --output another file)");
    out.layers = prev.layers;
    out.model = prev.model;
    out.backend = prev.backend;
    out.provenance = prev.provenance;
    out.complete = prev.complete;
  }

  // The calibration inputs of the layers still to tune.
  std::vector<LayerInputs> todo;
  const auto done = [&](int64_t l) { return out.find(l) != nullptr; };
  int64_t capture_ms = 0;
  {
    const auto c0 = Clock::now();
    if (from_task) {
      std::map<int64_t, LayerInputs> by_layer;
      for (int64_t i = 0; i < task_samples; ++i) {
        const auto s = task->sample(i, 0);
        const int64_t l = s.layer < 0 ? 0 : s.layer;
        auto& x = by_layer[l];
        x.layer = l;
        x.causal = s.causal;
        x.inputs.push_back({s.q, s.k, s.v});
      }
      if (!by_layer.empty()) {
        const auto& first = by_layer.begin()->second.inputs.front();
        out.model["heads"] = first.q.size(1);
        out.model["kv_heads"] = first.k.size(1);
        out.model["head_dim"] = first.q.size(3);
        out.model["seq"] = first.q.size(2);
      }
      for (auto& [l, x] : by_layer) {
        if (!layers.empty() && std::find(layers.begin(), layers.end(), l) == layers.end()) continue;
        summary.layers += 1;
        if (!done(l)) todo.push_back(std::move(x));
      }
    } else {
      if (layers.empty()) {
        // All layers: the model's count comes with its first capture (a one-layer capture of one window is
        // cheap next to tuning).
        const auto probe = capture_model(ms, device, corpus, seq_len, {offsets.front()}, {0});
        for (int64_t l = 0; l < probe.num_layers; ++l) layers.push_back(l);
      }
      summary.layers = static_cast<int64_t>(layers.size());
      std::vector<int64_t> need;
      for (auto l : layers)
        if (!done(l)) need.push_back(l);
      if (!need.empty()) {
        const auto cap = capture_model(ms, device, corpus, seq_len, offsets, need);
        for (size_t li = 0; li < need.size(); ++li) {
          LayerInputs x;
          x.layer = need[li];
          x.causal = true;
          for (const auto& w : cap.windows) x.inputs.push_back({w[li].q, w[li].k, w[li].v});
          todo.push_back(std::move(x));
        }
        const auto& q = cap.windows.front().front().q;
        const auto& k = cap.windows.front().front().k;
        out.model["layers"] = cap.num_layers;
        out.model["heads"] = q.size(1);
        out.model["kv_heads"] = k.size(1);
        out.model["head_dim"] = q.size(3);
      }
    }
    capture_ms = static_cast<int64_t>(std::chrono::duration<double, std::milli>(Clock::now() - c0).count());
  }
  summary.resumed = summary.layers - static_cast<int64_t>(todo.size());

  const auto prev_handler = std::signal(SIGINT, [](int) { request_stop(); });
  const auto finish = [&](bool complete) {
    out.complete = complete;
    out.provenance = {{"git_hash", git_hash()},
                      {"date", utc_now()},
                      {"environment", environment(device)},
                      {"spec", path},
                      {"capture_ms_last_run", capture_ms}};
    save_tuned_params(summary.output, out);
  };
  summary.backend = out.backend;  // the file's, when nothing is left to tune
  for (size_t i = 0; i < todo.size() && !stop_requested(); ++i) {
    auto& x = todo[i];
    SpargeConfig c = base;
    c.causal = x.causal;
    std::string chosen;
    const auto pass = choose_pass(backend, x, base, chosen);
    if (summary.backend != chosen) {
      summary.backend = chosen;
      // A resumed tune that finishes on another backend says so in the file.
      out.backend = out.backend.empty() || out.layers.empty() ? chosen : out.backend + " + " + chosen;
    }
    const auto r = tune_layer(x.inputs, c, targets, pass);
    x.inputs.clear();  // free this layer's captured tensors
    TunedLayer tl;
    tl.layer = x.layer;
    tl.heads = r.heads;
    tl.seconds = r.seconds;
    tl.passes = r.passes;
    tl.head_evals = r.head_evals;
    out.layers.push_back(tl);
    std::sort(out.layers.begin(), out.layers.end(),
              [](const TunedLayer& a, const TunedLayer& b) { return a.layer < b.layer; });
    summary.tuned += 1;
    summary.tune_seconds += r.seconds;
    const bool last = i + 1 == todo.size();
    finish(last);
    if (options.progress) {
      double sp = 0.0, l1 = 0.0, l2 = 0.0;
      int dense = 0;
      for (const auto& h : r.heads) {
        sp += h.sparsity / static_cast<double>(r.heads.size());
        l1 = std::max(l1, h.l1);
        l2 = std::max(l2, h.l1_with_stage2);
        dense += h.dense ? 1 : 0;
      }
      const double eta = summary.tune_seconds / static_cast<double>(summary.tuned) *
                         static_cast<double>(todo.size() - i - 1);
      std::fprintf(
          stderr,
          "[tune %s] layer %lld (%lld/%lld): %zu heads, %d dense, sparsity %s, max l1 %s (+stage 2 %s), "
          "%lld passes, %s s | ETA %s s\n",
          name.c_str(), static_cast<long long>(x.layer),
          static_cast<long long>(summary.resumed + summary.tuned), static_cast<long long>(summary.layers),
          r.heads.size(), dense, fixed(sp, 3).c_str(), fixed(l1, 4).c_str(), fixed(l2, 4).c_str(),
          static_cast<long long>(r.passes), fixed(r.seconds, 2).c_str(), fixed(eta, 0).c_str());
    }
  }
  summary.interrupted = stop_requested() && summary.resumed + summary.tuned < summary.layers;
  if (todo.empty() && !out.complete)
    finish(true);  // nothing left: mark the file complete (else leave it as is)
  std::signal(SIGINT, prev_handler);
  summary.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return summary;
}

}  // namespace sparge::runner
