// Synthetic attention inputs (see sparge/synthetic.h).
#include "sparge/synthetic.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "sparge/error.h"

namespace sparge {
namespace {

// (B, H, N, D) smooth latent: moving sums of white noise over `window` tokens, unit variance per entry;
// corr(z_t, z_s) = max(0, 1 - |t - s| / window).
at::Tensor smooth_latent(int64_t b, int64_t h, int64_t n, int64_t d, int64_t window, at::Generator& gen) {
  const auto e = at::randn({b, h, n + window, d}, gen, at::TensorOptions(at::kDouble));
  const auto c = at::constant_pad_nd(e.cumsum(2), {0, 0, 1, 0});  // c[t] = sum_{s < t} e[s]
  return (c.narrow(2, window, n) - c.narrow(2, 0, n)) / std::sqrt(static_cast<double>(window));
}

}  // namespace

QKV structured_qkv(const StructuredSpec& s, uint64_t seed, const at::TensorOptions& options) {
  SPARGE_CHECK(s.batch >= 1 && s.heads_kv >= 1 && s.heads_q % s.heads_kv == 0 && s.head_dim >= 1,
               "argument `spec`: expected batch >= 1, heads_q a multiple of heads_kv >= 1, head_dim >= 1");
  SPARGE_CHECK(s.seq_q >= 1 && s.seq_k >= s.seq_q, "argument `spec`: expected 1 <= seq_q <= seq_k, got ",
               s.seq_q, ", ", s.seq_k);
  SPARGE_CHECK(s.window >= 1 && s.noise >= 0 && s.sharpness > 0 && s.sink_tokens >= 0,
               "argument `spec`: expected window >= 1, noise >= 0, sharpness > 0, sink_tokens >= 0");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t g = s.heads_q / s.heads_kv, d = s.head_dim;
  const auto opt = at::TensorOptions(at::kDouble);
  // Scores of identical latents: (a z) . (a z) / sqrt(D) ~ a^2 sqrt(D) = sharpness.
  const double amp = std::sqrt(s.sharpness / std::sqrt(static_cast<double>(d)));
  const auto z =
      smooth_latent(s.batch, s.heads_kv, s.seq_k, d, s.window, gen);  // shared by K and the last Nq Q
  auto k = amp * (z + s.noise * at::randn(z.sizes(), gen, opt));
  // Query rows are the last seq_q positions (bottom-right aligned); each query head of a group gets its own
  // noise.
  const auto zq = z.narrow(2, s.seq_k - s.seq_q, s.seq_q).repeat_interleave(g, 1);
  auto q = amp * (zq + s.noise * at::randn(zq.sizes(), gen, opt));
  if (s.sink_tokens > 0) {
    auto u = at::randn({s.batch, s.heads_kv, 1, d}, gen, opt);
    u = u / u.norm(2, {-1}, true);
    const double sink_amp = std::sqrt(s.sink_strength * std::sqrt(static_cast<double>(d)));
    const int64_t ns = std::min(s.sink_tokens, s.seq_k);
    k.narrow(2, 0, ns).add_(sink_amp * u);
    q = q + 0.5 * sink_amp * u.repeat_interleave(g, 1);
  }
  auto v = at::randn({s.batch, s.heads_kv, s.seq_k, d}, gen, opt);
  return {q.to(options), k.to(options), v.to(options)};
}

QKV random_qkv(int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t seq_q, int64_t seq_k,
               int64_t head_dim, uint64_t seed, const at::TensorOptions& options) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opt = at::TensorOptions(at::kFloat);
  auto q = at::randn({batch, heads_q, seq_q, head_dim}, gen, opt);
  auto k = at::randn({batch, heads_kv, seq_k, head_dim}, gen, opt);
  auto v = at::randn({batch, heads_kv, seq_k, head_dim}, gen, opt);
  return {q.to(options), k.to(options), v.to(options)};
}

}  // namespace sparge
