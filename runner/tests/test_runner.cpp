// The runner end to end on CPU: every spec in experiments/ validates; the quickstart runs (small overrides)
// and writes results.json / .md / .csv; finished units are reused and a changed method config is recomputed;
// a run killed with SIGKILL resumes without redoing finished units; bad method/metric/task parameters are
// rejected.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common.h"
#include "engine.h"
#include "methods.h"
#include "posix_fs.h"
#include "sparge/models/safetensors.h"
#include "sparge/synthetic.h"
#include "spec.h"

namespace sparge::runner {
namespace {

const std::string kSource = SPARGE_SOURCE_DIR;

std::string fresh_dir(const std::string& name) {
  const std::string dir = "/tmp/sparge_test_" + name + "_" + std::to_string(::getpid());
  posix::remove_tree(dir);
  return dir;
}

RunOptions small(const std::string& out) {
  RunOptions o;
  o.output = out;
  o.progress = false;
  o.device = "cpu";
  o.overrides = {"task.params.seq=256", "task.params.heads=2", "task.params.kv_heads=1"};
  return o;
}

// Starts the CLI on the quickstart (4 heads) writing to `out`, sends `signal` as soon as the first unit is
// logged, waits for it and returns std::system's status (the CLI's exit status in WEXITSTATUS).
int run_cli_and_signal(const std::string& out, const std::string& signal) {
  const std::string cmd =
      "'" + std::string(SPARGE_BIN) + "' run '" + kSource +
      "/experiments/quickstart.yaml' --no-progress --device cpu --output '" + out +
      "' --set task.params.heads=4 --set task.params.kv_heads=1 > /dev/null 2>&1 & pid=$!; "
      "for i in $(seq 600); do [ -s '" +
      out + "/samples.jsonl' ] && break; sleep 0.05; done; kill -" + signal + " $pid; wait $pid; exit $?";
  return std::system(cmd.c_str());
}

TEST(Runner, EveryExperimentSpecValidates) {
  int n = 0;
  for (const auto& name : posix::list_dir(kSource + "/experiments", ".yaml")) {
    SCOPED_TRACE(name);
    const auto spec = load_spec(kSource + "/experiments/" + name);
    EXPECT_FALSE(expand_sweeps(spec).empty());
    ++n;
  }
  EXPECT_GE(n, 5);
}

// `sparge validate` checks a spec's structure; the method parameters are checked when the methods are made
// (at the start of `sparge run`). Every method of every spec (GPU-only ones included) is made here, so a spec
// that would stop at its first run on the GPU machine fails on a CPU. Methods reading a file that is
// user-given (a tuned file not in the repository) are skipped.
TEST(Runner, EveryExperimentMethodConstructs) {
  int made = 0;
  for (const auto& name : posix::list_dir(kSource + "/experiments", ".yaml")) {
    const auto spec = load_spec(kSource + "/experiments/" + name);
    for (const auto& point : expand_sweeps(spec)) {
      if (!point.spec["methods"]) continue;
      for (const auto& kv : point.spec["methods"]) {
        const auto id = kv.first.as<std::string>();
        SCOPED_TRACE(name + ": method " + id);
        if (kv.second["tuned"] && !posix::exists(kSource + "/" + kv.second["tuned"].as<std::string>()))
          continue;
        std::set<std::string> skip = {"type", "dense_layers"};
        EXPECT_NO_THROW(make_method(id, kv.second["type"].as<std::string>(), to_params(kv.second, skip)));
        ++made;
      }
    }
  }
  EXPECT_GE(made, 50);
}

TEST(Runner, QuickstartRunsAndWritesResults) {
  const auto out = fresh_dir("quickstart");
  auto opt = small(out);
  opt.limit = 1;
  const auto s = run_spec(kSource + "/experiments/quickstart.yaml", opt);
  EXPECT_EQ(s.total, 4);  // 4 methods x 1 sample x 1 seed
  EXPECT_EQ(s.computed, 4);
  EXPECT_FALSE(s.interrupted);
  std::ifstream f(out + "/results.json");
  const auto r = nlohmann::json::parse(f);
  const auto& res = r.at("results").at("default");
  EXPECT_LT(res.at("dense").at("relative_l1").get<double>(), 1e-2);  // bf16 rounding of the output only
  EXPECT_GT(res.at("sparge_tau97").at("stage1_sparsity").get<double>(), 0.0);
  EXPECT_EQ(res.at("sparge_tau97").at("n").get<int>(), 1);
  EXPECT_FALSE(r.at("git_hash").get<std::string>().empty());
  EXPECT_TRUE(posix::exists(out + "/results.md"));
  EXPECT_TRUE(posix::exists(out + "/results.csv"));
  EXPECT_TRUE(posix::exists(out + "/sparsity_vs_error.png"))
      << "scripts/plot_results.py (matplotlib from setup)";
  std::ifstream log(out + "/samples.jsonl");
  int lines = 0;
  for (std::string l; std::getline(log, l);) ++lines;
  EXPECT_EQ(lines, 4);
  posix::remove_tree(out);
}

TEST(Runner, FinishedUnitsAreReusedAndChangedConfigsRecomputed) {
  const auto out = fresh_dir("resume");
  auto opt = small(out);
  opt.limit = 1;
  EXPECT_EQ(run_spec(kSource + "/experiments/quickstart.yaml", opt).computed, 4);
  opt.limit = 2;  // sample 0 is cached, sample 1 is new
  auto s = run_spec(kSource + "/experiments/quickstart.yaml", opt);
  EXPECT_EQ(s.cached, 4);
  EXPECT_EQ(s.computed, 4);
  // A changed threshold of one method recomputes only that method's units.
  opt.overrides.push_back("methods.sparge_tau97.cdfthreshd=0.8");
  s = run_spec(kSource + "/experiments/quickstart.yaml", opt);
  EXPECT_EQ(s.computed, 2);
  EXPECT_EQ(s.cached, 6);
  posix::remove_tree(out);
}

TEST(Runner, KilledRunResumesWithoutRedoingFinishedUnits) {
  const auto out = fresh_dir("kill");
  // SIGKILL the CLI as soon as the first unit is logged, then rerun in-process.
  run_cli_and_signal(out, "9");
  std::ifstream log(out + "/samples.jsonl");
  int logged = 0;
  for (std::string l; std::getline(log, l);) ++logged;
  ASSERT_GE(logged, 1);
  ASSERT_LT(logged, 12) << "the run finished before it could be killed";
  auto opt = small(out);
  opt.overrides = {"task.params.heads=4", "task.params.kv_heads=1"};
  const auto s = run_spec(kSource + "/experiments/quickstart.yaml", opt);
  EXPECT_EQ(s.total, 12);
  EXPECT_GE(s.cached, logged);
  EXPECT_EQ(s.cached + s.computed, 12);
  posix::remove_tree(out);
}

TEST(Runner, CtrlCStopsCleanlyWithPartialResults) {
  // SIGINT after the first logged unit: the CLI finishes the unit in flight, writes partial results and exits
  // 130.
  const auto out = fresh_dir("sigint");
  const int status = run_cli_and_signal(out, "INT");
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  std::ifstream f(out + "/results.json");
  ASSERT_TRUE(f.good()) << "partial results written on interruption";
  const auto r = nlohmann::json::parse(f);
  EXPECT_TRUE(r.at("partial").get<bool>());
  EXPECT_LT(r.at("n-samples").at("computed").get<int>(), 12);
  posix::remove_tree(out);
}

TEST(Runner, CapturedInputsFromSafetensors) {
  // Two captured samples (q.0/k.0/v.0, q.1/...), as a model hook would save them; the spec points at the
  // file.
  const auto out = fresh_dir("captured");
  posix::make_dirs(out);
  std::map<std::string, at::Tensor> t;
  for (int i = 0; i < 2; ++i) {
    const auto in = random_qkv(1, 4, 2, 200, 200, 64, 10 + i, at::TensorOptions(at::kBFloat16));
    t["q." + std::to_string(i)] = in.q;
    t["k." + std::to_string(i)] = in.k;
    t["v." + std::to_string(i)] = in.v;
  }
  models::save_safetensors(out + "/captured.safetensors", t);
  RunOptions opt;
  opt.output = out + "/run";
  opt.progress = false;
  opt.device = "cpu";
  opt.overrides = {"task.inputs=captured", "task.samples=2",
                   "task.params={path: " + out + "/captured.safetensors}"};
  const auto s = run_spec(kSource + "/experiments/quickstart.yaml", opt);
  EXPECT_EQ(s.computed, 8);
  std::ifstream f(out + "/run/results.json");
  const auto r = nlohmann::json::parse(f);
  EXPECT_LT(r.at("results").at("default").at("dense").at("relative_l1").get<double>(), 1e-2);
  posix::remove_tree(out);
}

// The baselines run from YAML; the equal-sparsity mode lands on the requested token-level sparsity.
TEST(Runner, BaselinesRunAndHitTargetSparsity) {
  const auto out = fresh_dir("baselines");
  auto o = small(out);
  o.overrides.push_back(
      "methods={x: {type: xattention, target_sparsity: 0.5, block: 32}, f: {type: flexprefill, "
      "target_sparsity: 0.5, "
      "min_budget: 64, block: 32}, mi: {type: minference, vertical_size: 32, slash_size: 64}, xa: {type: "
      "xattention, threshold: 0.8, block: 32}, ms: {type: minference, target_sparsity: 0.25, backend: "
      "auto}}");
  o.overrides.push_back("metrics=[{name: token_sparsity}, {name: relative_l1}]");
  o.overrides.push_back("task.params.causal=true");
  const auto s = run_spec(kSource + "/experiments/quickstart.yaml", o);
  EXPECT_EQ(s.computed, 3 * 5);
  std::ifstream f(out + "/results.json");
  const auto r = nlohmann::json::parse(f).at("results").at("default");
  EXPECT_NEAR(r.at("x").at("token_sparsity").get<double>(), 0.5, 0.05);
  EXPECT_NEAR(r.at("f").at("token_sparsity").get<double>(), 0.5, 0.05);
  // MInference at 256 tokens: its floors (30 columns, 50 diagonals in 64-key tiles) allow at most ~0.4.
  EXPECT_NEAR(r.at("ms").at("token_sparsity").get<double>(), 0.25, 0.05);
  for (const char* m : {"mi", "xa"}) {
    SCOPED_TRACE(m);
    EXPECT_GT(r.at(m).at("token_sparsity").get<double>(), 0.05);
    EXPECT_LT(r.at(m).at("relative_l1").get<double>(), 0.5);
  }
  posix::remove_tree(out);
  o.overrides[o.overrides.size() - 3] = "methods={x: {type: xattention, target_sparsity: 1.5}}";
  EXPECT_THROW(run_spec(kSource + "/experiments/quickstart.yaml", o), std::invalid_argument);
  o.overrides[o.overrides.size() - 3] = "methods={x: {type: xattention, stride: 7}}";
  EXPECT_THROW(run_spec(kSource + "/experiments/quickstart.yaml", o), std::invalid_argument);
  o.overrides[o.overrides.size() - 3] = "methods={m: {type: minference, target_sparsity: -0.5}}";
  EXPECT_THROW(run_spec(kSource + "/experiments/quickstart.yaml", o), std::invalid_argument);
  o.overrides[o.overrides.size() - 3] = "methods={m: {type: minference, backend: tpu}}";
  EXPECT_THROW(run_spec(kSource + "/experiments/quickstart.yaml", o), std::invalid_argument);
  EXPECT_FALSE(posix::exists(out + "/samples.jsonl"));
  posix::remove_tree(out);
}

// prepare() (the engine's untimed equal-sparsity search) is reused by run() on the same inputs only: the
// result equals a fresh method's (which searches inside run), and other or modified inputs are searched
// again.
TEST(Runner, PreparedKnobsAreReusedOnlyForTheirInputs) {
  const std::map<std::string, Params> methods = {
      {"xattention", {{"target_sparsity", {{"0.5"}, false}}, {"block", {{"32"}, false}}}},
      {"flexprefill",
       {{"target_sparsity", {{"0.5"}, false}}, {"block", {{"32"}, false}}, {"min_budget", {{"64"}, false}}}},
      {"minference",
       {{"target_sparsity", {{"0.5"}, false}},
        {"vertical_size", {{"32"}, false}},
        {"slash_size", {{"64"}, false}}}},
  };
  StructuredSpec spec;
  spec.heads_q = 4;
  spec.heads_kv = 2;
  spec.seq_q = spec.seq_k = 768;
  const auto f = at::TensorOptions(at::kFloat);
  const auto a = structured_qkv(spec, 11, f);
  const auto b = random_qkv(1, 4, 2, 768, 768, 64, 12, f);
  for (const auto& [type, params] : methods) {
    SCOPED_TRACE(type);
    const auto prepared = make_method("p", type, params), fresh = make_method("f", type, params);
    const auto sparsity = [](const AttentionResult& r) { return 1.0 - r.stats.token_density(); };
    prepared->prepare(a.q, a.k, a.v, true, -1);
    const auto ra = prepared->run(a.q, a.k, a.v, true, -1);
    EXPECT_TRUE(at::equal(ra.out, fresh->run(a.q, a.k, a.v, true, -1).out));
    EXPECT_NEAR(sparsity(ra), 0.5, 0.05);
    // Other inputs: searched again (the knob of `a` would not give 0.5 on random inputs).
    const auto rb = prepared->run(b.q, b.k, b.v, true, -1);
    EXPECT_TRUE(at::equal(rb.out, fresh->run(b.q, b.k, b.v, true, -1).out));
    EXPECT_NEAR(sparsity(rb), 0.5, 0.05);
    // The same tensors written in place: searched again.
    auto q = a.q.clone(), k = a.k.clone();
    prepared->prepare(q, k, a.v, true, -1);
    q.copy_(b.q);
    k.copy_(b.k);
    EXPECT_TRUE(at::equal(prepared->run(q, k, b.v, true, -1).out, rb.out));
  }
}

TEST(Runner, TimingRepeatsEachUnit) {
  const auto out = fresh_dir("timing");
  auto opt = small(out);
  opt.limit = 1;
  opt.overrides.push_back("timing={warmup: 1, repeats: 3}");
  const auto s = run_spec(kSource + "/experiments/quickstart.yaml", opt);
  EXPECT_EQ(s.computed, 4);
  std::ifstream f(out + "/results.json");
  const auto res = nlohmann::json::parse(f).at("results").at("default");
  EXPECT_LT(res.at("dense").at("relative_l1").get<double>(), 1e-2);  // the last call's output
  posix::remove_tree(out);
}

TEST(Runner, BadMethodParametersAreRejectedBeforeRunning) {
  EXPECT_THROW(make_method("m", "sparge", {{"cdfthresh", {{"0.9"}, false}}}), std::invalid_argument);
  EXPECT_THROW(make_method("m", "sparge", {{"cdfthreshd", {{"high"}, false}}}), std::invalid_argument);
  EXPECT_THROW(make_method("m", "flash9", {}), std::invalid_argument);
  try {
    make_method("m", "sparge", {{"quant", {{"int4"}, false}}});
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("parameter `quant`"), std::string::npos) << e.what();
  }
  const auto out = fresh_dir("badmetric");
  auto opt = small(out);
  opt.overrides.push_back("task.params.sequence=4");
  EXPECT_THROW(run_spec(kSource + "/experiments/quickstart.yaml", opt), std::invalid_argument);
  EXPECT_FALSE(posix::exists(out + "/samples.jsonl")) << "nothing runs before the spec is fully checked";
  posix::remove_tree(out);
}

const std::string kSmolLM2 = kSource + "/data/models/SmolLM2-135M-Instruct.Q4_1.gguf";

// A small table1_smollm2: 64-token perplexity windows over 320 tokens and one 256-token NIAH trial.
RunOptions small_lm(const std::string& out) {
  RunOptions o;
  o.output = out;
  o.progress = false;
  o.device = "cpu";
  o.overrides = {"tasks.ppl.params={seq_len: 64, stride: 48, max_tokens: 320}",
                 "tasks.niah.params={lengths: [256], depths: 1, max_new_tokens: 20}",
                 "methods.sparge.cdfthreshd=0.5",
                 "methods.sparge.simthreshd1=-1",
                 "methods.sparge.block_q=16",
                 "methods.sparge.block_k=16",
                 "methods.sparge.stage2_group_rows=16"};
  return o;
}

TEST(Runner, LanguageModelTasksOnSmolLM2) {
  if (!posix::exists(kSmolLM2)) GTEST_SKIP() << kSmolLM2 << " is missing: run scripts/setup.sh";
  const auto out = fresh_dir("lm");
  const auto s = run_spec(kSource + "/experiments/table1_smollm2.yaml", small_lm(out));
  // ppl: windows [0,64) [48,112) ... [288,320) cover 320 tokens in 7 windows; niah: 1 trial; 10 methods (the
  // tuned one loads results/tuned/smollm2_l1_0.08.json; XAttention, FlexPrefill and MInference at two target
  // sparsities).
  EXPECT_EQ(s.computed, (7 + 1) * 10);
  std::ifstream f(out + "/results.json");
  const auto r = nlohmann::json::parse(f);
  for (const char* m : {"full", "sparge", "sparge_fast", "sparge_tuned", "xattention_s50", "xattention_s30",
                        "flexprefill_s50", "flexprefill_s30", "minference_s50", "minference_s30"}) {
    SCOPED_TRACE(m);
    const auto& ppl = r.at("results").at("ppl").at(m);
    const double p = ppl.at("perplexity").get<double>();
    EXPECT_GT(p, 2.0);
    EXPECT_LT(p, 500.0);
    EXPECT_GT(ppl.at("word_perplexity").get<double>(), p) << "fewer words than tokens";
    EXPECT_TRUE(ppl.at("niah_score").is_null()) << "niah_score does not apply to the perplexity task";
    const auto& niah = r.at("results").at("niah").at(m);
    EXPECT_TRUE(niah.at("niah_score").get<double>() == 0.0 || niah.at("niah_score").get<double>() == 1.0);
    EXPECT_TRUE(posix::exists(out + "/heatmap_niah_" + std::string(m) + ".json"));
  }
  // Full attention has no block statistics; SpargeAttn at tau = 0.5 skips blocks.
  EXPECT_TRUE(r.at("results").at("ppl").at("full").at("stage1_sparsity").is_null());
  EXPECT_GT(r.at("results").at("ppl").at("sparge").at("stage1_sparsity").get<double>(), 0.0);
  // A second run computes nothing.
  const auto again = run_spec(kSource + "/experiments/table1_smollm2.yaml", small_lm(out));
  EXPECT_EQ(again.computed, 0);
  EXPECT_EQ(again.cached, s.computed);
  posix::remove_tree(out);
}

TEST(Runner, LanguageModelSpecErrorsComeBeforeAnyWork) {
  const auto out = fresh_dir("lm_err");
  RunOptions llama;
  llama.output = out;
  llama.progress = false;
  llama.device = "cpu";
  ::unsetenv("SPARGE_LLAMA31_WEIGHTS");
  // Methods are built first: the tuned row needs its file (tune_llama.yaml writes it), named with the remedy.
  try {
    run_spec(kSource + "/experiments/table1_llama.yaml", llama);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("results/tuned/llama31_l1_0.08.json: cannot be read"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("sparge tune"), std::string::npos) << e.what();
  }
  llama.overrides = {"methods={full: {type: sdpa}}"};
  try {
    run_spec(kSource + "/experiments/table1_llama.yaml", llama);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("SPARGE_LLAMA31_WEIGHTS is not set"), std::string::npos) << e.what();
  }
  auto opt = small_lm(out);
  if (posix::exists(kSmolLM2)) {
    opt.overrides.push_back("tasks.ppl.params.windows=3");
    EXPECT_THROW(run_spec(kSource + "/experiments/table1_smollm2.yaml", opt), std::invalid_argument);
  }
  // An attention-level metric on a language-model task (single-task spec).
  opt.overrides = {"metrics=[{name: relative_l1}]", "tasks={ppl: {name: perplexity}}"};
  EXPECT_THROW(run_spec(kSource + "/experiments/table1_smollm2.yaml", opt), std::invalid_argument);
  // A language-model metric on the attention task.
  try {
    run_spec(kSource + "/experiments/quickstart.yaml",
             RunOptions{{"metrics=[{name: perplexity}]"}, {}, "cpu", out, false});
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("does not apply to task `attention`"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(posix::exists(out + "/samples.jsonl"));
  posix::remove_tree(out);
}

TEST(Runner, ModelInputsCaptureRealAttention) {
  if (!posix::exists(kSmolLM2)) GTEST_SKIP() << kSmolLM2 << " is missing: run scripts/setup.sh";
  const auto out = fresh_dir("model_inputs");
  RunOptions o;
  o.output = out;
  o.progress = false;
  o.device = "cpu";
  o.overrides = {"sweep={task.params.seq: [256]}",      "task.samples=2",
                 "methods.sparge.block_q=32",           "methods.sparge.block_k=32",
                 "methods.sparge.stage2_group_rows=32", "task.params.layers=[0, 29]"};
  const auto s = run_spec(kSource + "/experiments/sparsity_vs_length.yaml", o);
  EXPECT_EQ(s.computed, 4);  // 2 layers x 2 methods
  std::ifstream f(out + "/results.json");
  const auto r = nlohmann::json::parse(f);
  const auto& sparge = r.at("results").at("seq=256").at("sparge");
  EXPECT_EQ(sparge.at("n").get<int>(), 2);
  EXPECT_LT(sparge.at("relative_l1").get<double>(), 0.2);
  EXPECT_GT(sparge.at("cosine").get<double>(), 0.9);
  // The CLI writes the same capture to safetensors for the `captured` inputs.
  const std::string file = out + "_capture.safetensors";
  const std::string cmd = "'" + std::string(SPARGE_BIN) + "' capture --weights '" + kSmolLM2 +
                          "' --corpus '" + kSource +
                          "/data/corpus/jargon.txt' --seq 96 --layers 3,7 --out '" + file + "' > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const auto cap = models::open_safetensors(file);
  EXPECT_EQ(cap.load("q.1").sizes(), (at::IntArrayRef{1, 9, 96, 64}));
  EXPECT_EQ(cap.load("k.0").sizes(), (at::IntArrayRef{1, 3, 96, 64}));
  EXPECT_EQ(cap.metadata.at("layers"), "3,7");
  std::remove(file.c_str());
  // A layer the model does not have is named.
  o.overrides.back() = "task.params.layers=[0, 30]";
  o.output = out + "_bad";
  try {
    run_spec(kSource + "/experiments/sparsity_vs_length.yaml", o);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("layer 30 is outside [0, 30)"), std::string::npos) << e.what();
  }
  posix::remove_tree(out);
  posix::remove_tree(out + "_bad");
}

// LongBench and InfiniteBench end to end on small fixtures in their released formats (the real datasets are
// user-given paths): the tasks build prompts, generate with SmolLM2 and score.
TEST(Runner, LongBenchAndInfiniteBenchTasksRunEndToEnd) {
  if (!posix::exists(kSmolLM2)) GTEST_SKIP() << kSmolLM2 << " is missing: run scripts/setup.sh";
  const auto dir = fresh_dir("lb_data");
  posix::make_dirs(dir);
  {
    std::ofstream trec(dir + "/trec.jsonl");
    for (int i = 0; i < 2; ++i)
      trec << nlohmann::json{{"input", i == 0 ? "What city is the Eiffel Tower in ?" : "Who wrote Hamlet ?"},
                             {"context",
                              "Question: How far is the moon ?\nType: Distance\nQuestion: Who invented "
                              "the telephone ?\nType: Individual\nQuestion: What city hosts the Louvre "
                              "?\nType: City\n"},
                             {"answers", {i == 0 ? "City" : "Individual"}},
                             {"length", 30},
                             {"dataset", "trec"},
                             {"language", "en"},
                             {"all_classes", {"Distance", "Individual", "City"}},
                             {"_id", "t" + std::to_string(i)}}
                  .dump()
           << "\n";
    std::ofstream ib(dir + "/longbook_choice_eng.jsonl");
    ib << nlohmann::json{{"id", 0},
                         {"context", "Tom had a red ball. He gave the red ball to Anna on Sunday."},
                         {"input", "What color was the ball?"},
                         {"answer", {"red"}},
                         {"options", {"blue", "red", "green", "white"}}}
              .dump()
       << "\n";
  }
  const auto spec = dir + "/spec.yaml";
  std::ofstream(spec) << "metadata: {name: lb, version: 1}\n"
                         "tasks:\n"
                         "  lb: {name: longbench, params: {data_dir: "
                      << dir
                      << ", datasets: [trec]}}\n"
                         "  ib: {name: infinitebench, params: {path: "
                      << dir
                      << "/longbook_choice_eng.jsonl}}\n"
                         "model: {family: llama, weights: "
                      << kSmolLM2
                      << ", dtype: float32}\n"
                         "methods: {full: {type: sdpa}}\n"
                         "metrics: [{name: longbench_score}, {name: infinitebench_accuracy}]\n"
                         "device: cpu\n";
  RunOptions o;
  o.output = dir + "/out";
  o.progress = false;
  const auto s = run_spec(spec, o);
  EXPECT_EQ(s.computed, 3);
  std::ifstream f(dir + "/out/results.json");
  const auto r = nlohmann::json::parse(f);
  const double lb = r.at("results").at("lb").at("full").at("longbench_score").get<double>();
  EXPECT_TRUE(lb == 0.0 || lb == 50.0 || lb == 100.0) << lb;  // round(100 * mean of two 0/1 scores, 2)
  const double ib = r.at("results").at("ib").at("full").at("infinitebench_accuracy").get<double>();
  EXPECT_TRUE(ib == 0.0 || ib == 1.0) << ib;
  // Every sample logged its prediction.
  std::ifstream log(dir + "/out/samples.jsonl");
  int lines = 0;
  for (std::string line; std::getline(log, line); ++lines)
    EXPECT_TRUE(nlohmann::json::parse(line).at("info").contains("prediction")) << line;
  EXPECT_EQ(lines, 3);
  posix::remove_tree(dir);
}

}  // namespace
}  // namespace sparge::runner
