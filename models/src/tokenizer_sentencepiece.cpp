// SentencePiece models through libsentencepiece (Debian 0.1.97 on CI, 0.2 on the GPU machines; only API
// common to both is used). The processor does the encoding; this class adds the Tokenizer contract around it.
#include <sentencepiece_processor.h>

#include <stdexcept>

#include "sparge/models/tokenizer.h"

namespace sparge::models {

SentencePieceTokenizer::SentencePieceTokenizer()
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_file(const std::string& model_path) {
  std::unique_ptr<SentencePieceTokenizer> t(new SentencePieceTokenizer());
  t->path_ = model_path;
  const auto status = t->sp_->Load(model_path);
  if (!status.ok()) {
    throw std::runtime_error("SentencePiece model `" + model_path + "`: cannot load: " + status.ToString());
  }
  const auto opt = [](int id) { return id >= 0 ? std::optional<int32_t>(id) : std::nullopt; };
  t->bos_ = opt(t->sp_->bos_id());
  t->eos_ = opt(t->sp_->eos_id());
  t->pad_ = opt(t->sp_->pad_id());
  t->unk_ = opt(t->sp_->unk_id());
  if (t->bos_) t->prefix_ = {*t->bos_};
  // Control pieces (<s>, </s>, ...) never come out of the processor's own encoding of text; find them in the
  // text like the other tokenizers' special tokens. User-defined pieces the processor matches itself.
  for (int id = 0; id < t->sp_->GetPieceSize(); ++id) {
    if (t->sp_->IsControl(id)) t->add_special_text(t->sp_->IdToPiece(id), id, true);
  }
  return t;
}

void SentencePieceTokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(std::string(text), &ids);
  if (!status.ok())
    throw std::runtime_error("SentencePiece `" + path_ + "`: encode failed: " + status.ToString());
  out.insert(out.end(), ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  // The processor drops control ids; keep them as text unless skip_special, decoding the stretches between.
  std::string out;
  std::vector<int> run;
  const auto flush = [&]() {
    if (run.empty()) return;
    std::string s;
    const auto status = sp_->Decode(run, &s);
    if (!status.ok())
      throw std::runtime_error("SentencePiece `" + path_ + "`: decode failed: " + status.ToString());
    out += s;
    run.clear();
  };
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) id_to_token(id);  // throws, naming the id
    if (sp_->IsControl(id)) {
      flush();
      if (!skip_special) out += sp_->IdToPiece(id);
    } else {
      run.push_back(id);
    }
  }
  flush();
  return out;
}

int32_t SentencePieceTokenizer::vocab_size() const {
  return sp_->GetPieceSize();
}

std::optional<int32_t> SentencePieceTokenizer::token_to_id(std::string_view token) const {
  const int id = sp_->PieceToId(std::string(token));
  // PieceToId answers unk_id for unknown pieces; only the unknown piece itself maps there truly.
  if (id == sp_->unk_id() && sp_->IdToPiece(id) != token) return std::nullopt;
  return id;
}

std::string SentencePieceTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    throw std::out_of_range("token id " + std::to_string(id) + " is outside [0, " +
                            std::to_string(vocab_size()) + ") of " + path_);
  }
  return sp_->IdToPiece(id);
}

TokenType SentencePieceTokenizer::token_type(int32_t id) const {
  id_to_token(id);  // range check
  if (sp_->IsControl(id)) return TokenType::kControl;
  if (sp_->IsUnknown(id)) return TokenType::kUnknown;
  if (sp_->IsUnused(id)) return TokenType::kUnused;
  if (sp_->IsByte(id)) return TokenType::kByte;
  return TokenType::kNormal;  // user-defined pieces are not told apart by the 0.1.97 API
}

}  // namespace sparge::models
