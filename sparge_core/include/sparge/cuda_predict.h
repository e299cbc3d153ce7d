// Stage-1 prediction on the GPU: the block mask (and optionally the INT8 per-block Q and smoothed K of the
// quantized attention path) from fp16/bf16 CUDA tensors, with the semantics of sparge::predict_block_mask.
//
//   q: (B, Hq, Nq, D), k: (B, Hkv, Nk, D) in config.layout; D in {64, 128}; any block sizes; NKB <= 8192.
// Kernels: the block statistics as plain passes (K block sums -> float64 K mean -> one CTA per block of
// smoothed K and of Q: pooled means, similarities, INT8 values in the same pass; SPARGE_STATS_PASSES=0 runs
// the older persistent kernel instead, same bits) -> the compressed-score GEMM -> the selection (a warp per
// mask row up to 512 key blocks, else a CTA). Everything stays on the device; the masks equal the reference's
// except where the reference itself sits on a floating-point tie (a similarity within rounding of theta, a
// cumulative sum within rounding of tau, or two equal compressed probabilities), and equal the first GPU
// predictor's bit for bit.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "sparge/block_mask.h"
#include "sparge/config.h"
#include "sparge/cuda_attention.h"

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

// Hands a quantized prediction's INT8 operands to the attention kernel (the fused path: no second
// quantization pass); a prediction without them leaves `options` to quantize itself.
inline void set_int8_operands(KernelOptions& options, const Prediction& pred) {
  options.q_int8 = pred.q_int8;
  options.q_scale = pred.q_scale;
  options.k_int8 = pred.k_int8;
  options.k_scale = pred.k_scale;
}

// The INT8 operands of the quantized attention path without a prediction (for a mask given by the caller):
// the fields of Prediction with quantize = true, bit for bit, for a config with this layout and these block
// sizes. One pass of the statistics kernel with the similarity and pooled outputs off: Q and K are each read
// once from DRAM.
//   q: (B, Hq, Nq, D), k: (B, Hkv, Nk, D) fp16/bf16 CUDA in `layout`; D in {64, 128}; block sizes >= 1.
struct QuantizedQK {
  at::Tensor q_int8, q_scale;  // (B, Hq, Nq, D) int8, (B, Hq, NQB) float32
  at::Tensor k_int8, k_scale;  // (B, Hkv, Nk, D) int8 of K - k_mean, (B, Hkv, NKB) float32
  at::Tensor k_mean;           // (B, Hkv, D) float32
};

QuantizedQK quantize_qk_int8(const at::Tensor& q, const at::Tensor& k, Layout layout, int64_t block_q,
                             int64_t block_k);

}  // namespace sparge::cuda
