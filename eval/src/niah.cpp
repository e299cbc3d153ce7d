#include "sparge/eval/niah.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace sparge::eval {

namespace {

// splitmix64 (Steele, Lea, Flood 2014): a fixed, portable stream (std::uniform_int_distribution is not).
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Uniform in [0, n) by rejection (no modulo bias).
uint64_t uniform_below(uint64_t& state, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x = splitmix64(state);
  while (x >= limit) x = splitmix64(state);
  return x % n;
}

std::string fill_template(std::string_view t, const std::string& context, const std::string& question) {
  std::string out;
  out.reserve(t.size() + context.size() + question.size());
  size_t pos = 0;
  while (pos < t.size()) {
    if (t.compare(pos, 9, "{context}") == 0) {
      out += context;
      pos += 9;
    } else if (t.compare(pos, 10, "{question}") == 0) {
      out += question;
      pos += 10;
    } else {
      out += t[pos++];
    }
  }
  return out;
}

bool is_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

// Inserts the needle into the prefix at the depth; returns the context and the needle's byte offset.
std::pair<std::string, size_t> insert_needle(std::string_view prefix, const std::string& needle, int depth) {
  const size_t n = prefix.size();
  if (depth >= 100) {
    const bool sep = n > 0 && prefix.back() != ' ' && prefix.back() != '\n';
    std::string out(prefix);
    if (sep) out += ' ';
    out += needle;
    return {out, n + (sep ? 1 : 0)};
  }
  const size_t p = n * static_cast<size_t>(depth) / 100;
  const size_t k = p >= 2 ? prefix.rfind(". ", p - 2) : std::string_view::npos;
  const size_t at = k == std::string_view::npos ? 0 : k + 2;
  std::string out;
  out.reserve(n + needle.size() + 1);
  out.append(prefix.substr(0, at)).append(needle).append(" ").append(prefix.substr(at));
  return {out, at};
}

}  // namespace

std::string NiahCase::needle() const {
  return "The special magic " + city + " number is: " + number + ".";
}
std::string NiahCase::question() const {
  return "What is the special magic " + city + " number?";
}

const std::vector<std::string_view>& niah_cities() {
  static const std::vector<std::string_view> kCities = {
      "Chicago",  "Yangon",     "Antananarivo", "Colombo",      "Almaty",     "Sydney",   "Mexico City",
      "Seattle",  "Lagos",      "Amsterdam",    "Belgrade",     "Cairo",      "Baghdad",  "Damascus",
      "Kigali",   "Dakar",      "Sofia",        "Victoria",     "Tashkent",   "Mumbai",   "Barcelona",
      "Amman",    "Toronto",    "Bratislava",   "Johannesburg", "Thimphu",    "Bangkok",  "Santiago",
      "Paris",    "Rabat",      "Copenhagen",   "Madrid",       "Sarajevo",   "Delhi",    "Istanbul",
      "Khartoum", "Helsinki",   "Doha",         "Kuala Lumpur", "Budapest",   "Shanghai", "Moscow",
      "Oslo",     "Berlin",     "Tokyo",        "Melbourne",    "Lisbon",     "Nairobi",  "Kampala",
      "Lima",     "Maputo",     "Vancouver",    "Dubai",        "Jakarta",    "Yerevan",  "Beirut",
      "Athens",   "Bucharest",  "Brussels",     "Tunis",        "Astana",     "Seoul",    "Buenos Aires",
      "Vienna",   "Montevideo", "Reykjavik",    "Hanoi",        "Wellington", "Quito",    "Accra"};
  return kCities;
}

std::vector<int> niah_depths(int n, int lo, int hi) {
  if (n < 1) throw std::invalid_argument("niah_depths: n must be >= 1, got " + std::to_string(n));
  if (lo < 0 || hi > 100 || lo > hi) {
    throw std::invalid_argument("niah_depths: need 0 <= lo <= hi <= 100, got lo " + std::to_string(lo) +
                                ", hi " + std::to_string(hi));
  }
  std::vector<int> out;
  for (int64_t v : niah_lengths(lo, hi, n)) out.push_back(static_cast<int>(v));
  return out;
}

std::vector<int64_t> niah_lengths(int64_t lo, int64_t hi, int n) {
  if (n < 1) throw std::invalid_argument("niah_lengths: n must be >= 1, got " + std::to_string(n));
  if (lo > hi) throw std::invalid_argument("niah_lengths: lo must be <= hi");
  std::vector<int64_t> out;
  if (n == 1) return {lo};
  // numpy.linspace: i * ((hi - lo) / (n - 1)) + lo, the last point set to hi; then numpy.round (ties to
  // even).
  const double step = static_cast<double>(hi - lo) / static_cast<double>(n - 1);
  for (int i = 0; i < n; ++i) {
    const double v = i == n - 1 ? static_cast<double>(hi) : i * step + static_cast<double>(lo);
    out.push_back(static_cast<int64_t>(std::nearbyint(v)));
  }
  return out;
}

std::vector<NiahCase> niah_grid(const std::vector<int64_t>& lengths, const std::vector<int>& depths,
                                int rounds, uint64_t seed, int digits) {
  if (lengths.empty() || depths.empty() || rounds < 1) {
    throw std::invalid_argument("niah_grid: need at least one length, one depth and one round");
  }
  if (digits < 1 || digits > 18) {
    throw std::invalid_argument("niah_grid: digits must be in [1, 18], got " + std::to_string(digits));
  }
  for (int d : depths) {
    if (d < 0 || d > 100)
      throw std::invalid_argument("niah_grid: depth " + std::to_string(d) + " not in [0, 100]");
  }
  uint64_t low = 1;
  for (int i = 1; i < digits; ++i) low *= 10;
  const uint64_t span = low * 10 - low;  // numbers in [10^(d-1), 10^d)
  const auto& cities = niah_cities();
  std::vector<NiahCase> out;
  for (int64_t len : lengths) {
    if (len < 1) throw std::invalid_argument("niah_grid: context length " + std::to_string(len) + " < 1");
    for (int d : depths) {
      for (int r = 0; r < rounds; ++r) {
        uint64_t state = seed;
        for (uint64_t key :
             {static_cast<uint64_t>(len), static_cast<uint64_t>(d), static_cast<uint64_t>(r)}) {
          state = splitmix64(state) ^ key;
        }
        NiahCase c;
        c.context_length = len;
        c.depth_percent = d;
        c.round = r;
        c.city = std::string(cities[uniform_below(state, cities.size())]);
        c.number = std::to_string(low + uniform_below(state, span));
        out.push_back(std::move(c));
      }
    }
  }
  return out;
}

NiahPrompt build_niah_prompt(std::string_view haystack, const TokenCountFn& count_tokens, const NiahCase& c,
                             const NiahOptions& options) {
  const std::string fn = "build_niah_prompt: ";
  if (!count_tokens) throw std::invalid_argument(fn + "count_tokens is required");
  if (haystack.empty()) throw std::invalid_argument(fn + "the haystack is empty");
  if (c.depth_percent < 0 || c.depth_percent > 100) {
    throw std::invalid_argument(fn + "depth_percent must be in [0, 100], got " +
                                std::to_string(c.depth_percent));
  }
  if (options.prompt_template.find("{context}") == std::string::npos ||
      options.prompt_template.find("{question}") == std::string::npos) {
    throw std::invalid_argument(fn + "prompt_template needs {context} and {question}");
  }
  const int64_t budget = c.context_length - options.reserve_tokens;
  const std::string needle = c.needle(), question = c.question();
  std::string source(haystack);
  int calls = 0;
  auto measure = [&](size_t n) {  // the prompt from the first n bytes of source
    ++calls;
    auto [context, offset] = insert_needle(std::string_view(source).substr(0, n), needle, c.depth_percent);
    NiahPrompt p;
    p.prompt = fill_template(options.prompt_template, context, question);
    p.prompt_tokens = count_tokens(p.prompt);
    p.haystack_bytes = static_cast<int64_t>(n);
    p.needle_offset = static_cast<int64_t>(offset);
    p.context = std::move(context);
    return p;
  };
  NiahPrompt best = measure(0);
  if (best.prompt_tokens > budget) {
    throw std::invalid_argument(
        fn + "context_length " + std::to_string(c.context_length) + " minus reserve " +
        std::to_string(options.reserve_tokens) + " leaves " + std::to_string(budget) +
        " tokens, but template + needle + question alone take " + std::to_string(best.prompt_tokens));
  }
  // Bytes per token of the haystack, from a sample, for the first guess.
  const std::string sample(haystack.substr(0, std::min<size_t>(haystack.size(), 16384)));
  const double bytes_per_token =
      static_cast<double>(sample.size()) / std::max<int64_t>(1, count_tokens(sample));
  ++calls;
  // Repeat the haystack until the whole source is longer than the budget.
  const auto wanted = static_cast<size_t>(2.0 * static_cast<double>(budget) * bytes_per_token) + 1;
  while (source.size() < wanted) source.append("\n\n").append(haystack);
  NiahPrompt full = measure(source.size());
  while (full.prompt_tokens <= budget && calls < options.max_count_calls) {
    const std::string copy = source;
    source.append("\n\n").append(copy);
    full = measure(source.size());
  }
  if (full.prompt_tokens <= budget) return full;

  // The longest prefix that fits: secant steps between a fitting (lo) and a too-long (hi) prefix.
  size_t lo = 0, hi = source.size();
  int64_t t_lo = best.prompt_tokens, t_hi = full.prompt_tokens;
  const double target = static_cast<double>(budget) - 0.5 * static_cast<double>(options.slack);
  double guess = (target - static_cast<double>(t_lo)) * bytes_per_token;
  while (calls < options.max_count_calls && budget - best.prompt_tokens > options.slack && hi - lo > 1) {
    auto n = static_cast<size_t>(std::clamp(guess, 0.0, static_cast<double>(source.size())));
    if (n <= lo || n >= hi) n = lo + (hi - lo) / 2;
    while (n > lo && is_continuation(source[n])) --n;  // whole code points only
    if (n <= lo) break;
    NiahPrompt p = measure(n);
    if (p.prompt_tokens <= budget) {
      lo = n;
      t_lo = p.prompt_tokens;
      best = std::move(p);
    } else {
      hi = n;
      t_hi = p.prompt_tokens;
    }
    const double rate = static_cast<double>(hi - lo) / std::max(1.0, static_cast<double>(t_hi - t_lo));
    guess = static_cast<double>(lo) + (target - static_cast<double>(t_lo)) * rate;
  }
  return best;
}

double niah_score(std::string_view answer, std::string_view number) {
  if (number.empty()) throw std::invalid_argument("niah_score: empty number");
  return answer.find(number) == std::string_view::npos ? 0.0 : 1.0;
}

void NiahResults::add(int64_t context_length, int depth_percent, double score) {
  if (!std::isfinite(score)) throw std::invalid_argument("NiahResults::add: score must be finite");
  Cell& cell = cells_[{context_length, depth_percent}];
  cell.sum += score;
  ++cell.n;
}

double NiahResults::overall() const {
  double sum = 0.0;
  int64_t n = 0;
  for (const auto& [key, cell] : cells_) {
    sum += cell.sum;
    n += cell.n;
  }
  if (n == 0) throw std::logic_error("NiahResults::overall: no trials");
  return sum / static_cast<double>(n);
}

double NiahResults::cell(int64_t context_length, int depth_percent) const {
  const auto it = cells_.find({context_length, depth_percent});
  if (it == cells_.end()) {
    throw std::out_of_range("NiahResults::cell: no trial at length " + std::to_string(context_length) +
                            ", depth " + std::to_string(depth_percent));
  }
  return it->second.sum / static_cast<double>(it->second.n);
}

std::vector<int64_t> NiahResults::lengths() const {
  std::vector<int64_t> out;
  for (const auto& [key, cell] : cells_) {
    if (out.empty() || out.back() != key.first) out.push_back(key.first);
  }
  return out;
}

std::vector<int> NiahResults::depths() const {
  std::vector<int> out;
  for (const auto& [key, cell] : cells_) out.push_back(key.second);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

namespace {
std::ofstream open_out(const std::string& path) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("NiahResults: cannot write " + path);
  return f;
}
}  // namespace

void NiahResults::write_csv(const std::string& path) const {
  std::ofstream f = open_out(path);
  f << "context_length,depth_percent,trials,score\n";
  for (const auto& [key, cell] : cells_) {
    char score[32];
    std::snprintf(score, sizeof(score), "%.6f", cell.sum / static_cast<double>(cell.n));
    f << key.first << ',' << key.second << ',' << cell.n << ',' << score << '\n';
  }
  if (!f) throw std::runtime_error("NiahResults: write failed: " + path);
}

void NiahResults::write_json(const std::string& path) const {
  const auto ls = lengths();
  const auto ds = depths();
  nlohmann::json scores = nlohmann::json::array(), trials = nlohmann::json::array();
  for (int64_t l : ls) {
    nlohmann::json srow = nlohmann::json::array(), trow = nlohmann::json::array();
    for (int d : ds) {
      const auto it = cells_.find({l, d});
      srow.push_back(it == cells_.end() ? nlohmann::json(nullptr)
                                        : nlohmann::json(it->second.sum / it->second.n));
      trow.push_back(it == cells_.end() ? 0 : it->second.n);
    }
    scores.push_back(std::move(srow));
    trials.push_back(std::move(trow));
  }
  const nlohmann::json j = {
      {"metric", "niah_exact_match"}, {"lengths", ls}, {"depths", ds}, {"scores", scores}, {"trials", trials},
      {"overall", overall()}};
  std::ofstream f = open_out(path);
  f << j.dump(2) << '\n';
  if (!f) throw std::runtime_error("NiahResults: write failed: " + path);
}

}  // namespace sparge::eval
