// The tuned-parameter file and `sparge tune` end to end on CPU: the file round-trips (stage 2 off as null);
// truncated, edited or malformed files are refused with the field named; `sparge tune` on SmolLM2 writes a
// file per layer, resumes, refuses a file tuned with other settings; run specs load it with `tuned:` (per
// layer, checked against the model) and keep its error bound on held-out text.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <torch/cuda.h>

#include "engine.h"
#include "posix_fs.h"
#include "sparge/reference.h"
#include "sparge/synthetic.h"
#include "tune_task.h"
#include "tuned_params.h"

namespace sparge::runner {
namespace {

using json = nlohmann::json;

const std::string kSource = SPARGE_SOURCE_DIR;
const std::string kSmolLM2 = kSource + "/data/models/SmolLM2-135M-Instruct.Q4_1.gguf";

std::string fresh(const std::string& name) {
  const std::string p = "/tmp/sparge_test_tuned_" + name + "_" + std::to_string(::getpid());
  posix::remove_tree(p);
  return p;
}

TunedParams sample_params() {
  TunedParams p;
  p.model = {{"id", "m.gguf"}, {"hash", "fnv1a64:0123456789abcdef"}, {"heads", 3}};
  p.calibration = {{"id", "corpus#1 x 2"}};
  p.targets.l1 = 0.05;
  p.targets.l2 = 0.06;
  p.targets.tau_steps = 7;
  p.config.block_q = 64;
  p.config.block_k = 32;
  p.config.quant = QuantMode::kInt8;
  p.config.stage2_group_rows = 32;
  p.config.attention_sink = true;
  p.backend = "reference (LibTorch)";
  p.complete = true;
  for (int64_t l : {0, 2}) {
    TunedLayer tl;
    tl.layer = l;
    tl.seconds = 1.25 + l;
    tl.passes = 30 + l;
    tl.head_evals = 300;
    for (int h = 0; h < 3; ++h) {
      HeadParams hp;
      hp.simthreshd1 = -0.25 + 0.0625 * h + l;  // layer 2: 1.75 etc. would be out of range; keep <= 1
      hp.simthreshd1 = std::min(hp.simthreshd1, 0.9375);
      hp.cdfthreshd = 0.1 * (h + 1) + 1.0 / 3.0 * 0.01;
      hp.pvthreshd = h == 1 ? kNoStage2 : 3.0 + h;
      hp.dense = h == 2;
      hp.sparsity = 0.4 / (h + 1);
      hp.l1 = 0.04;
      hp.l1_with_stage2 = 0.055;
      tl.heads.push_back(hp);
    }
    p.layers.push_back(tl);
  }
  return p;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_all(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// The load error for `text`, "" when it loads.
std::string load_error(const std::string& path, const std::string& text) {
  write_all(path, text);
  try {
    load_tuned_params(path);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(TunedParams, FileRoundTrips) {
  const auto dir = fresh("roundtrip");
  const auto path = dir + "/sub/p.json";  // directories are created
  const auto p = sample_params();
  save_tuned_params(path, p);
  const auto q = load_tuned_params(path);
  EXPECT_EQ(q.model, p.model);
  EXPECT_EQ(q.calibration, p.calibration);
  EXPECT_EQ(q.targets.l1, p.targets.l1);
  EXPECT_EQ(q.targets.l2, p.targets.l2);
  EXPECT_EQ(q.targets.tau_steps, 7);
  EXPECT_EQ(q.config.block_q, 64);
  EXPECT_EQ(q.config.block_k, 32);
  EXPECT_EQ(q.config.quant, QuantMode::kInt8);
  EXPECT_TRUE(q.config.attention_sink);
  EXPECT_EQ(q.backend, p.backend);
  EXPECT_TRUE(q.complete);
  ASSERT_EQ(q.layers.size(), 2u);
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_EQ(q.layers[l].layer, p.layers[l].layer);
    EXPECT_EQ(q.layers[l].passes, p.layers[l].passes);
    ASSERT_EQ(q.layers[l].heads.size(), 3u);
    for (size_t h = 0; h < 3; ++h) {
      const auto &a = q.layers[l].heads[h], &b = p.layers[l].heads[h];
      EXPECT_EQ(a.simthreshd1, b.simthreshd1);  // bit-exact: JSON numbers round-trip doubles
      EXPECT_EQ(a.cdfthreshd, b.cdfthreshd);
      EXPECT_EQ(a.pvthreshd, b.pvthreshd);  // +inf (stage 2 off) is written as null
      EXPECT_EQ(a.dense, b.dense);
      EXPECT_EQ(a.sparsity, b.sparsity);
    }
  }
  EXPECT_NE(read_all(path).find("\"pvthreshd\": null"), std::string::npos);
  // Saving what was loaded gives the same bytes.
  save_tuned_params(dir + "/again.json", q);
  EXPECT_EQ(read_all(dir + "/again.json"), read_all(path));
  // The per-layer configuration: the file's fixed part with the layer's thresholds; dense heads compute all.
  const auto c = q.layer_config(2, 3, path);
  EXPECT_EQ(c.block_q, 64);
  ASSERT_EQ(c.simthreshd1.size(), 3u);
  EXPECT_EQ(c.simthreshd1[0], p.layers[1].heads[0].simthreshd1);
  EXPECT_EQ(c.simthreshd1[2], 1.0);
  EXPECT_EQ(c.cdfthreshd[2], 1.0);
  EXPECT_TRUE(std::isinf(c.pvthreshd[1]));
  const auto expect_throw = [&](int64_t layer, int64_t heads, const std::string& what) {
    try {
      q.layer_config(layer, heads, path);
      ADD_FAILURE() << "no error for layer " << layer;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_throw(1, 3, "no entry for layer 1 (it has layers 0, 2)");
  expect_throw(0, 9, "layer 0 has 3 heads, the attention call has 9 query heads");
  posix::remove_tree(dir);
}

TEST(TunedParams, CorruptedFilesAreRefusedWithTheField) {
  const auto dir = fresh("corrupt");
  posix::make_dirs(dir);
  const auto path = dir + "/p.json";
  save_tuned_params(path, sample_params());
  const auto good = read_all(path);
  const auto expect = [&](const std::string& text, const std::string& what) {
    const auto e = load_error(path, text);
    EXPECT_NE(e.find(what), std::string::npos) << "got: " << (e.empty() ? "(loaded)" : e);
    EXPECT_NE(e.find(path), std::string::npos) << "the file is named: " << e;
  };
  // Truncated (a killed writer would not leave this: writes are atomic; a copy or disk problem might).
  expect(good.substr(0, good.size() / 2), "not valid JSON");
  expect("", "not valid JSON");
  // One value changed: the checksum catches it.
  auto edited = json::parse(good);
  edited["layers"][0]["heads"][1]["cdfthreshd"] = 0.5;
  expect(edited.dump(1), "`checksum` is");
  // Without the checksum (a deliberate hand edit) the values are still validated, each naming its field.
  auto j = json::parse(good);
  j.erase("checksum");
  EXPECT_EQ(load_error(path, j.dump()), "") << "a file without checksum loads";
  auto bad = j;
  bad["layers"][0]["heads"][1]["cdfthreshd"] = 1.5;
  expect(bad.dump(), "`layers[0].heads[1].cdfthreshd` must be in [0, 1], got 1.5");
  bad = j;
  bad["layers"][1]["heads"][0].erase("simthreshd1");
  expect(bad.dump(), "`layers[1].heads[0].simthreshd1` is missing");
  bad = j;
  bad["layers"][1]["heads"][0]["pvthreshd"] = "fast";
  expect(bad.dump(), "`layers[1].heads[0].pvthreshd` must be a number, got \"fast\"");
  bad = j;
  bad["layers"][1]["heads"].erase(2);
  expect(bad.dump(), "`layers[1].heads` has 2 entries, layers[0] has 3");
  bad = j;
  bad["layers"][1]["layer"] = 0;
  expect(bad.dump(), "`layers[1].layer` repeats layer 0");
  bad = j;
  bad["format"] = "something-else";
  expect(bad.dump(), "`format` must be \"sparge-tuned-params\"");
  bad = j;
  bad["version"] = 2;
  expect(bad.dump(), "`version` is 2, this build reads version 1");
  bad = j;
  bad["config"]["quant"] = "fp4";
  expect(bad.dump(), "`config.quant` must be none, int8 or int8_fp8");
  bad = j;
  bad["targets"]["l2"] = 0.01;
  expect(bad.dump(), "`targets.l2` must be in [0.05");
  expect("[1, 2]", "must be a JSON object");
  try {
    load_tuned_params(dir + "/missing.json");
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be read"), std::string::npos) << e.what();
  }
  posix::remove_tree(dir);
}

TEST(TunedParams, ModelHashSeesContentAndSize) {
  const auto dir = fresh("hash");
  posix::make_dirs(dir);
  write_all(dir + "/a.gguf", std::string(1000, 'x'));
  const auto h1 = model_hash(dir + "/a.gguf");
  EXPECT_EQ(h1.rfind("fnv1a64:", 0), 0u);
  EXPECT_EQ(model_hash(dir + "/a.gguf"), h1);
  write_all(dir + "/a.gguf", std::string(999, 'x') + "y");
  EXPECT_NE(model_hash(dir + "/a.gguf"), h1);
  EXPECT_NE(model_hash(dir), "");  // a directory: its weight files
  EXPECT_THROW(model_hash(dir + "/none"), std::invalid_argument);
  posix::remove_tree(dir);
}

// `sparge tune` on SmolLM2, small: two layers, one 256-token window, coarse search.
TuneOptions small_tune(const std::string& out) {
  TuneOptions o;
  o.output = out;
  o.progress = false;
  o.device = "cpu";
  o.overrides = {"tune.calibration.seq_len=256", "tune.calibration.samples=1", "tune.search.tau_steps=5",
                 "tune.search.lambda_steps=4", "tune.layers=[0, 29]"};
  return o;
}

TEST(Tune, SmolLM2TunesResumesAndRefusesOtherSettings) {
  if (!posix::exists(kSmolLM2)) GTEST_SKIP() << kSmolLM2 << " is missing: run scripts/setup.sh";
  const auto dir = fresh("cli");
  const auto file = dir + "/smollm2.json";
  const auto spec = kSource + "/experiments/tune_smollm2.yaml";
  // First one layer, then both: the second call keeps layer 0 and tunes layer 29 (per-layer resume).
  auto o = small_tune(file);
  o.overrides.back() = "tune.layers=[0]";
  auto s = tune_spec(spec, o);
  EXPECT_EQ(s.tuned, 1);
  EXPECT_EQ(s.backend, "reference (LibTorch)");
  const auto first = load_tuned_params(file);
  s = tune_spec(spec, small_tune(file));
  EXPECT_EQ(s.layers, 2);
  EXPECT_EQ(s.resumed, 1);
  EXPECT_EQ(s.tuned, 1);
  const auto p = load_tuned_params(file);
  EXPECT_TRUE(p.complete);
  ASSERT_EQ(p.layers.size(), 2u);
  EXPECT_EQ(p.layers[0].layer, 0);
  EXPECT_EQ(p.layers[1].layer, 29);
  EXPECT_EQ(p.layers[0].heads.size(), 9u);
  EXPECT_EQ(p.layers[0].heads[4].cdfthreshd, first.layers[0].heads[4].cdfthreshd) << "layer 0 kept";
  EXPECT_EQ(p.model.at("hash"), model_hash(kSmolLM2));
  EXPECT_EQ(p.model.at("kv_heads"), 3);
  EXPECT_EQ(p.targets.l1, 0.08);
  EXPECT_TRUE(p.config.attention_sink);
  for (const auto& l : p.layers)
    for (const auto& h : l.heads) {
      EXPECT_LT(h.l1, 0.08);
      EXPECT_LT(h.l1_with_stage2, 0.09);
      EXPECT_GE(h.sparsity, 0.0);
    }
  // Nothing left: a third call tunes nothing.
  s = tune_spec(spec, small_tune(file));
  EXPECT_EQ(s.tuned, 0);
  EXPECT_EQ(s.resumed, 2);
  // Other targets: refused (naming what differs) unless restarted.
  auto other = small_tune(file);
  other.overrides.push_back("tune.l1=0.05");
  try {
    tune_spec(spec, other);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("targets differs"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--restart"), std::string::npos) << e.what();
  }
  other.restart = true;
  other.overrides.back() = "tune.l2=0.2";  // restart with a wider stage-2 bound, one layer
  other.overrides.push_back("tune.layers=[29]");
  s = tune_spec(spec, other);
  EXPECT_EQ(s.tuned, 1);
  EXPECT_EQ(load_tuned_params(file).layers.size(), 1u);
  // Bad tune sections are named.
  auto bad = small_tune(dir + "/bad.json");
  bad.overrides.push_back("tune.method.cdfthreshd=0.9");
  try {
    tune_spec(spec, bad);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("tune.method: unknown parameter `cdfthreshd`"), std::string::npos)
        << e.what();
  }
  TuneOptions plain;
  plain.output = dir + "/q.json";
  try {
    tune_spec(kSource + "/experiments/quickstart.yaml", plain);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("no tune: section"), std::string::npos) << e.what();
  }
  RunOptions ro;
  ro.output = dir + "/run";
  EXPECT_THROW(run_spec(spec, ro), std::invalid_argument) << "a tune spec is not an experiment";
  posix::remove_tree(dir);
}

// A run spec loads the file with `tuned:`: per-layer thresholds on captured attention of the layers it was
// tuned for, at the bound on held-out text; the CLI runs; wrong files and mixed parameters are refused.
TEST(Tune, RunSpecsUseTheTunedFile) {
  if (!posix::exists(kSmolLM2)) GTEST_SKIP() << kSmolLM2 << " is missing: run scripts/setup.sh";
  const auto dir = fresh("use");
  const auto file = dir + "/smollm2.json";
  const std::string cmd = "'" + std::string(SPARGE_BIN) + "' tune '" + kSource +
                          "/experiments/tune_smollm2.yaml' --device cpu --no-progress --output '" + file +
                          "' --set tune.calibration.seq_len=512 --set tune.search.lambda_steps=4 --set "
                          "'tune.layers=[0, 15]' > '" +
                          dir + "_log.txt' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_all(dir + "_log.txt");
  EXPECT_NE(read_all(dir + "_log.txt").find("done: 2 layers"), std::string::npos)
      << read_all(dir + "_log.txt");
  // Held-out text (tokens 0-511, the calibration read 16384-16895) on the two tuned layers.
  RunOptions o;
  o.output = dir + "/run";
  o.progress = false;
  o.device = "cpu";
  o.overrides = {"sweep={task.params.seq: [512]}", "task.samples=2", "task.params.layers=[0, 15]",
                 "methods={tuned: {type: sparge, tuned: " + file +
                     "}, tuned_s1: {type: sparge, tuned: " + file + ", stage2: false}}"};
  run_spec(kSource + "/experiments/sparsity_vs_length.yaml", o);
  std::ifstream f(o.output + "/results.json");
  const auto r = json::parse(f).at("results").at("seq=512");
  const double l1_s1 = r.at("tuned_s1").at("relative_l1").get<double>();
  const double l1 = r.at("tuned").at("relative_l1").get<double>();
  // The bound holds on the calibration text; held-out text may exceed it somewhat (reported in the notes).
  EXPECT_LT(l1_s1, 1.5 * 0.08) << "stage 1 on held-out text";
  EXPECT_LT(l1, 1.5 * 0.09) << "stage 1 + 2 on held-out text";
  EXPECT_GT(r.at("tuned_s1").at("stage1_sparsity").get<double>(), 0.1);
  std::printf("held-out relative L1: stage 1 %.4f (l1 0.08), + stage 2 %.4f (l2 0.09); sparsity %.3f\n",
              l1_s1, l1, r.at("tuned_s1").at("stage1_sparsity").get<double>());
  // A layer the file lacks, thresholds next to `tuned`, and a file for another model are refused.
  o.output = dir + "/run2";
  o.overrides[2] = "task.params.layers=[0, 3]";
  try {
    run_spec(kSource + "/experiments/sparsity_vs_length.yaml", o);
    ADD_FAILURE() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("no entry for layer 3 (it has layers 0, 15)"), std::string::npos)
        << e.what();
  }
  o.overrides[3] = "methods={tuned: {type: sparge, tuned: " + file + ", cdfthreshd: 0.9}}";
  try {
    run_spec(kSource + "/experiments/sparsity_vs_length.yaml", o);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("parameter `cdfthreshd` cannot be combined with `tuned`"),
              std::string::npos)
        << e.what();
  }
  auto other = load_tuned_params(file);
  other.model["hash"] = "fnv1a64:0000000000000000";
  save_tuned_params(dir + "/other.json", other);
  RunOptions lm;
  lm.output = dir + "/lm";
  lm.progress = false;
  lm.device = "cpu";
  lm.overrides = {"tasks={ppl: {name: perplexity, params: {seq_len: 64, stride: 64, max_tokens: 128}}}",
                  "methods={tuned: {type: sparge, tuned: " + dir + "/other.json}}",
                  "metrics=[{name: perplexity}]"};
  try {
    run_spec(kSource + "/experiments/table1_smollm2.yaml", lm);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(
        std::string(e.what()).find("its tuned parameters are for model SmolLM2-135M-Instruct.Q4_1.gguf"),
        std::string::npos)
        << e.what();
  }
  posix::remove_tree(dir);
  std::remove((dir + "_log.txt").c_str());
}

// Calibration from an attention task's inputs (no model): its samples are one layer's inputs; a run spec on
// such inputs (no layer) uses the file's single layer.
TEST(Tune, AttentionTaskInputsCalibrateOneLayer) {
  const auto dir = fresh("task");
  TuneOptions o;
  o.output = dir + "/layer.json";
  o.progress = false;
  o.device = "cpu";
  o.overrides = {"task.params.grid=[4, 8, 8]", "task.params.heads=2", "task.params.text_tokens=16",
                 "tune.method.backend=reference", "tune.search.tau_steps=5"};
  const auto s = tune_spec(kSource + "/experiments/tune_cogvideox_layer.yaml", o);
  EXPECT_EQ(s.layers, 1);
  EXPECT_EQ(s.tuned, 1);
  const auto p = load_tuned_params(o.output);
  ASSERT_EQ(p.layers.size(), 1u);
  EXPECT_EQ(p.layers[0].layer, 0);
  EXPECT_EQ(p.layers[0].heads.size(), 2u);
  EXPECT_EQ(p.model.at("seq"), 4 * 8 * 8 + 16);
  EXPECT_EQ(p.model.at("id"), "attention:structured_visual");
  EXPECT_FALSE(p.model.contains("hash"));
  for (const auto& h : p.layers[0].heads) EXPECT_LT(h.l1, 0.05);
  RunOptions r;
  r.output = dir + "/run";
  r.progress = false;
  r.device = "cpu";
  r.overrides = {"task.params.seq=272", "task.params.heads=2", "task.params.kv_heads=2",
                 "methods={tuned: {type: sparge, tuned: " + o.output + "}}"};
  EXPECT_EQ(run_spec(kSource + "/experiments/quickstart.yaml", r).computed, 3);
  // A wrong spec is named: text calibration next to a task.
  o.overrides.push_back("tune.calibration={seq_len: 64}");
  try {
    tune_spec(kSource + "/experiments/tune_cogvideox_layer.yaml", o);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("tune.calibration: text windows apply to a model"),
              std::string::npos)
        << e.what();
  }
  posix::remove_tree(dir);
}

// On a GPU the tuner evaluates candidates with the CUDA kernels: the decisions agree with reference passes on
// the same inputs (sparsity close, both within the bounds), and the kernel-tuned thresholds keep the bound
// when the reference applies them.
TEST(Tune, CudaPassesAgreeWithTheReference) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device: the CUDA-kernel passes run on the GPU machine";
  StructuredSpec sp;
  sp.heads_q = 8;
  sp.heads_kv = 2;
  sp.seq_q = sp.seq_k = 2048;
  sp.window = 192;
  const auto opt = at::TensorOptions(at::kBFloat16).device(at::kCUDA);
  std::vector<QkvSample> in;
  for (uint64_t seed : {11, 12}) {
    const auto x = structured_qkv(sp, seed, opt);
    in.push_back({x.q, x.k, x.v});
  }
  SpargeConfig base;
  base.causal = true;
  base.attention_sink = true;
  base.stage2_group_rows = 32;
  TuneTargets t;
  t.l1 = 0.05;
  t.l2 = 0.06;
  std::string chosen;
  const auto pass = tune_pass_for("auto", in[0].q, in[0].k, in[0].v, base, chosen);
  ASSERT_EQ(chosen, "cuda kernels");
  const auto gpu = tune_layer(in, base, t, pass);
  const auto ref = tune_layer(in, base, t, reference_pass);
  std::printf("cuda passes: %lld in %.3f s; reference passes: %lld in %.3f s\n",
              static_cast<long long>(gpu.passes), gpu.seconds, static_cast<long long>(ref.passes),
              ref.seconds);
  double sg = 0.0, sr = 0.0;
  for (size_t h = 0; h < gpu.heads.size(); ++h) {
    SCOPED_TRACE(h);
    EXPECT_LT(gpu.heads[h].l1, t.l1);
    EXPECT_LT(gpu.heads[h].l1_with_stage2, t.l2);
    EXPECT_LT(ref.heads[h].l1, t.l1);
    sg += gpu.heads[h].sparsity / 8.0;
    sr += ref.heads[h].sparsity / 8.0;
    std::printf(
        "head %zu: cuda theta %.4f tau %.4f sparsity %.3f | reference theta %.4f tau %.4f sparsity %.3f\n", h,
        gpu.heads[h].simthreshd1, gpu.heads[h].cdfthreshd, gpu.heads[h].sparsity, ref.heads[h].simthreshd1,
        ref.heads[h].cdfthreshd, ref.heads[h].sparsity);
  }
  EXPECT_GT(sg, 0.1) << "structured inputs are sparse";
  EXPECT_NEAR(sg, sr, 0.05) << "mean sparsity, CUDA vs reference passes";
  // The kernel-tuned thresholds through the reference implementation: the bound holds up to the kernels'
  // rounding differences.
  const auto c = apply_tuned(base, gpu.heads);
  for (const auto& x : in) {
    const auto out = spas_attention(x.q, x.k, x.v, c).out;
    const auto dense = dense_attention_f64(x.q, x.k, x.v, true).out;
    const auto l1 = ((out.to(at::kDouble) - dense).abs().sum({0, 2, 3}) / dense.abs().sum({0, 2, 3})).cpu();
    EXPECT_LT(l1.max().template item<double>(), 1.2 * t.l2);
  }
}

}  // namespace
}  // namespace sparge::runner
