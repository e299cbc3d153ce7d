// The API of the CUDA block-sparse attention kernels: checks every input (messages name the argument, the
// expected and the actual value), fills AttentionParams, dispatches (dtype, head dim, Q K^T precision) to
// the instantiations and assembles the AttentionResult. The only file of the kernels that sees torch.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numbers>

#include "../src/internal.h"
#include "api_common.h"
#include "hopper/launch_sm90.h"
#include "launch.h"
#include "params.h"
#include "sparge/blocks.h"
#include "sparge/cuda_attention.h"
#include "sparge/error.h"
#include "tile_config.h"

namespace sparge::cuda {
namespace {

using api::cat;
using api::kernel_operand;
using api::kMaxGridYZ;
using api::set_strides;

static_assert(kBlockQ == kKernelBlockQ && kBlockK == kKernelBlockK && kStage2WarpRows == kKernelWarpRows,
              "cuda_attention.h mirrors tile_config.h");

// kAuto -> SPARGE_TILE_ORDER (0: natural, anything else: heavy rows first), else heavy rows first.
TileOrder resolve_tile_order(TileOrder requested) {
  if (requested != TileOrder::kAuto) return requested;
  const char* env = std::getenv("SPARGE_TILE_ORDER");
  return env != nullptr && env[0] == '0' ? TileOrder::kNatural : TileOrder::kHeavyRowsFirst;
}

void check_mask_tensors(const BlockMask& mask, const detail::Problem& p, const at::Tensor& q) {
  const int64_t nqb = mask.num_q_blocks(), nkb = mask.num_k_blocks();
  SPARGE_CHECK(mask.seq_q == p.seq_q && mask.seq_k == p.seq_k, "argument `mask`: expected Nq = ", p.seq_q,
               ", Nk = ", p.seq_k, " (of q, k), got ", mask.seq_q, ", ", mask.seq_k);
  SPARGE_CHECK(mask.counts.defined() && mask.indices.defined(),
               "argument `mask`: expected counts and indices (build it with BlockMask::from_dense)");
  SPARGE_CHECK(mask.counts.scalar_type() == at::kInt, "argument `mask.counts`: expected dtype int32, got ",
               mask.counts.scalar_type());
  SPARGE_CHECK(mask.indices.scalar_type() == at::kInt, "argument `mask.indices`: expected dtype int32, got ",
               mask.indices.scalar_type());
  const std::vector<int64_t> counts_shape = {p.batch, p.heads_q, nqb},
                             indices_shape = {p.batch, p.heads_q, nqb, nkb};
  SPARGE_CHECK(mask.counts.sizes() == at::IntArrayRef(counts_shape),
               "argument `mask.counts`: expected shape ", at::IntArrayRef(counts_shape), ", got ",
               mask.counts.sizes());
  SPARGE_CHECK(mask.indices.sizes() == at::IntArrayRef(indices_shape),
               "argument `mask.indices`: expected shape ", at::IntArrayRef(indices_shape), ", got ",
               mask.indices.sizes());
  SPARGE_CHECK(mask.counts.device() == q.device(), "argument `mask.counts`: expected device ", q.device(),
               ", got ", mask.counts.device());
  SPARGE_CHECK(mask.indices.device() == q.device(), "argument `mask.indices`: expected device ", q.device(),
               ", got ", mask.indices.device());
}

// Device-side validation of the lists: one kernel, one synchronization (counts and indices contiguous).
void check_mask_contents(const at::Tensor& counts, const at::Tensor& indices, int64_t nkb) {
  const auto flags = at::zeros({1}, counts.options());
  const auto stream = at::cuda::getCurrentCUDAStream(counts.device().index()).stream();
  const cudaError_t err =
      launch_check_mask(counts.data_ptr<int32_t>(), indices.data_ptr<int32_t>(), counts.numel(),
                        static_cast<int>(nkb), flags.data_ptr<int32_t>(), stream);
  SPARGE_CHECK(err == cudaSuccess, "block mask check launch failed: ", cudaGetErrorString(err));
  const int bad = flags.item<int32_t>();
  SPARGE_CHECK(!(bad & kMaskBadCount), "argument `mask.counts`: expected values in [0, ", nkb, "]");
  SPARGE_CHECK(!(bad & kMaskBadIndex),
               "argument `mask.indices`: expected the first counts entries of each row in [0, ", nkb, ")");
  SPARGE_CHECK(!(bad & kMaskNotAscending),
               "argument `mask.indices`: expected the listed key blocks of each row strictly ascending");
}

// One INT8 operand of QuantMode::kInt8 (options.q_int8 / k_int8 with their scales): shapes (B, H, N, D) and
// (B, H, NB), int8 / float32, contiguous, on q's device, 16-byte aligned.
void check_int8_operand(const at::Tensor& values, const at::Tensor& scale, const char* name,
                        const std::vector<int64_t>& shape, int64_t blocks, const at::Device& device) {
  SPARGE_CHECK(values.defined() && scale.defined(), "argument `options.", name, "_int8` / `options.", name,
               "_scale`: expected both defined or both undefined");
  SPARGE_CHECK(values.sizes() == at::IntArrayRef(shape) && values.scalar_type() == at::kChar &&
                   values.device() == device && values.is_contiguous() &&
                   reinterpret_cast<uintptr_t>(values.data_ptr()) % 16 == 0,
               "argument `options.", name,
               "_int8`: expected a contiguous, 16-byte aligned int8 tensor of shape ", at::IntArrayRef(shape),
               " on ", device, ", got ", values.scalar_type(), " ", values.sizes(), " on ", values.device(),
               values.is_contiguous() ? "" : " (not contiguous)");
  const std::vector<int64_t> scale_shape = {shape[0], shape[1], blocks};
  SPARGE_CHECK(scale.sizes() == at::IntArrayRef(scale_shape) && scale.scalar_type() == at::kFloat &&
                   scale.device() == device && scale.is_contiguous(),
               "argument `options.", name, "_scale`: expected a contiguous float32 tensor of shape ",
               at::IntArrayRef(scale_shape), " (one scale per ", name == std::string("q") ? kBlockQ : kBlockK,
               " rows) on ", device, ", got ", scale.scalar_type(), " ", scale.sizes(), " on ",
               scale.device());
}

// Mask statistics computed from the mask itself (block and token counts), as the reference defines them.
void fill_mask_stats(AttentionStats& st, const BlockMask& mask, const detail::Problem& p, bool causal,
                     const at::Tensor& counts) {
  const auto dev = counts.options();
  const int64_t bq = mask.block_q, bk = mask.block_k, nqb = mask.num_q_blocks(), nkb = mask.num_k_blocks();
  const auto valid = causal_valid_blocks(p.seq_q, p.seq_k, bq, bk, causal, dev);  // (NQB, NKB)
  const auto pairs = block_pair_counts(p.seq_q, p.seq_k, bq, bk, causal, dev);    // allowed pairs, (NQB, NKB)
  const auto opt = dev.dtype(at::kLong);
  // Listed blocks as a dense (B, H, NQB, NKB) view from counts/indices (mask.dense may be absent).
  const auto listed = at::arange(nkb, mask.indices.options()) < counts.unsqueeze(-1);
  auto dense = at::zeros({p.batch, p.heads_q, nqb, nkb + 1}, opt);
  dense.scatter_(
      -1, at::where(listed, mask.indices, at::full_like(mask.indices, static_cast<int>(nkb))).to(at::kLong),
      1);
  const auto d = dense.narrow(-1, 0, nkb).to(at::kBool);
  const auto sums =
      at::stack({(d & valid).sum(), (d.to(at::kLong) * pairs).sum(), valid.sum(), pairs.sum()}).cpu();
  const auto* v = sums.data_ptr<int64_t>();
  st.computed_blocks = v[0];
  st.computed_pairs = v[1];
  st.valid_blocks = p.batch * p.heads_q * v[2];
  st.valid_pairs = p.batch * p.heads_q * v[3];
}

}  // namespace

std::string_view to_string(KernelPath path) {
  switch (path) {
    case KernelPath::kAuto:
      return "auto";
    case KernelPath::kPortable:
      return "portable";
    case KernelPath::kSm90:
      return "sm90";
  }
  return "?";
}

KernelPath parse_kernel_path(std::string_view name) {
  for (KernelPath p : {KernelPath::kAuto, KernelPath::kPortable, KernelPath::kSm90})
    if (name == to_string(p)) return p;
  detail::fail(__func__, "kernel path: expected auto, portable or sm90, got '", std::string(name), "'");
}

bool sm90_supported(const at::Device& device) {
  if (!device.is_cuda()) return false;
  const auto* prop = at::cuda::getDeviceProperties(device.index());
  return prop->major == 9 && prop->minor == 0;
}

KernelPath resolve_kernel_path(const at::Device& device, KernelPath requested) {
  if (requested == KernelPath::kAuto) {
    const char* env = std::getenv("SPARGE_KERNEL_PATH");
    if (env != nullptr && *env != '\0') {
      try {
        requested = parse_kernel_path(env);
      } catch (const Error&) {
        detail::fail(__func__,
                     "environment variable SPARGE_KERNEL_PATH: expected auto, portable or sm90, got '", env,
                     "'");
      }
    }
  }
  const bool sm90_applies = sm90_supported(device);
  if (requested == KernelPath::kSm90) {
    SPARGE_CHECK(sm90_applies,
                 "argument `options.path`: the sm90 kernel needs a device of compute capability 9.0, got "
                 "device ",
                 device, " (not sm_90)");
    return KernelPath::kSm90;
  }
  if (requested == KernelPath::kPortable) return KernelPath::kPortable;
  return sm90_applies ? KernelPath::kSm90 : KernelPath::kPortable;
}

bool fp8_pv_supported(const at::Device& device) {
  if (!device.is_cuda()) return false;
  const auto* prop = at::cuda::getDeviceProperties(device.index());
  return prop->major * 10 + prop->minor >= 89;
}

std::string unsupported_reason(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const SpargeConfig& c, int64_t mask_block_q, int64_t mask_block_k) {
  if (!q.defined() || !k.defined() || !v.defined())
    return "arguments `q`, `k`, `v`: expected defined tensors";
  if (!q.is_cuda()) return cat("argument `q`: expected a CUDA tensor, got device ", q.device());
  if (q.scalar_type() != at::kHalf && q.scalar_type() != at::kBFloat16)
    return cat("argument `q`: expected dtype float16 or bfloat16, got ", q.scalar_type());
  if (q.dim() != 4) return cat("argument `q`: expected rank 4, got ", q.dim());
  if (q.size(3) != 64 && q.size(3) != 128)
    return cat("argument `q`: expected head dim 64 or 128, got ", q.size(3));
  if (mask_block_q != kBlockQ || mask_block_k != kBlockK)
    return cat("argument `mask`: expected blocks ", kBlockQ, "x", kBlockK, " (the kernel tile), got ",
               mask_block_q, "x", mask_block_k);
  if (c.stage2_group_rows != 0 && c.stage2_group_rows != kStage2WarpRows && c.stage2_group_rows != kBlockQ)
    return cat("argument `config.stage2_group_rows`: expected 0 or ", kBlockQ, " (per CTA tile) or ",
               kStage2WarpRows, " (per warp), got ", c.stage2_group_rows);
  const int h_axis = c.layout == Layout::kHND ? 1 : 2;
  if (q.size(0) > kMaxGridYZ || q.size(h_axis) > kMaxGridYZ)
    return cat("argument `q`: expected batch and heads <= ", kMaxGridYZ, " (grid limits), got ", q.size(0),
               ", ", q.size(h_axis));
  const int64_t max_seq = std::numeric_limits<int32_t>::max() - kBlockQ;
  if (q.size(3 - h_axis) > max_seq || k.dim() != 4 || k.size(3 - h_axis) > max_seq)
    return cat("arguments `q`, `k`: expected rank 4 and sequence lengths <= ", max_seq);
  return "";
}

namespace {

// quantize_v_fp8 of a kernel operand vh (HND view, 16-byte aligned rows), into NPAD key columns.
Fp8V quantize_v_fp8_hnd(const at::Tensor& vh, int64_t n_pad, cudaStream_t stream) {
  const int64_t batch = vh.size(0), heads = vh.size(1), seq = vh.size(2), d = vh.size(3);
  const auto scales = at::empty({2, batch, heads, d}, vh.options().dtype(at::kFloat));  // amax work, scale
  Fp8V out;
  out.scale = scales[1];
  out.values = at::empty({batch, heads, d, n_pad}, vh.options().dtype(at::kByte));
  QuantizeVParams qv;
  qv.v = vh.data_ptr();
  set_strides(vh, qv.batch_stride, qv.head_stride, qv.row_stride);
  qv.batch = static_cast<int>(batch);
  qv.heads = static_cast<int>(heads);
  qv.seq = static_cast<int>(seq);
  qv.head_dim = static_cast<int>(d);
  qv.n_pad = static_cast<int>(n_pad);
  qv.amax_work = scales[0].data_ptr<float>();
  qv.v_scale = out.scale.data_ptr<float>();
  qv.vt = out.values.data_ptr<uint8_t>();
  const cudaError_t err =
      launch_quantize_v_fp8(qv, vh.scalar_type() == at::kHalf ? DType::kFp16 : DType::kBf16, stream);
  SPARGE_CHECK(err == cudaSuccess, "FP8 V quantization launch failed: ", cudaGetErrorString(err));
  return out;
}

// KernelOptions::v_fp8 / v_scale against the call's V: values (B, Hkv, D, NPAD) uint8, scale (B, Hkv, D)
// float32, both contiguous on `device`, values 16-byte aligned, scale 8-byte aligned (read as float2).
void check_fp8_v_operand(const KernelOptions& o, const std::vector<int64_t>& shape,
                         const at::Device& device) {
  SPARGE_CHECK(o.v_fp8.defined() && o.v_scale.defined(),
               "argument `options.v_fp8` / `options.v_scale`: expected both defined or both undefined");
  SPARGE_CHECK(o.v_fp8.sizes() == at::IntArrayRef(shape) && o.v_fp8.scalar_type() == at::kByte &&
                   o.v_fp8.device() == device && o.v_fp8.is_contiguous() &&
                   reinterpret_cast<uintptr_t>(o.v_fp8.data_ptr()) % 16 == 0,
               "argument `options.v_fp8`: expected a contiguous, 16-byte aligned uint8 tensor of shape ",
               at::IntArrayRef(shape), " on ", device, " (quantize_v_fp8 of v), got ", o.v_fp8.scalar_type(),
               " ", o.v_fp8.sizes(), " on ", o.v_fp8.device(),
               o.v_fp8.is_contiguous() ? "" : " (not contiguous)");
  const std::vector<int64_t> scale_shape(shape.begin(), shape.end() - 1);
  SPARGE_CHECK(o.v_scale.sizes() == at::IntArrayRef(scale_shape) && o.v_scale.scalar_type() == at::kFloat &&
                   o.v_scale.device() == device && o.v_scale.is_contiguous() &&
                   reinterpret_cast<uintptr_t>(o.v_scale.data_ptr()) % 8 == 0,
               "argument `options.v_scale`: expected a contiguous, 8-byte aligned float32 tensor of shape ",
               at::IntArrayRef(scale_shape), " on ", device, ", got ", o.v_scale.scalar_type(), " ",
               o.v_scale.sizes(), " on ", o.v_scale.device());
}

// launch_heavy_rows_first's (position, count) pairs of a mask's rows: (B * Hq * NQB, 2) int32.
at::Tensor heavy_rows_first_pairs(const at::Tensor& counts) {
  SPARGE_CHECK(counts.defined() && counts.is_cuda() && counts.scalar_type() == at::kInt && counts.dim() == 3,
               "argument `counts`: expected an int32 CUDA tensor (B, Hq, NQB), got ",
               counts.defined() ? cat(counts.scalar_type(), " ", counts.sizes(), " on ", counts.device())
                                : std::string("an undefined tensor"));
  SPARGE_CHECK(counts.numel() < std::numeric_limits<int32_t>::max(),
               "argument `counts`: expected fewer than ", std::numeric_limits<int32_t>::max(), " rows, got ",
               counts.numel());
  const c10::cuda::CUDAGuard guard(counts.device());
  const auto c = counts.contiguous();
  auto pairs = at::empty({c.numel(), 2}, c.options());
  const cudaError_t err =
      launch_heavy_rows_first(c.data_ptr<int32_t>(), c.numel(), static_cast<int>(c.size(2)),
                              pairs.data_ptr<int32_t>(), at::cuda::getCurrentCUDAStream().stream());
  SPARGE_CHECK(err == cudaSuccess, "tile order launch failed: ", cudaGetErrorString(err));
  return pairs;
}

}  // namespace

Fp8V quantize_v_fp8(const at::Tensor& v, Layout layout) {
  SPARGE_CHECK(v.defined() && v.is_cuda() && v.dim() == 4 &&
                   (v.scalar_type() == at::kHalf || v.scalar_type() == at::kBFloat16),
               "argument `v`: expected a float16 or bfloat16 CUDA tensor of rank 4, got ",
               v.defined() ? cat(v.scalar_type(), " ", v.sizes(), " on ", v.device())
                           : std::string("an undefined tensor"));
  SPARGE_CHECK(fp8_pv_supported(v.device()),
               "argument `v`: expected a device with FP8 MMA (compute capability ", ">= 8.9), got ",
               v.device());
  const c10::cuda::CUDAGuard guard(v.device());
  const auto vh = kernel_operand(detail::to_hnd(v, layout));
  const int64_t d = vh.size(3), seq = vh.size(2);
  SPARGE_CHECK(d == 64 || d == 128, "argument `v`: expected head dim 64 or 128, got ", d);
  SPARGE_CHECK(seq > 0 && seq <= std::numeric_limits<int32_t>::max() - kBlockK,
               "argument `v`: expected a sequence length in [1, ",
               std::numeric_limits<int32_t>::max() - kBlockK, "], got ", seq);
  const int64_t n_pad = (seq + kBlockK - 1) / kBlockK * kBlockK;
  return quantize_v_fp8_hnd(vh, n_pad, at::cuda::getCurrentCUDAStream().stream());
}

at::Tensor heavy_rows_first_order(const at::Tensor& counts) {
  return heavy_rows_first_pairs(counts).select(1, 0).contiguous();
}

AttentionResult block_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const BlockMask& mask, const SpargeConfig& config,
                                       const KernelOptions& options) {
  SpargeConfig c = config;
  c.block_q = mask.block_q;
  c.block_k = mask.block_k;
  SPARGE_CHECK(v.defined(), "argument `v`: expected a defined tensor");
  const auto p = detail::check_problem(__func__, q, k, v, c);
  const std::string why = unsupported_reason(q, k, v, c, mask.block_q, mask.block_k);
  SPARGE_CHECK(why.empty(), why);
  check_mask_tensors(mask, p, q);
  const c10::cuda::CUDAGuard guard(q.device());
  const auto counts = mask.counts.contiguous(), indices = mask.indices.contiguous();
  if (options.check_mask) check_mask_contents(counts, indices, mask.num_k_blocks());

  const auto qh = kernel_operand(detail::to_hnd(q, c.layout));
  const auto kh = kernel_operand(detail::to_hnd(k, c.layout));
  // QuantMode::kInt8 / kInt8Fp8: the caller's INT8 Q and smoothed K (the GPU predictor's), else quantized
  // here exactly as the reference emulation does (float32, sparge::quantize_int8_blocks; slower, torch ops).
  // kInt8Fp8 on a device without FP8 MMA (below sm_89) runs kInt8's 16-bit P V (fp8_pv_supported).
  const bool int8 = c.quant != QuantMode::kNone;
  const bool fp8 = c.quant == QuantMode::kInt8Fp8 && fp8_pv_supported(q.device());
  // V itself is not read when its FP8 operand is handed over (no copy of a misaligned v then).
  const bool v_given = fp8 && (options.v_fp8.defined() || options.v_scale.defined());
  const auto vh = v_given ? at::Tensor() : kernel_operand(detail::to_hnd(v, c.layout));
  at::Tensor q_int8 = options.q_int8, q_scale = options.q_scale, k_int8 = options.k_int8,
             k_scale = options.k_scale;
  if (int8) {
    if (!q_int8.defined() && !q_scale.defined()) {
      const auto qi = quantize_int8_blocks(detail::to_hnd(q, c.layout).to(at::kFloat), kBlockQ);
      q_int8 = qi.values.to(at::kChar).contiguous();
      q_scale = qi.scale.to(at::kFloat).contiguous();
    }
    if (!k_int8.defined() && !k_scale.defined()) {
      const auto kf = detail::to_hnd(k, c.layout).to(at::kFloat);
      const auto ki = quantize_int8_blocks(kf - kf.mean(2, /*keepdim=*/true), kBlockK);
      k_int8 = ki.values.to(at::kChar).contiguous();
      k_scale = ki.scale.to(at::kFloat).contiguous();
    }
    check_int8_operand(q_int8, q_scale, "q", {p.batch, p.heads_q, p.seq_q, p.head_dim}, mask.num_q_blocks(),
                       q.device());
    check_int8_operand(k_int8, k_scale, "k", {p.batch, p.heads_kv, p.seq_k, p.head_dim}, mask.num_k_blocks(),
                       q.device());
  }
  AttentionResult r;
  const std::vector<int64_t> lse_shape = {p.batch, p.heads_q, p.seq_q};
  if (options.out.defined()) {
    const auto& o = options.out;
    SPARGE_CHECK(o.sizes() == q.sizes() && o.scalar_type() == q.scalar_type() && o.device() == q.device() &&
                     o.is_contiguous() && reinterpret_cast<uintptr_t>(o.data_ptr()) % 16 == 0,
                 "argument `options.out`: expected a contiguous, 16-byte aligned ", q.scalar_type(),
                 " tensor of shape ", q.sizes(), " on ", q.device(), ", got ", o.scalar_type(), " ",
                 o.sizes(), " on ", o.device(), o.is_contiguous() ? "" : " (not contiguous)");
    r.out = o;
  } else {
    r.out = at::empty(q.sizes(), q.options());  // contiguous in the layout: 16-byte aligned rows
  }
  const auto oh = detail::to_hnd(r.out, c.layout);
  if (c.return_lse) {
    if (options.lse.defined()) {
      const auto& l = options.lse;
      SPARGE_CHECK(l.sizes() == at::IntArrayRef(lse_shape) && l.scalar_type() == at::kFloat &&
                       l.device() == q.device() && l.is_contiguous(),
                   "argument `options.lse`: expected a contiguous float32 tensor of shape ",
                   at::IntArrayRef(lse_shape), " on ", q.device(), ", got ", l.scalar_type(), " ", l.sizes(),
                   " on ", l.device());
      r.lse = l;
    } else {
      r.lse = at::empty(lse_shape, q.options().dtype(at::kFloat));
    }
  }

  // FP8 P V: V^T in e4m3 with per-channel scales (the caller's, or two passes over V here).
  const int64_t n_pad = mask.num_k_blocks() * kBlockK;
  const auto stream = at::cuda::getCurrentCUDAStream(q.device().index()).stream();
  Fp8V fv;
  if (fp8) {
    if (v_given) {
      check_fp8_v_operand(options, {p.batch, p.heads_kv, p.head_dim, n_pad}, q.device());
      fv = {options.v_fp8, options.v_scale};
    } else {
      fv = quantize_v_fp8_hnd(vh, n_pad, stream);
    }
  }
  const at::Tensor& v_fp8 = fv.values;
  const at::Tensor& v_scale = fv.scale;

  AttentionParams prm;
  const auto& q_op = int8 ? q_int8 : qh;
  const auto& k_op = int8 ? k_int8 : kh;
  prm.q = q_op.data_ptr();
  prm.k = k_op.data_ptr();
  prm.v = fp8 ? v_fp8.data_ptr() : vh.data_ptr();
  prm.o = oh.data_ptr();
  prm.lse = c.return_lse ? r.lse.data_ptr<float>() : nullptr;
  if (int8) {
    prm.q_scale = q_scale.data_ptr<float>();
    prm.k_scale = k_scale.data_ptr<float>();
  }
  if (fp8) prm.v_scale = v_scale.data_ptr<float>();
  set_strides(q_op, prm.q_batch_stride, prm.q_head_stride, prm.q_row_stride);
  set_strides(k_op, prm.k_batch_stride, prm.k_head_stride, prm.k_row_stride);
  set_strides(fp8 ? v_fp8 : vh, prm.v_batch_stride, prm.v_head_stride, prm.v_row_stride);
  set_strides(oh, prm.o_batch_stride, prm.o_head_stride, prm.o_row_stride);
  prm.batch = static_cast<int>(p.batch);
  prm.heads_q = static_cast<int>(p.heads_q);
  prm.heads_kv = static_cast<int>(p.heads_kv);
  prm.kv_group = static_cast<int>(p.group());
  prm.seq_q = static_cast<int>(p.seq_q);
  prm.seq_k = static_cast<int>(p.seq_k);
  prm.head_dim = static_cast<int>(p.head_dim);
  prm.scale_log2 = static_cast<float>(p.scale * std::numbers::log2e);
  prm.causal = c.causal;
  prm.mask_counts = counts.data_ptr<int32_t>();
  prm.mask_indices = indices.data_ptr<int32_t>();
  prm.num_q_blocks = static_cast<int>(mask.num_q_blocks());
  prm.num_k_blocks = static_cast<int>(mask.num_k_blocks());

  const bool stage2 =
      std::any_of(c.pvthreshd.begin(), c.pvthreshd.end(), [](double x) { return std::isfinite(x); });
  at::Tensor pvthreshd;
  if (stage2) {
    pvthreshd = detail::per_head(c.pvthreshd, p.heads_q, q.options().dtype(at::kFloat)).contiguous();
    prm.pvthreshd = pvthreshd.data_ptr<float>();
  }
  prm.stage2_granularity =
      c.stage2_group_rows == kStage2WarpRows ? Stage2Granularity::kWarp : Stage2Granularity::kCta;
  at::Tensor counters;
  if (options.collect_stats) {
    counters = at::zeros({2}, q.options().dtype(at::kLong));
    prm.stage2_units = counters.data_ptr<int64_t>();
    prm.stage2_skipped = counters.data_ptr<int64_t>() + 1;
  }

  const bool fp16 = q.scalar_type() == at::kHalf;
  const KernelPath path = resolve_kernel_path(q.device(), options.path);
  at::Tensor tile_order;
  if (path == KernelPath::kSm90 && resolve_tile_order(options.tile_order) == TileOrder::kHeavyRowsFirst &&
      counts.numel() > 0 && counts.numel() < std::numeric_limits<int32_t>::max()) {
    tile_order = heavy_rows_first_pairs(counts);
    prm.tile_order = tile_order.data_ptr<int32_t>();
  }
  const auto launch_qk = [&]<Precision kQk>() {
    if (path == KernelPath::kSm90) {
      if (p.head_dim == 64)
        return fp16 ? launch_block_sparse_attention_sm90<DType::kFp16, 64, kQk>(prm, stream)
                    : launch_block_sparse_attention_sm90<DType::kBf16, 64, kQk>(prm, stream);
      return fp16 ? launch_block_sparse_attention_sm90<DType::kFp16, 128, kQk>(prm, stream)
                  : launch_block_sparse_attention_sm90<DType::kBf16, 128, kQk>(prm, stream);
    }
    if (p.head_dim == 64)
      return fp16 ? launch_block_sparse_attention<DType::kFp16, 64, kQk>(prm, stream)
                  : launch_block_sparse_attention<DType::kBf16, 64, kQk>(prm, stream);
    return fp16 ? launch_block_sparse_attention<DType::kFp16, 128, kQk>(prm, stream)
                : launch_block_sparse_attention<DType::kBf16, 128, kQk>(prm, stream);
  };
  const auto launch = [&] {
    if (fp8) return launch_qk.template operator()<Precision::kInt8Fp8>();
    return int8 ? launch_qk.template operator()<Precision::kInt8>()
                : launch_qk.template operator()<Precision::k16Bit>();
  };
  if (options.collect_stats) {
    const auto t0 = std::chrono::steady_clock::now();
    const cudaError_t err = launch();
    SPARGE_CHECK(err == cudaSuccess, "kernel launch failed: ", cudaGetErrorString(err));
    const cudaError_t sync = cudaStreamSynchronize(stream);
    SPARGE_CHECK(sync == cudaSuccess, "kernel failed: ", cudaGetErrorString(sync));
    r.stats.attention_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    r.stats.block_q = mask.block_q;
    r.stats.block_k = mask.block_k;
    r.stats.stage2_group_rows = c.stage2_rows();
    const auto n = counters.cpu();
    r.stats.stage2_groups = n.data_ptr<int64_t>()[0];
    r.stats.stage2_skipped = n.data_ptr<int64_t>()[1];
    fill_mask_stats(r.stats, mask, p, c.causal, counts);
  } else {
    const cudaError_t err = launch();
    SPARGE_CHECK(err == cudaSuccess, "kernel launch failed: ", cudaGetErrorString(err));
  }
  return r;
}

}  // namespace sparge::cuda
