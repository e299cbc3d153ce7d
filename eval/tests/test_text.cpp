// Python-compatible text helpers. Expected values are what CPython 3.11 returns for the same calls.
#include <gtest/gtest.h>

#include "sparge/eval/text.h"

namespace se = sparge::eval;

TEST(EvalText, Utf8RoundTripAndBadBytes) {
  const std::string s = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";  // a é € 😀
  EXPECT_EQ(se::utf8_decode(s), (std::u32string{U'a', 0xE9, 0x20AC, 0x1F600}));
  EXPECT_EQ(se::utf8_encode(se::utf8_decode(s)), s);
  // A stray continuation byte, a truncated sequence and an overlong form each become one U+FFFD per byte.
  EXPECT_EQ(se::utf8_decode("\x80x\xE2\x82"), (std::u32string{0xFFFD, U'x', 0xFFFD, 0xFFFD}));
  EXPECT_EQ(se::utf8_decode("\xE0\x80\x80"), (std::u32string{0xFFFD, 0xFFFD, 0xFFFD}));
}

TEST(EvalText, PythonWhitespaceSplitStripLower) {
  // str.split() splits on NBSP (U+00A0), U+001C and U+3000 too.
  const std::string nbsp = "\xC2\xA0", fs_char = "\x1C", ideographic = "\xE3\x80\x80";
  EXPECT_EQ(se::py_split(" a" + nbsp + "b" + fs_char + "c" + ideographic + " d\n"),
            (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_TRUE(se::py_split(" \t\n").empty());
  EXPECT_EQ(se::py_strip("\xC2\xA0 x y \n"), "x y");
  // "ÉCOLE Ab".lower() == "école ab"
  EXPECT_EQ(se::py_lower("\xC3\x89" + std::string("COLE Ab")), "\xC3\xA9" + std::string("cole ab"));
  EXPECT_EQ(se::replace_all("aaa", "aa", "b"), "ba");  // non-overlapping, left to right
  EXPECT_EQ(se::split_on("a..b", "."), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(se::first_line("\n\nfoo\nbar"), "foo");
  EXPECT_EQ(se::first_line("\n\n"), "");
  EXPECT_EQ(se::find_digit_runs("a12b3 45"), (std::vector<std::string>{"12", "3", "45"}));
}

TEST(EvalText, LmEvalWordCount) {
  // len(re.split(r"\s+", s)): empty items at both ends count.
  EXPECT_EQ(se::count_words_lm_eval(" a b\n"), 4);  // ['', 'a', 'b', '']
  EXPECT_EQ(se::count_words_lm_eval("a  b"), 2);
  EXPECT_EQ(se::count_words_lm_eval(""), 1);                // ['']
  EXPECT_EQ(se::count_utf8_bytes("\xC3\xA9t\xC3\xA9"), 5);  // "été": 2 + 1 + 2 bytes
}

TEST(EvalText, TruncateMiddle) {
  const std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  // LongBench: h = 5 / 2 = 2 -> ids[:2] + ids[-2:] (4 ids); InfiniteBench: ids[:2] + ids[-3:] (5 ids).
  EXPECT_EQ(se::truncate_middle(ids, 5), (std::vector<int32_t>{0, 1, 8, 9}));
  EXPECT_EQ(se::truncate_middle(ids, 5, se::MiddleSplit::kFloorCeil), (std::vector<int32_t>{0, 1, 7, 8, 9}));
  EXPECT_EQ(se::truncate_middle(ids, 6), (std::vector<int32_t>{0, 1, 2, 7, 8, 9}));
  EXPECT_EQ(se::truncate_middle(ids, 10), ids);
  EXPECT_THROW(se::truncate_middle(ids, 0), std::invalid_argument);
}

TEST(EvalText, PythonRound2) {
  EXPECT_EQ(se::py_round2(2.675), 2.67);    // the double is 2.67499999...
  EXPECT_EQ(se::py_round2(0.125), 0.12);    // exact tie -> even
  EXPECT_EQ(se::py_round2(0.375), 0.38);    // exact tie -> even
  EXPECT_EQ(se::py_round2(66.665), 66.67);  // the double is 66.66500000000000625...
}
