// Pre-tokenizers of byte-level BPE: the GPT-2 and Llama-3 split regexes and HF's Digits, written as matchers
// over code points instead of a regex engine (std::regex has no \p classes; ICU is not on the GPU machines).
//
// Each regex is an alternation tried left to right at the current position, as a backtracking engine
// (Oniguruma in HF tokenizers, fancy-regex in tiktoken) tries it; the first alternative that matches wins,
// its length follows the greedy-then-backtrack rule worked out per alternative below. Positions where nothing
// matches would become "gap" pieces (HF Split, behavior Isolated); with these two regexes every code point is
// covered by some alternative, so gaps do not occur in practice.
#include "tokenizer_pretokenize.h"

#include <cstdint>

#include "unicode.h"

namespace sparge::models::detail {
namespace {

// The text decoded once: code points, their classes and byte offsets (off[n] = text size).
struct Codepoints {
  std::vector<uint32_t> cp;
  std::vector<uint8_t> cls;
  std::vector<size_t> off;

  explicit Codepoints(std::string_view text) {
    cp.reserve(text.size());
    cls.reserve(text.size());
    off.reserve(text.size() + 1);
    size_t len = 0;
    for (size_t i = 0; i < text.size(); i += len) {
      const uint32_t c = unicode::decode_utf8(text, i, len);
      cp.push_back(c);
      // An invalid byte decodes as U+FFFD, which has no class; keep it so.
      cls.push_back(unicode::classify(c));
      off.push_back(i);
    }
    off.push_back(text.size());
  }
  size_t size() const { return cp.size(); }
};

struct Range {
  size_t b, e;  // code point indices [b, e)
};

class Matcher {
 public:
  Matcher(const Codepoints& t, size_t end) : t_(t), e_(end) {}

  bool letter(size_t i) const { return i < e_ && (t_.cls[i] & unicode::kLetter); }
  bool number(size_t i) const { return i < e_ && (t_.cls[i] & unicode::kNumber); }
  bool space(size_t i) const { return i < e_ && (t_.cls[i] & unicode::kWhitespace); }
  // [^\s\p{L}\p{N}]
  bool other(size_t i) const { return i < e_ && t_.cls[i] == 0; }
  bool is(size_t i, uint32_t c) const { return i < e_ && t_.cp[i] == c; }
  bool newline(size_t i) const { return is(i, '\r') || is(i, '\n'); }

  template <typename Pred>
  size_t run(size_t i, Pred pred) const {
    while (pred(i)) ++i;
    return i;
  }

  // 's|'t|'re|'ve|'m|'ll|'d, case-sensitive (GPT-2) or under (?i:...) (Llama-3). Returns the end or i.
  size_t contraction(size_t i, bool ignore_case) const {
    if (!is(i, '\'') || i + 1 >= e_) return i;
    const uint32_t c1 = fold(t_.cp[i + 1], ignore_case);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    if (i + 2 >= e_) return i;
    const uint32_t c2 = fold(t_.cp[i + 2], ignore_case);
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return i + 3;
    return i;
  }

  // ` ?X+` for a class predicate X: the optional space is taken only when X follows it. Returns the end or i.
  template <typename Pred>
  size_t space_then_run(size_t i, Pred pred) const {
    const size_t j = is(i, ' ') && pred(i + 1) ? i + 1 : i;
    return pred(j) ? run(j, pred) : i;
  }

  // \s+(?!\S): the whitespace run, less its last code point when a non-space follows (the lookahead fails
  // there and the engine backtracks one step); no match when that leaves nothing. Then \s+: the whole run.
  size_t trailing_space_then_space(size_t i) const {
    if (!space(i)) return i;
    const size_t e = run(i, [&](size_t k) { return space(k); });
    if (e == e_) return e;        // nothing follows: (?!\S) holds
    if (e - 1 > i) return e - 1;  // a non-space follows: give one back, now whitespace follows
    return e;                     // a single space before a non-space: \s+
  }

  // GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  size_t gpt2(size_t i) const {
    size_t j = contraction(i, false);
    if (j == i) j = space_then_run(i, [&](size_t k) { return letter(k); });
    if (j == i) j = space_then_run(i, [&](size_t k) { return number(k); });
    if (j == i) j = space_then_run(i, [&](size_t k) { return other(k); });
    if (j == i) j = trailing_space_then_space(i);
    return j;
  }

  // Llama-3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  //          \s*[\r\n]+|\s+(?!\S)|\s+
  size_t llama3(size_t i) const {
    size_t j = contraction(i, true);
    if (j != i) return j;
    // [^\r\n\p{L}\p{N}]?\p{L}+: one leading code point that is no newline, letter or number (a space, a tab,
    // punctuation), taken only when a letter follows.
    if (i < e_ && !newline(i) && !letter(i) && !number(i) && letter(i + 1)) {
      return run(i + 1, [&](size_t k) { return letter(k); });
    }
    if (letter(i)) return run(i, [&](size_t k) { return letter(k); });
    // \p{N}{1,3}
    if (number(i)) {
      j = i + 1;
      while (j < i + 3 && number(j)) ++j;
      return j;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    j = space_then_run(i, [&](size_t k) { return other(k); });
    if (j != i) return run(j, [&](size_t k) { return newline(k); });
    // \s*[\r\n]+: the greedy \s* gives back code points until [\r\n]+ can match, i.e. the match ends just
    // after the last newline of the whitespace run.
    if (space(i)) {
      const size_t e = run(i, [&](size_t k) { return space(k); });
      for (size_t k = e; k > i; --k) {
        if (newline(k - 1)) return k;
      }
    }
    return trailing_space_then_space(i);
  }

 private:
  static uint32_t fold(uint32_t c, bool ignore_case) {
    if (!ignore_case) return c;
    if (c >= 'A' && c <= 'Z') return c + ('a' - 'A');
    if (c == 0x17F) return 's';  // LATIN SMALL LETTER LONG S folds to s (Unicode simple case folding)
    return c;
  }

  const Codepoints& t_;
  size_t e_;
};

// Appends the pieces of `r` cut by a regex matcher; code points no alternative matches are gathered into
// gaps.
template <typename Match>
void split_regex(Range r, Match match, std::vector<Range>& out) {
  size_t gap = r.b;
  size_t i = r.b;
  while (i < r.e) {
    const size_t j = match(i);
    if (j == i) {
      ++i;
      continue;
    }
    if (gap < i) out.push_back({gap, i});
    out.push_back({i, j});
    i = gap = j;
  }
  if (gap < r.e) out.push_back({gap, r.e});
}

// HF Digits: numbers isolated, one piece per code point (individual) or per run.
void split_digits(const Codepoints& t, Range r, bool individual, std::vector<Range>& out) {
  const auto number = [&](size_t k) { return (t.cls[k] & unicode::kNumber) != 0; };
  size_t i = r.b;
  while (i < r.e) {
    size_t j = i + 1;
    if (number(i)) {
      if (!individual) {
        while (j < r.e && number(j)) ++j;
      }
    } else {
      while (j < r.e && !number(j)) ++j;
    }
    out.push_back({i, j});
    i = j;
  }
}

}  // namespace

void pre_tokenize(const std::vector<PreTokenizeStep>& steps, std::string_view text,
                  std::vector<std::string_view>& out) {
  if (text.empty()) return;
  const Codepoints t(text);
  std::vector<Range> cur{{0, t.size()}}, next;
  for (const PreTokenizeStep step : steps) {
    next.clear();
    for (const Range r : cur) {
      const Matcher m(t, r.e);
      switch (step) {
        case PreTokenizeStep::kDigits:
          split_digits(t, r, false, next);
          break;
        case PreTokenizeStep::kDigitsIndividual:
          split_digits(t, r, true, next);
          break;
        case PreTokenizeStep::kGpt2Regex:
          split_regex(
              r, [&](size_t i) { return m.gpt2(i); }, next);
          break;
        case PreTokenizeStep::kLlama3Regex:
          split_regex(
              r, [&](size_t i) { return m.llama3(i); }, next);
          break;
      }
    }
    cur.swap(next);
  }
  for (const Range r : cur) out.push_back(text.substr(t.off[r.b], t.off[r.e] - t.off[r.b]));
}

}  // namespace sparge::models::detail
