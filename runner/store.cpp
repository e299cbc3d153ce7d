// Atomic writes, the sample cache and the JSONL log (see store.h).
#include "store.h"

#include "posix_fs.h"

#include <unistd.h>

#include <cstdio>
#include <stdexcept>

namespace sparge::runner {

void atomic_write(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write " + tmp);
    f << content;
    f.flush();
    if (!f) throw std::runtime_error("write failed: " + tmp);
  }
  posix::rename_file(tmp, path);
}

SampleStore::SampleStore(const std::string& output_dir) : dir_(output_dir) {
  posix::make_dirs(dir_ + "/cache");
  log_.open(dir_ + "/samples.jsonl", std::ios::app);
  if (!log_) throw std::runtime_error("cannot open " + dir_ + "/samples.jsonl");
}

std::optional<nlohmann::json> SampleStore::lookup(const std::string& key) const {
  std::ifstream f(dir_ + "/cache/" + key + ".json");
  if (!f) return std::nullopt;
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // unreadable entry (cannot happen with atomic writes): recompute
  }
}

void SampleStore::put(const std::string& key, const nlohmann::json& record) {
  atomic_write(dir_ + "/cache/" + key + ".json", record.dump(1));
  log_ << record.dump() << '\n';
  log_.flush();
}

}  // namespace sparge::runner
