// Byte-level BPE from files: HF tokenizer.json (+ tokenizer_config.json beside it) and GGUF metadata.
// Every part of a file that would change the ids and that we do not implement is refused by name, so a file
// loads correctly or not at all.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "sparge/models/gguf.h"
#include "sparge/models/tokenizer.h"
#include "sparge/posix_fs.h"

namespace sparge::models {
namespace {

using nlohmann::json;

// The split regexes we implement, spelled as in tokenizer.json files (GPT-2 style files put the first in
// ByteLevel's use_regex; Llama-3 spells the second out in a Split).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

class JsonFile {
 public:
  explicit JsonFile(std::string path) : path_(std::move(path)) {}

  json read() const {
    std::ifstream in(path_, std::ios::binary);
    if (!in) fail("", "cannot open the file");
    std::stringstream ss;
    ss << in.rdbuf();
    try {
      return json::parse(ss.str());
    } catch (const json::exception& e) {
      fail("", std::string("not valid JSON: ") + e.what());
    }
  }

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw std::runtime_error("tokenizer file `" + path_ + "`" + (field.empty() ? "" : ", field " + field) +
                             ": " + what);
  }
  [[noreturn]] void unsupported(const std::string& field, const json& value,
                                const std::string& why = "") const {
    const bool typed = value.is_object() && value.contains("type") && value["type"].is_string();
    fail(field, "unsupported " +
                    (typed ? "type `" + value["type"].get<std::string>() + "`"
                           : "value " + value.dump().substr(0, 200)) +
                    (why.empty() ? "" : " (" + why + ")"));
  }

  // (key and field by value: GCC 13's -Wdangling-reference flags reference returns with temporary arguments.)
  const json& member(const json& obj, std::string_view key, std::string field, json::value_t type) const {
    const std::string k(key);
    if (!obj.is_object() || !obj.contains(k)) fail(field, "missing");
    const json& v = obj[k];
    if (v.type() != type) fail(field, std::string("expected ") + type_name(type) + ", got " + v.type_name());
    return v;
  }

  // An optional flag that must have the given value for us to get the same ids.
  void require_flag(const json& obj, const std::string& key, bool expected, const std::string& field) const {
    if (!obj.contains(key) || obj[key].is_null()) return;
    if (!obj[key].is_boolean()) fail(field, std::string("expected a boolean, got ") + obj[key].type_name());
    if (obj[key].get<bool>() != expected) {
      fail(field, std::string("unsupported value ") + (expected ? "false" : "true"));
    }
  }

  const std::string& path() const { return path_; }

 private:
  static const char* type_name(json::value_t t) {
    switch (t) {
      case json::value_t::object:
        return "an object";
      case json::value_t::array:
        return "an array";
      case json::value_t::string:
        return "a string";
      case json::value_t::boolean:
        return "a boolean";
      default:
        return "a number";
    }
  }
  std::string path_;
};

// pre_tokenizer: Sequence / Split (a known regex, Isolated) / ByteLevel / Digits, in order.
void parse_pre_tokenizer(const JsonFile& f, const json& node, const std::string& field,
                         std::vector<PreTokenizeStep>& steps, bool& byte_level) {
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) {
    f.fail(field, "expected an object with a string `type`");
  }
  const std::string type = node["type"];
  if (type == "Sequence") {
    const json& list = f.member(node, "pretokenizers", field + ".pretokenizers", json::value_t::array);
    for (size_t i = 0; i < list.size(); ++i) {
      parse_pre_tokenizer(f, list[i], field + ".pretokenizers[" + std::to_string(i) + "]", steps, byte_level);
    }
  } else if (type == "ByteLevel") {
    f.require_flag(node, "add_prefix_space", false, field + ".add_prefix_space");
    byte_level = true;
    const bool use_regex = !node.contains("use_regex") || node["use_regex"].get<bool>();  // HF default: true
    if (use_regex) steps.push_back(PreTokenizeStep::kGpt2Regex);
  } else if (type == "Digits") {
    const bool individual = node.contains("individual_digits") && node["individual_digits"].get<bool>();
    steps.push_back(individual ? PreTokenizeStep::kDigitsIndividual : PreTokenizeStep::kDigits);
  } else if (type == "Split") {
    const json& pattern = f.member(node, "pattern", field + ".pattern", json::value_t::object);
    if (!pattern.contains("Regex") || !pattern["Regex"].is_string()) {
      f.unsupported(field + ".pattern", pattern, "only the GPT-2 and Llama-3 regexes are implemented");
    }
    const std::string re = pattern["Regex"];
    if (re == kGpt2Pattern) {
      steps.push_back(PreTokenizeStep::kGpt2Regex);
    } else if (re == kLlama3Pattern) {
      steps.push_back(PreTokenizeStep::kLlama3Regex);
    } else {
      f.fail(field + ".pattern.Regex",
             "unsupported split regex `" + re + "` (only the GPT-2 and Llama-3 regexes are implemented)");
    }
    if (node.value("behavior", std::string("Isolated")) != "Isolated") {
      f.fail(field + ".behavior", "unsupported `" + node["behavior"].dump() + "` (only Isolated)");
    }
    f.require_flag(node, "invert", false, field + ".invert");
  } else {
    f.unsupported(field, node, "supported: Sequence, Split, ByteLevel, Digits");
  }
}

// post_processor: TemplateProcessing's `single` gives the tokens around $A; ByteLevel changes only offsets.
void parse_post_processor(const JsonFile& f, const json& node, const std::string& field, BpeVocab& v) {
  if (node.is_null()) return;
  const std::string type = node.value("type", std::string());
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const json& list = f.member(node, "processors", field + ".processors", json::value_t::array);
    for (size_t i = 0; i < list.size(); ++i) {
      parse_post_processor(f, list[i], field + ".processors[" + std::to_string(i) + "]", v);
    }
    return;
  }
  if (type != "TemplateProcessing") {
    f.unsupported(field, node, "supported: TemplateProcessing, ByteLevel, Sequence");
  }
  const json& single = f.member(node, "single", field + ".single", json::value_t::array);
  const json specials = node.contains("special_tokens") ? node["special_tokens"] : json::object();
  bool seen_a = false;
  for (const json& item : single) {
    if (item.contains("Sequence")) {
      seen_a = true;
      continue;
    }
    if (!item.contains("SpecialToken")) f.unsupported(field + ".single", item);
    const std::string name = item["SpecialToken"].value("id", std::string());
    if (!specials.contains(name)) f.fail(field + ".special_tokens", "no entry for `" + name + "`");
    for (const json& id : specials[name].at("ids"))
      (seen_a ? v.suffix : v.prefix).push_back(id.get<int32_t>());
  }
}

// tokenizer_config.json: a token is a string or {"content": ...}.
std::optional<std::string> config_token(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return std::nullopt;
  const json& t = cfg[key];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_object() && t.contains("content") && t["content"].is_string())
    return t["content"].get<std::string>();
  return std::nullopt;
}

std::string config_chat_template(const json& cfg) {
  if (!cfg.contains("chat_template")) return "";
  const json& t = cfg["chat_template"];
  if (t.is_string()) return t;
  if (t.is_array()) {  // [{"name": "default", "template": ...}, ...]
    for (const json& e : t) {
      if (e.value("name", std::string()) == "default") return e.value("template", std::string());
    }
    if (!t.empty() && t[0].is_object()) return t[0].value("template", std::string());
  }
  return "";
}

std::unique_ptr<BpeTokenizer> load_tokenizer_json(const JsonFile& f, const json& j) {
  const std::string& path = f.path();
  if (!j.is_object()) f.fail("", "expected a JSON object at the top level");
  BpeVocab v;
  v.source = path;

  const json& model = f.member(j, "model", "model", json::value_t::object);
  const std::string type = model.value("type", model.contains("merges") ? std::string("BPE") : std::string());
  if (type != "BPE")
    f.fail("model.type", "unsupported model type `" + type + "` (only byte-level BPE is supported)");
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() != 0.0) {
    f.fail("model.dropout", "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() && !model[key].get<std::string>().empty()) {
      f.fail(std::string("model.") + key, "unsupported (byte-level BPE has none)");
    }
  }
  if (model.value("byte_fallback", false)) {
    f.fail("model.byte_fallback",
           "unsupported value true (a SentencePiece-style BPE such as Llama-2's: load its "
           "tokenizer.model with SentencePieceTokenizer::from_file)");
  }
  v.ignore_merges = model.value("ignore_merges", false);

  // Vocabulary: the model's, then the added tokens (which may extend it).
  const json& vocab = f.member(model, "vocab", "model.vocab", json::value_t::object);
  const auto put = [&](int64_t id, const std::string& text, TokenType t, const std::string& field) {
    if (id < 0 || id >= INT32_MAX) f.fail(field, "token id " + std::to_string(id) + " is out of range");
    if (static_cast<size_t>(id) >= v.tokens.size()) {
      v.tokens.resize(id + 1);
      v.types.resize(id + 1, TokenType::kUnused);
    }
    v.tokens[id] = text;
    v.types[id] = t;
  };
  for (const auto& [text, id] : vocab.items()) {
    if (!id.is_number_integer()) f.fail("model.vocab[\"" + text + "\"]", "expected an integer id");
    put(id.get<int64_t>(), text, TokenType::kNormal, "model.vocab[\"" + text + "\"]");
  }
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    const json& added = f.member(j, "added_tokens", "added_tokens", json::value_t::array);
    for (size_t i = 0; i < added.size(); ++i) {
      const std::string field = "added_tokens[" + std::to_string(i) + "]";
      const json& a = added[i];
      const std::string content = f.member(a, "content", field + ".content", json::value_t::string);
      if (!a.contains("id") || !a["id"].is_number_integer()) f.fail(field + ".id", "expected an integer id");
      for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
        f.require_flag(a, flag, false, field + "." + flag + " of `" + content + "`");
      }
      put(a["id"].get<int64_t>(), content,
          a.value("special", false) ? TokenType::kControl : TokenType::kUserDefined, field);
    }
  }

  // Merges: "a b" strings (GPT-2 era files) or [a, b] pairs (tokenizers >= 0.20).
  if (model.contains("merges")) {
    const json& merges = f.member(model, "merges", "model.merges", json::value_t::array);
    v.merges.reserve(merges.size());
    for (size_t r = 0; r < merges.size(); ++r) {
      const json& m = merges[r];
      const std::string field = "model.merges[" + std::to_string(r) + "]";
      if (m.is_string()) {
        const std::string s = m;
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 == s.size())
          f.fail(field, "expected \"a b\", got `" + s + "`");
        v.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        v.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        f.fail(field, "expected \"a b\" or [a, b], got " + m.dump().substr(0, 100));
      }
    }
  }

  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const json& n = j["normalizer"];
    const bool empty_sequence = n.value("type", std::string()) == "Sequence" && n.contains("normalizers") &&
                                n["normalizers"].is_array() && n["normalizers"].empty();
    if (!empty_sequence) f.unsupported("normalizer", n, "no normalizers are implemented");
  }
  v.pre_tokenizer.clear();
  bool byte_level = false;
  if (!j.contains("pre_tokenizer") || j["pre_tokenizer"].is_null()) {
    f.fail("pre_tokenizer", "missing (a byte-level BPE needs a ByteLevel pre-tokenizer)");
  }
  parse_pre_tokenizer(f, j["pre_tokenizer"], "pre_tokenizer", v.pre_tokenizer, byte_level);
  if (!byte_level) f.fail("pre_tokenizer", "no ByteLevel step: only byte-level BPE is supported");
  if (j.contains("decoder") && !j["decoder"].is_null()) {
    const json& d = j["decoder"];
    if (d.value("type", std::string()) != "ByteLevel") f.unsupported("decoder", d, "only ByteLevel");
  }
  if (j.contains("post_processor")) parse_post_processor(f, j["post_processor"], "post_processor", v);

  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string unk = model["unk_token"];
    for (size_t id = 0; id < v.tokens.size(); ++id) {
      if (v.tokens[id] == unk) v.unk = static_cast<int32_t>(id);
    }
    if (!v.unk) f.fail("model.unk_token", "`" + unk + "` is not in the vocabulary");
  }

  // tokenizer_config.json next to it: named special tokens and the chat template.
  // (Path arithmetic only: see sparge/posix_fs.h on libtorch's std::filesystem.)
  const auto cfg_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  if (posix::is_file(cfg_path.string())) {
    const JsonFile cf(cfg_path.string());
    const json cfg = cf.read();
    const auto find = [&](const char* key) -> std::optional<int32_t> {
      const auto text = config_token(cfg, key);
      if (!text) return std::nullopt;
      for (size_t id = 0; id < v.tokens.size(); ++id) {
        if (v.tokens[id] == *text) return static_cast<int32_t>(id);
      }
      cf.fail(key, "`" + *text + "` is not in the vocabulary of " + path);
    };
    v.bos = find("bos_token");
    v.eos = find("eos_token");
    v.pad = find("pad_token");
    if (const auto unk = find("unk_token")) v.unk = unk;
    v.chat_template = config_chat_template(cfg);
  }
  if (!v.bos && v.prefix.size() == 1) v.bos = v.prefix[0];
  return std::make_unique<BpeTokenizer>(std::move(v));
}

}  // namespace

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_tokenizer_json(const std::string& path) {
  const JsonFile f(path);
  const json j = f.read();
  try {
    return load_tokenizer_json(f, j);
  } catch (const json::exception& e) {  // a field of an unexpected JSON type deep inside
    f.fail("", std::string("malformed: ") + e.what());
  }
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_gguf(const GgufFile& gguf) {
  const std::string& path = gguf.path();
  const auto fail = [&](const std::string& key, const std::string& what) -> void {
    throw std::runtime_error("GGUF `" + path + "`, key " + key + ": " + what);
  };
  const std::string model = gguf.get_string("tokenizer.ggml.model");
  if (model == "llama") {
    fail("tokenizer.ggml.model",
         "`llama` (a SentencePiece vocabulary) is not supported from GGUF; load the model's tokenizer.model "
         "with SentencePieceTokenizer::from_file");
  }
  if (model != "gpt2")
    fail("tokenizer.ggml.model", "unsupported tokenizer model `" + model + "` (only gpt2)");

  BpeVocab v;
  v.source = path;
  v.tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  if (gguf.has("tokenizer.ggml.token_type")) {
    const auto types = gguf.get_int_array("tokenizer.ggml.token_type");
    if (types.size() != v.tokens.size()) {
      fail("tokenizer.ggml.token_type",
           std::to_string(types.size()) + " types for " + std::to_string(v.tokens.size()) + " tokens");
    }
    v.types.reserve(types.size());
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] < 1 || types[i] > 6)
        fail("tokenizer.ggml.token_type",
             "token " + std::to_string(i) + " has unknown type " + std::to_string(types[i]));
      v.types.push_back(static_cast<TokenType>(types[i]));
    }
  }
  const auto merges = gguf.get_string_array("tokenizer.ggml.merges");
  v.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const size_t sp = merges[r].find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == merges[r].size()) {
      fail("tokenizer.ggml.merges", "merge #" + std::to_string(r) + " `" + merges[r] + "` is not \"a b\"");
    }
    v.merges.emplace_back(merges[r].substr(0, sp), merges[r].substr(sp + 1));
  }
  const std::string pre = gguf.get_string("tokenizer.ggml.pre", "default");
  try {
    v.pre_tokenizer = pre_tokenizer_steps(pre);
  } catch (const std::invalid_argument& e) {
    fail("tokenizer.ggml.pre", e.what());
  }
  // llama.cpp's llama-bpe vocabularies look whole pieces up first, as tiktoken does (HF: ignore_merges).
  v.ignore_merges = v.pre_tokenizer == std::vector<PreTokenizeStep>{PreTokenizeStep::kLlama3Regex};
  const auto id = [&](const char* key) -> std::optional<int32_t> {
    if (!gguf.has(key)) return std::nullopt;
    const int64_t x = gguf.get_int(key);
    if (x < 0 || x >= static_cast<int64_t>(v.tokens.size())) {
      fail(key,
           "id " + std::to_string(x) + " is outside the vocabulary of " + std::to_string(v.tokens.size()));
    }
    return static_cast<int32_t>(x);
  };
  v.bos = id("tokenizer.ggml.bos_token_id");
  v.eos = id("tokenizer.ggml.eos_token_id");
  v.unk = id("tokenizer.ggml.unknown_token_id");
  v.pad = id("tokenizer.ggml.padding_token_id");
  // Without the key, llama.cpp adds BOS for llama-bpe vocabularies only.
  if (gguf.get_bool("tokenizer.ggml.add_bos_token", v.ignore_merges)) {
    if (!v.bos) fail("tokenizer.ggml.add_bos_token", "true, but there is no tokenizer.ggml.bos_token_id");
    v.prefix.push_back(*v.bos);
  }
  if (gguf.get_bool("tokenizer.ggml.add_eos_token", false)) {
    if (!v.eos) fail("tokenizer.ggml.add_eos_token", "true, but there is no tokenizer.ggml.eos_token_id");
    v.suffix.push_back(*v.eos);
  }
  v.chat_template = gguf.get_string("tokenizer.chat_template", "");
  return std::make_unique<BpeTokenizer>(std::move(v));
}

}  // namespace sparge::models
