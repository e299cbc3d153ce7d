// LongBench v1 scorers (metrics.py) and the string-similarity algorithms they rely on (rouge 1.0.1's ROUGE-L,
// difflib.SequenceMatcher, python-Levenshtein's ratio). Behaviour notes are in longbench.h.
#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "sparge/eval/longbench.h"
#include "sparge/eval/text.h"

namespace sparge::eval {

namespace {

constexpr std::string_view kPunctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";  // Python string.punctuation

// re.sub(r"\b(a|an|the)\b", " ", s) on code points.
std::u32string remove_articles(const std::u32string& u) {
  std::u32string out;
  out.reserve(u.size());
  size_t i = 0;
  while (i < u.size()) {
    const bool boundary_before = i == 0 || !py_isword(u[i - 1]);
    size_t len = 0;
    if (boundary_before) {
      for (std::u32string_view article : {U"a", U"an", U"the"}) {  // alternation order
        if (u.compare(i, article.size(), article) == 0 &&
            (i + article.size() == u.size() || !py_isword(u[i + article.size()]))) {
          len = article.size();
          break;
        }
      }
    }
    if (len) {
      out += U' ';
      i += len;
    } else {
      out += u[i++];
    }
  }
  return out;
}

// Counter(prediction) & Counter(ground_truth) summed, then F1 as metrics.py computes it.
double token_f1(const std::vector<std::string>& pred, const std::vector<std::string>& gold) {
  std::unordered_map<std::string, int64_t> gold_counts;
  for (const auto& t : gold) ++gold_counts[t];
  int64_t same = 0;
  for (const auto& t : pred) {
    auto it = gold_counts.find(t);
    if (it != gold_counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double precision = 1.0 * static_cast<double>(same) / static_cast<double>(pred.size());
  const double recall = 1.0 * static_cast<double>(same) / static_cast<double>(gold.size());
  return (2 * precision * recall) / (precision + recall);
}

// ---- rouge 1.0.1.

// hyp.split(".") pieces of non-zero length, each " ".join(piece.split()).
std::vector<std::string> rouge_sentences(std::string_view text) {
  std::vector<std::string> out;
  for (const std::string& piece : split_on(text, ".")) {
    if (piece.empty()) continue;
    std::string sentence;
    for (const std::string& w : py_split(piece)) sentence += (sentence.empty() ? "" : " ") + w;
    out.push_back(std::move(sentence));
  }
  return out;
}

// The words of a sentence: sentence.split(" ") (an empty sentence is one empty word).
std::vector<std::string> rouge_words(const std::string& sentence) {
  return split_on(sentence, " ");
}

// Adds to `out` the distinct words on _recon_lcs(x, y)'s path (x: reference words, y: prediction words).
void add_lcs_words(const std::vector<int>& x, const std::vector<int>& y, std::unordered_set<int>& out) {
  const size_t nx = x.size(), ny = y.size();
  std::vector<int> table((nx + 1) * (ny + 1), 0);
  auto at = [ny, &table](size_t i, size_t j) -> int& { return table[i * (ny + 1) + j]; };
  for (size_t i = 1; i <= nx; ++i) {
    for (size_t j = 1; j <= ny; ++j) {
      at(i, j) = x[i - 1] == y[j - 1] ? at(i - 1, j - 1) + 1 : std::max(at(i - 1, j), at(i, j - 1));
    }
  }
  size_t i = nx, j = ny;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      out.insert(x[i - 1]);
      --i;
      --j;
    } else if (at(i - 1, j) > at(i, j - 1)) {
      --i;
    } else {
      --j;
    }
  }
}

// ---- difflib.SequenceMatcher(None, a, b).

struct Match {
  size_t i, j, size;
};

class SequenceMatcher {
 public:
  SequenceMatcher(std::u32string_view a, std::u32string_view b) : a_(a), b_(b) {
    for (size_t j = 0; j < b_.size(); ++j) b2j_[b_[j]].push_back(j);
    if (b_.size() >= 200) {  // autojunk: drop "popular" items
      const size_t ntest = b_.size() / 100 + 1;
      for (auto it = b2j_.begin(); it != b2j_.end();) {
        it = it->second.size() > ntest ? b2j_.erase(it) : std::next(it);
      }
    }
  }

  size_t matched_total() const {
    size_t total = 0;
    std::vector<std::array<size_t, 4>> queue{{0, a_.size(), 0, b_.size()}};
    while (!queue.empty()) {
      const auto [alo, ahi, blo, bhi] = queue.back();
      queue.pop_back();
      const Match m = find_longest_match(alo, ahi, blo, bhi);
      if (m.size == 0) continue;
      total += m.size;
      if (alo < m.i && blo < m.j) queue.push_back({alo, m.i, blo, m.j});
      if (m.i + m.size < ahi && m.j + m.size < bhi) queue.push_back({m.i + m.size, ahi, m.j + m.size, bhi});
    }
    return total;
  }

 private:
  Match find_longest_match(size_t alo, size_t ahi, size_t blo, size_t bhi) const {
    size_t besti = alo, bestj = blo, bestsize = 0;
    std::unordered_map<size_t, size_t> j2len, next;
    for (size_t i = alo; i < ahi; ++i) {
      next.clear();
      const auto it = b2j_.find(a_[i]);
      if (it != b2j_.end()) {
        for (size_t j : it->second) {
          if (j < blo) continue;
          if (j >= bhi) break;
          const auto prev = j > 0 ? j2len.find(j - 1) : j2len.end();
          const size_t k = (prev == j2len.end() ? 0 : prev->second) + 1;
          next[j] = k;
          if (k > bestsize) {
            besti = i + 1 - k;
            bestj = j + 1 - k;
            bestsize = k;
          }
        }
      }
      std::swap(j2len, next);
    }
    // Extend by equal items on both ends (popular items included; no junk with isjunk=None).
    while (besti > alo && bestj > blo && a_[besti - 1] == b_[bestj - 1]) {
      --besti;
      --bestj;
      ++bestsize;
    }
    while (besti + bestsize < ahi && bestj + bestsize < bhi && a_[besti + bestsize] == b_[bestj + bestsize]) {
      ++bestsize;
    }
    return {besti, bestj, bestsize};
  }

  std::u32string_view a_, b_;
  std::unordered_map<char32_t, std::vector<size_t>> b2j_;
};

}  // namespace

std::string normalize_answer(std::string_view s) {
  std::string no_punct;
  for (char c : py_lower(s)) {
    if (kPunctuation.find(c) == std::string_view::npos)
      no_punct += c;  // ASCII bytes never occur inside UTF-8
  }
  const std::string no_articles = utf8_encode(remove_articles(utf8_decode(no_punct)));
  std::string out;
  for (const std::string& w : py_split(no_articles)) out += (out.empty() ? "" : " ") + w;
  return out;
}

double qa_f1_score(std::string_view prediction, std::string_view answer) {
  return token_f1(py_split(normalize_answer(prediction)), py_split(normalize_answer(answer)));
}

double rouge_l_f(std::string_view prediction, std::string_view answer) {
  const std::vector<std::string> hyp = rouge_sentences(prediction);
  const std::vector<std::string> ref = rouge_sentences(answer);
  if (hyp.empty() || ref.empty()) return 0.0;  // the package raises; LongBench scores 0
  std::unordered_map<std::string, int> ids;
  auto to_ids = [&ids](const std::string& sentence) {
    std::vector<int> out;
    for (const std::string& w : rouge_words(sentence)) {
      out.push_back(ids.try_emplace(w, static_cast<int>(ids.size())).first->second);
    }
    return out;
  };
  std::vector<std::vector<int>> hyp_ids, ref_ids;
  std::unordered_set<int> hyp_words, ref_words, lcs_union;
  for (const auto& s : hyp) {
    hyp_ids.push_back(to_ids(s));
    hyp_words.insert(hyp_ids.back().begin(), hyp_ids.back().end());
  }
  for (const auto& s : ref) {
    ref_ids.push_back(to_ids(s));
    ref_words.insert(ref_ids.back().begin(), ref_ids.back().end());
  }
  for (const auto& r : ref_ids) {
    for (const auto& h : hyp_ids) add_lcs_words(r, h, lcs_union);
  }
  const double llcs = static_cast<double>(lcs_union.size());
  const double r_lcs = llcs / static_cast<double>(ref_words.size());
  const double p_lcs = llcs / static_cast<double>(hyp_words.size());
  return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8));
}

double classification_score(std::string_view prediction, std::string_view answer,
                            const std::vector<std::string>& all_classes) {
  std::vector<std::string> matches;
  for (const auto& c : all_classes) {
    if (prediction.find(c) != std::string_view::npos) matches.push_back(c);
  }
  // `for match_term in em_match_list: ... em_match_list.remove(match_term)`: Python's list iterator only
  // moves forward, so the item that slides into a removed item's slot is skipped.
  for (size_t idx = 0; idx < matches.size();) {
    const std::string term = matches[idx++];
    if (answer.find(term) != std::string_view::npos && term != answer) {
      matches.erase(std::find(matches.begin(), matches.end(), term));
    }
  }
  if (std::find(matches.begin(), matches.end(), answer) == matches.end()) return 0.0;
  return 1.0 / static_cast<double>(matches.size());
}

double retrieval_score(std::string_view prediction, std::string_view answer) {
  // re.findall(r'Paragraph (\d+)', answer)[0]
  constexpr std::string_view kPrefix = "Paragraph ";
  std::string id;
  for (size_t pos = answer.find(kPrefix); pos != std::string_view::npos;
       pos = answer.find(kPrefix, pos + 1)) {
    const size_t d = pos + kPrefix.size();
    if (d < answer.size() && py_isdigit(static_cast<unsigned char>(answer[d]))) {
      id = find_digit_runs(answer.substr(d)).front();
      break;
    }
  }
  if (id.empty()) {
    throw std::invalid_argument("retrieval_score: the answer must contain \"Paragraph <number>\", got \"" +
                                std::string(answer) + "\"");
  }
  const std::vector<std::string> numbers = find_digit_runs(prediction);
  if (numbers.empty()) return 0.0;
  const auto right = std::count(numbers.begin(), numbers.end(), id);
  return static_cast<double>(right) / static_cast<double>(numbers.size());
}

double count_score(std::string_view prediction, std::string_view answer) {
  const std::vector<std::string> numbers = find_digit_runs(prediction);
  if (numbers.empty()) return 0.0;
  const auto right = std::count(numbers.begin(), numbers.end(), std::string(answer));
  return static_cast<double>(right) / static_cast<double>(numbers.size());
}

double sequence_matcher_ratio(std::u32string_view a, std::u32string_view b) {
  const size_t length = a.size() + b.size();
  if (length == 0) return 1.0;
  return 2.0 * static_cast<double>(SequenceMatcher(a, b).matched_total()) / static_cast<double>(length);
}

double indel_ratio(std::u32string_view a, std::u32string_view b) {
  const size_t lensum = a.size() + b.size();
  if (lensum == 0) return 1.0;
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);  // LCS length, row by row
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  const size_t distance = lensum - 2 * prev[b.size()];  // insertions + deletions
  return (static_cast<double>(lensum) - static_cast<double>(distance)) / static_cast<double>(lensum);
}

int fuzz_ratio(std::string_view a, std::string_view b, EditSimVariant variant) {
  if (a == b) return 100;
  if (a.empty() || b.empty()) return 0;
  const std::u32string ua = utf8_decode(a), ub = utf8_decode(b);
  const double r = variant == EditSimVariant::kDifflib ? sequence_matcher_ratio(ua, ub) : indel_ratio(ua, ub);
  return static_cast<int>(std::nearbyint(100 * r));  // int(round(x)): ties to even
}

double code_sim_score(std::string_view prediction, std::string_view answer, EditSimVariant variant) {
  const size_t start = prediction.find_first_not_of('\n');
  std::string line;
  if (start != std::string_view::npos) {
    for (const std::string& l : split_on(prediction.substr(start), "\n")) {
      if (l.find('`') == std::string::npos && l.find('#') == std::string::npos &&
          l.find("//") == std::string::npos) {
        line = l;
        break;
      }
    }
  }
  // prediction.lstrip('\n') of an all-newline prediction is "", whose only line "" qualifies.
  return fuzz_ratio(line, answer, variant) / 100.0;
}

}  // namespace sparge::eval
