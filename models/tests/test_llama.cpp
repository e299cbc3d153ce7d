// LlamaForCausalLM against transformers (llama_oracle.py, run through the setup's Python): tiny random
// checkpoints (GQA + llama3 rope scaling + sharded; MHA + tied + bias + linear scaling + explicit head_dim;
// MQA) give the same logits and greedy continuations; the real SmolLM2 GGUF gives the same logits as
// transformers loading that file; chunked prefill equals one-shot prefill; interleaved RoPE on GGUF rows
// equals rotate-half on un-permuted rows; the capture hook sees Q/K/V; bad checkpoints fail naming the tensor
// or field.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "sparge/models/llama.h"
#include "sparge/models/safetensors.h"
#include "sparge/posix_fs.h"

namespace sparge::models {
namespace {

const std::string kDir = "/tmp/sparge_llama_" + std::to_string(::getpid());
const std::string kSmolLM2 = std::string(SPARGE_SOURCE_DIR) + "/data/models/SmolLM2-135M-Instruct.Q4_1.gguf";

bool run_oracle(const std::string& args) {
  const std::string cmd = std::string(SPARGE_PYTHON) + " " + SPARGE_TESTS_DIR + "/llama_oracle.py " + args +
                          " > " + kDir + "/oracle.log 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// The tiny checkpoints, made once per process; false (tests skip) when transformers is unavailable.
bool tiny_checkpoints() {
  static int state = 0;
  if (state == 0) {
    posix::make_dirs(kDir);
    state = run_oracle("tiny " + kDir) ? 1 : 2;
  }
  return state == 1;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

class TinyParity : public testing::TestWithParam<const char*> {};

TEST_P(TinyParity, LogitsAndGreedyTokensMatchTransformers) {
  if (!tiny_checkpoints()) GTEST_SKIP() << "transformers oracle unavailable (see " << kDir << "/oracle.log)";
  const std::string name = GetParam();
  const auto model = LlamaForCausalLM::load(kDir + "/" + name);
  const auto expected = open_safetensors(kDir + "/" + name + "_expected.safetensors");
  const auto ids = expected.load("ids");
  const auto want = expected.load("logits");
  SdpaAttention dense;
  auto cache = model.make_cache(1, ids.size(1));
  const auto got = model.logits(model.forward(ids, cache, dense));
  const double tol = 1e-4 * std::max(1.0, want.abs().max().item<double>());
  std::printf("%s: max |logit| %.3f, max |ours - transformers| %.3g\n", name.c_str(),
              want.abs().max().item<double>(), max_abs_diff(got, want));
  EXPECT_LT(max_abs_diff(got, want), tol) << name;

  // Chunked prefill (chunks of 5, then 1-token steps) gives the same last logits.
  auto chunked_cache = model.make_cache(1, ids.size(1));
  const auto last = model.prefill(ids, chunked_cache, dense, 5);
  EXPECT_LT(max_abs_diff(last, want.select(1, want.size(1) - 1)), tol);
  EXPECT_EQ(chunked_cache.length, ids.size(1));

  // Token NLL equals log-softmax of the logits.
  const auto hidden = model.forward(ids, *std::make_unique<KvCache>(model.make_cache(1, ids.size(1))), dense);
  const auto targets = ids.select(0, 0).roll(-1);
  const auto nll = model.token_nll(hidden.select(0, 0), targets, 7);
  const auto ref_nll =
      -at::log_softmax(want.select(0, 0).to(at::kDouble), -1).gather(1, targets.unsqueeze(1));
  EXPECT_LT(max_abs_diff(nll, ref_nll.squeeze(1)), 1e-4);

  // Greedy continuation of the first 9 tokens.
  const auto gen = expected.load("generated").select(0, 0);
  std::vector<int64_t> prompt(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + 9);
  const auto out = model.generate_greedy(prompt, 12, dense);
  std::vector<int64_t> want_gen(gen.data_ptr<int64_t>(), gen.data_ptr<int64_t>() + gen.numel());
  while (!want_gen.empty() && want_gen.back() == 0 && want_gen.size() > out.size())
    want_gen.pop_back();  // padding
  EXPECT_EQ(out, std::vector<int64_t>(want_gen.begin(), want_gen.begin() + static_cast<long>(out.size())));
}

INSTANTIATE_TEST_SUITE_P(Models, TinyParity, testing::Values("gqa_llama3", "mha_tied", "mqa"));

TEST(Llama, ConfigFromJson) {
  if (!tiny_checkpoints()) GTEST_SKIP() << "transformers oracle unavailable";
  const auto c = LlamaConfig::from_hf_json(kDir + "/gqa_llama3/config.json");
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c.rope_scaling.original_max_position, 16);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{97}));
  // transformers 5 keeps theta and scaling together in rope_parameters.
  {
    std::ofstream(kDir + "/v5_config.json")
        << R"({"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})";
    const auto v5 = LlamaConfig::from_hf_json(kDir + "/v5_config.json");
    EXPECT_EQ(v5.rope_theta, 500000.0);
    EXPECT_EQ(v5.rope_scaling.type, RopeScaling::Type::kLlama3);
    EXPECT_EQ(v5.rope_scaling.original_max_position, 8192);
    EXPECT_EQ(v5.head_dim, 128);
  }
  const auto m = LlamaConfig::from_hf_json(kDir + "/mha_tied/config.json");
  EXPECT_EQ(m.head_dim, 24);
  EXPECT_TRUE(m.attention_bias);
  EXPECT_TRUE(m.tie_word_embeddings);
}

TEST(Llama, Llama31RopeScalingMatchesTheFormula) {
  // Llama-3.1-8B: D = 128, theta = 5e5, factor 8, low 1, high 4, original 8192.
  LlamaConfig c;
  c.vocab_size = c.hidden_size = c.intermediate_size = c.num_layers = c.num_heads = c.num_kv_heads = 1;
  c.head_dim = 128;
  c.rope_theta = 500000.0;
  c.rope_scaling = {RopeScaling::Type::kLlama3, 8.0, 1.0, 4.0, 8192};
  const auto inv = rope_inv_freq(c).to(at::kDouble);
  for (int64_t i = 0; i < 64; ++i) {
    const double f = std::pow(500000.0, -2.0 * static_cast<double>(i) / 128.0);
    const double wavelen = 2 * M_PI / f;
    double want = f;
    if (wavelen > 8192) {
      want = f / 8;
    } else if (wavelen >= 2048) {
      const double s = (8192 / wavelen - 1) / 3;
      want = (1 - s) * f / 8 + s * f;
    }
    EXPECT_NEAR(inv[i].item<double>(), want, 1e-6 * want) << "frequency " << i;
  }
}

TEST(Llama, CaptureHookSeesPrefillQkv) {
  if (!tiny_checkpoints()) GTEST_SKIP() << "transformers oracle unavailable";
  auto model = LlamaForCausalLM::load(kDir + "/gqa_llama3");
  std::vector<std::vector<int64_t>> shapes;
  model.set_capture_hook([&](int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    EXPECT_EQ(layer, static_cast<int64_t>(shapes.size()));
    EXPECT_EQ(k.sizes(), v.sizes());
    shapes.push_back({q.size(1), q.size(2), k.size(1), k.size(2), q.size(3)});
  });
  SdpaAttention dense;
  auto cache = model.make_cache(1, 20);
  model.forward(at::arange(1, 12, at::kLong).unsqueeze(0), cache, dense);
  ASSERT_EQ(shapes.size(), 2u);
  EXPECT_EQ(shapes[0], (std::vector<int64_t>{4, 11, 2, 11, 16}));
  model.forward(at::tensor({5}, at::kLong).unsqueeze(0), cache, dense);  // decode: not captured
  EXPECT_EQ(shapes.size(), 2u);
}

TEST(Llama, BadCheckpointsFailNamingTheProblem) {
  if (!tiny_checkpoints()) GTEST_SKIP() << "transformers oracle unavailable";
  const auto expect_fail = [](const std::string& path, const std::string& fragment) {
    try {
      LlamaForCausalLM::load(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_fail(kDir + "/nothing", "does not exist");
  // Config that disagrees with the weights: the tensor and both shapes are named.
  const std::string bad = kDir + "/bad_shape";
  posix::make_dirs(bad);
  {
    std::ifstream in(kDir + "/mqa/config.json");
    std::string cfg((std::istreambuf_iterator<char>(in)), {});
    cfg.replace(cfg.find("\"intermediate_size\": 64"), 23, "\"intermediate_size\": 65");
    std::ofstream(bad + "/config.json") << cfg;
    std::ifstream src(kDir + "/mqa/model.safetensors", std::ios::binary);
    std::ofstream(bad + "/model.safetensors", std::ios::binary) << src.rdbuf();
  }
  expect_fail(bad,
              "tensor `model.layers.0.mlp.gate_proj.weight` has shape (64,48,) but the config says (65,48,)");
  std::ofstream(bad + "/config.json") << R"({"model_type": "gpt2", "vocab_size": 10})";
  expect_fail(bad, "model_type \"gpt2\" is not a Llama-family model");
  std::ofstream(bad + "/config.json") << R"({"vocab_size": 10, "hidden_size": "wide"})";
  expect_fail(bad, "field `hidden_size` must be an integer");
  std::ofstream(bad + "/config.json")
      << R"({"vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
             "num_attention_heads": 3, "num_key_value_heads": 2})";
  expect_fail(bad, "num_heads = 3 is not a multiple of num_kv_heads = 2");
  posix::remove_tree(bad);
  const auto model = LlamaForCausalLM::load(kDir + "/mqa");
  SdpaAttention dense;
  auto cache = model.make_cache(1, 4);
  EXPECT_THROW(model.forward(at::tensor({1, 2, 3, 4, 5}, at::kLong).unsqueeze(0), cache, dense),
               std::invalid_argument);  // more positions than the cache holds
  EXPECT_THROW(model.forward(at::tensor({1, 99}, at::kLong).unsqueeze(0), cache, dense),
               std::invalid_argument);  // id outside the vocabulary
}

TEST(Llama, SmolLM2GgufMatchesTransformers) {
  if (!posix::exists(kSmolLM2)) GTEST_SKIP() << kSmolLM2 << " is missing: run scripts/setup.sh";
  posix::make_dirs(kDir);
  const std::string out = kDir + "/smollm2_expected.safetensors";
  if (!run_oracle("gguf " + kSmolLM2 + " " + out))
    GTEST_SKIP() << "transformers oracle unavailable (see " << kDir << "/oracle.log)";
  const auto expected = open_safetensors(out);
  const auto ids = expected.load("ids");
  const auto want = expected.load("logits");
  const auto model = LlamaForCausalLM::load(kSmolLM2);
  EXPECT_EQ(model.config().num_layers, 30);
  EXPECT_EQ(model.config().num_kv_heads, 3);
  EXPECT_TRUE(model.config().tie_word_embeddings);
  // The un-permuted Q/K rows are transformers' rows.
  EXPECT_TRUE(at::equal(model.weight("model.layers.0.self_attn.q_proj.weight"), expected.load("q_proj0")));
  EXPECT_TRUE(at::equal(model.weight("model.layers.0.self_attn.k_proj.weight"), expected.load("k_proj0")));
  SdpaAttention dense;
  auto cache = model.make_cache(1, ids.size(1));
  const auto got = model.logits(model.forward(ids, cache, dense));
  const double scale = want.abs().max().item<double>();
  std::printf("SmolLM2 GGUF: max |logit| %.3f, max |ours - transformers| %.3g\n", scale,
              max_abs_diff(got, want));
  EXPECT_LT(max_abs_diff(got, want), 2e-4 * scale) << "logit scale " << scale;
  EXPECT_TRUE(at::equal(got.argmax(-1), want.argmax(-1)));

  // Keeping GGUF's interleaved rows with interleaved RoPE computes the same function.
  LoadOptions keep;
  keep.gguf_keep_interleaved = true;
  const auto inter = LlamaForCausalLM::load(kSmolLM2, keep);
  auto cache2 = inter.make_cache(1, ids.size(1));
  EXPECT_LT(max_abs_diff(inter.logits(inter.forward(ids, cache2, dense)), got), 2e-4 * scale);
}

// The same comparisons with the model on a GPU (float32: within fp32 rounding of transformers on the CPU;
// bfloat16: the logits' top-1 agrees on nearly every position).
TEST(Llama, CudaMatchesTransformers) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device: the GPU parity runs on the GPU machine";
  if (!tiny_checkpoints()) GTEST_SKIP() << "transformers oracle unavailable";
  LoadOptions cuda;
  cuda.device = at::Device(at::kCUDA, 0);
  SdpaAttention dense;
  for (const char* name : {"gqa_llama3", "mha_tied", "mqa"}) {
    const auto model = LlamaForCausalLM::load(kDir + "/" + name, cuda);
    const auto expected = open_safetensors(kDir + "/" + std::string(name) + "_expected.safetensors");
    const auto ids = expected.load("ids"), want = expected.load("logits");
    auto cache = model.make_cache(1, ids.size(1));
    const auto got = model.logits(model.forward(ids, cache, dense)).cpu();
    const double scale = std::max(1.0, want.abs().max().item<double>());
    std::printf("%s on CUDA float32: max |ours - transformers| %.3g\n", name, max_abs_diff(got, want));
    EXPECT_LT(max_abs_diff(got, want), 1e-4 * scale) << name;
  }
  if (!posix::exists(kSmolLM2)) GTEST_SKIP() << kSmolLM2 << " is missing";
  const std::string out = kDir + "/smollm2_expected.safetensors";
  if (!posix::exists(out) && !run_oracle("gguf " + kSmolLM2 + " " + out))
    GTEST_SKIP() << "oracle unavailable";
  const auto expected = open_safetensors(out);
  const auto ids = expected.load("ids"), want = expected.load("logits");
  const double scale = want.abs().max().item<double>();
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    cuda.dtype = dtype;
    const auto model = LlamaForCausalLM::load(kSmolLM2, cuda);
    auto cache = model.make_cache(1, ids.size(1));
    const auto got = model.logits(model.forward(ids, cache, dense)).cpu().to(at::kFloat);
    const double agree = got.argmax(-1).eq(want.argmax(-1)).to(at::kDouble).mean().item<double>();
    std::printf(
        "SmolLM2 GGUF on CUDA %s: max |ours - transformers| %.3g (logit scale %.1f), top-1 agreement %.3f\n",
        c10::toString(dtype), max_abs_diff(got, want), scale, agree);
    if (dtype == at::kFloat) {
      EXPECT_LT(max_abs_diff(got, want), 2e-4 * scale);
      EXPECT_EQ(agree, 1.0);
    } else {
      EXPECT_GE(agree, 0.9) << "bfloat16 rounding changes the top-1 token at a few positions at most";
    }
  }
}

}  // namespace
}  // namespace sparge::models
