// Stage-1 prediction on the GPU: the block mask (and optionally the INT8 per-block Q and smoothed K of the
// quantized attention path) from fp16/bf16 CUDA tensors, with the semantics of sparge::predict_block_mask.
//
//   q: (B, Hq, Nq, D), k: (B, Hkv, Nk, D) in config.layout; D in {64, 128}; any block sizes; NKB <= 8192.
// Kernels: K block sums -> K mean (float64) -> Q and smoothed-K block statistics (one pass over each, INT8
// values written in the same pass) -> one CTA per mask row for the selection. Everything stays on the device;
// the masks equal the reference's except where the reference itself sits on a floating-point tie (a
// similarity within rounding of theta, a cumulative sum within rounding of tau, or two equal compressed
// probabilities).
#pragma once

#include <ATen/core/Tensor.h>

#include "sparge/block_mask.h"
#include "sparge/config.h"

namespace sparge::cuda {

struct Prediction {
  BlockMask mask;
  at::Tensor k_mean;  // (B, Hkv, D) float32: the smoothing vector
  // Defined iff quantize: INT8 values (B, H, N, D) contiguous in HND order and one float32 scale per block
  // (B, H, NB) with value = round(x / scale); K is smoothed. Blocks are config.block_q / block_k.
  at::Tensor q_int8, q_scale, k_int8, k_scale;
};

Prediction predict_block_mask(const at::Tensor& q, const at::Tensor& k, const SpargeConfig& config,
                              bool quantize = false);

}  // namespace sparge::cuda
