// Attention-level metrics: each registers its name, direction, default aggregation and version (part of cache
// keys: bump the version when a metric's definition changes).
//
//   relative_l1      sum|O - O_ref| / sum|O_ref| (the paper's L1)      lower is better
//   relative_l2      ||O - O_ref|| / ||O_ref||                          lower
//   cosine           cosine similarity of O and O_ref (flattened)       higher
//   rmse             sqrt(mean (O - O_ref)^2)                           lower
//   stage1_sparsity  1 - computed / causal-valid blocks                 higher
//   stage2_skipped   skipped / computed (row group, key block) units    higher
//   pv_density       pairs whose P.V was computed / causal pairs        lower
//   sim_q, sim_k     mean block self-similarity of Q / K (the method's block sizes, default 128 / 64) higher
//   time_ms          the method's wall time (device-synchronized)       lower
//   prediction_ms    the stage-1 prediction's part of it (sparge methods; 0 for dense ones)        lower
//   tops             dense-equivalent TOPS = 4 B H N^2 D / t (halved when causal) higher
// O_ref is float64 dense attention on the same inputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "sparge/stats.h"

namespace sparge::runner {

struct MetricInfo {
  std::string name, summary;
  bool higher_is_better = false;
  int version = 1;
};
const std::vector<MetricInfo>& registered_metrics();
const MetricInfo& metric_info(const std::string& name);  // throws std::invalid_argument listing the names

struct MetricInputs {
  at::Tensor out, ref, q, k;  // out: the method's output, ref: float64 dense, HND
  AttentionStats stats;
  bool causal = false;
  double time_ms = 0.0;
  int64_t block_q = 128, block_k = 64;
};
double compute_metric(const std::string& name, const MetricInputs& in);
// Whether the metric compares against the float64 dense reference (MetricInputs::ref).
bool metric_needs_reference(const std::string& name);

// Per-sample values -> one number: mean | median | max | min | sum (NaN for no values); the standard error of
// the mean (NaN for fewer than 2 values).
double aggregate(std::vector<double> values, const std::string& how);
double stderr_of_mean(const std::vector<double>& values);

}  // namespace sparge::runner
