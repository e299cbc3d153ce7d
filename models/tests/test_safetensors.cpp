// safetensors: round trip of every supported dtype, parity with the reference Python package (safetensors, a
// test oracle installed by scripts/setup.sh) in both directions, and clear errors on truncated or corrupted
// files.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "sparge/models/safetensors.h"
#include "sparge/posix_fs.h"

namespace sparge::models {
namespace {

std::string tmp(const std::string& name) {
  return "/tmp/sparge_st_" + std::to_string(::getpid()) + "_" + name;
}

void expect_error(const std::string& path, const std::string& fragment) {
  try {
    const auto f = open_safetensors(path);
    for (const auto& n : f.names) f.load(n);
    ADD_FAILURE() << "no error for " << path;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

std::map<std::string, at::Tensor> sample_tensors() {
  return {{"q", at::randn({2, 3, 5, 8}).to(at::kBFloat16)},
          {"k", at::randn({2, 3, 5, 8}).to(at::kHalf)},
          {"w", at::randn({7})},
          {"d", at::randn({3, 3}, at::kDouble)},
          {"i", at::arange(10, at::kLong)},
          {"b", at::rand({4}) > 0.5},
          {"e", at::empty({0, 4})}};
}

TEST(Safetensors, RoundTripEveryDtype) {
  const auto path = tmp("roundtrip.safetensors");
  const auto tensors = sample_tensors();
  save_safetensors(path, tensors, {{"source", "test"}});
  const auto f = open_safetensors(path);
  EXPECT_EQ(f.metadata.at("source"), "test");
  EXPECT_EQ(f.names.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const auto got = f.load(name);
    EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(got.equal(t)) << name;
  }
  std::remove(path.c_str());
}

TEST(Safetensors, MatchesThePythonPackageBothWays) {
  const std::string py = SPARGE_PYTHON;
  if (std::system(("'" + py + "' -c 'import safetensors' > /dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << "the reference package safetensors is not importable by " << py
                 << " (scripts/setup.sh installs it)";
  const auto ours = tmp("ours.safetensors"), theirs = tmp("theirs.safetensors");
  const auto tensors = sample_tensors();
  save_safetensors(ours, tensors);
  // Python reads ours and writes the same tensors back in its own layout (float32 views for the checks).
  const std::string script =
      "import sys, torch\n"
      "from safetensors.torch import load_file, save_file\n"
      "t = load_file(sys.argv[1])\n"
      "assert t['q'].dtype == torch.bfloat16 and tuple(t['q'].shape) == (2, 3, 5, 8)\n"
      "t['sum_q'] = t['q'].float().sum().reshape(1)\n"
      "save_file(t, sys.argv[2], metadata={'writer': 'python'})\n";
  std::ofstream(tmp("parity.py")) << script;
  ASSERT_EQ(std::system(("'" + py + "' " + tmp("parity.py") + " " + ours + " " + theirs).c_str()), 0);
  const auto f = open_safetensors(theirs);
  EXPECT_EQ(f.metadata.at("writer"), "python");
  for (const auto& [name, t] : tensors) EXPECT_TRUE(f.load(name).equal(t)) << name;
  EXPECT_NEAR(f.load("sum_q").item<float>(), tensors.at("q").to(at::kFloat).sum().item<float>(), 1e-3);
  for (const auto& p : {ours, theirs, tmp("parity.py")}) std::remove(p.c_str());
}

TEST(Safetensors, TruncatedAndCorruptedFilesFailClearly) {
  const auto good = tmp("good.safetensors");
  save_safetensors(good, {{"x", at::randn({64})}});
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto write = [&](const std::string& name, const std::string& content) {
    const auto p = tmp(name);
    std::ofstream(p, std::ios::binary) << content;
    return p;
  };
  expect_error(write("short", bytes.substr(0, 5)), "truncated");
  expect_error(write("cut", bytes.substr(0, bytes.size() - 10)), "corrupted or incomplete");
  std::string bad_len = bytes;
  bad_len[0] = '\xff';
  bad_len[1] = '\xff';
  expect_error(write("badlen", bad_len), "header length");
  std::string bad_json = bytes;
  bad_json[8] = '[';
  bad_json[9] = '[';
  expect_error(write("badjson", bad_json), "corrupted header");
  expect_error(tmp("missing"), "cannot open");
  EXPECT_THROW(open_safetensors(good).load("y"), std::runtime_error);
  std::remove(good.c_str());
}

TEST(Safetensors, ShardedCheckpointWithIndex) {
  namespace fs = std::filesystem;
  const fs::path dir = tmp("sharded");
  posix::make_dirs(dir.string());
  const auto a = at::randn({3, 4}), b = at::randn({5}).to(at::kBFloat16), c = at::randn({2, 2}).to(at::kHalf);
  save_safetensors((dir / "model-00001-of-00002.safetensors").string(), {{"a", a}, {"b", b}});
  save_safetensors((dir / "model-00002-of-00002.safetensors").string(), {{"c", c}});
  const auto write_index = [&](const std::string& body) {
    std::ofstream((dir / "model.safetensors.index.json").string()) << body;
  };
  write_index(R"({"metadata": {"total_size": 46}, "weight_map": {"a": "model-00001-of-00002.safetensors",
      "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})");
  for (const auto& path : {dir.string(), (dir / "model.safetensors.index.json").string()}) {
    const auto ck = SafetensorsCheckpoint::open(path);
    EXPECT_EQ(ck.names(), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(ck.shards().size(), 2u);
    EXPECT_TRUE(at::equal(ck.load("a"), a));
    EXPECT_TRUE(at::equal(ck.load("b"), b));
    EXPECT_TRUE(at::equal(ck.load("c"), c));
    EXPECT_FALSE(ck.contains("d"));
  }
  const auto expect_fail = [&](const std::string& fragment) {
    try {
      SafetensorsCheckpoint::open(dir.string());
      ADD_FAILURE() << "no error, expected " << fragment;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  write_index(R"({"weight_map": {"a": "model-00003-of-00002.safetensors"}})");
  expect_fail("shard");
  write_index(R"({"weight_map": {"zz": "model-00001-of-00002.safetensors"}})");
  expect_fail("tensor `zz` is not in its shard");
  write_index(R"({"weight_map": [1, 2]})");
  expect_fail("weight_map");
  write_index("{not json");
  expect_fail("not JSON");
  posix::remove_tree(dir.string());
  // A single file works as a checkpoint too.
  save_safetensors(tmp("single.safetensors"), {{"x", a}});
  EXPECT_TRUE(at::equal(SafetensorsCheckpoint::open(tmp("single.safetensors")).load("x"), a));
  std::remove(tmp("single.safetensors").c_str());
}

}  // namespace
}  // namespace sparge::models
