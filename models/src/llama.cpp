// LlamaForCausalLM (see llama.h) in three parts, llama.cpp style: hyperparameters (config.json or GGUF
// metadata), weights from a name table (REQUIRED / OPTIONAL / TIED) with shape checks, and the forward pass
// as a straight graph.
#include "sparge/models/llama.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "sparge/models/gguf.h"
#include "sparge/models/safetensors.h"
#include "sparge/posix_fs.h"

namespace sparge::models {
namespace {

[[noreturn]] void bad_config(const std::string& source, const std::string& what) {
  throw std::invalid_argument("Llama config " + source + ": " + what);
}

// ---------------------------------------------------------------- part 1: hyperparameters

int64_t json_int(const nlohmann::json& j, const std::string& key, const std::string& source,
                 std::optional<int64_t> fallback = std::nullopt) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback) return *fallback;
    bad_config(source, "missing field `" + key + "`");
  }
  if (!j[key].is_number_integer())
    bad_config(source, "field `" + key + "` must be an integer, got " + j[key].dump());
  return j[key].get<int64_t>();
}
double json_float(const nlohmann::json& j, const std::string& key, const std::string& source,
                  double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) bad_config(source, "field `" + key + "` must be a number, got " + j[key].dump());
  return j[key].get<double>();
}
bool json_bool(const nlohmann::json& j, const std::string& key, const std::string& source, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean())
    bad_config(source, "field `" + key + "` must be true or false, got " + j[key].dump());
  return j[key].get<bool>();
}

}  // namespace

LlamaConfig LlamaConfig::from_hf_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) bad_config(path, "cannot open the file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    bad_config(path, std::string("not JSON: ") + e.what());
  }
  if (!j.is_object()) bad_config(path, "expected a JSON object");
  const std::string model_type = j.value("model_type", std::string("llama"));
  if (model_type != "llama" && model_type != "mistral")
    bad_config(path,
               "model_type \"" + model_type + "\" is not a Llama-family model (expected llama or mistral)");
  if (model_type == "mistral" && j.contains("sliding_window") && !j["sliding_window"].is_null())
    bad_config(path,
               "sliding_window attention (Mistral) is not supported; set it to null for full attention");
  const std::string act = j.value("hidden_act", std::string("silu"));
  if (act != "silu") bad_config(path, "hidden_act \"" + act + "\" is not supported (expected silu)");
  LlamaConfig c;
  c.vocab_size = json_int(j, "vocab_size", path);
  c.hidden_size = json_int(j, "hidden_size", path);
  c.intermediate_size = json_int(j, "intermediate_size", path);
  c.num_layers = json_int(j, "num_hidden_layers", path);
  c.num_heads = json_int(j, "num_attention_heads", path);
  c.num_kv_heads = json_int(j, "num_key_value_heads", path, c.num_heads);
  c.head_dim = json_int(j, "head_dim", path, c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  c.rms_norm_eps = json_float(j, "rms_norm_eps", path, 1e-6);
  c.rope_theta = json_float(j, "rope_theta", path, 10000.0);
  c.max_position = json_int(j, "max_position_embeddings", path, 2048);
  c.tie_word_embeddings = json_bool(j, "tie_word_embeddings", path, false);
  c.attention_bias = json_bool(j, "attention_bias", path, false);
  c.mlp_bias = json_bool(j, "mlp_bias", path, false);
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) c.bos_token_id = j["bos_token_id"];
  if (j.contains("eos_token_id")) {
    const auto& e = j["eos_token_id"];
    if (e.is_number_integer()) c.eos_token_ids = {e.get<int64_t>()};
    if (e.is_array())
      for (const auto& x : e) c.eos_token_ids.push_back(x.get<int64_t>());
  }
  // transformers < 5 writes rope_theta and rope_scaling {rope_type, factor, ...}; transformers 5 writes
  // rope_parameters {rope_type, rope_theta, factor, ...} (rope_type "default" when unscaled).
  const char* rope_key =
      j.contains("rope_parameters") && j["rope_parameters"].is_object() ? "rope_parameters" : "rope_scaling";
  if (std::string(rope_key) == "rope_parameters")
    c.rope_theta = json_float(j["rope_parameters"], "rope_theta", path + " rope_parameters", c.rope_theta);
  if (j.contains(rope_key) && !j[rope_key].is_null()) {
    const auto& r = j[rope_key];
    const std::string src = path + " " + rope_key;
    const std::string type = r.value("rope_type", r.value("type", std::string("default")));
    if (type == "default") {
    } else if (type == "linear") {
      c.rope_scaling.type = RopeScaling::Type::kLinear;
      c.rope_scaling.factor = json_float(r, "factor", src, 1.0);
    } else if (type == "llama3") {
      c.rope_scaling.type = RopeScaling::Type::kLlama3;
      c.rope_scaling.factor = json_float(r, "factor", src, 8.0);
      c.rope_scaling.low_freq_factor = json_float(r, "low_freq_factor", src, 1.0);
      c.rope_scaling.high_freq_factor = json_float(r, "high_freq_factor", src, 4.0);
      c.rope_scaling.original_max_position = json_int(r, "original_max_position_embeddings", src, 8192);
    } else {
      bad_config(path,
                 "rope_scaling type \"" + type + "\" is not supported (expected default, linear or llama3)");
    }
  }
  c.validate();
  return c;
}

LlamaConfig LlamaConfig::from_gguf(const GgufFile& g) {
  const std::string arch = g.get_string("general.architecture");
  if (arch != "llama")
    bad_config(g.path(), "general.architecture \"" + arch + "\" is not supported (expected llama)");
  LlamaConfig c;
  c.hidden_size = g.get_int("llama.embedding_length");
  c.intermediate_size = g.get_int("llama.feed_forward_length");
  c.num_layers = g.get_int("llama.block_count");
  c.num_heads = g.get_int("llama.attention.head_count");
  c.num_kv_heads = g.get_int("llama.attention.head_count_kv", c.num_heads);
  c.head_dim = g.get_int("llama.attention.key_length", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  const int64_t rot = g.get_int("llama.rope.dimension_count", c.head_dim);
  if (rot != c.head_dim)
    bad_config(g.path(), "partial rotary embedding (llama.rope.dimension_count " + std::to_string(rot) +
                             " != head_dim " + std::to_string(c.head_dim) + ") is not supported");
  c.rms_norm_eps = g.get_float("llama.attention.layer_norm_rms_epsilon", 1e-5);
  c.rope_theta = g.get_float("llama.rope.freq_base", 10000.0);
  c.max_position = g.get_int("llama.context_length", 2048);
  c.vocab_size = g.has("llama.vocab_size")
                     ? g.get_int("llama.vocab_size")
                     : static_cast<int64_t>(g.get_string_array("tokenizer.ggml.tokens").size());
  c.tie_word_embeddings = !g.contains("output.weight");
  const std::string scaling = g.get_string("llama.rope.scaling.type", "none");
  if (scaling == "linear") {
    c.rope_scaling.type = RopeScaling::Type::kLinear;
    c.rope_scaling.factor = g.get_float("llama.rope.scaling.factor", 1.0);
  } else if (scaling != "none") {
    bad_config(g.path(), "llama.rope.scaling.type \"" + scaling +
                             "\" is not supported (none or linear; llama3 "
                             "scaling comes as the rope_freqs.weight tensor)");
  }
  c.attention_bias = g.contains("blk.0.attn_q.bias");
  c.mlp_bias = g.contains("blk.0.ffn_up.bias");
  if (g.has("tokenizer.ggml.bos_token_id")) c.bos_token_id = g.get_int("tokenizer.ggml.bos_token_id");
  if (g.has("tokenizer.ggml.eos_token_id")) c.eos_token_ids = {g.get_int("tokenizer.ggml.eos_token_id")};
  if (g.has("tokenizer.ggml.eot_token_id")) {
    const int64_t eot = g.get_int("tokenizer.ggml.eot_token_id");
    if (c.eos_token_ids.empty() || c.eos_token_ids[0] != eot) c.eos_token_ids.push_back(eot);
  }
  c.validate();
  return c;
}

void LlamaConfig::validate() const {
  const auto positive = [](const char* name, int64_t v) {
    if (v <= 0)
      throw std::invalid_argument(std::string("Llama config: ") + name + " = " + std::to_string(v) +
                                  ", expected > 0");
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_layers", num_layers);
  positive("num_heads", num_heads);
  positive("num_kv_heads", num_kv_heads);
  positive("head_dim", head_dim);
  positive("max_position", max_position);
  if (num_heads % num_kv_heads != 0)
    throw std::invalid_argument("Llama config: num_heads = " + std::to_string(num_heads) +
                                " is not a multiple of num_kv_heads = " + std::to_string(num_kv_heads));
  if (head_dim % 2 != 0)
    throw std::invalid_argument("Llama config: head_dim = " + std::to_string(head_dim) +
                                ", expected even (RoPE)");
  if (!(rms_norm_eps > 0)) throw std::invalid_argument("Llama config: rms_norm_eps must be > 0");
  if (!(rope_theta > 0)) throw std::invalid_argument("Llama config: rope_theta must be > 0");
  if (!(rope_scaling.factor > 0))
    throw std::invalid_argument("Llama config: rope_scaling.factor must be > 0");
  if (rope_scaling.type == RopeScaling::Type::kLlama3 &&
      !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor))
    throw std::invalid_argument("Llama config: rope_scaling high_freq_factor must exceed low_freq_factor");
}

at::Tensor rope_inv_freq(const LlamaConfig& c) {
  // inv_freq_i = theta^(-2i / D), float32 as transformers computes it.
  const auto exponents =
      at::arange(0, c.head_dim, 2, at::kLong).to(at::kFloat) / static_cast<float>(c.head_dim);
  at::Tensor inv = 1.0 / at::pow(static_cast<float>(c.rope_theta), exponents);
  const auto& s = c.rope_scaling;
  if (s.type == RopeScaling::Type::kLinear) {
    inv = inv / s.factor;
  } else if (s.type == RopeScaling::Type::kLlama3) {
    // Wavelengths longer than original / low_freq_factor are divided by factor, shorter than
    // original / high_freq_factor kept, and the band between interpolated smoothly.
    const double orig = static_cast<double>(s.original_max_position);
    const double low_wavelen = orig / s.low_freq_factor, high_wavelen = orig / s.high_freq_factor;
    const auto wavelen = 2 * M_PI / inv;
    auto scaled = at::where(wavelen > low_wavelen, inv / s.factor, inv);
    const auto smooth = (orig / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    const auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = at::where(medium, smoothed, scaled);
  }
  return inv;
}

// ---------------------------------------------------------------- part 2: weights

namespace {

// One weight source: a safetensors checkpoint (transformers' names) or a GGUF file (llama.cpp's names).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool contains(const std::string& hf_name) const = 0;
  // The tensor in torch order as float32 or its stored float dtype, CPU; Q/K rows in transformers' order.
  virtual at::Tensor load(const std::string& hf_name) const = 0;
  virtual std::string where() const = 0;
};

class SafetensorsSource final : public WeightSource {
 public:
  explicit SafetensorsSource(const std::string& path) : ck_(SafetensorsCheckpoint::open(path)) {
    // Checkpoints of a bare LlamaModel have no "model." prefix.
    if (!ck_.contains("model.embed_tokens.weight") && ck_.contains("embed_tokens.weight"))
      prefix_strip_ = true;
  }
  bool contains(const std::string& n) const override { return ck_.contains(name(n)); }
  at::Tensor load(const std::string& n) const override { return ck_.load(name(n)); }
  std::string where() const override { return "safetensors checkpoint " + ck_.path(); }

 private:
  std::string name(const std::string& n) const {
    return prefix_strip_ && n.rfind("model.", 0) == 0 ? n.substr(6) : n;
  }
  SafetensorsCheckpoint ck_;
  bool prefix_strip_ = false;
};

class GgufSource final : public WeightSource {
 public:
  GgufSource(const GgufFile& g, const LlamaConfig& c, bool keep_interleaved)
      : g_(g), c_(c), keep_(keep_interleaved) {}
  bool contains(const std::string& n) const override { return g_.contains(gguf_name(n)); }
  at::Tensor load(const std::string& n) const override {
    at::Tensor t = g_.load(gguf_name(n), at::kFloat);
    // convert_hf_to_gguf permutes Q/K rows of each head from [first half | second half] to interleaved pairs
    // (row 2j + h of the file is row h * D/2 + j of transformers); undo it unless asked to keep it.
    const bool is_q = n.find("q_proj") != std::string::npos, is_k = n.find("k_proj") != std::string::npos;
    if (!keep_ && (is_q || is_k)) {
      const int64_t heads = is_q ? c_.num_heads : c_.num_kv_heads;
      std::vector<int64_t> view = {heads, c_.head_dim / 2, 2};
      for (size_t i = 1; i < t.sizes().size(); ++i) view.push_back(t.size(static_cast<int64_t>(i)));
      std::vector<int64_t> out = t.sizes().vec();
      t = t.reshape(view).transpose(1, 2).reshape(out).contiguous();
    }
    return t;
  }
  std::string where() const override { return "GGUF file " + g_.path(); }

 private:
  // transformers' name -> llama.cpp's.
  static std::string gguf_name(const std::string& n) {
    static const std::map<std::string, std::string> top = {{"model.embed_tokens.weight", "token_embd.weight"},
                                                           {"model.norm.weight", "output_norm.weight"},
                                                           {"lm_head.weight", "output.weight"}};
    if (const auto it = top.find(n); it != top.end()) return it->second;
    static const std::pair<const char*, const char*> layer[] = {
        {"input_layernorm", "attn_norm"},    {"self_attn.q_proj", "attn_q"},
        {"self_attn.k_proj", "attn_k"},      {"self_attn.v_proj", "attn_v"},
        {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
        {"mlp.gate_proj", "ffn_gate"},       {"mlp.up_proj", "ffn_up"},
        {"mlp.down_proj", "ffn_down"}};
    const std::string pre = "model.layers.";
    if (n.rfind(pre, 0) == 0) {
      const auto dot = n.find('.', pre.size());
      const std::string idx = n.substr(pre.size(), dot - pre.size());
      const std::string rest = n.substr(dot + 1);
      for (const auto& [hf, gg] : layer) {
        const std::string h = hf;
        if (rest.rfind(h + ".", 0) == 0) return "blk." + idx + "." + gg + rest.substr(h.size());
      }
    }
    return n;
  }
  const GgufFile& g_;
  const LlamaConfig& c_;
  bool keep_;
};

}  // namespace

LlamaForCausalLM LlamaForCausalLM::load(const std::string& path, const LoadOptions& options) {
  if (!posix::exists(path)) throw std::invalid_argument("Llama weights: " + path + " does not exist");
  if (options.dtype != at::kFloat && options.dtype != at::kHalf && options.dtype != at::kBFloat16)
    throw std::invalid_argument(std::string("Llama load: dtype must be float32, float16 or bfloat16, got ") +
                                c10::toString(options.dtype));
  LlamaForCausalLM m;
  m.dtype_ = options.dtype;
  m.device_ = options.device;
  std::optional<GgufFile> gguf;
  std::unique_ptr<WeightSource> src;
  const bool is_gguf = path.size() > 5 && path.substr(path.size() - 5) == ".gguf";
  if (is_gguf) {
    gguf = GgufFile::open(path);
    m.config_ = LlamaConfig::from_gguf(*gguf);
    m.config_.rope_interleaved = options.gguf_keep_interleaved;
    src = std::make_unique<GgufSource>(*gguf, m.config_, options.gguf_keep_interleaved);
  } else {
    const bool dir = !posix::is_file(path);
    const std::string base = dir ? path : std::string(std::filesystem::path(path).parent_path());
    const std::string cfg = (std::filesystem::path(base.empty() ? "." : base) / "config.json").string();
    if (!posix::exists(cfg))
      throw std::invalid_argument("Llama weights " + path + ": no config.json beside the weights (" + cfg +
                                  ")");
    m.config_ = LlamaConfig::from_hf_json(cfg);
    src = std::make_unique<SafetensorsSource>(path);
  }
  const auto& c = m.config_;
  const auto opts = at::TensorOptions().dtype(options.dtype).device(options.device);
  const auto get = [&](const std::string& name, std::vector<int64_t> shape) -> at::Tensor {
    if (!src->contains(name)) throw std::runtime_error(src->where() + ": tensor `" + name + "` not found");
    at::Tensor t = src->load(name);
    if (t.sizes().vec() != shape) {
      std::string want = "(", got = "(";
      for (auto s : shape) want += std::to_string(s) + ",";
      for (auto s : t.sizes()) got += std::to_string(s) + ",";
      throw std::runtime_error(src->where() + ": tensor `" + name + "` has shape " + got +
                               ") but the config says " + want + ")");
    }
    if (!at::isFloatingType(t.scalar_type()))
      throw std::runtime_error(src->where() + ": tensor `" + name + "` is not a float tensor");
    return t.to(opts).contiguous();
  };
  const int64_t hd = c.head_dim, hq = c.num_heads * hd, hkv = c.num_kv_heads * hd;
  m.embed_ = get("model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  m.norm_ = get("model.norm.weight", {c.hidden_size});
  if (!c.tie_word_embeddings && src->contains("lm_head.weight"))
    m.lm_head_ = get("lm_head.weight", {c.vocab_size, c.hidden_size});
  else if (!c.tie_word_embeddings)
    throw std::runtime_error(src->where() +
                             ": tensor `lm_head.weight` not found (tie_word_embeddings is false)");
  else
    m.lm_head_ = m.embed_;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer l;
    l.attn_norm = get(p + "input_layernorm.weight", {c.hidden_size});
    l.wq = get(p + "self_attn.q_proj.weight", {hq, c.hidden_size});
    l.wk = get(p + "self_attn.k_proj.weight", {hkv, c.hidden_size});
    l.wv = get(p + "self_attn.v_proj.weight", {hkv, c.hidden_size});
    l.wo = get(p + "self_attn.o_proj.weight", {c.hidden_size, hq});
    if (c.attention_bias) {
      l.bq = get(p + "self_attn.q_proj.bias", {hq});
      l.bk = get(p + "self_attn.k_proj.bias", {hkv});
      l.bv = get(p + "self_attn.v_proj.bias", {hkv});
      if (src->contains(p + "self_attn.o_proj.bias"))
        l.bo = get(p + "self_attn.o_proj.bias", {c.hidden_size});
    }
    l.mlp_norm = get(p + "post_attention_layernorm.weight", {c.hidden_size});
    l.w_gate = get(p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size});
    l.w_up = get(p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size});
    l.w_down = get(p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size});
    if (c.mlp_bias) {
      l.b_gate = get(p + "mlp.gate_proj.bias", {c.intermediate_size});
      l.b_up = get(p + "mlp.up_proj.bias", {c.intermediate_size});
      l.b_down = get(p + "mlp.down_proj.bias", {c.hidden_size});
    }
    m.layers_.push_back(std::move(l));
  }
  at::Tensor inv = rope_inv_freq(c);
  // llama.cpp stores llama3 rope scaling as per-frequency divisors.
  if (gguf && gguf->contains("rope_freqs.weight")) {
    const at::Tensor f = gguf->load("rope_freqs.weight", at::kFloat);
    if (f.numel() != hd / 2)
      throw std::runtime_error(gguf->path() + ": tensor `rope_freqs.weight` has " +
                               std::to_string(f.numel()) +
                               " values, expected head_dim / 2 = " + std::to_string(hd / 2));
    inv = inv / f.reshape({hd / 2});
  }
  m.inv_freq_ = inv.to(options.device);
  return m;
}

at::Tensor LlamaForCausalLM::weight(const std::string& n) const {
  if (n == "model.embed_tokens.weight") return embed_;
  if (n == "model.norm.weight") return norm_;
  if (n == "lm_head.weight") return lm_head_;
  const std::string pre = "model.layers.";
  if (n.rfind(pre, 0) == 0) {
    const auto dot = n.find('.', pre.size());
    const int64_t i = std::stoll(n.substr(pre.size(), dot - pre.size()));
    if (i >= 0 && i < config_.num_layers) {
      const auto& l = layers_[static_cast<size_t>(i)];
      const std::map<std::string, at::Tensor> named = {
          {"input_layernorm.weight", l.attn_norm}, {"self_attn.q_proj.weight", l.wq},
          {"self_attn.k_proj.weight", l.wk},       {"self_attn.v_proj.weight", l.wv},
          {"self_attn.o_proj.weight", l.wo},       {"post_attention_layernorm.weight", l.mlp_norm},
          {"mlp.gate_proj.weight", l.w_gate},      {"mlp.up_proj.weight", l.w_up},
          {"mlp.down_proj.weight", l.w_down}};
      if (const auto it = named.find(n.substr(dot + 1)); it != named.end()) return it->second;
    }
  }
  throw std::invalid_argument("LlamaForCausalLM::weight: no weight named `" + n + "`");
}

// ---------------------------------------------------------------- part 3: forward

namespace {

// RMSNorm as transformers computes it: normalize in float32, cast back, then scale.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  const auto xf = x.to(at::kFloat);
  const auto normed = xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps);
  return w * normed.to(x.scalar_type());
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

}  // namespace

KvCache LlamaForCausalLM::make_cache(int64_t batch, int64_t capacity) const {
  if (batch <= 0 || capacity <= 0)
    throw std::invalid_argument("make_cache: batch and capacity must be > 0, got " + std::to_string(batch) +
                                ", " + std::to_string(capacity));
  KvCache c;
  const auto opts = at::TensorOptions().dtype(dtype_).device(device_);
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    c.k.push_back(at::empty({batch, config_.num_kv_heads, capacity, config_.head_dim}, opts));
    c.v.push_back(at::empty({batch, config_.num_kv_heads, capacity, config_.head_dim}, opts));
  }
  return c;
}

// x: (B, H, N, D); cos, sin: (N, D) in x's dtype, laid out for the configured pairing.
at::Tensor LlamaForCausalLM::rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
  if (!config_.rope_interleaved) return x * cos + rotate_half(x) * sin;  // pairs (i, i + D/2)
  // Adjacent pairs (2i, 2i + 1): (a, b) -> (a cos - b sin, b cos + a sin).
  const auto pairs = x.unflatten(-1, {config_.head_dim / 2, 2});
  const auto a = pairs.select(-1, 0), b = pairs.select(-1, 1);
  const auto c = cos.narrow(-1, 0, config_.head_dim / 2), s = sin.narrow(-1, 0, config_.head_dim / 2);
  return at::stack({a * c - b * s, b * c + a * s}, -1).flatten(-2);
}

at::Tensor LlamaForCausalLM::forward(const at::Tensor& ids, KvCache& cache,
                                     AttentionProvider& attention) const {
  if (ids.dim() != 2) throw std::invalid_argument("LlamaForCausalLM::forward: ids must be (B, N)");
  const int64_t B = ids.size(0), N = ids.size(1), pos = cache.length;
  const auto& c = config_;
  if (N == 0) throw std::invalid_argument("LlamaForCausalLM::forward: ids has no positions");
  if (static_cast<int64_t>(cache.k.size()) != c.num_layers || cache.k[0].size(0) != B)
    throw std::invalid_argument("LlamaForCausalLM::forward: the cache was made for another batch or model");
  if (pos + N > cache.capacity())
    throw std::invalid_argument("LlamaForCausalLM::forward: the cache holds " +
                                std::to_string(cache.capacity()) + " positions, " + std::to_string(pos + N) +
                                " needed");
  const auto id = ids.to(at::TensorOptions().dtype(at::kLong).device(device_));
  const auto [lo, hi] = at::aminmax(id);  // one reduction (and one device sync per step)
  if (lo.item<int64_t>() < 0 || hi.item<int64_t>() >= c.vocab_size)
    throw std::invalid_argument("LlamaForCausalLM::forward: token ids must be in [0, " +
                                std::to_string(c.vocab_size) + ")");
  // RoPE tables for positions pos .. pos + N - 1: angles in float32, cos/sin cast to the model dtype.
  const auto positions = at::arange(pos, pos + N, at::TensorOptions().dtype(at::kLong).device(device_));
  const auto freqs = positions.to(at::kFloat).unsqueeze(1) * inv_freq_.unsqueeze(0);  // (N, D/2)
  const auto angles = at::cat({freqs, freqs}, -1);  // (N, D): angle of dimension i is that of pair i mod D/2
  const auto cos = angles.cos().to(dtype_), sin = angles.sin().to(dtype_);

  at::Tensor h = at::embedding(embed_, id);  // (B, N, hidden)
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  for (int64_t li = 0; li < c.num_layers; ++li) {
    const auto& l = layers_[static_cast<size_t>(li)];
    const auto x = rms_norm(h, l.attn_norm, c.rms_norm_eps);
    auto q = at::linear(x, l.wq, l.bq).view({B, N, c.num_heads, c.head_dim}).transpose(1, 2);
    auto k = at::linear(x, l.wk, l.bk).view({B, N, c.num_kv_heads, c.head_dim}).transpose(1, 2);
    const auto v = at::linear(x, l.wv, l.bv).view({B, N, c.num_kv_heads, c.head_dim}).transpose(1, 2);
    q = rope(q, cos, sin);
    k = rope(k, cos, sin);
    cache.k[static_cast<size_t>(li)].narrow(2, pos, N).copy_(k);
    cache.v[static_cast<size_t>(li)].narrow(2, pos, N).copy_(v);
    const auto K = cache.k[static_cast<size_t>(li)].narrow(2, 0, pos + N);
    const auto V = cache.v[static_cast<size_t>(li)].narrow(2, 0, pos + N);
    if (capture_ && N > 1) capture_(li, q, K, V);
    AttentionCall call;
    call.layer = li;
    call.causal = true;
    call.prefill = N > 1;
    call.scale = scale;
    const auto o = attention.attend(call, q, K, V);  // (B, Hq, N, D)
    if (o.sizes() != q.sizes())
      throw std::runtime_error("attention provider returned shape " + c10::str(o.sizes()) + ", expected " +
                               c10::str(q.sizes()) + " (layer " + std::to_string(li) + ")");
    h = h + at::linear(o.to(dtype_).transpose(1, 2).reshape({B, N, c.num_heads * c.head_dim}), l.wo, l.bo);
    const auto y = rms_norm(h, l.mlp_norm, c.rms_norm_eps);
    h = h + at::linear(at::silu(at::linear(y, l.w_gate, l.b_gate)) * at::linear(y, l.w_up, l.b_up), l.w_down,
                       l.b_down);
  }
  cache.length = pos + N;
  return rms_norm(h, norm_, c.rms_norm_eps);
}

at::Tensor LlamaForCausalLM::logits(const at::Tensor& hidden) const {
  return at::linear(hidden, lm_head_);
}

at::Tensor LlamaForCausalLM::token_nll(const at::Tensor& hidden, const at::Tensor& targets,
                                       int64_t chunk_rows) const {
  if (hidden.dim() != 2 || targets.dim() != 1 || hidden.size(0) != targets.size(0))
    throw std::invalid_argument("token_nll: hidden must be (N, hidden) and targets (N,)");
  if (chunk_rows <= 0) throw std::invalid_argument("token_nll: chunk_rows must be > 0");
  const auto t = targets.to(at::TensorOptions().dtype(at::kLong).device(hidden.device()));
  std::vector<at::Tensor> parts;
  for (int64_t s = 0; s < hidden.size(0); s += chunk_rows) {
    const int64_t n = std::min(chunk_rows, hidden.size(0) - s);
    const auto lg = logits(hidden.narrow(0, s, n)).to(at::kFloat);  // (n, vocab)
    parts.push_back(at::logsumexp(lg, -1) - lg.gather(1, t.narrow(0, s, n).unsqueeze(1)).squeeze(1));
  }
  return at::cat(parts);
}

at::Tensor LlamaForCausalLM::prefill(const at::Tensor& ids, KvCache& cache, AttentionProvider& attention,
                                     int64_t chunk) const {
  const int64_t N = ids.size(1);
  const int64_t step = chunk > 0 ? chunk : N;
  at::Tensor last;
  for (int64_t s = 0; s < N; s += step) {
    const auto h = forward(ids.narrow(1, s, std::min(step, N - s)), cache, attention);
    last = h.select(1, h.size(1) - 1);
  }
  return logits(last);
}

std::vector<int64_t> LlamaForCausalLM::generate_greedy(const std::vector<int64_t>& prompt,
                                                       int64_t max_new_tokens, AttentionProvider& attention,
                                                       int64_t prefill_chunk,
                                                       const std::vector<int64_t>& stop_ids) const {
  if (prompt.empty()) throw std::invalid_argument("generate_greedy: the prompt is empty");
  if (max_new_tokens < 0) throw std::invalid_argument("generate_greedy: max_new_tokens must be >= 0");
  std::vector<int64_t> out;
  if (max_new_tokens == 0) return out;
  const int64_t n = static_cast<int64_t>(prompt.size());
  auto cache = make_cache(1, n + max_new_tokens);
  const auto ids = at::tensor(prompt, at::kLong).unsqueeze(0);
  at::Tensor lg = prefill(ids, cache, attention, prefill_chunk);
  const auto is_eos = [&](int64_t t) {
    for (auto e : config_.eos_token_ids)
      if (t == e) return true;
    return false;
  };
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    const int64_t next = lg.argmax(-1).item<int64_t>();
    if (is_eos(next) || (i > 0 && std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end())) break;
    out.push_back(next);
    if (i + 1 == max_new_tokens) break;
    const auto h = forward(at::tensor({next}, at::kLong).unsqueeze(0), cache, attention);
    lg = logits(h.select(1, 0));
  }
  return out;
}

}  // namespace sparge::models
