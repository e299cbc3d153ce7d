// Host entry points of the Hopper (sm_90a) block-sparse attention kernel (hopper/kernel_sm90.cuh), one
// instantiation per (dtype, head dim, precision) in fwd_sm90_<dtype>_hdim<D>[_int8|_int8fp8].cu.
// Host-includable (no torch, no CUDA driver headers). Built only when the sm_90a objects are
// (SPARGE_HAS_SM90).
#pragma once

#include <cuda_runtime_api.h>

#include "../params.h"

namespace sparge::cuda {

// Launches the Hopper kernel for p (already validated by the API) on `stream`: builds the TMA descriptors of
// q, k, v, o from p's pointers and strides (each stride a multiple of 16 bytes, base pointers 16-byte
// aligned; quantized precisions: q, k INT8 and, for kInt8Fp8, v the FP8 V^T of params.h) and launches.
// Returns the first error (descriptor encoding or launch).
template <DType kDtype, int kHeadDim, Precision kQk>
cudaError_t launch_block_sparse_attention_sm90(const AttentionParams& p, cudaStream_t stream);

#define SPARGE_DECLARE_SM90(DTYPE, HDIM, QK)                                                              \
  extern template cudaError_t launch_block_sparse_attention_sm90<DTYPE, HDIM, QK>(const AttentionParams&, \
                                                                                  cudaStream_t);
#define SPARGE_DECLARE_SM90_ALL(QK)          \
  SPARGE_DECLARE_SM90(DType::kFp16, 64, QK)  \
  SPARGE_DECLARE_SM90(DType::kFp16, 128, QK) \
  SPARGE_DECLARE_SM90(DType::kBf16, 64, QK)  \
  SPARGE_DECLARE_SM90(DType::kBf16, 128, QK)
SPARGE_DECLARE_SM90_ALL(Precision::k16Bit)
SPARGE_DECLARE_SM90_ALL(Precision::kInt8)
SPARGE_DECLARE_SM90_ALL(Precision::kInt8Fp8)
#undef SPARGE_DECLARE_SM90_ALL
#undef SPARGE_DECLARE_SM90

}  // namespace sparge::cuda
