// Block-sparse attention with the stage-2 filter, the whole SpargeAttn call, and the float64 dense oracle.
//
// The sparse path processes key blocks in ascending order with an online softmax in log2 units (as kernels
// using exp2 do), vectorized over (batch, head, query block): for key block j, every (b, h, i) whose mask row
// selects j
//   S = Q_i K_j^T * scale * log2(e)                    (-inf where causal or tail masked)
//   m_local = rowmax(S)
//   stage 2: skip the (row group, j) unit iff every row r of the group has no allowed key here or
//            m_local[r] - m[r] < -pvthreshd        (m = running max; the first block with keys is never
//            skipped)
//   otherwise: m' = max(m, m_local); P = exp2(S - m'); l = l * exp2(m - m') + rowsum(P);
//              acc = acc * exp2(m - m') + P V
//   out = acc / l (0 for a row that computed no key), lse = (m + log2 l) * ln 2
// Quantization emulation (QuantMode): Q and smoothed K as INT8 with one scale per block (the integer dot
// product is exact in float32 up to D = 1040), S = dot * s_q * s_k; P.V either with P and V rounded to the
// 16-bit type of the input (bf16 stays bf16; float32/64 inputs use bf16, whose range cannot overflow), or FP8
// e4m3 with P scaled by 448 (exp2(S - m + log2 448); the row sum carries the same factor) and V divided by
// its per-channel scale amax / 448, restored after the division by l.
#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numbers>

#include "internal.h"
#include "sparge/blocks.h"
#include "sparge/error.h"
#include "sparge/reference.h"

namespace sparge {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

using detail::timed_ms;

// The 16-bit type that P and V take for QuantMode::kInt8.
at::ScalarType pv_dtype_for(at::ScalarType input) {
  return input == at::kHalf ? at::kHalf : at::kBFloat16;
}

// (NQB, bq) query row index of every padded row slot.
at::Tensor query_rows(int64_t nqb, int64_t bq, const at::TensorOptions& device) {
  return at::arange(nqb * bq, device.dtype(at::kLong)).view({nqb, bq});
}

void check_mask(const BlockMask& mask, const detail::Problem& p, const at::Tensor& q) {
  SPARGE_CHECK(mask.dense.defined(), "argument `mask`: expected a BlockMask built by BlockMask::from_dense");
  SPARGE_CHECK(mask.seq_q == p.seq_q && mask.seq_k == p.seq_k, "argument `mask`: expected Nq = ", p.seq_q,
               ", Nk = ", p.seq_k, " (of q, k), got ", mask.seq_q, ", ", mask.seq_k);
  SPARGE_CHECK(mask.dense.size(0) == p.batch && mask.dense.size(1) == p.heads_q,
               "argument `mask`: expected (B, Hq) = (", p.batch, ", ", p.heads_q, "), got (",
               mask.dense.size(0), ", ", mask.dense.size(1), ")");
  SPARGE_CHECK(mask.dense.device() == q.device(), "argument `mask`: expected device ", q.device(), ", got ",
               mask.dense.device());
}

AttentionResult run_sparse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& mask, const SpargeConfig& c, const detail::Problem& p) {
  const int64_t bq = c.block_q, bk = c.block_k, g = c.stage2_rows();
  const int64_t B = p.batch, H = p.heads_q, nqb = (p.seq_q + bq - 1) / bq, nkb = (p.seq_k + bk - 1) / bk;
  const int64_t groups = bq / g, off = p.seq_k - p.seq_q;
  const auto dt = detail::math_dtype(q.scalar_type());
  const auto opt = q.options().dtype(dt);
  const bool quant = c.quant != QuantMode::kNone, fp8 = c.quant == QuantMode::kInt8Fp8;
  const double p_scale = fp8 ? kFp8E4m3Max : 1.0;  // factor carried by P and l in FP8 mode

  const auto qh = detail::to_hnd(q, c.layout).to(dt);
  const auto kh = detail::to_hnd(k, c.layout).to(dt);
  const auto vh = detail::to_hnd(v, c.layout).to(dt);

  at::Tensor q_use = qh, k_use = kh, v_use = vh, q_scale, k_scale, v_scale;
  if (quant) {
    const auto qi = quantize_int8_blocks(qh, bq);
    const auto ki = quantize_int8_blocks(kh - kh.mean(2, /*keepdim=*/true), bk);
    q_use = qi.values;
    q_scale = qi.scale;  // (B, H, NQB)
    k_use = ki.values;
    k_scale = detail::expand_kv_heads(ki.scale.unsqueeze(-1), p.group()).squeeze(-1);  // (B, H, NKB)
  }
  if (fp8) {
    const auto amax = vh.abs().amax(2, /*keepdim=*/true);  // (B, Hkv, 1, D) per channel
    v_scale = at::where(amax > 0, amax / kFp8E4m3Max, at::full_like(amax, 1.0 / kFp8E4m3Max));
    v_use = round_to_fp8_e4m3(vh / v_scale);
    v_scale = detail::expand_kv_heads(v_scale, p.group());  // (B, H, 1, D)
  } else if (quant) {
    v_use = vh.to(pv_dtype_for(q.scalar_type())).to(dt);
  }
  k_use = detail::expand_kv_heads(k_use, p.group());
  v_use = detail::expand_kv_heads(v_use, p.group());

  const auto qb = detail::pad_blocks(q_use, bq);  // (B, H, NQB, bq, D)
  const auto rows = query_rows(nqb, bq, q.options());
  const auto row_valid = rows < p.seq_q;  // (NQB, bq)
  const auto pvt = detail::per_head(c.pvthreshd, H, opt).view({1, H, 1, 1});
  const bool stage2 =
      std::any_of(c.pvthreshd.begin(), c.pvthreshd.end(), [](double x) { return std::isfinite(x); });
  const auto valid = causal_valid_blocks(p.seq_q, p.seq_k, bq, bk, c.causal, q.options());

  auto m = at::full({B, H, nqb, bq}, -kInf, opt);
  auto l = at::zeros({B, H, nqb, bq}, opt);
  auto acc = at::zeros({B, H, nqb, bq, p.head_dim}, opt);
  AttentionStats st;
  st.block_q = bq;
  st.block_k = bk;
  st.stage2_group_rows = g;
  st.valid_blocks = B * H * valid.sum().item<int64_t>();
  st.computed_blocks = (mask & valid).sum().item<int64_t>();
  st.valid_pairs =
      B * H *
      (c.causal ? at::clamp_max(at::arange(p.seq_q, q.options().dtype(at::kLong)) + off + 1, p.seq_k)
                      .sum()
                      .item<int64_t>()
                : p.seq_q * p.seq_k);
  const double s_log2 = p.scale * std::numbers::log2e;
  const auto pv_type = pv_dtype_for(q.scalar_type());

  for (int64_t j = 0; j < nkb; ++j) {
    const auto active = mask.select(-1, j);  // (B, H, NQB)
    if (!active.any().item<bool>()) continue;
    const int64_t k0 = j * bk, kn = std::min(bk, p.seq_k - k0);
    const auto kj = k_use.narrow(2, k0, kn).unsqueeze(2);  // (B, H, 1, kn, D)
    const auto vj = v_use.narrow(2, k0, kn).unsqueeze(2);
    auto s = at::matmul(qb, kj.transpose(-1, -2));  // (B, H, NQB, bq, kn)   S = Q K^T
    if (quant) s = s * (q_scale * k_scale.select(-1, j).unsqueeze(-1)).unsqueeze(-1).unsqueeze(-1);
    s = s * s_log2;
    auto allowed = row_valid.unsqueeze(-1).expand({nqb, bq, kn});  // (NQB, bq, kn)
    if (c.causal) {
      const auto cols = at::arange(k0, k0 + kn, q.options().dtype(at::kLong));
      allowed = allowed & (cols.view({1, 1, -1}) <= rows.unsqueeze(-1) + off);
    }
    s = s.masked_fill(allowed.logical_not(), -kInf);

    const auto m_local = s.amax(-1);        // (B, H, NQB, bq)
    const auto has_keys = m_local > -kInf;  // rows with at least one allowed key in this block
    const auto run = active.unsqueeze(-1);  // (B, H, NQB, 1)
    const auto grp = [&](const at::Tensor& x) { return x.reshape({B, H, nqb, groups, g}); };
    const auto group_has = grp(has_keys.expand({B, H, nqb, bq})).any(-1);  // (B, H, NQB, G)
    at::Tensor skip_rows = at::zeros({B, H, nqb, bq}, q.options().dtype(at::kBool));
    if (stage2) {
      const auto negligible = has_keys.logical_not() | ((m_local - m) < -pvt);
      const auto skip_groups = grp(negligible).all(-1) & group_has;  // (B, H, NQB, G)
      skip_rows = skip_groups.unsqueeze(-1).expand({B, H, nqb, groups, g}).reshape({B, H, nqb, bq});
      st.stage2_skipped += (skip_groups & run).sum().item<int64_t>();
      const auto pairs_per_row = allowed.sum(-1);  // (NQB, bq)
      st.stage2_skipped_pairs += ((skip_rows & run) * pairs_per_row).sum().item<int64_t>();
    }
    st.stage2_groups += (group_has & run).sum().item<int64_t>();
    st.computed_pairs += (active.to(at::kLong) * allowed.sum({1, 2})).sum().item<int64_t>();

    const auto update = run & skip_rows.logical_not();  // (B, H, NQB, bq)
    const auto m_new = at::where(update, at::maximum(m, m_local), m);
    const auto m_safe = at::where(m_new > -kInf, m_new, at::zeros({}, opt));
    const auto alpha = at::exp2(m - m_safe);
    auto prob = at::exp2(s - m_safe.unsqueeze(-1)) * p_scale;  // (B, H, NQB, bq, kn)
    const auto l_add = prob.sum(-1);
    if (fp8) {
      prob = round_to_fp8_e4m3(prob);
    } else if (quant) {
      prob = prob.to(pv_type).to(dt);
    }
    const auto pv = at::matmul(prob, vj);  // (B, H, NQB, bq, D)   P V
    l = at::where(update, l * alpha + l_add, l);
    acc = at::where(update.unsqueeze(-1), acc * alpha.unsqueeze(-1) + pv, acc);
    m = m_new;
  }

  if (fp8) acc = acc * v_scale.unsqueeze(2);  // (B, H, 1, 1, D) per-channel V scale
  const auto has_any = l > 0;
  auto out = at::where(has_any.unsqueeze(-1), acc / l.clamp_min(1e-300).unsqueeze(-1), at::zeros({}, opt));
  out = out.view({B, H, nqb * bq, p.head_dim}).narrow(2, 0, p.seq_q);
  AttentionResult r;
  r.out = detail::from_hnd(out.to(q.scalar_type()), c.layout).contiguous();
  if (c.return_lse) {
    const auto lse = (m + at::log2(l.clamp_min(1e-300) / p_scale)) * std::numbers::ln2;
    r.lse = at::where(has_any, lse, at::full({}, -kInf, opt))
                .view({B, H, -1})
                .narrow(2, 0, p.seq_q)
                .to(at::kFloat);
  }
  r.stats = st;
  return r;
}

}  // namespace

AttentionResult block_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const BlockMask& mask, const SpargeConfig& config) {
  SpargeConfig c = config;
  c.block_q = mask.block_q;
  c.block_k = mask.block_k;
  SPARGE_CHECK(v.defined(), "argument `v`: expected a defined tensor");
  const auto p = detail::check_problem(__func__, q, k, v, c);
  check_mask(mask, p, q);
  AttentionResult r;
  const double ms = timed_ms(q.device(), [&] { r = run_sparse(q, k, v, mask.dense, c, p); });
  r.stats.attention_ms = ms;
  return r;
}

AttentionResult spas_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const SpargeConfig& config) {
  SPARGE_CHECK(v.defined(), "argument `v`: expected a defined tensor");
  detail::check_problem(__func__, q, k, v, config);
  BlockMask mask;
  const double predict_ms = timed_ms(q.device(), [&] { mask = predict_block_mask(q, k, config); });
  auto r = block_sparse_attention(q, k, v, mask, config);
  r.stats.prediction_ms = predict_ms;
  return r;
}

AttentionResult dense_attention_f64(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    bool causal, std::optional<double> scale, Layout layout,
                                    bool return_lse) {
  SpargeConfig c;
  c.causal = causal;
  c.scale = scale;
  c.layout = layout;
  SPARGE_CHECK(v.defined(), "argument `v`: expected a defined tensor");
  const auto p = detail::check_problem(__func__, q, k, v, c);
  const auto qh = detail::to_hnd(q, layout).to(at::kDouble);
  const auto kh = detail::expand_kv_heads(detail::to_hnd(k, layout).to(at::kDouble), p.group());
  const auto vh = detail::expand_kv_heads(detail::to_hnd(v, layout).to(at::kDouble), p.group());
  // Query rows in chunks whose (B, H, rows, Nk) float64 scores stay under ~1 GiB (a 30-head 17776-token
  // video layer would need 76 GB at once); each row's softmax sees all its keys, so chunking changes nothing.
  constexpr int64_t kScoreBytes = int64_t{1} << 30;
  const int64_t per_row = std::max<int64_t>(1, p.batch * p.heads_q * p.seq_k * 8);
  const int64_t rows = std::clamp<int64_t>(kScoreBytes / per_row, 1, std::max<int64_t>(p.seq_q, 1));
  std::vector<at::Tensor> outs, lses;
  for (int64_t r0 = 0; r0 < p.seq_q; r0 += rows) {
    const int64_t r1 = std::min(p.seq_q, r0 + rows);
    auto s = at::matmul(qh.slice(2, r0, r1), kh.transpose(-1, -2)) * p.scale;  // (B, H, rows, Nk)
    if (causal) {
      const auto opt = q.options().dtype(at::kLong);
      const auto allowed = at::arange(p.seq_k, opt).view({1, -1}) <=
                           at::arange(r0, r1, opt).view({-1, 1}) + (p.seq_k - p.seq_q);
      s = s.masked_fill(allowed.logical_not(), -kInf);
    }
    outs.push_back(at::matmul(at::softmax(s, -1), vh));
    if (return_lse) lses.push_back(at::logsumexp(s, -1));
  }
  AttentionResult r;
  const auto out = outs.size() == 1 ? outs[0] : at::cat(outs, 2);
  r.out = detail::from_hnd(out, layout).contiguous();
  if (return_lse) r.lse = lses.size() == 1 ? lses[0] : at::cat(lses, 2);
  return r;
}

double relative_l2(const at::Tensor& out, const at::Tensor& ref) {
  SPARGE_CHECK(out.sizes() == ref.sizes(), "arguments `out`, `ref`: expected equal shapes, got ", out.sizes(),
               " and ", ref.sizes());
  const auto o = out.to(at::kDouble), r = ref.to(at::kDouble);
  return ((o - r).norm() / r.norm()).item<double>();
}

double relative_l1(const at::Tensor& out, const at::Tensor& ref) {
  SPARGE_CHECK(out.sizes() == ref.sizes(), "arguments `out`, `ref`: expected equal shapes, got ", out.sizes(),
               " and ", ref.sizes());
  const auto o = out.to(at::kDouble), r = ref.to(at::kDouble);
  return ((o - r).abs().sum() / r.abs().sum()).item<double>();
}

}  // namespace sparge
