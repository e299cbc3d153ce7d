// Per-head threshold tuning of one layer on the reference path; the procedure is described in tune.h.
#include "sparge/tune.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <tuple>

#include "internal.h"
#include "sparge/blocks.h"
#include "sparge/error.h"
#include "sparge/reference.h"

namespace sparge {
namespace {

constexpr double kThetaStep = 1.0 / 16.0;  // the reference theta grid
constexpr int kThetaGrid = 32;             // -1 ... 15/16
constexpr double kThetaBin = 0.125;        // width of the bins whose summed sparsity picks theta
constexpr int kThetaBins = 16;             // bins covering [-1, 1]
constexpr double kDenseTheta = 1.0;        // sim > 1 never holds: every block non-similar, all computed
constexpr double kDenseTau = 1.0;          // tau >= 1 keeps every block

// Per candidate of one evaluation: relative L1 of the head's output and its stage-1 sparsity.
struct Eval {
  std::vector<double> l1, sparsity;
};

// The calibration set in HND with its float64 dense references; evaluates batches of (input, head)
// candidates ("virtual heads" v = s * H + h), stacking the heads of inputs with equal shapes in one call.
class Evaluator {
 public:
  Evaluator(const std::vector<QkvSample>& inputs, const SpargeConfig& base, TunePass pass)
      : base_(base), pass_(pass ? std::move(pass) : TunePass(reference_pass)) {
    base_.layout = Layout::kHND;
    base_.select = SelectMode::kCdf;
    base_.return_lse = false;
    std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int>, size_t> group_of;
    for (size_t s = 0; s < inputs.size(); ++s) {
      Sample x;
      x.q = detail::to_hnd(inputs[s].q, base.layout);
      x.k = detail::to_hnd(inputs[s].k, base.layout);
      x.v = detail::to_hnd(inputs[s].v, base.layout);
      x.ref = dense_attention_f64(x.q, x.k, x.v, base.causal, base.scale, Layout::kHND).out;
      x.den = x.ref.abs().sum({0, 2, 3});  // (H) float64
      // Block self-similarities exactly as stage 1 computes them (math dtype, K smoothed), to know which
      // thetas give identical masks.
      const auto dt = detail::math_dtype(x.q.scalar_type());
      const auto kh = x.k.to(dt);
      x.q_sim = pool_blocks(x.q.to(dt), base.block_q).similarity.to(at::kDouble).cpu().transpose(0, 1);
      x.k_sim = pool_blocks(kh - kh.mean(2, /*keepdim=*/true), base.block_k)
                    .similarity.to(at::kDouble)
                    .cpu()
                    .transpose(0, 1);  // (Hkv, B, NKB)
      x.math_is_float = dt == at::kFloat;
      const auto key = std::make_tuple(x.q.size(0), x.q.size(2), x.k.size(2), x.q.size(3), x.k.size(1),
                                       static_cast<int>(x.q.scalar_type()));
      const auto [it, fresh] = group_of.emplace(key, groups_.size());
      if (fresh) groups_.emplace_back();
      groups_[it->second].push_back(s);
      samples_.push_back(std::move(x));
    }
    heads_ = samples_.front().q.size(1);
  }

  int64_t heads() const { return heads_; }
  int64_t samples() const { return static_cast<int64_t>(samples_.size()); }
  int64_t passes() const { return passes_; }
  int64_t head_evals() const { return head_evals_; }

  // Stage 1 depends on theta only through the sets of self-similar query and key blocks (sim > theta), and
  // these shrink as theta grows: the numbers of similar blocks identify the sets. Returns them for
  // virtual head v.
  std::pair<int64_t, int64_t> similar_counts(int64_t v, double theta) const {
    const auto& x = samples_[v / heads_];
    const int64_t h = v % heads_, group = heads_ / x.k.size(1);
    // The comparison runs in the math dtype: theta rounded like detail::per_head does.
    const double th = x.math_is_float ? static_cast<double>(static_cast<float>(theta)) : theta;
    return {(x.q_sim[h] > th).sum().item<int64_t>(), (x.k_sim[h / group] > th).sum().item<int64_t>()};
  }

  // Evaluates candidate i: virtual head vh[i] with thresholds (theta[i], tau[i], pv[i]).
  Eval eval(const std::vector<int64_t>& vh, const std::vector<double>& theta, const std::vector<double>& tau,
            const std::vector<double>& pv) {
    Eval e{std::vector<double>(vh.size()), std::vector<double>(vh.size())};
    for (const auto& group : groups_) {
      std::vector<size_t> pos;  // candidates whose input is in this group, by input then request order
      for (const size_t s : group)
        for (size_t i = 0; i < vh.size(); ++i)
          if (vh[i] / heads_ == static_cast<int64_t>(s)) pos.push_back(i);
      if (pos.empty()) continue;
      run_group(vh, theta, tau, pv, pos, e);
    }
    return e;
  }

 private:
  struct Sample {
    at::Tensor q, k, v, ref, den;
    at::Tensor q_sim, k_sim;  // (Hq, B, NQB), (Hkv, B, NKB) float64
    bool math_is_float = true;
  };

  void run_group(const std::vector<int64_t>& vh, const std::vector<double>& theta,
                 const std::vector<double>& tau, const std::vector<double>& pv,
                 const std::vector<size_t>& pos, Eval& e) {
    const auto& first = samples_[vh[pos.front()] / heads_];
    const int64_t group = heads_ / first.k.size(1);
    // Whole inputs in head order keep the GQA layout (stacked head h' reads kv head h' / group); a subset of
    // heads is gathered into MHA form (each query head with its own copy of its kv head).
    std::vector<int64_t> head_list;
    bool whole = pos.size() % heads_ == 0;
    for (size_t n = 0; n < pos.size(); ++n) {
      const int64_t h = vh[pos[n]] % heads_;
      head_list.push_back(h);
      whole = whole && h == static_cast<int64_t>(n) % heads_ &&
              vh[pos[n]] / heads_ == vh[pos[n - n % heads_]] / heads_;
    }
    std::vector<at::Tensor> qs, ks, vs, refs, dens;
    for (size_t n = 0; n < pos.size();) {  // runs of candidates of one input
      const int64_t s = vh[pos[n]] / heads_;
      size_t m = n;
      while (m < pos.size() && vh[pos[m]] / heads_ == s) ++m;
      const auto& x = samples_[s];
      const auto idx = at::tensor(std::vector<int64_t>(head_list.begin() + n, head_list.begin() + m),
                                  at::TensorOptions(at::kLong))
                           .to(x.q.device());
      if (whole) {
        qs.push_back(x.q);
        ks.push_back(x.k);
        vs.push_back(x.v);
        refs.push_back(x.ref);
        dens.push_back(x.den);
      } else {
        const auto kv_idx = at::div(idx, group, "floor");
        qs.push_back(x.q.index_select(1, idx));
        ks.push_back(x.k.index_select(1, kv_idx));
        vs.push_back(x.v.index_select(1, kv_idx));
        refs.push_back(x.ref.index_select(1, idx));
        dens.push_back(x.den.index_select(0, idx));
      }
      n = m;
    }
    const auto q = qs.size() == 1 ? qs[0] : at::cat(qs, 1);
    const auto k = ks.size() == 1 ? ks[0] : at::cat(ks, 1);
    const auto v = vs.size() == 1 ? vs[0] : at::cat(vs, 1);
    const auto ref = refs.size() == 1 ? refs[0] : at::cat(refs, 1);
    const auto den = dens.size() == 1 ? dens[0] : at::cat(dens, 0);

    SpargeConfig c = base_;
    c.simthreshd1.clear();
    c.cdfthreshd.clear();
    c.pvthreshd.clear();
    for (const size_t i : pos) {
      c.simthreshd1.push_back(theta[i]);
      c.cdfthreshd.push_back(tau[i]);
      c.pvthreshd.push_back(pv[i]);
    }
    const auto r = pass_(q, k, v, c);
    const auto& mask = r.mask;
    ++passes_;
    head_evals_ += static_cast<int64_t>(pos.size());

    const auto l1 = ((r.out.to(at::kDouble) - ref).abs().sum({0, 2, 3}) / den).cpu();
    const auto valid =
        causal_valid_blocks(mask.seq_q, mask.seq_k, mask.block_q, mask.block_k, c.causal, at::TensorOptions())
            .sum()
            .item<int64_t>() *
        q.size(0);
    const auto computed = mask.counts.to(at::kLong).sum(at::IntArrayRef{0, 2}).cpu();
    const auto l1a = l1.accessor<double, 1>();
    const auto ca = computed.accessor<int64_t, 1>();
    for (size_t n = 0; n < pos.size(); ++n) {
      e.l1[pos[n]] = l1a[static_cast<int64_t>(n)];
      e.sparsity[pos[n]] =
          1.0 - static_cast<double>(ca[static_cast<int64_t>(n)]) / static_cast<double>(valid);
    }
  }

  SpargeConfig base_;
  TunePass pass_;
  std::vector<Sample> samples_;
  std::vector<std::vector<size_t>> groups_;  // sample indices with equal shapes and dtype
  int64_t heads_ = 0;
  int64_t passes_ = 0, head_evals_ = 0;
};

void check_inputs(const std::vector<QkvSample>& inputs, const SpargeConfig& base, const TuneTargets& t) {
  constexpr const char* fn = "tune_layer";
  if (inputs.empty()) detail::fail(fn, "argument `inputs`: expected at least one calibration sample, got 0");
  int64_t heads_q = -1;
  for (size_t s = 0; s < inputs.size(); ++s) {
    const auto& x = inputs[s];
    if (!x.q.defined() || !x.k.defined() || !x.v.defined())
      detail::fail(fn, "argument `inputs[", s, "]`: expected defined q, k and v");
    if (x.q.dim() != 4 || x.k.dim() != 4 || x.v.dim() != 4)
      detail::fail(fn, "argument `inputs[", s, "]`: expected rank-4 q, k, v, got ranks ", x.q.dim(), ", ",
                   x.k.dim(), ", ", x.v.dim());
    if (x.k.sizes() != x.v.sizes())
      detail::fail(fn, "argument `inputs[", s, "].v`: expected the shape of k ", x.k.sizes(), ", got ",
                   x.v.sizes());
    const auto q = detail::to_hnd(x.q, base.layout), k = detail::to_hnd(x.k, base.layout);
    if (q.size(0) != k.size(0) || q.size(3) != k.size(3) || k.size(1) == 0 || q.size(1) % k.size(1) != 0)
      detail::fail(fn, "argument `inputs[", s, "].k`: expected (B, Hkv, N, D) matching q ", x.q.sizes(),
                   " with Hq % Hkv == 0, got ", x.k.sizes());
    if (heads_q < 0) heads_q = q.size(1);
    if (q.size(1) != heads_q)
      detail::fail(fn, "argument `inputs[", s, "].q`: expected ", heads_q,
                   " query heads like inputs[0], got ", q.size(1));
    SpargeConfig c = base;
    c.simthreshd1 = {0.0};
    c.cdfthreshd = {0.5};
    c.topk = {0.5};
    c.pvthreshd = {kNoStage2};
    detail::check_problem(fn, x.q, x.k, x.v, c);  // block sizes, stage-2 rows, dtypes, devices
  }
  if (base.select != SelectMode::kCdf)
    detail::fail(fn, "argument `base.select`: expected cdf (tau is tuned), got ", to_string(base.select));
  if (!(t.l1 > 0.0) || !std::isfinite(t.l1))
    detail::fail(fn, "argument `t.l1`: expected a finite value > 0, got ", t.l1);
  if (!(t.l2 >= t.l1) || !std::isfinite(t.l2))
    detail::fail(fn, "argument `t.l2`: expected a finite value >= t.l1 (", t.l1, "), got ", t.l2);
  if (!(t.dense_below >= 0.0 && t.dense_below <= 1.0))
    detail::fail(fn, "argument `t.dense_below`: expected a value in [0, 1], got ", t.dense_below);
  if (t.tau_steps < 1 || t.tau_steps > 40)
    detail::fail(fn, "argument `t.tau_steps`: expected a value in [1, 40], got ", t.tau_steps);
  if (t.lambda_steps < 0 || t.lambda_steps > 40)
    detail::fail(fn, "argument `t.lambda_steps`: expected a value in [0, 40], got ", t.lambda_steps);
  if (!(t.lambda_max > 0.0) || !std::isfinite(t.lambda_max))
    detail::fail(fn, "argument `t.lambda_max`: expected a finite value > 0, got ", t.lambda_max);
  for (size_t i = 0; i < t.thetas.size(); ++i)
    if (!(t.thetas[i] >= -1.0 && t.thetas[i] <= 1.0))
      detail::fail(fn, "argument `t.thetas[", i, "]`: expected a value in [-1, 1], got ", t.thetas[i]);
}

int theta_bin(double theta) {
  return std::clamp(static_cast<int>(std::floor((theta + 1.0) / kThetaBin + 1e-9)), 0, kThetaBins - 1);
}

struct Point {
  double theta, tau, sparsity;
};

}  // namespace

PassResult reference_pass(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const SpargeConfig& c) {
  PassResult r;
  r.mask = predict_block_mask(q, k, c);
  r.out = block_sparse_attention(q, k, v, r.mask, c).out;
  return r;
}

std::vector<double> default_thetas() {
  std::vector<double> th;
  for (int i = 0; i < kThetaGrid; ++i) th.push_back(-1.0 + i * kThetaStep);
  return th;
}

SpargeConfig apply_tuned(const SpargeConfig& base, const std::vector<HeadParams>& heads) {
  SPARGE_CHECK(!heads.empty(), "argument `heads`: expected one entry per query head, got none");
  SpargeConfig c = base;
  c.select = SelectMode::kCdf;
  c.simthreshd1.clear();
  c.cdfthreshd.clear();
  c.pvthreshd.clear();
  for (const auto& h : heads) {
    c.simthreshd1.push_back(h.dense ? kDenseTheta : h.simthreshd1);
    c.cdfthreshd.push_back(h.dense ? kDenseTau : h.cdfthreshd);
    c.pvthreshd.push_back(h.pvthreshd);
  }
  return c;
}

TuneResult tune_layer(const std::vector<QkvSample>& inputs, const SpargeConfig& base, const TuneTargets& t,
                      const TunePass& pass) {
  const auto t0 = std::chrono::steady_clock::now();
  check_inputs(inputs, base, t);
  auto thetas = t.thetas.empty() ? default_thetas() : t.thetas;
  std::sort(thetas.begin(), thetas.end());
  thetas.erase(std::unique(thetas.begin(), thetas.end()), thetas.end());

  Evaluator ev(inputs, base, pass);
  const int64_t H = ev.heads(), S = ev.samples(), V = S * H;
  const double tau_res = std::ldexp(1.0, -t.tau_steps);
  const auto all = [](size_t n, double x) { return std::vector<double>(n, x); };

  // 1. Per theta and (input, head): the smallest tau meeting l1 (= the largest sparsity). Thetas that leave
  //    the similar-block sets of a (input, head) unchanged reuse its previous result (same masks for every
  //    tau); once every query block or every key block is non-similar the mask is dense whatever tau.
  std::vector<std::vector<Point>> points(H);
  std::vector<std::pair<int64_t, int64_t>> last_sig(V, {-1, -1});
  std::vector<Point> last_point(V);
  for (const double theta : thetas) {
    std::vector<int64_t> act;
    for (int64_t v = 0; v < V; ++v) {
      const auto sig = ev.similar_counts(v, theta);
      if (sig.first == 0 || sig.second == 0) {
        points[v % H].push_back({theta, 0.0, 0.0});
      } else if (sig == last_sig[v]) {
        points[v % H].push_back({theta, last_point[v].tau, last_point[v].sparsity});
      } else {
        last_sig[v] = sig;
        act.push_back(v);
      }
    }
    if (act.empty()) continue;
    const auto record = [&](int64_t v, double tau, double sparsity) {
      last_point[v] = {theta, tau, sparsity};
      points[v % H].push_back(last_point[v]);
    };
    auto e = ev.eval(act, all(act.size(), theta), all(act.size(), 0.0), all(act.size(), kNoStage2));
    std::vector<int64_t> search;
    std::vector<double> lo, hi, sp_hi;  // per entry of `search`
    for (size_t i = 0; i < act.size(); ++i) {
      if (e.sparsity[i] <= 0.0 || e.l1[i] < t.l1) {
        // The sparsest mask this theta allows already meets l1 (or is dense: tau is irrelevant).
        record(act[i], 0.0, e.sparsity[i]);
      } else {
        search.push_back(act[i]);
        lo.push_back(0.0);
        hi.push_back(1.0);  // tau >= 1 keeps every candidate block: meets l1 (up to rounding), sparsity 0
        sp_hi.push_back(0.0);
      }
    }
    for (int step = 0; step < t.tau_steps && !search.empty(); ++step) {
      std::vector<double> mid(search.size());
      for (size_t i = 0; i < search.size(); ++i) mid[i] = 0.5 * (lo[i] + hi[i]);
      e = ev.eval(search, all(search.size(), theta), mid, all(search.size(), kNoStage2));
      for (size_t i = 0; i < search.size(); ++i) {
        if (e.l1[i] < t.l1) {
          hi[i] = mid[i];
          sp_hi[i] = e.sparsity[i];
        } else {
          lo[i] = mid[i];
        }
      }
      // All searches of this theta share one interval width, so they end together; the freezes above
      // (tau = 0 suffices, unchanged or all-dense similarity sets) are what shrink the batches.
    }
    for (size_t i = 0; i < search.size(); ++i) record(search[i], hi[i], sp_hi[i]);
  }

  // 2. Per head: the theta bin with the largest summed sparsity, the best grid theta inside it, and the
  //    LARGEST tau of that theta's points. Each point's tau is the smallest that meets l1 on its own input
  //    and the error falls as tau grows (more blocks kept), so the largest is the smallest tau expected to
  //    meet l1 on every calibration input; a mean or min would break the bound on the inputs whose own tau
  //    is above it. Ties go to the larger theta (more blocks judged non-similar and computed: safer).
  std::vector<double> theta_h(H), tau_h(H);
  for (int64_t h = 0; h < H; ++h) {
    std::vector<double> bin_sum(kThetaBins, 0.0);
    for (const auto& p : points[h]) bin_sum[theta_bin(p.theta)] += p.sparsity;
    int best_bin = 0;
    for (int b = 0; b < kThetaBins; ++b)
      if (bin_sum[b] >= bin_sum[best_bin]) best_bin = b;
    std::map<double, double> theta_sum;
    for (const auto& p : points[h])
      if (theta_bin(p.theta) == best_bin) theta_sum[p.theta] += p.sparsity;
    double best_theta = theta_sum.begin()->first;
    for (const auto& [th, sum] : theta_sum)
      if (sum >= theta_sum[best_theta]) best_theta = th;
    double tau = 0.0;
    for (const auto& p : points[h])
      if (p.theta == best_theta) tau = std::max(tau, p.tau);
    theta_h[h] = best_theta;
    tau_h[h] = tau;
  }

  // 3. Verify on every input; re-bisect tau on [tau, 1] for heads that break l1 on some input.
  std::vector<int64_t> every(V);
  for (int64_t v = 0; v < V; ++v) every[v] = v;
  const auto per_v = [&](const std::vector<double>& per_head, const std::vector<int64_t>& vh) {
    std::vector<double> out;
    for (const int64_t v : vh) out.push_back(per_head[v % H]);
    return out;
  };
  std::vector<double> sp_h(H, 0.0);  // mean stage-1 sparsity at the current (theta, tau)
  std::vector<char> dense(H, 0);
  {
    const auto e = ev.eval(every, per_v(theta_h, every), per_v(tau_h, every), all(V, kNoStage2));
    std::vector<int64_t> bad;
    std::vector<char> is_bad(H, 0);
    for (int64_t v = 0; v < V; ++v) {
      sp_h[v % H] += e.sparsity[v] / static_cast<double>(S);
      if (e.l1[v] >= t.l1) is_bad[v % H] = 1;
    }
    for (int64_t h = 0; h < H; ++h)
      if (is_bad[h]) bad.push_back(h);
    std::vector<double> lo(H), hi(H);
    for (const int64_t h : bad) {
      lo[h] = tau_h[h];
      hi[h] = 1.0;
    }
    while (!bad.empty() && hi[bad.front()] - lo[bad.front()] > tau_res) {
      std::vector<int64_t> vh;
      for (int64_t s = 0; s < S; ++s)
        for (const int64_t h : bad) vh.push_back(s * H + h);
      std::vector<double> mid(H);
      for (const int64_t h : bad) mid[h] = 0.5 * (lo[h] + hi[h]);
      const auto r = ev.eval(vh, per_v(theta_h, vh), per_v(mid, vh), all(vh.size(), kNoStage2));
      std::vector<char> ok(H, 1);
      std::vector<double> sp(H, 0.0);
      for (size_t i = 0; i < vh.size(); ++i) {
        ok[vh[i] % H] = ok[vh[i] % H] && r.l1[i] < t.l1;
        sp[vh[i] % H] += r.sparsity[i] / static_cast<double>(S);
      }
      for (const int64_t h : bad) {
        if (ok[h]) {
          hi[h] = mid[h];
          tau_h[h] = mid[h];
          sp_h[h] = sp[h];
        } else {
          lo[h] = mid[h];
        }
      }
    }
    for (const int64_t h : bad)
      if (hi[h] >= 1.0) dense[h] = 1;  // nothing below tau = 1 meets l1 on every input
  }

  // 4. Heads that gain too little become dense.
  for (int64_t h = 0; h < H; ++h) {
    if (sp_h[h] <= t.dense_below) dense[h] = 1;
    if (dense[h]) {
      theta_h[h] = kDenseTheta;
      tau_h[h] = kDenseTau;
    }
  }

  // 5. pvthreshd: the smallest value on (0, lambda_max] meeting l2 on every input. First the smallest value
  //    the bisection could return (heads meeting l2 there are done), then bisection with hi meeting l2.
  std::vector<double> pv_h(H, kNoStage2);
  if (t.lambda_steps > 0) {
    const double res = t.lambda_max * std::ldexp(1.0, -t.lambda_steps);
    std::vector<double> lo(H, res), hi(H, t.lambda_max), cand(H, res);
    std::vector<int64_t> act(H);
    for (int64_t h = 0; h < H; ++h) act[h] = h;
    bool first = true;
    while (!act.empty()) {
      std::vector<int64_t> vh;
      for (int64_t s = 0; s < S; ++s)
        for (const int64_t h : act) vh.push_back(s * H + h);
      if (!first)
        for (const int64_t h : act) cand[h] = 0.5 * (lo[h] + hi[h]);
      const auto r = ev.eval(vh, per_v(theta_h, vh), per_v(tau_h, vh), per_v(cand, vh));
      std::vector<char> ok(H, 1);
      for (size_t i = 0; i < vh.size(); ++i) ok[vh[i] % H] = ok[vh[i] % H] && r.l1[i] < t.l2;
      std::vector<int64_t> next;
      for (const int64_t h : act) {
        if (first && ok[h]) {
          pv_h[h] = res;  // frozen: the most skipping the search can reach
          continue;
        }
        if (!first) (ok[h] ? hi[h] : lo[h]) = cand[h];
        if (hi[h] - lo[h] > res) {
          next.push_back(h);
        } else {
          pv_h[h] = hi[h];  // hi = lambda_max unverified: checked by the final pass below
        }
      }
      act = std::move(next);
      first = false;
    }
  }

  // 6. Report the chosen parameters' errors on the calibration inputs.
  TuneResult res;
  res.heads.resize(H);
  {
    const auto e1 = ev.eval(every, per_v(theta_h, every), per_v(tau_h, every), all(V, kNoStage2));
    const auto e2 = ev.eval(every, per_v(theta_h, every), per_v(tau_h, every), per_v(pv_h, every));
    for (int64_t h = 0; h < H; ++h) {
      auto& p = res.heads[h];
      p.simthreshd1 = theta_h[h];
      p.cdfthreshd = tau_h[h];
      p.pvthreshd = pv_h[h];
      p.dense = dense[h];
      p.sparsity = 0.0;
    }
    for (int64_t v = 0; v < V; ++v) {
      auto& p = res.heads[v % H];
      p.sparsity += e1.sparsity[v] / static_cast<double>(S);
      p.l1 = std::max(p.l1, e1.l1[v]);
      p.l1_with_stage2 = std::max(p.l1_with_stage2, e2.l1[v]);
    }
    for (auto& p : res.heads) {
      if (p.l1_with_stage2 >= t.l2) {  // lambda_max itself breaks l2: no stage 2 for this head
        p.pvthreshd = kNoStage2;
        p.l1_with_stage2 = p.l1;
      }
    }
  }
  res.passes = ev.passes();
  res.head_evals = ev.head_evals();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace sparge
