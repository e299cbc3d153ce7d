// LongBench v1 scorers, tables, prompt, truncation and reader, on small fixtures worked out by hand (and
// checked against metrics.py with rouge 1.0.1, fuzzywuzzy 0.18.0 and difflib under CPython 3.11).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "eval_test_util.h"
#include "sparge/eval/longbench.h"

namespace se = sparge::eval;
namespace fs = std::filesystem;

using sparge::eval::testing::error_of;
using sparge::eval::testing::write_temp;

namespace {

std::string read_first_line(const fs::path& p) {
  std::ifstream in(p);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

TEST(EvalLongBench, NormalizeAnswer) {
  // lower -> "the cat's  hat, a-ok!"; drop punctuation -> "the cats  hat aok"; articles -> "  cats  hat aok".
  EXPECT_EQ(se::normalize_answer("The Cat's  hat, a-ok!"), "cats hat aok");
  // \b(a|an|the)\b: "anna" and "and" stay, "the" and "an" go.
  EXPECT_EQ(se::normalize_answer("Anna and the an"), "anna and");
  // Unicode: "ÉCOLE the<NBSP>Élan" -> "école élan" (NBSP is whitespace, É lower-cases).
  const std::string E = "\xC3\x89", e = "\xC3\xA9", nbsp = "\xC2\xA0";  // É, é, U+00A0
  EXPECT_EQ(se::normalize_answer(E + "COLE the" + nbsp + E + "lan"), e + "cole " + e + "lan");
}

TEST(EvalLongBench, QaF1) {
  // "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down]; common 2: P = 2/2 = 1, R = 2/3,
  // F1 = 2 * 1 * 2/3 / (1 + 2/3) = (4/3) / (5/3) = 0.8.
  EXPECT_DOUBLE_EQ(se::qa_f1_score("the cat sat", "a cat sat down"), 0.8);
  // Counter intersection: min(3, 1) = 1 common; P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 0.4.
  EXPECT_DOUBLE_EQ(se::qa_f1_score("cat cat cat", "cat dog"), 0.4);
  EXPECT_EQ(se::qa_f1_score("dog", "cat"), 0.0);
  EXPECT_EQ(se::qa_f1_score("", "cat"), 0.0);
  // qa datasets take the max over answers: max(0.8, 0) = 0.8.
  const auto& hotpot = se::longbench_task("hotpotqa");
  EXPECT_DOUBLE_EQ(se::longbench_sample_score(hotpot, "the cat sat", {"dog", "a cat sat down"}, {}), 0.8);
}

TEST(EvalLongBench, RougeL) {
  // hyp sentences: "the cat sat on the mat", "it was happy"; ref: "the cat was on the mat".
  // m = |{the, cat, was, on, mat}| = 5; n = |{the, cat, sat, on, mat, it, was, happy}| = 8.
  // LCS(ref, hyp1) = the cat on the mat -> {the, cat, on, mat}; LCS(ref, hyp2) = was -> union of 5 words.
  // R = 5/5 = 1, P = 5/8, F = 2 * (0.625 * 1) / (1.625 + 1e-8) = 0.76923076449...
  EXPECT_DOUBLE_EQ(se::rouge_l_f("the cat sat on the mat. it was happy", "the cat was on the mat"),
                   2.0 * ((0.625 * 1.0) / (0.625 + 1.0 + 1e-8)));
  EXPECT_NEAR(se::rouge_l_f("the cat sat on the mat. it was happy", "the cat was on the mat"),
              0.7692307644970415, 1e-16);
  // "a b. " -> sentences "a b" and "" (the blank piece survives and is one empty word): n = |{a, b, ""}| = 3,
  // m = 2, LCS union {a, b}: R = 1, P = 2/3, F = 2 * (2/3) / (5/3 + 1e-8) = 0.7999999952.
  EXPECT_NEAR(se::rouge_l_f("a b. ", "a b"), 0.7999999952000001, 1e-16);
  // Case-sensitive words: {The, cat} vs {the, cat} share {cat}: R = P = 1/2, F = 0.4999999950.
  EXPECT_NEAR(se::rouge_l_f("The cat", "the cat"), 0.4999999950000001, 1e-16);
  // The package raises on an empty hypothesis (no non-empty piece): LongBench scores 0.
  EXPECT_EQ(se::rouge_l_f("", "a"), 0.0);
  EXPECT_EQ(se::rouge_l_f("...", "a"), 0.0);
}

TEST(EvalLongBench, ClassificationScore) {
  const std::vector<std::string> classes = {"Location", "Entity", "Human"};
  EXPECT_EQ(se::classification_score("Location", "Location", classes), 1.0);
  // Both named: ["Location", "Entity"], nothing removed (Entity is not inside the answer) -> 1/2.
  EXPECT_EQ(se::classification_score("Entity or Location", "Location", classes), 0.5);
  EXPECT_EQ(se::classification_score("None of them", "Location", classes), 0.0);  // no difflib fall-back
  // The removal loop skips an item: matches [ab, a, b, abc]; "ab" is removed, the iterator moves to index 1
  // ("b", skipping "a"), "b" is removed -> [a, abc]; "abc" is among them -> 1/2 (1.0 without the skip).
  EXPECT_EQ(se::classification_score("abc", "abc", {"ab", "a", "b", "abc"}), 0.5);
  // trec cuts the prediction to its first line first.
  EXPECT_EQ(
      se::longbench_sample_score(se::longbench_task("trec"), "\nLocation\nEntity", {"Location"}, classes),
      1.0);
}

TEST(EvalLongBench, RetrievalAndCount) {
  EXPECT_EQ(se::retrieval_score("Paragraph 12", "Paragraph 12"), 1.0);
  EXPECT_EQ(se::retrieval_score("Paragraph 3 or Paragraph 12", "Paragraph 12"), 0.5);  // numbers [3, 12]
  EXPECT_EQ(se::retrieval_score("no idea", "Paragraph 12"), 0.0);
  EXPECT_EQ(se::retrieval_score("Paragraph 012", "Paragraph 12"), 0.0);  // compared as strings
  EXPECT_THROW(se::retrieval_score("1", "the first one"), std::invalid_argument);
  // numbers [7, 10], one equals "7" -> 1/2.
  EXPECT_EQ(se::count_score("There are 7 unique paragraphs out of 10", "7"), 0.5);
  EXPECT_EQ(se::count_score("seven", "7"), 0.0);
}

TEST(EvalLongBench, SequenceMatcherAndFuzzRatio) {
  // difflib: "tide" vs "diet": longest match "t" (a[0], b[3]); the left side of b is "die" against nothing in
  // a, the right side "ide" against "" -> 1 matched char: 2 * 1 / 8 = 0.25 -> 25. python-Levenshtein: LCS
  // "ie" (2)
  // -> 4 / 8 -> 50.
  EXPECT_EQ(se::fuzz_ratio("tide", "diet"), 25);
  EXPECT_EQ(se::fuzz_ratio("tide", "diet", se::EditSimVariant::kLevenshtein), 50);
  // "kitten" / "sitting": 4 matched of 13 -> 8/13 = 0.615... -> 62 both ways.
  EXPECT_EQ(se::fuzz_ratio("kitten", "sitting"), 62);
  EXPECT_EQ(se::fuzz_ratio("kitten", "sitting", se::EditSimVariant::kLevenshtein), 62);
  // Tie: 1 matched of 16 -> 2/16 = 0.125 -> 12.5 -> Python round -> 12.
  EXPECT_EQ(se::fuzz_ratio("abbbbbbb", "accccccc"), 12);
  EXPECT_EQ(se::fuzz_ratio("same", "same"), 100);
  EXPECT_EQ(se::fuzz_ratio("", "x"), 0);
  // autojunk: b = "ab" * 100 has 200 items, so 'a' and 'b' (100 each > 200 / 100 + 1 = 3) seed no match; a =
  // "c" + b starts with a mismatch, so nothing is found: ratio 0 (autojunk=False would give 400 / 401).
  std::u32string b;
  for (int i = 0; i < 100; ++i) b += U"ab";
  EXPECT_EQ(se::sequence_matcher_ratio(U"c" + b, b), 0.0);
  EXPECT_DOUBLE_EQ(se::indel_ratio(U"c" + b, b), 400.0 / 401.0);
  // Extension over popular items: a = b + "c" matches from (0, 0) forward: 200 of 401 -> 400 / 401.
  EXPECT_DOUBLE_EQ(se::sequence_matcher_ratio(b + U"c", b), 400.0 / 401.0);
}

TEST(EvalLongBench, CodeSim) {
  // First line without '`', '#', "//": "x = foo(1)"; vs "x = foo(2)": 9 of 10 chars match -> 18/20 -> 90 ->
  // 0.9.
  EXPECT_DOUBLE_EQ(se::code_sim_score("```python\n# comment\nx = foo(1)\n", "x = foo(2)"), 0.9);
  EXPECT_EQ(se::code_sim_score("\n\n", "abc"), 0.0);    // the only line is ""
  EXPECT_EQ(se::code_sim_score("// c\n", "abc"), 0.0);  // lines "// c", "" -> ""
  EXPECT_EQ(se::code_sim_score("\nreturn x\n", "return x"), 1.0);
}

TEST(EvalLongBench, DatasetScoreAndAverage) {
  EXPECT_EQ(se::longbench_dataset_score(std::vector<double>{1.0, 0.0, 0.5}), 50.0);   // 100 * 1.5 / 3
  EXPECT_EQ(se::longbench_dataset_score(std::vector<double>{1.0, 0.0, 0.0}), 33.33);  // 33.333... -> 33.33
  EXPECT_EQ(se::longbench_dataset_score(std::vector<double>{2.0 / 3.0}), 66.67);
  EXPECT_THROW(se::longbench_dataset_score(std::vector<double>{}), std::invalid_argument);
  EXPECT_DOUBLE_EQ(se::longbench_average({{"trec", 60.0}, {"lcc", 50.0}}), 55.0);
}

TEST(EvalLongBench, TasksAndPrompts) {
  ASSERT_EQ(se::longbench_tasks().size(), 16u);
  EXPECT_EQ(se::longbench_task("gov_report").max_new_tokens, 512);
  EXPECT_EQ(se::longbench_task("samsum").max_new_tokens, 128);
  EXPECT_TRUE(se::longbench_task("samsum").stop_at_newline);
  EXPECT_EQ(se::longbench_task("hotpotqa").max_new_tokens, 32);
  EXPECT_EQ(se::longbench_task("repobench-p").metric, se::LongBenchMetric::kCodeSim);
  EXPECT_FALSE(se::longbench_task("lcc").chat_template);
  EXPECT_TRUE(se::longbench_task("triviaqa").first_line_only);
  const std::string err = error_of([] { se::longbench_task("dureader"); });
  EXPECT_NE(err.find("unknown dataset 'dureader'"), std::string::npos) << err;
  EXPECT_NE(err.find("passage_retrieval_en"), std::string::npos) << err;

  se::LongBenchSample s;
  s.context = "Q: where? {input}";  // braces in the data stay as they are
  s.input = "Where is it?";
  EXPECT_EQ(se::longbench_prompt(se::longbench_task("trec"), s),
            "Please determine the type of the question below. Here are some examples of questions.\n\n"
            "Q: where? {input}\nWhere is it?");
  EXPECT_EQ(se::longbench_prompt(se::longbench_task("lcc"), s),
            "Please complete the code given below. \nQ: where? {input}Next line of code:\n");
}

TEST(EvalLongBench, TruncatePromptThroughCallbacks) {
  // One id per character; max_length 5 -> h = 2: decode("ab") + decode("ij").
  const se::EncodeFn encode = [](const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); };
  const se::DecodeFn decode = [](const std::vector<int32_t>& ids) {
    return std::string(ids.begin(), ids.end());
  };
  EXPECT_EQ(se::longbench_truncate_prompt("abcdefghij", 5, encode, decode), "abij");
  EXPECT_EQ(se::longbench_truncate_prompt("abcdefghij", 10, encode, decode), "abcdefghij");
}

TEST(EvalLongBench, ReaderAndErrors) {
  const auto good = write_temp(
      "good.jsonl",
      "{\"input\": \"q\", \"context\": \"c\", \"answers\": [\"a1\", \"a2\"], \"length\": 12, \"dataset\": "
      "\"trec\", "
      "\"language\": \"en\", \"all_classes\": [\"x\", \"y\"], \"_id\": \"id0\"}\n\n"
      "{\"input\": \"q2\", \"context\": \"c2\", \"answers\": [\"b\"], \"length\": 3, \"dataset\": \"lcc\", "
      "\"language\": \"en\", \"all_classes\": null, \"_id\": \"id1\"}\n");
  const auto samples = se::read_longbench_jsonl(good.string());
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].answers, (std::vector<std::string>{"a1", "a2"}));
  EXPECT_EQ(samples[0].all_classes, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(samples[0].length, 12);
  EXPECT_EQ(samples[1].id, "id1");
  EXPECT_TRUE(samples[1].all_classes.empty());

  const std::string first_line = read_first_line(good);
  const auto bad_json = write_temp("bad.jsonl", first_line + "\n{\"input\": \n");
  const std::string b = error_of([&] { se::read_longbench_jsonl(bad_json.string()); });
  EXPECT_NE(b.find(bad_json.string() + ":2: not valid JSON"), std::string::npos) << b;
  const auto missing =
      write_temp("missing.jsonl",
                 "{\"input\": \"q\", \"context\": \"c\", \"length\": 1, \"dataset\": \"trec\", \"language\": "
                 "\"en\", \"all_classes\": null, \"_id\": \"i\"}\n");
  const std::string m = error_of([&] { se::read_longbench_jsonl(missing.string()); });
  EXPECT_NE(m.find(missing.string() + ":1: field 'answers' is missing"), std::string::npos) << m;
  const auto wrong = write_temp(
      "wrong.jsonl",
      "{\"input\": \"q\", \"context\": \"c\", \"answers\": [\"a\"], \"length\": \"12\", \"dataset\": "
      "\"trec\", \"language\": \"en\", \"all_classes\": null, \"_id\": \"i\"}\n");
  const std::string w = error_of([&] { se::read_longbench_jsonl(wrong.string()); });
  EXPECT_NE(w.find(":1: field 'length' must be an integer, got string"), std::string::npos) << w;
  for (const auto& p : {good, bad_json, missing, wrong}) fs::remove(p);
}
