// Timing helpers shared by the CUDA benchmarks: the median of CUDA-event timings after warm-up, and
// cuDNN-only torch SDPA (the dense baseline every ratio is taken against).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace sparge::bench {

// Median milliseconds of fn() over `reps` runs after `warmup`, CUDA events on the current stream.
inline double median_ms(const std::function<void()>& fn, int warmup = 3, int reps = 20) {
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(start, stream);
    fn();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, start, stop);
    t.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// torch SDPA restricted to one backend (the others disabled for the call, then restored).
enum class SdpaBackend { kCudnn, kFlash };
inline at::Tensor sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                       SdpaBackend be) {
  auto& ctx = at::globalContext();
  const bool f = ctx.userEnabledFlashSDP(), m = ctx.userEnabledMemEfficientSDP(),
             x = ctx.userEnabledMathSDP(), c = ctx.userEnabledCuDNNSDP();
  ctx.setSDPUseFlash(be == SdpaBackend::kFlash);
  ctx.setSDPUseCuDNN(be == SdpaBackend::kCudnn);
  ctx.setSDPUseMemEfficient(false);
  ctx.setSDPUseMath(false);
  auto out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal);
  ctx.setSDPUseFlash(f);
  ctx.setSDPUseCuDNN(c);
  ctx.setSDPUseMemEfficient(m);
  ctx.setSDPUseMath(x);
  return out;
}

}  // namespace sparge::bench
