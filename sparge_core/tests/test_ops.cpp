// The torch ops (libsparge_ops.so, loaded as torch.ops.load_library loads it: dlopen, then the dispatcher):
// - CPU tensors: block_sparse_attention runs the reference over the lists (check_mask accepted either way;
// the
//   lists are validated on the CPU regardless) and matches the dense masked attention in float64;
// - GPU: check_mask=True rejects bad lists with an error naming the argument, check_mask=False gives the same
//   bits on valid lists, and quant="int8_fp8" gives the same bits with V's quantization on the side stream
//   (the default) and inline (SPARGE_V_SIDE_STREAM=0), for block_sparse_attention and spas_attention.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "test_util.h"

namespace sparge {
namespace {

void load_ops() {
  static void* handle = dlopen(SPARGE_OPS_LIBRARY, RTLD_NOW | RTLD_GLOBAL);
  ASSERT_NE(handle, nullptr) << "dlopen " << SPARGE_OPS_LIBRARY << ": " << dlerror();
}

// One boxed call of sparge::<name> with every argument of its schema, in order; returns the outputs.
std::vector<c10::IValue> call(const std::string& name, std::vector<c10::IValue> args) {
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(("sparge::" + name).c_str(), "");
  torch::jit::Stack stack(std::move(args));
  op.callBoxed(&stack);
  return stack;
}

struct MaskLists {
  at::Tensor counts, indices;  // (B, H, NQB) and (B, H, NQB, NKB) int32, ascending, -1 after the count
};

// Random lists of the kernel's 128 x 64 geometry, every row listing at least its first block.
MaskLists random_lists(int64_t b, int64_t h, int64_t nq, int64_t nk, double density, uint64_t seed,
                       const at::Device& device) {
  const int64_t nqb = (nq + 127) / 128, nkb = (nk + 63) / 64;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto keep = at::rand({b, h, nqb, nkb}, gen) < density;
  keep.select(3, 0).fill_(true);
  const auto pos = at::arange(nkb, at::kInt).expand({b, h, nqb, nkb});
  const auto sorted = std::get<0>(at::where(keep, pos, at::full_like(pos, nkb)).sort(-1));
  MaskLists m;
  m.counts = keep.sum(-1).to(at::kInt).contiguous().to(device);
  m.indices = at::where(sorted == nkb, at::full_like(sorted, -1), sorted).contiguous().to(device);
  return m;
}

std::vector<c10::IValue> attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const MaskLists& m, const std::string& quant, bool check_mask) {
  return call("block_sparse_attention",
              {q, k, v, m.counts, m.indices, int64_t{128}, int64_t{64}, /*is_causal=*/false,
               /*scale=*/c10::IValue(), std::string("HND"), /*pvthreshd=*/c10::IValue(),
               /*stage2_group_rows=*/int64_t{32}, /*return_lse=*/true, quant, check_mask});
}

std::vector<c10::IValue> spas(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const std::string& quant) {
  return call("spas_attention",
              {q, k, v, /*is_causal=*/false, /*scale=*/c10::IValue(), std::string("HND"),
               /*simthreshd1=*/0.6, /*cdfthreshd=*/0.95, /*pvthreshd=*/c10::IValue(),
               /*topk=*/c10::IValue(), /*attention_sink=*/false, /*stage2_group_rows=*/int64_t{32},
               /*return_lse=*/true, quant});
}

bool same_outputs(const std::vector<c10::IValue>& a, const std::vector<c10::IValue>& b) {
  return a.size() == 2 && b.size() == 2 && at::equal(a[0].toTensor(), b[0].toTensor()) &&
         at::equal(a[1].toTensor(), b[1].toTensor());
}

TEST(Ops, CpuBlockSparseAttentionMatchesMaskedAttention) {
  load_ops();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto in = random_qkv(1, 2, 2, 200, 300, 64, seed, at::TensorOptions(at::kDouble));
  const auto m = random_lists(1, 2, 200, 300, 0.5, seed, at::Device(at::kCPU));
  // The dense token mask of the lists, then masked softmax attention in float64.
  const int64_t nkb = m.indices.size(3);
  auto dense = at::zeros({1, 2, m.counts.size(2), nkb + 1}, at::kBool);
  const auto listed = at::arange(nkb, at::kInt) < m.counts.unsqueeze(-1);
  dense.scatter_(-1, at::where(listed, m.indices, at::full_like(m.indices, nkb)).to(at::kLong), true);
  const auto allowed = dense.narrow(-1, 0, nkb)
                           .repeat_interleave(128, 2)
                           .repeat_interleave(64, 3)
                           .narrow(2, 0, 200)
                           .narrow(3, 0, 300);
  auto s = at::matmul(in.q, in.k.transpose(-1, -2)) / 8.0;
  s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  const auto expected = at::matmul(at::softmax(s, -1), in.v);
  for (const bool check : {true, false}) {
    const auto out = attention(in.q, in.k, in.v, m, "none", check);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_LT((out[0].toTensor() - expected).abs().max().item<double>(), 1e-10) << "check_mask " << check;
  }
}

TEST(Ops, CheckMaskOnTheGpu) {
  SPARGE_REQUIRE_GPU();
  load_ops();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const at::Device device(at::kCUDA, 0);
  const auto in = random_qkv(1, 4, 2, 1000, 1500, 128, seed, at::TensorOptions(at::kBFloat16).device(device));
  const auto m = random_lists(1, 4, 1000, 1500, 0.4, seed, device);
  EXPECT_TRUE(same_outputs(attention(in.q, in.k, in.v, m, "none", true),
                           attention(in.q, in.k, in.v, m, "none", false)));
  MaskLists bad = m;
  bad.indices = m.indices.clone();
  bad.indices.select(3, 0).fill_(static_cast<int>(m.indices.size(3)));  // an index past the last key block
  try {
    attention(in.q, in.k, in.v, bad, "none", true);
    ADD_FAILURE() << "expected an error naming `mask.indices`";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("argument `mask.indices`"), std::string::npos) << e.what();
  }
}

TEST(Ops, Fp8VSideStreamChangesNoBit) {
  SPARGE_REQUIRE_GPU();
  load_ops();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const at::Device device(at::kCUDA, 0);
  const auto in = random_qkv(2, 4, 2, 2048, 2048, 128, seed, at::TensorOptions(at::kBFloat16).device(device));
  const auto m = random_lists(2, 4, 2048, 2048, 0.3, seed, device);
  const auto side_attention = attention(in.q, in.k, in.v, m, "int8_fp8", false);
  const auto side_spas = spas(in.q, in.k, in.v, "int8_fp8");
  const test::ScopedEnv inline_v("SPARGE_V_SIDE_STREAM", "0");
  EXPECT_TRUE(same_outputs(side_attention, attention(in.q, in.k, in.v, m, "int8_fp8", false)));
  EXPECT_TRUE(same_outputs(side_spas, spas(in.q, in.k, in.v, "int8_fp8")));
}

}  // namespace
}  // namespace sparge
