// Bad input fails with a sparge::Error whose message names the argument and the expected value, never a
// crash. To add a case: append to cases() a name, the message fragment expected, and a call that must throw.
#include <gtest/gtest.h>

#include <functional>

#include "sparge/permute.h"
#include "test_util.h"

namespace sparge {
namespace {

struct BadCase {
  std::string name, expect;
  std::function<void()> call;
};

std::vector<BadCase> cases() {
  const auto f = at::TensorOptions(at::kFloat);
  const auto q = at::randn({1, 4, 64, 32}, f), k = at::randn({1, 2, 64, 32}, f),
             v = at::randn({1, 2, 64, 32}, f);
  auto with = [](auto edit) {
    SpargeConfig c;
    edit(c);
    return c;
  };
  const SpargeConfig ok;
  return {
      {"rank", "argument `q`: expected rank 4", [=] { spas_attention(q[0], k, v, ok); }},
      {"dtype", "argument `q`: expected dtype", [=] { spas_attention(q.to(at::kInt), k, v, ok); }},
      {"dtype_mismatch", "argument `k`: expected the dtype of q",
       [=] { spas_attention(q, k.to(at::kHalf), v, ok); }},
      {"heads", "must be a multiple",
       [=] {
         spas_attention(q, at::randn({1, 3, 64, 32}), v, ok);
       }},
      {"head_dim", "argument `k`: expected head dim 32",
       [=] {
         spas_attention(q, at::randn({1, 2, 64, 16}), v, ok);
       }},
      {"batch", "argument `k`: expected batch 1",
       [=] {
         spas_attention(q, at::randn({2, 2, 64, 32}), v, ok);
       }},
      {"v_shape", "argument `v`: expected the shape of k",
       [=] {
         spas_attention(q, k, at::randn({1, 2, 63, 32}), ok);
       }},
      {"empty", "argument `k`: expected non-empty",
       [=] {
         spas_attention(q, at::randn({1, 2, 0, 32}), v, ok);
       }},
      {"causal_long_q", "argument `causal`",
       [=] {
         spas_attention(q, k.narrow(2, 0, 10), v.narrow(2, 0, 10), with([](auto& c) { c.causal = true; }));
       }},
      {"simthreshd1", "argument `simthreshd1`[0]: expected a value in [-1, 1]",
       [=] { spas_attention(q, k, v, with([](auto& c) { c.simthreshd1 = {1.5}; })); }},
      {"cdfthreshd", "argument `cdfthreshd`[1]",
       [=] { spas_attention(q, k, v, with([](auto& c) {
                              c.cdfthreshd = {0.9, -0.1, 0.9, 0.9};
                            })); }},
      {"cdfthreshd_size", "expected 1 value or one per query head (4), got 3",
       [=] { spas_attention(q, k, v, with([](auto& c) {
                              c.cdfthreshd = {0.9, 0.9, 0.9};
                            })); }},
      {"topk_nan", "argument `topk`[0]",
       [=] { spas_attention(q, k, v, with([](auto& c) { c.topk = {std::nan("")}; })); }},
      {"pvthreshd", "argument `pvthreshd`[0]: expected a value in (0",
       [=] { spas_attention(q, k, v, with([](auto& c) { c.pvthreshd = {0.0}; })); }},
      {"block_q", "argument `block_q`: expected >= 1",
       [=] { spas_attention(q, k, v, with([](auto& c) { c.block_q = 0; })); }},
      {"group_rows", "argument `stage2_group_rows`",
       [=] { spas_attention(q, k, v, with([](auto& c) { c.stage2_group_rows = 48; })); }},
      {"scale", "argument `scale`", [=] { spas_attention(q, k, v, with([](auto& c) { c.scale = -1.0; })); }},
      {"mask_seq", "argument `mask`: expected Nq = 64",
       [=] { block_sparse_attention(q, k, v, test::full_mask(1, 4, 128, 64, 64, 64, false), ok); }},
      {"mask_heads", "argument `mask`: expected (B, Hq) = (1, 4)",
       [=] { block_sparse_attention(q, k, v, test::full_mask(1, 2, 64, 64, 64, 64, false), ok); }},
      {"layout_name", "argument `layout`", [] { parse_layout("BHND"); }},
      {"quant_name", "argument `quant`", [] { parse_quant_mode("int4"); }},
      {"permutation", "argument `perm`",
       [=] {
         permute_tokens(q, {0, 0});
       }},
  };
}

TEST(Errors, BadInputNamesTheArgument) {
  for (const auto& c : cases()) {
    try {
      c.call();
      ADD_FAILURE() << c.name << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos)
          << c.name << ": message \"" << e.what() << "\" lacks \"" << c.expect << "\"";
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << ": wrong exception type: " << e.what();
    }
  }
}

TEST(Errors, DeviceMismatchIsReportedWhenAGpuExists) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device: the q/k device mismatch check needs a second device";
  const auto q = at::randn({1, 1, 8, 8}), k = q.cuda();
  EXPECT_THROW(spas_attention(q, k, k, SpargeConfig{}), Error);
}

}  // namespace
}  // namespace sparge
