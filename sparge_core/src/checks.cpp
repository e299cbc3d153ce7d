// Input validation shared by every reference entry point, plus small layout and head helpers.
#include <ATen/ATen.h>

#include <cmath>

#include "internal.h"
#include "sparge/error.h"

namespace sparge::detail {
namespace {

bool supported_dtype(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

void check_tensor(const char* fn, const char* name, const at::Tensor& x, Layout layout) {
  if (!x.defined()) fail(fn, "argument `", name, "`: expected a defined tensor");
  if (x.dim() != 4)
    fail(fn, "argument `", name, "`: expected rank 4 (", layout == Layout::kHND ? "B, H, N, D" : "B, N, H, D",
         "), got rank ", x.dim(), " with shape ", x.sizes());
  if (!supported_dtype(x.scalar_type()))
    fail(fn, "argument `", name, "`: expected dtype float16, bfloat16, float32 or float64, got ",
         x.scalar_type());
}

void check_thresholds(const char* fn, const char* name, const std::vector<double>& v, int64_t heads_q,
                      double lo, double hi, bool lo_open, bool allow_inf) {
  const auto n = static_cast<int64_t>(v.size());
  if (n != 1 && n != heads_q)
    fail(fn, "argument `", name, "`: expected 1 value or one per query head (", heads_q, "), got ", n);
  for (int64_t h = 0; h < n; ++h) {
    const double x = v[h];
    const bool ok = !std::isnan(x) && (allow_inf ? true : std::isfinite(x)) && (lo_open ? x > lo : x >= lo) &&
                    (x <= hi || (allow_inf && std::isinf(x) && x > 0));
    if (!ok && allow_inf)
      fail(fn, "argument `", name, "`[", h, "]: expected a value in ", lo_open ? "(" : "[", lo,
           ", inf], got ", x);
    if (!ok)
      fail(fn, "argument `", name, "`[", h, "]: expected a value in ", lo_open ? "(" : "[", lo, ", ", hi,
           "], got ", x);
  }
}

}  // namespace

Problem check_problem(const char* fn, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const SpargeConfig& c) {
  check_tensor(fn, "q", q, c.layout);
  check_tensor(fn, "k", k, c.layout);
  if (v.defined()) check_tensor(fn, "v", v, c.layout);
  if (k.scalar_type() != q.scalar_type())
    fail(fn, "argument `k`: expected the dtype of q (", q.scalar_type(), "), got ", k.scalar_type());
  if (v.defined() && v.scalar_type() != q.scalar_type())
    fail(fn, "argument `v`: expected the dtype of q (", q.scalar_type(), "), got ", v.scalar_type());
  if (k.device() != q.device()) fail(fn, "argument `k`: expected device ", q.device(), ", got ", k.device());
  if (v.defined() && v.device() != q.device())
    fail(fn, "argument `v`: expected device ", q.device(), ", got ", v.device());

  const int h_axis = c.layout == Layout::kHND ? 1 : 2, n_axis = 3 - h_axis;
  Problem p;
  p.batch = q.size(0);
  p.heads_q = q.size(h_axis);
  p.heads_kv = k.size(h_axis);
  p.seq_q = q.size(n_axis);
  p.seq_k = k.size(n_axis);
  p.head_dim = q.size(3);
  if (p.batch < 1 || p.heads_q < 1 || p.seq_q < 1 || p.head_dim < 1)
    fail(fn, "argument `q`: expected non-empty sizes, got shape ", q.sizes());
  if (p.heads_kv < 1 || p.seq_k < 1)
    fail(fn, "argument `k`: expected non-empty sizes, got shape ", k.sizes());
  if (k.size(0) != p.batch) fail(fn, "argument `k`: expected batch ", p.batch, " (of q), got ", k.size(0));
  if (k.size(3) != p.head_dim)
    fail(fn, "argument `k`: expected head dim ", p.head_dim, " (of q), got ", k.size(3));
  if (p.heads_q % p.heads_kv != 0)
    fail(fn, "argument `k`: query heads (", p.heads_q, ") must be a multiple of key/value heads, got ",
         p.heads_kv, " kv heads");
  if (v.defined() && v.sizes() != k.sizes())
    fail(fn, "argument `v`: expected the shape of k ", k.sizes(), ", got ", v.sizes());
  if (c.causal && p.seq_q > p.seq_k)
    fail(fn, "argument `causal`: bottom-right causal attention needs Nq <= Nk (else the first ",
         p.seq_q - p.seq_k, " query rows see no key), got Nq = ", p.seq_q, ", Nk = ", p.seq_k);

  if (c.block_q < 1) fail(fn, "argument `block_q`: expected >= 1, got ", c.block_q);
  if (c.block_k < 1) fail(fn, "argument `block_k`: expected >= 1, got ", c.block_k);
  if (c.stage2_group_rows < 0 || (c.stage2_group_rows > 0 && c.block_q % c.stage2_group_rows != 0))
    fail(fn, "argument `stage2_group_rows`: expected 0 (whole query block) or a divisor of block_q (",
         c.block_q, "), got ", c.stage2_group_rows);
  p.scale = c.scale.value_or(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  if (!(std::isfinite(p.scale) && p.scale > 0))
    fail(fn, "argument `scale`: expected a finite value > 0, got ", p.scale);

  check_thresholds(fn, "simthreshd1", c.simthreshd1, p.heads_q, -1.0, 1.0, false, false);
  check_thresholds(fn, "cdfthreshd", c.cdfthreshd, p.heads_q, 0.0, 1.0, false, false);
  check_thresholds(fn, "topk", c.topk, p.heads_q, 0.0, 1.0, false, false);
  check_thresholds(fn, "pvthreshd", c.pvthreshd, p.heads_q, 0.0, 1e30, true, true);
  return p;
}

at::Tensor to_hnd(const at::Tensor& x, Layout layout) {
  return layout == Layout::kHND ? x : x.transpose(1, 2);
}
at::Tensor from_hnd(const at::Tensor& x, Layout layout) {
  return to_hnd(x, layout);
}

at::Tensor expand_kv_heads(const at::Tensor& x, int64_t group) {
  if (group == 1) return x;
  const auto s = x.sizes();
  return x.unsqueeze(2).expand({s[0], s[1], group, s[2], s[3]}).reshape({s[0], s[1] * group, s[2], s[3]});
}

at::Tensor per_head(const std::vector<double>& values, int64_t heads_q, const at::TensorOptions& options) {
  auto t = at::tensor(values, options.dtype(at::kDouble).device(at::kCPU)).to(options);
  return values.size() == 1 ? t.expand({heads_q}).contiguous() : t;
}

at::ScalarType math_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor pad_blocks(const at::Tensor& x, int64_t block) {
  const auto n = x.size(2), nb = (n + block - 1) / block;
  auto padded = nb * block == n ? x : at::constant_pad_nd(x, {0, 0, 0, nb * block - n}, 0.0);
  return padded.view({x.size(0), x.size(1), nb, block, x.size(3)});
}

at::Tensor sum_positive(const at::Tensor& x, const at::Tensor& n) {
  const auto last = x + n - 1;
  // Integer halves (tensor `/` is true division); both products are even.
  return at::where(
      last <= 0, at::zeros_like(last),
      at::where(x >= 0, n * x + at::floor_divide(n * (n - 1), 2), at::floor_divide(last * (last + 1), 2)));
}

}  // namespace sparge::detail
