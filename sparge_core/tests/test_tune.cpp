// Per-head threshold tuner (sparge/tune.h) on the CPU reference path: planted optima, brute force, held-out
// inputs, the error bounds, head-order equivariance and bad input. Fresh random inputs every run (seeds are
// printed). The SmolLM2-shaped timing run is DISABLED_ (run it with --gtest_also_run_disabled_tests).
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <string>

#include "sparge/tune.h"
#include "test_util.h"

namespace sparge {
namespace {

constexpr int64_t kN = 512, kD = 64, kBlock = 64;

SpargeConfig base_config(bool causal) {
  SpargeConfig c;
  c.block_q = kBlock;
  c.block_k = kBlock;
  c.causal = causal;
  return c;
}

QkvSample as_sample(const QKV& x) {
  return {x.q, x.k, x.v};
}

// Heads of several MHA inputs side by side (all (1, 1, N, D) per part).
QkvSample cat_heads(const std::vector<QKV>& parts) {
  std::vector<at::Tensor> q, k, v;
  for (const auto& p : parts) {
    q.push_back(p.q);
    k.push_back(p.k);
    v.push_back(p.v);
  }
  return {at::cat(q, 1), at::cat(k, 1), at::cat(v, 1)};
}

// Per-head relative L1 of `config` on `x` against dense float64 attention.
// `ref`: the dense output when already known (broadcast over heads allowed).
std::vector<double> head_l1(const QkvSample& x, const SpargeConfig& config, at::Tensor ref = {}) {
  const auto out = spas_attention(x.q, x.k, x.v, config).out.to(at::kDouble);
  if (!ref.defined()) ref = dense_attention_f64(x.q, x.k, x.v, config.causal, config.scale).out;
  ref = ref.expand_as(out);
  const auto l1 = ((out - ref).abs().sum({0, 2, 3}) / ref.abs().sum({0, 2, 3})).contiguous();
  return std::vector<double>(l1.data_ptr<double>(), l1.data_ptr<double>() + l1.numel());
}

void print_result(const char* name, const TuneResult& r) {
  std::printf("%s: %lld passes, %lld head evaluations, %.2f s\n", name, static_cast<long long>(r.passes),
              static_cast<long long>(r.head_evals), r.seconds);
  for (size_t h = 0; h < r.heads.size(); ++h) {
    const auto& p = r.heads[h];
    std::printf("  head %zu: theta %+.4f tau %.4f pv %.3f dense %d sparsity %.3f l1 %.4f l1+stage2 %.4f\n", h,
                p.simthreshd1, p.cdfthreshd, p.pvthreshd, p.dense ? 1 : 0, p.sparsity, p.l1,
                p.l1_with_stage2);
  }
}

// Head 0: sharp local attention (large sparsity is free). Head 1: i.i.d. normal q, k, v (near-uniform
// attention: dropping any key block breaks l1, so it must come out dense). Head 2: moderate structure, whose
// tau is checked by brute force.
TEST(Tune, PlantedOptimaAndBruteForceTau) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  StructuredSpec sharp{.batch = 1, .heads_q = 1, .heads_kv = 1, .seq_q = kN, .seq_k = kN, .head_dim = kD};
  sharp.window = 32;
  sharp.sharpness = 14.0;
  sharp.noise = 0.1;
  sharp.sink_tokens = 0;
  StructuredSpec mid = sharp;
  mid.window = 128;
  mid.sharpness = 6.0;
  mid.noise = 0.3;
  mid.sink_tokens = 16;
  const auto x = cat_heads({structured_qkv(sharp, seed, {}), random_qkv(1, 1, 1, kN, kN, kD, seed + 1, {}),
                            structured_qkv(mid, seed + 2, {})});
  const auto base = base_config(false);
  TuneTargets t;
  const auto r = tune_layer({x}, base, t);
  print_result("planted", r);
  ASSERT_EQ(r.heads.size(), 3u);
  EXPECT_FALSE(r.heads[0].dense);
  EXPECT_GT(r.heads[0].sparsity, 0.6);
  EXPECT_TRUE(r.heads[1].dense);
  EXPECT_EQ(r.heads[1].sparsity, 0.0);
  ASSERT_FALSE(r.heads[2].dense) << "the brute-force head came out dense";

  // Brute force for head 2 at its tuned theta: L1 at tau = i / 512 (half the bisection step), 64
  // candidates per call (head 2 replicated, one tau per copy).
  constexpr int kGrid = 512, kPerCall = 64;
  const QkvSample h2{x.q.narrow(1, 2, 1).expand({1, kPerCall, kN, kD}).contiguous(),
                     x.k.narrow(1, 2, 1).expand({1, kPerCall, kN, kD}).contiguous(),
                     x.v.narrow(1, 2, 1).expand({1, kPerCall, kN, kD}).contiguous()};
  const auto ref2 =
      dense_attention_f64(h2.q.narrow(1, 0, 1), h2.k.narrow(1, 0, 1), h2.v.narrow(1, 0, 1), base.causal).out;
  double tau_bf = 1.0;
  for (int i0 = 0; i0 <= kGrid; i0 += kPerCall) {
    auto c = base;
    c.simthreshd1 = {r.heads[2].simthreshd1};
    c.cdfthreshd.clear();
    for (int i = 0; i < kPerCall; ++i) c.cdfthreshd.push_back(std::min(1.0, (i0 + i) / double(kGrid)));
    const auto l1 = head_l1(h2, c, ref2);
    for (int i = kPerCall - 1; i >= 0; --i)  // smallest feasible tau: scanned from the top of each chunk
      if (l1[i] < t.l1 && c.cdfthreshd[i] < tau_bf) tau_bf = c.cdfthreshd[i];
  }
  const double step = std::ldexp(1.0, -t.tau_steps);
  std::printf(
      "head 2: tuned tau %.5f, brute-force smallest tau with l1 < %.2f on a 1/%d grid: %.5f "
      "(|diff| %.5f, bisection step %.5f)\n",
      r.heads[2].cdfthreshd, t.l1, kGrid, tau_bf, std::abs(r.heads[2].cdfthreshd - tau_bf), step);
  EXPECT_LE(std::abs(r.heads[2].cdfthreshd - tau_bf), step + 1e-12);
}

// Tune on two inputs, apply to a third from the same generator; also: the bounds on the calibration inputs
// hold (as reported and as recomputed), and permuting the heads permutes the result.
TEST(Tune, HeldOutBoundsAndHeadOrder) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  // 4 heads with different structure, MHA so heads can be permuted with their kv: three clearly sparse
  // (sharp local attention), one clearly dense (wide and flat). Heads with marginal sparsity (window >= 64
  // at sharpness <= 8 here) can exceed 1.5 x l1 on fresh inputs: tuned on 2 inputs, their theta lies inside
  // the block-similarity distribution and the chosen tau near 1 (see the report of the tuner's issue).
  std::vector<StructuredSpec> specs(4);
  const int64_t windows[4] = {32, 24, 40, 1024};
  const double sharpness[4] = {12.0, 14.0, 12.0, 1.0};
  for (int h = 0; h < 4; ++h) {
    specs[h] = {.batch = 1, .heads_q = 1, .heads_kv = 1, .seq_q = kN, .seq_k = kN, .head_dim = kD};
    specs[h].window = windows[h];
    specs[h].sharpness = sharpness[h];
  }
  const auto draw = [&](uint64_t s) {
    std::vector<QKV> parts;
    for (int h = 0; h < 4; ++h) parts.push_back(structured_qkv(specs[h], s * 7919 + h, {}));
    return cat_heads(parts);
  };
  const std::vector<QkvSample> calib = {draw(seed), draw(seed + 1)};
  const auto held_out = draw(seed + 2);
  const auto base = base_config(true);
  TuneTargets t;
  const auto r = tune_layer(calib, base, t);
  print_result("held-out", r);
  const auto tuned = apply_tuned(base, r.heads);

  // Bounds on the calibration inputs: reported, and recomputed independently (stage 1 alone and with 2).
  auto stage1 = tuned;
  stage1.pvthreshd = {kNoStage2};
  for (size_t s = 0; s < calib.size(); ++s) {
    const auto l1_s1 = head_l1(calib[s], stage1), l1_s2 = head_l1(calib[s], tuned);
    for (size_t h = 0; h < r.heads.size(); ++h) {
      std::printf("  calib %zu head %zu: l1 %.4f (<= %.2f), with stage 2 %.4f (<= %.2f)\n", s, h, l1_s1[h],
                  t.l1, l1_s2[h], t.l2);
      EXPECT_LT(l1_s1[h], t.l1) << "input " << s << " head " << h;
      EXPECT_LT(l1_s2[h], t.l2) << "input " << s << " head " << h;
    }
  }
  for (const auto& p : r.heads) {
    EXPECT_LT(p.l1, t.l1);
    EXPECT_LT(p.l1_with_stage2, t.l2);
  }

  // Held out: per-head L1 stays within 1.5 x the bound.
  const auto l1_new = head_l1(held_out, stage1), l2_new = head_l1(held_out, tuned);
  for (size_t h = 0; h < r.heads.size(); ++h) {
    std::printf("  held-out head %zu: l1 %.4f = %.2f x l1, with stage 2 %.4f = %.2f x l2 (sparsity %.3f)\n",
                h, l1_new[h], l1_new[h] / t.l1, l2_new[h], l2_new[h] / t.l2, r.heads[h].sparsity);
    EXPECT_LT(l1_new[h], 1.5 * t.l1) << "head " << h;
  }
  // Not asserted: stage 2 with pvthreshd at the edge found on 2 inputs does not transfer reliably. Its error
  // is a cliff in pvthreshd (whole groups of blocks far below a sink's row max are skipped at once); the
  // flat head 3 was seen at up to 7.8 x l2 on a fresh input (and 0.0 on others).

  // Head order: permuting the heads of every input permutes the tuned parameters.
  const std::vector<int64_t> perm = {2, 0, 3, 1};
  const auto idx = at::tensor(perm, at::TensorOptions(at::kLong));
  std::vector<QkvSample> permuted;
  for (const auto& x : calib)
    permuted.push_back({x.q.index_select(1, idx), x.k.index_select(1, idx), x.v.index_select(1, idx)});
  const auto rp = tune_layer(permuted, base, t);
  for (size_t i = 0; i < perm.size(); ++i) {
    const auto &a = rp.heads[i], &b = r.heads[perm[i]];
    EXPECT_EQ(a.simthreshd1, b.simthreshd1) << "permuted head " << i;
    EXPECT_EQ(a.cdfthreshd, b.cdfthreshd) << "permuted head " << i;
    EXPECT_EQ(a.pvthreshd, b.pvthreshd) << "permuted head " << i;
    EXPECT_EQ(a.dense, b.dense) << "permuted head " << i;
    EXPECT_NEAR(a.sparsity, b.sparsity, 1e-12) << "permuted head " << i;
    EXPECT_NEAR(a.l1, b.l1, 1e-9) << "permuted head " << i;
  }
  std::printf("permuted run: %lld passes, %.2f s; parameters permute with the heads\n",
              static_cast<long long>(rp.passes), rp.seconds);
}

// GQA (4 query heads on 2 kv heads, partial last blocks): candidates of single heads are gathered with
// their kv head during the search; the chosen parameters must still meet the bounds when applied to the
// original GQA tensors.
TEST(Tune, GqaBoundsHold) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  StructuredSpec spec{.batch = 2, .heads_q = 4, .heads_kv = 2, .seq_q = 300, .seq_k = 300, .head_dim = kD};
  spec.window = 48;
  spec.sharpness = 7.0;
  SpargeConfig base;  // 128 x 64 blocks
  base.causal = true;
  const std::vector<QkvSample> calib = {as_sample(structured_qkv(spec, seed, {})),
                                        as_sample(structured_qkv(spec, seed + 1, {}))};
  TuneTargets t;
  const auto r = tune_layer(calib, base, t);
  print_result("gqa", r);
  const auto tuned = apply_tuned(base, r.heads);
  auto stage1 = tuned;
  stage1.pvthreshd = {kNoStage2};
  for (const auto& x : calib) {
    const auto l1_s1 = head_l1(x, stage1), l1_s2 = head_l1(x, tuned);
    for (size_t h = 0; h < l1_s1.size(); ++h) {
      EXPECT_LT(l1_s1[h], t.l1) << "head " << h;
      EXPECT_LT(l1_s2[h], t.l2) << "head " << h;
      EXPECT_LE(l1_s1[h], r.heads[h].l1 + 1e-12) << "head " << h;
      EXPECT_LE(l1_s2[h], r.heads[h].l1_with_stage2 + 1e-12) << "head " << h;
    }
  }
}

// The error names the bad argument.
void expect_error(const std::function<void()>& f, const std::string& argument) {
  try {
    f();
    ADD_FAILURE() << "no error for " << argument;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(argument), std::string::npos) << e.what();
  }
}

TEST(Tune, BadInputNamesTheArgument) {
  const auto x = as_sample(random_qkv(1, 2, 1, 128, 128, kD, test::fresh_seed(), {}));
  const auto base = base_config(false);
  TuneTargets t;
  expect_error([&] { tune_layer({}, base, t); }, "`inputs`");
  expect_error([&] { tune_layer({x, {x.q.narrow(1, 0, 1), x.k, x.v}}, base, t); }, "`inputs[1].q`");
  expect_error([&] { tune_layer({{x.q, x.k.narrow(3, 0, 32), x.v}}, base, t); }, "`inputs[0].v`");
  expect_error(
      [&] {
        tune_layer({{x.q, x.k.narrow(3, 0, 32), x.v.narrow(3, 0, 32)}}, base, t);
      },
      "`inputs[0].k`");
  expect_error([&] { tune_layer({{x.q, x.k, x.v.narrow(2, 0, 64)}}, base, t); }, "`inputs[0].v`");
  auto bad = t;
  bad.l2 = t.l1 / 2;
  expect_error([&] { tune_layer({x}, base, bad); }, "`t.l2`");
  bad = t;
  bad.l1 = 0.0;
  expect_error([&] { tune_layer({x}, base, bad); }, "`t.l1`");
  bad = t;
  bad.thetas = {0.5, 1.5};
  expect_error([&] { tune_layer({x}, base, bad); }, "`t.thetas[1]`");
  bad = t;
  bad.tau_steps = 0;
  expect_error([&] { tune_layer({x}, base, bad); }, "`t.tau_steps`");
  bad = t;
  bad.lambda_max = -1.0;
  expect_error([&] { tune_layer({x}, base, bad); }, "`t.lambda_max`");
  auto topk = base;
  topk.select = SelectMode::kTopk;
  expect_error([&] { tune_layer({x}, topk, t); }, "`base.select`");
  expect_error([&] { apply_tuned(base, {}); }, "`heads`");
}

// Timing of one SmolLM2-135M-shaped layer (9 query heads, 3 kv heads, D 64, N 1024, causal, 128x64 blocks)
// on two calibration inputs.
TEST(Tune, DISABLED_SmolLM2LayerTiming) {
  const uint64_t seed = test::fresh_seed();
  StructuredSpec spec{.batch = 1, .heads_q = 9, .heads_kv = 3, .seq_q = 1024, .seq_k = 1024, .head_dim = 64};
  SpargeConfig base;  // 128 x 64 blocks
  base.causal = true;
  const std::vector<QkvSample> calib = {as_sample(structured_qkv(spec, seed, {})),
                                        as_sample(structured_qkv(spec, seed + 1, {}))};
  const auto r = tune_layer(calib, base, TuneTargets{});
  print_result("SmolLM2 layer (9/3 heads, D 64, N 1024, causal, 2 inputs)", r);
}

}  // namespace
}  // namespace sparge
