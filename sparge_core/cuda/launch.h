// Host entry points of the block-sparse attention kernels, one instantiation per (dtype, head dim, Q K^T
// precision) in fwd_<dtype>_hdim<D>.cu (16-bit) and fwd_<dtype>_hdim<D>_int8.cu (INT8 Q and K).
// Host-includable (no torch); the API file dispatches the runtime dtype and D here.
#pragma once

#include <cuda_runtime_api.h>

#include "params.h"

namespace sparge::cuda {

// Launches the kernel for p (already validated) on `stream`; returns the launch error, if any.
template <DType kDtype, int kHeadDim, QkPrecision kQk>
cudaError_t launch_block_sparse_attention(const AttentionParams& p, cudaStream_t stream);

#define SPARGE_DECLARE_LAUNCH(DTYPE, HDIM, QK)                                                       \
  extern template cudaError_t launch_block_sparse_attention<DTYPE, HDIM, QK>(const AttentionParams&, \
                                                                             cudaStream_t);
SPARGE_DECLARE_LAUNCH(DType::kFp16, 64, QkPrecision::k16Bit)
SPARGE_DECLARE_LAUNCH(DType::kFp16, 128, QkPrecision::k16Bit)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 64, QkPrecision::k16Bit)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 128, QkPrecision::k16Bit)
SPARGE_DECLARE_LAUNCH(DType::kFp16, 64, QkPrecision::kInt8)
SPARGE_DECLARE_LAUNCH(DType::kFp16, 128, QkPrecision::kInt8)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 64, QkPrecision::kInt8)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 128, QkPrecision::kInt8)
#undef SPARGE_DECLARE_LAUNCH

}  // namespace sparge::cuda
