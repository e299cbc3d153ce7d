// The method registry (see methods.h).
#include "methods.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <chrono>

#include <cmath>
#include <functional>
#include <set>
#include <stdexcept>

#include "lm_task.h"
#include "params.h"
#include "sparge/error.h"
#include "sparge/models/attention_provider.h"
#if SPARGE_HAVE_CUDA
#include "sparge/cuda_attention.h"
#include "sparge/cuda_predict.h"
#endif

namespace sparge::runner {
namespace {

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
        cuda::KernelOptions opt;
        opt.collect_stats = true;
        opt.check_mask = false;
        torch::cuda::synchronize();
        const auto t0 = std::chrono::steady_clock::now();
        const auto pred = cuda::predict_block_mask(q, k, c);
        torch::cuda::synchronize();
        const double predict_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        auto r = cuda::block_sparse_attention(q, k, v, pred.mask, c, opt);
        r.stats.prediction_ms = predict_ms;
        return r;
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
    auto tuned = std::make_shared<const TunedParams>(load_tuned_params(path));
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
