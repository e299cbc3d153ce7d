// LongBench v1: reader, task table (prompts and max_new_tokens from config/dataset2prompt.json and
// dataset2maxlen.json, metrics from eval.py), prompt filling, truncation and score aggregation. The scorers
// are in longbench_metrics.cpp.
#include <array>
#include <stdexcept>

#include "jsonl.h"
#include "sparge/eval/longbench.h"
#include "sparge/eval/text.h"

namespace sparge::eval {

namespace {

using M = LongBenchMetric;

// hotpotqa, 2wikimqa and musique share one prompt.
constexpr std::string_view kMultiDocQa =
    "Answer the question based on the given passages. Only give me the answer and do not output any other "
    "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given "
    "passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:";

// {name, prompt, max_new_tokens, metric, first_line_only, chat_template, stop_at_newline}
constexpr std::array<LongBenchTask, 16> kTasks{{
    {"narrativeqa",
     "You are given a story, which can be either a novel or a movie script, and a question. Answer the "
     "question as concisely as you can, using a single phrase if possible. Do not provide any "
     "explanation.\n\nStory: {context}\n\nNow, answer the question based on the story as concisely as you "
     "can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: "
     "{input}\n\nAnswer:",
     128, M::kQaF1, false, true, false},
    {"qasper",
     "You are given a scientific article and a question. Answer the question as concisely as you can, "
     "using a single phrase or sentence if possible. If the question cannot be answered based on the "
     "information in the article, write \"unanswerable\". If the question is a yes/no question, answer "
     "\"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nArticle: {context}\n\n "
     "Answer the question based on the above article as concisely as you can, using a single phrase or "
     "sentence if possible. If the question cannot be answered based on the information in the article, "
     "write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or "
     "\"unanswerable\". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
     128, M::kQaF1, false, true, false},
    {"multifieldqa_en",
     "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based "
     "on the above text, only give me the answer and do not output any other words.\n\nQuestion: "
     "{input}\nAnswer:",
     64, M::kQaF1, false, true, false},
    {"hotpotqa", kMultiDocQa, 32, M::kQaF1, false, true, false},
    {"2wikimqa", kMultiDocQa, 32, M::kQaF1, false, true, false},
    {"musique", kMultiDocQa, 32, M::kQaF1, false, true, false},
    {"gov_report",
     "You are given a report by a government agency. Write a one-page summary of the "
     "report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",
     512, M::kRougeL, false, true, false},
    {"qmsum",
     "You are given a meeting transcript and a query containing a question or instruction. Answer the "
     "query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the "
     "above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:",
     512, M::kRougeL, false, true, false},
    {"multi_news",
     "You are given several news passages. Write a one-page summary of all news. "
     "\n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:",
     512, M::kRougeL, false, true, false},
    {"trec",
     "Please determine the type of the question below. Here are some examples of "
     "questions.\n\n{context}\n{input}",
     64, M::kClassification, true, false, false},
    {"triviaqa",
     "Answer the question based on the given passage. Only give me the answer and do not output any other "
     "words. The following are some examples.\n\n{context}\n\n{input}",
     32, M::kQaF1, true, false, false},
    {"samsum",
     "Summarize the dialogue into a few short sentences. The following are some "
     "examples.\n\n{context}\n\n{input}",
     128, M::kRougeL, true, false, true},
    {"passage_count",
     "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please "
     "carefully read these paragraphs and determine how many unique paragraphs there are after removing "
     "duplicates. In other words, how many non-repeating paragraphs are there in "
     "total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing duplicates. "
     "The output format should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer "
     "is: ",
     32, M::kCount, false, true, false},
    {"passage_retrieval_en",
     "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the "
     "abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the "
     "number of the paragraph that the abstract is from. The answer format must be like \"Paragraph 1\", "
     "\"Paragraph 2\", etc.\n\nThe answer is: ",
     32, M::kRetrieval, false, true, false},
    {"lcc", "Please complete the code given below. \n{context}Next line of code:\n", 64, M::kCodeSim, false,
     false, false},
    {"repobench-p", "Please complete the code given below. \n{context}{input}Next line of code:\n", 64,
     M::kCodeSim, false, false, false},
}};

}  // namespace

std::string_view longbench_metric_name(LongBenchMetric m) {
  switch (m) {
    case M::kQaF1:
      return "qa_f1";
    case M::kRougeL:
      return "rouge_l";
    case M::kClassification:
      return "classification";
    case M::kRetrieval:
      return "retrieval";
    case M::kCount:
      return "count";
    case M::kCodeSim:
      return "code_sim";
  }
  return "?";
}

std::span<const LongBenchTask> longbench_tasks() {
  return kTasks;
}

const LongBenchTask& longbench_task(std::string_view dataset) {
  for (const auto& t : kTasks) {
    if (t.name == dataset) return t;
  }
  std::string known;
  for (const auto& t : kTasks) known += (known.empty() ? "" : ", ") + std::string(t.name);
  throw std::invalid_argument("LongBench: unknown dataset '" + std::string(dataset) +
                              "' (English datasets: " + known + ")");
}

std::vector<LongBenchSample> read_longbench_jsonl(const std::string& path) {
  std::vector<LongBenchSample> out;
  detail::for_each_jsonl(path, [&out](const nlohmann::json& obj, const detail::JsonlPlace& at) {
    LongBenchSample s;
    s.input = detail::get_string(obj, "input", at);
    s.context = detail::get_string(obj, "context", at);
    s.answers = detail::get_string_list(obj, "answers", at);
    s.length = detail::get_int(obj, "length", at);
    s.dataset = detail::get_string(obj, "dataset", at);
    s.language = detail::get_string(obj, "language", at);
    s.all_classes = detail::get_string_list(obj, "all_classes", at, /*null_ok=*/true);
    s.id = detail::get_string(obj, "_id", at);
    if (s.answers.empty()) detail::field_error(at, "answers", "is an empty list");
    out.push_back(std::move(s));
  });
  return out;
}

std::string longbench_prompt(const LongBenchTask& task, const LongBenchSample& sample) {
  std::string out;
  const std::string_view t = task.prompt;
  size_t pos = 0;
  while (pos < t.size()) {
    if (t.compare(pos, 9, "{context}") == 0) {
      out += sample.context;
      pos += 9;
    } else if (t.compare(pos, 7, "{input}") == 0) {
      out += sample.input;
      pos += 7;
    } else {
      out += t[pos++];
    }
  }
  return out;
}

std::string longbench_truncate_prompt(const std::string& prompt, int64_t max_length, const EncodeFn& encode,
                                      const DecodeFn& decode) {
  if (max_length < 2) {
    throw std::invalid_argument("longbench_truncate_prompt: max_length must be >= 2, got " +
                                std::to_string(max_length));
  }
  if (!encode || !decode)
    throw std::invalid_argument("longbench_truncate_prompt: encode and decode are required");
  const std::vector<int32_t> ids = encode(prompt);
  if (static_cast<int64_t>(ids.size()) <= max_length) return prompt;
  const auto half = static_cast<std::ptrdiff_t>(max_length / 2);
  return decode(std::vector<int32_t>(ids.begin(), ids.begin() + half)) +
         decode(std::vector<int32_t>(ids.end() - half, ids.end()));
}

double longbench_sample_score(const LongBenchTask& task, std::string_view prediction,
                              const std::vector<std::string>& answers,
                              const std::vector<std::string>& all_classes, EditSimVariant code_sim) {
  const std::string pred = task.first_line_only ? first_line(prediction) : std::string(prediction);
  double score = 0.0;
  for (const auto& answer : answers) {
    double s = 0.0;
    switch (task.metric) {
      case M::kQaF1:
        s = qa_f1_score(pred, answer);
        break;
      case M::kRougeL:
        s = rouge_l_f(pred, answer);
        break;
      case M::kClassification:
        s = classification_score(pred, answer, all_classes);
        break;
      case M::kRetrieval:
        s = retrieval_score(pred, answer);
        break;
      case M::kCount:
        s = count_score(pred, answer);
        break;
      case M::kCodeSim:
        s = code_sim_score(pred, answer, code_sim);
        break;
    }
    score = std::max(score, s);
  }
  return score;
}

double longbench_dataset_score(std::span<const double> sample_scores) {
  if (sample_scores.empty()) throw std::invalid_argument("longbench_dataset_score: no samples");
  double total = 0.0;
  for (double s : sample_scores) total += s;
  return py_round2(100.0 * total / static_cast<double>(sample_scores.size()));
}

double longbench_average(const std::map<std::string, double>& dataset_scores) {
  if (dataset_scores.empty()) throw std::invalid_argument("longbench_average: no dataset scores");
  double total = 0.0;
  for (const auto& [name, score] : dataset_scores) total += score;
  return total / static_cast<double>(dataset_scores.size());
}

}  // namespace sparge::eval
