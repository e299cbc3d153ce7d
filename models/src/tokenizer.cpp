// The tokenizer-independent parts: special-token splitting around encode_ordinary, BOS/EOS, chat formats, and
// the choice of loader by file name.
#include "sparge/models/tokenizer.h"

#include <algorithm>
#include <stdexcept>

#include "sparge/models/gguf.h"
#include "unicode.h"

namespace sparge::models {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Python's str.strip() as Jinja's trim filter does it (Unicode whitespace at both ends).
std::string trim(std::string_view s) {
  const auto space_at = [&](size_t i, size_t& len) {
    return (unicode::classify(unicode::decode_utf8(s, i, len)) & unicode::kWhitespace) != 0;
  };
  size_t b = 0, len = 0;
  while (b < s.size() && space_at(b, len)) b += len;
  size_t e = b, last = b;  // last: the end of the last non-space code point
  while (e < s.size()) {
    const bool sp = space_at(e, len);
    e += len;
    if (!sp) last = e;
  }
  return std::string(s.substr(b, last - b));
}

// Undoes the escapes of a Jinja string literal (\n, \t, \', \", \\).
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char c = s[++i];
      out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

ChatTemplate ChatTemplate::detect(std::string_view jinja) {
  ChatTemplate t;
  if (jinja.find("<|im_start|>") != std::string_view::npos) {
    t.format = ChatFormat::kChatML;
    // The default system prompt, as SmolLM2 and Qwen write it: a literal system turn emitted when
    // messages[0]['role'] != 'system'. The newline after "system" is either a real one or the escape \n.
    const bool conditional = jinja.find("!= 'system'") != std::string_view::npos ||
                             jinja.find("!= \"system\"") != std::string_view::npos;
    for (const std::string_view head : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
      const size_t b = jinja.find(head);
      if (!conditional || b == std::string_view::npos) continue;
      const size_t e = jinja.find("<|im_end|>", b + head.size());
      if (e == std::string_view::npos) continue;
      t.default_system = unescape(jinja.substr(b + head.size(), e - b - head.size()));
      break;
    }
  } else if (jinja.find("<|start_header_id|>") != std::string_view::npos) {
    t.format = jinja.find("Cutting Knowledge Date") != std::string_view::npos ? ChatFormat::kLlama31
                                                                              : ChatFormat::kLlama3;
  }
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int32_t> out;
  if (add_special) out = prefix_;
  // Leftmost-longest search for the registered special texts; the stretches between them go to the model.
  size_t start = 0;  // start of the pending ordinary text
  for (size_t i = 0; i < text.size() && !specials_.empty();) {
    const Special* hit = nullptr;
    for (const uint32_t k : by_first_byte_[static_cast<uint8_t>(text[i])]) {
      const Special& s = specials_[k];
      if ((parse_special || !s.control) && text.compare(i, s.text.size(), s.text) == 0) {
        hit = &s;  // longest first
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    if (start < i) encode_ordinary(text.substr(start, i - start), out);
    out.push_back(hit->id);
    i += hit->text.size();
    start = i;
  }
  if (start < text.size()) encode_ordinary(text.substr(start), out);
  if (add_special) out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

void Tokenizer::add_special_text(const std::string& text, int32_t id, bool control) {
  if (text.empty()) return;
  specials_.push_back({text, id, control});
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const Special& a, const Special& b) { return a.text.size() > b.text.size(); });
  by_first_byte_.assign(256, {});
  for (uint32_t k = 0; k < specials_.size(); ++k) {
    by_first_byte_[static_cast<uint8_t>(specials_[k].text[0])].push_back(k);
  }
}

void Tokenizer::set_add_bos_eos(bool add_bos, bool add_eos) {
  if (add_bos && !bos_)
    throw std::invalid_argument("set_add_bos_eos: add_bos is true but the model has no BOS token");
  if (add_eos && !eos_)
    throw std::invalid_argument("set_add_bos_eos: add_eos is true but the model has no EOS token");
  prefix_.clear();
  suffix_.clear();
  if (add_bos) prefix_.push_back(*bos_);
  if (add_eos) suffix_.push_back(*eos_);
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages,
                                           bool add_generation_prompt) const {
  std::string out;
  switch (chat_.format) {
    case ChatFormat::kNone:
      throw std::invalid_argument(
          "apply_chat_template: this tokenizer has no chat template of a known format (ChatML or Llama-3); "
          "set one with set_chat_template");
    case ChatFormat::kChatML:
      // {% if loop.first and messages[0]['role'] != 'system' %}<default system turn>{% endif %}
      // '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n' ... ['<|im_start|>assistant\n']
      for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0 && messages[0].role != "system" && !chat_.default_system.empty()) {
          out += "<|im_start|>system\n" + chat_.default_system + "<|im_end|>\n";
        }
        out += "<|im_start|>" + messages[i].role + "\n" + messages[i].content + "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
    case ChatFormat::kLlama3: {
      // bos_token before the first turn; '<|start_header_id|>' + role + '<|end_header_id|>\n\n' +
      // content | trim + '<|eot_id|>' ... ['<|start_header_id|>assistant<|end_header_id|>\n\n']
      const std::string bos = bos_ ? id_to_token(*bos_) : "<|begin_of_text|>";
      for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0) out += bos;
        out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" +
               trim(messages[i].content) + "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    }
    case ChatFormat::kLlama31: {
      // bos_token, then always a system turn: the knowledge/today dates and messages[0]'s content | trim when
      // it is a system message; then the other turns as Llama-3 writes them.
      out = bos_ ? id_to_token(*bos_) : "<|begin_of_text|>";
      const bool has_system = !messages.empty() && messages[0].role == "system";
      out +=
          "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
          "Today Date: 26 Jul 2024\n\n" +
          (has_system ? trim(messages[0].content) : std::string()) + "<|eot_id|>";
      for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i) {
        out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" +
               trim(messages[i].content) + "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    }
  }
  return out;
}

std::unique_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  if (ends_with(path, ".gguf")) return BpeTokenizer::from_gguf(GgufFile::open(path));
  if (ends_with(path, ".json")) return BpeTokenizer::from_tokenizer_json(path);
  if (ends_with(path, ".model")) return SentencePieceTokenizer::from_file(path);
  throw std::invalid_argument("Tokenizer::from_file: `" + path +
                              "` is not a .gguf, tokenizer .json or SentencePiece .model file");
}

}  // namespace sparge::models
