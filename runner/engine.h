// Runs an experiment spec: sweep points x methods x samples x seeds, each (point, method, sample, seed)
// cached by a hash of everything that determines it, so a killed run resumes where it stopped; writes the
// results files.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sparge::runner {

struct RunOptions {
  std::vector<std::string> overrides;  // "path.to.key=value"
  std::optional<int64_t> limit;        // at most this many samples per point
  std::string device;                  // "" (the spec's), cpu, cuda or auto
  std::string output;                  // "" (the spec's output, else results/<metadata.name>)
  bool progress = true;                // progress bar on stderr
};

struct RunSummary {
  int64_t total = 0, computed = 0, cached = 0;
  bool interrupted = false;
  std::string output_dir;
};

// Throws SpecError (file:line:col) or std::invalid_argument on a bad spec before anything runs.
RunSummary run_spec(const std::string& path, const RunOptions& options);

// Re-renders results.md and results.csv of a run directory from its results.json.
void render_report(const std::string& output_dir);

}  // namespace sparge::runner
