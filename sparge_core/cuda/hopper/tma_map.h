// TMA tensor descriptors for the Hopper kernel (host side). The encoder (cuTensorMapEncodeTiled) comes from
// the driver through the runtime's entry-point query, so nothing links libcuda directly.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace sparge::cuda::sm90 {

// A 4-D tiled map of 16-bit elements (D, N, H, B) = (dim0 contiguous, rows, heads, batch) with element
// strides row_stride, head_stride, batch_stride (multiples of 8; ignored for extent-1 dimensions), a box of
// 64 x box_rows x 1 x 1 in the 128-byte swizzle, out-of-bounds elements read as zero and not written by
// stores.
cudaError_t make_map_16bit(CUtensorMap* map, const void* base, bool bf16, int64_t dim0, int64_t rows,
                           int64_t heads, int64_t batch, int64_t row_stride, int64_t head_stride,
                           int64_t batch_stride, int box_rows);

}  // namespace sparge::cuda::sm90
