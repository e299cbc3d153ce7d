// Token permutation of Q/K/V/O and the block self-similarity measure (see sparge/permute.h).
#include "sparge/permute.h"

#include <ATen/ATen.h>

#include "internal.h"
#include "sparge/blocks.h"
#include "sparge/error.h"
#include "sparge/token_order.h"

namespace sparge {
namespace {

// (N) int64 gather index that applies `perm` to the visual span [offset, offset + perm.size()).
at::Tensor full_index(const std::vector<int64_t>& perm, int64_t offset, int64_t n, const at::Device& device) {
  const auto span = static_cast<int64_t>(perm.size());
  SPARGE_CHECK(offset >= 0 && offset + span <= n, "argument `offset`: the visual span [", offset, ", ",
               offset + span, ") must lie inside the ", n, " tokens of `x`");
  auto index = at::arange(n, at::kLong);
  auto* p = index.data_ptr<int64_t>();
  for (int64_t i = 0; i < span; ++i) p[offset + i] = offset + perm[i];
  return index.to(device);
}

at::Tensor gather_tokens(const at::Tensor& x, const std::vector<int64_t>& order, int64_t offset,
                         Layout layout) {
  SPARGE_CHECK(x.defined() && x.dim() == 4, "argument `x`: expected rank 4, got ",
               x.defined() ? x.dim() : -1);
  const int axis = layout == Layout::kHND ? 2 : 1;
  return x.index_select(axis, full_index(order, offset, x.size(axis), x.device()));
}

}  // namespace

at::Tensor permute_tokens(const at::Tensor& x, const std::vector<int64_t>& perm, int64_t offset,
                          Layout layout) {
  invert_permutation(perm);  // validates perm
  return gather_tokens(x, perm, offset, layout);
}

at::Tensor unpermute_tokens(const at::Tensor& x, const std::vector<int64_t>& perm, int64_t offset,
                            Layout layout) {
  return gather_tokens(x, invert_permutation(perm), offset, layout);
}

double mean_block_similarity(const at::Tensor& x, int64_t block, Layout layout) {
  SPARGE_CHECK(x.defined() && x.dim() == 4, "argument `x`: expected rank 4, got ",
               x.defined() ? x.dim() : -1);
  const auto xh = detail::to_hnd(x, layout).to(detail::math_dtype(x.scalar_type()));
  return pool_blocks(xh, block).similarity.mean().item<double>();
}

}  // namespace sparge
