// Host entry points of the block-sparse attention kernels, one instantiation per (dtype, head dim,
// precision) in fwd_<dtype>_hdim<D>.cu (16-bit), fwd_<dtype>_hdim<D>_int8.cu (INT8 Q and K) and
// fwd_<dtype>_hdim<D>_int8fp8.cu (INT8 Q and K, FP8 P V), plus the FP8 V quantization (quantize_v.cu).
// Host-includable (no torch); the API file dispatches the runtime dtype and D here.
#pragma once

#include <cuda_runtime_api.h>

#include "params.h"

namespace sparge::cuda {

// Launches the kernel for p (already validated) on `stream`; returns the launch error, if any.
template <DType kDtype, int kHeadDim, Precision kQk>
cudaError_t launch_block_sparse_attention(const AttentionParams& p, cudaStream_t stream);

#define SPARGE_DECLARE_LAUNCH(DTYPE, HDIM, QK)                                                       \
  extern template cudaError_t launch_block_sparse_attention<DTYPE, HDIM, QK>(const AttentionParams&, \
                                                                             cudaStream_t);
SPARGE_DECLARE_LAUNCH(DType::kFp16, 64, Precision::k16Bit)
SPARGE_DECLARE_LAUNCH(DType::kFp16, 128, Precision::k16Bit)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 64, Precision::k16Bit)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 128, Precision::k16Bit)
SPARGE_DECLARE_LAUNCH(DType::kFp16, 64, Precision::kInt8)
SPARGE_DECLARE_LAUNCH(DType::kFp16, 128, Precision::kInt8)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 64, Precision::kInt8)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 128, Precision::kInt8)
SPARGE_DECLARE_LAUNCH(DType::kFp16, 64, Precision::kInt8Fp8)
SPARGE_DECLARE_LAUNCH(DType::kFp16, 128, Precision::kInt8Fp8)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 64, Precision::kInt8Fp8)
SPARGE_DECLARE_LAUNCH(DType::kBf16, 128, Precision::kInt8Fp8)
#undef SPARGE_DECLARE_LAUNCH

// The FP8 operand of Precision::kInt8Fp8 from a 16-bit V (B, H, N, D) (strides in elements, head-dim stride
// 1): v_scale (B, H, D) = max over the sequence of |v| / 448 (1 / 448 for an all-zero channel) and vt (B, H,
// D, n_pad) e4m3 bytes = e4m3(v / v_scale) with the keys of every 16 permuted (fp8_key_position) and keys
// >= N zero; n_pad a multiple of 64. amax_work: B * H * D floats of workspace. Two kernels (a column max
// over the sequence, then a tiled transpose), both reading V once.
struct QuantizeVParams {
  const void* v = nullptr;
  int64_t batch_stride = 0, head_stride = 0, row_stride = 0;
  int batch = 0, heads = 0, seq = 0, head_dim = 0, n_pad = 0;
  float* amax_work = nullptr;
  float* v_scale = nullptr;
  uint8_t* vt = nullptr;
};
cudaError_t launch_quantize_v_fp8(const QuantizeVParams& p, DType dtype, cudaStream_t stream);

// Validation of a block mask's lists (mask_check.cu): for each of `rows` rows, counts[row] in [0, nkb] and
// its first counts[row] entries of indices (rows of nkb int32) in [0, nkb) and strictly ascending. ORs the
// error bits below into *flags (zero it first). Contiguous int32 tensors.
constexpr int kMaskBadCount = 1, kMaskBadIndex = 2, kMaskNotAscending = 4;
cudaError_t launch_check_mask(const int* counts, const int* indices, int64_t rows, int nkb, int* flags,
                              cudaStream_t stream);

// The Hopper kernel's CTA order for unbalanced masks (tile_order.cu): order[2 i] (i < tiles = B * Hq * NQB) =
// the natural grid position of the i-th CTA to run, order[2 i + 1] = that row's count
// (AttentionParams::tile_order; 8-byte aligned): the rows whose count is at least 4x the mean count (and > 0)
// first, then the others, each group in natural order (a stable partition). counts: mask.counts (B, Hq, NQB)
// contiguous; tiles < 2^31. One CTA; it starts dependent grids at once (programmatic dependent launch).
cudaError_t launch_heavy_rows_first(const int* counts, int64_t tiles, int nqb, int* order,
                                    cudaStream_t stream);

}  // namespace sparge::cuda
