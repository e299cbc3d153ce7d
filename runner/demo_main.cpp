// sparge_demo: the reference SpargeAttn algorithm on structured inputs (local attention plus a sink, as in
// real models), printing stage-1 and stage-2 sparsity and the error against float64 dense attention for a few
// thresholds. The experiment runner will replace it with `sparge run experiments/quickstart.yaml`.
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "sparge/reference.h"
#include "sparge/synthetic.h"

namespace {

struct Row {
  std::string label;
  double tau, theta, pvthreshd;
  sparge::QuantMode quant;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"SpargeAttn reference demo: sparsity and error vs dense attention on structured inputs"};
  sparge::StructuredSpec spec;
  spec.heads_q = 8;
  spec.heads_kv = 2;
  spec.seq_q = spec.seq_k = 4096;
  spec.head_dim = 64;
  bool causal = false;
  uint64_t seed = 0;
  app.add_option("--seq", spec.seq_k, "sequence length N (Nq = Nk)")->check(CLI::Range(1, 1 << 16));
  app.add_option("--heads", spec.heads_q, "query heads")->check(CLI::Range(1, 128));
  app.add_option("--kv-heads", spec.heads_kv, "key/value heads (divides --heads)")->check(CLI::Range(1, 128));
  app.add_option("--dim", spec.head_dim, "head dimension D")->check(CLI::Range(1, 512));
  app.add_option("--window", spec.window, "correlation length of the inputs, tokens")
      ->check(CLI::Range(1, 1 << 20));
  app.add_flag("--causal", causal, "causal attention");
  app.add_option("--seed", seed, "random seed of the inputs");
  CLI11_PARSE(app, argc, argv);
  spec.seq_q = spec.seq_k;
  if (spec.heads_q % spec.heads_kv != 0) {
    std::fprintf(stderr, "--heads (%lld) must be a multiple of --kv-heads (%lld)\n",
                 static_cast<long long>(spec.heads_q), static_cast<long long>(spec.heads_kv));
    return 2;
  }

  const auto in = sparge::structured_qkv(spec, seed, at::TensorOptions(at::kBFloat16));
  const auto ref = sparge::dense_attention_f64(in.q, in.k, in.v, causal).out;
  std::printf(
      "SpargeAttn reference on structured inputs: B=1 Hq=%lld Hkv=%lld N=%lld D=%lld bf16 %s, seed %llu\n",
      static_cast<long long>(spec.heads_q), static_cast<long long>(spec.heads_kv),
      static_cast<long long>(spec.seq_k), static_cast<long long>(spec.head_dim),
      causal ? "causal" : "non-causal", static_cast<unsigned long long>(seed));
  std::printf(
      "blocks 128x64 (query x key), stage 2 decided per 32-row group; errors against float64 dense\n\n");
  std::printf("%-22s %5s %6s %9s %8s | %8s %8s %8s | %8s %8s | %8s\n", "setting", "tau", "theta", "pvthreshd",
              "quant", "stage1", "stage2", "P.V", "rel L1", "rel L2", "time ms");
  std::printf("%-22s %5s %6s %9s %8s | %8s %8s %8s | %8s %8s | %8s\n", "", "", "", "", "", "sparsity",
              "skipped", "density", "", "", "");

  const double inf = sparge::kNoStage2;
  const std::vector<Row> rows = {
      {"dense (all blocks)", 1.0, 1.0, inf, sparge::QuantMode::kNone},
      {"stage 1", 0.99, 0.6, inf, sparge::QuantMode::kNone},
      {"stage 1", 0.95, 0.6, inf, sparge::QuantMode::kNone},
      {"stage 1", 0.9, 0.6, inf, sparge::QuantMode::kNone},
      {"stage 1", 0.8, 0.6, inf, sparge::QuantMode::kNone},
      {"stage 1", 0.5, 0.6, inf, sparge::QuantMode::kNone},
      {"stage 1 + 2", 0.95, 0.6, 20.0, sparge::QuantMode::kNone},
      {"stage 1 + 2", 0.95, 0.6, 10.0, sparge::QuantMode::kNone},
      {"stage 1 + 2", 0.95, 0.6, 6.0, sparge::QuantMode::kNone},
      {"SageAttention (dense)", 1.0, 1.0, inf, sparge::QuantMode::kInt8Fp8},
      {"SpargeAttn INT8/FP8", 0.95, 0.6, 10.0, sparge::QuantMode::kInt8Fp8},
  };
  for (const auto& r : rows) {
    sparge::SpargeConfig cfg;
    cfg.causal = causal;
    cfg.cdfthreshd = {r.tau};
    cfg.simthreshd1 = {r.theta};
    cfg.pvthreshd = {r.pvthreshd};
    cfg.stage2_group_rows = 32;
    cfg.quant = r.quant;
    const auto res = sparge::spas_attention(in.q, in.k, in.v, cfg);
    const auto& st = res.stats;
    std::printf("%-22s %5.2f %6.2f %9s %8s | %8.4f %8.4f %8.4f | %8.5f %8.5f | %8.1f\n", r.label.c_str(),
                r.tau, r.theta,
                std::isinf(r.pvthreshd) ? "off" : std::to_string(static_cast<int>(r.pvthreshd)).c_str(),
                std::string(sparge::to_string(r.quant)).c_str(), st.stage1_sparsity(),
                st.stage2_skip_fraction(), st.pv_density(), sparge::relative_l1(res.out, ref),
                sparge::relative_l2(res.out, ref), st.prediction_ms + st.attention_ms);
  }
  std::printf(
      "\nstage1 sparsity = 1 - computed / causal-valid blocks; stage2 skipped = skipped / computed "
      "(32-row group, key block) units;\nP.V density = token pairs whose P.V was computed / valid pairs. "
      "Times are the CPU reference (not a kernel).\n");
  return 0;
}
