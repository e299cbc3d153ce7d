#include "sparge/eval/text.h"

#include <locale.h>
#include <wctype.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace sparge::eval {

namespace {

constexpr char32_t kReplacement = 0xFFFD;

// glibc's C.UTF-8 locale gives Unicode classification and simple case mapping for non-ASCII code points;
// nullptr where the locale is missing (then only ASCII is case-mapped / classified).
locale_t utf8_locale() {
  static const locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
  return loc;
}

bool is_continuation(unsigned char b) {
  return (b & 0xC0) == 0x80;
}

}  // namespace

int utf8_sequence_length(unsigned char b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 1;
}

std::u32string utf8_decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    const int len = utf8_sequence_length(b0);
    if (len == 1) {
      out.push_back(b0 < 0x80 ? char32_t(b0) : kReplacement);
      ++i;
      continue;
    }
    if (i + len > s.size()) {
      out.push_back(kReplacement);
      ++i;
      continue;
    }
    char32_t c = b0 & (0xFF >> (len + 1));
    bool ok = true;
    for (int k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (!is_continuation(b)) {
        ok = false;
        break;
      }
      c = (c << 6) | (b & 0x3F);
    }
    // Overlong 3/4-byte forms, surrogates and values past U+10FFFF are invalid.
    if (ok && ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10FFFF)) ||
               (c >= 0xD800 && c <= 0xDFFF))) {
      ok = false;
    }
    if (!ok) {
      out.push_back(kReplacement);
      ++i;
      continue;
    }
    out.push_back(c);
    i += len;
  }
  return out;
}

std::string utf8_encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c >= 0xD800 && c <= 0xDFFF) c = kReplacement;
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c <= 0x10FFFF) {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out += "\xEF\xBF\xBD";
    }
  }
  return out;
}

bool py_isspace(char32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool py_isword(char32_t c) {
  if (c < 0x80) return c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  const locale_t loc = utf8_locale();
  return loc != nullptr && iswalnum_l(static_cast<wint_t>(c), loc) != 0;
}

bool py_isdigit(char32_t c) {
  return c >= '0' && c <= '9';
}

std::vector<std::string> py_split(std::string_view s) {
  std::vector<std::string> out;
  const std::u32string u = utf8_decode(s);
  size_t i = 0;
  while (i < u.size()) {
    while (i < u.size() && py_isspace(u[i])) ++i;
    if (i == u.size()) break;
    const size_t start = i;
    while (i < u.size() && !py_isspace(u[i])) ++i;
    out.push_back(utf8_encode(std::u32string_view(u).substr(start, i - start)));
  }
  return out;
}

std::string py_strip(std::string_view s) {
  const std::u32string u = utf8_decode(s);
  size_t b = 0, e = u.size();
  while (b < e && py_isspace(u[b])) ++b;
  while (e > b && py_isspace(u[e - 1])) --e;
  return utf8_encode(std::u32string_view(u).substr(b, e - b));
}

std::string py_lower(std::string_view s) {
  std::u32string u = utf8_decode(s);
  const locale_t loc = utf8_locale();
  for (char32_t& c : u) {
    if (c < 0x80) {
      if (c >= 'A' && c <= 'Z') c = c - 'A' + 'a';
    } else if (loc != nullptr) {
      c = static_cast<char32_t>(towlower_l(static_cast<wint_t>(c), loc));
    }
  }
  return utf8_encode(u);
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  if (from.empty()) throw std::invalid_argument("replace_all: `from` must not be empty");
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

std::vector<std::string> split_on(std::string_view s, std::string_view sep) {
  if (sep.empty()) throw std::invalid_argument("split_on: empty separator");
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(sep, pos);
    if (hit == std::string_view::npos) break;
    out.emplace_back(s.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
  out.emplace_back(s.substr(pos));
  return out;
}

std::string first_line(std::string_view s) {
  const size_t b = s.find_first_not_of('\n');
  if (b == std::string_view::npos) return "";
  const std::string_view rest = s.substr(b);
  return std::string(rest.substr(0, rest.find('\n')));
}

std::vector<std::string> find_digit_runs(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    if (!py_isdigit(static_cast<unsigned char>(s[i]))) {
      ++i;
      continue;
    }
    const size_t start = i;
    while (i < s.size() && py_isdigit(static_cast<unsigned char>(s[i]))) ++i;
    out.emplace_back(s.substr(start, i - start));
  }
  return out;
}

int64_t count_words_lm_eval(std::string_view s) {
  // re.split(r"\s+", s) yields one more item than there are whitespace runs (empty items at the ends count).
  const std::u32string u = utf8_decode(s);
  int64_t runs = 0;
  bool in_run = false;
  for (char32_t c : u) {
    const bool space = py_isspace(c);
    if (space && !in_run) ++runs;
    in_run = space;
  }
  return runs + 1;
}

std::vector<int32_t> truncate_middle(const std::vector<int32_t>& ids, int64_t max_length, MiddleSplit split) {
  if (max_length < 1) {
    throw std::invalid_argument("truncate_middle: max_length must be >= 1, got " +
                                std::to_string(max_length));
  }
  const auto n = static_cast<int64_t>(ids.size());
  if (n <= max_length) return ids;
  const int64_t head = max_length / 2;
  const int64_t tail = split == MiddleSplit::kHalfHalf ? head : max_length - head;
  std::vector<int32_t> out(ids.begin(), ids.begin() + head);
  out.insert(out.end(), ids.end() - tail, ids.end());
  return out;
}

double py_round2(double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.2f", x);
  return std::strtod(buf, nullptr);
}

}  // namespace sparge::eval
