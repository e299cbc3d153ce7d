// The API of the MInference vertical-slash kernel (sparge/cuda_minference.h): checks every input (messages
// name the argument, the expected and the actual value), fills VerticalSlashParams, dispatches (dtype, head
// dim) to the instantiations, and serves sparge::minference_attention's vertical-slash heads through its
// VsIndexAttention hook; also builds the kernel's index on the device (vertical_slash_index.cu), served
// through the VsIndexBuilder hook. The only file of these kernels that sees torch.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "../src/internal.h"
#include "api_common.h"
#include "sparge/cuda_minference.h"
#include "sparge/error.h"
#include "vertical_slash_params.h"

namespace sparge::cuda {
namespace {

using api::cat;
using api::kernel_operand;
using api::kMaxGridYZ;
using api::set_strides;

constexpr int64_t kBlock = VerticalSlashIndex::kBlockM;
static_assert(VerticalSlashIndex::kBlockM == VsTileConfig<64>::kBlockM &&
                  VerticalSlashIndex::kBlockN == VsTileConfig<64>::kBlockN &&
                  VsTileConfig<64>::kBlockM == VsTileConfig<128>::kBlockM &&
                  VsTileConfig<64>::kBlockN == VsTileConfig<128>::kBlockN,
              "one CTA per 64-row block of the index, 64-key tiles");
// Shapes, dtypes and devices of the index against the problem.
void check_index_tensors(const VerticalSlashIndex& ix, const detail::Problem& p, const at::Device& device) {
  SPARGE_CHECK(ix.seq_q == p.seq_q && ix.seq_k == p.seq_k, "argument `index`: expected Nq = ", p.seq_q,
               ", Nk = ", p.seq_k, " (of q, k), got ", ix.seq_q, ", ", ix.seq_k);
  const int64_t nqb = (p.seq_q + kBlock - 1) / kBlock;
  const std::vector<int64_t> lead = {p.batch, p.heads_q, nqb};
  const std::pair<const char*, const at::Tensor*> named[] = {{"block_count", &ix.block_count},
                                                             {"block_offset", &ix.block_offset},
                                                             {"column_count", &ix.column_count},
                                                             {"column_index", &ix.column_index}};
  for (const auto& [name, t] : named) {
    SPARGE_CHECK(t->defined(), "argument `index.", name,
                 "`: expected a defined tensor (of vertical_slash_index)");
    const bool counts = name == std::string("block_count") || name == std::string("column_count");
    SPARGE_CHECK(t->dim() == (counts ? 3 : 4) && t->sizes().slice(0, 3) == at::IntArrayRef(lead),
                 "argument `index.", name, "`: expected shape (B, Hq, NQB", counts ? "" : ", *", ") = (",
                 p.batch, ", ", p.heads_q, ", ", nqb, counts ? "" : ", *", "), got ", t->sizes());
    SPARGE_CHECK(t->scalar_type() == at::kInt, "argument `index.", name, "`: expected dtype int32, got ",
                 t->scalar_type());
    SPARGE_CHECK(t->device() == device, "argument `index.", name, "`: expected device ", device,
                 " (of q), got ", t->device());
  }
  const int64_t max_int = std::numeric_limits<int32_t>::max();
  SPARGE_CHECK(ix.block_offset.size(3) <= max_int && ix.column_index.size(3) <= max_int,
               "argument `index`: expected list widths <= ", max_int, ", got ", ix.block_offset.size(3), ", ",
               ix.column_index.size(3));
}

// Device-side validation of the index contract (one synchronization).
void check_index_contents(const at::Tensor& bc, const at::Tensor& bo, const at::Tensor& cc,
                          const at::Tensor& ci, int64_t seq_q, int64_t seq_k) {
  const int64_t smax = bo.size(3), vmax = ci.size(3), nqb = bc.size(2);
  const auto iopt = bc.options();
  const auto tiles_listed = at::arange(smax, iopt) < bc.unsqueeze(-1);    // (B, H, NQB, Smax)
  const auto columns_listed = at::arange(vmax, iopt) < cc.unsqueeze(-1);  // (B, H, NQB, Vmax)
  const auto first_diag =
      (at::arange(nqb, iopt.dtype(at::kLong)) * kBlock + (seq_k - seq_q)).view({1, 1, nqb, 1});
  const auto ok = at::stack({((bc >= 0) & (bc <= smax)).all(), ((cc >= 0) & (cc <= vmax)).all(),
                             (tiles_listed.logical_not() | ((bo >= 0) & (bo < seq_k + kBlock))).all(),
                             (columns_listed.logical_not() | ((ci >= 0) & (ci <= first_diag))).all()})
                      .cpu();
  const auto* v = ok.data_ptr<bool>();
  SPARGE_CHECK(v[0], "argument `index.block_count`: expected values in [0, ", smax, "]");
  SPARGE_CHECK(v[1], "argument `index.column_count`: expected values in [0, ", vmax, "]");
  SPARGE_CHECK(v[2], "argument `index.block_offset`: expected the listed tile starts in [0, Nk + 64 = ",
               seq_k + kBlock, ")");
  SPARGE_CHECK(
      v[3],
      "argument `index.column_index`: expected the listed columns of block m in [0, 64 m + Nk - Nq] (at "
      "or below the block's first diagonal key: loop 2 has no causal mask)");
}

}  // namespace

std::string vertical_slash_unsupported_reason(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const MInferenceConfig& config) {
  if (!q.defined() || !k.defined() || !v.defined())
    return "arguments `q`, `k`, `v`: expected defined tensors";
  if (!q.is_cuda()) return cat("argument `q`: expected a CUDA tensor, got device ", q.device());
  if (q.scalar_type() != at::kHalf && q.scalar_type() != at::kBFloat16)
    return cat("argument `q`: expected dtype float16 or bfloat16, got ", q.scalar_type());
  if (q.dim() != 4 || k.dim() != 4)
    return cat("arguments `q`, `k`: expected rank 4, got ", q.dim(), ", ", k.dim());
  if (q.size(3) != 64 && q.size(3) != 128)
    return cat("argument `q`: expected head dim 64 or 128, got ", q.size(3));
  const int h_axis = config.layout == Layout::kHND ? 1 : 2;
  if (q.size(0) > kMaxGridYZ || q.size(h_axis) > kMaxGridYZ)
    return cat("argument `q`: expected batch and heads <= ", kMaxGridYZ, " (grid limits), got ", q.size(0),
               ", ", q.size(h_axis));
  const int64_t max_seq = std::numeric_limits<int32_t>::max() - 2 * kBlock;
  if (q.size(3 - h_axis) > max_seq || k.size(3 - h_axis) > max_seq)
    return cat("arguments `q`, `k`: expected sequence lengths <= ", max_seq, ", got ", q.size(3 - h_axis),
               ", ", k.size(3 - h_axis));
  return "";
}

std::string minference_unsupported_reason(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          const MInferenceConfig& config) {
  if (config.coverage != VsCoverage::kKernelTiles)
    return cat("argument `config.coverage`: expected kernel_tiles (the kernel computes the index form; ",
               to_string(config.coverage), " runs on the reference), got ", to_string(config.coverage));
  return vertical_slash_unsupported_reason(q, k, v, config);
}

AttentionResult vertical_slash_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const VerticalSlashIndex& index, const MInferenceConfig& config,
                                         const VerticalSlashOptions& options) {
  SPARGE_CHECK(v.defined(), "argument `v`: expected a defined tensor");
  SPARGE_CHECK(
      config.causal,
      "argument `config.causal`: expected true (MInference's index form is causal prefill), got false");
  SpargeConfig sc;
  sc.block_q = sc.block_k = kBlock;
  sc.causal = true;
  sc.scale = config.scale;
  sc.layout = config.layout;
  const auto p = detail::check_problem(__func__, q, k, v, sc);
  const std::string why = vertical_slash_unsupported_reason(q, k, v, config);
  SPARGE_CHECK(why.empty(), why);
  check_index_tensors(index, p, q.device());
  const c10::cuda::CUDAGuard guard(q.device());
  const auto bc = index.block_count.contiguous(), bo = index.block_offset.contiguous(),
             cc = index.column_count.contiguous(), ci = index.column_index.contiguous();
  if (options.check_index) check_index_contents(bc, bo, cc, ci, p.seq_q, p.seq_k);

  const auto qh = kernel_operand(detail::to_hnd(q, config.layout));
  const auto kh = kernel_operand(detail::to_hnd(k, config.layout));
  const auto vh = kernel_operand(detail::to_hnd(v, config.layout));
  AttentionResult r;
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
  const auto oh = detail::to_hnd(r.out, config.layout);
  if (config.return_lse) {
    const std::vector<int64_t> lse_shape = {p.batch, p.heads_q, p.seq_q};
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

  VerticalSlashParams prm;
  prm.q = qh.data_ptr();
  prm.k = kh.data_ptr();
  prm.v = vh.data_ptr();
  prm.o = oh.data_ptr();
  prm.lse = config.return_lse ? r.lse.data_ptr<float>() : nullptr;
  set_strides(qh, prm.q_batch_stride, prm.q_head_stride, prm.q_row_stride);
  set_strides(kh, prm.k_batch_stride, prm.k_head_stride, prm.k_row_stride);
  set_strides(vh, prm.v_batch_stride, prm.v_head_stride, prm.v_row_stride);
  set_strides(oh, prm.o_batch_stride, prm.o_head_stride, prm.o_row_stride);
  prm.batch = static_cast<int>(p.batch);
  prm.heads_q = static_cast<int>(p.heads_q);
  prm.heads_kv = static_cast<int>(p.heads_kv);
  prm.kv_group = static_cast<int>(p.group());
  prm.seq_q = static_cast<int>(p.seq_q);
  prm.seq_k = static_cast<int>(p.seq_k);
  prm.head_dim = static_cast<int>(p.head_dim);
  prm.scale_log2 = static_cast<float>(p.scale * std::numbers::log2e);
  prm.block_count = bc.data_ptr<int32_t>();
  prm.block_offset = bo.data_ptr<int32_t>();
  prm.column_count = cc.data_ptr<int32_t>();
  prm.column_index = ci.data_ptr<int32_t>();
  prm.num_q_blocks = static_cast<int>(bc.size(2));
  prm.max_tiles = static_cast<int>(bo.size(3));
  prm.max_columns = static_cast<int>(ci.size(3));

  const auto stream = at::cuda::getCurrentCUDAStream(q.device().index()).stream();
  const bool fp16 = q.scalar_type() == at::kHalf;
  const auto launch = [&] {
    if (p.head_dim == 64)
      return fp16 ? launch_vertical_slash_attention<DType::kFp16, 64>(prm, stream)
                  : launch_vertical_slash_attention<DType::kBf16, 64>(prm, stream);
    return fp16 ? launch_vertical_slash_attention<DType::kFp16, 128>(prm, stream)
                : launch_vertical_slash_attention<DType::kBf16, 128>(prm, stream);
  };
  if (!options.collect_stats) {
    const cudaError_t err = launch();
    SPARGE_CHECK(err == cudaSuccess, "kernel launch failed: ", cudaGetErrorString(err));
    return r;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const cudaError_t err = launch();
  SPARGE_CHECK(err == cudaSuccess, "kernel launch failed: ", cudaGetErrorString(err));
  const cudaError_t sync = cudaStreamSynchronize(stream);
  SPARGE_CHECK(sync == cudaSuccess, "kernel failed: ", cudaGetErrorString(sync));
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  r.stats = vertical_slash_index_stats(index);
  r.stats.attention_ms = ms;
  return r;
}

VerticalSlashIndex vertical_slash_index(const VerticalSlash& vs) {
  SPARGE_CHECK(vs.seq_q >= 1 && vs.seq_k >= vs.seq_q,
               "argument `vs`: expected 1 <= seq_q <= seq_k (causal), got seq_q = ", vs.seq_q,
               ", seq_k = ", vs.seq_k);
  const int64_t max_seq = std::numeric_limits<int32_t>::max() - 2 * kBlock;  // tile starts < Nk + 64 in int32
  SPARGE_CHECK(vs.seq_k <= max_seq, "argument `vs.seq_k`: expected <= ", max_seq, " (int32 index), got ",
               vs.seq_k);
  const std::pair<const char*, const at::Tensor*> named[] = {{"vertical", &vs.vertical},
                                                             {"vertical_count", &vs.vertical_count},
                                                             {"slash", &vs.slash},
                                                             {"slash_count", &vs.slash_count}};
  for (const auto& [name, t] : named)
    SPARGE_CHECK(t->defined(), "argument `vs.", name,
                 "`: expected a defined tensor (of minference_vertical_slash)");
  for (const auto& [name, t] : named) {
    const bool count = name == std::string("vertical_count") || name == std::string("slash_count");
    SPARGE_CHECK(t->is_cuda(), "argument `vs.", name, "`: expected a CUDA tensor, got device ", t->device());
    SPARGE_CHECK(t->device() == vs.vertical.device(), "argument `vs.", name, "`: expected device ",
                 vs.vertical.device(), " (of vs.vertical), got ", t->device());
    SPARGE_CHECK(t->scalar_type() == at::kLong || t->scalar_type() == at::kInt, "argument `vs.", name,
                 "`: expected dtype int64 (or int32), got ", t->scalar_type());
    SPARGE_CHECK(t->dim() == (count ? 2 : 3), "argument `vs.", name, "`: expected shape ",
                 count ? "(B, H)" : "(B, H, C)", ", got ", t->sizes());
    SPARGE_CHECK(t->size(0) == vs.vertical.size(0) && t->size(1) == vs.vertical.size(1), "argument `vs.",
                 name, "`: expected (B, H) = (", vs.vertical.size(0), ", ", vs.vertical.size(1),
                 ") (of vs.vertical) first, got ", t->sizes());
  }
  const c10::cuda::CUDAGuard guard(vs.vertical.device());
  // Device-side conversions only (no-ops for the estimate's contiguous int64 tensors).
  auto operand = [](const at::Tensor& t) { return t.to(at::kLong).contiguous(); };
  const auto vertical = operand(vs.vertical), vertical_count = operand(vs.vertical_count),
             slash = operand(vs.slash), slash_count = operand(vs.slash_count);
  const int64_t B = vertical.size(0), H = vertical.size(1), nqb = (vs.seq_q + kBlock - 1) / kBlock;
  const int64_t vmax = vertical.size(2), smax = slash.size(2);
  const auto iopt = vertical.options().dtype(at::kInt);
  VerticalSlashIndex ix;
  ix.seq_q = vs.seq_q;
  ix.seq_k = vs.seq_k;
  ix.block_count = at::empty({B, H, nqb}, iopt);  // every entry written by the kernel
  ix.column_count = at::empty({B, H, nqb}, iopt);
  ix.block_offset = at::full({B, H, nqb, smax}, -1, iopt);  // the kernel writes the listed entries
  ix.column_index = at::full({B, H, nqb, vmax}, -1, iopt);

  VerticalSlashIndexParams prm;
  prm.vertical = vertical.data_ptr<int64_t>();
  prm.vertical_count = vertical_count.data_ptr<int64_t>();
  prm.slash = slash.data_ptr<int64_t>();
  prm.slash_count = slash_count.data_ptr<int64_t>();
  prm.block_count = ix.block_count.data_ptr<int32_t>();
  prm.block_offset = ix.block_offset.data_ptr<int32_t>();
  prm.column_count = ix.column_count.data_ptr<int32_t>();
  prm.column_index = ix.column_index.data_ptr<int32_t>();
  prm.batch = B;
  prm.heads = H;
  prm.num_q_blocks = nqb;
  prm.vmax = vmax;
  prm.smax = smax;
  prm.seq_q = vs.seq_q;
  prm.seq_k = vs.seq_k;
  const auto stream = at::cuda::getCurrentCUDAStream(vs.vertical.device().index()).stream();
  const cudaError_t err = launch_vertical_slash_index(prm, stream);
  SPARGE_CHECK(err == cudaSuccess, "index kernel launch failed: ", cudaGetErrorString(err));
  return ix;
}

double minference_budget_ratio(const at::Tensor& q, const at::Tensor& k, const MInferenceConfig& config) {
  SPARGE_CHECK(q.is_cuda(), "argument `q`: expected a CUDA tensor, got one on ", q.device());
  return sparge::minference_budget_ratio(
      q, k, config, [](const VerticalSlash& vs) { return cuda::vertical_slash_index(vs); });
}

AttentionResult minference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const MInferenceConfig& config) {
  const std::string why = minference_unsupported_reason(q, k, v, config);
  SPARGE_CHECK(why.empty(), why);
  // The index is built on the device by cuda::vertical_slash_index (valid by construction for the estimate's
  // lists): no device check; the reference counts the statistics from it and times the call.
  const VsIndexAttention kernel = [](const at::Tensor& qs, const at::Tensor& ks, const at::Tensor& vs,
                                     const VerticalSlashIndex& index, const MInferenceConfig& c) {
    VerticalSlashOptions opt;
    opt.check_index = false;
    return vertical_slash_attention(qs, ks, vs, index, c, opt);
  };
  const VsIndexBuilder builder = [](const VerticalSlash& vs) { return cuda::vertical_slash_index(vs); };
  return sparge::minference_attention(q, k, v, config, kernel, builder);
}

}  // namespace sparge::cuda
