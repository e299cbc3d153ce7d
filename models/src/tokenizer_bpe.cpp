// Byte-level BPE (GPT-2 lineage): text -> pre-tokenizer pieces -> bytes mapped to printable code points
// (GPT-2's byte-to-unicode table) -> merges applied lowest rank first, leftmost first on ties (HF tokenizers'
// order) -> ids. Pieces up to kMaxCachedPiece bytes are cached.
#include <algorithm>
#include <array>
#include <cstdio>
#include <mutex>
#include <queue>
#include <stdexcept>

#include "sparge/models/tokenizer.h"
#include "tokenizer_pretokenize.h"
#include "unicode.h"

namespace sparge::models {
namespace {

constexpr size_t kMaxCachedPiece = 64;        // bytes; longer pieces are rare and not worth keeping
constexpr size_t kMaxCacheEntries = 1 << 16;  // then the cache starts over

// GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for themselves, the other 68 bytes (controls,
// space, DEL, NBSP, soft hyphen) map to U+0100.. in byte order, so every byte is a visible code point ("Ġ" =
// space).
struct ByteMap {
  std::array<uint32_t, 256> to_cp{};
  std::array<std::string, 256> to_utf8;
  std::array<int16_t, 324> to_byte{};  // code point -> byte, -1 if none

  ByteMap() {
    to_byte.fill(-1);
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_cp[b] = printable ? b : 256 + extra++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
      unicode::append_utf8(to_cp[b], to_utf8[b]);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

std::vector<PreTokenizeStep> pre_tokenizer_steps(std::string_view name) {
  if (name == "gpt2" || name == "default") return {PreTokenizeStep::kGpt2Regex};
  if (name == "smollm" || name == "starcoder")
    return {PreTokenizeStep::kDigitsIndividual, PreTokenizeStep::kGpt2Regex};
  if (name == "llama3" || name == "llama-v3" || name == "llama-bpe") return {PreTokenizeStep::kLlama3Regex};
  throw std::invalid_argument("unsupported pre-tokenizer `" + std::string(name) +
                              "` (supported: gpt2, default, smollm, starcoder, llama3, llama-v3, llama-bpe)");
}

struct BpeTokenizer::Cache {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>> ids;
};

BpeTokenizer::BpeTokenizer(BpeVocab vocab) : vocab_(std::move(vocab)), cache_(std::make_shared<Cache>()) {
  const std::string& src = vocab_.source;
  const auto n = static_cast<int64_t>(vocab_.tokens.size());
  if (n == 0) throw std::invalid_argument("BPE vocabulary of " + src + " is empty");
  if (n > INT32_MAX) throw std::invalid_argument("BPE vocabulary of " + src + " has more than 2^31 tokens");
  if (vocab_.types.empty()) vocab_.types.assign(vocab_.tokens.size(), TokenType::kNormal);
  if (vocab_.types.size() != vocab_.tokens.size()) {
    throw std::invalid_argument("BPE vocabulary of " + src + ": " + std::to_string(vocab_.types.size()) +
                                " token types for " + std::to_string(n) + " tokens");
  }
  if (vocab_.pre_tokenizer.empty()) {
    // Not an error in HF (the whole text is one piece), but certainly not what any model was trained with.
    throw std::invalid_argument("BPE vocabulary of " + src + " has no pre-tokenizer steps");
  }
  ids_.reserve(vocab_.tokens.size());
  for (int32_t id = 0; id < static_cast<int32_t>(n); ++id) {
    if (!vocab_.tokens[id].empty()) ids_.emplace(vocab_.tokens[id], id);  // the first id of a duplicate wins
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = ids_.find(byte_map().to_utf8[b]);
    byte_ids_[b] = it == ids_.end() ? -1 : it->second;
  }
  merges_.reserve(vocab_.merges.size());
  for (size_t r = 0; r < vocab_.merges.size(); ++r) {
    const auto& [a, b] = vocab_.merges[r];
    const auto ia = ids_.find(a), ib = ids_.find(b), ic = ids_.find(a + b);
    for (const auto& [it, what] : {std::pair{ia, a}, std::pair{ib, b}, std::pair{ic, a + b}}) {
      if (it == ids_.end()) {
        throw std::invalid_argument("BPE vocabulary of " + src + ": merge #" + std::to_string(r) + " `" + a +
                                    " " + b + "`: `" + what + "` is not in the vocabulary");
      }
    }
    merges_.emplace(pair_key(ia->second, ib->second), Merge{static_cast<int32_t>(r), ic->second});
  }
  const auto check_id = [&](const std::optional<int32_t>& id, const char* what) {
    if (id && (*id < 0 || *id >= n)) {
      throw std::invalid_argument("BPE vocabulary of " + src + ": " + what + " id " + std::to_string(*id) +
                                  " is outside [0, " + std::to_string(n) + ")");
    }
  };
  check_id(vocab_.bos, "BOS");
  check_id(vocab_.eos, "EOS");
  check_id(vocab_.unk, "unknown-token");
  check_id(vocab_.pad, "padding");
  for (const int32_t id : vocab_.prefix) check_id(id, "prefix token");
  for (const int32_t id : vocab_.suffix) check_id(id, "suffix token");
  bos_ = vocab_.bos, eos_ = vocab_.eos, unk_ = vocab_.unk, pad_ = vocab_.pad;
  prefix_ = vocab_.prefix, suffix_ = vocab_.suffix;
  for (int32_t id = 0; id < static_cast<int32_t>(n); ++id) {
    const TokenType t = vocab_.types[id];
    if (t == TokenType::kControl || t == TokenType::kUserDefined) {
      add_special_text(vocab_.tokens[id], id, t == TokenType::kControl);
    }
  }
  chat_ = ChatTemplate::detect(vocab_.chat_template);
}

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  const auto it = ids_.find(std::string(token));
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

std::string BpeTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    throw std::out_of_range("token id " + std::to_string(id) + " is outside [0, " +
                            std::to_string(vocab_size()) + ") of " + vocab_.source);
  }
  return vocab_.tokens[id];
}

TokenType BpeTokenizer::token_type(int32_t id) const {
  id_to_token(id);  // range check
  return vocab_.types[id];
}

std::vector<std::string> BpeTokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string_view> pieces;
  detail::pre_tokenize(vocab_.pre_tokenizer, text, pieces);
  return {pieces.begin(), pieces.end()};
}

void BpeTokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<std::string_view> pieces;
  detail::pre_tokenize(vocab_.pre_tokenizer, text, pieces);
  for (const std::string_view p : pieces) bpe(p, out);
}

// One pre-tokenizer piece: bytes -> one-byte tokens -> merges (HF tokenizers' Word::merge_all order).
void BpeTokenizer::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  const ByteMap& bm = byte_map();
  if (vocab_.ignore_merges) {
    std::string mapped;
    for (const char c : piece) mapped += bm.to_utf8[static_cast<uint8_t>(c)];
    const auto it = ids_.find(mapped);
    if (it != ids_.end() && vocab_.types[it->second] != TokenType::kControl) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= kMaxCachedPiece;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    const auto it = cache_->ids.find(std::string(piece));
    if (it != cache_->ids.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }

  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours, -1 at the ends
    bool alive;
  };
  std::vector<Symbol> syms;
  syms.reserve(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) {
    int32_t id = byte_ids_[static_cast<uint8_t>(piece[i])];
    if (id < 0) {
      if (!unk_) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned>(static_cast<uint8_t>(piece[i])));
        throw std::runtime_error(std::string("BPE: byte ") + hex + " has no token in the vocabulary of " +
                                 vocab_.source + " and there is no unknown token");
      }
      id = *unk_;
    }
    const auto k = static_cast<int32_t>(i);
    syms.push_back({id, k - 1, k + 1 < static_cast<int32_t>(piece.size()) ? k + 1 : -1, true});
  }

  struct Candidate {
    int32_t rank, pos;        // pos: index of the left symbol
    int32_t left, right, id;  // the pair as it was when queued, and the merged token
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push = [&](int32_t pos) {
    if (pos < 0 || syms[pos].next < 0) return;
    const Symbol& l = syms[pos];
    const Symbol& r = syms[l.next];
    const auto it = merges_.find(pair_key(l.id, r.id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, l.id, r.id, it->second.id});
  };
  for (int32_t i = 0; i < static_cast<int32_t>(syms.size()); ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& l = syms[c.pos];
    // Stale entries: a symbol's id fixes its text and so its length; same ids at the same position mean the
    // same pair.
    if (!l.alive || l.id != c.left || l.next < 0 || syms[l.next].id != c.right) continue;
    Symbol& r = syms[l.next];
    l.id = c.id;
    r.alive = false;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.pos;
    push(l.prev);
    push(c.pos);
  }
  const size_t first = out.size();
  for (int32_t i = 0; i >= 0 && i < static_cast<int32_t>(syms.size()); i = syms[i].next)
    out.push_back(syms[i].id);

  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->ids.size() >= kMaxCacheEntries) cache_->ids.clear();
    cache_->ids.emplace(std::string(piece), std::vector<int32_t>(out.begin() + first, out.end()));
  }
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const ByteMap& bm = byte_map();
  std::string out;
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) id_to_token(id);  // throws, naming the id
    const std::string& tok = vocab_.tokens[id];
    switch (vocab_.types[id]) {
      case TokenType::kControl:
        if (!skip_special) out += tok;
        break;
      case TokenType::kUserDefined:
        out += tok;  // added tokens are stored verbatim, not byte-mapped
        break;
      default:
        for (size_t i = 0, len = 0; i < tok.size(); i += len) {
          const uint32_t cp = unicode::decode_utf8(tok, i, len);
          if (cp < bm.to_byte.size() && bm.to_byte[cp] >= 0) {
            out += static_cast<char>(bm.to_byte[cp]);
          } else {
            out.append(tok, i, len);  // not a byte-level code point: keep it as written
          }
        }
    }
  }
  return out;
}

}  // namespace sparge::models
