#include "sparge/eval/perplexity.h"

#include <cmath>
#include <fstream>
#include <numbers>
#include <sstream>
#include <stdexcept>

#include "jsonl.h"
#include "sparge/eval/text.h"

namespace sparge::eval {

std::vector<PerplexityWindow> plan_perplexity_windows(int64_t num_tokens, int64_t seq_len, int64_t stride,
                                                      bool drop_partial_last) {
  const std::string fn = "plan_perplexity_windows: ";
  if (num_tokens < 2) {
    throw std::invalid_argument(fn + "num_tokens must be >= 2 (the first token is never scored), got " +
                                std::to_string(num_tokens));
  }
  if (seq_len < 2) throw std::invalid_argument(fn + "seq_len must be >= 2, got " + std::to_string(seq_len));
  if (stride < 1 || stride > seq_len) {
    throw std::invalid_argument(fn + "stride must be in [1, seq_len = " + std::to_string(seq_len) +
                                "], got " + std::to_string(stride));
  }
  std::vector<PerplexityWindow> plan;
  if (drop_partial_last) {
    if (stride != seq_len) {
      throw std::invalid_argument(fn + "drop_partial_last (GPTQ style) needs stride == seq_len, got stride " +
                                  std::to_string(stride) + " and seq_len " + std::to_string(seq_len));
    }
    if (num_tokens < seq_len) {
      throw std::invalid_argument(fn + "drop_partial_last needs num_tokens >= seq_len = " +
                                  std::to_string(seq_len) + ", got " + std::to_string(num_tokens));
    }
    for (int64_t b = 0; b + seq_len <= num_tokens; b += seq_len) plan.push_back({b, b + seq_len, b + 1});
    return plan;
  }
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < num_tokens; begin += stride) {
    const int64_t end = std::min(begin + seq_len, num_tokens);
    const int64_t score_from = std::max(prev_end, begin + 1);
    if (score_from < end) plan.push_back({begin, end, score_from});  // a 1-token tail window scores nothing
    prev_end = end;
    if (end == num_tokens) break;
  }
  return plan;
}

PerplexityLevel parse_perplexity_level(std::string_view name) {
  if (name == "token") return PerplexityLevel::kToken;
  if (name == "word") return PerplexityLevel::kWord;
  if (name == "byte") return PerplexityLevel::kByte;
  throw std::invalid_argument("perplexity level must be one of token, word, byte; got '" + std::string(name) +
                              "'");
}

void PerplexityAccumulator::add_sum(double nll_sum, int64_t tokens) {
  if (!std::isfinite(nll_sum) || nll_sum < 0.0) {
    throw std::invalid_argument("PerplexityAccumulator: nll_sum must be finite and >= 0, got " +
                                std::to_string(nll_sum));
  }
  if (tokens < 0) throw std::invalid_argument("PerplexityAccumulator: tokens must be >= 0");
  const double y = nll_sum - compensation_;
  const double t = nll_sum_ + y;
  compensation_ = (t - nll_sum_) - y;
  nll_sum_ = t;
  tokens_ += tokens;
}

void PerplexityAccumulator::add_nlls(std::span<const double> nlls) {
  for (size_t i = 0; i < nlls.size(); ++i) {
    if (!std::isfinite(nlls[i]) || nlls[i] < 0.0) {
      throw std::invalid_argument("PerplexityAccumulator::add_nlls: nlls[" + std::to_string(i) +
                                  "] must be finite and >= 0, got " + std::to_string(nlls[i]));
    }
    add_sum(nlls[i], 1);
  }
}

void PerplexityAccumulator::add_log_probs(std::span<const double> log_probs) {
  for (size_t i = 0; i < log_probs.size(); ++i) {
    if (!std::isfinite(log_probs[i]) || log_probs[i] > 0.0) {
      throw std::invalid_argument("PerplexityAccumulator::add_log_probs: log_probs[" + std::to_string(i) +
                                  "] must be finite and <= 0, got " + std::to_string(log_probs[i]));
    }
    add_sum(-log_probs[i], 1);
  }
}

namespace {
double checked_divisor(int64_t n, const char* what) {
  if (n <= 0) throw std::invalid_argument(std::string("PerplexityAccumulator: ") + what + " must be > 0");
  return static_cast<double>(n);
}
}  // namespace

double PerplexityAccumulator::mean_nll() const {
  return nll_sum_ / checked_divisor(tokens_, "scored tokens");
}
double PerplexityAccumulator::token_perplexity() const {
  return std::exp(mean_nll());
}
double PerplexityAccumulator::word_perplexity(int64_t words) const {
  return std::exp(nll_sum_ / checked_divisor(words, "words"));
}
double PerplexityAccumulator::byte_perplexity(int64_t bytes) const {
  return std::exp(nll_sum_ / checked_divisor(bytes, "bytes"));
}
double PerplexityAccumulator::bits_per_byte(int64_t bytes) const {
  return nll_sum_ / checked_divisor(bytes, "bytes") / std::numbers::ln2;
}
double PerplexityAccumulator::perplexity(PerplexityLevel level, int64_t words, int64_t bytes) const {
  switch (level) {
    case PerplexityLevel::kToken:
      return token_perplexity();
    case PerplexityLevel::kWord:
      return word_perplexity(words);
    case PerplexityLevel::kByte:
      return byte_perplexity(bytes);
  }
  throw std::logic_error("PerplexityAccumulator::perplexity: bad level");
}

// ---- WikiText.

std::vector<std::string> wikitext_pages(std::string_view raw) {
  std::vector<std::string> pages;
  std::vector<std::string> lines;
  auto join_lines = [&lines] {
    std::string page;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) page += '\n';
      page += lines[i];
    }
    return page;
  };
  for (const std::string& line : split_on(raw, "\n")) {
    const std::string r = py_strip(replace_all(replace_all(line, "= = =", "==="), "= =", "=="));
    const bool title = r.size() >= 2 && r.compare(0, 2, "= ") == 0 && r.compare(r.size() - 2, 2, " =") == 0;
    if (title) {
      std::string page = join_lines();
      if (!py_strip(page).empty()) pages.push_back(std::move(page));
      lines.clear();
    }
    lines.push_back(line);
  }
  pages.push_back(join_lines());
  return pages;
}

namespace {

// re.sub(r"O\s*([^C]*?)\s*C", r"O\1C", s) for single-byte delimiters O and C: each O and the first C after it
// become O + strip(inside) + C.
std::string tighten_pairs(std::string_view s, char open, char close) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == open) {
      const size_t j = s.find(close, i + 1);
      if (j != std::string_view::npos) {
        out += open;
        out += py_strip(s.substr(i + 1, j - i - 1));
        out += close;
        i = j + 1;
        continue;
      }
    }
    out += s[i++];
  }
  return out;
}

// re.sub(r"/' [0-9]/", r"/'[0-9]/", s): the replacement is the literal text "/'[0-9]/" (as in lm-eval).
std::string slash_quote_digit(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, 3, "/' ") == 0 && i + 4 < s.size() && s[i + 3] >= '0' && s[i + 3] <= '9' &&
        s[i + 4] == '/') {
      out += "/'[0-9]/";
      i += 5;
      continue;
    }
    out += s[i++];
  }
  return out;
}

}  // namespace

std::string wikitext_detokenize(std::string_view page) {
  std::string s = replace_all(page, "s '", "s'");  // contractions
  s = slash_quote_digit(s);
  for (const auto& [from, to] : {std::pair{" @-@ ", "-"},
                                 {" @,@ ", ","},
                                 {" @.@ ", "."},  // number separators
                                 {" : ", ": "},
                                 {" ; ", "; "},
                                 {" . ", ". "},
                                 {" ! ", "! "},
                                 {" ? ", "? "},
                                 {" , ", ", "}}) {
    s = replace_all(s, from, to);
  }
  s = tighten_pairs(s, '(', ')');  // brackets and quotes
  s = tighten_pairs(s, '[', ']');
  s = tighten_pairs(s, '{', '}');
  s = tighten_pairs(s, '"', '"');
  s = tighten_pairs(s, '\'', '\'');
  for (const auto& [from, to] : {std::pair{"= = = =", "===="},
                                 {"= = =", "==="},
                                 {"= =", "=="},
                                 {" \xC2\xB0 ", "\xC2\xB0"},  // " ° " -> "°"
                                 {" \n", "\n"},
                                 {"\n ", "\n"},
                                 {" N ", " 1 "},
                                 {" 's", "'s"}}) {
    s = replace_all(s, from, to);
  }
  return s;
}

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error(path + ": read error");
  return ss.str();
}

bool looks_like_jsonl(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  return first != std::string::npos && text[first] == '{';
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

}  // namespace

WikiText load_wikitext(const std::string& path, const WikiTextOptions& options) {
  const std::string content = read_file(path);
  WikiText w;
  bool pages_given = false;
  if (looks_like_jsonl(content)) {
    std::vector<std::string> rows;
    int kind = 0;  // 1: "text" rows, 2: "page" rows
    detail::for_each_jsonl(path, [&](const nlohmann::json& obj, const detail::JsonlPlace& at) {
      const int this_kind = obj.contains("text") ? 1 : obj.contains("page") ? 2 : 0;
      if (this_kind == 0) {
        throw std::runtime_error(at.str() +
                                 ": WikiText JSONL rows need a \"text\" or a \"page\" string field");
      }
      if (kind != 0 && this_kind != kind) {
        throw std::runtime_error(at.str() + ": mixes \"text\" and \"page\" rows");
      }
      kind = this_kind;
      rows.push_back(detail::get_string(obj, kind == 1 ? "text" : "page", at));
    });
    if (kind == 2) {
      w.documents = std::move(rows);
      pages_given = true;
    } else {
      w.documents = wikitext_pages(join(rows, ""));
      w.stream = join(rows, options.join);
    }
  } else {
    w.documents = wikitext_pages(content);
    w.stream = content;
  }
  if (pages_given && !options.detokenize) w.stream = join(w.documents, options.join);
  if (options.detokenize) {
    std::vector<std::string> detok;
    detok.reserve(w.documents.size());
    for (const auto& d : w.documents) detok.push_back(wikitext_detokenize(d));
    w.stream = join(detok, pages_given ? std::string_view(options.join) : std::string_view("\n"));
  }
  for (const auto& d : w.documents) {
    w.words += count_words_lm_eval(d);
    w.bytes += count_utf8_bytes(d);
  }
  if (w.stream.empty()) throw std::runtime_error(path + ": no text");
  return w;
}

}  // namespace sparge::eval
