// Per-head threshold tuning of one attention layer (the thu-ml "autotune" procedure, batched over heads).
//
// Given calibration Q/K/V of one layer, finds for every query head the stage-1 thresholds (theta =
// simthreshd1, tau = cdfthreshd) with the largest stage-1 sparsity whose relative L1 error against dense
// float64 attention stays below `l1`, then the stage-2 threshold (pvthreshd) that skips the most with the
// error below `l2`. Relative L1 of head h = sum|O - O_ref| / sum|O_ref| over that head's (B, N, D) slice.
//
// Batched: the thresholds of SpargeConfig are per query head, so one call of the reference attention
// evaluates a different candidate for every head; heads of all calibration inputs with equal shapes are
// stacked into one call ("virtual heads" = (input, head) pairs), and heads whose search has finished are
// left out of later calls. A "pass" is one such call (prediction + block-sparse attention).
//
// Procedure (per head):
//   1. for each theta of the grid (ascending), for each input: tau = 0 first (maximal sparsity; taken if it
//      meets l1), else bisect tau on [0, 1] for tau_steps steps (invariant: hi meets l1, lo does not;
//      the result is hi). tau >= 1 keeps every block, so hi = 1 needs no evaluation (sparsity 0).
//      Stage 1 depends on theta only through the sets of self-similar blocks: a theta that leaves a head's
//      sets unchanged reuses its previous result without a pass, and a head whose query or key blocks are
//      all non-similar is dense whatever tau (sparsity 0, no pass).
//   2. points (theta, tau, sparsity) per head over all inputs; the theta bin (width 0.125) with the largest
//      summed sparsity wins; inside it the grid theta with the largest summed sparsity, and
//      tau = the LARGEST tau of that theta's points over the inputs (see tune.cpp for why).
//   3. verify (theta, tau) on every input; a head that breaks l1 on some input gets tau re-bisected on
//      [tau, 1] jointly over the inputs (dense if nothing but tau = 1 works).
//   4. heads with mean stage-1 sparsity <= dense_below become dense (simthreshd1 = 1: every block is judged
//      non-similar and computed; cdfthreshd = 1).
//   5. pvthreshd bisected on (0, lambda_max] for lambda_steps steps, jointly over the inputs (the smallest
//      value meeting l2 on every input; smaller = more stage-2 skipping). If even lambda_max breaks l2, stage
//      2 is disabled for the head (pvthreshd = +inf).
//   6. two final passes measure the reported stage-1 and stage-1 + stage-2 errors of the chosen parameters.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "sparge/block_mask.h"
#include "sparge/config.h"

namespace sparge {

// One calibration sample of a layer: q (B, Hq, N, D), k, v (B, Hkv, N, D) in `base.layout` (HND usually).
struct QkvSample {
  at::Tensor q, k, v;
};

struct TuneTargets {
  double l1 = 0.08;            // stage-1 bound on the relative L1 error (tau, theta)
  double l2 = 0.09;            // stage-1 + stage-2 bound (pvthreshd); l2 >= l1
  double dense_below = 0.1;    // heads with mean stage-1 sparsity <= this become dense
  int tau_steps = 8;           // bisection steps of tau on [0, 1]: resolution 2^-tau_steps
  int lambda_steps = 8;        // bisection steps of pvthreshd on (0, lambda_max]
  double lambda_max = 50.0;    // upper end of the pvthreshd search (log2 units, see config.h)
  std::vector<double> thetas;  // theta grid in [-1, 1]; empty = default_thetas()
};

// -1, -15/16, ..., 15/16 (32 values, step 1/16), the reference grid.
std::vector<double> default_thetas();

struct HeadParams {
  double simthreshd1 = 1.0, cdfthreshd = 1.0, pvthreshd = kNoStage2;
  bool dense = false;           // simthreshd1 = 1 and cdfthreshd = 1: every block computed
  double sparsity = 0.0;        // stage-1 sparsity, mean over the calibration inputs (blocks of `base`)
  double l1 = 0.0;              // stage-1 relative L1, max over the calibration inputs
  double l1_with_stage2 = 0.0;  // with pvthreshd too, max over the calibration inputs
};

struct TuneResult {
  std::vector<HeadParams> heads;  // one per query head
  int64_t passes = 0;             // attention calls made (each evaluates many (input, head) candidates)
  int64_t head_evals = 0;         // (input, head) candidates evaluated in total
  double seconds = 0.0;           // wall clock of the whole tuning, dense references included
};

// One evaluation pass: the stage-1 mask and the block-sparse output of (q, k, v) under `c` (HND, per-head
// thresholds, select = cdf, return_lse off). The default runs the LibTorch reference (predict_block_mask +
// block_sparse_attention); a caller with the CUDA kernels passes cuda::predict_block_mask +
// cuda::block_sparse_attention (the runner does on a GPU). out may be in any floating dtype.
struct PassResult {
  BlockMask mask;
  at::Tensor out;
};
using TunePass = std::function<PassResult(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          const SpargeConfig& c)>;
PassResult reference_pass(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const SpargeConfig& c);

// Tunes every query head of one layer. `base` supplies block sizes, causal, scale, layout, quantization,
// stage-2 granularity, sink and cdf_keep_crossing; its thresholds are ignored, select must be kCdf.
// Throws sparge::Error (a std::invalid_argument) naming the bad argument.
// `pass` (default reference_pass) runs every candidate evaluation; the float64 dense references are computed
// once per input with dense_attention_f64 on the inputs' device.
TuneResult tune_layer(const std::vector<QkvSample>& inputs, const SpargeConfig& base, const TuneTargets& t,
                      const TunePass& pass = {});

// `base` with the tuned per-head thresholds filled in (simthreshd1, cdfthreshd, pvthreshd of size Hq).
SpargeConfig apply_tuned(const SpargeConfig& base, const std::vector<HeadParams>& heads);

}  // namespace sparge
