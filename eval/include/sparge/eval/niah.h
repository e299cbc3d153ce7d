// Needle in a haystack, exact-match variant (as MInference runs it): a needle "The special magic {city}
// number is: {number}." is hidden in a long real text at a depth, the model is asked "What is the special
// magic {city} number?", and a trial scores 1 when the number's digits appear in the greedy answer. Grid:
// context lengths x depths (depths round(linspace(0, 100, k))), a few rounds per cell; the result is a
// heatmap and the mean.
//
// Prompt construction (tokenizer-agnostic, through a token-count callback): the haystack is cut to the
// longest prefix (repeated if it is too short) for which the whole prompt - template, haystack with the
// needle, question - counts at most context_length - reserve_tokens tokens, and at least that minus `slack`;
// depth d places the needle at byte floor(d% x prefix length), moved back to just after the nearest preceding
// ". " (start of text if none); d = 100 appends it at the end. Depth is measured in bytes here, MInference
// measures it in tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace sparge::eval {

using TokenCountFn = std::function<int64_t(const std::string&)>;

// MInference's needle prompt; {context} and {question} are filled.
inline constexpr std::string_view kNiahTemplate =
    "Write a high-quality answer for the given question using only the provided search results (some of "
    "which might be irrelevant).\n{context}\n\nQuestion: {question} Don't give information outside the "
    "document or repeat your findings. Keep your response short and direct. Answer: ";

struct NiahCase {
  int64_t context_length = 0;  // target prompt length in tokens
  int depth_percent = 0;       // 0..100
  int round = 0;
  std::string city, number;
  std::string needle() const;    // "The special magic {city} number is: {number}."
  std::string question() const;  // "What is the special magic {city} number?"
};

// round(linspace(lo, hi, n)) with numpy's rounding (ties to even); n >= 1 (n == 1 gives {lo}).
std::vector<int> niah_depths(int n, int lo = 0, int hi = 100);
std::vector<int64_t> niah_lengths(int64_t lo, int64_t hi, int n);

// lengths x depths x rounds, lengths outermost. City and number of each trial come from a splitmix64 stream
// keyed by (seed, length, depth, round), so a trial does not change when the grid around it does; numbers
// have `digits` digits (no leading zero; MInference: 7).
std::vector<NiahCase> niah_grid(const std::vector<int64_t>& lengths, const std::vector<int>& depths,
                                int rounds, uint64_t seed, int digits = 7);
const std::vector<std::string_view>& niah_cities();

struct NiahOptions {
  std::string prompt_template = std::string(kNiahTemplate);
  int64_t reserve_tokens = 0;  // kept free below context_length (chat-template wrapping added by the caller)
  int64_t slack = 16;          // accept a fill this many tokens below the budget
  int max_count_calls = 40;    // token-count calls per prompt before taking the best fit found
};

struct NiahPrompt {
  std::string prompt;
  int64_t prompt_tokens = 0;   // count_tokens(prompt)
  int64_t haystack_bytes = 0;  // bytes of haystack kept (without the needle)
  int64_t needle_offset = 0;   // byte offset of the needle inside the filled context
  std::string context;         // the haystack prefix with the needle in it
};

NiahPrompt build_niah_prompt(std::string_view haystack, const TokenCountFn& count_tokens, const NiahCase& c,
                             const NiahOptions& options = {});

// 1 when `number` is a substring of the answer.
double niah_score(std::string_view answer, std::string_view number);

// Per-cell means and the overall mean over all trials; writes the heatmap for the runner's plot.
class NiahResults {
 public:
  void add(int64_t context_length, int depth_percent, double score);
  double overall() const;                                        // mean over all trials
  double cell(int64_t context_length, int depth_percent) const;  // throws when the cell has no trial
  std::vector<int64_t> lengths() const;
  std::vector<int> depths() const;
  // CSV: context_length,depth_percent,trials,score (one row per cell, sorted).
  void write_csv(const std::string& path) const;
  // JSON: {"metric": "niah_exact_match", "lengths": [...], "depths": [...], "scores": [[per depth] per
  // length] (null for an empty cell), "trials": [[...]], "overall": mean}.
  void write_json(const std::string& path) const;

 private:
  struct Cell {
    double sum = 0.0;
    int64_t n = 0;
  };
  std::map<std::pair<int64_t, int>, Cell> cells_;
};

}  // namespace sparge::eval
