// GPU tests of sparge::cuda::block_sparse_attention (the mma.sync kernel) against the reference
// sparge::block_sparse_attention (float32, same mask, same stage-2 group) and a float64 masked dense oracle.
//
// Error rule (FlashAttention's): relL2(kernel, judge) <= 2 * relL2(same-dtype torch attention, judge) + 1e-3,
// where the judge is float64 masked attention when stage 2 is off, and the float32 reference when it is on
// (the oracle must skip what the kernel skips). Outputs are poisoned with NaN (0xFF bytes) before every
// launch: every element must be written. Stage-2 statistics: units (groups with an allowed key) are
// structural and must match exactly; skips depend on rounding of S near the threshold, so they match exactly
// only for "exact-score" inputs (Q, K on a 1/4 grid: every dot product is exact in float32 in any summation
// order), and within 0.5% otherwise.
//
// Quantized path (QuantMode::kInt8): the judge of the kernel is the reference emulation with the same
// QuantMode on the same (16-bit) inputs and mask, so that both quantize identically (the API quantizes as the
// reference does when options carries no INT8 operands; some cases pass them, computed by the test with
// sparge::quantize_int8_blocks, to exercise that path). Rules: relL2(kernel, f64 oracle) <= 2 * relL2(ref,
// f64 oracle) + 1e-3 (the reference's own quantization error, doubled: the INT8 values are identical, but S
// is summed in another order, so P may round to the other 16-bit neighbour); and relL2(kernel, ref) <= 2 *
// exact_tolerance(dtype) (both round P to the 16-bit type and O to the output type once: two roundings of
// that size, where the float32 path had one). QuantMode::kInt8Fp8 (FP8 P.V, sm_89+) runs the same cases with
// relL2(kernel, ref) <= 1e-2 (see run_case). Long sequences (N 16K-32K) are judged by the float32 reference
// or the emulation: the float64 oracle would not fit in memory.
//
// To add a case: append a Case to shape_cases(), stage2_cases() or quant_cases(); name() is printed with
// every failure.
// Without a CUDA device every GPU test skips with the reason; the input-check test runs everywhere.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "sparge/blocks.h"
#include "sparge/cuda_attention.h"
#include "test_util.h"

namespace sparge {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

enum class Stage2 { kOff, kWarp, kCta };

struct Case {
  int64_t seq_q, seq_k, heads_q, ratio, head_dim;
  bool causal;
  at::ScalarType dtype;
  Layout layout;
  double density;  // fraction of causal-valid blocks listed (1: all)
  Stage2 stage2 = Stage2::kOff;
  bool structured = false;  // structured inputs (sinks, locality: stage 2 finds negligible blocks)
  bool exact_scores = false;
  int64_t batch = 2;
  QuantMode quant = QuantMode::kNone;
  bool pass_int8 = false;     // quantized: pass the INT8 operands through KernelOptions
  bool growing_keys = false;  // keys scaled up along the sequence: row maxima that jump (see make_inputs)
  double heavy_rows = 0.0;    // fraction of mask rows listing every valid block (unbalanced rows)
  std::string name() const {
    static const char* s2[] = {"off", "warp", "cta"};
    return "Nq" + std::to_string(seq_q) + "_Nk" + std::to_string(seq_k) + "_H" + std::to_string(heads_q) +
           "_g" + std::to_string(ratio) + "_D" + std::to_string(head_dim) + (causal ? "_causal_" : "_full_") +
           test::dtype_name(dtype) + "_" + std::string(to_string(layout)) + "_dens" +
           std::to_string(density) + "_stage2" + s2[static_cast<int>(stage2)] +
           (structured ? "_structured" : "") + (exact_scores ? "_exact" : "") + "_quant_" +
           std::string(to_string(quant)) + (pass_int8 ? "_passed" : "") + (growing_keys ? "_growing" : "") +
           (heavy_rows > 0 ? "_heavy" + std::to_string(heavy_rows) : "");
  }
};

at::Tensor to_layout(const at::Tensor& hnd, Layout layout) {
  return layout == Layout::kNHD ? hnd.transpose(1, 2).contiguous() : hnd.contiguous();
}
at::Tensor to_hnd(const at::Tensor& x, Layout layout) {
  return layout == Layout::kNHD ? x.transpose(1, 2) : x;
}

// Random block mask of the kernel's geometry: each causal-valid block listed with probability `density`;
// heavy_rows: that fraction of the mask rows (at random) lists every valid block instead (unbalanced rows,
// which the Hopper kernel's default tile order runs first).
BlockMask random_mask(int64_t b, int64_t h, int64_t nq, int64_t nk, bool causal, double density,
                      uint64_t seed, double heavy_rows = 0.0) {
  const int64_t bq = cuda::kBlockQ, bk = cuda::kBlockK;
  const auto valid = causal_valid_blocks(nq, nk, bq, bk, causal, at::TensorOptions());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x5bd1e995ULL);
  auto dense = at::rand({b, h, valid.size(0), valid.size(1)}, gen) < density;
  if (heavy_rows > 0) dense = dense | (at::rand({b, h, valid.size(0), 1}, gen) < heavy_rows);
  dense = (dense & valid).contiguous();
  return BlockMask::from_dense(dense.to(at::kCUDA), bq, bk, nq, nk);
}

// (B, H, Nq, Nk) bool on the mask's device: block mask expanded to tokens AND the causal rule.
at::Tensor token_mask(const BlockMask& m, bool causal) {
  auto t = m.dense.repeat_interleave(m.block_q, 2).repeat_interleave(m.block_k, 3);
  t = t.narrow(2, 0, m.seq_q).narrow(3, 0, m.seq_k);
  if (causal) {
    const auto opt = m.dense.options().dtype(at::kLong);
    const auto i = at::arange(m.seq_q, opt).view({-1, 1}), j = at::arange(m.seq_k, opt).view({1, -1});
    t = t & (j <= i + (m.seq_k - m.seq_q));
  }
  return t;
}

// Masked attention computed in the inputs' dtype (torch's same-precision baseline); HND in and out.
at::Tensor masked_attention_same_dtype(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& allowed, double scale) {
  const int64_t g = q.size(1) / k.size(1);
  const auto kk = k.repeat_interleave(g, 1), vv = v.repeat_interleave(g, 1);
  auto s = at::matmul(q, kk.transpose(-1, -2)) * scale;
  s = s.masked_fill(allowed.logical_not(), -kInf);
  return at::matmul(at::nan_to_num(at::softmax(s, -1), 0.0), vv);
}

QKV make_inputs(const Case& c, uint64_t seed) {
  QKV in;
  const int64_t hkv = c.heads_q / c.ratio;
  if (c.structured) {
    StructuredSpec spec;
    spec.batch = c.batch;
    spec.heads_q = c.heads_q;
    spec.heads_kv = hkv;
    spec.seq_q = c.seq_q;
    spec.seq_k = c.seq_k;
    spec.head_dim = c.head_dim;
    in = structured_qkv(spec, seed, at::TensorOptions(at::kFloat));
  } else {
    in = random_qkv(c.batch, c.heads_q, hkv, c.seq_q, c.seq_k, c.head_dim, seed,
                    at::TensorOptions(at::kFloat));
  }
  if (c.growing_keys) {
    // Keys of each quarter of the sequence 1, 4, 12, 40 times larger: a row's maximum (in log2 units, ~4
    // standard deviations of the scores) jumps by ~10, ~45 and ~150 at the quarter boundaries, i.e. past the
    // lazy stabilizer's slack (8), and far enough that P against a stale stabilizer would overflow.
    const auto pos = at::arange(c.seq_k, at::TensorOptions(at::kFloat));
    const auto quarter = at::clamp(at::floor(pos * 4 / c.seq_k), 0, 3).to(at::kLong);
    const auto factor = at::tensor({1.f, 4.f, 12.f, 40.f}).index_select(0, quarter);
    in.k = in.k * factor.view({1, 1, -1, 1});
  }
  if (c.exact_scores) {  // multiples of 1/4 in [-16, 16]: exact in fp16/bf16, dot products exact in float32
    in.q = at::clamp(at::round(in.q * 4) / 4, -16, 16);
    in.k = at::clamp(at::round(in.k * 4) / 4, -16, 16);
  }
  in.q = in.q.to(c.dtype).to(at::kCUDA);
  in.k = in.k.to(c.dtype).to(at::kCUDA);
  in.v = in.v.to(c.dtype).to(at::kCUDA);
  return in;
}

// pvthreshd per head: varied values (small enough that structured inputs skip), one head disabled (+inf).
std::vector<double> stage2_thresholds(int64_t heads) {
  std::vector<double> t(heads);
  for (int64_t h = 0; h < heads; ++h) t[h] = h == heads - 1 ? kInf : 1.0 + 2.0 * static_cast<double>(h % 4);
  return t;
}

// The kernels that can run a case on this device: the portable one always, the Hopper one on sm_90 (every
// precision). SPARGE_TEST_KERNEL_PATH=portable|sm90 keeps one of them (e.g. for compute-sanitizer runs).
std::vector<cuda::KernelPath> kernel_paths() {
  std::vector<cuda::KernelPath> paths = {cuda::KernelPath::kPortable};
  if (cuda::sm90_supported(at::Device(at::kCUDA, 0))) paths.push_back(cuda::KernelPath::kSm90);
  const char* only = std::getenv("SPARGE_TEST_KERNEL_PATH");
  if (only != nullptr && *only != '\0') {
    const cuda::KernelPath keep = cuda::parse_kernel_path(only);
    std::erase_if(paths, [&](cuda::KernelPath path) { return path != keep; });
    if (paths.empty()) ADD_FAILURE() << "SPARGE_TEST_KERNEL_PATH=" << only << ": that path cannot run here";
  }
  return paths;
}

// SPARGE_TEST_JUDGES_ON_CPU=1: the reference, the float64 oracle and torch's same-dtype baseline run on CPU
// copies of the inputs, so only the kernels under test (and small torch kernels) run on the GPU. For
// compute-sanitizer: cuBLAS's TMA GEMMs of the GPU baselines (nvjet) report hazards under racecheck and, with
// racecheck limited to our kernel, end it in an internal sanitizer error
// (results/kernels/h100/racecheck_probe).
bool judges_on_cpu() {
  const char* v = std::getenv("SPARGE_TEST_JUDGES_ON_CPU");
  return v != nullptr && std::string(v) == "1";
}

// Q's (smooth = false) or K's (smooth = true: minus its mean over the sequence) INT8 blocks as the reference
// emulation makes them, on x's device. Inputs HND.
Int8Blocks reference_int8_blocks(const at::Tensor& x, int64_t block, bool smooth) {
  auto xf = x.to(at::kFloat);
  if (smooth) xf = xf - xf.mean(2, /*keepdim=*/true);
  return quantize_int8_blocks(xf, block);
}

// Judges on the CPU, quantized cases: the reference quantizes Q and K on the CPU, the kernel (or the test's
// INT8 operands) on the GPU, and the two devices' torch ops differ in the last bit (the scale amax / 127 is a
// multiplication by 1 / 127 on CUDA, the K smoothing mean is summed in another order), which flips the
// rounding of a few INT8 values by one step: a score moves by up to scale * |Q[i, d]| * k_scale(j) per flip
// (~0.6 for the growing keys). The LSE is 1-Lipschitz in the scores, so the LSE comparison gets the largest
// difference between the two devices' dequantized scores as slack. Inputs HND; q_scale / k_scale on the block
// grid.
double quantization_lse_slack(const QKV& gpu, const QKV& cpu, double scale) {
  const auto dequantized = [](const at::Tensor& x, int64_t block, bool smooth) {
    const auto b = reference_int8_blocks(x, block, smooth);
    const auto s = b.scale.to(at::kDouble).repeat_interleave(block, 2).narrow(2, 0, x.size(2));
    return (b.values.to(at::kDouble) * s.unsqueeze(-1)).cpu();
  };
  const auto scores = [&](const QKV& in) {
    const auto q = dequantized(in.q, cuda::kBlockQ, false);
    const auto k = dequantized(in.k, cuda::kBlockK, true).repeat_interleave(in.q.size(1) / in.k.size(1), 1);
    return at::matmul(q, k.transpose(-1, -2));
  };
  return scale * (scores(gpu) - scores(cpu)).abs().max().item<double>();
}

// Runs one case on every kernel path (kernel_paths): kernel vs reference vs oracle. Prints one line per path;
// returns the kernels' stage-2 skip counts, summed.
int64_t run_case(const Case& c) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(c.name() + " seed " + std::to_string(seed));
  const QKV in = make_inputs(c, seed);  // HND, dtype, CUDA
  const auto mask =
      random_mask(c.batch, c.heads_q, c.seq_q, c.seq_k, c.causal, c.density, seed, c.heavy_rows);
  // The inputs and mask of the judges (the reference, the oracle, torch's baseline): CUDA, or CPU copies.
  const bool cpu_judges = judges_on_cpu();
  const QKV jin = cpu_judges ? QKV{in.q.cpu(), in.k.cpu(), in.v.cpu()} : in;
  const BlockMask jmask =
      cpu_judges ? BlockMask::from_dense(mask.dense.cpu(), mask.block_q, mask.block_k, mask.seq_q, mask.seq_k)
                 : mask;

  SpargeConfig cfg;
  cfg.block_q = cuda::kBlockQ;
  cfg.block_k = cuda::kBlockK;
  cfg.causal = c.causal;
  cfg.return_lse = true;
  if (c.stage2 != Stage2::kOff) {
    cfg.pvthreshd = stage2_thresholds(c.heads_q);
    cfg.stage2_group_rows = c.stage2 == Stage2::kWarp ? cuda::kStage2WarpRows : 0;
  }
  cfg.quant = c.quant;
  const bool quant = c.quant != QuantMode::kNone;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  const double lse_slack = cpu_judges && quant ? quantization_lse_slack(in, jin, scale) : 0.0;
  // The float32 reference (HND); quantized: the emulation on the 16-bit inputs (P takes their type).
  const auto ref = quant ? block_sparse_attention(jin.q, jin.k, jin.v, jmask, cfg)
                         : block_sparse_attention(jin.q.to(at::kFloat), jin.k.to(at::kFloat),
                                                  jin.v.to(at::kFloat), jmask, cfg);

  // The kernel, on inputs in the case's layout, outputs poisoned with NaN.
  SpargeConfig kcfg = cfg;
  kcfg.layout = c.layout;
  const auto q = to_layout(in.q, c.layout), k = to_layout(in.k, c.layout), v = to_layout(in.v, c.layout);
  // Passed INT8 operands (HND, as cuda::predict_block_mask(..., quantize = true) gives them), for every path.
  Int8Blocks qi, ki;
  if (quant && c.pass_int8) {
    qi = reference_int8_blocks(in.q, cuda::kBlockQ, false);
    ki = reference_int8_blocks(in.k, cuda::kBlockK, true);
  }
  int64_t skipped = 0;
  for (const cuda::KernelPath path : kernel_paths()) {
    SCOPED_TRACE(std::string("kernel path ") + std::string(cuda::to_string(path)));
    cuda::KernelOptions opt;
    opt.path = path;
    opt.collect_stats = true;
    opt.out = at::empty(q.sizes(), q.options());
    opt.lse = at::empty({c.batch, c.heads_q, c.seq_q}, q.options().dtype(at::kFloat));
    EXPECT_EQ(cudaMemset(opt.out.data_ptr(), 0xFF, opt.out.nbytes()), cudaSuccess);
    EXPECT_EQ(cudaMemset(opt.lse.data_ptr(), 0xFF, opt.lse.nbytes()), cudaSuccess);
    if (quant && c.pass_int8) {
      opt.q_int8 = qi.values.to(at::kChar).contiguous();
      opt.q_scale = qi.scale.contiguous();
      opt.k_int8 = ki.values.to(at::kChar).contiguous();
      opt.k_scale = ki.scale.contiguous();
    }
    const auto r = cuda::block_sparse_attention(q, k, v, mask, kcfg, opt);
    EXPECT_EQ(r.out.sizes(), q.sizes());
    EXPECT_EQ(r.out.scalar_type(), c.dtype);
    EXPECT_FALSE(at::isnan(r.out).any().item<bool>()) << "unwritten (NaN-poisoned) output elements";
    EXPECT_FALSE(at::isnan(r.lse).any().item<bool>()) << "unwritten (NaN-poisoned) lse elements";
    const auto out = to_hnd(r.out, c.layout).to(jin.q.device());

    // Judge and same-dtype baseline.
    // Long sequences: the float64 oracle would need B * Hq * Nq * Nk doubles (16 GiB at N = 32768, H = 2), so
    // the float32 reference judges them (to the dtype's output rounding).
    const bool huge = c.batch * c.heads_q * c.seq_q * c.seq_k > (int64_t{1} << 27);
    const auto allowed = huge ? at::Tensor() : token_mask(jmask, c.causal);
    const auto judge = c.stage2 == Stage2::kOff && !huge
                           ? test::masked_attention_f64(jin.q, jin.k, jin.v, allowed, scale)
                           : ref.out.to(at::kDouble);
    double err_kernel = 0, err_torch = 0, err_ref = 0;
    if (judge.abs().max().item<double>() ==
        0) {  // nothing computed (empty mask): every row must be exactly 0
      EXPECT_EQ(out.abs().max().item<double>(), 0.0) << "rows with no computed key must be 0";
    } else if (quant) {
      err_kernel = relative_l2(out, judge);
      err_ref = relative_l2(ref.out, judge);
      if (err_ref > 0) {  // the judge is the float64 oracle (not the emulation itself)
        EXPECT_LE(err_kernel, 2 * err_ref + 1e-3) << "reference's own quantization error " << err_ref;
      }
      err_torch = relative_l2(out, ref.out);  // printed in the torch column: kernel vs emulation
      // FP8: a P or V value whose emulated and kernel products straddle an e4m3 rounding boundary moves by a
      // whole e4m3 step (6%), and the FP8 MMA's internal sums are narrower than float32: measured on an H100
      // 3e-4 - 3e-3 (the quantization error itself is ~3.6e-2), so the bound is a quarter of that error.
      // The Hopper kernel rounds P relative to the maximum over a 128-key step (two mask blocks; the
      // emulation and the portable kernel: over each block), so its roundings differ from the emulation's
      // wherever the second block raised a row's maximum: measured on an H200, 16-bit P 1e-5 - 1.4e-3 (fp16 /
      // bf16, within the bound above), FP8 P 2e-3 - 1.5e-2 (the kernel's error against the float64 oracle
      // stays within 1% of the emulation's own, checked above).
      const double fp8_bound = path == cuda::KernelPath::kSm90 ? 2.5e-2 : 1e-2;
      const double bound = c.quant == QuantMode::kInt8Fp8 ? fp8_bound : 2 * test::exact_tolerance(c.dtype);
      EXPECT_LE(err_torch, bound) << "kernel vs the reference emulation";
    } else if (huge) {
      err_kernel = relative_l2(out, judge);
      EXPECT_LE(err_kernel, test::exact_tolerance(c.dtype)) << "kernel vs the float32 reference";
    } else {
      err_kernel = relative_l2(out, judge);
      err_torch = relative_l2(masked_attention_same_dtype(jin.q, jin.k, jin.v, allowed, scale), judge);
      err_ref = relative_l2(ref.out, judge);
      EXPECT_LE(err_kernel, 2 * err_torch + 1e-3) << "torch same-dtype error " << err_torch;
      // With stage 2 on, the dense baseline also carries the skipping error (a loose bound): the kernel must
      // in addition match the reference to the dtype's output rounding (measured on H100: bf16 2.2e-3, fp16
      // 3e-4).
      if (c.stage2 != Stage2::kOff) {
        EXPECT_LE(err_kernel, test::exact_tolerance(c.dtype));
      }
    }

    // LSE: -inf exactly where the reference has -inf, else close.
    const auto lse_ref = ref.lse.to(at::kDouble), lse = r.lse.to(at::kDouble).to(jin.q.device());
    const auto ref_empty = at::isinf(lse_ref), empty = at::isinf(lse);
    EXPECT_TRUE(at::equal(ref_empty, empty)) << "rows with no computed key differ";
    const auto lse_diff = at::where(ref_empty, at::zeros_like(lse), (lse - lse_ref).abs()).flatten();
    const int64_t worst = lse_diff.argmax().item<int64_t>();
    const double lse_err = lse_diff[worst].item<double>();
    EXPECT_LT(lse_err, 2e-3 + lse_slack)
        << "worst row " << worst / c.seq_q << " / " << worst % c.seq_q << " (batch * head / query): kernel "
        << lse.flatten()[worst].item<double>() << ", reference " << lse_ref.flatten()[worst].item<double>()
        << "; slack for the judges' quantization on the CPU " << lse_slack;

    // Statistics.
    const auto& s = r.stats;
    EXPECT_EQ(s.block_q, ref.stats.block_q);
    EXPECT_EQ(s.block_k, ref.stats.block_k);
    EXPECT_EQ(s.stage2_group_rows, ref.stats.stage2_group_rows);
    EXPECT_EQ(s.valid_blocks, ref.stats.valid_blocks);
    EXPECT_EQ(s.computed_blocks, ref.stats.computed_blocks);
    EXPECT_EQ(s.valid_pairs, ref.stats.valid_pairs);
    EXPECT_EQ(s.computed_pairs, ref.stats.computed_pairs);
    EXPECT_EQ(s.stage2_groups, ref.stats.stage2_groups);
    if (c.exact_scores || c.stage2 == Stage2::kOff) {
      EXPECT_EQ(s.stage2_skipped, ref.stats.stage2_skipped);
    } else {
      EXPECT_LE(std::abs(s.stage2_skipped - ref.stats.stage2_skipped),
                std::max<int64_t>(2, ref.stats.stage2_groups / 200));
    }
    std::printf(
        "%-90s err %.2e (torch/vs-emulation %.2e, ref %.2e) lse %.1e units %lld skipped %lld (ref %lld)\n",
        (c.name() + "_" + std::string(cuda::to_string(path))).c_str(), err_kernel, err_torch, err_ref,
        lse_err, static_cast<long long>(s.stage2_groups), static_cast<long long>(s.stage2_skipped),
        static_cast<long long>(ref.stats.stage2_skipped));
    skipped += s.stage2_skipped;
  }
  return skipped;
}

// Shapes x causal x GQA x D x dtype x layout x density, stage 2 off.
std::vector<Case> shape_cases() {
  const int64_t ns[] = {1, 63, 113, 128, 239, 1023, 4096};
  const int64_t ratios[] = {1, 2, 4, 8};
  const double densities[] = {1.0, 0.5, 0.25, 0.1, 1.0, 0.7};
  std::vector<Case> out;
  int i = 0;
  for (int64_t n : ns)
    for (bool causal : {false, true}) {
      std::vector<std::pair<int64_t, int64_t>> lens = {{n, n}, {std::max<int64_t>(1, n / 3), n}};
      if (!causal) lens.push_back({n, std::max<int64_t>(1, n / 2 + 1)});
      for (auto [nq, nk] : lens) {
        Case c{nq,
               nk,
               8,
               ratios[i % 4],
               i % 2 ? 128 : 64,
               causal,
               (i / 2) % 2 ? at::kHalf : at::kBFloat16,
               (i / 4) % 2 ? Layout::kNHD : Layout::kHND,
               densities[i % 6]};
        if (n >= 4096) {
          c.batch = 1;
          c.heads_q = 4;
          c.ratio = std::min<int64_t>(c.ratio, 4);
        }
        out.push_back(c);
        ++i;
      }
    }
  return out;
}

// Stage 2 per warp and per CTA tile, structured inputs, exact-score and rounded variants.
std::vector<Case> stage2_cases(Stage2 mode) {
  std::vector<Case> out;
  int i = 0;
  for (int64_t n : {239, 1023, 2048})
    for (bool causal : {false, true})
      for (bool exact : {true, false}) {
        Case c{n,
               n,
               8,
               i % 2 ? 2 : 1,
               i % 2 ? 64 : 128,
               causal,
               i % 3 ? at::kBFloat16 : at::kHalf,
               (i / 2) % 2 ? Layout::kNHD : Layout::kHND,
               i % 3 == 2 ? 0.5 : 1.0,
               mode,
               true,
               exact};
        if (n == 1023 && !causal) c.seq_q = 700;
        out.push_back(c);
        ++i;
      }
  return out;
}

// QuantMode::kInt8 over causal / full, GQA, tails (Nq, Nk not multiples of the blocks, Nq != Nk), D 64 /
// 128, fp16 / bf16, both layouts, densities, stage 2 per warp and per CTA on structured inputs (whose keys
// have a non-zero mean: K smoothing matters), INT8 operands computed by the API or passed in.
std::vector<Case> quant_cases() {
  std::vector<Case> out;
  const std::pair<int64_t, int64_t> lens[] = {{1, 1},       {113, 113},  {239, 500},   {300, 129},
                                              {1023, 1023}, {700, 2048}, {2048, 2048}, {4096, 4096}};
  const double densities[] = {1.0, 0.5, 0.25, 0.1, 1.0, 0.7};
  int i = 0;
  for (auto [nq, nk] : lens)
    for (bool causal : {false, true}) {
      Case c{nq,
             nk,
             8,
             int64_t{1} << (i % 3),
             i % 2 ? 128 : 64,
             causal,
             (i / 2) % 2 ? at::kHalf : at::kBFloat16,
             (i / 4) % 2 ? Layout::kNHD : Layout::kHND,
             densities[i % 6]};
      if (causal) c.seq_q = std::min(nq, nk);  // bottom-right causal needs Nq <= Nk
      c.quant = QuantMode::kInt8;
      c.pass_int8 = i % 3 == 1;
      if (nq >= 4096) {
        c.batch = 1;
        c.heads_q = 4;
      }
      out.push_back(c);
      ++i;
    }
  for (Stage2 mode : {Stage2::kWarp, Stage2::kCta})
    for (int64_t d : {64, 128}) {
      Case c{1023,         1023, 8,    2,   d, d == 128, d == 64 ? at::kHalf : at::kBFloat16,
             Layout::kHND, 1.0,  mode, true};
      c.quant = QuantMode::kInt8;
      c.pass_int8 = mode == Stage2::kCta;
      out.push_back(c);
    }
  return out;
}

TEST(CudaAttention, Int8MatchesReferenceEmulation) {
  SPARGE_REQUIRE_GPU();
  for (const auto& c : quant_cases()) run_case(c);
}

// The same cases with FP8 P.V (QuantMode::kInt8Fp8): P in e4m3 scaled by 448, V^T in e4m3 per channel.
TEST(CudaAttention, Int8Fp8MatchesReferenceEmulation) {
  SPARGE_REQUIRE_GPU();
  if (!cuda::fp8_pv_supported(at::Device(at::kCUDA, 0))) {
    GTEST_SKIP() << "the GPU has no FP8 MMA (compute capability < 8.9): int8_fp8 runs 16-bit P.V there";
  }
  for (auto c : quant_cases()) {
    c.quant = QuantMode::kInt8Fp8;
    run_case(c);
  }
}

// Long sequences (the N up to 32768) in every precision: 16-bit, INT8, INT8 + FP8; causal and not,
// GQA, D 64 / 128, a sparse mask; judged by the float32 reference or the quantization emulation.
TEST(CudaAttention, LongSequences) {
  SPARGE_REQUIRE_GPU();
  int i = 0;
  for (int64_t n : {16384, 32768})
    for (QuantMode quant : {QuantMode::kNone, QuantMode::kInt8, QuantMode::kInt8Fp8}) {
      if (quant == QuantMode::kInt8Fp8 && !cuda::fp8_pv_supported(at::Device(at::kCUDA, 0))) continue;
      Case c{n,
             n - (i % 2) * 77,
             2,
             2,
             i % 2 ? 64 : 128,
             i % 3 == 1,
             i % 2 ? at::kHalf : at::kBFloat16,
             i % 4 < 2 ? Layout::kHND : Layout::kNHD,
             0.25};
      c.batch = 1;
      if (c.causal) c.seq_q = std::min(c.seq_q, c.seq_k);
      c.quant = quant;
      run_case(c);
      ++i;
    }
}

// Row maxima that jump by small, moderate and huge amounts between key blocks (growing_keys), every
// precision, both head dims and dtypes, causal and not, a tail: every move of the softmax stabilizer (past
// the lazy slack or not) must leave the result exact.
TEST(CudaAttention, JumpingMaximaMatchReference) {
  SPARGE_REQUIRE_GPU();
  int i = 0;
  for (QuantMode quant : {QuantMode::kNone, QuantMode::kInt8, QuantMode::kInt8Fp8})
    for (int64_t d : {64, 128}) {
      if (quant == QuantMode::kInt8Fp8 && !cuda::fp8_pv_supported(at::Device(at::kCUDA, 0))) continue;
      Case c{
          1000 - 37 * (i % 2), 2048 - 77 * (i % 2),   4, 2, d, i % 2 == 1, i % 2 ? at::kHalf : at::kBFloat16,
          Layout::kHND,        i % 3 == 2 ? 0.5 : 1.0};
      c.batch = 1;
      c.quant = quant;
      c.growing_keys = true;
      run_case(c);
      ++i;
    }
}

TEST(CudaAttention, MatchesReferenceOverShapes) {
  SPARGE_REQUIRE_GPU();
  for (const auto& c : shape_cases()) run_case(c);
}

TEST(CudaAttention, Stage2PerWarpMatchesReference) {
  SPARGE_REQUIRE_GPU();
  int64_t skipped = 0;
  for (const auto& c : stage2_cases(Stage2::kWarp)) skipped += run_case(c);
  EXPECT_GT(skipped, 0) << "stage 2 never skipped: the cases do not exercise it";
}

TEST(CudaAttention, Stage2PerCtaMatchesReference) {
  SPARGE_REQUIRE_GPU();
  int64_t skipped = 0;
  for (const auto& c : stage2_cases(Stage2::kCta)) skipped += run_case(c);
  EXPECT_GT(skipped, 0) << "stage 2 never skipped: the cases do not exercise it";
}

TEST(CudaAttention, EmptyRowsWriteZerosAndMinusInfinity) {
  SPARGE_REQUIRE_GPU();
  for (double density : {0.0, 0.3})
    for (int64_t d : {64, 128}) {
      Case c{300, 500, 4, 2, d, false, at::kBFloat16, Layout::kHND, density};
      run_case(c);
      c.quant = QuantMode::kInt8;  // also under compute-sanitizer (scripts/gpu_check.sh): the INT8 epilogue
      run_case(c);                 // stages O over other warps' Q rows after a CTA barrier
      if (cuda::fp8_pv_supported(at::Device(at::kCUDA, 0))) {
        c.quant = QuantMode::kInt8Fp8;  // and the FP8 V quantization kernels
        run_case(c);
      }
    }
}

// Rows long enough to wrap the Hopper kernel's K and V rings (2048 keys: 32 key blocks through 6-8 stages, so
// the producer waits for released stages), small enough for compute-sanitizer (scripts/gpu_kernel_run.sh):
// both head dims, 16-bit, INT8 and INT8 + FP8, causal with a query tail.
TEST(CudaAttention, RingWrappingRows) {
  SPARGE_REQUIRE_GPU();
  for (int64_t d : {64, 128}) {
    Case c{200, 2048, 2, 2, d, d == 64, at::kBFloat16, Layout::kHND, 1.0};
    c.batch = 1;
    run_case(c);
    c.quant = QuantMode::kInt8;  // (INT8 Q.K with 16-bit P: the sum check's INT8 fallback)
    run_case(c);
    if (cuda::fp8_pv_supported(at::Device(at::kCUDA, 0))) {
      c.quant = QuantMode::kInt8Fp8;
      run_case(c);
    }
  }
}

// Unbalanced rows (a tenth of the mask rows list every block, the rest 5%): the Hopper kernel's default
// heavy-rows-first tile order reorders the CTAs; every path must still match the reference and the oracle.
TEST(CudaAttention, UnbalancedRowsMatchReference) {
  SPARGE_REQUIRE_GPU();
  for (const bool causal : {false, true}) {
    Case c{2048, 2048, 4, 2, 128, causal, at::kBFloat16, Layout::kHND, 0.05};
    c.heavy_rows = 0.1;
    run_case(c);
    c.head_dim = 64;
    c.dtype = at::kHalf;
    c.quant = cuda::fp8_pv_supported(at::Device(at::kCUDA, 0)) ? QuantMode::kInt8Fp8 : QuantMode::kInt8;
    run_case(c);
  }
}

// The tile order only changes which CTA computes a tile, never how: the Hopper kernel's outputs and LSE are
// bit-identical in the natural and the heavy-rows-first order, on a mask whose order differs from the natural
// one (8 heads x 64 query blocks, 5% of the rows heavy).
TEST(CudaAttention, TileOrderDoesNotChangeResults) {
  SPARGE_REQUIRE_GPU();
  if (!cuda::sm90_supported(at::Device(at::kCUDA, 0))) {
    GTEST_SKIP() << "the tile order is the Hopper kernel's: no sm_90 device";
  }
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t n = 8192;
  const auto in = random_qkv(1, 8, 2, n, n, 128, seed, at::TensorOptions(at::kBFloat16).device(at::kCUDA));
  const auto mask = random_mask(1, 8, n, n, false, 0.1, seed, 0.05);
  const auto order = cuda::heavy_rows_first_order(mask.counts);
  EXPECT_FALSE(at::equal(order, at::arange(order.numel(), order.options())))
      << "the mask should have heavy rows out of natural order";
  for (const QuantMode quant : {QuantMode::kNone, QuantMode::kInt8Fp8}) {
    SCOPED_TRACE(std::string("quant ") + std::string(to_string(quant)));
    SpargeConfig cfg;
    cfg.return_lse = true;
    cfg.quant = quant;
    cuda::KernelOptions opt;
    opt.path = cuda::KernelPath::kSm90;
    opt.tile_order = cuda::TileOrder::kNatural;
    const auto natural = cuda::block_sparse_attention(in.q, in.k, in.v, mask, cfg, opt);
    opt.tile_order = cuda::TileOrder::kHeavyRowsFirst;
    const auto heavy = cuda::block_sparse_attention(in.q, in.k, in.v, mask, cfg, opt);
    EXPECT_TRUE(at::equal(natural.out, heavy.out));
    EXPECT_TRUE(at::equal(natural.lse, heavy.lse));
  }
}

// KernelOptions::v_fp8 from quantize_v_fp8 (what the torch ops compute on a side stream while the INT8 pass
// runs) gives the API's own V quantization's results bit for bit: both kernel paths, HND and NHD, a key tail
// (Nk % 64 != 0), GQA, fp16 and bf16; scales doubled double the output (the operand is used); and FP8
// operands of the wrong shape, type or alignment raise errors naming them.
TEST(CudaAttention, PrecomputedFp8VMatchesInternal) {
  SPARGE_REQUIRE_GPU();
  const at::Device device(at::kCUDA, 0);
  if (!cuda::fp8_pv_supported(device)) GTEST_SKIP() << "no FP8 MMA (compute capability < 8.9)";
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<cuda::KernelPath> paths = {cuda::KernelPath::kPortable};
  if (cuda::sm90_supported(device)) paths.push_back(cuda::KernelPath::kSm90);
  int variant = 0;
  for (const Layout layout : {Layout::kHND, Layout::kNHD}) {
    for (const auto dtype : {at::kBFloat16, at::kHalf}) {
      const int64_t d = variant++ % 2 == 0 ? 128 : 64;
      SCOPED_TRACE(std::string(to_string(layout)) + " " + test::dtype_name(dtype) + " D " +
                   std::to_string(d));
      const auto in =
          random_qkv(1, 4, 2, 333, 700, d, seed + variant, at::TensorOptions(dtype).device(device));
      const auto q = to_layout(in.q, layout), k = to_layout(in.k, layout), v = to_layout(in.v, layout);
      const auto mask = random_mask(1, 4, 333, 700, false, 0.5, seed + variant);
      SpargeConfig cfg;
      cfg.layout = layout;
      cfg.return_lse = true;
      cfg.quant = QuantMode::kInt8Fp8;
      const auto fv = cuda::quantize_v_fp8(v, layout);
      ASSERT_EQ(fv.values.sizes(), at::IntArrayRef({1, 2, d, 704}));
      ASSERT_EQ(fv.scale.sizes(), at::IntArrayRef({1, 2, d}));
      for (const auto path : paths) {
        SCOPED_TRACE(std::string(cuda::to_string(path)));
        cuda::KernelOptions opt;
        opt.path = path;
        const auto own = cuda::block_sparse_attention(q, k, v, mask, cfg, opt);
        opt.v_fp8 = fv.values;
        opt.v_scale = fv.scale;
        const auto given = cuda::block_sparse_attention(q, k, v, mask, cfg, opt);
        EXPECT_TRUE(at::equal(own.out, given.out));
        EXPECT_TRUE(at::equal(own.lse, given.lse));
        // The handed-over operand is the one used: twice the scales give twice the output (O = acc / l *
        // v_scale; a power of two: exact, but for fp16 outputs below 2^-14, whose rounding to the subnormal
        // grid differs by up to 2^-24: measured on an H100), the same LSE.
        opt.v_scale = fv.scale * 2;
        const auto doubled = cuda::block_sparse_attention(q, k, v, mask, cfg, opt);
        EXPECT_TRUE(at::allclose(doubled.out.to(at::kFloat), own.out.to(at::kFloat) * 2, /*rtol=*/0.0,
                                 /*atol=*/std::ldexp(1.0, -23)));
        EXPECT_TRUE(at::equal(doubled.lse, own.lse));
      }
      const auto expect_error = [&](const at::Tensor& values, const at::Tensor& scale,
                                    const std::string& arg) {
        cuda::KernelOptions opt;
        opt.v_fp8 = values;
        opt.v_scale = scale;
        try {
          cuda::block_sparse_attention(q, k, v, mask, cfg, opt);
          ADD_FAILURE() << "expected an error naming " << arg;
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find(arg), std::string::npos) << e.what();
        }
      };
      expect_error(fv.values.narrow(3, 0, 640).contiguous(), fv.scale, "argument `options.v_fp8`");
      expect_error(fv.values.to(at::kChar), fv.scale, "argument `options.v_fp8`");
      expect_error(fv.values, fv.scale.to(at::kHalf), "argument `options.v_scale`");
      expect_error(fv.values, at::Tensor(), "argument `options.v_fp8` / `options.v_scale`");
      // A float view at an odd offset: 4-byte aligned only (the kernels read the scales as float2).
      const auto padded = at::empty({fv.scale.numel() + 1}, fv.scale.options());
      const auto odd = padded.narrow(0, 1, fv.scale.numel()).view(fv.scale.sizes());
      odd.copy_(fv.scale);
      expect_error(fv.values, odd, "argument `options.v_scale`");
    }
  }
  try {
    cuda::quantize_v_fp8(at::zeros({1, 2, 64, 64}, at::kHalf), Layout::kHND);
    ADD_FAILURE() << "expected an error naming `v` (a CPU tensor)";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("argument `v`"), std::string::npos) << e.what();
  }
}

// heavy_rows_first_order against the stable partition computed here, over 1024-position rounds and their
// tails, with no heavy row (all equal, all zero), one, and many, with the counts in shared memory and (over
// 8192 rows) read from global memory.
TEST(CudaAttention, HeavyRowsFirstOrder) {
  SPARGE_REQUIRE_GPU();
  const auto expected = [](const at::Tensor& counts) {  // counts (B, H, NQB) int32 on the CPU
    const int64_t nqb = counts.size(2), tiles = counts.numel();
    const auto c = counts.contiguous();
    const int32_t* v = c.data_ptr<int32_t>();
    const auto count_at = [&](int64_t pos) { return v[pos / nqb * nqb + (nqb - 1 - pos % nqb)]; };
    int64_t total = 0;
    for (int64_t pos = 0; pos < tiles; ++pos) total += count_at(pos);
    std::vector<int32_t> heavy, light;
    for (int64_t pos = 0; pos < tiles; ++pos) {
      const int64_t x = count_at(pos);
      (x > 0 && x * tiles >= 4 * total ? heavy : light).push_back(static_cast<int32_t>(pos));
    }
    heavy.insert(heavy.end(), light.begin(), light.end());
    return at::tensor(heavy, at::kInt);
  };
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<std::pair<std::string, at::Tensor>> cases = {
      {"random, some heavy", at::randint(0, 10, {2, 3, 700}, gen, at::kInt)},
      {"all equal", at::full({1, 5, 300}, 7, at::kInt)},
      {"all zero", at::zeros({2, 2, 513}, at::kInt)},
      {"one heavy", at::ones({1, 1, 2049}, at::kInt)},
      {"single row", at::full({1, 1, 1}, 3, at::kInt)},
  };
  cases[3].second[0][0][1000] = 500;
  // Heavy rows in every round, the partial last one (4200 = 4 x 1024 + 104) included.
  cases[0].second.masked_fill_(at::rand({2, 3, 700}, gen) < 0.05, 100);
  cases[0].second[1][2][50] = 100;  // natural position 5 * 700 + 649 = 4149: the last round
  // Mostly light rows with a few very long ones (a predicted mask's shape).
  auto skewed = at::randint(0, 4, {1, 16, 256}, gen, at::kInt);
  skewed.masked_fill_(at::rand({1, 16, 256}, gen) < 0.03, 200);
  cases.emplace_back("skewed", skewed);
  // More rows than the kernel keeps in shared memory (8192): its passes read global memory.
  auto many = at::randint(0, 6, {2, 20, 260}, gen, at::kInt);
  many.masked_fill_(at::rand({2, 20, 260}, gen) < 0.02, 90);
  cases.emplace_back("10400 rows", many);
  for (const auto& [name, counts] : cases) {
    SCOPED_TRACE(name);
    const auto got = cuda::heavy_rows_first_order(counts.to(at::kCUDA)).cpu();
    EXPECT_TRUE(at::equal(got, expected(counts)));
  }
  try {
    cuda::heavy_rows_first_order(at::zeros({2, 3}, at::kInt));
    ADD_FAILURE() << "expected an error naming `counts`";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("argument `counts`"), std::string::npos) << e.what();
  }
}

// Strided views: a head-dim slice of a wider tensor (row stride != D) runs without copies; a misaligned base
// pointer goes through the copy path. Both must give the contiguous result.
TEST(CudaAttention, StridedAndMisalignedInputs) {
  SPARGE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto in = random_qkv(1, 4, 2, 200, 300, 64, seed, at::TensorOptions(at::kHalf).device(at::kCUDA));
  const auto mask = random_mask(1, 4, 200, 300, false, 0.6, seed);
  SpargeConfig cfg;
  for (const cuda::KernelPath path : kernel_paths()) {
    SCOPED_TRACE(std::string("kernel path ") + std::string(cuda::to_string(path)));
    cuda::KernelOptions opt;
    opt.path = path;
    const auto base = cuda::block_sparse_attention(in.q, in.k, in.v, mask, cfg, opt).out;
    auto widen = [](const at::Tensor& x, int64_t offset) {
      auto w = at::zeros({x.size(0), x.size(1), x.size(2), x.size(3) + 16}, x.options());
      w.narrow(3, offset, x.size(3)).copy_(x);
      return w.narrow(3, offset, x.size(3));
    };
    for (int64_t offset : {8, 1}) {
      const auto out = cuda::block_sparse_attention(widen(in.q, offset), widen(in.k, offset),
                                                    widen(in.v, offset), mask, cfg, opt)
                           .out;
      EXPECT_TRUE(at::equal(out, base)) << "offset " << offset;
    }
  }
}

// Input checks name the argument; CPU tensors are rejected before any device work, so this runs everywhere.
TEST(CudaAttention, RejectsBadInputs) {
  auto expect_error = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const auto cpu = random_qkv(1, 2, 2, 100, 100, 64, 1, at::TensorOptions(at::kHalf));
  const auto cpu_mask = test::full_mask(1, 2, 100, 100, cuda::kBlockQ, cuda::kBlockK, false);
  SpargeConfig cfg;
  expect_error([&] { cuda::block_sparse_attention(cpu.q, cpu.k, cpu.v, cpu_mask, cfg); }, "argument `q`");
  EXPECT_NE(cuda::unsupported_reason(cpu.q, cpu.k, cpu.v, cfg).find("CUDA"), std::string::npos);
  expect_error([] { cuda::parse_kernel_path("hopper"); }, "expected auto, portable or sm90");
  EXPECT_EQ(cuda::parse_kernel_path("sm90"), cuda::KernelPath::kSm90);
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device visible to torch: GPU input checks skipped";
  }

  const auto in = random_qkv(1, 2, 2, 100, 100, 64, 1, at::TensorOptions(at::kHalf).device(at::kCUDA));
  const auto mask = test::full_mask(1, 2, 100, 100, cuda::kBlockQ, cuda::kBlockK, false);
  const auto gpu_mask =
      BlockMask::from_dense(mask.dense.to(at::kCUDA), cuda::kBlockQ, cuda::kBlockK, 100, 100);
  expect_error([&] { cuda::block_sparse_attention(in.q, in.k, in.v, mask, cfg); }, "argument `mask");
  expect_error(
      [&] {
        cuda::block_sparse_attention(in.q.to(at::kFloat), in.k.to(at::kFloat), in.v.to(at::kFloat), gpu_mask,
                                     cfg);
      },
      "argument `q`: expected dtype float16 or bfloat16");
  const auto wide = random_qkv(1, 2, 2, 100, 100, 80, 1, at::TensorOptions(at::kHalf).device(at::kCUDA));
  expect_error([&] { cuda::block_sparse_attention(wide.q, wide.k, wide.v, gpu_mask, cfg); },
               "head dim 64 or 128");
  const auto small = BlockMask::from_dense(
      at::ones({1, 2, 2, 2}, at::TensorOptions(at::kBool).device(at::kCUDA)), 64, 64, 100, 100);
  expect_error([&] { cuda::block_sparse_attention(in.q, in.k, in.v, small, cfg); },
               "argument `mask`: expected blocks");
  SpargeConfig bad = cfg;
  bad.quant = QuantMode::kInt8;
  cuda::KernelOptions wrong;
  wrong.q_int8 = at::zeros({1, 2, 100, 64}, in.q.options().dtype(at::kChar));
  wrong.q_scale = at::ones({1, 2, 2}, in.q.options().dtype(at::kFloat));  // NQB is 1
  expect_error([&] { cuda::block_sparse_attention(in.q, in.k, in.v, gpu_mask, bad, wrong); },
               "argument `options.q_scale`");
  if (!cuda::sm90_supported(in.q.device())) {
    cuda::KernelOptions forced;
    forced.path = cuda::KernelPath::kSm90;
    expect_error([&] { cuda::block_sparse_attention(in.q, in.k, in.v, gpu_mask, cfg, forced); },
                 "argument `options.path`");
  }
  bad.stage2_group_rows = 16;
  expect_error([&] { cuda::block_sparse_attention(in.q, in.k, in.v, gpu_mask, bad); }, "stage2_group_rows");
  BlockMask broken = gpu_mask;
  broken.indices = gpu_mask.indices.clone();
  broken.indices.index_put_({0, 0, 0, 0}, 7);
  expect_error([&] { cuda::block_sparse_attention(in.q, in.k, in.v, broken, cfg); },
               "argument `mask.indices`: expected the first counts entries of each row in [0, 2)");
  broken.indices = gpu_mask.indices.clone();  // the last row's second entry: every row is scanned
  broken.indices.index_put_({0, 1, 0, 1}, -3);
  expect_error([&] { cuda::block_sparse_attention(in.q, in.k, in.v, broken, cfg); },
               "argument `mask.indices`: expected the first counts entries");
  broken.indices = gpu_mask.indices.flip(-1).contiguous();  // {1, 0}: in range, descending
  expect_error([&] { cuda::block_sparse_attention(in.q, in.k, in.v, broken, cfg); },
               "argument `mask.indices`: expected the listed key blocks of each row strictly ascending");
  broken.indices = gpu_mask.indices;
  broken.counts = gpu_mask.counts.clone();
  broken.counts.index_put_({0, 1, 0}, 3);
  expect_error([&] { cuda::block_sparse_attention(in.q, in.k, in.v, broken, cfg); },
               "argument `mask.counts`: expected values in [0, 2]");
  broken.counts.index_put_({0, 1, 0}, 1);  // a shorter list: valid (entries past the count are not read)
  EXPECT_NO_THROW(cuda::block_sparse_attention(in.q, in.k, in.v, broken, cfg));
  expect_error(
      [&] {
        cuda::block_sparse_attention(in.q, in.k.narrow(2, 0, 50), in.v.narrow(2, 0, 50), gpu_mask, cfg);
      },
      "argument `mask`");
}

}  // namespace
}  // namespace sparge
