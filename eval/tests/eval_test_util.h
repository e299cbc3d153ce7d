// Helpers shared by the eval tests: temporary files and error capture.
#pragma once

#include <unistd.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

namespace sparge::eval::testing {

// Writes content to a per-process file in the temp folder and returns its path.
inline std::filesystem::path write_temp(const std::string& name, const std::string& content) {
  const auto p =
      std::filesystem::temp_directory_path() / ("sparge_eval_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

inline std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The message of the exception f throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace sparge::eval::testing
