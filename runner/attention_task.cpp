// Input generators of the attention-level task (see attention_task.h).
#include "attention_task.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <set>
#include <stdexcept>

#include "lm_task.h"
#include "params.h"
#include "sparge/models/safetensors.h"
#include "sparge/permute.h"
#include "sparge/synthetic.h"
#include "sparge/token_order.h"

namespace sparge::runner {
namespace {

double number(const Params& p, const std::string& key, double fallback, std::set<std::string>& read) {
  read.insert(key);
  const auto it = p.find(key);
  if (it == p.end()) return fallback;
  if (it->second.is_list || it->second.items.size() != 1)
    throw std::invalid_argument("task parameter `" + key + "`: expected a single number");
  const auto& s = it->second.items[0];
  if (s == "true") return 1;
  if (s == "false") return 0;
  try {
    size_t used = 0;
    const double d = std::stod(s, &used);
    if (used == s.size()) return d;
  } catch (const std::exception&) {
  }
  throw std::invalid_argument("task parameter `" + key + "`: expected a number, got \"" + s + "\"");
}

uint64_t sample_seed(uint64_t seed, int64_t index) {
  // splitmix64 of (seed, index): independent streams per sample.
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(index) + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

AttentionTask::AttentionTask(std::string inputs, const Params& p, at::ScalarType dtype, at::Device device)
    : inputs_(std::move(inputs)), dtype_(dtype), device_(device) {
  std::set<std::string> read;
  if (inputs_ != "structured_llm" && inputs_ != "structured_visual" && inputs_ != "random" &&
      inputs_ != "captured" && inputs_ != "model")
    throw std::invalid_argument(
        "task inputs: expected structured_llm, structured_visual, random, captured or model, "
        "got `" +
        inputs_ + "`");
  if (inputs_ == "model") {
    ParamReader r("task inputs `model`", p);
    weights_ = r.text("weights", "data/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    corpus_ = r.text("corpus", "data/corpus/jargon.txt");
    seq_ = r.integer("seq", 2048, 2);
    offset_ = r.integer("offset", 0, 0);
    layers_ = r.integers("layers", {0}, 0);
    r.reject_unread();
    causal_ = true;
    return;
  }
  if (inputs_ == "captured") {
    read.insert("path");
    const auto it = p.find("path");
    if (it == p.end() || it->second.is_list)
      throw std::invalid_argument("task parameter `path`: expected the file of captured Q/K/V");
    path_ = it->second.items[0];
    causal_ = number(p, "causal", 0, read) != 0;
    const auto f = models::open_safetensors(path_);  // validates the file now, before anything runs
    if (!f.contains("q") && !f.contains("q.0"))
      throw std::invalid_argument("task parameter `path`: " + path_ + " holds neither q/k/v nor q.0/k.0/v.0");
    for (const auto& [key, value] : p)
      if (!read.count(key))
        throw std::invalid_argument("task parameter `" + key + "`: unknown for inputs `captured`");
    return;
  }
  batch_ = static_cast<int64_t>(number(p, "batch", 1, read));
  heads_ = static_cast<int64_t>(number(p, "heads", 8, read));
  head_dim_ = static_cast<int64_t>(number(p, "head_dim", 64, read));
  if (inputs_ == "structured_visual") {
    read.insert("grid");
    if (const auto it = p.find("grid"); it != p.end()) {
      if (!it->second.is_list || it->second.items.size() != 3)
        throw std::invalid_argument("task parameter `grid`: expected a list [T, H, W]");
      grid_t_ = std::stoll(it->second.items[0]);
      grid_h_ = std::stoll(it->second.items[1]);
      grid_w_ = std::stoll(it->second.items[2]);
    }
    waves_ = static_cast<int64_t>(number(p, "waves", 4, read));
    frequency_ = number(p, "frequency", 0.25, read);
    noise_ = number(p, "noise", 0.3, read);
    read.insert("order");
    if (const auto it = p.find("order"); it != p.end()) order_ = it->second.items.at(0);
    parse_token_order(order_);  // validates the name
    text_tokens_ = static_cast<int64_t>(number(p, "text_tokens", 0, read));
    amplitude_ = number(p, "amplitude", 1.0, read);
    if (text_tokens_ < 0) throw std::invalid_argument("task parameter `text_tokens`: expected >= 0");
    kv_heads_ = heads_;
    seq_ = Grid3{grid_t_, grid_h_, grid_w_}.size();
  } else {
    kv_heads_ = static_cast<int64_t>(number(p, "kv_heads", static_cast<double>(heads_), read));
    seq_ = static_cast<int64_t>(number(p, "seq", 2048, read));
    causal_ = number(p, "causal", 0, read) != 0;
    if (inputs_ == "structured_llm") {
      window_ = number(p, "window", 256, read);
      sharpness_ = number(p, "sharpness", 6, read);
      noise_ = number(p, "noise", 0.3, read);
      sink_tokens_ = number(p, "sink_tokens", 16, read);
      sink_strength_ = number(p, "sink_strength", 4, read);
    }
  }
  for (const auto& [key, value] : p)
    if (!read.count(key))
      throw std::invalid_argument("task parameter `" + key + "`: unknown for inputs `" + inputs_ + "`");
  if (batch_ < 1 || heads_ < 1 || kv_heads_ < 1 || heads_ % kv_heads_ != 0 || seq_ < 1 || head_dim_ < 1)
    throw std::invalid_argument(
        "task parameters: expected batch, heads, seq, head_dim >= 1 and heads a multiple of kv_heads");
}

AttentionSample AttentionTask::sample(int64_t index, uint64_t seed) const {
  const uint64_t s = sample_seed(seed, index);
  const auto opt = at::TensorOptions(dtype_).device(device_);
  AttentionSample out;
  out.causal = causal_;
  if (inputs_ == "model") {
    if (index >= static_cast<int64_t>(layers_.size()))
      throw std::invalid_argument("task inputs `model`: sample " + std::to_string(index) +
                                  " needs a layer; `layers` " + "lists " + std::to_string(layers_.size()) +
                                  " (set task.samples to at most that)");
    if (captured_.empty()) captured_ = capture_model_qkv(weights_, corpus_, seq_, offset_, layers_);
    const auto& c = captured_[static_cast<size_t>(index)];
    out.q = c.q.to(opt);
    out.k = c.k.to(opt);
    out.v = c.v.to(opt);
    out.layer = layers_[static_cast<size_t>(index)];
    return out;
  }
  if (inputs_ == "captured") {
    const auto f = models::open_safetensors(path_);
    std::string suffix;  // built in steps: GCC 12 warns falsely (-Wrestrict) on "." + std::to_string(i)
    if (!f.contains("q")) suffix.append(".").append(std::to_string(index));
    if (f.contains("q") && index > 0)
      throw std::invalid_argument("captured inputs " + path_ + " hold one sample; set task.samples: 1");
    out.q = f.load("q" + suffix).to(opt);
    out.k = f.load("k" + suffix).to(opt);
    out.v = f.load("v" + suffix).to(opt);
  } else if (inputs_ == "random") {
    const auto in = random_qkv(batch_, heads_, kv_heads_, seq_, seq_, head_dim_, s, opt);
    out.q = in.q, out.k = in.k, out.v = in.v;
  } else if (inputs_ == "structured_llm") {
    StructuredSpec spec;
    spec.batch = batch_;
    spec.heads_q = heads_;
    spec.heads_kv = kv_heads_;
    spec.seq_q = spec.seq_k = seq_;
    spec.head_dim = head_dim_;
    spec.window = static_cast<int64_t>(window_);
    spec.sharpness = sharpness_;
    spec.noise = noise_;
    spec.sink_tokens = static_cast<int64_t>(sink_tokens_);
    spec.sink_strength = sink_strength_;
    const auto in = structured_qkv(spec, s, opt);
    out.q = in.q, out.k = in.k, out.v = in.v;
  } else {  // structured_visual
    auto gen = at::make_generator<at::CPUGeneratorImpl>(s);
    const auto f64 = at::TensorOptions(at::kDouble);
    const auto t = at::arange(grid_t_, f64).view({-1, 1, 1, 1}),
               h = at::arange(grid_h_, f64).view({1, -1, 1, 1}),
               w = at::arange(grid_w_, f64).view({1, 1, -1, 1});
    // Per (batch, head): a smooth field of `waves` random plane waves per channel, shared by Q and K.
    auto field = at::zeros({batch_ * heads_, grid_t_, grid_h_, grid_w_, head_dim_}, f64);
    for (int64_t bh = 0; bh < batch_ * heads_; ++bh)
      for (int64_t i = 0; i < waves_; ++i) {
        const auto f = at::randn({3, head_dim_}, gen, f64) * frequency_;
        const auto phase = at::rand({head_dim_}, gen, f64) * 6.283185307179586;
        field[bh] += at::cos(t * f[0] + h * f[1] + w * f[2] + phase);
      }
    field = field.view({batch_, heads_, seq_, head_dim_}) / std::sqrt(static_cast<double>(waves_));
    auto q = amplitude_ * (field + noise_ * at::randn(field.sizes(), gen, f64));
    auto k = amplitude_ * (field + noise_ * at::randn(field.sizes(), gen, f64));
    auto v = at::randn(field.sizes(), gen, f64);
    const auto perm = token_permutation(Grid3{grid_t_, grid_h_, grid_w_}, parse_token_order(order_), s);
    q = permute_tokens(q, perm);
    k = permute_tokens(k, perm);
    v = permute_tokens(v, perm);
    if (text_tokens_ > 0) {
      // Text tokens first, as in joint text-video attention (CogVideoX: 226): unstructured, of the field's
      // scale (a wave sum / sqrt(waves) has variance 1/2).
      const std::vector<int64_t> ts = {batch_, heads_, text_tokens_, head_dim_};
      q = at::cat({amplitude_ * std::sqrt(0.5) * at::randn(ts, gen, f64), q}, 2);
      k = at::cat({amplitude_ * std::sqrt(0.5) * at::randn(ts, gen, f64), k}, 2);
      v = at::cat({at::randn(ts, gen, f64), v}, 2);
    }
    out.q = q.to(opt);
    out.k = k.to(opt);
    out.v = v.to(opt);
  }
  return out;
}

}  // namespace sparge::runner
