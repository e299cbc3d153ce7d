// safetensors: round trip of every supported dtype, parity with the reference Python package (safetensors, a
// test oracle installed by scripts/setup.sh) in both directions, and clear errors on truncated or corrupted
// files.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>

#include "sparge/models/safetensors.h"

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

}  // namespace
}  // namespace sparge::models
