// GPU tests of sparge::cuda::vertical_slash_attention (the MInference vertical-slash kernel) against the
// reference sparge::vertical_slash_index_attention (float32 math on the same 16-bit inputs and the same
// index) and a float64 dense oracle masked by vertical_slash_token_mask(vs, kKernelTiles).
//
// Error rule (as test_cuda_attention.cpp): relL2(kernel, float64 oracle) <= 2 * relL2(same-dtype torch masked
// attention, oracle) + 1e-3, and relL2(kernel, float32 reference) <= exact_tolerance(dtype) (the rounding of
// P and of the output to the 16-bit type). Long cases (B * Hq * Nq * Nk > 2^26) are judged by the float32
// reference only. Outputs are preallocated and poisoned with NaN (0xFF bytes) before every launch: every
// element must be written. LSE: -inf exactly where the reference has -inf, else within 2e-3. Statistics: the
// kernel's (from the index) equal the reference's, and computed_pairs equals the token mask's count.
// Inputs are fresh random N(0, 1) draws, or planted ones (strong key columns and one strong diagonal that the
// estimate must find).
//
// The index builder cuda::vertical_slash_index must equal the host sparge::vertical_slash_index exactly (all
// four tensors) on estimates of random inputs with random budgets and on a hand-built estimate that exercises
// every rule of the index.
//
// To add a case: append a Case to cases(); name() is printed with every failure.
// Without a CUDA device every GPU test skips with the reason; the CPU part of the input checks runs
// everywhere.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "sparge/cuda_minference.h"
#include "sparge/minference.h"
#include "test_util.h"

namespace sparge {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kPlantedOffset = 150;  // beyond the 100 forced diagonals: found only by its score

struct Case {
  int64_t batch, heads_q, heads_kv, seq_q, seq_k, head_dim;
  at::ScalarType dtype;
  Layout layout;
  bool planted;
  int64_t vertical, slash;  // budgets of head 0; head h gets (1 + h % 3) x vertical and slash + 20 (h % 2)
  std::string name() const {
    std::ostringstream os;
    os << "B" << batch << "_H" << heads_q << "_Hkv" << heads_kv << "_Nq" << seq_q << "_Nk" << seq_k << "_D"
       << head_dim << "_" << test::dtype_name(dtype) << "_" << to_string(layout)
       << (planted ? "_planted" : "_random") << "_v" << vertical << "_s" << slash;
    return os.str();
  }
};

// Slash budgets <= 100 select only the forced diagonals nearest the main one (a band: sparse at large N);
// larger ones add the best-scoring offsets, each a 64-key tile per query block (random inputs spread them:
// near-dense at small N).
std::vector<Case> cases() {
  const auto bf16 = at::kBFloat16, fp16 = at::kHalf;
  const auto hnd = Layout::kHND, nhd = Layout::kNHD;
  return {
      {2, 4, 2, 300, 300, 64, bf16, hnd, false, 40, 50},
      {1, 4, 1, 200, 333, 128, fp16, nhd, true, 40, 110},
      {2, 2, 2, 64, 64, 64, fp16, hnd, false, 30, 50},
      {1, 2, 1, 1, 77, 64, bf16, hnd, false, 30, 50},  // Nq = 1: one row, bottom-right
      {1, 8, 2, 113, 113, 128, bf16, nhd, false, 30, 50},
      {2, 4, 4, 239, 500, 64, fp16, nhd, true, 60, 110},
      {1, 4, 2, 1023, 1023, 128, bf16, hnd, true, 100, 120},
      {1, 8, 1, 700, 2048, 64, fp16, hnd, false, 200, 60},
      {2, 2, 1, 2048, 2048, 128, fp16, nhd, true, 64, 110},
      {1, 2, 2, 4096, 4096, 64, bf16, hnd, false, 100, 80},
      {1, 4, 2, 500, 500, 128, bf16, hnd, false, 500, 500},  // budgets >= Nk: dense causal
      {1, 2, 1, 8192, 8192, 128, bf16, nhd, true, 1000, 110},
      {1, 4, 2, 16384, 16384 + 77, 64, fp16, hnd, false, 1000, 300},
  };
}

MInferenceConfig config_of(const Case& c) {
  MInferenceConfig cfg;
  cfg.heads.clear();
  for (int64_t h = 0; h < c.heads_q; ++h) {
    MInferenceHead head;
    head.vertical_size = c.vertical * (1 + h % 3);
    head.slash_size = c.slash + 20 * (h % 2);
    cfg.heads.push_back(head);
  }
  cfg.return_lse = true;
  return cfg;
}

struct Inputs {
  at::Tensor q, k, v;            // HND, the case's dtype, CUDA
  std::vector<int64_t> columns;  // planted key columns (empty for random inputs)
};

// Planted, with logit gaps that do not depend on D: a few key columns get a shared direction u
// (|u|^2 = 5 sqrt(D)) that every query also carries (+5 logits), and the keys of the first query head of
// every group echo the random part z of that head's queries kPlantedOffset rows later (k[j] += 4 z[j +
// offset] / sqrt(D): about +4 logits on that diagonal). Echoing the whole query (u included) made the columns
// on the diagonal's keys so strong that a row's softmax mass went to the diagonals crossing them: the planted
// one was missed for about 2% of seeds at D = 64 (seed 10520001700512363275 on an H200); this form missed
// none of 1500 seeds over the planted cases.
Inputs make_inputs(const Case& c, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f = at::TensorOptions(at::kFloat);
  auto q = at::randn({c.batch, c.heads_q, c.seq_q, c.head_dim}, gen, f);
  auto k = at::randn({c.batch, c.heads_kv, c.seq_k, c.head_dim}, gen, f);
  auto v = at::randn({c.batch, c.heads_kv, c.seq_k, c.head_dim}, gen, f);
  Inputs in;
  if (c.planted) {
    const double root_d = std::sqrt(static_cast<double>(c.head_dim));
    auto u = at::randn({c.head_dim}, gen, f);
    u = u / u.norm() * std::sqrt(5.0 * root_d);
    const auto z = q.clone();
    q = q + u;
    for (int64_t j : {35, 77, 141})
      if (j < c.seq_k - 64) {
        in.columns.push_back(j);
        k.select(2, j).add_(u);
      }
    // Key j = diag(i) - kPlantedOffset of query row i = j + kPlantedOffset - (Nk - Nq), for every row i >= 0.
    const int64_t off = c.seq_k - c.seq_q, group = c.heads_q / c.heads_kv;
    const int64_t j0 = std::max<int64_t>(0, off - kPlantedOffset), j1 = c.seq_k - kPlantedOffset;  // [j0, j1)
    if (j1 > j0)
      for (int64_t kv = 0; kv < c.heads_kv; ++kv)
        k[0][kv]
            .narrow(0, j0, j1 - j0)
            .add_(z[0][kv * group].narrow(0, j0 + kPlantedOffset - off, j1 - j0) * (4.0 / root_d));
  }
  in.q = q.to(c.dtype).cuda();
  in.k = k.to(c.dtype).cuda();
  in.v = v.to(c.dtype).cuda();
  return in;
}

at::Tensor to_layout(const at::Tensor& hnd, Layout layout) {
  return layout == Layout::kNHD ? hnd.transpose(1, 2).contiguous() : hnd.contiguous();
}
at::Tensor to_hnd(const at::Tensor& x, Layout layout) {
  return layout == Layout::kNHD ? x.transpose(1, 2) : x;
}

// Masked attention in the inputs' dtype (torch's same-precision baseline), HND.
at::Tensor masked_attention_same_dtype(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& allowed, double scale) {
  const int64_t g = q.size(1) / k.size(1);
  const auto kk = k.repeat_interleave(g, 1), vv = v.repeat_interleave(g, 1);
  auto s = at::matmul(q, kk.transpose(-1, -2)) * scale;
  s = s.masked_fill(allowed.logical_not(), -kInf);
  return at::matmul(at::nan_to_num(at::softmax(s, -1), 0.0), vv);
}

// Preallocated kernel outputs filled with NaN (0xFF bytes).
cuda::VerticalSlashOptions poisoned(const at::Tensor& q_like, int64_t b, int64_t h, int64_t nq) {
  cuda::VerticalSlashOptions opt;
  opt.collect_stats = true;
  opt.out = at::empty(q_like.sizes(), q_like.options());
  opt.lse = at::empty({b, h, nq}, q_like.options().dtype(at::kFloat));
  EXPECT_EQ(cudaMemset(opt.out.data_ptr(), 0xFF, opt.out.nbytes()), cudaSuccess);
  EXPECT_EQ(cudaMemset(opt.lse.data_ptr(), 0xFF, opt.lse.nbytes()), cudaSuccess);
  return opt;
}

// LSE of the kernel against the reference's: -inf at the same rows, else within 2e-3. Returns the max error.
double expect_lse_close(const at::Tensor& lse, const at::Tensor& lse_ref) {
  const auto got = lse.to(at::kDouble), want = lse_ref.to(at::kDouble);
  EXPECT_FALSE(at::isnan(got).any().item<bool>()) << "unwritten (NaN-poisoned) lse elements";
  const auto want_empty = at::isinf(want), got_empty = at::isinf(got);
  EXPECT_TRUE(at::equal(want_empty, got_empty)) << "rows with no computed key differ";
  const double err = at::where(want_empty, at::zeros_like(got), (got - want).abs()).max().item<double>();
  EXPECT_LT(err, 2e-3);
  return err;
}

void expect_same_counts(const AttentionStats& got, const AttentionStats& want) {
  EXPECT_EQ(got.block_q, want.block_q);
  EXPECT_EQ(got.block_k, want.block_k);
  EXPECT_EQ(got.valid_pairs, want.valid_pairs);
  EXPECT_EQ(got.computed_pairs, want.computed_pairs);
  EXPECT_EQ(got.valid_blocks, want.valid_blocks);
  EXPECT_EQ(got.computed_blocks, want.computed_blocks);
}

// Returns the case's token density.
double run_case(const Case& c) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(c.name() + " seed " + std::to_string(seed));
  const Inputs in = make_inputs(c, seed);
  const auto cfg = config_of(c);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));

  const auto vs = minference_vertical_slash(in.q, in.k, cfg);  // on the GPU, float32 estimate
  const auto ix = vertical_slash_index(vs);
  if (c.planted) {  // the estimate finds what was planted (head 0 of batch 0 reads kv head 0)
    const auto vert = vs.vertical[0][0].cpu(), slash = vs.slash[0][0].cpu();
    for (int64_t j : in.columns) EXPECT_TRUE((vert == j).any().item<bool>()) << "planted column " << j;
    if (c.seq_k > kPlantedOffset + 64) {
      EXPECT_TRUE((slash == kPlantedOffset).any().item<bool>()) << "planted diagonal " << kPlantedOffset;
    }
  }
  // The float32 reference on the same (exactly representable) values: its output is not rounded to 16 bits.
  const auto ref =
      vertical_slash_index_attention(in.q.to(at::kFloat), in.k.to(at::kFloat), in.v.to(at::kFloat), ix, cfg);

  MInferenceConfig kcfg = cfg;
  kcfg.layout = c.layout;
  const auto q = to_layout(in.q, c.layout), k = to_layout(in.k, c.layout), v = to_layout(in.v, c.layout);
  const auto opt = poisoned(q, c.batch, c.heads_q, c.seq_q);
  const auto r = cuda::vertical_slash_attention(q, k, v, ix, kcfg, opt);
  EXPECT_EQ(r.out.data_ptr(), opt.out.data_ptr());
  EXPECT_EQ(r.out.scalar_type(), c.dtype);
  EXPECT_FALSE(at::isnan(r.out).any().item<bool>()) << "unwritten (NaN-poisoned) output elements";
  const auto out = to_hnd(r.out, c.layout);

  const double err_ref = relative_l2(out, ref.out);
  EXPECT_LE(err_ref, test::exact_tolerance(c.dtype)) << "kernel vs the float32 reference";
  double err_kernel = -1, err_torch = -1;
  const bool huge = c.batch * c.heads_q * c.seq_q * c.seq_k > (int64_t{1} << 26);
  if (!huge) {
    const auto allowed = vertical_slash_token_mask(vs, VsCoverage::kKernelTiles);
    EXPECT_EQ(ref.stats.computed_pairs, allowed.sum().item<int64_t>());
    const auto oracle = test::masked_attention_f64(in.q, in.k, in.v, allowed, scale);
    err_kernel = relative_l2(out, oracle);
    err_torch = relative_l2(masked_attention_same_dtype(in.q, in.k, in.v, allowed, scale), oracle);
    EXPECT_LE(err_kernel, 2 * err_torch + 1e-3) << "torch same-dtype error " << err_torch;
  }
  const double lse_err = expect_lse_close(r.lse, ref.lse);
  expect_same_counts(r.stats, ref.stats);
  std::printf("%-70s err %.2e (torch %.2e) vs ref %.2e lse %.1e density %.3f kernel %.3f ms\n",
              c.name().c_str(), err_kernel, err_torch, err_ref, lse_err, r.stats.token_density(),
              r.stats.attention_ms);
  return r.stats.token_density();
}

TEST(CudaMInference, MatchesReferenceAndOracle) {
  SPARGE_REQUIRE_GPU();
  int sparse = 0;
  for (const auto& c : cases()) sparse += run_case(c) < 0.5;
  // The band cases (slash budgets <= 100 at N >= 2048) stay near density 0.1 - 0.3 whatever the draw.
  EXPECT_GE(sparse, 4) << "too few cases compute a sparse pattern (token density < 0.5)";
}

// Query blocks with no tile and no column (a hand-edited index): their rows get out = 0 and lse = -inf;
// every other row is unchanged. Also a block with columns only (no tile).
TEST(CudaMInference, EmptyBlocksWriteZerosAndMinusInfinity) {
  SPARGE_REQUIRE_GPU();
  for (int64_t d : {64, 128}) {
    const Case c{2, 4, 2, 300, 420, d, at::kHalf, Layout::kHND, false, 40, 100};
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE(c.name() + " seed " + std::to_string(seed));
    const Inputs in = make_inputs(c, seed);
    const auto cfg = config_of(c);
    auto ix = vertical_slash_index(minference_vertical_slash(in.q, in.k, cfg));
    ix.block_count = ix.block_count.clone();
    ix.column_count = ix.column_count.clone();
    ix.block_count.select(2, 1).zero_();  // block 1 of every head: nothing
    ix.column_count.select(2, 1).zero_();
    ix.block_count.index_put_({0, 1, 3}, 0);  // block 3 of (0, 1): its columns only
    const auto ref = vertical_slash_index_attention(in.q.to(at::kFloat), in.k.to(at::kFloat),
                                                    in.v.to(at::kFloat), ix, cfg);
    const auto opt = poisoned(in.q, c.batch, c.heads_q, c.seq_q);
    const auto r = cuda::vertical_slash_attention(in.q, in.k, in.v, ix, cfg, opt);
    EXPECT_FALSE(at::isnan(r.out).any().item<bool>()) << "unwritten (NaN-poisoned) output elements";
    EXPECT_EQ(r.out.narrow(2, 64, 64).abs().max().item<double>(), 0.0) << "rows of an empty block must be 0";
    EXPECT_TRUE(at::isinf(r.lse.narrow(2, 64, 64)).all().item<bool>());
    EXPECT_LE(relative_l2(r.out, ref.out), test::exact_tolerance(c.dtype));
    expect_lse_close(r.lse, ref.lse);
    expect_same_counts(r.stats, ref.stats);
  }
}

// Strided views (a head-dim slice of a wider tensor) run without copies; a misaligned base goes through the
// copy path; both give the contiguous result bit for bit.
TEST(CudaMInference, StridedAndMisalignedInputs) {
  SPARGE_REQUIRE_GPU();
  const Case c{1, 4, 2, 200, 300, 64, at::kBFloat16, Layout::kHND, false, 40, 100};
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Inputs in = make_inputs(c, seed);
  const auto cfg = config_of(c);
  const auto ix = vertical_slash_index(minference_vertical_slash(in.q, in.k, cfg));
  const auto base = cuda::vertical_slash_attention(in.q, in.k, in.v, ix, cfg).out;
  auto widen = [](const at::Tensor& x, int64_t offset) {
    auto w = at::zeros({x.size(0), x.size(1), x.size(2), x.size(3) + 16}, x.options());
    w.narrow(3, offset, x.size(3)).copy_(x);
    return w.narrow(3, offset, x.size(3));
  };
  for (int64_t offset : {8, 1}) {
    const auto out =
        cuda::vertical_slash_attention(widen(in.q, offset), widen(in.k, offset), widen(in.v, offset), ix, cfg)
            .out;
    EXPECT_TRUE(at::equal(out, base)) << "offset " << offset;
  }
}

// cuda::minference_attention: the vertical-slash heads on the kernel, the other patterns on the reference, in
// one call; against sparge::minference_attention on the same GPU tensors (mixed patterns, GQA, NHD, batch,
// with and without the equal-sparsity mode).
TEST(CudaMInference, MinferenceAttentionRunsVerticalSlashHeadsOnTheKernel) {
  SPARGE_REQUIRE_GPU();
  for (auto dtype : {at::kBFloat16, at::kHalf})
    for (bool target : {false, true}) {
      const uint64_t seed = test::fresh_seed();
      SCOPED_TRACE(std::string("seed ") + std::to_string(seed) + " " + test::dtype_name(dtype) +
                   (target ? " target 0.6" : ""));
      const Case c{2, 4, 2, 700, 900, 128, dtype, Layout::kNHD, true, 60, 200};
      const Inputs in = make_inputs(c, seed);
      MInferenceConfig cfg = config_of(c);
      cfg.heads[1].pattern = MInferenceHead::Pattern::kAShape;
      cfg.heads[1].n_init = 64;
      cfg.heads[1].n_local = 200;
      cfg.heads[2].pattern = MInferenceHead::Pattern::kBlockSparse;
      cfg.heads[2].top_blocks = 4;
      cfg.layout = Layout::kNHD;
      if (target) cfg.target_sparsity = 0.6;
      const auto q = to_layout(in.q, c.layout), k = to_layout(in.k, c.layout), v = to_layout(in.v, c.layout);
      const auto want = minference_attention(q, k, v, cfg);
      const auto got = cuda::minference_attention(q, k, v, cfg);
      EXPECT_EQ(got.out.sizes(), q.sizes());
      EXPECT_LE(relative_l2(got.out, want.out), test::exact_tolerance(dtype));
      expect_lse_close(got.lse, want.lse);
      expect_same_counts(got.stats, want.stats);
      // The equal-sparsity search with its indexes built on the device selects the host search's ratio.
      EXPECT_EQ(cuda::minference_budget_ratio(q, k, cfg), minference_budget_ratio(q, k, cfg));
    }
}

// ---- cuda::vertical_slash_index: the index built on the device equals the host one exactly.

// All four tensors of the device index equal the host index's: values, shapes, dtype int32, device.
void expect_same_index(const VerticalSlashIndex& dev, const VerticalSlashIndex& host,
                       const at::Device& where) {
  EXPECT_EQ(dev.seq_q, host.seq_q);
  EXPECT_EQ(dev.seq_k, host.seq_k);
  const std::pair<const char*, std::pair<const at::Tensor*, const at::Tensor*>> named[] = {
      {"block_count", {&dev.block_count, &host.block_count}},
      {"block_offset", {&dev.block_offset, &host.block_offset}},
      {"column_count", {&dev.column_count, &host.column_count}},
      {"column_index", {&dev.column_index, &host.column_index}}};
  for (const auto& [name, pair] : named) {
    const auto& [d, h] = pair;
    SCOPED_TRACE(name);
    ASSERT_TRUE(d->defined());
    EXPECT_EQ(d->device(), where);
    EXPECT_EQ(h->device(), where);
    EXPECT_EQ(d->scalar_type(), at::kInt);
    ASSERT_EQ(d->sizes(), h->sizes());
    const auto dc = d->cpu().flatten(), hc = h->cpu().flatten();
    if (!at::equal(dc, hc)) {
      const auto bad = (dc != hc).nonzero().flatten();
      const int64_t i = bad[0].item<int64_t>(), width = d->dim() == 4 ? d->size(3) : 1;
      ADD_FAILURE() << bad.numel() << " entries differ; the first in row (b, h, m) = " << i / width
                    << " (flattened), position " << i % width << ": device " << dc[i].item<int32_t>()
                    << ", host " << hc[i].item<int32_t>();
    }
  }
}

// Milliseconds of fn on the GPU (synchronized before and after).
double gpu_ms(const std::function<void()>& fn) {
  torch::cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

struct IndexCase {
  int64_t batch, heads_q, heads_kv, seq_q, seq_k;
};

// Estimates on CUDA tensors (random inputs, random per-head budgets: small ones below the floors 30 / 50,
// middle ones, and ones at or past the cap Nk), then compares the device index with the host one. Odd
// lengths (not multiples of 64), Nq < Nk, batch and GQA; the last case is MInference's working size (one
// layer at N = 32K, 16 heads, the default budgets 1000 / 6096), printed with both build times.
TEST(CudaMInference, DeviceIndexEqualsHostIndex) {
  SPARGE_REQUIRE_GPU();
  const std::vector<IndexCase> shapes = {
      {1, 1, 1, 1000, 1000},        {2, 3, 3, 1000, 1000}, {1, 4, 2, 1000, 4100},
      {2, 2, 1, 4100, 4100},        {1, 2, 2, 64, 64},     {1, 2, 1, 1, 77},
      {2, 4, 4, 777, 1500},         {1, 3, 1, 4100, 4165}, {1, 2, 2, 130, 4100},
      {1, 2, 1, 16384, 16384 + 33},
  };
  for (const auto& c : shapes) {
    const uint64_t seed = test::fresh_seed();
    std::ostringstream name;
    name << "B" << c.batch << "_H" << c.heads_q << "_Hkv" << c.heads_kv << "_Nq" << c.seq_q << "_Nk"
         << c.seq_k << " seed " << seed;
    SCOPED_TRACE(name.str());
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    const auto f = at::TensorOptions(at::kFloat);
    const auto q = at::randn({c.batch, c.heads_q, c.seq_q, 64}, gen, f).cuda();
    const auto k = at::randn({c.batch, c.heads_kv, c.seq_k, 64}, gen, f).cuda();
    std::mt19937_64 rng(seed);
    // Per head: small (below the floors), anywhere up to Nk, or at / past the cap.
    auto budget = [&](int64_t cap) -> int64_t {
      switch (rng() % 4) {
        case 0:
          return static_cast<int64_t>(rng() % 60);
        case 1:
          return cap + static_cast<int64_t>(rng() % 3) * 500;
        default:
          return static_cast<int64_t>(rng() % static_cast<uint64_t>(cap + 1));
      }
    };
    MInferenceConfig cfg;
    cfg.heads.clear();
    for (int64_t h = 0; h < c.heads_q; ++h) {
      MInferenceHead head;
      head.vertical_size = budget(c.seq_k);
      head.slash_size = budget(c.seq_k);
      cfg.heads.push_back(head);
    }
    if (c.seq_q > 1) {  // the first head at the cap for both lists: every offset, every key
      cfg.heads[0].vertical_size = c.seq_k;
      cfg.heads[0].slash_size = c.seq_k;
    }
    const auto vs = minference_vertical_slash(q, k, cfg);
    const auto host = vertical_slash_index(vs);
    const auto dev = cuda::vertical_slash_index(vs);
    expect_same_index(dev, host, q.device());
    // int32 lists (converted on the device) give the same index.
    VerticalSlash vs32 = vs;
    vs32.vertical = vs.vertical.to(at::kInt);
    vs32.vertical_count = vs.vertical_count.to(at::kInt);
    vs32.slash = vs.slash.to(at::kInt);
    vs32.slash_count = vs.slash_count.to(at::kInt);
    expect_same_index(cuda::vertical_slash_index(vs32), host, q.device());
    // The statistics of a CUDA index (tensor ops on the device) equal the host loop's on its CPU copy.
    VerticalSlashIndex host_cpu = host;
    for (auto* t :
         {&host_cpu.block_count, &host_cpu.block_offset, &host_cpu.column_count, &host_cpu.column_index})
      *t = t->cpu();
    expect_same_counts(vertical_slash_index_stats(dev), vertical_slash_index_stats(host_cpu));
    EXPECT_EQ(vertical_slash_index_pairs(dev), vertical_slash_index_pairs(host_cpu));
  }

  // On a side stream: the builder enqueues on the current stream (synchronized before reading).
  {
    const auto q = at::randn({1, 2, 1000, 64}, at::TensorOptions(at::kFloat).device(at::kCUDA));
    const auto k = at::randn({1, 2, 1100, 64}, q.options());
    MInferenceConfig cfg;
    cfg.heads[0].vertical_size = 200;
    cfg.heads[0].slash_size = 300;
    const auto vs = minference_vertical_slash(q, k, cfg);
    const auto host = vertical_slash_index(vs);
    torch::cuda::synchronize();
    auto side = c10::cuda::getStreamFromPool();
    VerticalSlashIndex dev;
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      dev = cuda::vertical_slash_index(vs);
    }
    side.synchronize();
    expect_same_index(dev, host, q.device());
  }

  // MInference's size: one layer, N = 32K, 16 heads, budgets (1000, 6096); times of both builders.
  {
    const int64_t n = 32768, heads = 16;
    const auto q = at::randn({1, heads, n, 64}, at::TensorOptions(at::kHalf).device(at::kCUDA));
    const auto k = at::randn({1, heads, n, 64}, q.options());
    MInferenceConfig cfg;  // the fallback head (1000, 6096) for every head
    const auto vs = minference_vertical_slash(q, k, cfg);
    VerticalSlashIndex host, dev;
    const double host_ms = gpu_ms([&] { host = vertical_slash_index(vs); });
    cuda::vertical_slash_index(vs);  // warm-up (module load)
    const double dev_ms = gpu_ms([&] { dev = cuda::vertical_slash_index(vs); });
    expect_same_index(dev, host, q.device());
    std::printf(
        "vertical_slash_index N = %lld, H = %lld, budgets (1000, 6096): host %.2f ms, device %.3f ms\n",
        static_cast<long long>(n), static_cast<long long>(heads), host_ms, dev_ms);
  }
}

// A hand-built estimate (B 1, H 2, Nq 200, Nk 330: bottom-right offset 130, four query blocks, the last of 8
// rows) exercising every rule of the index, checked against the host index and, for two blocks, by hand.
TEST(CudaMInference, DeviceIndexHandBuiltRules) {
  SPARGE_REQUIRE_GPU();
  const auto lopt = at::TensorOptions(at::kLong);
  VerticalSlash vs;
  vs.seq_q = 200;
  vs.seq_k = 330;
  // Head 0, block 0 (E = 0 + 64 + 130 = 194), offsets from the largest: 329, 300, 260, 200 >= E are
  // skipped; 150 gives e = 44, clamped to [0, 64); 130 gives e = 64 (inside it); 65 -> e = 129 > 64 + 64
  // opens [65, 129); 64 -> e = 130 grows it by one tile to 193 (not to 130); 1 -> e = 193 is inside; 0 -> e
  // = 194 grows it to 257. Tiles 0, 65, 129, 193. Verticals: 0, 3 in [0, 64) and 100, 200, 256 in [65,
  // 257) are dropped, 64 lies between the ranges (a column), 257 and 300 are at or past the last range's end
  // (dropped).
  // Head 1 (adjacent tiles 0, 64, 128, 192 apart), block 3 (rows 192 .. 199, E = 386): 192 -> e = 194 opens
  // [130, 194); 128 -> 258, 64 -> 322, 0 -> 386 each grow it by one tile: [130, 386) (keys >= Nk masked by
  // the kernel). Verticals 5, 129 are columns, 130 and 329 inside. Block 0 (E = 194): [0, 256) after the
  // clamp of 192 (e = 2 -> 64) and three growths; every vertical inside or past it: no column.
  const int64_t slash_width = 11, vertical_width = 10;
  vs.slash = at::full({1, 2, slash_width}, -1, lopt);
  vs.vertical = at::full({1, 2, vertical_width}, -1, lopt);
  const std::vector<int64_t> slash0 = {0, 1, 64, 65, 130, 150, 200, 260, 300, 329},
                             slash1 = {0, 64, 128, 192};
  const std::vector<int64_t> vert0 = {0, 3, 64, 100, 200, 256, 257, 300}, vert1 = {5, 129, 130, 329};
  auto fill = [&](at::Tensor& list, int64_t h, const std::vector<int64_t>& values) {
    list[0][h]
        .narrow(0, 0, static_cast<int64_t>(values.size()))
        .copy_(at::tensor(at::ArrayRef<int64_t>(values), lopt));
  };
  fill(vs.slash, 0, slash0);
  fill(vs.slash, 1, slash1);
  fill(vs.vertical, 0, vert0);
  fill(vs.vertical, 1, vert1);
  vs.slash_count =
      at::tensor({static_cast<int64_t>(slash0.size()), static_cast<int64_t>(slash1.size())}, lopt)
          .view({1, 2});
  vs.vertical_count =
      at::tensor({static_cast<int64_t>(vert0.size()), static_cast<int64_t>(vert1.size())}, lopt).view({1, 2});
  vs.slash = vs.slash.cuda();
  vs.vertical = vs.vertical.cuda();
  vs.slash_count = vs.slash_count.cuda();
  vs.vertical_count = vs.vertical_count.cuda();

  const auto host = vertical_slash_index(vs);
  const auto dev = cuda::vertical_slash_index(vs);
  expect_same_index(dev, host, vs.slash.device());
  auto row = [](const at::Tensor& t, int64_t h, int64_t m) {
    const auto r = t[0][h][m].cpu();
    return std::vector<int32_t>(r.data_ptr<int32_t>(), r.data_ptr<int32_t>() + r.numel());
  };
  auto padded = [](std::vector<int32_t> v, int64_t width) {
    v.resize(static_cast<size_t>(width), -1);
    return v;
  };
  EXPECT_EQ(dev.block_count[0][0][0].item<int32_t>(), 4);
  EXPECT_EQ(row(dev.block_offset, 0, 0), padded({0, 65, 129, 193}, slash_width));
  EXPECT_EQ(dev.column_count[0][0][0].item<int32_t>(), 1);
  EXPECT_EQ(row(dev.column_index, 0, 0), padded({64}, vertical_width));
  EXPECT_EQ(dev.block_count[0][1][3].item<int32_t>(), 4);
  EXPECT_EQ(row(dev.block_offset, 1, 3), padded({130, 194, 258, 322}, slash_width));
  EXPECT_EQ(row(dev.column_index, 1, 3), padded({5, 129}, vertical_width));
  EXPECT_EQ(row(dev.block_offset, 1, 0), padded({0, 64, 128, 192}, slash_width));
  EXPECT_EQ(dev.column_count[0][1][0].item<int32_t>(), 0);
}

// Input checks name the argument; CPU tensors are rejected before any device work, so this runs everywhere.
TEST(CudaMInference, RejectsBadInputs) {
  auto expect_error = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  MInferenceConfig cfg;
  cfg.heads = {MInferenceHead{}};
  cfg.heads[0].vertical_size = 30;
  cfg.heads[0].slash_size = 50;
  const auto f = at::TensorOptions(at::kHalf);
  const auto q = at::randn({1, 2, 100, 64}, f), k = at::randn({1, 1, 130, 64}, f),
             v = at::randn({1, 1, 130, 64}, f);
  const auto ix_cpu =
      vertical_slash_index(minference_vertical_slash(q.to(at::kFloat), k.to(at::kFloat), cfg));
  expect_error([&] { cuda::vertical_slash_attention(q, k, v, ix_cpu, cfg); },
               "argument `q`: expected a CUDA tensor");
  EXPECT_NE(cuda::vertical_slash_unsupported_reason(q, k, v, cfg).find("CUDA"), std::string::npos);
  auto exact = cfg;
  exact.coverage = VsCoverage::kExactTokens;
  expect_error([&] { cuda::minference_attention(q, k, v, exact); }, "argument `config.coverage`");
  const auto vs_cpu = minference_vertical_slash(q.to(at::kFloat), k.to(at::kFloat), cfg);
  expect_error([&] { cuda::vertical_slash_index(vs_cpu); }, "argument `vs.vertical`: expected a CUDA tensor");
  auto vs_bad = vs_cpu;
  vs_bad.seq_q = 131;
  expect_error([&] { cuda::vertical_slash_index(vs_bad); }, "argument `vs`: expected 1 <= seq_q <= seq_k");
  vs_bad = vs_cpu;
  vs_bad.slash = at::Tensor();
  expect_error([&] { cuda::vertical_slash_index(vs_bad); }, "argument `vs.slash`: expected a defined tensor");
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device visible to torch: GPU input checks skipped";
  }

  const auto qg = q.cuda(), kg = k.cuda(), vg = v.cuda();
  const auto ix = vertical_slash_index(minference_vertical_slash(qg, kg, cfg));
  expect_error([&] { cuda::vertical_slash_attention(qg, kg, vg, ix_cpu, cfg); },
               "argument `index.block_count`: expected device");
  expect_error(
      [&] {
        cuda::vertical_slash_attention(qg.to(at::kFloat), kg.to(at::kFloat), vg.to(at::kFloat), ix, cfg);
      },
      "argument `q`: expected dtype float16 or bfloat16");
  const auto wide = at::randn({1, 2, 100, 80}, f.device(at::kCUDA));
  const auto wide_kv = at::randn({1, 1, 130, 80}, f.device(at::kCUDA));
  expect_error([&] { cuda::vertical_slash_attention(wide, wide_kv, wide_kv, ix, cfg); },
               "head dim 64 or 128");
  expect_error([&] { cuda::vertical_slash_attention(qg, kg, at::Tensor(), ix, cfg); }, "argument `v`");
  expect_error([&] { cuda::vertical_slash_attention(qg, kg.to(at::kBFloat16), vg, ix, cfg); },
               "argument `k`");
  auto not_causal = cfg;
  not_causal.causal = false;
  expect_error([&] { cuda::vertical_slash_attention(qg, kg, vg, ix, not_causal); },
               "argument `config.causal`");
  expect_error(
      [&] {
        cuda::vertical_slash_attention(kg.expand({1, 2, 130, 64}), qg.narrow(1, 0, 1), qg.narrow(1, 0, 1), ix,
                                       cfg);
      },
      "argument `causal`");  // Nq > Nk
  // The index: shapes, dtypes, the problem it belongs to, its contents.
  auto edited = [&](const std::function<void(VerticalSlashIndex&)>& edit) {
    VerticalSlashIndex bad = ix;
    bad.block_count = ix.block_count.clone();
    bad.block_offset = ix.block_offset.clone();
    bad.column_count = ix.column_count.clone();
    bad.column_index = ix.column_index.clone();
    edit(bad);
    return bad;
  };
  expect_error([&] { cuda::vertical_slash_attention(qg.narrow(2, 0, 64), kg, vg, ix, cfg); },
               "argument `index`: expected Nq = 64");
  expect_error(
      [&] {
        cuda::vertical_slash_attention(
            qg, kg, vg, edited([](auto& b) { b.block_count = b.block_count.to(at::kLong); }), cfg);
      },
      "argument `index.block_count`: expected dtype int32");
  expect_error(
      [&] {
        cuda::vertical_slash_attention(qg, kg, vg,
                                       edited([](auto& b) { b.column_index = b.column_index[0]; }), cfg);
      },
      "argument `index.column_index`: expected shape");
  expect_error(
      [&] {
        cuda::vertical_slash_attention(qg, kg, vg, edited([](auto& b) {
                                         b.block_count.index_put_({0, 0, 0}, 1000);
                                       }),
                                       cfg);
      },
      "argument `index.block_count`: expected values in [0, ");
  expect_error(
      [&] {
        cuda::vertical_slash_attention(qg, kg, vg, edited([](auto& b) {
                                         b.column_count.index_put_({0, 1, 1}, -1);
                                       }),
                                       cfg);
      },
      "argument `index.column_count`");
  expect_error(
      [&] {
        cuda::vertical_slash_attention(qg, kg, vg, edited([](auto& b) {
                                         b.block_offset.index_put_({0, 0, 1, 0}, -3);
                                       }),
                                       cfg);
      },
      "argument `index.block_offset`: expected the listed tile starts in [0, Nk + 64 = 194)");
  // A column above block 0's first diagonal key (0 + 130 - 100 = 30): loop 2 has no causal mask.
  expect_error(
      [&] {
        cuda::vertical_slash_attention(qg, kg, vg, edited([](auto& b) {
                                         b.column_count.index_put_({0, 0, 0}, 1);
                                         b.column_index.index_put_({0, 0, 0, 0}, 31);
                                       }),
                                       cfg);
      },
      "argument `index.column_index`: expected the listed columns of block m in [0, 64 m + Nk - Nq]");
  // The statistics of a CUDA index (counted on the device) name the first violation as the host check does.
  expect_error(
      [&] {
        vertical_slash_index_stats(edited([](auto& b) { b.block_offset.index_put_({0, 1, 0, 0}, 194); }));
      },
      "argument `index.block_offset`: expected tile starts in [0, seq_k + 64 = 194), got 194 at (b, h, m) = "
      "(0, "
      "1, 0)");
  expect_error(
      [&] {
        vertical_slash_index_pairs(edited([](auto& b) {
          b.column_count.index_put_({0, 0, 0}, 1);
          b.column_index.index_put_({0, 0, 0, 0}, 31);
        }));
      },
      "argument `index.column_index`: expected columns in [0, 64 m + seq_k - seq_q]");
  // Preallocated outputs.
  cuda::VerticalSlashOptions opt;
  opt.out = at::empty({1, 2, 100, 64}, qg.options().dtype(at::kFloat));
  expect_error([&] { cuda::vertical_slash_attention(qg, kg, vg, ix, cfg, opt); }, "argument `options.out`");
  opt.out = at::Tensor();
  opt.lse = at::empty({1, 2, 99}, qg.options().dtype(at::kFloat));
  auto with_lse = cfg;
  with_lse.return_lse = true;
  expect_error([&] { cuda::vertical_slash_attention(qg, kg, vg, ix, with_lse, opt); },
               "argument `options.lse`");
  // cuda::vertical_slash_index: devices, dtypes, shapes.
  const auto vs_gpu = minference_vertical_slash(qg, kg, cfg);
  auto vs_edit = vs_gpu;
  vs_edit.slash_count = vs_gpu.slash_count.cpu();
  expect_error([&] { cuda::vertical_slash_index(vs_edit); },
               "argument `vs.slash_count`: expected a CUDA tensor");
  vs_edit = vs_gpu;
  vs_edit.vertical = vs_gpu.vertical.to(at::kFloat);
  expect_error([&] { cuda::vertical_slash_index(vs_edit); }, "argument `vs.vertical`: expected dtype int64");
  vs_edit = vs_gpu;
  vs_edit.slash = vs_gpu.slash[0];
  expect_error([&] { cuda::vertical_slash_index(vs_edit); }, "argument `vs.slash`: expected shape (B, H, C)");
  vs_edit = vs_gpu;
  vs_edit.vertical_count = vs_gpu.vertical_count.expand({2, 2});
  expect_error([&] { cuda::vertical_slash_index(vs_edit); }, "argument `vs.vertical_count`: expected (B, H)");
  // A valid call after all of that.
  const auto ok = cuda::vertical_slash_attention(qg, kg, vg, ix, with_lse);
  EXPECT_TRUE(at::isfinite(ok.out).all().item<bool>());
}

}  // namespace
}  // namespace sparge
