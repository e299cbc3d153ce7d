// `sparge`: the experiment runner's command line.
//
//   sparge run <spec.yaml> [--set path=value ...] [--limit N] [--device cpu|cuda|auto] [--output DIR]
//   [--no-progress] sparge validate <spec.yaml> [--set ...]     check a spec (file:line:col errors) without
//   running it sparge list                                 registered methods, tasks, metrics and the
//   experiments/ specs sparge report <results dir>                 re-render results.md / results.csv from
//   results.json
//   sparge capture --weights W [--corpus F] [--seq N] [--offset N] --layers 0,15,29 --out F.safetensors
//                                              Q/K/V of a language model's prefill at those layers, for the
//                                              attention task's `captured` inputs (q.i/k.i/v.i: layer i of
//                                              the list)
//   sparge tune <tune-spec.yaml> [--set ...] [--device D] [--output FILE] [--restart] [--no-progress]
//                                              per-layer, per-head thresholds under the spec's l1/l2 into a
//                                              parameter file that run specs load (method `tuned: FILE`);
//                                              resumes per layer
// Exit status: 0 done, 1 failure while running, 2 bad spec or arguments, 130 interrupted (rerun to resume).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "engine.h"
#include "lm_task.h"
#include "methods.h"
#include "metrics.h"
#include "posix_fs.h"
#include "sparge/models/safetensors.h"
#include "spec.h"
#include "tune_task.h"

namespace {

int list_everything() {
  std::printf("methods:\n");
  for (const auto& m : sparge::runner::registered_methods())
    std::printf("  %-16s %s\n", m.type.c_str(), m.summary.c_str());
  std::printf(
      "tasks:\n  %-16s %s\n", "attention",
      "attention-level: inputs structured_llm | structured_visual | random | captured (safetensors) | model");
  std::printf("  %-16s %s\n", "perplexity", "token/word/byte perplexity over sliding windows of a text");
  std::printf("  %-16s %s\n", "niah", "needle in a haystack (exact match), length x depth grid");
  std::printf("  %-16s %s\n", "longbench", "LongBench v1 English datasets (user-given data_dir)");
  std::printf("  %-16s %s\n", "infinitebench", "InfiniteBench En.MC (user-given longbook_choice_eng.jsonl)");
  std::printf("metrics:\n");
  for (const auto& m : sparge::runner::registered_metrics())
    std::printf("  %-16s %s (%s is better)\n", m.name.c_str(), m.summary.c_str(),
                m.higher_is_better ? "higher" : "lower");
  std::printf("experiments:\n");
  auto names = sparge::runner::posix::list_dir("experiments", ".yaml");
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    const std::string p = "experiments/" + n;
    std::string line = "(invalid spec)";
    try {
      const auto s = sparge::runner::load_spec(p);
      const auto md = s.root["metadata"];
      line = md["description"] ? md["description"].as<std::string>() : md["name"].as<std::string>();
      if (md["reproduces"]) line += " [" + md["reproduces"].as<std::string>() + "]";
    } catch (const std::exception& e) {
      line = std::string("(invalid: ") + e.what() + ")";
    }
    std::printf("  %-32s %s\n", p.c_str(), line.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sparge: SpargeAttn experiment runner (YAML specs -> results.json, Markdown, CSV)"};
  app.require_subcommand(1);
  sparge::runner::RunOptions opt;
  std::string spec_path, report_dir;
  bool no_progress = false;
  int64_t limit = 0;

  auto* run = app.add_subcommand("run", "run an experiment spec (resumes a killed run)");
  run->add_option("spec", spec_path, "experiment YAML")->required()->check(CLI::ExistingFile);
  run->add_option("--set", opt.overrides, "override a spec value: path.to.key=value (repeatable)");
  run->add_option("--limit", limit, "at most N samples per sweep point")->check(CLI::PositiveNumber);
  run->add_option("--device", opt.device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  run->add_option("--output", opt.output, "results directory (default: the spec's output)");
  run->add_flag("--no-progress", no_progress, "no progress bar");

  auto* validate = app.add_subcommand("validate", "check a spec without running it");
  validate->add_option("spec", spec_path, "experiment YAML")->required()->check(CLI::ExistingFile);
  validate->add_option("--set", opt.overrides, "override a spec value: path.to.key=value (repeatable)");

  app.add_subcommand("list", "registered methods, tasks, metrics and experiments");
  auto* report = app.add_subcommand("report", "re-render the tables of a results directory");
  report->add_option("dir", report_dir, "results directory")->required()->check(CLI::ExistingDirectory);

  std::string weights, corpus = "data/corpus/jargon.txt", out_file;
  int64_t seq = 2048, offset = 0;
  std::vector<int64_t> layers;
  auto* capture = app.add_subcommand("capture", "save a language model's per-layer Q/K/V to safetensors");
  capture->add_option("--weights", weights, "GGUF file or Hugging Face directory")->required();
  capture->add_option("--corpus", corpus, "text file whose first tokens are prefilled");
  capture->add_option("--seq", seq, "tokens to prefill")->check(CLI::PositiveNumber);
  capture->add_option("--offset", offset, "first token of the corpus")->check(CLI::NonNegativeNumber);
  capture->add_option("--layers", layers, "layers to capture")->delimiter(',')->required();
  capture->add_option("--out", out_file, "safetensors file to write")->required();

  sparge::runner::TuneOptions topt;
  auto* tune =
      app.add_subcommand("tune", "tune per-layer, per-head thresholds into a parameter file (resumable)");
  tune->add_option("spec", spec_path, "tune spec YAML (a tune: section)")
      ->required()
      ->check(CLI::ExistingFile);
  tune->add_option("--set", topt.overrides, "override a spec value: path.to.key=value (repeatable)");
  tune->add_option("--device", topt.device, "cpu, cuda or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  tune->add_option("--output", topt.output, "parameter file (default: the spec's output)");
  tune->add_flag("--restart", topt.restart, "overwrite an existing file tuned with other settings");
  tune->add_flag("--no-progress", no_progress, "no per-layer lines");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*run) {
      if (limit > 0) opt.limit = limit;
      opt.progress = !no_progress;
      const auto s = sparge::runner::run_spec(spec_path, opt);
      std::printf("%s: %lld units (%lld computed, %lld from cache) -> %s/results.md\n",
                  s.interrupted ? "interrupted" : "done", static_cast<long long>(s.total),
                  static_cast<long long>(s.computed), static_cast<long long>(s.cached), s.output_dir.c_str());
      if (s.interrupted) return 130;
      std::ifstream md(s.output_dir + "/results.md");
      std::cout << md.rdbuf();
      return 0;
    }
    if (*tune) {
      topt.progress = !no_progress;
      const auto s = sparge::runner::tune_spec(spec_path, topt);
      std::printf(
          "%s: %lld layers (%lld tuned now in %.1f s of tuning, %.1f s in all; %lld from the file) on %s -> "
          "%s\n",
          s.interrupted ? "interrupted" : "done", static_cast<long long>(s.layers),
          static_cast<long long>(s.tuned), s.tune_seconds, s.seconds, static_cast<long long>(s.resumed),
          s.backend.empty() ? "-" : s.backend.c_str(), s.output.c_str());
      return s.interrupted ? 130 : 0;
    }
    if (*validate) {
      auto s = sparge::runner::load_spec(spec_path);
      for (const auto& o : opt.overrides) sparge::runner::apply_override(s, o);
      const auto points = sparge::runner::expand_sweeps(s);
      std::printf("%s: valid (%zu sweep point%s)\n", spec_path.c_str(), points.size(),
                  points.size() == 1 ? "" : "s");
      return 0;
    }
    if (*capture) {
      const auto got = sparge::runner::capture_model_qkv(weights, corpus, seq, offset, layers);
      std::map<std::string, at::Tensor> tensors;
      for (size_t i = 0; i < got.size(); ++i) {
        tensors["q." + std::to_string(i)] = got[i].q;
        tensors["k." + std::to_string(i)] = got[i].k;
        tensors["v." + std::to_string(i)] = got[i].v;
      }
      std::string layer_list;
      for (auto l : layers) layer_list += (layer_list.empty() ? "" : ",") + std::to_string(l);
      sparge::models::save_safetensors(out_file, tensors,
                                       {{"weights", weights},
                                        {"corpus", corpus},
                                        {"seq", std::to_string(seq)},
                                        {"offset", std::to_string(offset)},
                                        {"layers", layer_list}});
      std::printf("%s: q/k/v.0..%zu of layers %s (%lld tokens, causal)\n", out_file.c_str(), got.size() - 1,
                  layer_list.c_str(), static_cast<long long>(seq));
      return 0;
    }
    if (*report) {
      sparge::runner::render_report(report_dir);
      std::ifstream md(report_dir + "/results.md");
      std::cout << md.rdbuf();
      return 0;
    }
    return list_everything();
  } catch (const sparge::runner::SpecError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
