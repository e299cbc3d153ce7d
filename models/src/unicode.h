// Internal: UTF-8 decoding and the Unicode classes the pre-tokenizers need (\p{L}, \p{N}, \s).
// The class table is generated (scripts/gen_unicode_tables.py -> unicode_tables.cpp); this is not a Unicode
// library: no normalization, no case mapping, no other categories.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sparge::models::unicode {

enum Class : uint8_t { kLetter = 1, kNumber = 2, kWhitespace = 4 };

struct CodepointRange {
  uint32_t lo, hi;  // inclusive
  uint8_t flags;    // Class bits
};
extern const CodepointRange kRanges[];
extern const int kNumRanges;

// Class bits of a code point (0: none of them). Binary search over the ~800 generated ranges.
inline uint8_t classify(uint32_t cp) {
  int lo = 0, hi = kNumRanges - 1;
  while (lo <= hi) {
    const int mid = (lo + hi) / 2;
    if (cp < kRanges[mid].lo) {
      hi = mid - 1;
    } else if (cp > kRanges[mid].hi) {
      lo = mid + 1;
    } else {
      return kRanges[mid].flags;
    }
  }
  return 0;
}

// Decodes the code point at s[i]: returns it and sets `len` to its byte length. An invalid or truncated
// sequence decodes as one byte (len 1) with the code point 0xFFFD, so that any byte string can be split and
// re-joined.
inline uint32_t decode_utf8(std::string_view s, size_t i, size_t& len) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  len = 1;
  if (b0 < 0x80) return b0;
  int n = 0;
  uint32_t cp = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 1, cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 2, cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 3, cp = b0 & 0x07;
  } else {
    return 0xFFFD;
  }
  if (i + n >= s.size()) return 0xFFFD;  // truncated
  for (int k = 1; k <= n; ++k) {
    const auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0xFFFD;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};  // overlong forms are invalid
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0xFFFD;
  len = static_cast<size_t>(n) + 1;
  return cp;
}

// Appends the UTF-8 encoding of `cp` to `out`.
inline void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace sparge::models::unicode
