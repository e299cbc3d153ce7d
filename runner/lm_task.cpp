// Language-model tasks (see lm_task.h).
#include "lm_task.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "metrics.h"
#include "params.h"
#include "sparge/eval/infinitebench.h"
#include "sparge/eval/longbench.h"
#include "sparge/eval/niah.h"
#include "sparge/eval/perplexity.h"
#include "sparge/models/attention_provider.h"
#include "sparge/models/llama.h"
#include "sparge/models/tokenizer.h"
#include "sparge/posix_fs.h"

namespace sparge::runner {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

const std::set<std::string> kTasks = {"perplexity", "niah", "longbench", "infinitebench"};
const std::set<std::string> kStatsMetrics = {"stage1_sparsity", "stage2_skipped", "pv_density",
                                             "token_sparsity",  "attention_ms",   "attention_tops",
                                             "prefill_tokens"};

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::invalid_argument(what + ": cannot read " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// The model and tokenizer of a weights path, loaded once per process (specs often run several tasks on one
// model).
struct LoadedModel {
  std::shared_ptr<models::LlamaForCausalLM> model;
  std::shared_ptr<models::Tokenizer> tokenizer;
};

LoadedModel load_model(const LmModelSpec& spec, at::Device device) {
  static std::mutex mu;
  static std::map<std::string, LoadedModel> cache;
  std::lock_guard<std::mutex> lock(mu);
  const std::string key = spec.weights + "|" + c10::toString(spec.dtype) + "|" + device.str();
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  if (spec.family != "llama")
    throw std::invalid_argument("model.family: `" + spec.family +
                                "` has no language-model port (expected llama)");
  const std::string path = find_path(spec.weights);
  if (!posix::exists(path))
    throw std::invalid_argument("model.weights: " + spec.weights +
                                " does not exist (a GGUF file or a Hugging Face "
                                "directory with config.json, tokenizer.json and *.safetensors)");
  models::LoadOptions opt;
  opt.dtype = spec.dtype;
  opt.device = device;
  LoadedModel m;
  m.model = std::make_shared<models::LlamaForCausalLM>(models::LlamaForCausalLM::load(path, opt));
  if (posix::is_file(path) && path.size() > 5 && path.substr(path.size() - 5) == ".gguf") {
    m.tokenizer = models::Tokenizer::from_file(path);
  } else {
    const std::string dir = posix::is_file(path) ? path.substr(0, path.find_last_of('/')) : path;
    if (!posix::exists(dir + "/tokenizer.json"))
      throw std::invalid_argument("model.weights: " + dir + " has no tokenizer.json");
    m.tokenizer = models::Tokenizer::from_file(dir + "/tokenizer.json");
  }
  cache[key] = m;
  return m;
}

// Prefill attention through the method under test (dense for decode steps and dense_layers), with the
// method's statistics and time summed over calls.
class MethodProvider final : public models::AttentionProvider {
 public:
  MethodProvider(AttentionMethod& m, const std::set<int64_t>& dense_layers, at::Device device)
      : m_(m), dense_(dense_layers), device_(device) {}
  at::Tensor attend(const models::AttentionCall& call, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) override {
    if (!call.prefill || dense_.count(call.layer) != 0)
      return models::sdpa_attention(q, k, v, call.causal, call.scale);
    if (device_.is_cuda()) torch::cuda::synchronize();
    const auto t0 = Clock::now();
    auto r = m_.run(q.contiguous(), k.contiguous(), v.contiguous(), call.causal, call.layer);
    if (device_.is_cuda()) torch::cuda::synchronize();
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    const double nq = static_cast<double>(q.size(2)), nk = static_cast<double>(k.size(2));
    // Dense-equivalent FLOPs: 4 B H Nq Nk D, the causal part (bottom-right) only.
    const double pairs = call.causal ? nq * nk - nq * (nq - 1) / 2 : nq * nk;
    flops_ += 4.0 * static_cast<double>(q.size(0) * q.size(1) * q.size(3)) * pairs;
    attention_ms_ += ms;
    total_ += r.stats;
    return r.out.to(q.scalar_type());
  }
  // The sums of all calls (AttentionStats fields by name, plus flops and attention_ms), for a record's "raw".
  json stats() const {
    return {{"flops", flops_},
            {"attention_ms", attention_ms_},
            {"valid_blocks", total_.valid_blocks},
            {"computed_blocks", total_.computed_blocks},
            {"stage2_groups", total_.stage2_groups},
            {"stage2_skipped", total_.stage2_skipped},
            {"valid_pairs", total_.valid_pairs},
            {"computed_pairs", total_.computed_pairs},
            {"stage2_skipped_pairs", total_.stage2_skipped_pairs}};
  }

 private:
  AttentionMethod& m_;
  const std::set<int64_t>& dense_;
  at::Device device_;
  AttentionStats total_;
  double flops_ = 0.0, attention_ms_ = 0.0;
};

double sum_of(const std::vector<json>& records, const std::string& key) {
  double s = 0;
  for (const auto& r : records)
    if (r.contains("raw") && r["raw"].contains(key)) s += r["raw"][key].get<double>();
  return s;
}

// Ratio metrics over all attention calls of all samples (AttentionStats' own definitions over the summed
// counts); NaN where the method has no block statistics (dense methods).
double stats_metric(const std::string& name, const std::vector<json>& records) {
  if (name == "attention_ms") return sum_of(records, "attention_ms");
  if (name == "attention_tops") {
    const double ms = sum_of(records, "attention_ms");
    return ms > 0 ? sum_of(records, "flops") / (ms * 1e-3) / 1e12 : NAN;
  }
  if (name == "prefill_tokens") return sum_of(records, "prefill_tokens");
  AttentionStats total;
  const auto count = [&](const char* key) { return static_cast<int64_t>(sum_of(records, key)); };
  total.valid_blocks = count("valid_blocks");
  total.computed_blocks = count("computed_blocks");
  total.stage2_groups = count("stage2_groups");
  total.stage2_skipped = count("stage2_skipped");
  total.valid_pairs = count("valid_pairs");
  total.computed_pairs = count("computed_pairs");
  total.stage2_skipped_pairs = count("stage2_skipped_pairs");
  if (total.valid_blocks == 0) return NAN;
  if (name == "stage1_sparsity") return total.stage1_sparsity();
  if (name == "stage2_skipped") return total.stage2_skip_fraction();
  if (name == "pv_density") return total.pv_density();
  if (name == "token_sparsity") return 1.0 - total.token_density();
  return NAN;
}

}  // namespace

bool is_lm_task(const std::string& name) {
  return kTasks.count(name) != 0;
}

bool is_lm_metric(const std::string& name) {
  static const std::set<std::string> m = {
      "perplexity",      "word_perplexity",        "byte_perplexity", "bits_per_byte",  "niah_score",
      "longbench_score", "infinitebench_accuracy", "attention_ms",    "attention_tops", "prefill_tokens"};
  return m.count(name) != 0;
}

bool metric_applies(const std::string& task, const std::string& metric) {
  static const std::map<std::string, std::string> owner = {{"perplexity", "perplexity"},
                                                           {"word_perplexity", "perplexity"},
                                                           {"byte_perplexity", "perplexity"},
                                                           {"bits_per_byte", "perplexity"},
                                                           {"niah_score", "niah"},
                                                           {"longbench_score", "longbench"},
                                                           {"infinitebench_accuracy", "infinitebench"}};
  if (const auto it = owner.find(metric); it != owner.end()) return it->second == task;
  if (task == "attention") return !is_lm_metric(metric);
  return kStatsMetrics.count(metric) != 0;  // every LM task has its prefill attention statistics
}

// A path from a spec: as given, else relative to the source tree (specs name data/... from the repository
// root).
std::string find_path(const std::string& p) {
  if (p.empty() || p[0] == '/' || posix::exists(p)) return p;
  const std::string in_tree = std::string(SPARGE_SOURCE_DIR) + "/" + p;
  return posix::exists(in_tree) ? in_tree : p;
}

std::string resolve_weights_path(const std::string& v) {
  return find_path(expand_env(v, "model.weights"));
}

std::string expand_env(const std::string& v, const std::string& what) {
  std::string out;
  for (size_t i = 0; i < v.size();) {
    if (v.compare(i, 2, "${") == 0) {
      const auto end = v.find('}', i);
      if (end == std::string::npos) throw std::invalid_argument(what + ": unterminated ${ in `" + v + "`");
      const std::string var = v.substr(i + 2, end - i - 2);
      const char* val = std::getenv(var.c_str());
      if (val == nullptr || *val == '\0')
        throw std::invalid_argument(
            what + ": the environment variable " + var + " is not set; set it to the " +
            (what == "model.weights"
                 ? std::string("checkpoint (a GGUF file, or a Hugging Face directory with "
                               "config.json, tokenizer.json and *.safetensors)")
                 : std::string("data path (eval/README.md lists the expected layouts)")) +
            ", or give --set " + what + "=PATH");
      out += val;
      i = end + 1;
    } else {
      out += v[i++];
    }
  }
  return out;
}

ModelCapture capture_model(const LmModelSpec& model, at::Device device, const std::string& corpus,
                           int64_t seq, const std::vector<int64_t>& offsets, std::vector<int64_t> layers) {
  LmModelSpec spec = model;
  spec.weights = resolve_weights_path(model.weights);
  const auto lm = load_model(spec, device);
  ModelCapture out;
  out.num_layers = lm.model->config().num_layers;
  if (layers.empty())
    for (int64_t l = 0; l < out.num_layers; ++l) layers.push_back(l);
  for (auto l : layers)
    if (l < 0 || l >= out.num_layers)
      throw std::invalid_argument("parameter `layers`: layer " + std::to_string(l) + " is outside [0, " +
                                  std::to_string(out.num_layers) + ")");
  if (seq < 2 || seq > lm.model->config().max_position)
    throw std::invalid_argument("parameter `seq`: " + std::to_string(seq) + " is outside [2, " +
                                std::to_string(lm.model->config().max_position) + "] (the model's context)");
  const auto ids = lm.tokenizer->encode(
      read_file(find_path(expand_env(corpus, "parameter corpus")), "parameter `corpus`"), true, true);
  out.corpus_tokens = static_cast<int64_t>(ids.size());
  for (const auto offset : offsets)
    if (offset < 0 || offset + seq > out.corpus_tokens)
      throw std::invalid_argument("parameters `offset` + `seq`: a window ends at token " +
                                  std::to_string(offset + seq) + ", the corpus has " +
                                  std::to_string(out.corpus_tokens));
  out.layers = layers;
  std::map<int64_t, CapturedQkv> got;
  lm.model->set_capture_hook(
      [&](int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
        if (std::find(layers.begin(), layers.end(), layer) != layers.end())
          got[layer] = {q.contiguous().clone(), k.contiguous().clone(), v.contiguous().clone()};
      });
  try {
    c10::InferenceMode inference;
    models::SdpaAttention dense;
    for (const auto offset : offsets) {
      got.clear();
      auto cache = lm.model->make_cache(1, seq);
      lm.model->forward(
          at::tensor(std::vector<int64_t>(ids.begin() + offset, ids.begin() + offset + seq), at::kLong)
              .unsqueeze(0)
              .to(device),
          cache, dense);
      std::vector<CapturedQkv> w;
      for (auto l : layers) w.push_back(got.at(l));
      out.windows.push_back(std::move(w));
    }
  } catch (...) {
    lm.model->set_capture_hook(nullptr);
    throw;
  }
  lm.model->set_capture_hook(nullptr);
  return out;
}

std::vector<CapturedQkv> capture_model_qkv(const std::string& weights, const std::string& corpus, int64_t seq,
                                           int64_t offset, const std::vector<int64_t>& layers) {
  if (layers.empty()) throw std::invalid_argument("parameter `layers`: expected at least one layer");
  LmModelSpec spec;
  spec.weights = weights;
  spec.dtype = at::kFloat;
  return capture_model(spec, at::kCPU, corpus, seq, {offset}, layers).windows.front();
}

// ---------------------------------------------------------------- the task state

struct LmTask::Impl {
  std::string name;
  at::Device device = at::kCPU;
  LoadedModel lm;
  int64_t prefill_chunk = 0;
  uint64_t seed = 0;

  // perplexity
  std::vector<int32_t> stream;
  std::vector<eval::PerplexityWindow> windows;
  // niah
  std::string haystack;
  std::vector<eval::NiahCase> cases;
  int64_t max_new_tokens = 0;
  bool chat = false;
  // longbench / infinitebench
  std::vector<eval::LongBenchSample> lb;
  std::vector<eval::InfiniteBenchChoiceSample> ib;
  int64_t max_length = 0;

  std::vector<int32_t> encode(const std::string& text, bool add_special) const {
    return lm.tokenizer->encode(text, add_special, true);
  }
  std::string decode(const std::vector<int64_t>& ids) const {
    return lm.tokenizer->decode(std::vector<int32_t>(ids.begin(), ids.end()), true);
  }
  // The prompt the model sees: the user message in the chat format when `chat_wrap`, else the text with the
  // tokenizer's own prefix (BOS where the model wants one).
  std::vector<int64_t> prompt_ids(const std::string& text, bool chat_wrap) const {
    std::vector<int32_t> ids;
    if (chat_wrap)
      ids = encode(lm.tokenizer->apply_chat_template({{"user", text}}, true), false);
    else
      ids = encode(text, true);
    return {ids.begin(), ids.end()};
  }
  std::vector<int64_t> generate(const std::vector<int64_t>& prompt, int64_t max_new, MethodProvider& p,
                                const std::vector<int64_t>& stop = {}) const {
    return lm.model->generate_greedy(prompt, max_new, p, prefill_chunk, stop);
  }
};

LmTask::LmTask(const std::string& name, const Params& params, const LmModelSpec& model, at::Device device,
               uint64_t seed)
    : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.name = name;
  s.device = device;
  s.seed = seed;
  if (!is_lm_task(name))
    throw std::invalid_argument("task.name: `" + name + "` is not a language-model task");
  ParamReader r("task `" + name + "`", params);
  s.prefill_chunk = r.integer("prefill_chunk", 0, 0);
  LmModelSpec m = model;
  m.weights = resolve_weights_path(model.weights);
  if (m.weights.empty())
    throw std::invalid_argument("model.weights: task `" + name +
                                "` needs the model's weights (model.weights)");
  // Parameters are read (and unknown ones rejected) before the model loads: a typo fails fast.
  std::string corpus, format, haystack, data_dir, path;
  int64_t seq_len = 0, stride = 0, max_tokens = 0, rounds = 0, digits = 0;
  std::vector<int64_t> lengths;
  int64_t num_depths = 0;
  std::vector<std::string> datasets;
  if (name == "perplexity") {
    corpus = expand_env(r.text("corpus", "data/corpus/jargon.txt"), "task.params.corpus");
    format = r.text("format", "text", {"text", "wikitext"});
    seq_len = r.integer("seq_len", 1024, 2);
    stride = r.integer("stride", seq_len, 1);
    max_tokens = r.integer("max_tokens", 0, 0);
    if (stride > seq_len)
      throw std::invalid_argument("task `perplexity`: parameter `stride` = " + std::to_string(stride) +
                                  " exceeds seq_len = " + std::to_string(seq_len));
  } else if (name == "niah") {
    haystack = expand_env(r.text("haystack", "data/corpus/jargon.txt"), "task.params.haystack");
    lengths = r.integers("lengths", {1024, 2048}, 64);
    num_depths = r.integer("depths", 5, 1);
    rounds = r.integer("rounds", 1, 1);
    digits = r.integer("digits", 7, 1);
    s.max_new_tokens = r.integer("max_new_tokens", 32, 1);
    s.chat = r.flag("chat", true);
  } else if (name == "longbench") {
    data_dir = expand_env(r.text("data_dir", ""), "task.params.data_dir");
    datasets = r.texts("datasets", {});
    s.max_length = r.integer("max_length", 0, 0);
    if (data_dir.empty() || datasets.empty())
      throw std::invalid_argument(
          "task `longbench`: parameters `data_dir` (the directory of LongBench's "
          "<dataset>.jsonl files) and `datasets` are required");
  } else {
    path = expand_env(r.text("path", ""), "task.params.path");
    s.max_length = r.integer("max_length", 0, 0);
    s.chat = r.flag("chat", false);
    if (path.empty())
      throw std::invalid_argument(
          "task `infinitebench`: parameter `path` (longbook_choice_eng.jsonl) is required");
  }
  r.reject_unread();

  s.lm = load_model(m, device);
  const int64_t ctx = s.lm.model->config().max_position;
  if (name == "perplexity") {
    const std::string file = find_path(corpus);
    std::string text;
    if (format == "wikitext")
      text = eval::load_wikitext(file).stream;
    else
      text = read_file(file, "task `perplexity`: parameter `corpus`");
    s.stream = s.encode(text, true);
    if (max_tokens > 0 && static_cast<int64_t>(s.stream.size()) > max_tokens) s.stream.resize(max_tokens);
    if (s.stream.size() < 2)
      throw std::invalid_argument("task `perplexity`: the corpus has fewer than 2 tokens");
    if (seq_len > ctx)
      throw std::invalid_argument("task `perplexity`: seq_len " + std::to_string(seq_len) +
                                  " exceeds the model's context " + std::to_string(ctx));
    s.windows = eval::plan_perplexity_windows(static_cast<int64_t>(s.stream.size()), seq_len, stride);
  } else if (name == "niah") {
    s.haystack = read_file(find_path(haystack), "task `niah`: parameter `haystack`");
    for (auto l : lengths)
      if (l + s.max_new_tokens > ctx)
        throw std::invalid_argument("task `niah`: length " + std::to_string(l) +
                                    " + max_new_tokens exceeds the " + "model's context " +
                                    std::to_string(ctx));
    if (s.chat && s.lm.tokenizer->chat_template().format == models::ChatFormat::kNone) s.chat = false;
    s.cases = eval::niah_grid(lengths, eval::niah_depths(static_cast<int>(num_depths)),
                              static_cast<int>(rounds), seed, static_cast<int>(digits));
  } else if (name == "longbench") {
    const std::string dir = find_path(data_dir);
    for (const auto& d : datasets) {
      eval::longbench_task(d);  // throws naming the known datasets
      auto part = eval::read_longbench_jsonl(dir + "/" + d + ".jsonl");
      s.lb.insert(s.lb.end(), part.begin(), part.end());
    }
    if (s.max_length == 0) s.max_length = ctx - 512;
  } else {
    s.ib = eval::read_infinitebench_choice(find_path(path));
    if (s.max_length == 0) s.max_length = std::min<int64_t>(eval::kInfiniteBenchMaxTokens, ctx - 64);
  }
}

LmTask::~LmTask() = default;

int64_t LmTask::num_samples() const {
  const auto& s = *impl_;
  if (s.name == "perplexity") return static_cast<int64_t>(s.windows.size());
  if (s.name == "niah") return static_cast<int64_t>(s.cases.size());
  if (s.name == "longbench") return static_cast<int64_t>(s.lb.size());
  return static_cast<int64_t>(s.ib.size());
}

std::string LmTask::sample_id(int64_t i) const {
  const auto& s = *impl_;
  const auto idx = static_cast<size_t>(i);
  if (s.name == "perplexity")
    return "window [" + std::to_string(s.windows[idx].begin) + ", " + std::to_string(s.windows[idx].end) +
           ")";
  if (s.name == "niah")
    return "niah " + std::to_string(s.cases[idx].context_length) + " x " +
           std::to_string(s.cases[idx].depth_percent) + "% r" + std::to_string(s.cases[idx].round);
  if (s.name == "longbench") return "longbench " + s.lb[idx].dataset + " " + s.lb[idx].id;
  return "infinitebench " + s.ib[idx].id;
}

json LmTask::run(int64_t i, AttentionMethod& method, const std::set<int64_t>& dense_layers) const {
  const auto& s = *impl_;
  const auto idx = static_cast<size_t>(i);
  MethodProvider provider(method, dense_layers, s.device);
  json metrics = json::object(), info = json::object();
  int64_t prefill_tokens = 0;
  c10::InferenceMode inference;
  if (s.name == "perplexity") {
    const auto& w = s.windows[idx];
    const int64_t n = w.end - w.begin;
    const auto ids =
        at::tensor(std::vector<int64_t>(s.stream.begin() + w.begin, s.stream.begin() + w.end), at::kLong)
            .unsqueeze(0);
    auto cache = s.lm.model->make_cache(1, n);
    const int64_t step = s.prefill_chunk > 0 ? s.prefill_chunk : n;
    std::vector<at::Tensor> hidden;
    for (int64_t b = 0; b < n; b += step)
      hidden.push_back(
          s.lm.model->forward(ids.narrow(1, b, std::min(step, n - b)), cache, provider).select(0, 0));
    const auto h = at::cat(hidden, 0);  // (n, hidden)
    // The logits at t - 1 score token t, for t in [score_from, end).
    const int64_t first = w.score_from - w.begin;
    const auto nll =
        s.lm.model->token_nll(h.narrow(0, first - 1, w.end - w.score_from),
                              ids.select(0, 0).narrow(0, first, w.end - w.score_from).to(s.device));
    const double nll_sum = nll.to(at::kDouble).sum().item<double>();
    // Words and bytes of the scored text: a word starts at a non-space byte after a space (or the stream
    // start).
    const std::vector<int64_t> scored(s.stream.begin() + w.score_from, s.stream.begin() + w.end);
    const std::string text = s.decode(scored);
    const std::string before = s.decode({s.stream[static_cast<size_t>(w.score_from - 1)]});
    bool prev_space = before.empty() || std::isspace(static_cast<unsigned char>(before.back()));
    int64_t words = 0;
    for (char ch : text) {
      const bool sp = std::isspace(static_cast<unsigned char>(ch)) != 0;
      if (!sp && prev_space) ++words;
      prev_space = sp;
    }
    prefill_tokens = n;
    metrics["perplexity"] = std::exp(nll_sum / static_cast<double>(w.scored()));
    json raw = {{"nll_sum", nll_sum},
                {"tokens", w.scored()},
                {"words", words},
                {"bytes", static_cast<int64_t>(text.size())}};
    raw.update(provider.stats());
    raw["prefill_tokens"] = prefill_tokens;
    return {{"metrics", metrics}, {"raw", raw}, {"info", {{"sample", sample_id(i)}}}};
  }
  if (s.name == "niah") {
    const auto& c = s.cases[idx];
    // The chat wrapping and the answer are kept out of the haystack's budget.
    const int64_t wrap = s.chat ? static_cast<int64_t>(s.prompt_ids("", true).size()) : 1;
    eval::NiahOptions opt;
    opt.reserve_tokens = wrap + s.max_new_tokens;
    const auto built = eval::build_niah_prompt(
        s.haystack, [&](const std::string& t) { return static_cast<int64_t>(s.encode(t, false).size()); }, c,
        opt);
    const auto prompt = s.prompt_ids(built.prompt, s.chat);
    const auto out = s.generate(prompt, s.max_new_tokens, provider);
    const std::string answer = s.decode(out);
    prefill_tokens = static_cast<int64_t>(prompt.size());
    metrics["niah_score"] = eval::niah_score(answer, c.number);
    info = {{"sample", sample_id(i)},
            {"context_length", c.context_length},
            {"depth_percent", c.depth_percent},
            {"round", c.round},
            {"number", c.number},
            {"answer", answer},
            {"prompt_tokens", prefill_tokens}};
  } else if (s.name == "longbench") {
    const auto& ex = s.lb[idx];
    const auto& t = eval::longbench_task(ex.dataset);
    const std::string prompt = eval::longbench_truncate_prompt(
        eval::longbench_prompt(t, ex), s.max_length, [&](const std::string& x) { return s.encode(x, false); },
        [&](const std::vector<int32_t>& ids) { return s.lm.tokenizer->decode(ids, true); });
    const bool chat = t.chat_template && s.lm.tokenizer->chat_template().format != models::ChatFormat::kNone;
    const auto ids = s.prompt_ids(prompt, chat);
    std::vector<int64_t> stop;
    if (t.stop_at_newline) {
      const auto nl = s.encode("\n", false);
      if (!nl.empty()) stop.push_back(nl.back());
    }
    const auto out = s.generate(ids, t.max_new_tokens, provider, stop);
    const std::string pred = s.decode(out);
    prefill_tokens = static_cast<int64_t>(ids.size());
    metrics["longbench_score"] = eval::longbench_sample_score(t, pred, ex.answers, ex.all_classes);
    info = {{"sample", sample_id(i)},
            {"dataset", ex.dataset},
            {"prediction", pred},
            {"prompt_tokens", prefill_tokens}};
  } else {
    const auto& ex = s.ib[idx];
    const std::string text = eval::infinitebench_choice_prompt(ex);
    std::vector<int64_t> ids;
    if (s.chat) {
      ids = s.prompt_ids(text, true);
      if (static_cast<int64_t>(ids.size()) > s.max_length) {  // truncate the text, then wrap it again
        const auto inner = eval::infinitebench_truncate(s.encode(text, false), s.max_length - 64);
        ids = s.prompt_ids(s.lm.tokenizer->decode(inner, false), true);
      }
    } else {
      const auto inner = eval::infinitebench_truncate(s.encode(text, true), s.max_length);
      ids.assign(inner.begin(), inner.end());
    }
    const auto out = s.generate(ids, eval::kInfiniteBenchChoiceMaxNewTokens, provider);
    const std::string pred = s.decode(out);
    prefill_tokens = static_cast<int64_t>(ids.size());
    metrics["infinitebench_accuracy"] = eval::infinitebench_choice_correct(pred, ex.label) ? 1.0 : 0.0;
    info = {{"sample", sample_id(i)}, {"prediction", pred}, {"prompt_tokens", prefill_tokens}};
  }
  json raw = provider.stats();
  raw["prefill_tokens"] = prefill_tokens;
  return {{"metrics", metrics}, {"raw", raw}, {"info", info}};
}

std::pair<double, double> LmTask::reduce(const std::string& metric, const std::string& aggregation,
                                         const std::vector<json>& records) const {
  if (records.empty()) return {NAN, NAN};
  if (kStatsMetrics.count(metric) != 0) return {stats_metric(metric, records), NAN};
  const double nll = sum_of(records, "nll_sum");
  if (metric == "perplexity") return {std::exp(nll / sum_of(records, "tokens")), NAN};
  if (metric == "word_perplexity") return {std::exp(nll / sum_of(records, "words")), NAN};
  if (metric == "byte_perplexity") return {std::exp(nll / sum_of(records, "bytes")), NAN};
  if (metric == "bits_per_byte") return {nll / sum_of(records, "bytes") / std::log(2.0), NAN};
  if (metric == "longbench_score") {
    std::map<std::string, std::vector<double>> by_dataset;
    for (const auto& r : records)
      by_dataset[r["info"]["dataset"].get<std::string>()].push_back(
          r["metrics"]["longbench_score"].get<double>());
    std::map<std::string, double> scores;
    for (const auto& [d, v] : by_dataset) scores[d] = eval::longbench_dataset_score(v);
    return {eval::longbench_average(scores), NAN};
  }
  std::vector<double> v;
  for (const auto& r : records)
    if (r["metrics"].contains(metric)) v.push_back(r["metrics"][metric].get<double>());
  if (v.empty())
    throw std::invalid_argument("metric `" + metric + "` is not computed by task `" + impl_->name + "`");
  return {aggregate(v, aggregation), aggregation == "mean" ? stderr_of_mean(v) : NAN};
}

void LmTask::write_artifacts(const std::string& dir, const std::string& method,
                             const std::vector<json>& records) const {
  if (impl_->name != "niah" || records.empty()) return;
  eval::NiahResults res;
  for (const auto& r : records)
    res.add(r["info"]["context_length"].get<int64_t>(), r["info"]["depth_percent"].get<int>(),
            r["metrics"]["niah_score"].get<double>());
  res.write_json(dir + "/heatmap_" + method + ".json");
  res.write_csv(dir + "/heatmap_" + method + ".csv");
}

}  // namespace sparge::runner
