// Experiment execution, caching, aggregation and the results files (see engine.h and store.h).
#include "engine.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <torch/version.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

#include "attention_task.h"
#include "common.h"
#include "lm_task.h"
#include "methods.h"
#include "metrics.h"
#include "spec.h"
#include "store.h"

namespace sparge::runner {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Progress bar on stderr with rate and ETA (redrawn at most 10 times a second).
class Progress {
 public:
  Progress(std::string name, int64_t total, bool enabled)
      : name_(std::move(name)), total_(total), on_(enabled) {}
  void step(int64_t done, bool from_cache) {
    if (!from_cache) ++computed_;
    const auto now = Clock::now();
    if (!on_ || (done < total_ && now - last_ < std::chrono::milliseconds(100))) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = computed_ > 0 ? computed_ / secs : 0.0;
    const double eta = rate > 0 ? (total_ - done) / rate : 0.0;
    const int width = 30, filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
    std::fprintf(stderr, "\r[%s] [%s%s] %lld/%lld %5.2f it/s ETA %02d:%02d ", name_.c_str(),
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_), rate,
                 static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
    if (done == total_) std::fputc('\n', stderr);
  }

 private:
  std::string name_;
  int64_t total_, computed_ = 0;
  bool on_;
  Clock::time_point start_ = Clock::now(), last_{};
};

struct MetricSpec {
  std::string name, aggregation;
  bool higher_is_better;
};

std::string fmt(double x) {
  if (std::isnan(x)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, std::fabs(x) >= 100 ? "%.1f" : "%.4f", x);
  return buf;
}

void write_tables(const json& results, const std::string& dir) {
  // Rows: (point, method); columns: the spec's metrics in order, with their direction.
  const auto& metrics = results.at("metrics");
  std::ostringstream md, csv;
  md << "# " << results.at("config").value("name", std::string("results"));
  if (results.contains("reproduces") && !results.at("reproduces").get<std::string>().empty())
    md << " (reproduces " << results.at("reproduces").get<std::string>() << ")";
  md << "\n\n";
  if (results.value("partial", false))
    md << "**Partial: the run was interrupted; rerun the same command to resume.**\n\n";
  md << "| point | method |";
  csv << "point,method";
  for (const auto& m : metrics) {
    md << ' ' << m.at("name").get<std::string>()
       << (m.at("higher_is_better").get<bool>() ? " (higher better)" : " (lower better)") << " |";
    csv << ',' << m.at("name").get<std::string>() << ',' << m.at("name").get<std::string>() << "_stderr";
  }
  md << " n |\n|---|---|";
  csv << ",n\n";
  for (size_t i = 0; i < metrics.size(); ++i) md << "---|";
  md << "---|\n";
  for (const auto& [point, by_method] : results.at("results").items())
    for (const auto& [method, values] : by_method.items()) {
      md << "| " << point << " | " << method << " |";
      csv << point << ',' << method;
      for (const auto& m : metrics) {
        const auto name = m.at("name").get<std::string>();
        const double v =
            values.contains(name) && !values.at(name).is_null() ? values.at(name).get<double>() : NAN;
        const auto se_key = name + "_stderr";
        const double se =
            values.contains(se_key) && !values.at(se_key).is_null() ? values.at(se_key).get<double>() : NAN;
        md << ' ' << fmt(v) << (std::isnan(se) ? "" : " ± " + fmt(se)) << " |";
        csv << ',' << (std::isnan(v) ? "" : std::to_string(v)) << ','
            << (std::isnan(se) ? "" : std::to_string(se));
      }
      md << ' ' << values.value("n", 0) << " |\n";
      csv << ',' << values.value("n", 0) << '\n';
    }
  md << "\nProvenance: git " << results.value("git_hash", std::string("?")) << ", "
     << results.value("date", std::string("")) << ", " << results.at("environment").dump() << ".\n";
  atomic_write(dir + "/results.md", md.str());
  atomic_write(dir + "/results.csv", csv.str());
}

// The plots (scripts/plot_results.py, matplotlib from Debian); a missing plotter is a warning, not a failure.
void plot(const std::string& dir) {
  const std::string script = std::string(SPARGE_SOURCE_DIR) + "/scripts/plot_results.py";
  const std::string cmd = "/usr/bin/python3 '" + script + "' '" + dir + "' > /dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0)
    std::fprintf(stderr,
                 "warning: no plots for %s (needs /usr/bin/python3 with matplotlib: scripts/setup.sh)\n",
                 dir.c_str());
}

// Tuned parameters belong to one model: refuse a file tuned for other weights than the spec's.
void check_tuned_model(const std::vector<std::pair<std::string, std::unique_ptr<AttentionMethod>>>& methods,
                       const std::string& weights_spec) {
  std::string hash;
  for (const auto& [id, m] : methods) {
    const auto* t = m->tuned();
    if (t == nullptr || !t->model.contains("hash")) continue;
    const auto weights = resolve_weights_path(weights_spec);
    if (hash.empty()) hash = model_hash(weights);
    if (t->model["hash"] != hash)
      throw std::invalid_argument("method `" + id + "`: its tuned parameters are for model " +
                                  t->model.value("id", std::string("?")) + " (" +
                                  t->model["hash"].get<std::string>() + "), the spec's model " + weights +
                                  " hashes to " + hash + " (tune it with `sparge tune`)");
  }
}

}  // namespace

RunSummary run_spec(const std::string& path, const RunOptions& options) {
  clear_stop();
  auto spec = load_spec(path);
  for (const auto& o : options.overrides) apply_override(spec, o);
  if (spec.root["tune"])
    throw std::invalid_argument(path + ": a tune spec (tune: section); run it with `sparge tune`");
  const auto points = expand_sweeps(spec);
  const YAML::Node& root = spec.root;
  const auto name = root["metadata"]["name"].as<std::string>();
  const int spec_version = root["metadata"]["version"].as<int>();
  const auto device =
      resolve_device(!options.device.empty() ? options.device
                                             : (root["device"] ? root["device"].as<std::string>() : "auto"));
  RunSummary summary;
  summary.output_dir = !options.output.empty() ? options.output
                       : root["output"]        ? root["output"].as<std::string>()
                                               : "results/" + name;
  std::vector<int64_t> seeds = {0};
  if (root["seeds"]) seeds = root["seeds"].as<std::vector<int64_t>>();
  std::optional<int64_t> limit = options.limit;
  if (!limit && root["limit"]) limit = root["limit"].as<int64_t>();
  // Attention tasks: per unit, `warmup` untimed calls, then `repeats` timed calls (time_ms: their median; the
  // other metrics: the last call's).
  int64_t warmup = 0, repeats = 1;
  if (const auto t = root["timing"]) {
    if (t["warmup"]) warmup = t["warmup"].as<int64_t>();
    if (t["repeats"]) repeats = t["repeats"].as<int64_t>();
  }

  // Build everything first: a bad method, metric or task parameter fails before any work.
  struct Point {
    std::string label;
    YAML::Node spec;
    std::unique_ptr<AttentionTask> task;
    std::unique_ptr<LmTask> lm;  // language-model tasks instead of `task`
    std::vector<std::pair<std::string, std::unique_ptr<AttentionMethod>>> methods;
    std::map<std::string, std::set<int64_t>> dense_layers;  // per method (LM tasks)
    std::vector<MetricSpec> metrics;
    int64_t samples = 1;
  };
  // tasks: {id: task, ...} runs every task at every sweep point; the point label starts with the task id.
  std::vector<RunPoint> task_points;
  for (const auto& rp : points) {
    if (!rp.spec["tasks"]) {
      task_points.push_back(rp);
      continue;
    }
    for (const auto& kv : rp.spec["tasks"]) {
      RunPoint tp;
      tp.spec = YAML::Clone(rp.spec);
      tp.spec.remove("tasks");
      tp.spec["task"] = YAML::Clone(kv.second);
      tp.label = kv.first.as<std::string>() + (rp.label.empty() ? "" : "," + rp.label);
      task_points.push_back(tp);
    }
  }
  const bool multi_task = static_cast<bool>(root["tasks"]);
  std::vector<MetricSpec> all_metrics;  // the spec's list: the results' columns
  std::vector<Point> work;
  for (const auto& rp : task_points) {
    Point pt;
    pt.label = rp.label.empty() ? "default" : rp.label;
    pt.spec = rp.spec;
    const auto task = rp.spec["task"];
    const auto model = rp.spec["model"];
    const auto dtype = parse_dtype(model && model["dtype"] ? model["dtype"].as<std::string>() : "bfloat16");
    const auto task_name = task["name"].as<std::string>();
    const bool lm = is_lm_task(task_name);
    if (!lm && task_name != "attention")
      throw std::invalid_argument("task.name: unknown task `" + task_name +
                                  "` (expected attention, perplexity, niah, longbench or infinitebench)");
    // Metrics first: they are the cheapest check and a language-model task loads a model.
    for (const auto& m : rp.spec["metrics"]) {
      const MetricInfo info =
          metric_info(m["name"].as<std::string>());  // a copy: GCC 13 -Wdangling-reference
      const MetricSpec ms{info.name, m["aggregation"] ? m["aggregation"].as<std::string>() : "mean",
                          m["higher_is_better"] ? m["higher_is_better"].as<bool>() : info.higher_is_better};
      if (work.empty()) all_metrics.push_back(ms);
      if (!metric_applies(task_name, info.name)) {
        // With several tasks, each computes the metrics that apply to it (the others stay empty in its rows).
        if (multi_task) continue;
        throw std::invalid_argument("metric `" + info.name + "` does not apply to task `" + task_name + "`");
      }
      pt.metrics.push_back(ms);
    }
    for (const auto& kv : rp.spec["methods"]) {
      const auto id = kv.first.as<std::string>();
      std::set<std::string> skip = {"type"};
      if (lm && kv.second["dense_layers"]) {
        skip.insert("dense_layers");
        for (const auto& l : kv.second["dense_layers"]) pt.dense_layers[id].insert(l.as<int64_t>());
      }
      pt.methods.emplace_back(
          id, make_method(id, kv.second["type"].as<std::string>(), to_params(kv.second, skip)));
    }
    if (lm) {
      if (seeds.size() != 1)
        throw std::invalid_argument(
            "seeds: language-model tasks decode greedily; give one seed (it draws the NIAH "
            "needles), got " +
            std::to_string(seeds.size()));
      LmModelSpec ms;
      ms.family = model && model["family"] ? model["family"].as<std::string>() : "llama";
      if (ms.family == "none") ms.family = "llama";
      ms.weights = model && model["weights"] ? model["weights"].as<std::string>() : "";
      ms.dtype = dtype;
      check_tuned_model(pt.methods, ms.weights);
      pt.lm = std::make_unique<LmTask>(task_name, to_params(task["params"], {}), ms, device,
                                       static_cast<uint64_t>(seeds[0]));
      pt.samples = pt.lm->num_samples();
    } else {
      if (!task["inputs"])
        throw std::invalid_argument(
            "task.inputs: the attention task needs inputs (structured_llm, "
            "structured_visual, random or captured)");
      pt.task = std::make_unique<AttentionTask>(task["inputs"].as<std::string>(),
                                                to_params(task["params"], {}), dtype, device);
      pt.samples = task["samples"] ? task["samples"].as<int64_t>() : 1;
    }
    if (limit) pt.samples = std::min(pt.samples, *limit);
    summary.total += pt.samples * static_cast<int64_t>(seeds.size() * pt.methods.size());
    work.push_back(std::move(pt));
  }

  for (const auto& m : all_metrics)
    if (std::none_of(work.begin(), work.end(), [&](const Point& p) {
          return std::any_of(p.metrics.begin(), p.metrics.end(),
                             [&](const MetricSpec& x) { return x.name == m.name; });
        }))
      throw std::invalid_argument("metric `" + m.name + "` applies to none of the spec's tasks");
  SampleStore store(summary.output_dir);
  Progress progress(name, summary.total, options.progress);
  const auto t0 = Clock::now();
  int64_t done = 0;
  std::map<std::string, std::map<std::string, std::map<std::string, std::vector<double>>>>
      values;  // point/method/metric
  std::map<std::string, std::map<std::string, std::string>> backends;
  const auto prev_handler = std::signal(SIGINT, [](int) { request_stop(); });

  // The cache key of one unit: everything that determines its result.
  const auto unit_key = [&](const Point& pt, const std::string& task_key, const std::string& id,
                            const std::string& sample, int64_t seed) {
    std::ostringstream src;
    src << task_key << "|" << id << "|" << canonical_yaml(pt.spec["methods"][id]) << "|" << sample << "|seed "
        << seed << "|spec v" << spec_version << "|device " << device.type();
    if (warmup != 0 || repeats != 1) src << "|timing " << warmup << "/" << repeats;  // default: old keys hold
    for (const auto& [mid, method] : pt.methods)  // a re-tuned file changes the results: key on its content
      if (mid == id && method->tuned() != nullptr) src << "|tuned " << method->tuned()->checksum;
    for (const auto& m : pt.metrics) src << "|" << m.name << " v" << metric_info(m.name).version;
    char key[17];
    std::snprintf(key, sizeof key, "%016llx", static_cast<unsigned long long>(fnv1a64(src.str())));
    return std::string(key);
  };
  std::map<std::string, std::map<std::string, std::vector<json>>> lm_records;  // point/method (LM tasks)
  for (auto& pt : work) {
    const std::string task_key = canonical_yaml(pt.spec["task"]) + canonical_yaml(pt.spec["model"]);
    if (pt.lm) {
      for (int64_t i = 0; i < pt.samples && !stop_requested(); ++i)
        for (auto& [id, method] : pt.methods) {
          if (stop_requested()) break;
          const std::string key = unit_key(pt, task_key, id, pt.lm->sample_id(i), seeds[0]);
          auto record = store.lookup(key);
          const bool from_cache = record.has_value();
          if (!record) {
            const auto m0 = Clock::now();
            json r = pt.lm->run(i, *method, pt.dense_layers[id]);
            r["point"] = pt.label;
            r["method"] = id;
            r["sample"] = i;
            r["seed"] = seeds[0];
            r["backend"] = method->backend();
            r["key"] = key;
            r["wall_ms"] = std::chrono::duration<double, std::milli>(Clock::now() - m0).count();
            store.put(key, r);
            record = r;
            ++summary.computed;
          } else {
            ++summary.cached;
          }
          lm_records[pt.label][id].push_back(*record);
          backends[pt.label][id] = (*record).value("backend", std::string());
          progress.step(++done, from_cache);
        }
      continue;
    }
    for (int64_t i = 0; i < pt.samples && !stop_requested(); ++i)
      for (int64_t seed : seeds) {
        if (stop_requested()) break;
        std::optional<AttentionSample> sample;
        at::Tensor ref;
        for (auto& [id, method] : pt.methods) {
          if (stop_requested()) break;
          const std::string key = unit_key(pt, task_key, id, "sample " + std::to_string(i), seed);
          auto record = store.lookup(key);
          const bool from_cache = record.has_value();
          if (!record) {
            if (!sample) {
              sample = pt.task->sample(i, static_cast<uint64_t>(seed));
              // The float64 dense reference only when an accuracy metric needs it (it is quadratic in
              // memory).
              const bool needs_ref =
                  std::any_of(pt.metrics.begin(), pt.metrics.end(),
                              [](const MetricSpec& m) { return metric_needs_reference(m.name); });
              if (needs_ref) ref = dense_attention_f64(sample->q, sample->k, sample->v, sample->causal).out;
            }
            const auto& s = *sample;
            method->prepare(s.q, s.k, s.v, s.causal, s.layer);  // harness work: untimed
            for (int64_t w = 0; w < warmup; ++w) method->run(s.q, s.k, s.v, s.causal, s.layer);
            std::vector<double> times;
            AttentionResult res;
            for (int64_t r = 0; r < repeats; ++r) {
              if (device.is_cuda()) torch::cuda::synchronize();
              const auto m0 = Clock::now();
              res = method->run(s.q, s.k, s.v, s.causal, s.layer);
              if (device.is_cuda()) torch::cuda::synchronize();
              times.push_back(std::chrono::duration<double, std::milli>(Clock::now() - m0).count());
            }
            std::sort(times.begin(), times.end());
            const size_t mid = times.size() / 2;
            MetricInputs in;
            in.out = res.out;
            in.ref = ref;
            in.q = sample->q;
            in.k = sample->k;
            in.stats = res.stats;
            in.causal = sample->causal;
            in.time_ms = times.size() % 2 ? times[mid] : 0.5 * (times[mid - 1] + times[mid]);
            if (res.stats.block_q > 0) {
              in.block_q = res.stats.block_q;
              in.block_k = res.stats.block_k;
            }
            json metrics;
            for (const auto& m : pt.metrics) metrics[m.name] = compute_metric(m.name, in);
            record = json{{"point", pt.label}, {"method", id},       {"sample", i},
                          {"seed", seed},      {"metrics", metrics}, {"backend", method->backend()},
                          {"key", key}};
            store.put(key, *record);
            ++summary.computed;
          } else {
            ++summary.cached;
          }
          for (const auto& [mname, v] : (*record)["metrics"].items())
            values[pt.label][id][mname].push_back(v.is_null() ? NAN : v.get<double>());
          backends[pt.label][id] = (*record).value("backend", std::string());
          progress.step(++done, from_cache);
        }
      }
  }
  std::signal(SIGINT, prev_handler);
  summary.interrupted = stop_requested();

  json results;
  results["results"] = json::object();
  for (const auto& pt : work)
    for (const auto& [id, method] : pt.methods) {
      json entry;
      int64_t n = 0;
      if (pt.lm) {
        const auto& recs = lm_records[pt.label][id];
        for (const auto& m : all_metrics) entry[m.name] = nullptr;
        for (const auto& m : pt.metrics) {
          const auto [v, se] = pt.lm->reduce(m.name, m.aggregation, recs);
          entry[m.name] = std::isnan(v) ? json(nullptr) : json(v);
          entry[m.name + "_stderr"] = std::isnan(se) ? json(nullptr) : json(se);
        }
        entry["n"] = static_cast<int64_t>(recs.size());
        entry["backend"] = backends[pt.label][id];
        results["results"][pt.label][id] = entry;
        pt.lm->write_artifacts(summary.output_dir, work.size() > 1 ? pt.label + "_" + id : id, recs);
        continue;
      }
      for (const auto& m : pt.metrics) {
        const auto& v = values[pt.label][id][m.name];
        n = static_cast<int64_t>(v.size());
        entry[m.name] = v.empty() ? json(nullptr) : json(aggregate(v, m.aggregation));
        const double se = m.aggregation == "mean" ? stderr_of_mean(v) : NAN;
        entry[m.name + "_stderr"] = std::isnan(se) ? json(nullptr) : json(se);
      }
      entry["n"] = n;
      entry["backend"] = backends[pt.label][id];
      results["results"][pt.label][id] = entry;
    }
  results["metrics"] = json::array();
  for (const auto& m : all_metrics)
    results["metrics"].push_back({{"name", m.name},
                                  {"aggregation", m.aggregation},
                                  {"higher_is_better", m.higher_is_better},
                                  {"version", metric_info(m.name).version}});
  results["config"] = {{"name", name},
                       {"spec", path},
                       {"resolved", canonical_yaml(root)},
                       {"overrides", options.overrides},
                       {"seeds", seeds},
                       {"limit", limit ? json(*limit) : json(nullptr)},
                       {"device", device.str()}};
  results["reproduces"] =
      root["metadata"]["reproduces"] ? root["metadata"]["reproduces"].as<std::string>() : "";
  results["versions"] = {{"spec", spec_version}};
  results["n-samples"] = {
      {"units", summary.total}, {"computed", summary.computed}, {"cached", summary.cached}};
  results["git_hash"] = git_hash();
  results["date"] = utc_now();
  results["environment"] = environment(device);
  results["wall_time_s"] = std::chrono::duration<double>(Clock::now() - t0).count();
  results["partial"] = summary.interrupted;
  atomic_write(summary.output_dir + "/results.json", results.dump(1));
  write_tables(results, summary.output_dir);
  plot(summary.output_dir);
  return summary;
}

void render_report(const std::string& output_dir) {
  std::ifstream f(output_dir + "/results.json");
  if (!f) throw std::invalid_argument("report: no results.json in " + output_dir);
  write_tables(json::parse(f), output_dir);
}

}  // namespace sparge::runner
