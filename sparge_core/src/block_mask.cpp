// BlockMask construction and the causal block geometry.
#include "sparge/block_mask.h"

#include <ATen/ATen.h>

#include <cmath>
#include <utility>

#include "internal.h"
#include "sparge/error.h"

namespace sparge {
namespace {

// (NQB, 1) first and last query row of each query block, (1, NKB) first key of each key block, as int64.
struct BlockRanges {
  at::Tensor q_first, q_last, k_first, k_last;
};
BlockRanges block_ranges(int64_t seq_q, int64_t seq_k, int64_t block_q, int64_t block_k,
                         const at::TensorOptions& device) {
  const auto opt = device.dtype(at::kLong);
  const int64_t nqb = (seq_q + block_q - 1) / block_q, nkb = (seq_k + block_k - 1) / block_k;
  BlockRanges r;
  r.q_first = (at::arange(nqb, opt) * block_q).unsqueeze(1);
  r.q_last = at::clamp_max(r.q_first + (block_q - 1), seq_q - 1);
  r.k_first = (at::arange(nkb, opt) * block_k).unsqueeze(0);
  r.k_last = at::clamp_max(r.k_first + (block_k - 1), seq_k - 1);
  return r;
}

}  // namespace

at::Tensor causal_valid_blocks(int64_t seq_q, int64_t seq_k, int64_t block_q, int64_t block_k, bool causal,
                               const at::TensorOptions& device) {
  const int64_t nqb = (seq_q + block_q - 1) / block_q, nkb = (seq_k + block_k - 1) / block_k;
  if (!causal) return at::ones({nqb, nkb}, device.dtype(at::kBool));
  const auto r = block_ranges(seq_q, seq_k, block_q, block_k, device);
  // The block's last row sees keys up to q_last + (seq_k - seq_q); valid iff that reaches the block's first
  // key.
  return r.k_first <= r.q_last + (seq_k - seq_q);
}

at::Tensor block_pair_counts(int64_t seq_q, int64_t seq_k, int64_t block_q, int64_t block_k, bool causal,
                             const at::TensorOptions& device) {
  const auto r = block_ranges(seq_q, seq_k, block_q, block_k, device);
  const auto rows = r.q_last - r.q_first + 1;   // (NQB, 1)
  const auto width = r.k_last - r.k_first + 1;  // (1, NKB)
  if (!causal) return rows * width;
  // Row q_first + i sees clamp(a + i, 0, width) = max(a + i, 0) - max(a + i - width, 0) keys of the block,
  // a = q_first + off + 1 - k_first.
  const auto a = r.q_first + (seq_k - seq_q + 1) - r.k_first;  // (NQB, NKB)
  return detail::sum_positive(a, rows) - detail::sum_positive(a - width, rows);
}

at::Tensor causal_diagonal_blocks(int64_t seq_q, int64_t seq_k, int64_t block_q, int64_t block_k, bool causal,
                                  const at::TensorOptions& device) {
  const int64_t nqb = (seq_q + block_q - 1) / block_q, nkb = (seq_k + block_k - 1) / block_k;
  if (!causal) return at::zeros({nqb, nkb}, device.dtype(at::kBool));
  const auto r = block_ranges(seq_q, seq_k, block_q, block_k, device);
  const int64_t off = seq_k - seq_q;
  // Diagonal keys of the block's rows: [q_first + off, q_last + off]; the key block must intersect that
  // range.
  return (r.k_last >= r.q_first + off) & (r.k_first <= r.q_last + off);
}

BlockMask BlockMask::from_dense(const at::Tensor& dense, int64_t block_q, int64_t block_k, int64_t seq_q,
                                int64_t seq_k) {
  SPARGE_CHECK(block_q >= 1 && block_k >= 1, "arguments `block_q`, `block_k`: expected >= 1, got ", block_q,
               ", ", block_k);
  SPARGE_CHECK(seq_q >= 1 && seq_k >= 1, "arguments `seq_q`, `seq_k`: expected >= 1, got ", seq_q, ", ",
               seq_k);
  const int64_t nqb = (seq_q + block_q - 1) / block_q, nkb = (seq_k + block_k - 1) / block_k;
  SPARGE_CHECK(dense.defined() && dense.dim() == 4 && dense.size(2) == nqb && dense.size(3) == nkb,
               "argument `dense`: expected shape (B, H, ", nqb, ", ", nkb, ") for Nq = ", seq_q,
               ", Nk = ", seq_k, " and blocks ", block_q, "x", block_k, ", got ",
               dense.defined() ? dense.sizes() : at::IntArrayRef{});
  SPARGE_CHECK(dense.scalar_type() == at::kBool, "argument `dense`: expected dtype bool, got ",
               dense.scalar_type());
  BlockMask m;
  m.block_q = block_q;
  m.block_k = block_k;
  m.seq_q = seq_q;
  m.seq_k = seq_k;
  m.dense = dense.contiguous();
  m.counts = m.dense.sum(-1, /*keepdim=*/false, at::kInt);
  // Selected indices first in ascending order: key nkb marks "not selected", sorted to the end, then set to
  // -1.
  const auto idx = at::arange(nkb, dense.options().dtype(at::kInt)).expand_as(m.dense);
  const auto keyed = at::where(m.dense, idx, at::full_like(idx, static_cast<int>(nkb)));
  const auto sorted = std::get<0>(keyed.sort(-1));
  m.indices = at::where(sorted == nkb, at::full_like(sorted, -1), sorted).contiguous();
  return m;
}

double token_sparsity(const BlockMask& mask, bool causal) {
  const auto pairs =
      block_pair_counts(mask.seq_q, mask.seq_k, mask.block_q, mask.block_k, causal, mask.dense.options());
  const double computed = (mask.dense.to(at::kLong) * pairs).sum().item<double>();
  const double valid =
      pairs.sum().item<double>() * static_cast<double>(mask.dense.size(0) * mask.dense.size(1));
  return valid > 0 ? 1.0 - computed / valid : 0.0;
}

namespace {

// The knob search's arguments, errors naming the public function `fn`.
void check_knob_search(const char* fn, double lo, double hi, double target, int steps) {
  if (!(lo < hi)) detail::fail(fn, "arguments `lo`, `hi`: expected lo < hi, got ", lo, ", ", hi);
  if (!(target >= 0.0 && target < 1.0))
    detail::fail(fn, "argument `target`: expected a value in [0, 1), got ", target);
  if (steps < 0) detail::fail(fn, "argument `steps`: expected >= 0, got ", steps);
}

KnobSearch knob_search(const std::function<BlockMask(double)>& mask_of, double lo, double hi, double target,
                       bool causal, int steps) {
  KnobSearch best{mask_of(hi), hi};
  double best_gap = std::abs(token_sparsity(best.mask, causal) - target);
  for (int i = 0; i < steps && best_gap > 1e-3; ++i) {
    const double mid = 0.5 * (lo + hi);
    auto m = mask_of(mid);
    const double sp = token_sparsity(m, causal);
    if (std::abs(sp - target) < best_gap) {
      best_gap = std::abs(sp - target);
      best = {std::move(m), mid};
    }
    (sp > target ? lo : hi) = mid;  // too sparse: keep more (a larger knob)
  }
  return best;
}

}  // namespace

KnobSearch knob_at_token_sparsity(const std::function<BlockMask(double)>& mask_of, double lo, double hi,
                                  double target, bool causal, int steps) {
  check_knob_search(__func__, lo, hi, target, steps);
  return knob_search(mask_of, lo, hi, target, causal, steps);
}

BlockMask mask_at_token_sparsity(const std::function<BlockMask(double)>& mask_of, double lo, double hi,
                                 double target, bool causal, int steps) {
  check_knob_search(__func__, lo, hi, target, steps);
  return knob_search(mask_of, lo, hi, target, causal, steps).mask;
}

BlockMask refine_block_mask(const BlockMask& mask, int64_t block_q, int64_t block_k) {
  SPARGE_CHECK(block_q >= 1 && block_k >= 1 && mask.block_q % block_q == 0 && mask.block_k % block_k == 0,
               "arguments `block_q`, `block_k`: expected divisors of the mask's blocks ", mask.block_q, "x",
               mask.block_k, ", got ", block_q, "x", block_k);
  SPARGE_CHECK(mask.dense.defined() && mask.dense.dim() == 4, "argument `mask`: expected a dense view");
  const int64_t fq = mask.block_q / block_q, fk = mask.block_k / block_k;
  const int64_t nqb = (mask.seq_q + block_q - 1) / block_q, nkb = (mask.seq_k + block_k - 1) / block_k;
  // Each coarse block covers fq x fk fine ones; the last coarse block may cover fine blocks past the end.
  const auto fine =
      mask.dense.repeat_interleave(fq, 2).repeat_interleave(fk, 3).slice(2, 0, nqb).slice(3, 0, nkb);
  return BlockMask::from_dense(fine, block_q, block_k, mask.seq_q, mask.seq_k);
}

}  // namespace sparge
