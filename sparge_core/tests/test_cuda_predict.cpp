// Stage-1 prediction on the GPU against the reference (sparge::predict_block_mask on the same inputs, CPU):
// identical masks except at floating-point ties of the reference itself (allowed: at most 0.2% of the rows,
// and printed), the K mean, the INT8 values (off by at most one step where x / scale sits on a rounding tie)
// and their scales. Skipped with the reason on machines without a GPU.
#include <gtest/gtest.h>

#include <cstdio>

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

TEST(CudaPredict, RejectsCpuTensorsAndOtherHeadDims) {
  const auto q = at::randn({1, 2, 64, 64}).to(at::kHalf);
  EXPECT_THROW(cuda::predict_block_mask(q, q, SpargeConfig{}), Error);
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device for the head-dim check";
  const auto q80 = at::randn({1, 2, 64, 80}).to(at::kHalf).cuda();
  EXPECT_THROW(cuda::predict_block_mask(q80, q80, SpargeConfig{}), Error);
}

}  // namespace
}  // namespace sparge
