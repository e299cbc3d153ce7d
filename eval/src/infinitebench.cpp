#include "sparge/eval/infinitebench.h"

#include <algorithm>
#include <stdexcept>

#include "jsonl.h"
#include "sparge/eval/text.h"

namespace sparge::eval {

namespace {

constexpr std::string_view kLetters = "ABCD";

// Fills {context}, {question}, {OPTION_A..D} in one pass.
std::string fill(std::string_view t, const InfiniteBenchChoiceSample& s) {
  std::string out;
  size_t pos = 0;
  while (pos < t.size()) {
    bool done = false;
    const std::pair<std::string_view, const std::string*> fields[] = {
        {"{context}", &s.context},     {"{question}", &s.input},      {"{OPTION_A}", &s.options[0]},
        {"{OPTION_B}", &s.options[1]}, {"{OPTION_C}", &s.options[2]}, {"{OPTION_D}", &s.options[3]}};
    for (const auto& [key, value] : fields) {
      if (t.compare(pos, key.size(), key) == 0) {
        out += *value;
        pos += key.size();
        done = true;
        break;
      }
    }
    if (!done) out += t[pos++];
  }
  return out;
}

constexpr std::string_view kCompletionTemplate =
    "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\n"
    "A. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}\n\nThe letter of the correct answer is";
constexpr std::string_view kInstructionTemplate =
    "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\n\n"
    "Only one of the following options is correct, tell me the answer using one single letter "
    "(A, B, C, or D). Don't say anything else.\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}";

bool contains(const std::vector<std::string>& v, std::string_view x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

std::vector<InfiniteBenchChoiceSample> read_infinitebench_choice(const std::string& path) {
  std::vector<InfiniteBenchChoiceSample> out;
  detail::for_each_jsonl(path, [&out](const nlohmann::json& obj, const detail::JsonlPlace& at) {
    InfiniteBenchChoiceSample s;
    const auto& id = detail::require_field(obj, "id", at);
    if (!id.is_number_integer() && !id.is_string()) {
      detail::field_error(at, "id", std::string("must be an integer or a string, got ") + id.type_name());
    }
    s.id = id.is_string() ? id.get<std::string>() : id.dump();
    s.context = detail::get_string(obj, "context", at);
    s.input = detail::get_string(obj, "input", at);
    s.options = detail::get_string_list(obj, "options", at);
    if (s.options.size() != 4) {
      detail::field_error(at, "options", "must hold 4 options, got " + std::to_string(s.options.size()));
    }
    const auto& answer = detail::require_field(obj, "answer", at);
    s.answer = answer.is_string() ? std::vector<std::string>{answer.get<std::string>()}
                                  : detail::get_string_list(obj, "answer", at);
    // get_answer: [text, letter].
    if (s.answer.size() == 2 && s.answer[1].size() == 1 &&
        kLetters.find(s.answer[1]) != std::string_view::npos) {
      s.label = s.answer;
    } else if (s.answer.size() == 1) {
      const auto it = std::find(s.options.begin(), s.options.end(), s.answer[0]);
      if (it == s.options.end())
        detail::field_error(at, "answer", "'" + s.answer[0] + "' is not one of the options");
      s.label = {s.answer[0], std::string(1, kLetters[static_cast<size_t>(it - s.options.begin())])};
    } else {
      detail::field_error(at, "answer",
                          "must be an option, [option] or [option, letter], got " + answer.dump());
    }
    out.push_back(std::move(s));
  });
  return out;
}

std::string infinitebench_choice_prompt(const InfiniteBenchChoiceSample& sample, InfiniteBenchTemplate t) {
  if (sample.options.size() != 4) {
    throw std::invalid_argument("infinitebench_choice_prompt: sample " + sample.id + " has " +
                                std::to_string(sample.options.size()) + " options, expected 4");
  }
  return fill(t == InfiniteBenchTemplate::kCompletion ? kCompletionTemplate : kInstructionTemplate, sample);
}

std::vector<int32_t> infinitebench_truncate(const std::vector<int32_t>& ids, int64_t max_tokens) {
  return truncate_middle(ids, max_tokens, MiddleSplit::kFloorCeil);
}

bool infinitebench_choice_correct(std::string_view prediction, const std::vector<std::string>& label) {
  std::string pred = py_strip(prediction);
  if (pred.empty()) return false;
  if (kLetters.find(pred[0]) != std::string_view::npos) return contains(label, pred.substr(0, 1));
  if (contains(label, pred)) return true;
  for (const char* c : {"\n", "\"", "'", ".", ",", "?", "!", "{", "}"}) pred = replace_all(pred, c, " ");
  while (pred.find("  ") != std::string::npos) pred = replace_all(pred, "  ", " ");
  for (std::string_view prefix : {"answer is:", "answer:", "answer is", "option is"}) {
    const size_t idx = pred.find(prefix);
    if (idx == std::string::npos) continue;
    const size_t after = idx + prefix.size();
    if (after >= pred.size()) return false;  // the prediction ends with the prefix
    // pred[idx + len(prefix) + 1:]: skip one character (code point).
    const std::string_view rest =
        std::string_view(pred).substr(after + utf8_sequence_length(static_cast<unsigned char>(pred[after])));
    for (const auto& s : label) {
      if (rest.substr(0, s.size()) == s) return true;
    }
    return false;
  }
  for (const std::string& word : py_split(pred)) {
    if (kLetters.find(word) != std::string_view::npos) return contains(label, word);
  }
  return false;
}

double infinitebench_choice_accuracy(const std::vector<std::string>& predictions,
                                     const std::vector<InfiniteBenchChoiceSample>& samples) {
  if (predictions.size() != samples.size() || samples.empty()) {
    throw std::invalid_argument("infinitebench_choice_accuracy: need as many predictions (" +
                                std::to_string(predictions.size()) + ") as samples (" +
                                std::to_string(samples.size()) + "), at least 1");
  }
  double total = 0.0;
  for (size_t i = 0; i < samples.size(); ++i)
    total += infinitebench_choice_correct(predictions[i], samples[i].label);
  return total / static_cast<double>(samples.size());
}

}  // namespace sparge::eval
