// Helpers shared by `sparge run` and `sparge tune` (see common.h).
#include "common.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <stdexcept>

namespace sparge::runner {
namespace {

using json = nlohmann::json;

std::atomic<bool> g_stop{false};

}  // namespace

void request_stop() {
  g_stop = true;
}
bool stop_requested() {
  return g_stop.load();
}
void clear_stop() {
  g_stop = false;
}

std::string run_command(const char* cmd) {
  std::string out;
  if (FILE* p = ::popen(cmd, "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    ::pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

json environment(const at::Device& device) {
  json env;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) {
      env["cpu"] = line.substr(line.find(':') + 2);
      break;
    }
  env["torch"] = TORCH_VERSION;
  env["device"] = device.str();
  if (device.is_cuda()) {
    env["gpu"] = run_command("nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1");
    env["driver"] =
        run_command("nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1");
  }
  return env;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

Params to_params(const YAML::Node& map, const std::set<std::string>& skip) {
  Params p;
  if (!map || !map.IsMap()) return p;
  for (const auto& kv : map) {
    const auto key = kv.first.as<std::string>();
    if (skip.count(key)) continue;
    ParamValue v;
    if (kv.second.IsSequence()) {
      v.is_list = true;
      for (const auto& item : kv.second) v.items.push_back(item.as<std::string>());
    } else {
      v.items.push_back(kv.second.as<std::string>());
    }
    p[key] = v;
  }
  return p;
}

at::ScalarType parse_dtype(const std::string& s) {
  if (s == "float32") return at::kFloat;
  if (s == "float16") return at::kHalf;
  if (s == "bfloat16") return at::kBFloat16;
  if (s == "float64") return at::kDouble;
  throw std::invalid_argument("model.dtype: expected float32, float16, bfloat16 or float64, got " + s);
}

at::Device resolve_device(const std::string& want) {
  if (want == "cuda") {
    if (!torch::cuda::is_available())
      throw std::invalid_argument("device cuda: no CUDA device on this machine (use --device cpu or auto)");
    return at::Device(at::kCUDA, 0);
  }
  if (want == "cpu") return at::Device(at::kCPU);
  return torch::cuda::is_available() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
}

std::string git_hash() {
  // SPARGE_GIT_HASH (set by whoever copied the tree, e.g. to a GPU machine whose copy carries no or a stale
  // .git) wins over the tree's own HEAD, as in scripts/provenance.sh.
  const char* given = std::getenv("SPARGE_GIT_HASH");
  return given != nullptr && *given != '\0' ? std::string(given)
                                            : run_command("git rev-parse HEAD 2>/dev/null");
}

}  // namespace sparge::runner
