// InfiniteBench En.MC: reader, labels, prompt, truncation, the answer check of compute_scores.py, accuracy.
#include <gtest/gtest.h>

#include <filesystem>

#include "eval_test_util.h"
#include "sparge/eval/infinitebench.h"

namespace se = sparge::eval;
namespace fs = std::filesystem;

using sparge::eval::testing::write_temp;

namespace {

const std::string kLine =
    "{\"id\": 3, \"context\": \"Book text.\", \"input\": \"Who is not a child?\", \"answer\": [\"Peyton\"], "
    "\"options\": [\"Annalisa\", \"Seb\", \"Peyton\", \"Gannonmarie\"]}\n";

}  // namespace

TEST(EvalInfiniteBench, AnswerCheck) {
  const std::vector<std::string> label = {"Peyton", "C"};
  EXPECT_TRUE(se::infinitebench_choice_correct("C", label));
  EXPECT_TRUE(se::infinitebench_choice_correct("  C. Peyton\n", label));  // stripped, first character C
  EXPECT_FALSE(se::infinitebench_choice_correct("A", label));
  EXPECT_TRUE(se::infinitebench_choice_correct("Peyton", label));  // equal to a label item
  // First character 'T' is no letter; "answer is:" found, one character skipped, "C" follows.
  EXPECT_TRUE(se::infinitebench_choice_correct("The answer is: C", label));
  EXPECT_TRUE(
      se::infinitebench_choice_correct("The answer is Peyton.", label));       // "answer is" + " " + Peyton
  EXPECT_FALSE(se::infinitebench_choice_correct("The answer is (C)", label));  // "(C)" starts with neither
  EXPECT_FALSE(se::infinitebench_choice_correct("The answer is", label));      // nothing after the prefix
  // No prefix: the first word that is a substring of "ABCD" decides ("I" is not, "C" is).
  EXPECT_TRUE(se::infinitebench_choice_correct("I think it is C", label));
  EXPECT_FALSE(
      se::infinitebench_choice_correct("I pick BC", label));  // "BC" is in "ABCD" but not in the label
  // The first character decides alone when it is one of A-D, even as the start of a word.
  EXPECT_FALSE(se::infinitebench_choice_correct("According to the book, C", label));
  EXPECT_FALSE(se::infinitebench_choice_correct("  \n", label));
  EXPECT_FALSE(se::infinitebench_choice_correct("", label));
}

TEST(EvalInfiniteBench, ReaderLabelsPromptAndAccuracy) {
  const auto path =
      write_temp("choice.jsonl", kLine +
                                     "{\"id\": 4, \"context\": \"B\", \"input\": \"Q\", \"answer\": "
                                     "\"Seb\", \"options\": [\"Annalisa\", \"Seb\", \"x\", \"y\"]}\n");
  const auto samples = se::read_infinitebench_choice(path.string());
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].id, "3");
  EXPECT_EQ(samples[0].label, (std::vector<std::string>{"Peyton", "C"}));  // Peyton is option 3 -> C
  EXPECT_EQ(samples[1].label, (std::vector<std::string>{"Seb", "B"}));
  EXPECT_EQ(
      se::infinitebench_choice_prompt(samples[0]),
      "Read the book and answer the question.\n\nBook text.\n\nQuestion: Who is not a child?\nA. Annalisa\n"
      "B. Seb\nC. Peyton\nD. Gannonmarie\n\nThe letter of the correct answer is");
  EXPECT_NE(
      se::infinitebench_choice_prompt(samples[0], se::InfiniteBenchTemplate::kInstruction)
          .find("tell me the answer using one single letter (A, B, C, or D). Don't say anything else.\nA. "
                "Annalisa"),
      std::string::npos);
  // C right, "A" wrong -> 1 / 2.
  EXPECT_EQ(se::infinitebench_choice_accuracy({" C", "A"}, samples), 0.5);
  EXPECT_THROW(se::infinitebench_choice_accuracy({"C"}, samples), std::invalid_argument);
  fs::remove(path);
}

TEST(EvalInfiniteBench, ReaderErrorsNameTheLine) {
  auto error_of = [](const std::string& content) {
    const auto p = write_temp("bad.jsonl", content);
    const std::string what =
        sparge::eval::testing::error_of([&] { se::read_infinitebench_choice(p.string()); });
    fs::remove(p);
    return what;
  };
  EXPECT_NE(error_of(kLine + "{\"id\": 1,\n").find(":2: not valid JSON"), std::string::npos);
  EXPECT_NE(
      error_of("{\"id\": 1, \"context\": \"c\", \"input\": \"q\", \"answer\": [\"z\"], \"options\": [\"a\", "
               "\"b\", \"c\", \"d\"]}\n")
          .find(":1: field 'answer' 'z' is not one of the options"),
      std::string::npos);
  EXPECT_NE(
      error_of(
          "{\"id\": 1, \"context\": \"c\", \"input\": \"q\", \"answer\": [\"a\"], \"options\": [\"a\"]}\n")
          .find(":1: field 'options' must hold 4 options, got 1"),
      std::string::npos);
  EXPECT_NE(
      error_of(
          "{\"id\": 1, \"input\": \"q\", \"answer\": [\"a\"], \"options\": [\"a\", \"b\", \"c\", \"d\"]}\n")
          .find(":1: field 'context' is missing"),
      std::string::npos);
}

TEST(EvalInfiniteBench, TruncateFromTheMiddle) {
  std::vector<int32_t> ids(10);
  for (int32_t i = 0; i < 10; ++i) ids[static_cast<size_t>(i)] = i;
  // ids[:5 // 2] + ids[-(5 - 2):] = [0, 1] + [7, 8, 9].
  EXPECT_EQ(se::infinitebench_truncate(ids, 5), (std::vector<int32_t>{0, 1, 7, 8, 9}));
  EXPECT_EQ(se::infinitebench_truncate(ids), ids);  // shorter than 127000
  EXPECT_EQ(se::kInfiniteBenchMaxTokens, 127000);
  EXPECT_EQ(se::kInfiniteBenchChoiceMaxNewTokens, 40);
}
