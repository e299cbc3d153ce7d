// Experiment specs: YAML files that declare one experiment (a paper table, figure or ablation) for `sparge
// run`. This file loads a spec, resolves its include: list, validates it against the schema below (every
// error names FILE:LINE:COL before anything runs), applies command-line overrides, expands sweeps into run
// points and gives the canonical YAML used for cache keys and for the resolved config in results. It does not
// know which tasks, methods or metrics exist (the registries check names and parameters later) and never
// touches torch.
//
// ---- Schema (version 1): see README.md, "Experiment specs", for the annotated example
// clang-format off
//   include: [common.yaml]            optional; shallow merge of top-level keys, local keys win, later includes win
//   metadata: {name, version, description?, reproduces?}     name string, version integer >= 1
//   task: {name, inputs?, samples?, params?}   inputs (attention tasks): structured_llm | structured_visual | random | captured | model
//   model: {family?, weights?, dtype?, device?}   dtype: float32 | float16 | bfloat16 | float64; device: cpu | cuda
//   methods: {<id>: {type, <parameter>: scalar or list, ...}, ...}   non-empty
//   metrics: [{name, aggregation?, higher_is_better?}, ...]   aggregation: mean | median | max | min | sum
//   seeds: [0, 1]    sweep: {<dotted path>: [values]}    output: dir    device: cpu | cuda | auto    limit: N
// clang-format on
//
// Scalars follow the YAML core schema: true/false are bools, 12 an integer, 0.5 a float, a quoted "12" a
// string. Unknown keys are errors wherever the keys are fixed (everywhere except task.params, method
// parameters and sweep).
//
// ---- Errors
// -------------------------------------------------------------------------------------------------------
//
//   FILE:LINE:COL: <what> (expected <what>, got <what>)
//
// FILE is the file the offending node came from (an included file where it sits there; "<override
// PATH=VALUE>" for a value given by apply_override, where COL counts in the assignment text). LINE and COL
// are 1-based.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sparge::runner {

// A spec problem at a place in a file. line()/column() are 1-based; 0 where unknown (a file that cannot be
// read).
class SpecError : public std::runtime_error {
 public:
  SpecError(std::string file, int line, int column, std::string message);
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& message() const { return message_; }  // what() without the FILE:LINE:COL: prefix

 private:
  std::string file_;
  int line_;
  int column_;
  std::string message_;
};

// A loaded spec: the merged tree (include: resolved and removed, defaults filled in) and where its parts came
// from. origin: top-level key -> file it came from ("<default>" for a filled-in default); apply_override adds
// the dotted path it set. Copies of a LoadedSpec share YAML nodes (yaml-cpp semantics): YAML::Clone the root
// for a private copy.
struct LoadedSpec {
  YAML::Node root;
  std::map<std::string, std::string> origin;
  std::string path;  // the file given to load_spec
};

// Reads `path`, resolves include:, validates, then fills in the defaults (task.samples, model.family, metric
// aggregation, seeds, device). Throws SpecError.
LoadedSpec load_spec(const std::string& path);

// Checks spec.root against the schema, including that every sweep path exists and every sweep value is valid
// where it goes. Throws SpecError at the first problem.
void validate_spec(const LoadedSpec& spec);

// assignment: "PATH=VALUE", e.g. "methods.sparge.cdfthreshd=0.95". PATH is dotted; missing map keys are
// created. VALUE is parsed as YAML (0.95 a float, [1, 2] a list, true a bool, {type: dense} a map).
// Re-validates afterwards. Throws SpecError (naming the path where it goes through a non-map); the spec is
// then left modified: discard it.
void apply_override(LoadedSpec& spec, const std::string& assignment);

// One point of a sweep. label: "cdfthreshd=0.95" (several axes joined by ','; an axis is named by the last
// component of its path, or the whole path where two axes share it); "" when the spec has no sweep. spec: a
// deep copy of the root with this point's values applied and without the sweep key.
struct RunPoint {
  std::string label;
  YAML::Node spec;
};

// Cartesian product of the sweep axes in the order the sweep keys appear (the first axis varies slowest); one
// point with label "" when there is no sweep. Throws SpecError (at the sweep entry) for a path that does not
// exist.
std::vector<RunPoint> expand_sweeps(const LoadedSpec& spec);

// Deterministic block YAML with map keys sorted (byte order); quoted strings that would read as another type
// ("1", "true") stay quoted. An undefined node gives "~".
std::string canonical_yaml(const YAML::Node& node);

// 64-bit FNV-1a of the bytes (stable across platforms and runs).
uint64_t fnv1a64(std::string_view bytes);

}  // namespace sparge::runner
