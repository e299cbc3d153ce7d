// LongBench v1 (THUDM/LongBench: pred.py, eval.py, metrics.py, config/dataset2prompt.json and
// dataset2maxlen.json), English datasets: the JSONL reader, the per-dataset prompt template and
// max_new_tokens, middle truncation, the scorers and the dataset score round(100 * mean, 2).
//
// Reference behaviour kept on purpose (they change published numbers):
//  * classification_score: `em_match_list != 0` is always true in metrics.py, so the difflib fall-back never
//    runs (no class named -> 0); the removal loop skips the item after each removed one, as Python's list
//    iteration does;
//  * rouge_l_f: the `rouge` package 1.0.1 as LongBench calls it (Rouge().get_scores([p], [g], avg=True),
//    exclusive mode): sentences = split on ".", empty pieces dropped, whitespace collapsed; words = split on
//    " " (an all-blank piece leaves one empty word); m, n = number of DISTINCT words of reference and
//    prediction; LCS_union = distinct words on the reconstructed LCS of each (reference sentence, prediction
//    sentence) pair; F = 2 P R / (P + R + 1e-8); any exception (empty prediction or reference) scores 0. Not
//    emulated: Python's recursion limit, which makes the package throw (-> 0) when one sentence pair's LCS
//    walk is longer than about 990 steps;
//  * code_sim_score: fuzzywuzzy fuzz.ratio, by default on difflib.SequenceMatcher (autojunk on) because
//    LongBench's requirements install fuzzywuzzy without python-Levenshtein; kLevenshtein gives the ratio
//    with it.
// Chinese datasets (jieba) are not supported.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sparge::eval {

struct LongBenchSample {
  std::string input, context;
  std::vector<std::string> answers;
  int64_t length = 0;  // words (English), as given in the data
  std::string dataset, language;
  std::vector<std::string> all_classes;  // empty where the data has null
  std::string id;                        // "_id"
};

// Reads one LongBench JSONL file (data/<dataset>.jsonl); errors name path:line and the field.
std::vector<LongBenchSample> read_longbench_jsonl(const std::string& path);

enum class LongBenchMetric { kQaF1, kRougeL, kClassification, kRetrieval, kCount, kCodeSim };
std::string_view longbench_metric_name(LongBenchMetric m);  // "qa_f1", "rouge_l", ...

struct LongBenchTask {
  std::string_view name;
  std::string_view prompt;  // with {context} and {input}
  int max_new_tokens;       // dataset2maxlen.json
  LongBenchMetric metric;
  bool first_line_only;  // eval.py cuts the prediction to its first line (trec, triviaqa, samsum)
  bool chat_template;    // pred.py applies the model's chat template (all but trec, triviaqa, samsum, lcc,
                         // repobench-p)
  bool stop_at_newline;  // pred.py (samsum): "\n" is an extra end-of-sequence token, at least 1 new token
};
std::span<const LongBenchTask> longbench_tasks();               // the 16 English datasets, LongBench's order
const LongBenchTask& longbench_task(std::string_view dataset);  // throws naming the known datasets

// The dataset's template filled with the sample (one pass: braces inside the substituted text stay as they
// are).
std::string longbench_prompt(const LongBenchTask& task, const LongBenchSample& sample);

// pred.py's truncation: when encode(prompt) has more than max_length ids, the prompt becomes
// decode(ids[:h]) + decode(ids[-h:]) with h = max_length / 2; otherwise it is returned unchanged.
using EncodeFn = std::function<std::vector<int32_t>(const std::string&)>;
using DecodeFn = std::function<std::string(const std::vector<int32_t>&)>;
std::string longbench_truncate_prompt(const std::string& prompt, int64_t max_length, const EncodeFn& encode,
                                      const DecodeFn& decode);

// ---- Scorers (one prediction against one answer; the sample score is the max over answers).
std::string normalize_answer(std::string_view s);  // lower, drop punctuation, drop a/an/the, collapse spaces
double qa_f1_score(std::string_view prediction, std::string_view answer);
double rouge_l_f(std::string_view prediction, std::string_view answer);
double classification_score(std::string_view prediction, std::string_view answer,
                            const std::vector<std::string>& all_classes);
double retrieval_score(std::string_view prediction, std::string_view answer);  // "Paragraph N" answers
double count_score(std::string_view prediction, std::string_view answer);

enum class EditSimVariant { kDifflib, kLevenshtein };
// fuzz.ratio(a, b): 100 if a == b, 0 if either is empty, else round(100 * ratio) with Python's round.
int fuzz_ratio(std::string_view a, std::string_view b, EditSimVariant variant = EditSimVariant::kDifflib);
// difflib.SequenceMatcher(None, a, b).ratio() on code points (autojunk: in b of 200+ items, items seen more
// than len(b) / 100 + 1 times do not seed matches).
double sequence_matcher_ratio(std::u32string_view a, std::u32string_view b);
// python-Levenshtein's ratio: 1 - InDel distance / (len a + len b) = 2 LCS / (len a + len b).
double indel_ratio(std::u32string_view a, std::u32string_view b);
// The first line of the (newline-stripped) prediction with no '`', '#' or "//" ("" if none), fuzz_ratio /
// 100.
double code_sim_score(std::string_view prediction, std::string_view answer,
                      EditSimVariant variant = EditSimVariant::kDifflib);

// eval.py's per-sample score: first-line cut where the task says so, then the max of the metric over answers
// (starting from 0).
double longbench_sample_score(const LongBenchTask& task, std::string_view prediction,
                              const std::vector<std::string>& answers,
                              const std::vector<std::string>& all_classes,
                              EditSimVariant code_sim = EditSimVariant::kDifflib);
// round(100 * sum / n, 2) over the samples' scores (n >= 1).
double longbench_dataset_score(std::span<const double> sample_scores);
// The LongBench average of a table: the plain mean of the dataset scores (not rounded).
double longbench_average(const std::map<std::string, double>& dataset_scores);

}  // namespace sparge::eval
