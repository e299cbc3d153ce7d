// Torch custom ops (namespace `sparge`), loadable from Python with torch.ops.load_library(<path to
// libsparge_ops.so>) and callable from C++ through the dispatcher or the functions they wrap:
//
//   torch.ops.sparge.block_sparse_attention(q, k, v, mask_counts, mask_indices, block_q, block_k,
//       is_causal=False, scale=None, layout="HND", pvthreshd=None (stage 2 off), stage2_group_rows=32,
//       return_lse=False, quant="none", check_mask=True)
//       -> (out, lse)                         user mask (counts (B, Hq, NQB) int32, indices (B, Hq, NQB, NKB)
//       int32); quant="int8" / "int8_fp8" on CUDA quantizes q, k (and v for FP8) on the GPU inside the call
//       (cuda::quantize_qk_int8; FP8 V on a side stream meanwhile); check_mask: validate
//       the lists on the GPU first (counts in [0, NKB], listed indices in range and strictly ascending; one
//       small kernel and a synchronization per call: KernelOptions::check_mask); False trusts them
//       (out-of-range lists are then undefined behaviour), e.g. a mask validated once and reused. CPU
//       tensors: always validated.
//   torch.ops.sparge.spas_attention(q, k, v, is_causal=False, scale=None, layout="HND", simthreshd1=0.6,
//       cdfthreshd=0.98, pvthreshd=None, topk=None, attention_sink=False, stage2_group_rows=32,
//       return_lse=False, quant="none")
//       -> (out, lse)                         stage-1 prediction on the GPU + the block-sparse kernel;
//       quant="int8": INT8 Q and smoothed K from the same prediction pass, INT8 Q.K^T, 16-bit P.V;
//       quant="int8_fp8": the same with FP8 e4m3 P.V (sm_89+; 16-bit P.V below, see cuda_attention.h)
//   torch.ops.sparge.spas_attention.per_head(..., Tensor simthreshd1, Tensor cdfthreshd, Tensor pvthreshd,
//   ...)
//       the same with one threshold per query head (float tensors of Hq values)
//   torch.ops.sparge.predict_block_mask(q, k, is_causal=False, layout="HND", simthreshd1=0.6,
//   cdfthreshd=0.98,
//       topk=None, attention_sink=False) -> (dense, counts, indices)
//
// quant is "none" | "int8" | "int8_fp8" (SpargeConfig::quant). Semantics are those of sparge/reference.h
// (README "Algorithm contract"); q, k, v are fp16/bf16 CUDA tensors with D in {64, 128}; lse is float32 (B,
// Hq, Nq) natural log, an empty tensor when return_lse is false. Bad input raises with a message naming the
// argument.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "sparge/cuda_attention.h"
#include "sparge/cuda_predict.h"
#include "sparge/error.h"
#include "sparge/reference.h"

namespace sparge::ops {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<double> values_of(const at::Tensor& t, const char* name) {
  SPARGE_CHECK(t.defined() && t.dim() == 1 && at::isFloatingType(t.scalar_type()), "argument `", name,
               "`: expected a 1-D floating tensor of one value per query head");
  const auto c = t.to(at::kCPU, at::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

SpargeConfig make_config(bool is_causal, std::optional<double> scale, c10::string_view layout,
                         int64_t stage2_group_rows, bool return_lse, c10::string_view quant = "none") {
  SpargeConfig c;
  c.block_q = cuda::kBlockQ;
  c.block_k = cuda::kBlockK;
  c.causal = is_causal;
  c.scale = scale;
  c.layout = parse_layout(std::string_view(layout.data(), layout.size()));
  c.stage2_group_rows = stage2_group_rows;
  c.return_lse = return_lse;
  c.quant = parse_quant_mode(std::string_view(quant.data(), quant.size()));
  return c;
}

std::tuple<at::Tensor, at::Tensor> result(const AttentionResult& r) {
  return {r.out, r.lse.defined() ? r.lse : at::empty({0}, r.out.options().dtype(at::kFloat))};
}

void set_selection(SpargeConfig& c, std::optional<double> topk, bool attention_sink) {
  if (topk.has_value()) {
    c.select = SelectMode::kTopk;
    c.topk = {*topk};
  }
  c.attention_sink = attention_sink;
}

// QuantMode::kInt8Fp8 with FP8 P V: V's two quantization passes on a side stream while `main_work` (the INT8
// pass or the prediction) runs on the current stream; the current stream then waits for them, and opt gets
// the FP8 V. Otherwise (or with SPARGE_V_SIDE_STREAM=0, a measurement switch) just main_work, and
// block_sparse_attention quantizes V itself after it.
template <typename F>
void beside_fp8_v(const at::Tensor& v, const SpargeConfig& c, cuda::KernelOptions& opt, F&& main_work) {
  const char* env = std::getenv("SPARGE_V_SIDE_STREAM");
  if (c.quant != QuantMode::kInt8Fp8 || !cuda::fp8_pv_supported(v.device()) ||
      (env != nullptr && env[0] == '0')) {
    main_work();
    return;
  }
  const c10::cuda::CUDAGuard guard(v.device());
  const auto current = at::cuda::getCurrentCUDAStream();
  const auto side = at::cuda::getStreamFromPool(/*isHighPriority=*/false, v.device().index());
  at::cuda::CUDAEvent inputs_ready, v_ready;
  inputs_ready.record(current);
  inputs_ready.block(side);
  cuda::Fp8V fv;
  try {
    const c10::cuda::CUDAStreamGuard on_side(side);
    fv = cuda::quantize_v_fp8(v, c.layout);
  } catch (...) {
    v_ready.record(side);  // join the side stream on every path (a stream capture must not end forked)
    v_ready.block(current);
    throw;
  }
  v_ready.record(side);
  // The side stream allocated them; the current stream reads them (the allocator must not hand their blocks
  // to the side stream's later work before that).
  fv.values.record_stream(current);
  fv.scale.record_stream(current);
  try {
    main_work();
  } catch (...) {
    v_ready.block(current);  // (as above)
    throw;
  }
  v_ready.block(current);
  opt.v_fp8 = fv.values;
  opt.v_scale = fv.scale;
}

std::tuple<at::Tensor, at::Tensor> run_spas(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const SpargeConfig& c) {
  if (!q.is_cuda()) return result(spas_attention(q, k, v, c));  // CPU: the reference implementation
  cuda::KernelOptions opt;
  cuda::Prediction pred;
  beside_fp8_v(v, c, opt,
               [&] { pred = cuda::predict_block_mask(q, k, c, /*quantize=*/c.quant != QuantMode::kNone); });
  opt.check_mask = false;  // produced by the predictor: valid by construction
  cuda::set_int8_operands(opt, pred);
  return result(cuda::block_sparse_attention(q, k, v, pred.mask, c, opt));
}

std::tuple<at::Tensor, at::Tensor> block_sparse_attention_op(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask_counts,
    const at::Tensor& mask_indices, int64_t block_q, int64_t block_k, bool is_causal,
    std::optional<double> scale, c10::string_view layout, std::optional<double> pvthreshd,
    int64_t stage2_group_rows, bool return_lse, c10::string_view quant, bool check_mask) {
  auto c = make_config(is_causal, scale, layout, stage2_group_rows, return_lse, quant);
  c.pvthreshd = {pvthreshd.value_or(kInf)};
  SPARGE_CHECK(mask_counts.defined() && mask_counts.dim() == 3,
               "argument `mask_counts`: expected (B, Hq, NQB)");
  SPARGE_CHECK(mask_indices.defined() && mask_indices.dim() == 4,
               "argument `mask_indices`: expected (B, Hq, NQB, NKB)");
  const int h_axis = c.layout == Layout::kHND ? 1 : 2;
  BlockMask m;
  m.block_q = block_q;
  m.block_k = block_k;
  m.seq_q = q.size(3 - h_axis);
  m.seq_k = k.size(3 - h_axis);
  m.counts = mask_counts;
  m.indices = mask_indices;
  if (!q.is_cuda()) {  // CPU: the reference implementation over the dense view of the lists
    const int64_t nkb = mask_indices.size(3);
    const auto listed = at::arange(nkb, mask_counts.options()) < mask_counts.unsqueeze(-1);
    // Unlisted slots scatter into an extra column that is dropped afterwards.
    auto sizes = mask_indices.sizes().vec();
    sizes.back() = nkb + 1;
    auto dense = at::zeros(sizes, mask_counts.options().dtype(at::kBool));
    dense.scatter_(-1, at::where(listed, mask_indices, at::full_like(mask_indices, nkb)).to(at::kLong), true);
    dense = dense.narrow(-1, 0, nkb).contiguous();
    return result(
        block_sparse_attention(q, k, v, BlockMask::from_dense(dense, block_q, block_k, m.seq_q, m.seq_k), c));
  }
  m.dense = at::empty({0}, mask_counts.options().dtype(at::kBool));  // the kernel reads the lists only
  cuda::KernelOptions opt;
  opt.check_mask = check_mask;
  if (c.quant != QuantMode::kNone) {  // INT8 Q and smoothed K only (no prediction: the mask is given)
    beside_fp8_v(v, c, opt, [&] {
      const auto qk = cuda::quantize_qk_int8(q, k, c.layout, cuda::kBlockQ, cuda::kBlockK);
      opt.q_int8 = qk.q_int8;
      opt.q_scale = qk.q_scale;
      opt.k_int8 = qk.k_int8;
      opt.k_scale = qk.k_scale;
    });
  }
  return result(cuda::block_sparse_attention(q, k, v, m, c, opt));
}

std::tuple<at::Tensor, at::Tensor> spas_attention_op(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool is_causal,
    std::optional<double> scale, c10::string_view layout, double simthreshd1, double cdfthreshd,
    std::optional<double> pvthreshd, std::optional<double> topk, bool attention_sink,
    int64_t stage2_group_rows, bool return_lse, c10::string_view quant) {
  auto c = make_config(is_causal, scale, layout, stage2_group_rows, return_lse, quant);
  c.simthreshd1 = {simthreshd1};
  c.cdfthreshd = {cdfthreshd};
  c.pvthreshd = {pvthreshd.value_or(kInf)};
  set_selection(c, topk, attention_sink);
  return run_spas(q, k, v, c);
}

std::tuple<at::Tensor, at::Tensor> spas_attention_per_head_op(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool is_causal,
    std::optional<double> scale, c10::string_view layout, const at::Tensor& simthreshd1,
    const at::Tensor& cdfthreshd, const at::Tensor& pvthreshd, std::optional<double> topk,
    bool attention_sink, int64_t stage2_group_rows, bool return_lse, c10::string_view quant) {
  auto c = make_config(is_causal, scale, layout, stage2_group_rows, return_lse, quant);
  c.simthreshd1 = values_of(simthreshd1, "simthreshd1");
  c.cdfthreshd = values_of(cdfthreshd, "cdfthreshd");
  c.pvthreshd = values_of(pvthreshd, "pvthreshd");
  set_selection(c, topk, attention_sink);
  return run_spas(q, k, v, c);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> predict_block_mask_op(const at::Tensor& q, const at::Tensor& k,
                                                                     bool is_causal, c10::string_view layout,
                                                                     double simthreshd1, double cdfthreshd,
                                                                     std::optional<double> topk,
                                                                     bool attention_sink) {
  auto c = make_config(is_causal, std::nullopt, layout, 0, false);
  c.simthreshd1 = {simthreshd1};
  c.cdfthreshd = {cdfthreshd};
  set_selection(c, topk, attention_sink);
  const auto mask =
      q.is_cuda() ? cuda::predict_block_mask(q, k, c).mask : sparge::predict_block_mask(q, k, c);
  return {mask.dense, mask.counts, mask.indices};
}

}  // namespace
}  // namespace sparge::ops

TORCH_LIBRARY(sparge, m) {
  m.def(
      "block_sparse_attention(Tensor q, Tensor k, Tensor v, Tensor mask_counts, Tensor mask_indices, int "
      "block_q, "
      "int block_k, bool is_causal=False, float? scale=None, str layout=\"HND\", float? pvthreshd=None, "
      "int stage2_group_rows=32, bool return_lse=False, str quant=\"none\", bool check_mask=True) "
      "-> (Tensor, Tensor)");
  m.def(
      "spas_attention(Tensor q, Tensor k, Tensor v, bool is_causal=False, float? scale=None, str "
      "layout=\"HND\", "
      "float simthreshd1=0.6, float cdfthreshd=0.98, float? pvthreshd=None, float? topk=None, "
      "bool attention_sink=False, int stage2_group_rows=32, bool return_lse=False, str quant=\"none\") -> "
      "(Tensor, Tensor)");
  m.def(
      "spas_attention.per_head(Tensor q, Tensor k, Tensor v, bool is_causal=False, float? scale=None, "
      "str layout=\"HND\", *, Tensor simthreshd1, Tensor cdfthreshd, Tensor pvthreshd, float? topk=None, "
      "bool attention_sink=False, int stage2_group_rows=32, bool return_lse=False, str quant=\"none\") -> "
      "(Tensor, Tensor)");
  m.def(
      "predict_block_mask(Tensor q, Tensor k, bool is_causal=False, str layout=\"HND\", float "
      "simthreshd1=0.6, "
      "float cdfthreshd=0.98, float? topk=None, bool attention_sink=False) -> (Tensor, Tensor, Tensor)");
}

// CUDA tensors run the kernels; CPU tensors run the reference implementation (same semantics, any D, slow).
#define SPARGE_IMPLS(m)                                                        \
  m.impl("block_sparse_attention", &sparge::ops::block_sparse_attention_op);   \
  m.impl("spas_attention", &sparge::ops::spas_attention_op);                   \
  m.impl("spas_attention.per_head", &sparge::ops::spas_attention_per_head_op); \
  m.impl("predict_block_mask", &sparge::ops::predict_block_mask_op)
TORCH_LIBRARY_IMPL(sparge, CUDA, m) {
  SPARGE_IMPLS(m);
}
TORCH_LIBRARY_IMPL(sparge, CPU, m) {
  SPARGE_IMPLS(m);
}
#undef SPARGE_IMPLS
