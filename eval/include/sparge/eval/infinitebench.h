// InfiniteBench En.MC (longbook_choice_eng): the JSONL reader, the prompt, middle truncation, the answer
// check of InfiniteBench's compute_scores.py (get_score_one_longbook_choice_eng, also used by MInference) and
// accuracy.
//
// Labels follow get_answer of MInference's copy of eval_utils.py: [answer text, its letter], the letter from
// the answer's place among the four options (an answer already given as [text, letter] is kept). Answer
// check, in order: the stripped prediction's first character, when one of A-D, decides alone (it must be in
// the label); a prediction equal to a label item is right; then, with \n " ' . , ? ! { } turned into spaces
// and spaces collapsed, the text after the first of "answer is:", "answer:", "answer is", "option is" (and
// one more character) must start with a label item; last, the first whitespace-separated word that is a
// substring of "ABCD" must be in the label.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sparge::eval {

struct InfiniteBenchChoiceSample {
  std::string id;  // "id" (a number in the released data; kept as its JSON text)
  std::string context, input;
  std::vector<std::string> answer;   // as in the data (a string becomes a one-item list)
  std::vector<std::string> options;  // exactly 4
  std::vector<std::string> label;    // [answer text, letter]
};

// Reads longbook_choice_eng.jsonl; errors name path:line and the field (also an answer that is not an
// option).
std::vector<InfiniteBenchChoiceSample> read_infinitebench_choice(const std::string& path);

inline constexpr int kInfiniteBenchChoiceMaxNewTokens = 40;        // DATA_NAME_TO_MAX_NEW_TOKENS
inline constexpr int64_t kInfiniteBenchMaxTokens = 128000 - 1000;  // truncation target of the reference runs

// kCompletion: the template InfiniteBench/MInference use for open models (yarn-mistral, Llama, ...), ending
// in "The letter of the correct answer is"; kInstruction: the GPT-4/Claude 2 one ("... tell me the answer
// using one single letter (A, B, C, or D). Don't say anything else.").
enum class InfiniteBenchTemplate { kCompletion, kInstruction };
std::string infinitebench_choice_prompt(const InfiniteBenchChoiceSample& sample,
                                        InfiniteBenchTemplate t = InfiniteBenchTemplate::kCompletion);

// truncate_input(ids, max_tokens, "middle"): ids[:max // 2] + ids[-(max - max // 2):] when longer than
// max_tokens.
std::vector<int32_t> infinitebench_truncate(const std::vector<int32_t>& ids,
                                            int64_t max_tokens = kInfiniteBenchMaxTokens);

bool infinitebench_choice_correct(std::string_view prediction, const std::vector<std::string>& label);
// Mean of 0/1 over predictions (same length as samples, >= 1).
double infinitebench_choice_accuracy(const std::vector<std::string>& predictions,
                                     const std::vector<InfiniteBenchChoiceSample>& samples);

}  // namespace sparge::eval
