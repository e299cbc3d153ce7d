// Text helpers with the semantics of the Python reference scripts (LongBench, InfiniteBench, lm-eval): the
// scorers there run on Python `str` (Unicode code points), so whitespace, strip/split, lower-casing and
// "word character" follow Python here, on UTF-8 input. Malformed UTF-8 decodes to U+FFFD per bad byte (Python
// would have refused the file; a model's decoded output can hold such bytes).
//
// Not exact for: lower() of the few characters whose Python lower-case is several code points or depends on
// context (U+0130, final sigma): the simple case mapping of glibc's C.UTF-8 locale is used for non-ASCII;
// Python's \d for non-ASCII decimal digits (only 0-9 count here).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sparge::eval {

// ---- UTF-8 <-> code points.
std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view s);
// Bytes of the UTF-8 sequence that starts with byte b (1 for a stray continuation or invalid byte).
int utf8_sequence_length(unsigned char b);

// ---- Python character classes (str.isspace, re's \w, \d for str patterns).
bool py_isspace(char32_t c);  // the 29 code points Python's str.isspace() accepts
bool py_isword(char32_t c);   // re \w: '_' or alphanumeric
bool py_isdigit(char32_t c);  // re \d, ASCII only (see the file comment)

// ---- Python str methods, on UTF-8.
std::vector<std::string> py_split(std::string_view s);  // str.split(): runs of whitespace, no empty items
std::string py_strip(std::string_view s);               // str.strip()
std::string py_lower(std::string_view s);               // str.lower() (see the file comment)
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);  // str.replace
// str.split(sep) with a non-empty separator: keeps empty items ("a..b".split(".") -> a, "", b).
std::vector<std::string> split_on(std::string_view s, std::string_view sep);
// `s.lstrip("\n").split("\n")[0]`: the first line after leading newlines (LongBench's first-line cut).
std::string first_line(std::string_view s);
// re.findall(r"\d+", s): the maximal runs of digits, in order.
std::vector<std::string> find_digit_runs(std::string_view s);

// ---- Counting as lm-eval does for wikitext.
int64_t count_words_lm_eval(std::string_view s);  // len(re.split(r"\s+", s)): whitespace runs + 1
inline int64_t count_utf8_bytes(std::string_view s) {
  return static_cast<int64_t>(s.size());
}

// ---- Middle truncation of a token sequence to at most max_length ids.
// kHalfHalf (LongBench pred.py): ids[:h] + ids[-h:] with h = max_length / 2, so an odd max_length keeps
// max_length - 1 ids. kFloorCeil (InfiniteBench truncate_input): ids[:max_length // 2] + ids[-(max_length -
// max_length // 2):], exactly max_length ids. A sequence that already fits is returned unchanged.
enum class MiddleSplit { kHalfHalf, kFloorCeil };
std::vector<int32_t> truncate_middle(const std::vector<int32_t>& ids, int64_t max_length,
                                     MiddleSplit split = MiddleSplit::kHalfHalf);

// Python's round(x, 2) (correctly rounded on the binary value, ties to even).
double py_round2(double x);

}  // namespace sparge::eval
