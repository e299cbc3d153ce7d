// The reference implementation runs on CUDA tensors too and agrees with itself on CPU: same block mask, same
// statistics, outputs equal to float32 rounding. Skipped (with the reason) on machines without a GPU.
#include <gtest/gtest.h>

#include "test_util.h"

namespace sparge {
namespace {

TEST(ReferenceOnCuda, MatchesCpu) {
  if (!at::hasCUDA())
    GTEST_SKIP() << "no CUDA device on this machine: the reference-on-GPU check runs on the GPU machine";
  for (bool causal : {false, true})
    for (auto quant : {QuantMode::kNone, QuantMode::kInt8Fp8}) {
      const uint64_t seed = test::fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed));
      StructuredSpec spec;
      spec.heads_q = 8;
      spec.heads_kv = 2;
      spec.seq_q = 700;
      spec.seq_k = 1000;
      const auto cpu = structured_qkv(spec, seed, at::TensorOptions(at::kBFloat16));
      SpargeConfig cfg;
      cfg.causal = causal;
      cfg.quant = quant;
      cfg.cdfthreshd = {0.9};
      cfg.stage2_group_rows = 32;
      cfg.return_lse = true;
      // The predicted masks: torch's GPU ops round differently from its CPU ops (e.g. a float cumsum instead
      // of one accumulated in double), so a row sitting on a threshold tie may differ; allow 1% of the rows.
      const auto mask_cpu = predict_block_mask(cpu.q, cpu.k, cfg);
      const auto mask_gpu = predict_block_mask(cpu.q.cuda(), cpu.k.cuda(), cfg);
      const auto rows_differ = (mask_gpu.dense.cpu() != mask_cpu.dense).any(-1);
      EXPECT_LE(rows_differ.sum().item<int64_t>(), std::max<int64_t>(1, rows_differ.numel() / 100));
      // Stage 2 off, the same mask on both devices: outputs and LSE agree to float32 rounding.
      const auto a = block_sparse_attention(cpu.q, cpu.k, cpu.v, mask_cpu, cfg);
      const auto mask_on_gpu = BlockMask::from_dense(mask_cpu.dense.cuda(), mask_cpu.block_q,
                                                     mask_cpu.block_k, mask_cpu.seq_q, mask_cpu.seq_k);
      const auto b = block_sparse_attention(cpu.q.cuda(), cpu.k.cuda(), cpu.v.cuda(), mask_on_gpu, cfg);
      EXPECT_EQ(a.stats.computed_blocks, b.stats.computed_blocks);
      EXPECT_LT(relative_l2(b.out.cpu(), a.out), quant == QuantMode::kNone ? 1e-2 : 3e-2);
      // Quantized: an INT8 value whose x / scale sits on a rounding tie may round differently on the two
      // devices (one step of one element), which moves S, and the LSE, by a few thousandths.
      EXPECT_LT((b.lse.cpu() - a.lse).abs().max().item<float>(), quant == QuantMode::kNone ? 1e-3 : 2e-2)
          << to_string(quant) << (causal ? " causal" : "");
      // Stage 2 on: a block near the threshold may be skipped on one device and not the other (rounding of
      // S), so only the skip fraction and the output error are compared.
      cfg.pvthreshd = {8.0};
      const auto a2 = spas_attention(cpu.q, cpu.k, cpu.v, cfg);
      const auto b2 = spas_attention(cpu.q.cuda(), cpu.k.cuda(), cpu.v.cuda(), cfg);
      EXPECT_NEAR(a2.stats.stage2_skip_fraction(), b2.stats.stage2_skip_fraction(), 0.01);
      EXPECT_LT(relative_l2(b2.out.cpu(), a2.out), quant == QuantMode::kNone ? 2e-2 : 4e-2);
    }
}

}  // namespace
}  // namespace sparge
