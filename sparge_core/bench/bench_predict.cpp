// Prediction overhead (the paper's Table 3): stage-1 prediction time on the GPU / dense cuDNN SDPA time, same
// inputs, same run. bf16, HND, D = 128, H = 16, B = max(1, 32768 / N), random normal inputs, non-causal,
// blocks 128 x 64, CDF selection (tau 0.9, theta 0.6). Prediction without and with the INT8 quantization of Q
// and smoothed K (fused into the statistics pass), the prediction replayed from a CUDA graph (GPU time only,
// no host overhead), the quantization alone (quantize_qk_int8), and the first GPU predictor (legacy, the
// baseline of the speedup). Median of 20 CUDA-event timings after 3 warm-ups.
//   bench_predict [--json PATH] [--quick] [--only N]   (--only: that sequence length alone, e.g. to profile)
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "../cuda/predict/predict_legacy.h"
#include "bench_util.h"
#include "sparge/cuda_predict.h"

int main(int argc, char** argv) {
  std::string json_path;
  bool quick = false;
  int64_t only = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = std::atoll(argv[++i]);
  }
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "bench_predict: no CUDA device\n");
    return 1;
  }
  const int64_t heads = 16, dim = 128;
  std::vector<int64_t> lens = {8192, 16384, 32768, 65536, 131072};
  if (quick) lens = {8192, 32768};
  if (only > 0) lens = {only};
  std::vector<std::string> rows;
  std::printf("%-8s %-4s %-10s %-10s %-10s %-10s %-11s %-10s %-10s %-10s %-10s\n", "N", "B", "cudnn_ms",
              "pred_ms", "pred+q_ms", "graph_ms", "quantize_ms", "legacy_ms", "overhead", "overhead+q",
              "ovh_graph");
  for (int64_t n : lens) {
    const int64_t b = std::max<int64_t>(1, 32768 / n);
    const auto opt = at::TensorOptions(at::kBFloat16).device(at::kCUDA);
    const auto q = at::randn({b, heads, n, dim}, opt), k = at::randn({b, heads, n, dim}, opt),
               v = at::randn({b, heads, n, dim}, opt);
    sparge::SpargeConfig cfg;
    cfg.cdfthreshd = {0.9};
    const double dense = sparge::bench::median_ms(
        [&] { sparge::bench::sdpa(q, k, v, false, sparge::bench::SdpaBackend::kCudnn); });
    const double pred = sparge::bench::median_ms([&] { sparge::cuda::predict_block_mask(q, k, cfg, false); });
    const double pred_q =
        sparge::bench::median_ms([&] { sparge::cuda::predict_block_mask(q, k, cfg, true); });
    const double quant = sparge::bench::median_ms(
        [&] { sparge::cuda::quantize_qk_int8(q, k, cfg.layout, cfg.block_q, cfg.block_k); });
    const double legacy =
        sparge::bench::median_ms([&] { sparge::cuda::legacy::predict_block_mask(q, k, cfg, false); });
    double pred_graph = 0.0;
    {
      auto side = at::cuda::getStreamFromPool();
      const at::cuda::CUDAStreamGuard guard(side);
      sparge::cuda::predict_block_mask(q, k, cfg, false);  // warm-up on the capture stream
      side.synchronize();
      at::cuda::CUDAGraph graph;
      graph.capture_begin();
      sparge::cuda::predict_block_mask(q, k, cfg, false);
      graph.capture_end();
      pred_graph = sparge::bench::median_ms([&] { graph.replay(); });
    }
    std::printf("%-8lld %-4lld %-10.4f %-10.4f %-10.4f %-10.4f %-11.4f %-10.4f %-10.4f %-10.4f %-10.4f\n",
                static_cast<long long>(n), static_cast<long long>(b), dense, pred, pred_q, pred_graph, quant,
                legacy, pred / dense, pred_q / dense, pred_graph / dense);
    char buf[640];
    std::snprintf(buf, sizeof buf,
                  "{\"seq\": %lld, \"batch\": %lld, \"heads\": %lld, \"head_dim\": %lld, \"cudnn_ms\": %.5f, "
                  "\"predict_ms\": %.5f, \"predict_quant_ms\": %.5f, \"predict_graph_ms\": %.5f, "
                  "\"quantize_ms\": %.5f, "
                  "\"legacy_predict_ms\": %.5f, \"overhead\": %.5f, \"overhead_quant\": %.5f, "
                  "\"overhead_graph\": %.5f}",
                  static_cast<long long>(n), static_cast<long long>(b), static_cast<long long>(heads),
                  static_cast<long long>(dim), dense, pred, pred_q, pred_graph, quant, legacy, pred / dense,
                  pred_q / dense, pred_graph / dense);
    rows.emplace_back(buf);
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << "[\n";
    for (size_t i = 0; i < rows.size(); ++i) f << "  " << rows[i] << (i + 1 < rows.size() ? ",\n" : "\n");
    f << "]\n";
  }
  return 0;
}
