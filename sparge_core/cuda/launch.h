// Host entry points of the block-sparse attention kernels, one instantiation per (dtype, head dim) in
// fwd_<dtype>_hdim<D>.cu. Host-includable (no torch); the API file dispatches the runtime dtype and D here.
#pragma once

#include <cuda_runtime_api.h>

#include "params.h"

namespace sparge::cuda {

// Launches the kernel for p (already validated) on `stream`; returns the launch error, if any.
template <DType kDtype, int kHeadDim>
cudaError_t launch_block_sparse_attention(const AttentionParams& p, cudaStream_t stream);

#define SPARGE_DECLARE_LAUNCH(DTYPE, HDIM)                                                       \
  extern template cudaError_t launch_block_sparse_attention<DTYPE, HDIM>(const AttentionParams&, \
                                                                         cudaStream_t);
SPARGE_DECLARE_LAUNCH(DType::kFp16, 64)
SPARGE_DECLARE_LAUNCH(DType::kFp16, 128)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 64)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 128)
#undef SPARGE_DECLARE_LAUNCH

}  // namespace sparge::cuda
