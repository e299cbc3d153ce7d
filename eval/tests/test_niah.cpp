// Needle in a haystack: grid, prompt construction (budget, needle at the sentence boundary), scoring,
// heatmap. Token counts come from a whitespace counter (a token = a whitespace-separated word).
#include <gtest/gtest.h>

#include <filesystem>

#include "eval_test_util.h"
#include "sparge/eval/niah.h"
#include "sparge/eval/text.h"

namespace se = sparge::eval;
namespace fs = std::filesystem;
using sparge::eval::testing::read_all;

namespace {

int64_t word_count(const std::string& s) {
  return static_cast<int64_t>(se::py_split(s).size());
}

// A haystack of numbered sentences: "Sentence 0 says little. Sentence 1 says little. ..."
std::string numbered_sentences(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "Sentence " + std::to_string(i) + " says little. ";
  return s;
}

// The needle must sit right after ". " (or at 0) and no ". " may end between it and the depth point.
void expect_sentence_boundary(const se::NiahPrompt& p, const se::NiahCase& c) {
  const std::string needle = c.needle() + " ";
  ASSERT_EQ(p.context.compare(static_cast<size_t>(p.needle_offset), needle.size(), needle), 0);
  const std::string prefix = p.context.substr(0, static_cast<size_t>(p.needle_offset)) +
                             p.context.substr(static_cast<size_t>(p.needle_offset) + needle.size());
  const auto depth_point = static_cast<size_t>(p.haystack_bytes * c.depth_percent / 100);
  const auto at = static_cast<size_t>(p.needle_offset);
  EXPECT_LE(at, depth_point);
  if (at > 0) {
    EXPECT_EQ(prefix.substr(at - 2, 2), ". ");
  }
  const size_t next = prefix.find(". ", at);
  EXPECT_TRUE(next == std::string::npos || next + 2 > depth_point)
      << "a later sentence end precedes the depth";
}

}  // namespace

TEST(EvalNiah, DepthsAndLengthsFollowNumpy) {
  // round(linspace(0, 100, 10)): 11.11 -> 11, 55.56 -> 56, ...
  EXPECT_EQ(se::niah_depths(10), (std::vector<int>{0, 11, 22, 33, 44, 56, 67, 78, 89, 100}));
  // linspace(0, 100, 9) has exact halves: 12.5 -> 12, 37.5 -> 38, 62.5 -> 62, 87.5 -> 88 (ties to even).
  EXPECT_EQ(se::niah_depths(9), (std::vector<int>{0, 12, 25, 38, 50, 62, 75, 88, 100}));
  EXPECT_EQ(se::niah_lengths(1000, 128000, 15),
            (std::vector<int64_t>{1000, 10071, 19143, 28214, 37286, 46357, 55429, 64500, 73571, 82643, 91714,
                                  100786, 109857, 118929, 128000}));
  EXPECT_EQ(se::niah_depths(1), (std::vector<int>{0}));
  EXPECT_THROW(se::niah_depths(0), std::invalid_argument);
}

TEST(EvalNiah, GridIsSeededAndStablePerTrial) {
  const auto a = se::niah_grid({1000, 2000}, {0, 50, 100}, 2, 42);
  ASSERT_EQ(a.size(), 12u);
  EXPECT_EQ(a[0].context_length, 1000);
  EXPECT_EQ(a[11].context_length, 2000);
  EXPECT_EQ(a[11].depth_percent, 100);
  EXPECT_EQ(a[11].round, 1);
  for (const auto& c : a) {
    EXPECT_EQ(c.number.size(), 7u);
    EXPECT_NE(c.number[0], '0');
    EXPECT_NE(std::find(se::niah_cities().begin(), se::niah_cities().end(), c.city), se::niah_cities().end());
  }
  // Same seed, same trials; a trial does not depend on the rest of the grid.
  const auto b = se::niah_grid({2000}, {100}, 2, 42);
  EXPECT_EQ(b[1].city, a[11].city);
  EXPECT_EQ(b[1].number, a[11].number);
  const auto c = se::niah_grid({1000, 2000}, {0, 50, 100}, 2, 43);
  int differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i].number != c[i].number;
  EXPECT_GT(differ, 0);
  EXPECT_EQ(a[0].needle(), "The special magic " + a[0].city + " number is: " + a[0].number + ".");
  EXPECT_EQ(a[0].question(), "What is the special magic " + a[0].city + " number?");
}

TEST(EvalNiah, PromptFitsTheBudgetWithTheNeedleAtASentenceEnd) {
  const std::string hay = numbered_sentences(400);  // 1600 words
  for (int depth : {0, 11, 50, 89, 100}) {
    se::NiahCase c{
        .context_length = 500, .depth_percent = depth, .round = 0, .city = "Oslo", .number = "1234567"};
    const se::NiahPrompt p = se::build_niah_prompt(hay, word_count, c, {.reserve_tokens = 20});
    SCOPED_TRACE("depth " + std::to_string(depth));
    EXPECT_EQ(p.prompt_tokens, word_count(p.prompt));
    EXPECT_LE(p.prompt_tokens, 480);       // context_length - reserve
    EXPECT_GE(p.prompt_tokens, 480 - 16);  // within the default slack
    EXPECT_NE(p.prompt.find(c.question()), std::string::npos);
    EXPECT_NE(p.prompt.find(p.context), std::string::npos);
    if (depth == 100) {
      EXPECT_EQ(p.context.substr(p.context.size() - c.needle().size()), c.needle());
    } else {
      expect_sentence_boundary(p, c);
    }
    if (depth == 0) {
      EXPECT_EQ(p.needle_offset, 0);
    }
  }
}

TEST(EvalNiah, ShortHaystackIsRepeatedAndTinyBudgetsFail) {
  se::NiahCase c{.context_length = 300, .depth_percent = 50, .round = 0, .city = "Lima", .number = "7654321"};
  const se::NiahPrompt p = se::build_niah_prompt(numbered_sentences(5), word_count, c);  // 20 words only
  EXPECT_LE(p.prompt_tokens, 300);
  EXPECT_GE(p.prompt_tokens, 300 - 16);
  expect_sentence_boundary(p, c);
  c.context_length = 20;  // the template alone has more words
  EXPECT_THROW(se::build_niah_prompt(numbered_sentences(5), word_count, c), std::invalid_argument);
  c.context_length = 300;
  c.depth_percent = 101;
  EXPECT_THROW(se::build_niah_prompt(numbered_sentences(5), word_count, c), std::invalid_argument);
}

TEST(EvalNiah, RealCorpusHaystack) {
  const fs::path corpus = fs::path(SPARGE_SOURCE_DIR) / "data" / "corpus" / "jargon.txt";
  if (!fs::exists(corpus)) GTEST_SKIP() << "no " << corpus;
  const std::string hay = read_all(corpus);
  se::NiahCase c{
      .context_length = 4000, .depth_percent = 44, .round = 0, .city = "Accra", .number = "5551212"};
  const se::NiahPrompt p = se::build_niah_prompt(hay, word_count, c);
  EXPECT_LE(p.prompt_tokens, 4000);
  EXPECT_GE(p.prompt_tokens, 4000 - 16);
  expect_sentence_boundary(p, c);
}

TEST(EvalNiah, ScoreAndHeatmap) {
  EXPECT_EQ(se::niah_score("The special magic Oslo number is 1234567.", "1234567"), 1.0);
  EXPECT_EQ(se::niah_score("It is 123-4567.", "1234567"), 0.0);
  se::NiahResults r;
  r.add(1000, 0, 1.0);
  r.add(1000, 0, 0.0);
  r.add(1000, 100, 1.0);
  r.add(2000, 0, 1.0);
  // Cells: (1000, 0) = 1/2, (1000, 100) = 1, (2000, 0) = 1; overall = 3 / 4 trials.
  EXPECT_EQ(r.cell(1000, 0), 0.5);
  EXPECT_EQ(r.overall(), 0.75);
  EXPECT_THROW(r.cell(2000, 100), std::out_of_range);
  EXPECT_EQ(r.lengths(), (std::vector<int64_t>{1000, 2000}));
  EXPECT_EQ(r.depths(), (std::vector<int>{0, 100}));
  const fs::path csv = sparge::eval::testing::write_temp("niah.csv", "");
  const fs::path json = sparge::eval::testing::write_temp("niah.json", "");
  r.write_csv(csv.string());
  EXPECT_EQ(read_all(csv),
            "context_length,depth_percent,trials,score\n"
            "1000,0,2,0.500000\n"
            "1000,100,1,1.000000\n"
            "2000,0,1,1.000000\n");
  r.write_json(json.string());
  const std::string j = read_all(json);
  EXPECT_NE(j.find("\"overall\": 0.75"), std::string::npos) << j;
  EXPECT_NE(j.find("null"), std::string::npos) << j;  // (2000, 100) has no trial
  fs::remove(csv);
  fs::remove(json);
}
