// Perplexity: window plans (HF sliding window, GPTQ non-overlapping), token/word/byte levels, WikiText
// reading.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "eval_test_util.h"
#include "sparge/eval/perplexity.h"

namespace se = sparge::eval;
namespace fs = std::filesystem;
using sparge::eval::testing::write_temp;

namespace {

// How many windows score each token of a stream of n tokens.
std::vector<int> coverage(const std::vector<se::PerplexityWindow>& plan, int64_t n) {
  std::vector<int> times(static_cast<size_t>(n), 0);
  for (const auto& w : plan) {
    for (int64_t t = w.score_from; t < w.end; ++t) ++times[static_cast<size_t>(t)];
  }
  return times;
}

// The plan as {begin, end, score_from} triples.
std::vector<std::array<int64_t, 3>> triples(const std::vector<se::PerplexityWindow>& plan) {
  std::vector<std::array<int64_t, 3>> out;
  for (const auto& w : plan) out.push_back({w.begin, w.end, w.score_from});
  return out;
}
using Triples = std::vector<std::array<int64_t, 3>>;

}  // namespace

TEST(EvalPerplexity, SlidingWindowPlanByHand) {
  // T = 10, seq_len 4, stride 2 (HF loop): begin 0 -> [0,4) scores 1..3; begin 2 -> [2,6) scores 4..5 (prev
  // end 4); begin 4 -> [4,8) scores 6..7; begin 6 -> [6,10) scores 8..9, end == T stops.
  EXPECT_EQ(triples(se::plan_perplexity_windows(10, 4, 2)),
            (Triples{{0, 4, 1}, {2, 6, 4}, {4, 8, 6}, {6, 10, 8}}));
}

TEST(EvalPerplexity, OverlappingPlansScoreEveryTokenAfterTheFirstOnce) {
  for (int64_t n : {2, 3, 7, 64, 113, 1000}) {
    for (int64_t seq_len : {2, 3, 16, 128}) {
      for (int64_t stride : {int64_t{1}, seq_len / 2, seq_len - 1}) {
        if (stride < 1 || stride >= seq_len) continue;
        const auto plan = se::plan_perplexity_windows(n, seq_len, stride);
        const auto times = coverage(plan, n);
        SCOPED_TRACE("n=" + std::to_string(n) + " seq_len=" + std::to_string(seq_len) +
                     " stride=" + std::to_string(stride));
        EXPECT_EQ(times[0], 0);
        for (int64_t t = 1; t < n; ++t) ASSERT_EQ(times[static_cast<size_t>(t)], 1) << "token " << t;
        for (const auto& w : plan) {
          EXPECT_LE(w.end - w.begin, seq_len);
          EXPECT_LT(w.begin, w.score_from);
          EXPECT_LT(w.score_from, w.end);
        }
      }
    }
  }
}

TEST(EvalPerplexity, NonOverlappingPlanSkipsWindowStarts) {
  // stride == seq_len: [0,4) scores 1..3, [4,8) scores 5..7, [8,10) scores 9; tokens 4 and 8 open a window
  // and have no context in it, so they are never scored.
  const auto plan = se::plan_perplexity_windows(10, 4, 4);
  EXPECT_EQ(triples(plan), (Triples{{0, 4, 1}, {4, 8, 5}, {8, 10, 9}}));
  EXPECT_EQ(coverage(plan, 10), (std::vector<int>{0, 1, 1, 1, 0, 1, 1, 1, 0, 1}));
  // A 1-token tail window scores nothing and is left out: T = 9 -> [0,4), [4,8).
  EXPECT_EQ(triples(se::plan_perplexity_windows(9, 4, 4)), (Triples{{0, 4, 1}, {4, 8, 5}}));
  // GPTQ keeps the T / seq_len full windows only: T = 10 -> [0,4), [4,8).
  EXPECT_EQ(triples(se::plan_perplexity_windows(10, 4, 4, /*drop_partial_last=*/true)),
            (Triples{{0, 4, 1}, {4, 8, 5}}));
  // One window covering the whole stream when seq_len >= T.
  EXPECT_EQ(triples(se::plan_perplexity_windows(5, 8, 8)), (Triples{{0, 5, 1}}));
}

TEST(EvalPerplexity, PlanRejectsBadArguments) {
  EXPECT_THROW(se::plan_perplexity_windows(1, 4, 2), std::invalid_argument);
  EXPECT_THROW(se::plan_perplexity_windows(10, 4, 0), std::invalid_argument);
  EXPECT_THROW(se::plan_perplexity_windows(10, 4, 5), std::invalid_argument);
  EXPECT_THROW(se::plan_perplexity_windows(10, 4, 2, true),
               std::invalid_argument);  // GPTQ needs stride == seq_len
  EXPECT_THROW(se::plan_perplexity_windows(3, 4, 4, true), std::invalid_argument);  // no full window
}

TEST(EvalPerplexity, TokenWordByteLevels) {
  se::PerplexityAccumulator acc;
  acc.add_nlls(std::vector<double>{1.0, 2.0});
  acc.add_log_probs(std::vector<double>{-3.0});
  // NLL sum 6 over 3 tokens: token ppl = exp(6 / 3) = e^2; 2 words: exp(6 / 2) = e^3; 12 bytes: exp(6 / 12) =
  // e^0.5 and bits per byte = 0.5 / ln 2 = 0.72134752...
  EXPECT_DOUBLE_EQ(acc.nll_sum(), 6.0);
  EXPECT_EQ(acc.tokens(), 3);
  EXPECT_DOUBLE_EQ(acc.token_perplexity(), std::exp(2.0));
  EXPECT_DOUBLE_EQ(acc.word_perplexity(2), std::exp(3.0));
  EXPECT_DOUBLE_EQ(acc.byte_perplexity(12), std::exp(0.5));
  EXPECT_NEAR(acc.bits_per_byte(12), 0.7213475204444817, 1e-15);
  EXPECT_DOUBLE_EQ(acc.perplexity(se::parse_perplexity_level("word"), 2, 12), std::exp(3.0));
  acc.add_sum(0.0, 1);  // a window of one certain token: sum 6 over 4 tokens
  EXPECT_DOUBLE_EQ(acc.token_perplexity(), std::exp(1.5));
  EXPECT_THROW(acc.add_nlls(std::vector<double>{-0.1}), std::invalid_argument);
  EXPECT_THROW(acc.add_log_probs(std::vector<double>{NAN}), std::invalid_argument);
  EXPECT_THROW(acc.word_perplexity(0), std::invalid_argument);
  EXPECT_THROW(se::PerplexityAccumulator().token_perplexity(), std::invalid_argument);
  EXPECT_THROW(se::parse_perplexity_level("char"), std::invalid_argument);
}

// A raw WikiText excerpt: a blank first line, two top-level articles, a second-level heading.
const std::string kRaw =
    " \n = Title A = \n text a . \n\n = = Sub = = \n more @-@ text \n = Title B = \n b ( x ) \" q \" 's\n";

TEST(EvalPerplexity, WikiTextPagesAndDetokenizer) {
  // Expected values are what lm-eval's wikitext_document_level split and wikitext_detokenizer give (CPython).
  const auto pages = se::wikitext_pages(kRaw);
  ASSERT_EQ(pages.size(), 2u);  // the whitespace-only page before "= Title A =" is dropped
  EXPECT_EQ(pages[0], " = Title A = \n text a . \n\n = = Sub = = \n more @-@ text ");
  EXPECT_EQ(pages[1], " = Title B = \n b ( x ) \" q \" 's\n");
  EXPECT_EQ(se::wikitext_detokenize(pages[0]), " = Title A =\ntext a.\n\n== Sub ==\nmore-text ");
  EXPECT_EQ(se::wikitext_detokenize(pages[1]), " = Title B =\nb (x) \"q\"'s\n");
  EXPECT_EQ(
      se::wikitext_detokenize("He said \" hi there \" ( a  b ) [ c ] { d } 5 @.@ 3 , x ; y : z . w ! v ? u "
                              "12 \xC2\xB0 C the dogs ' toys N = = Sec = = /' 5/"),
      "He said \"hi there\" (a  b) [c] {d} 5.3, x; y: z. w! v? u 12\xC2\xB0"
      "C the dogs'toys 1 == Sec == "
      "/'[0-9]/");
}

TEST(EvalPerplexity, LoadWikiTextPlainAndJsonl) {
  const auto plain = write_temp("wiki.test.raw", kRaw);
  const se::WikiText w = se::load_wikitext(plain.string());
  EXPECT_EQ(w.stream, kRaw);
  ASSERT_EQ(w.documents.size(), 2u);
  // len(re.split(r"\s+", page)) = 17 and 14; UTF-8 bytes 55 and 32.
  EXPECT_EQ(w.words, 17 + 14);
  EXPECT_EQ(w.bytes, 55 + 32);
  const se::WikiText d = se::load_wikitext(plain.string(), {.join = "\n\n", .detokenize = true});
  EXPECT_EQ(d.stream, " = Title A =\ntext a.\n\n== Sub ==\nmore-text \n = Title B =\nb (x) \"q\"'s\n");
  EXPECT_EQ(d.words, w.words);  // counted on the original documents

  // HF rows exported as JSONL: the stream joins the rows with "\n\n" (HF guide, GPTQ).
  const auto rows =
      write_temp("rows.jsonl", "{\"text\": \" = T = \\n\"}\n{\"text\": \"\"}\n{\"text\": \" x y \\n\"}\n");
  const se::WikiText r = se::load_wikitext(rows.string());
  EXPECT_EQ(r.stream, " = T = \n\n\n\n\n x y \n");
  ASSERT_EQ(r.documents.size(), 1u);
  EXPECT_EQ(r.documents[0], " = T = \n x y \n");

  const auto bad = write_temp("bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"\n");
  try {
    se::load_wikitext(bad.string());
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(bad.string() + ":2: not valid JSON"), std::string::npos) << e.what();
  }
  const auto nofield = write_temp("nofield.jsonl", "{\"body\": \"a\"}\n");
  EXPECT_THROW(se::load_wikitext(nofield.string()), std::runtime_error);
  EXPECT_THROW(se::load_wikitext("/nonexistent/wiki.test.raw"), std::runtime_error);
  for (const auto& p : {plain, rows, bad, nofield}) fs::remove(p);
}
