// Stage-1 prediction on the GPU (label gpu; skipped with the reason on machines without a GPU):
//   - against the reference (sparge::predict_block_mask on the same inputs, CPU): identical masks except at
//     floating-point ties of the reference itself (allowed: at most 0.2% of the rows, and printed), the K
//     mean, the INT8 values (off by at most one step where x / scale sits on a rounding tie) and scales;
//   - against the first GPU predictor (cuda::legacy, kept as the oracle): masks, K mean, INT8 values and
//     scales bit for bit, both with the statistics as plain passes (the default) and with the persistent
//     statistics kernel (SPARGE_STATS_PASSES=0), and quantize_qk_int8 (both of its implementations) equal
//     to the quantized fields of the prediction bit for bit.
// To add a case, append a PredictCase (reference) or LegacyCase (bit-exactness) to the lists below.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../cuda/predict/predict_legacy.h"
#include "sparge/blocks.h"
#include "sparge/cuda_predict.h"
#include "test_util.h"

namespace sparge {
namespace {

struct PredictCase {
  int64_t seq_q, seq_k, heads_q, heads_kv, head_dim, block_q, block_k;
  bool causal, topk, sink, crossing, structured;
  at::ScalarType dtype;
  Layout layout;
};

class CudaPredict : public ::testing::TestWithParam<PredictCase> {};

TEST_P(CudaPredict, MatchesTheReference) {
  if (!at::hasCUDA())
    GTEST_SKIP() << "no CUDA device on this machine: GPU prediction tests run on the GPU machine";
  const auto c = GetParam();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  QKV in;
  if (c.structured) {
    StructuredSpec spec;
    spec.batch = 2;
    spec.heads_q = c.heads_q;
    spec.heads_kv = c.heads_kv;
    spec.seq_q = c.seq_q;
    spec.seq_k = c.seq_k;
    spec.head_dim = c.head_dim;
    in = structured_qkv(spec, seed, at::TensorOptions(c.dtype));
  } else {
    in = random_qkv(2, c.heads_q, c.heads_kv, c.seq_q, c.seq_k, c.head_dim, seed, at::TensorOptions(c.dtype));
  }
  if (c.layout == Layout::kNHD) {
    in.q = in.q.transpose(1, 2).contiguous();
    in.k = in.k.transpose(1, 2).contiguous();
  }
  SpargeConfig cfg;
  cfg.block_q = c.block_q;
  cfg.block_k = c.block_k;
  cfg.causal = c.causal;
  cfg.layout = c.layout;
  cfg.select = c.topk ? SelectMode::kTopk : SelectMode::kCdf;
  cfg.attention_sink = c.sink;
  cfg.cdf_keep_crossing = c.crossing;
  cfg.simthreshd1 = {c.structured ? 0.6 : -1.0};  // random blocks are never self-similar: judge none
  std::vector<double> tau, topk;
  for (int64_t h = 0; h < c.heads_q; ++h) {
    tau.push_back(0.5 + 0.5 * static_cast<double>(h) / static_cast<double>(c.heads_q));
    topk.push_back(0.1 + 0.8 * static_cast<double>(h) / static_cast<double>(c.heads_q));
  }
  cfg.cdfthreshd = tau;
  cfg.topk = topk;

  const auto ref = predict_block_mask(in.q, in.k, cfg);
  const auto gpu = cuda::predict_block_mask(in.q.cuda(), in.k.cuda(), cfg, /*quantize=*/true);
  const auto dense = gpu.mask.dense.cpu(), counts = gpu.mask.counts.cpu(), indices = gpu.mask.indices.cpu();
  // The CSR view is consistent with the dense view.
  const auto rebuilt = BlockMask::from_dense(dense, c.block_q, c.block_k, c.seq_q, c.seq_k);
  EXPECT_TRUE(rebuilt.counts.equal(counts));
  EXPECT_TRUE(rebuilt.indices.equal(indices));
  // The same mask as the reference, up to rows on floating-point ties.
  const auto row_differs = (dense != ref.dense).any(-1);
  const int64_t bad = row_differs.sum().item<int64_t>(), rows = row_differs.numel();
  std::printf("[ measured ] rows differing from the reference: %lld of %lld; GPU density %.4f\n",
              static_cast<long long>(bad), static_cast<long long>(rows),
              dense.to(at::kFloat).mean().item<float>());
  EXPECT_LE(bad, std::max<int64_t>(1, rows / 500));

  // K mean and INT8 quantization of Q and smoothed K.
  const auto kh = c.layout == Layout::kHND ? in.k : in.k.transpose(1, 2);
  const auto qh = c.layout == Layout::kHND ? in.q : in.q.transpose(1, 2);
  const auto km = kh.to(at::kFloat).mean(2);
  EXPECT_LT((gpu.k_mean.cpu() - km).abs().max().item<float>(), 1e-4);
  const auto qi = quantize_int8_blocks(qh.to(at::kFloat), c.block_q);
  const auto ki = quantize_int8_blocks(kh.to(at::kFloat) - kh.to(at::kFloat).mean(2, true), c.block_k);
  EXPECT_LT(((gpu.q_scale.cpu() - qi.scale) / qi.scale).abs().max().item<float>(), 1e-6);
  EXPECT_LT(((gpu.k_scale.cpu() - ki.scale) / ki.scale).abs().max().item<float>(), 1e-4);
  EXPECT_LE((gpu.q_int8.cpu().to(at::kFloat) - qi.values).abs().max().item<float>(), 1.0f);
  EXPECT_LE((gpu.k_int8.cpu().to(at::kFloat) - ki.values).abs().max().item<float>(), 1.0f);
  EXPECT_LT((gpu.q_int8.cpu().to(at::kFloat) != qi.values).to(at::kFloat).mean().item<float>(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaPredict,
    ::testing::Values(
        PredictCase{1024, 1024, 8, 8, 128, 128, 64, false, false, false, false, true, at::kBFloat16,
                    Layout::kHND},
        PredictCase{1000, 1000, 8, 2, 64, 128, 64, true, false, false, false, true, at::kHalf, Layout::kNHD},
        PredictCase{239, 1023, 4, 1, 128, 64, 128, true, true, true, false, true, at::kBFloat16,
                    Layout::kHND},
        PredictCase{113, 113, 8, 4, 64, 128, 64, false, false, false, true, false, at::kHalf, Layout::kHND},
        PredictCase{1, 63, 2, 2, 64, 128, 64, true, false, false, false, false, at::kBFloat16, Layout::kHND},
        PredictCase{4096, 4096, 4, 4, 128, 128, 64, true, true, false, false, true, at::kBFloat16,
                    Layout::kNHD},
        PredictCase{8192, 8192, 2, 1, 64, 64, 64, false, false, true, true, true, at::kHalf, Layout::kHND},
        PredictCase{32768, 32768, 1, 1, 128, 128, 64, true, false, false, false, true, at::kBFloat16,
                    Layout::kHND}));

// Bit for bit: floats compared as their bit patterns (so -0 != +0 and NaN == NaN of the same payload).
bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  const auto ac = a.cpu().contiguous(), bc = b.cpu().contiguous();
  if (ac.scalar_type() == at::kFloat) return ac.view(at::kInt).equal(bc.view(at::kInt));
  return ac.equal(bc);
}

// Cases for the bit-exactness test. They span the selection paths (key blocks per row <= 32, 64, 128, 256
// and 512 on a warp, more on a CTA), the statistics paths (blocks of <= 128 rows held in registers, longer
// blocks in chunks, tails, tiny blocks; K items of two 64-row blocks in the prediction without INT8 values,
// with an odd block count and a tail in the second block), the K queue order (all K sums first when every
// group fits in the reuse window; interleaved in the 32K 16-head case; forced to lookahead 1 in a separate
// test), MHA/GQA/MQA, causal with Nq < Nk, both layouts and dtypes, structured (self-similar blocks, peaked
// scores) and random inputs.
struct LegacyCase {
  int64_t batch, seq_q, seq_k, heads_q, heads_kv, head_dim, block_q, block_k;
  bool causal, topk, sink, crossing, structured;
  at::ScalarType dtype;
  Layout layout;
};

void expect_bit_identical_to_legacy(const LegacyCase& c) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  QKV in;
  if (c.structured) {
    StructuredSpec spec;
    spec.batch = c.batch;
    spec.heads_q = c.heads_q;
    spec.heads_kv = c.heads_kv;
    spec.seq_q = c.seq_q;
    spec.seq_k = c.seq_k;
    spec.head_dim = c.head_dim;
    in = structured_qkv(spec, seed, at::TensorOptions(c.dtype));
  } else {
    in = random_qkv(c.batch, c.heads_q, c.heads_kv, c.seq_q, c.seq_k, c.head_dim, seed,
                    at::TensorOptions(c.dtype));
  }
  auto q = in.q.cuda(), k = in.k.cuda();
  if (c.layout == Layout::kNHD) {
    q = q.transpose(1, 2).contiguous();
    k = k.transpose(1, 2).contiguous();
  }
  SpargeConfig cfg;
  cfg.block_q = c.block_q;
  cfg.block_k = c.block_k;
  cfg.causal = c.causal;
  cfg.layout = c.layout;
  cfg.select = c.topk ? SelectMode::kTopk : SelectMode::kCdf;
  cfg.attention_sink = c.sink;
  cfg.cdf_keep_crossing = c.crossing;
  cfg.simthreshd1 = {c.structured ? 0.6 : -1.0};
  std::vector<double> tau, topk;
  for (int64_t h = 0; h < c.heads_q; ++h) {
    tau.push_back(0.5 + 0.5 * static_cast<double>(h) / static_cast<double>(c.heads_q));
    topk.push_back(0.1 + 0.8 * static_cast<double>(h) / static_cast<double>(c.heads_q));
  }
  cfg.cdfthreshd = tau;
  cfg.topk = topk;

  const auto old = cuda::legacy::predict_block_mask(q, k, cfg, /*quantize=*/true);
  const auto now = cuda::predict_block_mask(q, k, cfg, /*quantize=*/true);
  const auto plain = cuda::predict_block_mask(q, k, cfg, /*quantize=*/false);
  const auto rows_differing = (now.mask.dense != old.mask.dense).any(-1).sum().item<int64_t>();
  std::printf("[ measured ] rows differing from the first GPU predictor: %lld of %lld; density %.4f\n",
              static_cast<long long>(rows_differing), static_cast<long long>(old.mask.counts.numel()),
              now.mask.dense.to(at::kFloat).mean().item<float>());
  EXPECT_EQ(rows_differing, 0);
  EXPECT_TRUE(bitwise_equal(now.mask.dense, old.mask.dense));
  EXPECT_TRUE(bitwise_equal(now.mask.counts, old.mask.counts));
  EXPECT_TRUE(bitwise_equal(now.mask.indices, old.mask.indices));
  // The prediction without INT8 values (the statistics kernel's similarity-only variant):
  EXPECT_TRUE(bitwise_equal(plain.mask.dense, old.mask.dense));
  EXPECT_TRUE(bitwise_equal(plain.mask.counts, old.mask.counts));
  EXPECT_TRUE(bitwise_equal(plain.mask.indices, old.mask.indices));
  EXPECT_TRUE(bitwise_equal(plain.k_mean, old.k_mean));
  EXPECT_TRUE(bitwise_equal(now.k_mean, old.k_mean));
  EXPECT_TRUE(bitwise_equal(now.q_int8, old.q_int8));
  EXPECT_TRUE(bitwise_equal(now.q_scale, old.q_scale));
  EXPECT_TRUE(bitwise_equal(now.k_int8, old.k_int8));
  EXPECT_TRUE(bitwise_equal(now.k_scale, old.k_scale));

  // The prediction's statistics by the persistent kernel (SPARGE_STATS_PASSES=0; the plain passes are the
  // default): the same bits.
  {
    const test::ScopedEnv set("SPARGE_STATS_PASSES", "0");
    SCOPED_TRACE("SPARGE_STATS_PASSES=0");
    for (const bool quantize : {true, false}) {
      const auto passes = cuda::predict_block_mask(q, k, cfg, quantize);
      EXPECT_TRUE(bitwise_equal(passes.mask.dense, old.mask.dense));
      EXPECT_TRUE(bitwise_equal(passes.mask.counts, old.mask.counts));
      EXPECT_TRUE(bitwise_equal(passes.mask.indices, old.mask.indices));
      EXPECT_TRUE(bitwise_equal(passes.k_mean, old.k_mean));
      if (quantize) {
        EXPECT_TRUE(bitwise_equal(passes.q_int8, old.q_int8));
        EXPECT_TRUE(bitwise_equal(passes.q_scale, old.q_scale));
        EXPECT_TRUE(bitwise_equal(passes.k_int8, old.k_int8));
        EXPECT_TRUE(bitwise_equal(passes.k_scale, old.k_scale));
      }
    }
  }
  // quantize_qk_int8's three passes (its default) and the statistics kernel's INT8-only variant
  // (SPARGE_QK_INT8_PASSES=0).
  for (const char* passes : {"1", "0"}) {
    const test::ScopedEnv set("SPARGE_QK_INT8_PASSES", passes);
    SCOPED_TRACE(std::string("SPARGE_QK_INT8_PASSES=") + passes);
    const auto qk = cuda::quantize_qk_int8(q, k, c.layout, c.block_q, c.block_k);
    EXPECT_TRUE(bitwise_equal(qk.q_int8, now.q_int8));
    EXPECT_TRUE(bitwise_equal(qk.q_scale, now.q_scale));
    EXPECT_TRUE(bitwise_equal(qk.k_int8, now.k_int8));
    EXPECT_TRUE(bitwise_equal(qk.k_scale, now.k_scale));
    EXPECT_TRUE(bitwise_equal(qk.k_mean, now.k_mean));
  }
}

class CudaPredictLegacy : public ::testing::TestWithParam<LegacyCase> {};

TEST_P(CudaPredictLegacy, BitIdenticalToTheFirstPredictor) {
  if (!at::hasCUDA())
    GTEST_SKIP() << "no CUDA device on this machine: GPU prediction tests run on the GPU machine";
  expect_bit_identical_to_legacy(GetParam());
}

// The K-stats items wait on their group's mean far more often with the K-sum lookahead forced to 1 (the
// measurement switch SPARGE_STATS_LOOKAHEAD): the waits and the ticketed float64 mean stay exact.
TEST(CudaPredictLegacyLookahead, BitIdenticalWithLookaheadOne) {
  if (!at::hasCUDA())
    GTEST_SKIP() << "no CUDA device on this machine: GPU prediction tests run on the GPU machine";
  const test::ScopedEnv forced("SPARGE_STATS_LOOKAHEAD", "1");
  const test::ScopedEnv persistent("SPARGE_STATS_PASSES", "0");  // the lookahead is the persistent kernel's
  expect_bit_identical_to_legacy(LegacyCase{2, 8192, 8192, 8, 8, 128, 128, 64, false, false, false, false,
                                            false, at::kBFloat16, Layout::kHND});
  expect_bit_identical_to_legacy(LegacyCase{1, 5000, 5000, 4, 2, 64, 128, 100, true, false, false, false,
                                            true, at::kHalf, Layout::kNHD});
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaPredictLegacy,
                         ::testing::Values(LegacyCase{2, 1024, 1024, 8, 8, 128, 128, 64, false, false, false,
                                                      false, true, at::kBFloat16, Layout::kHND},
                                           LegacyCase{2, 1000, 1000, 8, 2, 64, 128, 64, true, false, false,
                                                      false, true, at::kHalf, Layout::kNHD},
                                           LegacyCase{2, 239, 1023, 4, 1, 128, 64, 128, true, true, true,
                                                      false, true, at::kBFloat16, Layout::kHND},
                                           LegacyCase{2, 113, 113, 8, 4, 64, 128, 64, false, false, false,
                                                      true, false, at::kHalf, Layout::kHND},
                                           LegacyCase{1, 1, 63, 2, 2, 64, 128, 64, true, false, false, false,
                                                      false, at::kBFloat16, Layout::kHND},
                                           LegacyCase{2, 2000, 2000, 4, 2, 128, 96, 8, false, false, false,
                                                      false, true, at::kBFloat16, Layout::kHND},
                                           LegacyCase{1, 2048, 2048, 2, 1, 64, 256, 2, false, true, false,
                                                      false, true, at::kHalf, Layout::kHND},
                                           LegacyCase{2, 3000, 5000, 8, 1, 128, 200, 100, true, false, false,
                                                      false, true, at::kHalf, Layout::kNHD},
                                           LegacyCase{2, 4096, 4096, 4, 4, 128, 128, 64, true, true, false,
                                                      false, true, at::kBFloat16, Layout::kNHD},
                                           LegacyCase{2, 8192, 8192, 2, 1, 64, 64, 64, false, false, true,
                                                      true, true, at::kHalf, Layout::kHND},
                                           LegacyCase{2, 16384, 16384, 8, 4, 64, 128, 64, false, false, false,
                                                      false, true, at::kBFloat16, Layout::kHND},
                                           LegacyCase{2, 32768, 32768, 4, 2, 128, 128, 64, true, false, false,
                                                      false, true, at::kBFloat16, Layout::kHND},
                                           LegacyCase{1, 32768, 32768, 16, 16, 128, 128, 64, false, false,
                                                      false, false, false, at::kBFloat16, Layout::kHND}));

TEST(CudaPredict, RejectsCpuTensorsAndOtherHeadDims) {
  const auto q = at::randn({1, 2, 64, 64}).to(at::kHalf);
  EXPECT_THROW(cuda::predict_block_mask(q, q, SpargeConfig{}), Error);
  EXPECT_THROW(cuda::quantize_qk_int8(q, q, Layout::kHND, 128, 64), Error);
  EXPECT_THROW(cuda::quantize_qk_int8(q, q, Layout::kHND, 0, 64), Error);
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device for the head-dim check";
  const auto q80 = at::randn({1, 2, 64, 80}).to(at::kHalf).cuda();
  EXPECT_THROW(cuda::predict_block_mask(q80, q80, SpargeConfig{}), Error);
  EXPECT_THROW(cuda::quantize_qk_int8(q80, q80, Layout::kHND, 128, 64), Error);
}

// Contiguous inputs whose storage offset leaves them 8 bytes off a 16-byte boundary (the kernels' vector
// loads need 16): the API copies them, and the results equal those of aligned copies bit for bit.
TEST(CudaPredict, MisalignedContiguousInputs) {
  if (!at::hasCUDA())
    GTEST_SKIP() << "no CUDA device on this machine: GPU prediction tests run on the GPU machine";
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto in = random_qkv(2, 4, 2, 1000, 1000, 128, seed, at::TensorOptions(at::kBFloat16));
  const auto shifted = [](const at::Tensor& x) {  // the same values at an 8-byte offset
    const auto buf = at::empty({x.numel() + 4}, x.options().device(at::kCUDA));
    auto y = buf.narrow(0, 4, x.numel()).view(x.sizes());
    y.copy_(x);
    return y;
  };
  const auto q = shifted(in.q), k = shifted(in.k);
  ASSERT_TRUE(q.is_contiguous());
  ASSERT_NE(reinterpret_cast<uintptr_t>(q.data_ptr()) % 16, 0u);
  const auto qa = in.q.cuda(), ka = in.k.cuda();
  SpargeConfig cfg;
  const auto got = cuda::predict_block_mask(q, k, cfg, /*quantize=*/true);
  const auto want = cuda::predict_block_mask(qa, ka, cfg, /*quantize=*/true);
  EXPECT_TRUE(bitwise_equal(got.mask.dense, want.mask.dense));
  EXPECT_TRUE(bitwise_equal(got.mask.indices, want.mask.indices));
  EXPECT_TRUE(bitwise_equal(got.k_mean, want.k_mean));
  EXPECT_TRUE(bitwise_equal(got.q_int8, want.q_int8));
  EXPECT_TRUE(bitwise_equal(got.k_int8, want.k_int8));
  const auto qk = cuda::quantize_qk_int8(q, k, Layout::kHND, cfg.block_q, cfg.block_k);
  EXPECT_TRUE(bitwise_equal(qk.q_int8, want.q_int8));
  EXPECT_TRUE(bitwise_equal(qk.k_int8, want.k_int8));
  EXPECT_TRUE(bitwise_equal(qk.k_scale, want.k_scale));
}

// More batch entries than a grid's y dimension holds: a clear error, not a failed launch.
TEST(CudaPredict, RejectsBatchesBeyondTheGrid) {
  if (!at::hasCUDA())
    GTEST_SKIP() << "no CUDA device on this machine: GPU prediction tests run on the GPU machine";
  const auto q = at::zeros({65536, 1, 1, 64}, at::TensorOptions(at::kHalf).device(at::kCUDA));
  EXPECT_THROW(cuda::quantize_qk_int8(q, q, Layout::kHND, 128, 64), Error);
  EXPECT_THROW(cuda::predict_block_mask(q, q, SpargeConfig{}), Error);
}

}  // namespace
}  // namespace sparge
