// JSON Lines reading for the dataset readers (private to eval/): one object per line, blank lines skipped;
// every error names file:line and, for a field, the field, the expected and the actual JSON type.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sparge::eval::detail {

// Where a record came from, for error messages ("path:line").
struct JsonlPlace {
  const std::string* path;
  int64_t line;
  std::string str() const { return *path + ":" + std::to_string(line); }
};

// Calls fn(object, place) for every non-blank line; throws std::runtime_error on unreadable files, bad JSON
// and non-object lines, and rethrows fn's errors unchanged.
void for_each_jsonl(const std::string& path,
                    const std::function<void(const nlohmann::json&, const JsonlPlace&)>& fn);

[[noreturn]] void field_error(const JsonlPlace& at, const char* field, const std::string& what);
const nlohmann::json& require_field(const nlohmann::json& obj, const char* field, const JsonlPlace& at);
std::string get_string(const nlohmann::json& obj, const char* field, const JsonlPlace& at);
// A list of strings; `null` is accepted as empty only where null_ok.
std::vector<std::string> get_string_list(const nlohmann::json& obj, const char* field, const JsonlPlace& at,
                                         bool null_ok = false);
int64_t get_int(const nlohmann::json& obj, const char* field, const JsonlPlace& at);

}  // namespace sparge::eval::detail
