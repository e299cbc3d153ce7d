// The API of stage-1 prediction on the GPU: checks the inputs (messages name the argument), fills the params,
// carves one workspace and launches the kernels on the current stream: the statistics (launch_stats), the
// score GEMM, the selection; quantize_qk_int8: its three passes (predict_quant.cu). The only torch-facing
// file of the predictor (predict_legacy.cpp is the test oracle).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <climits>
#include <cmath>
#include <cstdlib>

#include "../../src/internal.h"
#include "../api_common.h"
#include "predict_launch.h"
#include "sparge/cuda_predict.h"
#include "sparge/error.h"

namespace sparge::cuda {
namespace {

constexpr int64_t kMaxKeyBlocks = 8192;   // the CTA selection sorts a row in shared memory: 8 bytes per block
constexpr int64_t kWorkspaceAlign = 256;  // bytes: every workspace part 16-byte aligned (float4 GEMM loads)
constexpr int64_t kMaxIndex = INT_MAX / 4;  // sequence lengths and block sizes (int32 row indices)
using api::kMaxGridYZ;

void check_cuda(cudaError_t e, const char* what) {
  SPARGE_CHECK(e == cudaSuccess, what, " failed: ", cudaGetErrorString(e));
}

// One byte tensor carved into typed parts: reserve every part, allocate once (the host cost of allocations
// matters at short N), then take typed views.
class Workspace {
 public:
  int64_t reserve(int64_t count, at::ScalarType type) {
    const int64_t at = (bytes_ + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
    bytes_ = at + count * static_cast<int64_t>(c10::elementSize(type));
    return at;
  }
  void allocate(const at::TensorOptions& device) {
    buffer_ = at::empty({std::max<int64_t>(bytes_, 1)}, device.dtype(at::kByte));
  }
  at::Tensor part(int64_t at, int64_t count, at::ScalarType type) const {
    return buffer_.narrow(0, at, count * static_cast<int64_t>(c10::elementSize(type))).view(type);
  }
  template <typename T>
  T* ptr(int64_t at) const {
    return reinterpret_cast<T*>(buffer_.data_ptr<uint8_t>() + at);
  }

 private:
  int64_t bytes_ = 0;
  at::Tensor buffer_;
};

// Checks shared by both entry points; `fn` names the entry point.
detail::Problem check_gpu_inputs(const char* fn, const at::Tensor& q, const at::Tensor& k,
                                 const SpargeConfig& config) {
  const auto pr = detail::check_problem(fn, q, k, at::Tensor(), config);
  SPARGE_CHECK(q.is_cuda(), "argument `q`: expected a CUDA tensor, got device ", q.device());
  SPARGE_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16,
               "argument `q`: expected dtype float16 or bfloat16 on the GPU path, got ", q.scalar_type());
  SPARGE_CHECK(pr.head_dim == 64 || pr.head_dim == 128, "argument `q`: expected head dim 64 or 128, got ",
               pr.head_dim, " (other head dims run on the reference path)");
  // The kernels index rows with int32: block start + block size must stay below INT_MAX.
  SPARGE_CHECK(config.block_q <= kMaxIndex, "argument `block_q`: expected <= ", kMaxIndex, ", got ",
               config.block_q);
  SPARGE_CHECK(config.block_k <= kMaxIndex, "argument `block_k`: expected <= ", kMaxIndex, ", got ",
               config.block_k);
  const int64_t nqb = (pr.seq_q + config.block_q - 1) / config.block_q;
  const int64_t nkb = (pr.seq_k + config.block_k - 1) / config.block_k;
  // The statistics kernel numbers its work items (one or two blocks each) with int32.
  const int64_t items = 2 * pr.batch * pr.heads_kv * nkb + pr.batch * pr.heads_q * nqb;
  SPARGE_CHECK(pr.seq_q <= kMaxIndex && pr.seq_k <= kMaxIndex, "argument `q`: at most ", kMaxIndex,
               " tokens per sequence, got Nq = ", pr.seq_q, ", Nk = ", pr.seq_k);
  SPARGE_CHECK(items < INT_MAX, "argument `q`: at most ", INT_MAX, " blocks of Q and K in all, got ", items,
               " (Nq = ", pr.seq_q, ", Nk = ", pr.seq_k, ")");
  return pr;
}

StatsOperand stats_operand(const at::Tensor& x, int64_t block) {
  StatsOperand p;
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

// The K-mean workspaces and counters of the statistics kernel.
struct StatsWorkspace {
  int64_t counters = 0, sums = 0, parts = 0, mean = 0;
};
StatsWorkspace reserve_stats(Workspace& ws, const detail::Problem& pr, int64_t nkb) {
  const int64_t groups = pr.batch * pr.heads_kv, d = pr.head_dim;
  StatsWorkspace s;
  s.counters = ws.reserve(stats_counter_count(groups), at::kInt);
  s.sums = ws.reserve(groups * nkb * d, at::kFloat);
  s.parts = ws.reserve(groups * mean_parts(static_cast<int>(d)) * d, at::kDouble);
  s.mean = ws.reserve(groups * d, at::kFloat);
  return s;
}

// Launches the statistics (p's operands filled by the caller).
void run_stats(StatsParams& p, const Workspace& ws, const StatsWorkspace& s, const detail::Problem& pr,
               at::ScalarType dtype, cudaStream_t stream) {
  p.batch = static_cast<int>(pr.batch);
  p.k_sums = ws.ptr<float>(s.sums);
  p.k_parts = ws.ptr<double>(s.parts);
  p.k_mean = ws.ptr<float>(s.mean);
  p.counters = ws.ptr<int>(s.counters);
  const int d = static_cast<int>(pr.head_dim);
  check_cuda(dtype == at::kHalf ? launch_stats<DType::kFp16>(p, d, stream)
                                : launch_stats<DType::kBf16>(p, d, stream),
             "block statistics");
}

}  // namespace

Prediction predict_block_mask(const at::Tensor& q, const at::Tensor& k, const SpargeConfig& config,
                              bool quantize) {
  const auto pr = check_gpu_inputs(__func__, q, k, config);
  const int64_t bq = config.block_q, bk = config.block_k;
  const int64_t nqb = (pr.seq_q + bq - 1) / bq, nkb = (pr.seq_k + bk - 1) / bk;
  SPARGE_CHECK(nkb <= kMaxKeyBlocks, "argument `block_k`: at most ", kMaxKeyBlocks,
               " key blocks per row, got ", nkb, " (Nk = ", pr.seq_k, ", block_k = ", bk, ")");
  SPARGE_CHECK(pr.heads_q <= kMaxGridYZ && pr.batch <= kMaxGridYZ, "argument `q`: at most ", kMaxGridYZ,
               " heads and batch entries, got ", pr.heads_q, " and ", pr.batch);
  SPARGE_CHECK(pr.batch * pr.heads_kv <= kMaxGridYZ, "argument `k`: at most ", kMaxGridYZ,
               " (batch, kv head) pairs (one score GEMM per pair), got ", pr.batch * pr.heads_kv);

  const c10::cuda::CUDAGuard guard(q.device());
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  const auto qh = api::kernel_operand(detail::to_hnd(q, config.layout));
  const auto kh = api::kernel_operand(detail::to_hnd(k, config.layout));
  const int64_t B = pr.batch, hq = pr.heads_q, hkv = pr.heads_kv, g = pr.group(), d = pr.head_dim;

  Workspace ws;
  const auto sw = reserve_stats(ws, pr, nkb);
  const int64_t o_pooled_q = ws.reserve(B * hq * nqb * d, at::kFloat);
  const int64_t o_sim_q = ws.reserve(B * hq * nqb, at::kFloat);
  const int64_t o_pooled_k = ws.reserve(B * hkv * nkb * d, at::kFloat);
  const int64_t o_sim_k = ws.reserve(B * hkv * nkb, at::kFloat);
  const int64_t o_scores = ws.reserve(B * hq * nqb * nkb, at::kFloat);  // (B, Hq, NQB, NKB)
  ws.allocate(q.options());

  Prediction out;
  out.k_mean = ws.part(sw.mean, B * hkv * d, at::kFloat).view({B, hkv, d});
  if (quantize) {
    out.q_int8 = at::empty({B, hq, pr.seq_q, d}, q.options().dtype(at::kChar));
    out.q_scale = at::empty({B, hq, nqb}, q.options().dtype(at::kFloat));
    out.k_int8 = at::empty({B, hkv, pr.seq_k, d}, q.options().dtype(at::kChar));
    out.k_scale = at::empty({B, hkv, nkb}, q.options().dtype(at::kFloat));
  }

  StatsParams p;
  p.q = stats_operand(qh, bq);
  p.q.pooled = ws.ptr<float>(o_pooled_q);
  p.q.similarity = ws.ptr<float>(o_sim_q);
  p.k = stats_operand(kh, bk);  // outputs of the smoothed K
  p.k.pooled = ws.ptr<float>(o_pooled_k);
  p.k.similarity = ws.ptr<float>(o_sim_k);
  if (quantize) {
    p.q.quant = out.q_int8.data_ptr<int8_t>();
    p.q.quant_scale = out.q_scale.data_ptr<float>();
    p.k.quant = out.k_int8.data_ptr<int8_t>();
    p.k.quant_scale = out.k_scale.data_ptr<float>();
  }
  run_stats(p, ws, sw, pr, q.scalar_type(), stream);

  const auto dense = at::empty({B, hq, nqb, nkb}, q.options().dtype(at::kBool));
  const auto counts_indices = at::empty({B * hq * nqb * (nkb + 1)}, q.options().dtype(at::kInt));
  const auto counts = counts_indices.narrow(0, 0, B * hq * nqb).view({B, hq, nqb});
  const auto indices = counts_indices.narrow(0, B * hq * nqb, B * hq * nqb * nkb).view({B, hq, nqb, nkb});
  // Compressed scores (before the D^-0.5 scale) as one strided-batched float32 GEMM over (batch, kv head):
  // query heads h = hkv * G + g share pooled_k[hkv], so their rows stack into one (G * NQB, D) operand.
  check_cuda(launch_scores(ws.ptr<float>(o_pooled_q), ws.ptr<float>(o_pooled_k), ws.ptr<float>(o_scores),
                           static_cast<int>(B * hkv), static_cast<int>(g * nqb), static_cast<int>(nkb),
                           static_cast<int>(d), stream),
             "compressed scores");
  SelectParams s;
  s.scores = ws.ptr<float>(o_scores);
  s.sim_q = ws.ptr<float>(o_sim_q);
  s.sim_k = ws.ptr<float>(o_sim_k);
  const auto f32 = q.options().dtype(at::kFloat);
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
  check_cuda(launch_select(s, stream), "block selection");

  out.mask.block_q = bq;
  out.mask.block_k = bk;
  out.mask.seq_q = pr.seq_q;
  out.mask.seq_k = pr.seq_k;
  out.mask.dense = dense;
  out.mask.counts = counts;
  out.mask.indices = indices;
  return out;
}

QuantizedQK quantize_qk_int8(const at::Tensor& q, const at::Tensor& k, Layout layout, int64_t block_q,
                             int64_t block_k) {
  SpargeConfig config;  // only the layout and the block sizes matter here
  config.layout = layout;
  config.block_q = block_q;
  config.block_k = block_k;
  const auto pr = check_gpu_inputs(__func__, q, k, config);
  const int64_t nqb = (pr.seq_q + block_q - 1) / block_q, nkb = (pr.seq_k + block_k - 1) / block_k;
  SPARGE_CHECK(pr.batch <= kMaxGridYZ, "argument `q`: at most ", kMaxGridYZ, " batch entries, got ", pr.batch,
               " (the K mean kernel's grid)");

  const c10::cuda::CUDAGuard guard(q.device());
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  const auto qh = api::kernel_operand(detail::to_hnd(q, layout));
  const auto kh = api::kernel_operand(detail::to_hnd(k, layout));
  const int64_t B = pr.batch, hq = pr.heads_q, hkv = pr.heads_kv, d = pr.head_dim;

  Workspace ws;
  const auto sw = reserve_stats(ws, pr, nkb);
  ws.allocate(q.options());

  QuantizedQK out;
  out.k_mean = ws.part(sw.mean, B * hkv * d, at::kFloat).view({B, hkv, d});
  out.q_int8 = at::empty({B, hq, pr.seq_q, d}, q.options().dtype(at::kChar));
  out.q_scale = at::empty({B, hq, nqb}, q.options().dtype(at::kFloat));
  out.k_int8 = at::empty({B, hkv, pr.seq_k, d}, q.options().dtype(at::kChar));
  out.k_scale = at::empty({B, hkv, nkb}, q.options().dtype(at::kFloat));

  StatsParams p;
  p.q = stats_operand(qh, block_q);
  p.q.quant = out.q_int8.data_ptr<int8_t>();
  p.q.quant_scale = out.q_scale.data_ptr<float>();
  p.k = stats_operand(kh, block_k);
  p.k.quant = out.k_int8.data_ptr<int8_t>();
  p.k.quant_scale = out.k_scale.data_ptr<float>();
  // Three plain passes (predict_quant.cu) by default; SPARGE_QK_INT8_PASSES=0 runs the statistics kernel's
  // INT8-only variant instead (a measurement switch, read at every call: both give the same bits).
  const char* passes = std::getenv("SPARGE_QK_INT8_PASSES");
  if (passes == nullptr || passes[0] != '0') {
    check_cuda(launch_quantize_qk(p.q, p.k, q.scalar_type() == at::kHalf ? DType::kFp16 : DType::kBf16,
                                  static_cast<int>(B), static_cast<int>(d), ws.ptr<float>(sw.sums),
                                  ws.ptr<float>(sw.mean), stream),
               "INT8 quantization");
  } else {  // pooled and similarity outputs off: no row norms, Q and K each read once from DRAM
    run_stats(p, ws, sw, pr, q.scalar_type(), stream);
  }
  return out;
}

}  // namespace sparge::cuda
