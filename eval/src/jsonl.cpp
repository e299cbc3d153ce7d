#include "jsonl.h"

#include <fstream>
#include <stdexcept>

namespace sparge::eval::detail {

void for_each_jsonl(const std::string& path,
                    const std::function<void(const nlohmann::json&, const JsonlPlace&)>& fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open (expected a JSON Lines file)");
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const JsonlPlace at{&path, line_no};
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw std::runtime_error(at.str() + ": not valid JSON: " + e.what());
    }
    if (!obj.is_object()) {
      throw std::runtime_error(at.str() + ": expected a JSON object per line, got " +
                               std::string(obj.type_name()));
    }
    fn(obj, at);
  }
  if (in.bad()) throw std::runtime_error(path + ": read error after line " + std::to_string(line_no));
}

void field_error(const JsonlPlace& at, const char* field, const std::string& what) {
  throw std::runtime_error(at.str() + ": field '" + field + "' " + what);
}

const nlohmann::json& require_field(const nlohmann::json& obj, const char* field, const JsonlPlace& at) {
  const auto it = obj.find(field);
  if (it == obj.end()) field_error(at, field, "is missing");
  return *it;
}

std::string get_string(const nlohmann::json& obj, const char* field, const JsonlPlace& at) {
  const auto& v = require_field(obj, field, at);
  if (!v.is_string()) field_error(at, field, std::string("must be a string, got ") + v.type_name());
  return v.get<std::string>();
}

std::vector<std::string> get_string_list(const nlohmann::json& obj, const char* field, const JsonlPlace& at,
                                         bool null_ok) {
  const auto& v = require_field(obj, field, at);
  if (v.is_null() && null_ok) return {};
  if (!v.is_array()) {
    field_error(
        at, field,
        std::string("must be a list of strings") + (null_ok ? " or null" : "") + ", got " + v.type_name());
  }
  std::vector<std::string> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) {
      field_error(at, field, "item " + std::to_string(i) + " must be a string, got " + v[i].type_name());
    }
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

int64_t get_int(const nlohmann::json& obj, const char* field, const JsonlPlace& at) {
  const auto& v = require_field(obj, field, at);
  if (!v.is_number_integer()) field_error(at, field, std::string("must be an integer, got ") + v.type_name());
  return v.get<int64_t>();
}

}  // namespace sparge::eval::detail
