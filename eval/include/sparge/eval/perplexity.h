// Perplexity: the window plan over a token stream, the NLL accumulator with token-, word- and byte-level
// perplexity, and the WikiText-2 reader. No model here: the runner runs the model on each planned window and
// feeds the per-token negative log-likelihoods back.
//
// Window plan (Hugging Face "perplexity of fixed-length models", max_length = seq_len, stride): windows start
// at 0, stride, 2*stride, ...; a window holds at most seq_len tokens; it scores the tokens the previous
// window did not (from the previous window's end), except its own first token, which has no context inside
// the window. The stream's first token is never scored. With stride < seq_len every token after the first is
// scored exactly once; with stride == seq_len (non-overlapping, GPTQ style) each window's first token goes
// unscored, and drop_partial_last keeps only the T / seq_len full windows as GPTQ's evaluation does.
//
// Levels (lm-eval wikitext): token ppl = exp(NLL sum / scored tokens); word_perplexity = exp(NLL sum /
// words); byte_perplexity = exp(NLL sum / bytes); bits_per_byte = NLL sum / bytes / ln 2, where words =
// len(re.split(r"\s+", doc)) and bytes = UTF-8 bytes, both of the original (not detokenized) documents.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sparge::eval {

// One forward pass: run the model on tokens [begin, end) and add -log p(token[t] | tokens[begin, t)) for
// every t in [score_from, end); begin < score_from always (the logits at position t - 1 score token t).
struct PerplexityWindow {
  int64_t begin = 0, end = 0, score_from = 0;
  int64_t scored() const { return end - score_from; }
};

// num_tokens >= 2, 1 <= stride <= seq_len; drop_partial_last needs stride == seq_len and num_tokens >=
// seq_len.
std::vector<PerplexityWindow> plan_perplexity_windows(int64_t num_tokens, int64_t seq_len, int64_t stride,
                                                      bool drop_partial_last = false);

enum class PerplexityLevel { kToken, kWord, kByte };
PerplexityLevel parse_perplexity_level(std::string_view name);  // "token", "word", "byte"

class PerplexityAccumulator {
 public:
  // Adds scored tokens: NLLs (>= 0, finite) or log-probabilities (<= 0, finite).
  void add_nlls(std::span<const double> nlls);
  void add_log_probs(std::span<const double> log_probs);
  // Adds a pre-summed window: nll_sum over `tokens` scored tokens.
  void add_sum(double nll_sum, int64_t tokens);

  double nll_sum() const { return nll_sum_; }
  int64_t tokens() const { return tokens_; }
  double mean_nll() const;                      // nll_sum / tokens
  double token_perplexity() const;              // exp(mean NLL)
  double word_perplexity(int64_t words) const;  // exp(nll_sum / words)
  double byte_perplexity(int64_t bytes) const;  // exp(nll_sum / bytes)
  double bits_per_byte(int64_t bytes) const;    // nll_sum / bytes / ln 2
  // The value for a level (words and bytes are used by the word and byte levels; kByte = byte_perplexity).
  double perplexity(PerplexityLevel level, int64_t words, int64_t bytes) const;

 private:
  double nll_sum_ = 0.0;
  double compensation_ = 0.0;  // Kahan: long streams add ~1e6 terms
  int64_t tokens_ = 0;
};

// ---- WikiText-2 (raw). Accepted files (the user's path; nothing is downloaded):
//  * plain text: wiki.test.raw of wikitext-2-raw-v1 (the stream is the file as is);
//  * JSON Lines whose objects have a "text" string (rows of the Hugging Face wikitext-2-raw-v1 split,
//  exported
//    one row per line: the stream is the rows joined with `join`, "\n\n" as the HF perplexity guide and GPTQ
//    do), or a "page" string (EleutherAI/wikitext_document_level rows: one document per line, joined with
//    `join`).
// documents are lm-eval's document-level pages of the original text (from a plain or "text" file: split at
// the top-level "= Title =" lines as wikitext_document_level does); words and bytes are summed over them.
struct WikiTextOptions {
  std::string join = "\n\n";  // JSONL rows -> stream
  bool detokenize = false;    // apply lm-eval's wikitext_detokenizer to each document; the stream is then the
                              // detokenized documents joined with "\n" (plain/"text") or `join` ("page")
};
struct WikiText {
  std::string stream;                  // what the runner tokenizes
  std::vector<std::string> documents;  // original documents (word/byte counts)
  int64_t words = 0;                   // sum of count_words_lm_eval over documents
  int64_t bytes = 0;                   // sum of UTF-8 bytes over documents
};
WikiText load_wikitext(const std::string& path, const WikiTextOptions& options = {});

// lm-eval's wikitext_document_level split of a raw file into pages.
std::vector<std::string> wikitext_pages(std::string_view raw);
// lm-eval's wikitext_detokenizer (preprocess_wikitext.py).
std::string wikitext_detokenize(std::string_view page);

}  // namespace sparge::eval
