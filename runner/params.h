// Typed reading of spec parameters (method parameters, task.params).
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "methods.h"

namespace sparge::runner {

// Typed access to the parameters of a method or a task; every key read is remembered so that unknown keys can
// be reported. Errors start with the context ("method `sparge`", "task `niah`").
class ParamReader {
 public:
  ParamReader(std::string context, const Params& p) : id_(std::move(context)), p_(p) {}
  double number(const std::string& key, double fallback) {
    const auto* v = find(key, false);
    return v ? to_double(key, v->items[0]) : fallback;
  }
  std::vector<double> numbers(const std::string& key, std::vector<double> fallback) {
    const auto* v = find(key, true);
    if (!v) return fallback;
    std::vector<double> out;
    for (const auto& s : v->items) out.push_back(to_double(key, s));
    return out;
  }
  std::string text(const std::string& key, const std::string& fallback,
                   const std::set<std::string>& allowed) {
    const auto* v = find(key, false);
    if (!v) return fallback;
    if (!allowed.count(v->items[0])) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail(key, "one of " + list, v->items[0]);
    }
    return v->items[0];
  }
  std::string text(const std::string& key, const std::string& fallback) {
    const auto* v = find(key, false);
    return v ? v->items[0] : fallback;
  }
  std::vector<std::string> texts(const std::string& key, std::vector<std::string> fallback) {
    const auto* v = find(key, true);
    return v ? v->items : fallback;
  }
  int64_t integer(const std::string& key, int64_t fallback, int64_t min = INT64_MIN) {
    const auto* v = find(key, false);
    return v ? to_int(key, v->items[0], min) : fallback;
  }
  std::vector<int64_t> integers(const std::string& key, std::vector<int64_t> fallback,
                                int64_t min = INT64_MIN) {
    const auto* v = find(key, true);
    if (!v) return fallback;
    std::vector<int64_t> out;
    for (const auto& s : v->items) out.push_back(to_int(key, s, min));
    return out;
  }
  bool flag(const std::string& key, bool fallback) {
    const auto* v = find(key, false);
    if (!v) return fallback;
    if (v->items[0] == "true") return true;
    if (v->items[0] == "false") return false;
    fail(key, "true or false", v->items[0]);
  }
  void reject_unread() const {
    for (const auto& [k, v] : p_)
      if (!read_.count(k)) throw std::invalid_argument(id_ + ": unknown parameter `" + k + "`");
  }

 private:
  const ParamValue* find(const std::string& key, bool list_ok) {
    read_.insert(key);
    const auto it = p_.find(key);
    if (it == p_.end()) return nullptr;
    if (it->second.is_list && !list_ok) fail(key, "a single value", "a list");
    if (it->second.items.empty()) fail(key, "a value", "an empty list");
    return &it->second;
  }
  double to_double(const std::string& key, const std::string& s) const {
    if (s == "inf" || s == ".inf") return INFINITY;
    try {
      size_t used = 0;
      const double d = std::stod(s, &used);
      if (used == s.size()) return d;
    } catch (const std::exception&) {
    }
    fail(key, "a number", "\"" + s + "\"");
  }
  int64_t to_int(const std::string& key, const std::string& s, int64_t min) const {
    try {
      size_t used = 0;
      const long long v = std::stoll(s, &used);
      if (used == s.size()) {
        if (v < min) fail(key, "an integer >= " + std::to_string(min), s);
        return v;
      }
    } catch (const std::logic_error&) {
    }
    fail(key, "an integer", "\"" + s + "\"");
  }
  [[noreturn]] void fail(const std::string& key, const std::string& expected, const std::string& got) const {
    throw std::invalid_argument(id_ + ": parameter `" + key + "`: expected " + expected + ", got " + got);
  }
  std::string id_;
  const Params& p_;
  std::set<std::string> read_;
};

}  // namespace sparge::runner
