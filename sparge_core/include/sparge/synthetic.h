// Synthetic attention inputs with the structure of real attention maps, for tests, demos and benchmarks.
//
// "structured": Q and K share a smooth latent signal along the sequence (neighbouring tokens are similar, so
// blocks are self-similar and attention concentrates near the diagonal, as in language and video models),
// plus an attention sink (the first `sink_tokens` keys carry a direction every query has a component on) and
// noise.
//   q: (B, Hq, Nq, D), k, v: (B, Hkv, Nk, D), HND; created on CPU from `seed`, then moved to `options`.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace sparge {

struct QKV {
  at::Tensor q, k, v;
};

struct StructuredSpec {
  int64_t batch = 1, heads_q = 4, heads_kv = 4, seq_q = 1024, seq_k = 1024, head_dim = 64;
  int64_t window = 256;      // correlation length of the latent signal, in tokens (triangular correlation)
  double sharpness = 6.0;    // q.k / sqrt(D) of two identical latents: larger = more peaked attention
  double noise = 0.3;        // relative amplitude of independent per-token noise
  int64_t sink_tokens = 16;  // keys at the start carrying the sink direction (0: none)
  double sink_strength = 4.0;
};

QKV structured_qkv(const StructuredSpec& spec, uint64_t seed, const at::TensorOptions& options);

// Independent standard normal q, k, v (the usual kernel-test input).
QKV random_qkv(int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t seq_q, int64_t seq_k,
               int64_t head_dim, uint64_t seed, const at::TensorOptions& options);

}  // namespace sparge
