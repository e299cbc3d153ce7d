// Shared helpers of the sparge_core tests: fresh seeds, tolerances per dtype, mask materialization.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>

#include "sparge/block_mask.h"
#include "sparge/error.h"
#include "sparge/reference.h"
#include "sparge/synthetic.h"

// First statement of a GPU test: skips it, with the reason printed, where torch sees no CUDA device.
#define SPARGE_REQUIRE_GPU()                                               \
  do {                                                                     \
    if (!torch::cuda::is_available()) {                                    \
      GTEST_SKIP() << "no CUDA device visible to torch: GPU test skipped"; \
    }                                                                      \
  } while (0)

namespace sparge::test {

// A fresh seed per call (tests draw new inputs every run); printed by the caller's SCOPED_TRACE on failure.
// SPARGE_TEST_SEED=<decimal> replays a printed seed: every call then returns it (run the failing test alone
// with --gtest_filter).
inline uint64_t fresh_seed() {
  if (const char* fixed = std::getenv("SPARGE_TEST_SEED"); fixed != nullptr && *fixed != '\0')
    return std::strtoull(fixed, nullptr, 10);
  static std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

// Relative L2 error allowed for a reference output in `dtype` against float64 dense attention when nothing is
// skipped or quantized: the rounding of the output to dtype dominates (bf16: 2^-9 relative per element, fp16:
// 2^-12), float32 math gives ~1e-7 per operation.
inline double exact_tolerance(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble:
      return 1e-12;
    case at::kFloat:
      return 5e-6;
    case at::kHalf:
      return 1e-3;
    case at::kBFloat16:
      return 6e-3;
    default:
      return 0.0;
  }
}

// Sets an environment variable (e.g. a measurement switch read at every call) for one scope; the previous
// value, or its absence, comes back at the scope's end, also when a check throws, so scopes nest.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    EXPECT_EQ(setenv(name, value, 1), 0) << name;
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

inline std::string dtype_name(at::ScalarType t) {
  return std::string(c10::toString(t));
}

// (B, H, Nq, Nk) bool token mask: the block mask expanded to tokens, AND the causal rule.
inline at::Tensor token_mask(const BlockMask& m, bool causal) {
  auto t = m.dense.repeat_interleave(m.block_q, 2).repeat_interleave(m.block_k, 3);
  t = t.narrow(2, 0, m.seq_q).narrow(3, 0, m.seq_k);
  if (causal) {
    const auto i = at::arange(m.seq_q).view({-1, 1}), j = at::arange(m.seq_k).view({1, -1});
    t = t & (j <= i + (m.seq_k - m.seq_q));
  }
  return t;
}

// Dense float64 attention with a (B, H, Nq, Nk) token mask; rows with no allowed key give 0. HND in, HND out.
inline at::Tensor masked_attention_f64(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& allowed, double scale) {
  const int64_t g = q.size(1) / k.size(1);
  const auto kk = k.to(at::kDouble).repeat_interleave(g, 1), vv = v.to(at::kDouble).repeat_interleave(g, 1);
  auto s = at::matmul(q.to(at::kDouble), kk.transpose(-1, -2)) * scale;
  s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  auto p = at::nan_to_num(at::softmax(s, -1), 0.0);
  return at::matmul(p, vv);
}

// Block mask of all causal-valid blocks.
inline BlockMask full_mask(int64_t b, int64_t h, int64_t nq, int64_t nk, int64_t bq, int64_t bk,
                           bool causal) {
  const auto valid = causal_valid_blocks(nq, nk, bq, bk, causal, at::TensorOptions());
  return BlockMask::from_dense(valid.expand({b, h, valid.size(0), valid.size(1)}).contiguous(), bq, bk, nq,
                               nk);
}

}  // namespace sparge::test
