// The first GPU predictor, kept verbatim as the bit-exactness oracle of the GPU test (not used by the API):
// block statistics one CTA per block (K read twice from DRAM), a separate mean kernel, the legacy score GEMM
// and the one-CTA-per-row selection. predict_api.cpp is the predictor.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

#include "../../src/internal.h"
#include "predict_launch.h"
#include "predict_legacy.h"
#include "sparge/error.h"

namespace sparge::cuda::legacy {
namespace {

constexpr int64_t kMaxKeyBlocks = 8192;  // the selection sorts a row in shared memory: 8 bytes per key block
constexpr int64_t kMaxGridYZ = 65535;

void check_cuda(cudaError_t e, const char* what) {
  SPARGE_CHECK(e == cudaSuccess, what, " failed: ", cudaGetErrorString(e));
}

// The tensor in HND order with a contiguous, 16-byte aligned row (the kernels load pairs of elements per
// lane).
at::Tensor operand(const at::Tensor& hnd) {
  const bool ok = hnd.stride(3) == 1 && reinterpret_cast<uintptr_t>(hnd.data_ptr()) % 16 == 0 &&
                  hnd.stride(2) % 8 == 0 && hnd.stride(1) % 8 == 0 && hnd.stride(0) % 8 == 0;
  return ok ? hnd : hnd.contiguous();
}

BlockStatsParams stats_params(const at::Tensor& x, int64_t block) {
  BlockStatsParams p;
  p.x = x.data_ptr();
  p.batch_stride = x.stride(0);
  p.head_stride = x.stride(1);
  p.row_stride = x.stride(2);
  p.heads = static_cast<int>(x.size(1));
  p.seq = static_cast<int>(x.size(2));
  p.block = static_cast<int>(block);
  p.num_blocks = static_cast<int>((x.size(2) + block - 1) / block);
  return p;
}

}  // namespace

Prediction predict_block_mask(const at::Tensor& q, const at::Tensor& k, const SpargeConfig& config,
                              bool quantize) {
  const auto pr = detail::check_problem(__func__, q, k, at::Tensor(), config);
  SPARGE_CHECK(q.is_cuda(), "argument `q`: expected a CUDA tensor, got device ", q.device());
  SPARGE_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16,
               "argument `q`: expected dtype float16 or bfloat16 on the GPU path, got ", q.scalar_type());
  SPARGE_CHECK(pr.head_dim == 64 || pr.head_dim == 128, "argument `q`: expected head dim 64 or 128, got ",
               pr.head_dim, " (other head dims run on the reference path)");
  const int64_t bq = config.block_q, bk = config.block_k;
  const int64_t nqb = (pr.seq_q + bq - 1) / bq, nkb = (pr.seq_k + bk - 1) / bk;
  SPARGE_CHECK(nkb <= kMaxKeyBlocks, "argument `block_k`: at most ", kMaxKeyBlocks,
               " key blocks per row, got ", nkb, " (Nk = ", pr.seq_k, ", block_k = ", bk, ")");
  SPARGE_CHECK(pr.heads_q <= kMaxGridYZ && pr.batch <= kMaxGridYZ, "argument `q`: at most ", kMaxGridYZ,
               " heads and batch entries, got ", pr.heads_q, " and ", pr.batch);

  const c10::cuda::CUDAGuard guard(q.device());
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  const auto qh = operand(detail::to_hnd(q, config.layout));
  const auto kh = operand(detail::to_hnd(k, config.layout));
  const auto f32 = q.options().dtype(at::kFloat);
  const int64_t d = pr.head_dim;

  // One float32 workspace carved into the statistics (few allocations: the host cost matters at short N).
  const int64_t B = pr.batch, hq = pr.heads_q, hkv = pr.heads_kv, g = pr.group();
  const std::vector<int64_t> part_sizes = {B * hkv * nkb * d, B * hkv * d,   B * hq * nqb * d,  B * hq * nqb,
                                           B * hkv * nkb * d, B * hkv * nkb, B * hq * nqb * nkb};
  int64_t total = 0;
  for (auto n : part_sizes) total += n;
  const auto workspace = at::empty({total}, f32);
  std::vector<at::Tensor> parts;
  int64_t at_offset = 0;
  for (auto n : part_sizes) {
    parts.push_back(workspace.narrow(0, at_offset, n));
    at_offset += n;
  }
  Prediction out;
  const auto& k_sums = parts[0];
  out.k_mean = parts[1].view({B, hkv, d});
  const auto& pooled_q = parts[2];
  const auto& sim_q = parts[3];
  const auto& pooled_k = parts[4];
  const auto& sim_k = parts[5];
  const auto& scores = parts[6];  // (B, Hq, NQB, NKB)
  if (quantize) {
    out.q_int8 = at::empty({pr.batch, pr.heads_q, pr.seq_q, d}, q.options().dtype(at::kChar));
    out.q_scale = at::empty({pr.batch, pr.heads_q, nqb}, f32);
    out.k_int8 = at::empty({pr.batch, pr.heads_kv, pr.seq_k, d}, q.options().dtype(at::kChar));
    out.k_scale = at::empty({pr.batch, pr.heads_kv, nkb}, f32);
  }

  {
    const DType dtype = q.scalar_type() == at::kHalf ? DType::kFp16 : DType::kBf16;
    auto ks = stats_params(kh, bk);  // pass 1 over K: block sums for the mean
    ks.sums = k_sums.data_ptr<float>();
    check_cuda(launch_block_stats(ks, dtype, static_cast<int>(pr.batch), static_cast<int>(d), stream),
               "K block sums");
    check_cuda(
        launch_block_mean(k_sums.data_ptr<float>(), out.k_mean.data_ptr<float>(), static_cast<int>(pr.batch),
                          static_cast<int>(pr.heads_kv), static_cast<int>(nkb), static_cast<int>(pr.seq_k),
                          static_cast<int>(d), stream),
        "K mean");
    auto qs = stats_params(qh, bq);
    qs.pooled = pooled_q.data_ptr<float>();
    qs.similarity = sim_q.data_ptr<float>();
    auto ks2 = stats_params(kh, bk);  // pass 2 over K, smoothed
    ks2.shift = out.k_mean.data_ptr<float>();
    ks2.pooled = pooled_k.data_ptr<float>();
    ks2.similarity = sim_k.data_ptr<float>();
    if (quantize) {
      qs.quant = out.q_int8.data_ptr<int8_t>();
      qs.quant_scale = out.q_scale.data_ptr<float>();
      ks2.quant = out.k_int8.data_ptr<int8_t>();
      ks2.quant_scale = out.k_scale.data_ptr<float>();
    }
    check_cuda(launch_block_stats(qs, dtype, static_cast<int>(pr.batch), static_cast<int>(d), stream),
               "Q statistics");
    check_cuda(launch_block_stats(ks2, dtype, static_cast<int>(pr.batch), static_cast<int>(d), stream),
               "K statistics");
  }

  const auto dense = at::empty({B, hq, nqb, nkb}, q.options().dtype(at::kBool));
  const auto counts_indices = at::empty({B * hq * nqb * (nkb + 1)}, q.options().dtype(at::kInt));
  const auto counts = counts_indices.narrow(0, 0, B * hq * nqb).view({B, hq, nqb});
  const auto indices = counts_indices.narrow(0, B * hq * nqb, B * hq * nqb * nkb).view({B, hq, nqb, nkb});
  // Compressed scores (before the D^-0.5 scale) as one strided-batched float32 GEMM over (batch, kv head):
  // query heads h = hkv * G + g share pooled_k[hkv], so their rows stack into one (G * NQB, D) operand.
  check_cuda(launch_scores(pooled_q.data_ptr<float>(), pooled_k.data_ptr<float>(), scores.data_ptr<float>(),
                           static_cast<int>(B * hkv), static_cast<int>(g * nqb), static_cast<int>(nkb),
                           static_cast<int>(d), stream),
             "compressed scores");
  SelectParams s;
  s.scores = scores.data_ptr<float>();
  s.sim_q = sim_q.data_ptr<float>();
  s.sim_k = sim_k.data_ptr<float>();
  at::Tensor theta, tau, topk;  // device copies, only when the thresholds do not fit in the parameters
  if (pr.heads_q <= SelectParams::kInlineHeads) {
    const auto at_head = [&](const std::vector<double>& v, int64_t h) { return v.size() == 1 ? v[0] : v[h]; };
    for (int64_t h = 0; h < pr.heads_q; ++h) {
      s.simthreshd1_inline[h] = static_cast<float>(at_head(config.simthreshd1, h));
      s.cdfthreshd_inline[h] = static_cast<float>(at_head(config.cdfthreshd, h));
      s.topk_inline[h] = at_head(config.topk, h);
    }
  } else {
    theta = detail::per_head(config.simthreshd1, pr.heads_q, f32);
    tau = detail::per_head(config.cdfthreshd, pr.heads_q, f32);
    topk = detail::per_head(config.topk, pr.heads_q, q.options().dtype(at::kDouble));
    s.simthreshd1 = theta.data_ptr<float>();
    s.cdfthreshd = tau.data_ptr<float>();
    s.topk = topk.data_ptr<double>();
  }
  s.batch = static_cast<int>(pr.batch);
  s.heads_q = static_cast<int>(pr.heads_q);
  s.kv_group = static_cast<int>(pr.group());
  s.seq_q = static_cast<int>(pr.seq_q);
  s.seq_k = static_cast<int>(pr.seq_k);
  s.block_q = static_cast<int>(bq);
  s.block_k = static_cast<int>(bk);
  s.num_q_blocks = static_cast<int>(nqb);
  s.num_k_blocks = static_cast<int>(nkb);
  s.sort_size = 1;
  while (s.sort_size < nkb) s.sort_size <<= 1;
  s.inv_sqrt_d = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  s.causal = config.causal;
  s.use_topk = config.select == SelectMode::kTopk;
  s.keep_crossing = config.cdf_keep_crossing;
  s.attention_sink = config.attention_sink;
  s.dense = dense.data_ptr<bool>();
  s.counts = counts.data_ptr<int32_t>();
  s.indices = indices.data_ptr<int32_t>();
  check_cuda(launch_select_cta(s, stream), "block selection");

  out.mask.block_q = bq;
  out.mask.block_k = bk;
  out.mask.seq_q = pr.seq_q;
  out.mask.seq_k = pr.seq_k;
  out.mask.dense = dense;
  out.mask.counts = counts;
  out.mask.indices = indices;
  return out;
}

}  // namespace sparge::cuda::legacy
