// GGUF reader: metadata of every value type and tensors of every supported ggml type, written by the
// reference `gguf` package (gguf_oracle.py, run through the setup's Python) and dequantized by it as the
// oracle; the real SmolLM2 file; and clear errors on truncated or corrupted files.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "sparge/models/gguf.h"
#include "sparge/models/safetensors.h"
#include "sparge/posix_fs.h"

namespace sparge::models {
namespace {

std::string tmp(const std::string& name) {
  return "/tmp/sparge_gguf_" + std::to_string(::getpid()) + "_" + name;
}

// Runs the oracle script once per process; returns false (test skips) when the Python oracle is unavailable.
bool make_oracle_files(std::string& gguf_path, std::string& ref_path) {
  static int state = 0;  // 0 not run, 1 ok, 2 failed
  gguf_path = tmp("oracle.gguf");
  ref_path = tmp("oracle_ref.safetensors");
  if (state == 0) {
    const std::string cmd = std::string(SPARGE_PYTHON) + " " + SPARGE_TESTS_DIR + "/gguf_oracle.py " +
                            gguf_path + " " + ref_path + " " + std::to_string(::getpid() % 1000) + " 2>&1";
    state = std::system(cmd.c_str()) == 0 ? 1 : 2;
  }
  return state == 1;
}

std::vector<char> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void write_all(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void expect_open_error(const std::string& path, const std::string& fragment) {
  try {
    GgufFile::open(path);
    ADD_FAILURE() << "no error for " << path;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Gguf, MetadataOfEveryType) {
  std::string path, ref;
  if (!make_oracle_files(path, ref)) GTEST_SKIP() << "the gguf oracle (Python package gguf) is not available";
  const auto g = GgufFile::open(path);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_int("test.u8"), 250);
  EXPECT_EQ(g.get_int("test.i8"), -7);
  EXPECT_EQ(g.get_int("test.u16"), 65000);
  EXPECT_EQ(g.get_int("test.i16"), -30000);
  EXPECT_EQ(g.get_int("test.u32"), 4000000000LL);
  EXPECT_EQ(g.get_int("test.i32"), -2000000000LL);
  EXPECT_EQ(g.get_float("test.f32"), 0.25);
  EXPECT_TRUE(g.get_bool("test.bool"));
  EXPECT_EQ(g.get_string("test.str"), "héllo wörld");
  EXPECT_EQ(g.get_int("test.u64"), (1LL << 40) + 3);
  EXPECT_EQ(g.get_int("test.i64"), -(1LL << 40) - 5);
  EXPECT_DOUBLE_EQ(g.get_float("test.f64"), 1.0 / 3.0);
  EXPECT_EQ(g.get_string_array("test.arr_str"), (std::vector<std::string>{"a", "", "ünï"}));
  EXPECT_EQ(g.get_int_array("test.arr_i32"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(g.get_float_array("test.arr_f32"), (std::vector<double>{0.5, -1.5}));
  EXPECT_TRUE(g.has("test.arr_nested"));  // nested arrays are parsed past, not kept
  EXPECT_EQ(g.get_int("absent.key", 11), 11);
  // Wrong type or absent key: the message names the key and both types.
  try {
    g.get_int("test.str");
    ADD_FAILURE();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("`test.str` is string, expected an integer"), std::string::npos)
        << e.what();
  }
  try {
    g.get_string("no.such.key");
    ADD_FAILURE();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing metadata key `no.such.key`"), std::string::npos)
        << e.what();
  }
}

TEST(Gguf, EveryTensorTypeMatchesTheReferenceDequantization) {
  std::string path, ref_path;
  if (!make_oracle_files(path, ref_path))
    GTEST_SKIP() << "the gguf oracle (Python package gguf) is not available";
  const auto g = GgufFile::open(path);
  const auto ref = open_safetensors(ref_path);
  ASSERT_EQ(g.tensors().size(), ref.names.size());
  for (const auto& name : ref.names) {
    SCOPED_TRACE(name);
    const at::Tensor expected = ref.load(name);
    const at::Tensor got = g.load(name, at::kFloat);
    ASSERT_EQ(got.sizes(), expected.sizes());
    EXPECT_TRUE(at::equal(got, expected)) << "max diff " << (got - expected).abs().max().item<float>();
    EXPECT_EQ(g.info(name).offset % g.alignment(), 0u);
    // Other float dtypes are the float32 values rounded once.
    EXPECT_TRUE(at::equal(g.load(name, at::kBFloat16), expected.to(at::kBFloat16)));
  }
}

TEST(Gguf, RealSmolLM2File) {
  const std::string path = std::string(SPARGE_SOURCE_DIR) + "/data/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!posix::exists(path)) GTEST_SKIP() << path << " is missing: run scripts/setup.sh";
  const auto g = GgufFile::open(path);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_int("llama.block_count"), 30);
  EXPECT_EQ(g.get_int("llama.embedding_length"), 576);
  EXPECT_EQ(g.get_string_array("tokenizer.ggml.tokens").size(), 49152u);
  EXPECT_EQ(g.tensors().size(), 272u);
  const auto& emb = g.info("token_embd.weight");
  EXPECT_EQ(emb.type, GgmlType::Q8_0);
  EXPECT_EQ(emb.shape(), (std::vector<int64_t>{49152, 576}));
  const at::Tensor q = g.load("blk.0.attn_q.weight", at::kFloat);
  EXPECT_EQ(q.sizes(), (at::IntArrayRef{576, 576}));
  EXPECT_TRUE(q.isfinite().all().item<bool>());
  EXPECT_GT(q.std().item<float>(), 1e-3);
  EXPECT_EQ(g.load("blk.0.attn_k.weight", at::kFloat).sizes(), (at::IntArrayRef{192, 576}));
}

TEST(Gguf, CorruptedFilesFailNamingWhatIsWrong) {
  std::string path, ref;
  if (!make_oracle_files(path, ref)) GTEST_SKIP() << "the gguf oracle (Python package gguf) is not available";
  const auto bytes = read_all(path);
  expect_open_error(tmp("missing.gguf"), "cannot open the file");
  // Truncated inside the data section: the last tensor no longer fits.
  write_all(tmp("trunc_data.gguf"), {bytes.begin(), bytes.end() - 7});
  expect_open_error(tmp("trunc_data.gguf"), "corrupted or incomplete: tensor `");
  // Truncated inside the header.
  write_all(tmp("trunc_head.gguf"), {bytes.begin(), bytes.begin() + 100});
  expect_open_error(tmp("trunc_head.gguf"), "corrupted or incomplete");
  auto bad = bytes;
  bad[0] = 'X';
  write_all(tmp("magic.gguf"), bad);
  expect_open_error(tmp("magic.gguf"), "bad magic");
  bad = bytes;
  bad[4] = 9;  // version 9
  write_all(tmp("version.gguf"), bad);
  expect_open_error(tmp("version.gguf"), "unsupported GGUF version 9");
  // A huge metadata count cannot fit.
  bad = bytes;
  for (int i = 16; i < 24; ++i) bad[i] = static_cast<char>(0x7f);
  write_all(tmp("count.gguf"), bad);
  expect_open_error(tmp("count.gguf"), "cannot fit");
  const auto g = GgufFile::open(path);
  try {
    g.load("no.such.tensor", at::kFloat);
    ADD_FAILURE();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor `no.such.tensor` not found"), std::string::npos) << e.what();
  }
  for (const char* f : {"trunc_data.gguf", "trunc_head.gguf", "magic.gguf", "version.gguf", "count.gguf"})
    std::remove(tmp(f).c_str());
}

TEST(Gguf, DequantizeRowRejectsPartialBlocks) {
  std::vector<uint8_t> src(34, 0);
  std::vector<float> dst(32);
  EXPECT_THROW(dequantize_row(GgmlType::Q8_0, src.data(), dst.data(), 31), std::invalid_argument);
  EXPECT_THROW(ggml_block_size(GgmlType::Q2_K), std::invalid_argument);
}

}  // namespace
}  // namespace sparge::models
