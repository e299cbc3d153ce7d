// The first GPU predictor (per-block statistics CTAs reading K twice from DRAM, a separate mean kernel, a
// latency-bound score GEMM, one CTA per mask row), kept as the bit-exactness oracle of the GPU test: the
// predictor of cuda_predict.h must return the same masks, K mean and INT8 operands bit for bit. Not part of
// the API (tests only).
#pragma once

#include <ATen/core/Tensor.h>

#include "sparge/cuda_predict.h"

namespace sparge::cuda::legacy {

// Same contract as sparge::cuda::predict_block_mask.
Prediction predict_block_mask(const at::Tensor& q, const at::Tensor& k, const SpargeConfig& config,
                              bool quantize = false);

}  // namespace sparge::cuda::legacy
