// The method registry (see methods.h).
#include "methods.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <chrono>

#include <cmath>
#include <functional>
#include <optional>
#include <set>
#include <stdexcept>
#include <vector>

#include "lm_task.h"
#include "params.h"
#include "sparge/error.h"
#include "sparge/flexprefill.h"
#include "sparge/minference.h"
#include "sparge/models/attention_provider.h"
#include "sparge/xattention.h"
#if SPARGE_HAVE_CUDA
#include "sparge/cuda_attention.h"
#include "sparge/cuda_minference.h"
#include "sparge/cuda_predict.h"
#endif

namespace sparge::runner {
namespace {

// Wall-clock milliseconds of fn(), device-synchronized when `like` lives on a GPU.
template <typename Fn>
double timed_ms(const at::Tensor& like, Fn&& fn) {
  if (like.is_cuda()) torch::cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  if (like.is_cuda()) torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// The inputs a prepare() saw: q and k by storage, shape and version counter (an in-place write bumps it),
// causal and layer. Equal keys mean run() is called on what prepare() searched.
struct InputsKey {
  const void* q = nullptr;
  const void* k = nullptr;
  std::vector<int64_t> q_sizes, k_sizes;
  int64_t q_version = 0, k_version = 0;
  bool causal = false;
  int64_t layer = -1;
  static InputsKey of(const at::Tensor& q, const at::Tensor& k, bool causal, int64_t layer) {
    return {q.data_ptr(), k.data_ptr(), q.sizes().vec(), k.sizes().vec(),
            q._version(), k._version(), causal,          layer};
  }
  bool operator==(const InputsKey&) const = default;
};

#if SPARGE_HAVE_CUDA
// The CUDA block-sparse kernel over a 128 x 64 mask, with its block, token and stage-2 statistics (`opt`:
// the INT8 operands of a quantized prediction, if any).
AttentionResult kernel_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const BlockMask& mask, const SpargeConfig& c, double predict_ms,
                                 cuda::KernelOptions opt = {}) {
  opt.collect_stats = true;
  opt.check_mask = false;
  auto r = cuda::block_sparse_attention(q, k, v, mask, c, opt);
  r.stats.prediction_ms = predict_ms;
  return r;
}
#endif

class DenseMethod final : public AttentionMethod {
 public:
  AttentionResult run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                      int64_t /*layer*/) override {
    auto r = dense_attention_f64(q, k, v, causal);
    r.out = r.out.to(q.scalar_type());
    return r;
  }
  std::string backend() const override { return "reference (float64)"; }
};

class SdpaMethod final : public AttentionMethod {
 public:
  AttentionResult run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                      int64_t /*layer*/) override {
    AttentionResult r;
    r.out = models::sdpa_attention(q, k, v, causal, 0.0);  // GQA without copies, bottom-right causal
    return r;
  }
  std::string backend() const override { return "torch scaled_dot_product_attention"; }
};

class SpargeMethod final : public AttentionMethod {
 public:
  SpargeMethod(SpargeConfig c, std::string backend, std::shared_ptr<const TunedParams> tuned = nullptr,
               std::string tuned_path = "", bool stage2 = true)
      : c_(std::move(c)),
        want_(std::move(backend)),
        tuned_(std::move(tuned)),
        tuned_path_(std::move(tuned_path)),
        stage2_(stage2) {}
  AttentionResult run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                      int64_t layer) override {
    auto c = c_;
    if (tuned_) {
      // A file of one layer serves inputs of unknown layer (an attention-level task tuned on its own inputs).
      if (layer < 0 && tuned_->layers.size() == 1) layer = tuned_->layers.front().layer;
      if (layer < 0)
        throw std::invalid_argument("method with tuned: " + tuned_path_ +
                                    ": the inputs name no model layer and the file has several");
      c = tuned_->layer_config(layer, q.size(1), tuned_path_);
      if (!stage2_) c.pvthreshd = {kNoStage2};
    }
    c.causal = causal;
#if SPARGE_HAVE_CUDA
    if (want_ != "reference" && q.is_cuda()) {
      const bool block_ok = c.block_q == cuda::kBlockQ && c.block_k == cuda::kBlockK;
      const auto why =
          block_ok ? cuda::unsupported_reason(q, k, v, c) : std::string("block sizes are not 128x64");
      if (why.empty()) {
        last_ = "cuda kernels";
        // Quantized: the predictor's pass also writes the INT8 Q and smoothed K (as the torch op and the
        // tuner do), so the kernel call does not quantize again.
        cuda::Prediction pred;
        const double predict_ms = timed_ms(
            q, [&] { pred = cuda::predict_block_mask(q, k, c, /*quantize=*/c.quant != QuantMode::kNone); });
        cuda::KernelOptions opt;
        cuda::set_int8_operands(opt, pred);
        return kernel_attention(q, k, v, pred.mask, c, predict_ms, opt);
      }
      if (want_ == "cuda") throw std::invalid_argument("method backend cuda cannot run this case: " + why);
    }
#endif
    if (want_ == "cuda")
      throw std::invalid_argument("method backend cuda needs CUDA tensors and a CUDA build");
    last_ = "reference (LibTorch)";
    return spas_attention(q, k, v, c);
  }
  std::string backend() const override {
    return last_.empty() ? want_ : last_;
  }
  const TunedParams* tuned() const override {
    return tuned_.get();
  }

 private:
  SpargeConfig c_;
  std::string want_, last_;
  std::shared_ptr<const TunedParams> tuned_;
  std::string tuned_path_;
  bool stage2_ = true;
};

// Baselines whose prediction yields a BlockMask (XAttention, FlexPrefill): the mask from their reference
// predictor (LibTorch ops on the tensors' device), the attention by the CUDA kernel on a GPU (the mask
// refined to its 128 x 64 tiles: the same token pairs) or by the reference block-sparse attention. No
// stage 2. Equal sparsity: `calibrate` searches the knob on the call's inputs (in prepare(), untimed by the
// engine) and returns the predictor with that knob fixed; the timed prediction is that predictor, as the
// method runs when deployed with the knob (the search is the harness's, not the method's).
class MaskMethod final : public AttentionMethod {
 public:
  using Predict = std::function<BlockMask(const at::Tensor& q, const at::Tensor& k, bool causal)>;
  using Calibrate = std::function<Predict(const at::Tensor& q, const at::Tensor& k, bool causal)>;
  MaskMethod(Predict predict, Calibrate calibrate, std::string backend)
      : predict_(std::move(predict)), calibrate_(std::move(calibrate)), want_(std::move(backend)) {}
  void prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& /*v*/, bool causal,
               int64_t layer) override {
    if (!calibrate_) return;
    prepared_ = calibrate_(q, k, causal);
    prepared_for_ = InputsKey::of(q, k, causal, layer);
  }
  AttentionResult run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                      int64_t layer) override {
    Predict predict = predict_;
    if (calibrate_)
      predict = prepared_ && prepared_for_ == InputsKey::of(q, k, causal, layer) ? prepared_
                                                                                 : calibrate_(q, k, causal);
    BlockMask mask;
    const double predict_ms = timed_ms(q, [&] { mask = predict(q, k, causal); });
    SpargeConfig c;
    c.causal = causal;
    c.pvthreshd = {kNoStage2};
#if SPARGE_HAVE_CUDA
    if (want_ != "reference" && q.is_cuda()) {
      std::string why = "mask blocks " + std::to_string(mask.block_q) + "x" + std::to_string(mask.block_k) +
                        " are not multiples of the kernel's 128x64";
      if (mask.block_q % cuda::kBlockQ == 0 && mask.block_k % cuda::kBlockK == 0) {
        c.block_q = cuda::kBlockQ;
        c.block_k = cuda::kBlockK;
        why = cuda::unsupported_reason(q, k, v, c);
      }
      if (why.empty()) {
        last_ = "cuda kernels (mask by the LibTorch predictor)";
        return kernel_attention(q, k, v, refine_block_mask(mask, c.block_q, c.block_k), c, predict_ms);
      }
      if (want_ == "cuda") throw std::invalid_argument("method backend cuda cannot run this case: " + why);
    }
#endif
    if (want_ == "cuda")
      throw std::invalid_argument("method backend cuda needs CUDA tensors and a CUDA build");
    last_ = "reference (LibTorch)";
    c.block_q = mask.block_q;
    c.block_k = mask.block_k;
    auto r = block_sparse_attention(q, k, v, mask, c);
    r.stats.prediction_ms = predict_ms;
    return r;
  }
  std::string backend() const override {
    return last_.empty() ? want_ : last_;
  }

 private:
  Predict predict_;
  Calibrate calibrate_;
  Predict prepared_;  // the calibrated predictor of prepared_for_
  InputsKey prepared_for_;
  std::string want_, last_;
};

// MInference: one configuration for every layer, or per-layer configurations from MInference's JSON file
// (layers beyond the file use its fallback head). The estimate, the index and the A-shape and block-sparse
// heads run on the LibTorch reference (any device); the vertical-slash heads on the CUDA vertical-slash
// kernel on a GPU (fp16/bf16, D 64/128, coverage kernel_tiles), else on the reference.
class MInferenceMethod final : public AttentionMethod {
 public:
  MInferenceMethod(MInferenceConfig base, std::vector<MInferenceConfig> layers, std::string backend)
      : base_(std::move(base)), layers_(std::move(layers)), want_(std::move(backend)) {}
  void prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& /*v*/, bool causal,
               int64_t layer) override {
    prepared_ratio_.reset();
    const auto c = config_for(layer);
    if (!causal || !c.target_sparsity) return;
    prepared_ratio_ = budget_ratio(q, k, c);
    prepared_for_ = InputsKey::of(q, k, causal, layer);
  }
  AttentionResult run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                      int64_t layer) override {
    if (!causal)
      throw std::invalid_argument(
          "method minference: defined for causal prefill only (the inputs are not causal)");
    auto c = config_for(layer);
    if (c.target_sparsity) {
      // Equal sparsity: the budget ratio prepare() searched on these inputs (or searched now), then the
      // method with that ratio fixed (MaskMethod does the same for the knobs of the mask baselines).
      c.budget_ratio = prepared_ratio_ && prepared_for_ == InputsKey::of(q, k, causal, layer)
                           ? *prepared_ratio_
                           : budget_ratio(q, k, c);
      c.target_sparsity.reset();
    }
#if SPARGE_HAVE_CUDA
    if (want_ != "reference" && q.is_cuda()) {
      const auto why = cuda::minference_unsupported_reason(q, k, v, c);
      if (why.empty()) {
        last_ = "cuda kernels (vertical-slash heads; estimate and other patterns by LibTorch)";
        return cuda::minference_attention(q, k, v, c);
      }
      if (want_ == "cuda") throw std::invalid_argument("method backend cuda cannot run this case: " + why);
    }
#endif
    if (want_ == "cuda")
      throw std::invalid_argument("method backend cuda needs CUDA tensors and a CUDA build");
    last_ = "reference (LibTorch)";
    return minference_attention(q, k, v, c);
  }
  std::string backend() const override {
    return last_.empty() ? want_ : last_;
  }

 private:
  // The equal-sparsity budget ratio; its search builds the kernel indexes on the GPU where the kernel runs.
  double budget_ratio(const at::Tensor& q, const at::Tensor& k, const MInferenceConfig& c) const {
#if SPARGE_HAVE_CUDA
    if (want_ != "reference" && q.is_cuda() && c.coverage == VsCoverage::kKernelTiles)
      return cuda::minference_budget_ratio(q, k, c);
#endif
    return minference_budget_ratio(q, k, c);
  }
  // The base config with the heads of `layer` (a per-layer config file), or the fallback head past its
  // layers.
  MInferenceConfig config_for(int64_t layer) const {
    auto c = base_;
    if (!layers_.empty()) {
      if (layer >= 0 && layer < static_cast<int64_t>(layers_.size())) {
        c.heads = layers_[static_cast<size_t>(layer)].heads;
      } else {
        c.heads = {minference_fallback_head()};
      }
    }
    return c;
  }

  MInferenceConfig base_;
  std::vector<MInferenceConfig> layers_;
  std::optional<double> prepared_ratio_;  // the searched budget ratio of prepared_for_
  InputsKey prepared_for_;
  std::string want_, last_;
};

// The equal-sparsity parameter of the mask baselines: a value in [0, 1), or -1 when not given.
double target_sparsity(ParamReader& r, const std::string& id) {
  const double target = r.number("target_sparsity", -1.0);
  if (target == -1.0) return target;
  if (!(target >= 0.0 && target < 1.0))
    throw std::invalid_argument("method `" + id +
                                "`: parameter `target_sparsity`: expected a value in [0, 1), got " +
                                std::to_string(target));
  return target;
}

SpargeConfig sparge_config(ParamReader& r, bool dense) {
  SpargeConfig c;
  c.block_q = static_cast<int64_t>(r.number("block_q", 128));
  c.block_k = static_cast<int64_t>(r.number("block_k", 64));
  c.quant = parse_quant_mode(r.text("quant", dense ? "int8_fp8" : "none", {"none", "int8", "int8_fp8"}));
  if (dense) {
    c.simthreshd1 = {1.0};  // nothing is self-similar: every block is computed
    return c;
  }
  c.simthreshd1 = r.numbers("simthreshd1", {0.6});
  c.cdfthreshd = r.numbers("cdfthreshd", {0.98});
  c.topk = r.numbers("topk", {0.5});
  c.select = parse_select_mode(r.text("select", "cdf", {"cdf", "topk"}));
  c.pvthreshd = r.numbers("pvthreshd", {kNoStage2});
  c.stage2_group_rows = static_cast<int64_t>(r.number("stage2_group_rows", 32));
  c.attention_sink = r.flag("attention_sink", false);
  c.cdf_keep_crossing = r.flag("keep_crossing", false);
  return c;
}

}  // namespace

const std::vector<MethodInfo>& registered_methods() {
  static const std::vector<MethodInfo> v = {
      {"dense", "dense attention in float64 (the accuracy oracle)"},
      {"sdpa", "torch scaled_dot_product_attention (cuDNN / FlashAttention on a GPU)"},
      {"sparge", "SpargeAttn: block-mask prediction + block-sparse attention with the stage-2 filter"},
      {"sage", "quantized dense attention (SageAttention: INT8 Q.K, FP8 or 16-bit P.V)"},
      {"xattention",
       "XAttention baseline: antidiagonal block scoring, threshold selection (sink + diagonal)"},
      {"flexprefill",
       "FlexPrefill baseline: per-head query-aware / vertical-slash blocks under a coverage gamma"},
      {"minference",
       "MInference baseline: vertical-slash (last-64-query estimate), A-shape or block-sparse heads"},
  };
  return v;
}

std::unique_ptr<AttentionMethod> make_method(const std::string& id, const std::string& type,
                                             const Params& params) {
  ParamReader r("method `" + id + "`", params);
  std::unique_ptr<AttentionMethod> m;
  if (type == "dense") {
    m = std::make_unique<DenseMethod>();
  } else if (type == "sdpa") {
    m = std::make_unique<SdpaMethod>();
  } else if (type == "xattention") {
    XAttentionConfig xc;
    xc.block = r.integer("block", 128, 1);
    xc.stride = r.integer("stride", 8, 1);
    xc.threshold = r.number("threshold", 0.9);
    if (xc.block % xc.stride != 0)
      throw std::invalid_argument("method `" + id + "`: parameter `stride` = " + std::to_string(xc.stride) +
                                  " must divide `block` = " + std::to_string(xc.block));
    if (!(xc.threshold > 0.0 && xc.threshold <= 1.0))
      throw std::invalid_argument("method `" + id +
                                  "`: parameter `threshold`: expected a value in (0, 1], got " +
                                  std::to_string(xc.threshold));
    const double target = target_sparsity(r, id);
    const auto backend = r.text("backend", "auto", {"auto", "reference", "cuda"});
    auto predict = [xc](const at::Tensor& q, const at::Tensor& k, bool causal) {
      auto c = xc;
      c.causal = causal;
      return xattention_block_mask(q, k, c);
    };
    MaskMethod::Calibrate calibrate;
    if (target >= 0.0)
      // Equal sparsity: score once, bisect the threshold over the selection only; then the fixed threshold.
      calibrate = [xc, target](const at::Tensor& q, const at::Tensor& k, bool causal) {
        auto c = xc;
        c.causal = causal;
        const auto scores = xattention_scores(q, k, c);
        c.threshold = knob_at_token_sparsity([&](double t) { return xattention_select(scores, t); }, 1e-3,
                                             1.0, target, causal)
                          .knob;
        return MaskMethod::Predict([c](const at::Tensor& q2, const at::Tensor& k2, bool) {
          return xattention_block_mask(q2, k2, c);
        });
      };
    m = std::make_unique<MaskMethod>(predict, calibrate, backend);
  } else if (type == "flexprefill") {
    // Presets first, then individual parameters over them.
    auto fc = flexprefill_preset(r.text("preset", "library", {"library", "paper_llama31"}));
    fc.block = r.integer("block", fc.block, 1);
    fc.gamma = r.number("gamma", fc.gamma);
    fc.tau = r.number("tau", fc.tau);
    fc.min_budget = r.integer("min_budget", fc.min_budget, 0);
    if (const auto mb = r.integer("max_budget", 0, 0); mb > 0) fc.max_budget = mb;
    if (!(fc.gamma > 0.0 && fc.gamma <= 1.0))
      throw std::invalid_argument("method `" + id + "`: parameter `gamma`: expected a value in (0, 1], got " +
                                  std::to_string(fc.gamma));
    if (!(fc.tau >= 0.0))
      throw std::invalid_argument("method `" + id + "`: parameter `tau`: expected a value >= 0, got " +
                                  std::to_string(fc.tau));
    const double target = target_sparsity(r, id);
    const auto backend = r.text("backend", "auto", {"auto", "reference", "cuda"});
    auto predict_with = [](const FlexPrefillConfig& chosen) {
      return [chosen](const at::Tensor& q, const at::Tensor& k, bool causal) {
        if (!causal || q.size(2) != k.size(2)) {
          // FlexPrefill is defined for causal prefill of a whole prompt: anything else runs every block.
          const int64_t nqb = (q.size(2) + chosen.block - 1) / chosen.block,
                        nkb = (k.size(2) + chosen.block - 1) / chosen.block;
          const auto all =
              causal_valid_blocks(q.size(2), k.size(2), chosen.block, chosen.block, causal, q.options())
                  .expand({q.size(0), q.size(1), nqb, nkb});
          return BlockMask::from_dense(all.contiguous(), chosen.block, chosen.block, q.size(2), k.size(2));
        }
        return flexprefill_block_mask(q, k, chosen).mask;
      };
    };
    MaskMethod::Calibrate calibrate;
    if (target >= 0.0)
      // Equal sparsity: estimate once, bisect gamma over the selection only; then the fixed gamma.
      calibrate = [fc, target, predict_with](const at::Tensor& q, const at::Tensor& k, bool causal) {
        auto c = fc;
        if (causal && q.size(2) == k.size(2)) {
          const auto estimate = flexprefill_estimate(q, k, c);
          c.gamma = knob_at_token_sparsity([&](double g) { return flexprefill_select(estimate, g).mask; },
                                           1e-3, 1.0, target, causal)
                        .knob;
        }
        return MaskMethod::Predict(predict_with(c));
      };
    m = std::make_unique<MaskMethod>(predict_with(fc), calibrate, backend);
  } else if (type == "minference") {
    // Default: the Llama-3.1-8B configuration (vertical-slash 512 / 2048 for every head); `config` loads
    // MInference's per-layer JSON instead; single-pattern parameters override the default head.
    MInferenceConfig mc = minference_llama31_default();
    auto head = mc.heads.front();
    head.pattern = parse_minference_pattern(r.text("pattern", "vertical_slash"));
    head.vertical_size = r.integer("vertical_size", head.vertical_size, 0);
    head.slash_size = r.integer("slash_size", head.slash_size, 0);
    head.n_init = r.integer("n_init", head.n_init, 0);
    head.n_local = r.integer("n_local", head.n_local, 1);
    head.top_blocks = r.integer("top_blocks", head.top_blocks, 1);
    mc.heads = {head};
    mc.coverage = r.text("coverage", "kernel_tiles", {"kernel_tiles", "exact_tokens"}) == "kernel_tiles"
                      ? VsCoverage::kKernelTiles
                      : VsCoverage::kExactTokens;
    // Equal sparsity: one ratio scales every vertical-slash budget, bisected per call on token sparsity.
    if (const double target = target_sparsity(r, id); target >= 0.0) mc.target_sparsity = target;
    const auto backend = r.text("backend", "auto", {"auto", "reference", "cuda"});
    std::vector<MInferenceConfig> layers;
    const auto config = r.text("config", "");
    if (!config.empty())
      layers = load_minference_config(find_path(expand_env(config, "method `" + id + "`.config")));
    m = std::make_unique<MInferenceMethod>(mc, std::move(layers), backend);
  } else if (type == "sparge" && params.count("tuned") != 0) {
    // Thresholds per layer and head from `sparge tune`; the fixed part of the configuration comes from the
    // file too (the thresholds are only valid with the block sizes and quantization they were tuned for).
    const auto path = expand_env(r.text("tuned", ""), "method `" + id + "`.tuned");
    const auto backend = r.text("backend", "auto", {"auto", "reference", "cuda"});
    const bool stage2 = r.flag("stage2", true);
    for (const auto& [key, value] : params)
      if (key != "tuned" && key != "backend" && key != "stage2")
        throw std::invalid_argument("method `" + id + "`: parameter `" + key +
                                    "` cannot be combined with `tuned` (the file gives the thresholds and "
                                    "the configuration; allowed with it: backend, stage2)");
    // Relative paths name files of the repository (results/tuned/...) from anywhere, like other spec paths.
    auto tuned = std::make_shared<const TunedParams>(load_tuned_params(find_path(path)));
    if (!tuned->complete)
      throw std::invalid_argument("method `" + id + "`: tuned parameter file " + path +
                                  " is incomplete (a `sparge tune` was interrupted: rerun it to finish)");
    m = std::make_unique<SpargeMethod>(tuned->config, backend, tuned, path, stage2);
  } else if (type == "sparge" || type == "sage") {
    const bool dense = type == "sage";
    auto c = sparge_config(r, dense);
    const auto backend =
        dense ? std::string("reference") : r.text("backend", "auto", {"auto", "reference", "cuda"});
    m = std::make_unique<SpargeMethod>(std::move(c), backend);
  } else {
    std::string list;
    for (const auto& info : registered_methods()) list += (list.empty() ? "" : ", ") + info.type;
    throw std::invalid_argument("method `" + id + "`: unknown type `" + type + "` (registered: " + list +
                                ")");
  }
  r.reject_unread();
  return m;
}

}  // namespace sparge::runner
