// Benchmark of the CUDA block-sparse attention kernel against torch SDPA (cuDNN and FlashAttention-2
// backends), measured in the same run on the same inputs.
//
// Protocol: bf16, HND, B*N = 32768 tokens, H = 32 (D = 64) or 16 (D = 128), random normal inputs; masks list
// each block (128 x 64) with probability `density` (causal: every causal-valid block); validate (kernel vs
// SDPA flash, density 1) before timing; 3 warm-ups, then the median of 20 runs, each timed with CUDA events.
// No L2 flush: the operands (>= 200 MB) exceed the 50 MB L2. Dense-equivalent TFLOPS = 4 B H N^2 D / t
// (halved when causal), so a sparse kernel scores above the dense rate; "block TFLOPS" counts only the listed
// blocks' FLOPs.
//   bench_cuda_attention [--json PATH] [--quick]
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "sparge/block_mask.h"
#include "sparge/cuda_attention.h"
#include "sparge/reference.h"

namespace {

struct Row {
  std::string method;
  int64_t batch, heads, seq, head_dim;
  bool causal;
  double density, listed_fraction, ms, tflops, block_tflops;
};

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc)
      json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--quick"))
      quick = true;
  }
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device: nothing to benchmark\n");
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);

  const std::vector<int64_t> seqs =
      quick ? std::vector<int64_t>{8192} : std::vector<int64_t>{4096, 8192, 16384, 32768};
  const std::vector<double> densities = {1.0, 0.5, 0.25, 0.1};
  std::vector<Row> rows;
  const auto opt = at::TensorOptions(at::kBFloat16).device(at::kCUDA);
  for (int64_t d : {64, 128})
    for (int64_t n : seqs)
      for (bool causal : {false, true}) {
        const int64_t b = 32768 / n, h = d == 64 ? 32 : 16;
        at::manual_seed(1234);
        const auto q = at::randn({b, h, n, d}, opt), k = at::randn({b, h, n, d}, opt),
                   v = at::randn({b, h, n, d}, opt);
        const double flops = 4.0 * b * h * n * n * d / (causal ? 2.0 : 1.0);
        sparge::SpargeConfig cfg;
        cfg.causal = causal;
        const int64_t bq = sparge::cuda::kBlockQ, bk = sparge::cuda::kBlockK;
        const auto valid = sparge::causal_valid_blocks(n, n, bq, bk, causal, opt);
        auto add = [&](const std::string& method, double density, double listed, int64_t listed_blocks,
                       double ms) {
          const double block_flops = 4.0 * static_cast<double>(listed_blocks) * bq * bk * d;
          rows.push_back(
              {method, b, h, n, d, causal, density, listed, ms, flops / ms * 1e-9, block_flops / ms * 1e-9});
          std::printf(
              "%-8s D=%-3lld N=%-6lld %-6s density %.2f (listed %.3f): %8.3f ms  %7.1f TFLOPS (dense-equiv)"
              "  %7.1f block TFLOPS\n",
              method.c_str(), static_cast<long long>(d), static_cast<long long>(n),
              causal ? "causal" : "full", density, listed, ms, flops / ms * 1e-9, block_flops / ms * 1e-9);
          std::fflush(stdout);
        };
        // Baselines.
        const double cudnn_ms = sparge::bench::median_ms([&] {
          (void)at::_scaled_dot_product_cudnn_attention(q, k, v, std::nullopt, false, 0.0, causal);
        });
        const int64_t all_blocks = b * h * valid.sum().item<int64_t>();
        add("cudnn", 1.0, 1.0, all_blocks, cudnn_ms);
        const double flash_ms = sparge::bench::median_ms(
            [&] { (void)at::_scaled_dot_product_flash_attention(q, k, v, 0.0, causal); });
        add("flash", 1.0, 1.0, all_blocks, flash_ms);
        // Ours over the densities (causal: density 1 only).
        for (double density : densities) {
          if (causal && density < 1.0) continue;
          at::manual_seed(99);
          auto dense =
              (at::rand({b, h, valid.size(0), valid.size(1)}, opt.dtype(at::kFloat)) < density) & valid;
          const auto mask = sparge::BlockMask::from_dense(dense.contiguous(), bq, bk, n, n);
          const int64_t listed_blocks = mask.counts.sum().item<int64_t>();
          const double listed = static_cast<double>(listed_blocks) / static_cast<double>(all_blocks);
          sparge::cuda::KernelOptions ko;
          ko.check_mask = false;
          if (density == 1.0) {  // validate before timing
            const auto ours = sparge::cuda::block_sparse_attention(q, k, v, mask, cfg, ko).out;
            const auto ref = std::get<0>(at::_scaled_dot_product_flash_attention(q, k, v, 0.0, causal));
            const double err = sparge::relative_l2(ours, ref);
            std::printf("validate D=%lld N=%lld %s: relL2(ours, flash) = %.2e\n", static_cast<long long>(d),
                        static_cast<long long>(n), causal ? "causal" : "full", err);
            if (!(err < 2e-2)) {
              std::printf("VALIDATION FAILED\n");
              return 1;
            }
          }
          const double ms = sparge::bench::median_ms(
              [&] { (void)sparge::cuda::block_sparse_attention(q, k, v, mask, cfg, ko); });
          add("sparge", density, listed, listed_blocks, ms);
        }
      }

  if (!json_path.empty()) {
    std::ofstream js(json_path);
    js << "{\n  \"device\": \"" << prop.name
       << "\",\n  \"protocol\": \"bf16 HND, B*N=32768, H=32 (D=64) / 16 (D=128), "
       << "median of 20 CUDA-event timings after 3 warm-ups; tflops = 4*B*H*N^2*D/t (halved when causal)\",\n"
       << "  \"results\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      js << "    {\"method\": \"" << r.method << "\", \"batch\": " << r.batch << ", \"heads\": " << r.heads
         << ", \"seq\": " << r.seq << ", \"head_dim\": " << r.head_dim
         << ", \"causal\": " << (r.causal ? "true" : "false") << ", \"density\": " << r.density
         << ", \"listed_fraction\": " << r.listed_fraction << ", \"ms\": " << r.ms
         << ", \"tflops\": " << r.tflops << ", \"block_tflops\": " << r.block_tflops << "}"
         << (i + 1 < rows.size() ? ",\n" : "\n");
    }
    js << "  ]\n}\n";
  }
  return 0;
}
