// Helpers shared by `sparge run` (engine.cpp) and `sparge tune` (tune_task.cpp): devices, dtypes, spec
// parameters, provenance and the stop flag that SIGINT sets.
#pragma once

#include <ATen/core/Tensor.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "methods.h"

namespace sparge::runner {

// Output of a shell command, trailing newlines removed ("" when it fails).
std::string run_command(const char* cmd);
// cpu, torch version, device, GPU name and driver.
nlohmann::json environment(const at::Device& device);
std::string utc_now();  // 2026-11-23T12:00:00Z
// SPARGE_GIT_HASH when set, else `git rev-parse HEAD` of the working directory.
std::string git_hash();

// A spec map as method/task parameters, leaving out the keys in `skip`.
Params to_params(const YAML::Node& map, const std::set<std::string>& skip);
at::ScalarType parse_dtype(const std::string& s);    // float32 | float16 | bfloat16 | float64
at::Device resolve_device(const std::string& want);  // cpu | cuda | auto

// Asks a running run or tune to stop after the current unit (what SIGINT does).
void request_stop();
bool stop_requested();
void clear_stop();

}  // namespace sparge::runner
