// Tests of experiment specs (runner/spec.h): loading, include:, validation errors with FILE:LINE:COL,
// overrides, sweeps and canonical YAML. Fixtures live in runner/tests/data; an error fixture's comment or the
// test names the exact place the error must point at. To add a case: add a fixture and one TEST that loads
// it.
#include "spec.h"

#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <set>
#include <string>

namespace sparge::runner {
namespace {

std::string data(const std::string& name) {
  return std::string(SPARGE_SPEC_TEST_DATA) + "/" + name;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::optional<SpecError> error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const SpecError& e) {
    return e;
  }
  return std::nullopt;
}

// The error's file ends with `file`, sits at line:col, and its message holds `contains`.
void expect_error(const std::function<void()>& fn, const std::string& file, int line, int col,
                  const std::string& contains) {
  const auto e = error_of(fn);
  ASSERT_TRUE(e.has_value()) << "no SpecError";
  EXPECT_TRUE(ends_with(e->file(), file)) << e->what();
  EXPECT_EQ(e->line(), line) << e->what();
  EXPECT_EQ(e->column(), col) << e->what();
  EXPECT_NE(e->message().find(contains), std::string::npos) << e->what();
  const std::string prefix = e->file() + ":" + std::to_string(line) + ":" + std::to_string(col) + ": ";
  EXPECT_EQ(std::string(e->what()).rfind(prefix, 0), 0u) << e->what();
  EXPECT_NE(e->message().find("(expected "), std::string::npos) << e->what();
  EXPECT_NE(e->message().find(", got "), std::string::npos) << e->what();
}

void expect_load_error(const std::string& name, const std::string& file, int line, int col,
                       const std::string& contains) {
  expect_error([&] { load_spec(data(name)); }, file, line, col, contains);
}

TEST(Spec, ValidSpecLoads) {
  const LoadedSpec s = load_spec(data("valid.yaml"));
  EXPECT_EQ(s.root["metadata"]["name"].as<std::string>(), "valid");
  EXPECT_EQ(s.root["metadata"]["version"].as<int>(), 2);
  EXPECT_EQ(s.root["task"]["params"]["seq"].as<int>(), 256);
  EXPECT_EQ(s.root["methods"]["sparge"]["cdfthreshd"].as<double>(), 0.95);
  EXPECT_EQ(s.root["metrics"].size(), 2u);
  EXPECT_FALSE(s.root["include"].IsDefined());
  for (const auto& key :
       {"metadata", "task", "model", "methods", "metrics", "seeds", "sweep", "output", "device"})
    EXPECT_TRUE(ends_with(s.origin.at(key), "valid.yaml")) << key;
}

TEST(Spec, DefaultsAreFilledIn) {
  const LoadedSpec s = load_spec(data("minimal.yaml"));
  EXPECT_EQ(s.root["task"]["samples"].as<int>(), 1);
  EXPECT_EQ(s.root["model"]["family"].as<std::string>(), "none");
  EXPECT_EQ(s.root["metrics"][0]["aggregation"].as<std::string>(), "mean");
  EXPECT_EQ(s.root["seeds"].as<std::vector<int>>(), std::vector<int>{0});
  EXPECT_EQ(s.root["device"].as<std::string>(), "auto");
  EXPECT_EQ(s.origin.at("seeds"), "<default>");
  EXPECT_NO_THROW(validate_spec(s));
}

TEST(Spec, IncludeShallowMergeLocalAndLaterWin) {
  const LoadedSpec s = load_spec(data("inc_main.yaml"));
  EXPECT_EQ(s.root["output"].as<std::string>(), "results/main");  // local beats both includes
  EXPECT_EQ(s.root["limit"].as<int>(), 3);                // inc_mid's local beats its include inc_base
  EXPECT_EQ(s.root["device"].as<std::string>(), "cuda");  // the later include beats the earlier
  EXPECT_EQ(s.root["metrics"][0]["name"].as<std::string>(), "cosine");  // nested include
  // Shallow: methods comes whole from inc_mid (sage only), not merged with inc_base's dense.
  EXPECT_TRUE(s.root["methods"]["sage"].IsDefined());
  EXPECT_FALSE(s.root["methods"]["dense"].IsDefined());
  EXPECT_TRUE(ends_with(s.origin.at("output"), "inc_main.yaml"));
  EXPECT_TRUE(ends_with(s.origin.at("limit"), "inc_mid.yaml"));
  EXPECT_TRUE(ends_with(s.origin.at("methods"), "inc_mid.yaml"));
  EXPECT_TRUE(ends_with(s.origin.at("metrics"), "inc_base.yaml"));
  EXPECT_TRUE(ends_with(s.origin.at("device"), "inc_late.yaml"));
  EXPECT_EQ(s.origin.count("include"), 0u);
}

TEST(Spec, IncludeCycleNamesTheChain) {
  // cycle_a -> cycle_b -> cycle_a: reported at cycle_b.yaml's include entry.
  const auto e = error_of([] { load_spec(data("cycle_a.yaml")); });
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(ends_with(e->file(), "cycle_b.yaml")) << e->what();
  EXPECT_EQ(e->line(), 1);
  EXPECT_EQ(e->column(), 11);
  const std::string m = e->message();
  const auto a1 = m.find("cycle_a.yaml -> ");
  const auto b = m.find("cycle_b.yaml -> ");
  const auto a2 = m.rfind("cycle_a.yaml");
  ASSERT_NE(a1, std::string::npos) << m;
  ASSERT_NE(b, std::string::npos) << m;
  EXPECT_LT(a1, b) << m;
  EXPECT_LT(b, a2) << m;
}

TEST(Spec, UnknownTopLevelKey) {
  expect_load_error("err_unknown_top.yaml", "err_unknown_top.yaml", 5, 1, "'sweeps'");
}

TEST(Spec, UnknownKeyInMetadata) {
  expect_load_error("err_unknown_meta.yaml", "err_unknown_meta.yaml", 4, 3,
                    "unknown key 'title' in metadata");
}

TEST(Spec, WrongType) {
  expect_load_error("err_samples_type.yaml", "err_samples_type.yaml", 5, 12,
                    "task.samples: wrong type (expected an integer >= 1, got string \"four\")");
}

TEST(Spec, BadEnum) {
  expect_load_error("err_inputs_enum.yaml", "err_inputs_enum.yaml", 4, 11, "task.inputs: invalid value");
}

TEST(Spec, MissingRequiredKey) {
  // At the top-level map, which starts on line 2 (after a comment).
  expect_load_error("err_missing_metrics.yaml", "err_missing_metrics.yaml", 2, 1,
                    "missing required key 'metrics'");
}

TEST(Spec, BadMetricAggregation) {
  expect_load_error("err_aggregation.yaml", "err_aggregation.yaml", 6, 18,
                    "metrics[0].aggregation: invalid value (expected one of mean, median, max, min, sum");
}

TEST(Spec, ErrorInIncludedFileNamesThatFile) {
  expect_load_error("err_include_main.yaml", "err_include_common.yaml", 4, 34, "metrics[1].aggregation");
}

TEST(Spec, SweepPathMustExist) {
  expect_load_error("err_sweep_path.yaml", "err_sweep_path.yaml", 7, 3, "no key 'methods.sparge'");
}

TEST(Spec, SweepValueIsValidatedWhereItGoes) {
  expect_load_error("err_sweep_value.yaml", "err_sweep_value.yaml", 6, 21, "task.samples: out of range");
}

TEST(Spec, YamlSyntaxError) {
  const auto e = error_of([] { load_spec(data("err_syntax.yaml")); });
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(ends_with(e->file(), "err_syntax.yaml")) << e->what();
  EXPECT_EQ(e->line(), 2) << e->what();
  EXPECT_EQ(e->column(), 40) << e->what();
  EXPECT_NE(e->message().find("YAML syntax error"), std::string::npos) << e->what();
}

TEST(Spec, MissingFile) {
  const auto e = error_of([] { load_spec(data("no_such_file.yaml")); });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->line(), 0);
  EXPECT_TRUE(ends_with(e->file(), "no_such_file.yaml"));
}

TEST(SpecOverride, FloatListBool) {
  LoadedSpec s = load_spec(data("valid.yaml"));
  apply_override(s, "methods.sparge.cdfthreshd=0.8");
  apply_override(s, "task.params.sizes=[4, 8, 16]");
  apply_override(s, "task.params.causal=false");
  EXPECT_EQ(s.root["methods"]["sparge"]["cdfthreshd"].as<double>(), 0.8);
  ASSERT_TRUE(s.root["task"]["params"]["sizes"].IsSequence());
  EXPECT_EQ(s.root["task"]["params"]["sizes"].as<std::vector<int>>(), (std::vector<int>{4, 8, 16}));
  EXPECT_FALSE(s.root["task"]["params"]["causal"].as<bool>());
  EXPECT_EQ(s.origin.at("methods.sparge.cdfthreshd"), "<override methods.sparge.cdfthreshd=0.8>");
  // The other keys keep their values.
  EXPECT_EQ(s.root["methods"]["sparge"]["simthreshd1"].as<double>(), 0.6);
  EXPECT_EQ(s.root["task"]["params"]["seq"].as<int>(), 256);
}

TEST(SpecOverride, CreatesMissingKeys) {
  LoadedSpec s = load_spec(data("valid.yaml"));
  apply_override(s, "task.params.window=64");
  apply_override(s, "methods.sage.type=sage");
  apply_override(s, "methods.sage.quant=int8");
  EXPECT_EQ(s.root["task"]["params"]["window"].as<int>(), 64);
  EXPECT_EQ(s.root["methods"]["sage"]["type"].as<std::string>(), "sage");
  EXPECT_EQ(s.root["methods"]["sage"]["quant"].as<std::string>(), "int8");
  EXPECT_EQ(s.root["methods"].size(), 3u);
}

TEST(SpecOverride, ThroughAScalarIsAnError) {
  LoadedSpec s = load_spec(data("valid.yaml"));
  // Column 27: where "x" starts, the first part that cannot be reached.
  expect_error([&] { apply_override(s, "methods.sparge.cdfthreshd.x=1"); },
               "<override methods.sparge.cdfthreshd.x=1>", 1, 27,
               "goes through a non-map at 'methods.sparge.cdfthreshd'");
}

TEST(SpecOverride, InvalidValueIsReportedInTheOverride) {
  LoadedSpec s = load_spec(data("valid.yaml"));
  expect_error([&] { apply_override(s, "task.samples=0"); }, "<override task.samples=0>", 1, 14,
               "task.samples: out of range");
  LoadedSpec t = load_spec(data("valid.yaml"));
  expect_error([&] { apply_override(t, "metadata.title=x"); }, "<override metadata.title=x>", 1, 16,
               "unknown key 'title' in metadata");
  LoadedSpec u = load_spec(data("valid.yaml"));
  expect_error([&] { apply_override(u, "device"); }, "<override device>", 1, 1, "without '='");
  LoadedSpec w = load_spec(data("valid.yaml"));
  expect_error([&] { apply_override(w, "timing.repeats=0"); }, "<override timing.repeats=0>", 1, 16,
               "timing.repeats: out of range");
  LoadedSpec x = load_spec(data("valid.yaml"));
  expect_error([&] { apply_override(x, "timing.warmups=2"); }, "<override timing.warmups=2>", 1, 16,
               "unknown key 'warmups' in timing");
  LoadedSpec y = load_spec(data("valid.yaml"));
  EXPECT_NO_THROW(apply_override(y, "timing={warmup: 0, repeats: 5}"));
}

TEST(SpecSweep, GridOfTwoByThree) {
  const LoadedSpec s = load_spec(data("sweep_grid.yaml"));
  const auto points = expand_sweeps(s);
  ASSERT_EQ(points.size(), 6u);
  const std::vector<std::string> labels = {"cdfthreshd=0.9,samples=1",  "cdfthreshd=0.9,samples=2",
                                           "cdfthreshd=0.9,samples=3",  "cdfthreshd=0.95,samples=1",
                                           "cdfthreshd=0.95,samples=2", "cdfthreshd=0.95,samples=3"};
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& p = points[i];
    EXPECT_EQ(p.label, labels[i]);
    EXPECT_FALSE(p.spec["sweep"].IsDefined());
    EXPECT_EQ(p.spec["methods"]["sparge"]["cdfthreshd"].as<double>(), i < 3 ? 0.9 : 0.95);
    EXPECT_EQ(p.spec["task"]["samples"].as<int>(), static_cast<int>(i % 3) + 1);
    EXPECT_EQ(p.spec["methods"]["sparge"]["simthreshd1"].as<double>(), 0.5);
  }
  // Deep copies: the points are independent of each other and of the spec.
  EXPECT_NE(canonical_yaml(points[0].spec), canonical_yaml(points[5].spec));
  EXPECT_TRUE(s.root["sweep"].IsDefined());
  EXPECT_EQ(s.root["task"]["samples"].as<int>(), 1);
  EXPECT_EQ(s.root["methods"]["sparge"]["cdfthreshd"].as<double>(), 0.9);
}

TEST(SpecSweep, NoSweepGivesOnePoint) {
  const auto points = expand_sweeps(load_spec(data("minimal.yaml")));
  ASSERT_EQ(points.size(), 1u);
  EXPECT_EQ(points[0].label, "");
  EXPECT_EQ(points[0].spec["metadata"]["name"].as<std::string>(), "minimal");
}

TEST(SpecCanonical, IndependentOfKeyOrder) {
  const auto a = YAML::Load("b: {y: 1, x: [1, 2]}\na: \"1\"\nc: [{q: 1, p: 2}]\n");
  const auto b = YAML::Load("c:\n  - p: 2\n    q: 1\na: '1'\nb:\n  x: [1, 2]\n  y: 1\n");
  EXPECT_EQ(canonical_yaml(a), canonical_yaml(b));
  EXPECT_EQ(fnv1a64(canonical_yaml(a)), fnv1a64(canonical_yaml(b)));
  EXPECT_LT(canonical_yaml(a).find("a:"), canonical_yaml(a).find("b:"));
  // A quoted "1" is a string, not the integer 1.
  EXPECT_NE(canonical_yaml(YAML::Load("a: \"1\"")), canonical_yaml(YAML::Load("a: 1")));
  EXPECT_NE(canonical_yaml(YAML::Load("a: {x: 1}")), canonical_yaml(YAML::Load("a: {x: 2}")));
  // Round trip: the canonical text loads back to the same canonical text.
  EXPECT_EQ(canonical_yaml(YAML::Load(canonical_yaml(a))), canonical_yaml(a));
}

TEST(SpecCanonical, Fnv1a64KnownValues) {
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ull);
}

}  // namespace
}  // namespace sparge::runner
