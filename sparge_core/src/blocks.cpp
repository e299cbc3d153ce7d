// Block pooling, the self-similarity judge and the quantization primitives (see sparge/blocks.h).
#include "sparge/blocks.h"

#include <ATen/ATen.h>

#include "internal.h"
#include "sparge/error.h"

namespace sparge {
namespace {

// (NB) number of valid rows per block, as x's dtype, shaped to broadcast against (B, H, NB, ...).
at::Tensor valid_rows(int64_t n, int64_t block, const at::TensorOptions& options) {
  const int64_t nb = (n + block - 1) / block;
  auto counts = at::full({nb}, static_cast<double>(block), options);
  counts.index_put_({nb - 1}, static_cast<double>(n - (nb - 1) * block));
  return counts;
}

void check_blocks_input(const char* fn, const at::Tensor& x, int64_t block) {
  SPARGE_CHECK(x.defined() && x.dim() == 4, "argument `x`: expected a (B, H, N, D) tensor, got rank ",
               x.defined() ? x.dim() : -1);
  SPARGE_CHECK(at::isFloatingType(x.scalar_type()), "argument `x`: expected a floating dtype, got ",
               x.scalar_type());
  SPARGE_CHECK(x.size(2) >= 1, "argument `x`: expected N >= 1, got ", x.size(2));
  SPARGE_CHECK(block >= 1, "argument `block`: expected >= 1, got ", block);
  (void)fn;
}

}  // namespace

PooledBlocks pool_blocks(const at::Tensor& x, int64_t block) {
  check_blocks_input(__func__, x, block);
  const auto blocks = detail::pad_blocks(x, block);  // (B, H, NB, bs, D), zero padded
  const auto count = valid_rows(x.size(2), block, x.options()).view({1, 1, -1, 1});
  PooledBlocks r;
  r.pooled = blocks.sum(3) / count;  // (B, H, NB, D)
  // Unit rows; a zero row (padding included) stays zero and so adds nothing to the mean.
  const auto norm = blocks.norm(2, {-1}, /*keepdim=*/true);
  const auto unit = at::where(norm > 0, blocks / norm.clamp_min(1e-30), at::zeros_like(blocks));
  const auto mean_unit = unit.sum(3) / count;  // (B, H, NB, D)
  r.similarity = (mean_unit * mean_unit).sum(-1);
  return r;
}

Int8Blocks quantize_int8_blocks(const at::Tensor& x, int64_t block) {
  check_blocks_input(__func__, x, block);
  const auto blocks = detail::pad_blocks(x, block);
  auto amax = blocks.abs().amax({3, 4});  // (B, H, NB)
  Int8Blocks r;
  r.scale = at::where(amax > 0, amax / kInt8Max, at::full_like(amax, 1.0 / kInt8Max));
  const auto q = at::round(blocks / r.scale.unsqueeze(-1).unsqueeze(-1)).clamp(-kInt8Max, kInt8Max);
  const auto s = x.sizes();
  r.values = q.view({s[0], s[1], -1, s[3]}).narrow(2, 0, s[2]);
  return r;
}

at::Tensor round_to_fp8_e4m3(const at::Tensor& x) {
  SPARGE_CHECK(x.defined() && at::isFloatingType(x.scalar_type()),
               "argument `x`: expected a floating tensor");
  return x.clamp(-kFp8E4m3Max, kFp8E4m3Max).to(at::kFloat8_e4m3fn).to(x.scalar_type());
}

}  // namespace sparge
