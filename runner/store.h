// The result store of a run directory: atomic file writes, the sample cache and the per-sample JSONL log.
//
//   <output>/cache/<key>.json    one finished (run point, method, sample, seed): its metrics; key = 16 hex
//   digits of
//                                FNV-1a 64 over the canonical task, model, method config, sample index, seed,
//                                metric versions and spec version, so a changed configuration never reuses an
//                                entry
//   <output>/samples.jsonl       one line per finished sample, appended (and flushed) as it finishes
//   <output>/results.json, results.md, results.csv   written at the end (and on interruption, marked partial)
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <optional>
#include <string>

namespace sparge::runner {

// Writes `content` to `path` through a temporary file and a rename: a reader never sees a partial file.
void atomic_write(const std::string& path, const std::string& content);

class SampleStore {
 public:
  explicit SampleStore(const std::string& output_dir);
  std::optional<nlohmann::json> lookup(const std::string& key) const;
  void put(const std::string& key, const nlohmann::json& record);  // cache entry + JSONL line
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::ofstream log_;
};

}  // namespace sparge::runner
