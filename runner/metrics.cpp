// Metric definitions (see metrics.h).
#include "metrics.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "sparge/permute.h"
#include "sparge/reference.h"

namespace sparge::runner {

const std::vector<MetricInfo>& registered_metrics() {
  static const std::vector<MetricInfo> v = {
      {"relative_l1", "sum|O - O_ref| / sum|O_ref| against float64 dense attention", false, 1},
      {"relative_l2", "||O - O_ref|| / ||O_ref||", false, 1},
      {"cosine", "cosine similarity of O and O_ref", true, 1},
      {"rmse", "root mean square error against O_ref", false, 1},
      {"stage1_sparsity", "1 - computed / causal-valid blocks (stage 1)", true, 1},
      {"stage2_skipped", "skipped / computed (row group, key block) units (stage 2)", true, 1},
      {"pv_density", "causal pairs whose P.V was computed / causal pairs", false, 1},
      {"token_sparsity", "1 - computed / causal-valid (query, key) pairs (stage 1; any block size)", true, 1},
      {"sim_q", "mean block self-similarity of Q (Sim-q)", true, 1},
      {"sim_k", "mean block self-similarity of K (Sim-k)", true, 1},
      {"time_ms", "wall time of the method's call, device-synchronized (median of timing.repeats calls)",
       false, 1},
      {"prediction_ms", "the stage-1 prediction's part of time_ms (sparge methods)", false, 1},
      {"tops", "dense-equivalent TOPS: 4 B H N^2 D / t, halved when causal", true, 1},
      // Language-model tasks (lm_task.h); stage1_sparsity, stage2_skipped and pv_density apply there too,
      // summed over every prefill attention call.
      {"perplexity", "token-level perplexity exp(NLL sum / scored tokens)", false, 1},
      {"word_perplexity", "exp(NLL sum / words of the scored text)", false, 1},
      {"byte_perplexity", "exp(NLL sum / UTF-8 bytes of the scored text)", false, 1},
      {"bits_per_byte", "NLL sum / bytes / ln 2", false, 1},
      {"niah_score", "needle-in-a-haystack exact match (the number appears in the greedy answer)", true, 1},
      {"longbench_score", "LongBench v1: per dataset round(100 mean, 2), averaged over datasets", true, 1},
      {"infinitebench_accuracy", "InfiniteBench En.MC accuracy", true, 1},
      {"attention_ms", "time of the method's prefill attention calls, summed", false, 1},
      {"attention_tops", "dense-equivalent TOPS of the method's prefill attention calls", true, 1},
      {"prefill_tokens", "prompt tokens prefilled", true, 1},
  };
  return v;
}

const MetricInfo& metric_info(const std::string& name) {
  for (const auto& m : registered_metrics())
    if (m.name == name) return m;
  std::string list;
  for (const auto& m : registered_metrics()) list += (list.empty() ? "" : ", ") + m.name;
  throw std::invalid_argument("metric `" + name + "`: unknown (registered: " + list + ")");
}

bool metric_needs_reference(const std::string& name) {
  return name == "relative_l1" || name == "relative_l2" || name == "cosine" || name == "rmse";
}

double compute_metric(const std::string& name, const MetricInputs& in) {
  const auto o = [&] { return in.out.to(at::kDouble); };
  const auto r = [&] { return in.ref.to(at::kDouble); };
  if (name == "relative_l1") return relative_l1(in.out, in.ref);
  if (name == "relative_l2") return relative_l2(in.out, in.ref);
  if (name == "cosine") {
    const auto a = o().flatten(), b = r().flatten();
    return (a.dot(b) / (a.norm() * b.norm())).item<double>();
  }
  if (name == "rmse") return (o() - r()).pow(2).mean().sqrt().item<double>();
  if (name == "stage1_sparsity") return in.stats.stage1_sparsity();
  if (name == "stage2_skipped") return in.stats.stage2_skip_fraction();
  if (name == "pv_density") return in.stats.valid_pairs > 0 ? in.stats.pv_density() : 1.0;
  if (name == "token_sparsity") return in.stats.valid_pairs > 0 ? 1.0 - in.stats.token_density() : 0.0;
  if (name == "sim_q") return mean_block_similarity(in.q, in.block_q);
  if (name == "sim_k") return mean_block_similarity(in.k - in.k.mean(2, true), in.block_k);
  if (name == "time_ms") return in.time_ms;
  if (name == "prediction_ms") return in.stats.prediction_ms;
  if (name == "tops") {
    const double flops = 4.0 * static_cast<double>(in.q.size(0) * in.q.size(1)) *
                         static_cast<double>(in.q.size(2)) * static_cast<double>(in.k.size(2)) *
                         static_cast<double>(in.q.size(3)) / (in.causal ? 2.0 : 1.0);
    return in.time_ms > 0 ? flops / (in.time_ms * 1e-3) / 1e12 : 0.0;
  }
  metric_info(name);  // throws with the list
  throw std::invalid_argument("metric `" + name +
                              "` applies to language-model tasks, not to the attention task");
}

double aggregate(std::vector<double> v, const std::string& how) {
  if (v.empty()) return NAN;
  if (how == "median") {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  }
  if (how == "max") return *std::max_element(v.begin(), v.end());
  if (how == "min") return *std::min_element(v.begin(), v.end());
  double s = 0;
  for (double x : v) s += x;
  return how == "sum" ? s : s / static_cast<double>(v.size());
}

double stderr_of_mean(const std::vector<double>& v) {
  if (v.size() < 2) return NAN;
  const double m = aggregate(v, "mean");
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / static_cast<double>(v.size() - 1) / static_cast<double>(v.size()));
}

}  // namespace sparge::runner
