// Spec loading, include resolution, schema validation, overrides, sweeps and canonical YAML (see spec.h).
//
// Positions: yaml-cpp keeps a 0-based Mark per node but not the file, so the file is tracked by dotted path:
// LoadedSpec::origin says where each top-level key (and each overridden path) came from, and the validator
// carries the file down the tree as it walks (Where). Nodes built here (defaults, override intermediates,
// clones) have no usable mark; errors on them fall back to the nearest marked ancestor in the same file.
//
// yaml-cpp traps avoided throughout: lookups go through const nodes (a non-const operator[] inserts keys and
// turns null nodes into maps), and walking a path uses Node::reset (assigning one Node handle to another
// rewrites the node it refers to).
#include "spec.h"
#include "posix_fs.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <filesystem>  // path arithmetic only; disk access through posix_fs.h
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <system_error>
#include <utility>

namespace sparge::runner {

namespace fs = std::filesystem;

SpecError::SpecError(std::string file, int line, int column, std::string message)
    : std::runtime_error(line > 0 ? file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " +
                                        message
                                  : file + ": " + message),
      file_(std::move(file)),
      line_(line),
      column_(column),
      message_(std::move(message)) {}

namespace {

constexpr std::string_view kDefaultOrigin = "<default>";
constexpr std::string_view kOverridePrefix = "<override ";

// ---- Places and errors
// --------------------------------------------------------------------------------------------

bool has_mark(const YAML::Mark& m) {
  return !m.is_null();
}

// Where a node sits: its dotted path, its file, the mark of its value and the mark of its key.
struct Where {
  std::string path;  // "" for the top level; list elements as "metrics[2]"
  std::string file;
  YAML::Mark mark;      // errors about the value
  YAML::Mark key_mark;  // errors about the key (unknown key, missing child key)
};

std::string display(const Where& w) {
  return w.path.empty() ? "top level" : w.path;
}

[[noreturn]] void fail(const std::string& file, const YAML::Mark& m, const std::string& what,
                       const std::string& expected, const std::string& got) {
  const bool known = has_mark(m);
  throw SpecError(file, known ? m.line + 1 : 0, known ? m.column + 1 : 0,
                  what + " (expected " + expected + ", got " + got + ")");
}

[[noreturn]] void fail_at(const Where& w, const std::string& problem, const std::string& expected,
                          const std::string& got) {
  fail(w.file, w.mark, display(w) + ": " + problem, expected, got);
}

bool is_override(const std::string& file) {
  return file.rfind(kOverridePrefix, 0) == 0;
}

// The place of child `key` (key node `k`, value `v`) of the node at `parent`.
Where enter(const std::map<std::string, std::string>& origin, const Where& parent, const std::string& key,
            const YAML::Node& k, const YAML::Node& v) {
  Where w;
  w.path = parent.path.empty() ? key : parent.path + "." + key;
  const auto it = origin.find(w.path);
  const bool new_file = it != origin.end() && it->second != parent.file;
  w.file = it != origin.end() ? it->second : parent.file;
  // An overridden value keeps the key node of the file it replaced: that key's mark is not in the override
  // text.
  const bool key_usable = has_mark(k.Mark()) && !is_override(w.file);
  if (has_mark(v.Mark())) {
    w.mark = v.Mark();
  } else if (key_usable) {
    w.mark = k.Mark();
  } else {
    w.mark = new_file ? YAML::Mark() : parent.mark;  // Mark() is 1:1 of the new file
  }
  w.key_mark = key_usable ? k.Mark() : w.mark;
  return w;
}

Where element(const Where& parent, size_t i, const YAML::Node& v) {
  Where w{parent.path + "[" + std::to_string(i) + "]", parent.file, parent.mark, parent.mark};
  if (has_mark(v.Mark())) w.mark = w.key_mark = v.Mark();
  return w;
}

// ---- Scalar kinds (YAML core schema)
// ------------------------------------------------------------------------------

enum class Kind { Null, Bool, Int, Float, String, List, Map };

bool plain_tag(const YAML::Node& n) {
  return n.Tag() == "?" || n.Tag().empty();
}

Kind text_kind(const std::string& s) {
  static const std::regex kNull("~|null|Null|NULL|");
  static const std::regex kBool("true|True|TRUE|false|False|FALSE");
  static const std::regex kInt("[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+");
  static const std::regex kFloat(
      "[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN)");
  if (std::regex_match(s, kNull)) return Kind::Null;
  if (std::regex_match(s, kBool)) return Kind::Bool;
  if (std::regex_match(s, kInt)) return Kind::Int;
  if (std::regex_match(s, kFloat)) return Kind::Float;
  return Kind::String;
}

Kind kind_of(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return Kind::Null;
  if (n.IsSequence()) return Kind::List;
  if (n.IsMap()) return Kind::Map;
  return plain_tag(n) ? text_kind(n.Scalar()) : Kind::String;
}

std::string describe(const YAML::Node& n) {
  switch (kind_of(n)) {
    case Kind::Null:
      return "null";
    case Kind::Bool:
      return "bool " + n.Scalar();
    case Kind::Int:
      return "integer " + n.Scalar();
    case Kind::Float:
      return "float " + n.Scalar();
    case Kind::String:
      return "string \"" + n.Scalar() + "\"";
    case Kind::List:
      return n.size() == 0 ? "an empty list" : "a list";
    case Kind::Map:
      return n.size() == 0 ? "an empty map" : "a map";
  }
  return "?";
}

bool is_value_scalar(const YAML::Node& n) {
  return n.IsDefined() && n.IsScalar();
}

// Parses an integer scalar; false on overflow.
bool parse_int(const std::string& text, int64_t& out) {
  std::string_view s = text;
  int base = 10;
  if (s.rfind("0x", 0) == 0) {
    base = 16;
    s.remove_prefix(2);
  } else if (s.rfind("0o", 0) == 0) {
    base = 8;
    s.remove_prefix(2);
  } else if (!s.empty() && s.front() == '+') {
    s.remove_prefix(1);
  }
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// ---- Field checks
// -------------------------------------------------------------------------------------------------

struct Ctx {
  const std::map<std::string, std::string>& origin;
};

using Check = std::function<void(const Ctx&, const Where&, const YAML::Node&, const std::string& expected)>;

struct Field {
  std::string name;
  bool required;
  std::string expected;
  Check check;
};

void check_string(const Ctx&, const Where& w, const YAML::Node& n, const std::string& expected) {
  if (!is_value_scalar(n)) fail_at(w, "wrong type", expected, describe(n));
}

Check check_int(int64_t min) {
  return [min](const Ctx&, const Where& w, const YAML::Node& n, const std::string& expected) {
    if (kind_of(n) != Kind::Int) fail_at(w, "wrong type", expected, describe(n));
    int64_t v = 0;
    if (!parse_int(n.Scalar(), v) || v < min) fail_at(w, "out of range", expected, describe(n));
  };
}

void check_bool(const Ctx&, const Where& w, const YAML::Node& n, const std::string& expected) {
  if (kind_of(n) != Kind::Bool) fail_at(w, "wrong type", expected, describe(n));
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : std::string(sep)) + s;
  return out;
}

Field str(std::string name, bool required) {
  return {std::move(name), required, "a string", check_string};
}

Field integer(std::string name, bool required, int64_t min) {
  return {std::move(name), required, "an integer >= " + std::to_string(min), check_int(min)};
}

Field boolean(std::string name) {
  return {std::move(name), false, "a bool (true or false)", check_bool};
}

Field one_of(std::string name, bool required, std::vector<std::string> choices) {
  auto check = [choices](const Ctx&, const Where& w, const YAML::Node& n, const std::string& expected) {
    if (!is_value_scalar(n)) fail_at(w, "wrong type", expected, describe(n));
    if (std::find(choices.begin(), choices.end(), n.Scalar()) == choices.end())
      fail_at(w, "invalid value", expected, describe(n));
  };
  return {std::move(name), required, "one of " + join(choices, ", "), check};
}

// A parameter value: a non-null scalar or a list of them.
void check_param(const Ctx&, const Where& w, const YAML::Node& n, const std::string& expected) {
  if (is_value_scalar(n)) return;
  if (!n.IsSequence()) fail_at(w, "wrong type", expected, describe(n));
  for (size_t i = 0; i < n.size(); ++i)
    if (!is_value_scalar(n[i])) fail_at(element(w, i, n[i]), "wrong type", "a scalar", describe(n[i]));
}
const std::string kParamExpected = "a scalar or a list of scalars";

// Walks the entries of a map with string keys (no duplicates): fn(key, place, value).
void for_entries(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected,
                 const std::function<void(const std::string&, const Where&, const YAML::Node&)>& fn) {
  if (!n.IsMap()) fail_at(w, "wrong type", expected, describe(n));
  std::set<std::string> seen;
  for (auto it = n.begin(); it != n.end(); ++it) {
    const YAML::Node k = it->first;
    const YAML::Node v = it->second;
    if (!is_value_scalar(k)) {
      Where kw = w;
      if (has_mark(k.Mark())) kw.mark = k.Mark();
      fail_at(kw, "wrong key type", "a string key", describe(k));
    }
    const Where cw = enter(c.origin, w, k.Scalar(), k, v);
    if (!seen.insert(k.Scalar()).second)
      fail(cw.file, cw.key_mark, "duplicate key '" + k.Scalar() + "' in " + display(w), "each key once",
           "a second '" + k.Scalar() + "'");
    fn(k.Scalar(), cw, v);
  }
}

// A map with fixed keys. `extra` checks keys not in `fields` (unknown-key error when empty).
void check_map(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected,
               const std::vector<Field>& fields, const Check& extra = nullptr,
               const std::string& extra_expected = "") {
  std::vector<std::string> names;
  for (const auto& f : fields) names.push_back(f.name);
  std::set<std::string> present;
  for_entries(c, w, n, expected, [&](const std::string& key, const Where& cw, const YAML::Node& v) {
    present.insert(key);
    const auto f = std::find_if(fields.begin(), fields.end(), [&](const Field& x) { return x.name == key; });
    if (f != fields.end()) {
      f->check(c, cw, v, f->expected);
    } else if (extra) {
      extra(c, cw, v, extra_expected);
    } else {
      fail(cw.file, cw.key_mark, "unknown key '" + key + "' in " + display(w), "one of " + join(names, ", "),
           "'" + key + "'");
    }
  });
  for (const auto& f : fields)
    if (f.required && !present.count(f.name))
      fail(w.file, w.key_mark, "missing required key '" + f.name + "' in " + display(w),
           "key '" + f.name + "': " + f.expected, "no such key");
}

// ---- The schema
// ---------------------------------------------------------------------------------------------------

void check_metadata(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected) {
  check_map(
      c, w, n, expected,
      {str("name", true), integer("version", true, 1), str("description", false), str("reproduces", false)});
}

void check_task(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected) {
  auto params = [](const Ctx& cc, const Where& pw, const YAML::Node& pn, const std::string& pe) {
    for_entries(cc, pw, pn, pe, [&](const std::string&, const Where& cw, const YAML::Node& v) {
      check_param(cc, cw, v, kParamExpected);
    });
  };
  check_map(c, w, n, expected,
            {str("name", true),
             one_of("inputs", false, {"structured_llm", "structured_visual", "random", "captured", "model"}),
             integer("samples", false, 1),
             {"params", false, "a map of name -> scalar or list of scalars", params}});
}

void check_tasks(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected) {
  if (n.IsMap() && n.size() == 0) fail_at(w, "no tasks", expected, describe(n));
  for_entries(c, w, n, expected, [&](const std::string&, const Where& cw, const YAML::Node& v) {
    check_task(c, cw, v, "a map with name (and inputs for the attention task)");
  });
}

void check_model(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected) {
  check_map(c, w, n, expected,
            {str("family", false), str("weights", false),
             one_of("dtype", false, {"float32", "float16", "bfloat16", "float64"}),
             one_of("device", false, {"cpu", "cuda"})});
}

void check_methods(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected) {
  if (n.IsMap() && n.size() == 0) fail_at(w, "no methods", expected, describe(n));
  for_entries(c, w, n, expected, [&](const std::string&, const Where& cw, const YAML::Node& v) {
    check_map(c, cw, v, "a map with type: and method parameters", {str("type", true)}, check_param,
              kParamExpected);
  });
}

void check_metrics(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected) {
  if (!n.IsSequence() || n.size() == 0)
    fail_at(w, n.IsSequence() ? "no metrics" : "wrong type", expected, describe(n));
  std::set<std::string> names;
  for (size_t i = 0; i < n.size(); ++i) {
    const YAML::Node m = n[i];
    const Where mw = element(w, i, m);
    check_map(c, mw, m, "a map with name, aggregation, higher_is_better",
              {str("name", true), one_of("aggregation", false, {"mean", "median", "max", "min", "sum"}),
               boolean("higher_is_better")});
    if (!names.insert(m["name"].Scalar()).second)
      fail(mw.file, m["name"].Mark(), mw.path + ".name: duplicate metric", "each metric once",
           "a second \"" + m["name"].Scalar() + "\"");
  }
}

void check_seeds(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected) {
  if (!n.IsSequence() || n.size() == 0) fail_at(w, "wrong type", expected, describe(n));
  for (size_t i = 0; i < n.size(); ++i) check_int(0)(c, element(w, i, n[i]), n[i], "an integer >= 0");
}

// Structure only; paths and values are checked against the rest of the spec by check_sweep_points.
void check_sweep(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected) {
  for_entries(c, w, n, expected, [&](const std::string&, const Where& cw, const YAML::Node& v) {
    const std::string ve = "a non-empty list of scalars";
    if (!v.IsSequence() || v.size() == 0) fail_at(cw, "wrong type", ve, describe(v));
    for (size_t i = 0; i < v.size(); ++i)
      if (!is_value_scalar(v[i])) fail_at(element(cw, i, v[i]), "wrong type", "a scalar", describe(v[i]));
  });
}

Check check_number(double min) {
  return [min](const Ctx&, const Where& w, const YAML::Node& n, const std::string& expected) {
    const auto k = kind_of(n);
    if (k != Kind::Int && k != Kind::Float) fail_at(w, "wrong type", expected, describe(n));
    if (!(std::strtod(n.Scalar().c_str(), nullptr) > min)) fail_at(w, "out of range", expected, describe(n));
  };
}

// tune: the tuner's section (a tune spec, for `sparge tune`).
void check_tune(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected) {
  const auto params = [](const Ctx& cc, const Where& pw, const YAML::Node& pn, const std::string& pe) {
    for_entries(cc, pw, pn, pe, [&](const std::string&, const Where& cw, const YAML::Node& v) {
      check_param(cc, cw, v, kParamExpected);
    });
  };
  const auto layers = [](const Ctx& cc, const Where& lw, const YAML::Node& ln, const std::string& le) {
    if (!ln.IsSequence() || ln.size() == 0) fail_at(lw, "wrong type", le, describe(ln));
    for (size_t i = 0; i < ln.size(); ++i) check_int(0)(cc, element(lw, i, ln[i]), ln[i], "an integer >= 0");
  };
  const std::string map_expected = "a map of name -> scalar or list of scalars";
  check_map(c, w, n, expected,
            {{"l1", true, "a number > 0", check_number(0.0)},
             {"l2", true, "a number > 0 (>= l1)", check_number(0.0)},
             {"method", false, map_expected, params},
             {"calibration", false, map_expected, params},
             {"search", false, map_expected, params},
             {"layers", false, "a non-empty list of layer indices", layers}});
}

void check_timing(const Ctx& c, const Where& w, const YAML::Node& n, const std::string& expected) {
  check_map(c, w, n, expected, {integer("warmup", false, 0), integer("repeats", false, 1)});
}

const std::vector<Field>& top_fields() {
  static const std::vector<Field> fields = {
      {"metadata", true, "a map with name and version", check_metadata},
      {"task", false, "a map with name and inputs", check_task},
      {"tasks", false, "a map of task id -> {name, inputs?, samples?, params?}", check_tasks},
      {"model", false, "a map with family, weights, dtype, device", check_model},
      {"methods", false, "a non-empty map of method id -> {type: ..., parameters}", check_methods},
      {"metrics", false, "a non-empty list of {name, aggregation, higher_is_better}", check_metrics},
      {"tune", false, "a map with l1, l2, method, calibration, search, layers", check_tune},
      {"seeds", false, "a non-empty list of integers >= 0", check_seeds},
      {"sweep", false, "a map of dotted parameter path -> non-empty list of scalars", check_sweep},
      str("output", false),
      one_of("device", false, {"cpu", "cuda", "auto"}),
      integer("limit", false, 1),
      {"timing", false, "a map with warmup (an integer >= 0) and repeats (an integer >= 1)", check_timing},
  };
  return fields;
}

Where root_where(const std::string& file, const YAML::Node& root) {
  const YAML::Mark m = has_mark(root.Mark()) ? root.Mark() : YAML::Mark();
  return {"", file, m, m};
}

void validate_tree(const YAML::Node& root, const std::map<std::string, std::string>& origin,
                   const std::string& file) {
  const Ctx c{origin};
  check_map(c, root_where(file, root), root, "a map", top_fields());
  const bool one = root["task"].IsDefined(), many = root["tasks"].IsDefined();
  if (root["tune"].IsDefined()) {
    // A tune spec: calibration from the model (tune.calibration) or from one attention task's inputs.
    if (many)
      fail(file, root["tasks"].Mark(), "tasks in a tune spec", "at most one task: (the calibration inputs)",
           "tasks");
    for (const char* key : {"methods", "metrics", "sweep"})
      if (root[key].IsDefined())
        fail(file, root[key].Mark(), std::string(key) + " in a tune spec",
             "no " + std::string(key) + " (the tuned file is used by run specs)", key);
    return;
  }
  for (const char* key : {"methods", "metrics"})
    if (!root[key].IsDefined())
      fail(file, root.Mark(), std::string("missing required key '") + key + "' in top level",
           std::string("key '") + key + "' (or a tune: section for `sparge tune`)", "no such key");
  if (one == many)
    fail(file, root.Mark(),
         one ? "both 'task' and 'tasks' given" : "missing required key 'task' (or 'tasks')",
         "one of task: {...} or tasks: {id: {...}, ...}", one ? "both" : "neither");
}

// ---- Paths
// --------------------------------------------------------------------------------------------------------

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

bool has_key(const YAML::Node& map, const std::string& key) {
  return map.IsMap() && map[key].IsDefined();
}

// Sets root.parts = value (every map on the way exists).
void set_existing(YAML::Node root, const std::vector<std::string>& parts, const YAML::Node& value) {
  YAML::Node cur = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) cur.reset(cur[parts[i]]);
  cur[parts.back()] = value;
}

// Drops origin entries at or under `path`.
void erase_origin(std::map<std::string, std::string>& origin, const std::string& path) {
  for (auto it = origin.begin(); it != origin.end();) {
    if (it->first == path || it->first.rfind(path + ".", 0) == 0)
      it = origin.erase(it);
    else
      ++it;
  }
}

// ---- Sweeps
// -------------------------------------------------------------------------------------------------------

struct SweepAxis {
  std::string path;
  std::vector<std::string> parts;
  std::vector<std::pair<YAML::Node, Where>> values;
};

// The sweep axes in key order, each path checked to exist. Assumes check_sweep passed.
std::vector<SweepAxis> sweep_axes(const LoadedSpec& spec) {
  std::vector<SweepAxis> axes;
  const YAML::Node& root = spec.root;
  if (!has_key(root, "sweep")) return axes;
  const Ctx c{spec.origin};
  const Where rw = root_where(spec.path, root);
  const YAML::Node sweep = root["sweep"];
  YAML::Node sweep_key;
  for (auto it = root.begin(); it != root.end(); ++it)
    if (it->first.Scalar() == "sweep") sweep_key.reset(it->first);
  const Where sw = enter(spec.origin, rw, "sweep", sweep_key, sweep);
  for_entries(c, sw, sweep, "", [&](const std::string& path, const Where& cw, const YAML::Node& v) {
    Where kw = cw;
    kw.mark = cw.key_mark;
    kw.path = "sweep." + path;
    const std::string expected = "the dotted path of an existing key, e.g. methods.sparge.cdfthreshd";
    SweepAxis axis{path, split_path(path), {}};
    if (std::any_of(axis.parts.begin(), axis.parts.end(), [](const std::string& p) { return p.empty(); }))
      fail_at(kw, "bad sweep path", expected, "\"" + path + "\"");
    if (axis.parts.front() == "sweep")
      fail_at(kw, "a sweep cannot sweep itself", expected, "\"" + path + "\"");
    YAML::Node cur = root;
    std::string walked;
    for (const auto& part : axis.parts) {
      if (!cur.IsMap())
        fail_at(kw, "sweep path goes through a non-map at '" + walked + "'", expected, describe(cur));
      const YAML::Node& ccur = cur;
      const YAML::Node next = ccur[part];
      walked += (walked.empty() ? "" : ".") + part;
      if (!next.IsDefined()) fail_at(kw, "sweep path does not exist", expected, "no key '" + walked + "'");
      cur.reset(next);
    }
    for (size_t i = 0; i < v.size(); ++i) axis.values.emplace_back(v[i], element(cw, i, v[i]));
    axes.push_back(std::move(axis));
  });
  return axes;
}

// Root without the sweep key, with `values[i]` set at `axes[i]`; `origin` gets the sweep entries' files.
YAML::Node apply_point(const LoadedSpec& spec, const std::vector<SweepAxis>& axes,
                       const std::vector<size_t>& index, std::map<std::string, std::string>& origin) {
  YAML::Node point = YAML::Clone(spec.root);
  point.remove("sweep");
  origin = spec.origin;
  origin.erase("sweep");
  for (size_t a = 0; a < axes.size(); ++a) {
    const auto& [value, where] = axes[a].values[index[a]];
    set_existing(point, axes[a].parts, value);
    erase_origin(origin, axes[a].path);
    origin[axes[a].path] = where.file;
  }
  return point;
}

// Every sweep value, set alone, must give a valid spec (the error points at the value in the sweep).
void check_sweep_points(const LoadedSpec& spec) {
  const auto axes = sweep_axes(spec);
  for (size_t a = 0; a < axes.size(); ++a) {
    for (size_t i = 0; i < axes[a].values.size(); ++i) {
      std::vector<SweepAxis> one = {axes[a]};
      std::map<std::string, std::string> origin;
      const YAML::Node point = apply_point(spec, one, {i}, origin);
      validate_tree(point, origin, spec.path);
    }
  }
}

// ---- Loading
// ------------------------------------------------------------------------------------------------------

YAML::Node parse_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw SpecError(file.string(), 0, 0,
                    "cannot read the file (expected a readable YAML file, got an error)");
  try {
    return YAML::Load(in);
  } catch (const YAML::Exception& e) {
    throw SpecError(file.string(), e.mark.line + 1, e.mark.column + 1,
                    "YAML syntax error (expected valid YAML, got \"" + e.msg + "\")");
  }
}

struct Resolved {
  YAML::Node doc;                             // the file's map, include: resolved and removed
  std::map<std::string, std::string> origin;  // top-level key -> file
};

// chain: the files being resolved (display names, and canonical paths for the cycle check).
Resolved resolve(const fs::path& file, std::vector<std::pair<std::string, std::string>>& chain) {
  Resolved r;
  r.doc = parse_file(file);
  const std::string name = file.string();
  const Where top = root_where(name, r.doc);
  if (!r.doc.IsMap()) fail_at(top, "wrong type", "a map of top-level keys", describe(r.doc));
  const std::string canon = posix::real_path(file.string());
  chain.emplace_back(name, canon.empty() ? file.lexically_normal().string() : canon);

  const YAML::Node& cdoc = r.doc;
  const YAML::Node inc = cdoc["include"];
  if (inc.IsDefined()) {
    YAML::Node inc_key;
    for (auto it = cdoc.begin(); it != cdoc.end(); ++it)
      if (it->first.Scalar() == "include") inc_key.reset(it->first);
    const Where iw = enter({}, top, "include", inc_key, inc);
    const std::string expected = "a list of file paths relative to this file";
    if (!inc.IsSequence()) fail_at(iw, "wrong type", expected, describe(inc));
    struct Entry {
      std::string name;
      YAML::Node key, value;
      std::string file;
    };
    std::vector<Entry> merged;  // later includes replace earlier ones in place
    for (size_t i = 0; i < inc.size(); ++i) {
      const Where ew = element(iw, i, inc[i]);
      if (!is_value_scalar(inc[i])) fail_at(ew, "wrong type", "a file path", describe(inc[i]));
      const fs::path target = (file.parent_path() / inc[i].Scalar()).lexically_normal();
      const std::string target_canon = posix::real_path(target.string());
      const std::string key = target_canon.empty() ? target.string() : target_canon;
      const auto seen =
          std::find_if(chain.begin(), chain.end(), [&](const auto& c) { return c.second == key; });
      if (seen != chain.end()) {
        std::string cycle;
        for (auto it = seen; it != chain.end(); ++it) cycle += it->first + " -> ";
        fail_at(ew, "include cycle " + cycle + target.string(), "includes without a cycle",
                "a cycle of " + std::to_string(chain.end() - seen) + " file(s)");
      }
      if (!posix::is_file(target.string()))
        fail_at(ew, "cannot include " + target.string(), "an existing file", "no such file");
      const Resolved sub = resolve(target, chain);
      for (auto it = sub.doc.begin(); it != sub.doc.end(); ++it) {
        const std::string k = it->first.Scalar();
        Entry e{k, it->first, it->second, sub.origin.at(k)};
        const auto old =
            std::find_if(merged.begin(), merged.end(), [&](const Entry& x) { return x.name == k; });
        if (old != merged.end()) {  // rebind, never assign, Nodes
          old->key.reset(e.key);
          old->value.reset(e.value);
          old->file = e.file;
        } else {
          merged.push_back(e);
        }
      }
    }
    r.doc.remove("include");
    for (auto it = cdoc.begin(); it != cdoc.end(); ++it) r.origin[it->first.Scalar()] = name;
    for (const auto& e : merged) {
      if (has_key(cdoc, e.name)) continue;  // local keys win
      r.doc[e.key] = e.value;               // the included key node keeps its mark
      r.origin[e.name] = e.file;
    }
  } else {
    for (auto it = cdoc.begin(); it != cdoc.end(); ++it) r.origin[it->first.Scalar()] = name;
  }
  chain.pop_back();
  return r;
}

void apply_defaults(LoadedSpec& spec) {
  YAML::Node root = spec.root;
  const YAML::Node& croot = root;
  auto set_default = [](YAML::Node map, const std::string& key, const YAML::Node& value) {
    if (!has_key(map, key)) map[key] = value;
  };
  if (has_key(croot, "task")) set_default(root["task"], "samples", YAML::Node(1));
  if (has_key(croot, "tasks"))
    for (auto kv : root["tasks"]) set_default(kv.second, "samples", YAML::Node(1));
  if (!has_key(croot, "model")) {
    YAML::Node model(YAML::NodeType::Map);
    model["family"] = "none";
    root["model"] = model;
    spec.origin["model"] = kDefaultOrigin;
  } else {
    set_default(root["model"], "family", YAML::Node("none"));
  }
  if (has_key(croot, "metrics"))
    for (YAML::Node m : root["metrics"]) set_default(m, "aggregation", YAML::Node("mean"));
  if (!has_key(croot, "seeds")) {
    YAML::Node seeds(YAML::NodeType::Sequence);
    seeds.push_back(0);
    root["seeds"] = seeds;
    spec.origin["seeds"] = kDefaultOrigin;
  }
  if (!has_key(croot, "device")) {
    root["device"] = "auto";
    spec.origin["device"] = kDefaultOrigin;
  }
}

// ---- Canonical YAML
// -----------------------------------------------------------------------------------------------

// A string that a reader would take for another type if written plain.
bool needs_quotes(const std::string& s) {
  static const std::regex kYaml11Bool("y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF");
  return text_kind(s) != Kind::String || std::regex_match(s, kYaml11Bool);
}

void emit(YAML::Emitter& out, const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) {
    out << YAML::Null;
  } else if (n.IsScalar()) {
    if (!plain_tag(n) && needs_quotes(n.Scalar()))
      out << YAML::DoubleQuoted << n.Scalar();
    else
      out << n.Scalar();
  } else if (n.IsSequence()) {
    const bool flat =
        std::all_of(n.begin(), n.end(), [](const YAML::Node& e) { return !e.IsMap() && !e.IsSequence(); });
    out << (flat ? YAML::Flow : YAML::Block) << YAML::BeginSeq;
    for (const auto& e : n) emit(out, e);
    out << YAML::EndSeq;
  } else {
    // Sorted through an index: sorting the Nodes themselves would assign them (see the file comment).
    std::vector<YAML::Node> keys, values;
    std::vector<std::string> names;
    for (auto it = n.begin(); it != n.end(); ++it) {
      keys.push_back(it->first);
      values.push_back(it->second);
      names.push_back(it->first.IsScalar() ? it->first.Scalar() : canonical_yaml(it->first));
    }
    std::vector<size_t> order(keys.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return names[a] < names[b]; });
    out << YAML::Block << YAML::BeginMap;
    for (const size_t i : order) {
      out << YAML::Key;
      emit(out, keys[i]);
      out << YAML::Value;
      emit(out, values[i]);
    }
    out << YAML::EndMap;
  }
}

}  // namespace

// ---- API
// ----------------------------------------------------------------------------------------------------------

LoadedSpec load_spec(const std::string& path) {
  std::vector<std::pair<std::string, std::string>> chain;
  Resolved r = resolve(fs::path(path), chain);
  LoadedSpec spec{r.doc, std::move(r.origin), path};
  validate_tree(spec.root, spec.origin, spec.path);
  apply_defaults(spec);  // before the sweep checks: a sweep may name a defaulted key (task.samples)
  check_sweep_points(spec);
  return spec;
}

void validate_spec(const LoadedSpec& spec) {
  validate_tree(spec.root, spec.origin, spec.path);
  check_sweep_points(spec);
}

void apply_override(LoadedSpec& spec, const std::string& assignment) {
  const std::string label = std::string(kOverridePrefix) + assignment + ">";
  const std::string expected = "PATH=VALUE with a dotted PATH, e.g. methods.sparge.cdfthreshd=0.95";
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos)
    throw SpecError(label, 1, 1,
                    "override without '=' (expected " + expected + ", got \"" + assignment + "\")");
  const std::string path = assignment.substr(0, eq);
  const auto parts = split_path(path);
  if (std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); }))
    throw SpecError(label, 1, 1, "bad override path (expected " + expected + ", got \"" + path + "\")");

  // Parsed with the assignment's prefix blanked out, so that marks count columns in the assignment text.
  YAML::Node value;
  try {
    value = YAML::Load(std::string(eq + 1, ' ') + assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    throw SpecError(label, e.mark.line + 1, e.mark.column + 1,
                    "YAML syntax error in the override value (expected a YAML scalar or flow value, got \"" +
                        e.msg + "\")");
  }

  YAML::Node cur = spec.root;
  std::string walked, first_created;
  size_t column = 1;  // where parts[i] starts in the assignment
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!cur.IsMap())
      throw SpecError(label, 1, static_cast<int>(column),
                      "override path '" + path + "' goes through a non-map at '" + walked +
                          "' (expected a map, got " + describe(cur) + ")");
    walked += (walked.empty() ? "" : ".") + parts[i];
    if (i + 1 == parts.size()) break;
    const YAML::Node& ccur = cur;
    if (!ccur[parts[i]].IsDefined()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      if (first_created.empty()) first_created = walked;
    }
    cur.reset(cur[parts[i]]);
    column += parts[i].size() + 1;
  }
  if (first_created.empty() && !has_key(cur, parts.back())) first_created = path;
  cur[parts.back()] = value;
  erase_origin(spec.origin, path);
  spec.origin[path] = label;
  if (!first_created.empty()) spec.origin[first_created] = label;
  validate_spec(spec);
}

std::vector<RunPoint> expand_sweeps(const LoadedSpec& spec) {
  const auto axes = sweep_axes(spec);
  std::vector<std::string> names;
  for (const auto& a : axes) {
    const bool shared = std::count_if(axes.begin(), axes.end(), [&](const SweepAxis& b) {
                          return b.parts.back() == a.parts.back();
                        }) > 1;
    names.push_back(shared ? a.path : a.parts.back());
  }
  std::vector<RunPoint> points;
  std::vector<size_t> index(axes.size(), 0);
  while (true) {
    std::map<std::string, std::string> origin;
    RunPoint p;
    p.spec = YAML::Clone(apply_point(spec, axes, index, origin));
    for (size_t a = 0; a < axes.size(); ++a)
      p.label += (a ? "," : "") + names[a] + "=" + axes[a].values[index[a]].first.Scalar();
    points.push_back(std::move(p));
    // Odometer: the last axis varies fastest.
    size_t a = axes.size();
    while (a > 0 && ++index[a - 1] == axes[a - 1].values.size()) index[--a] = 0;
    if (a == 0) break;
  }
  return points;
}

std::string canonical_yaml(const YAML::Node& node) {
  YAML::Emitter out;
  emit(out, node);
  return std::string(out.c_str()) + "\n";
}

uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 14695981039346656037ull;  // FNV offset basis
  for (const unsigned char b : bytes) {
    h ^= b;
    h *= 1099511628211ull;  // FNV prime
  }
  return h;
}

}  // namespace sparge::runner
