// Internal helpers of the reference implementation (not installed, not part of the API).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/cuda.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "sparge/config.h"

namespace sparge::detail {

// Wall-clock milliseconds of fn(), synchronizing the device first and last when the tensors live on a GPU.
template <typename Fn>
double timed_ms(const at::Device& device, Fn&& fn) {
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
  };
  sync();
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  sync();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Sizes of one attention problem after validation.
struct Problem {
  int64_t batch = 0, heads_q = 0, heads_kv = 0, seq_q = 0, seq_k = 0, head_dim = 0;
  double scale = 0.0;
  int64_t group() const { return heads_q / heads_kv; }
};

// Validates q, k (and v when defined) and every field of `config`; `fn` names the entry point in messages.
Problem check_problem(const char* fn, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const SpargeConfig& config);

// (B, N, H, D) <-> (B, H, N, D) views.
at::Tensor to_hnd(const at::Tensor& x, Layout layout);
at::Tensor from_hnd(const at::Tensor& x, Layout layout);

// (B, Hkv, N, D) -> (B, Hkv * group, N, D): query head h reads kv head h / group.
at::Tensor expand_kv_heads(const at::Tensor& x, int64_t group);

// Per-query-head thresholds as a (Hq) tensor of `dtype` on `device` (size-1 vectors broadcast).
at::Tensor per_head(const std::vector<double>& values, int64_t heads_q, const at::TensorOptions& options);

// float32 for 16/32-bit inputs, float64 for float64 inputs.
at::ScalarType math_dtype(at::ScalarType input);

// Rows of x (B, H, N, D) padded with zeros to `padded` tokens, viewed as (B, H, padded / block, block, D).
at::Tensor pad_blocks(const at::Tensor& x, int64_t block);

// Sum over i = 0 .. n-1 of max(x + i, 0), elementwise over int64 tensors (any broadcastable shapes; n >= 1),
// in int64 (exact).
at::Tensor sum_positive(const at::Tensor& x, const at::Tensor& n);

}  // namespace sparge::detail
