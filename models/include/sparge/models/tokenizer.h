// Tokenizers for the language-model ports: byte-level BPE (GPT-2, SmolLM2, Llama-3 families) read from a
// Hugging Face tokenizer.json or from GGUF metadata, and SentencePiece models through libsentencepiece.
//
//   auto tok = BpeTokenizer::from_gguf(GgufFile::open("data/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
//   std::vector<int32_t> ids = tok->encode(tok->apply_chat_template({{"user", "Hi"}}, true), false);
//   std::string text = tok->decode(ids);
//
// What it is not: no normalizers (NFC, lowercasing, ...), no Jinja (the two chat formats below are recognised
// from the template text and written natively), no offsets, no padding/truncation, no BPE dropout.
// Unsupported parts of a tokenizer file fail at load time with a message naming the file and the component.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace sparge::models {

class GgufFile;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

// The chat formats apply_chat_template writes.
enum class ChatFormat {
  kNone,    // no template: apply_chat_template throws
  kChatML,  // <|im_start|>role\ncontent<|im_end|>\n ... (SmolLM2, Qwen)
  kLlama3,  // <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> ... (Llama-3)
  // Llama-3.1/3.2 without tools: as kLlama3, but the system turn always comes first and opens with
  // "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" (the template's default date).
  kLlama31,
};

struct ChatTemplate {
  ChatFormat format = ChatFormat::kNone;
  // ChatML: the system message inserted when the first message is not a system message ("": none). SmolLM2's
  // template has one ("You are a helpful AI assistant named SmolLM, trained by Hugging Face").
  std::string default_system;

  // Recognises a Jinja chat template (GGUF tokenizer.chat_template, tokenizer_config.json chat_template) by
  // its markers: <|im_start|> -> ChatML (with the default system prompt the template spells out, if any),
  // <|start_header_id|> -> Llama-3 (Llama-3.1 when it writes "Cutting Knowledge Date"), else (or "") ->
  // kNone.
  static ChatTemplate detect(std::string_view jinja);
};

// Token kinds, numbered as GGUF's tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // special tokens (<|im_start|>, <|eot_id|>): found in text only when parse_special
  kUserDefined = 4,  // added tokens that are not special: always found in text
  kUnused = 5,
  kByte = 6,
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // UTF-8 text -> token ids. Control tokens spelled out in the text ("<|im_start|>") become their ids when
  // parse_special (leftmost-longest match, as HF tokenizers and llama.cpp do); user-defined tokens always do.
  // add_special adds the model's prefix/suffix tokens (e.g. BOS when the file says add_bos_token).
  std::vector<int32_t> encode(std::string_view text, bool add_special = true,
                              bool parse_special = true) const;
  // Token ids -> bytes (UTF-8 for whole sequences; a cut inside a character leaves a partial sequence).
  // skip_special drops control tokens. Throws for an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  // The vocabulary string of `id` (byte-level BPE: in GPT-2 byte-to-unicode form, "Ġthe"). Throws when out of
  // range.
  virtual std::string id_to_token(int32_t id) const = 0;
  virtual TokenType token_type(int32_t id) const = 0;

  std::optional<int32_t> bos_id() const { return bos_; }
  std::optional<int32_t> eos_id() const { return eos_; }
  std::optional<int32_t> pad_id() const { return pad_; }
  std::optional<int32_t> unk_id() const { return unk_; }
  // Tokens encode(text, add_special = true) puts before and after the text.
  const std::vector<int32_t>& prefix_ids() const { return prefix_; }
  const std::vector<int32_t>& suffix_ids() const { return suffix_; }
  // Overrides the file's choice: BOS first / EOS last when add_special (throws if the model has no such
  // token).
  void set_add_bos_eos(bool add_bos, bool add_eos);

  const ChatTemplate& chat_template() const { return chat_; }
  void set_chat_template(ChatTemplate t) { chat_ = std::move(t); }
  // The prompt text of a conversation in the model's chat format (encode it with add_special = false: the
  // text already holds BOS where the format wants one). Throws when the format is kNone.
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  // By file name: *.gguf -> BpeTokenizer::from_gguf, *.json -> BpeTokenizer::from_tokenizer_json,
  // *.model -> SentencePieceTokenizer::from_file.
  static std::unique_ptr<Tokenizer> from_file(const std::string& path);

 protected:
  // Ids of text without special tokens, appended to `out`.
  virtual void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const = 0;
  // Registers a token that encode() looks for in raw text: control tokens only when parse_special.
  void add_special_text(const std::string& text, int32_t id, bool control);

  std::optional<int32_t> bos_, eos_, pad_, unk_;
  std::vector<int32_t> prefix_, suffix_;
  ChatTemplate chat_;

 private:
  struct Special {
    std::string text;
    int32_t id;
    bool control;
  };
  std::vector<Special> specials_;                     // longest first
  std::vector<std::vector<uint32_t>> by_first_byte_;  // 256 lists of indices into specials_
};

// One step of a byte-level BPE pre-tokenizer; each step splits every piece the steps before it made.
enum class PreTokenizeStep {
  kDigits,            // HF Digits(individual_digits=false): runs of \p{N} become pieces
  kDigitsIndividual,  // HF Digits(individual_digits=true): every \p{N} code point becomes a piece
  kGpt2Regex,         // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kLlama3Regex,       // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
                      //   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
};

// The steps of a pre-tokenizer by its GGUF tokenizer.ggml.pre name: "gpt2" and "default" -> {kGpt2Regex};
// "smollm", "starcoder" -> {kDigitsIndividual, kGpt2Regex}; "llama3", "llama-v3", "llama-bpe" ->
// {kLlama3Regex}. Throws naming `name` for any other. ("default" in llama.cpp is a looser set of regexes;
// transformers' GGUF loader uses GPT-2's ByteLevel for every gpt2-model file, and so do we.)
std::vector<PreTokenizeStep> pre_tokenizer_steps(std::string_view name);

// Everything a byte-level BPE tokenizer is made of, as plain data.
struct BpeVocab {
  std::vector<std::string>
      tokens;                    // id -> text: normal tokens in GPT-2 byte-to-unicode form, others verbatim
  std::vector<TokenType> types;  // id -> type (empty: all normal)
  std::vector<std::pair<std::string, std::string>> merges;  // by rank, in byte-to-unicode form
  std::vector<PreTokenizeStep> pre_tokenizer = {PreTokenizeStep::kGpt2Regex};
  bool ignore_merges = false;  // a piece that is a whole vocabulary token maps to it directly (Llama-3)
  std::optional<int32_t> bos, eos, unk, pad;
  std::vector<int32_t> prefix, suffix;  // added by encode(add_special = true)
  std::string chat_template;            // Jinja text, recognised by ChatTemplate::detect
  std::string source = "<memory>";      // for error messages
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Validates `vocab` (merge parts and results in the vocabulary, ids in range) and throws naming `source`.
  explicit BpeTokenizer(BpeVocab vocab);

  // HF tokenizer.json: model.type BPE (vocab, merges as "a b" strings or [a, b] pairs, ignore_merges),
  // added_tokens, pre_tokenizer made of Sequence/Split (the GPT-2 or Llama-3 regex, behavior Isolated)/
  // ByteLevel/Digits, post_processor TemplateProcessing/ByteLevel/Sequence. BOS/EOS/PAD and the chat template
  // come from a tokenizer_config.json next to the file when there is one.
  static std::unique_ptr<BpeTokenizer> from_tokenizer_json(const std::string& path);
  // GGUF metadata: tokenizer.ggml.model "gpt2", .pre, .tokens, .token_type, .merges, .bos/eos/unknown/
  // padding_token_id, .add_bos_token/.add_eos_token, tokenizer.chat_template. As in llama.cpp, a Llama-3
  // vocabulary (pre llama3/llama-v3/llama-bpe) ignores merges for whole-token pieces and adds BOS unless
  // add_bos_token says otherwise; the others add nothing unless the keys say so.
  static std::unique_ptr<BpeTokenizer> from_gguf(const GgufFile& gguf);

  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(vocab_.tokens.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  TokenType token_type(int32_t id) const override;

  // The pieces the pre-tokenizer cuts `text` into (raw bytes, before the byte-to-unicode mapping).
  std::vector<std::string> pre_tokenize(std::string_view text) const;
  const std::vector<PreTokenizeStep>& pre_tokenizer() const { return vocab_.pre_tokenizer; }
  // The plain data it was made from (copy, change, construct again: e.g. another pre-tokenizer).
  const BpeVocab& vocab() const { return vocab_; }

 protected:
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const override;

 private:
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;

  struct Merge {
    int32_t rank;
    int32_t id;  // the merged token
  };
  struct Cache;

  BpeVocab vocab_;
  std::unordered_map<std::string, int32_t> ids_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  int32_t byte_ids_[256];                       // id of the one-byte token of each byte, -1 if none
  std::shared_ptr<Cache> cache_;
};

// A SentencePiece model (tokenizer.model) through libsentencepiece: ids are the processor's own; encode()
// adds the special-token splitting of the other tokenizers around it (control pieces such as <s> found in
// text) and BOS first when add_special (Llama/Mistral convention; set_add_bos_eos changes it).
class SentencePieceTokenizer final : public Tokenizer {
 public:
  static std::unique_ptr<SentencePieceTokenizer> from_file(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int32_t vocab_size() const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  TokenType token_type(int32_t id) const override;

 protected:
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const override;

 private:
  SentencePieceTokenizer();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

}  // namespace sparge::models
