// TMA tensor descriptors for the Hopper kernel (host side). The encoder (cuTensorMapEncodeTiled) comes from
// the driver through the runtime's entry-point query, so nothing links libcuda directly.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace sparge::cuda::sm90 {

enum class MapElement { kFp16, kBf16, kInt8, kFp8 };  // kFp8: e4m3 bytes (moved as uint8)

// A 4-D tiled map (dim0, rows, heads, batch) = (contiguous, rows, heads, batch) of `element`s with element
// strides row_stride, head_stride, batch_stride (each a multiple of 16 bytes; ignored for extent-1
// dimensions), a box of box0 x box_rows x 1 x 1 in the swizzle of box0's width in bytes (128 or 64),
// out-of-bounds elements read as zero and not written by stores.
cudaError_t make_map(CUtensorMap* map, const void* base, MapElement element, int64_t dim0, int64_t rows,
                     int64_t heads, int64_t batch, int64_t row_stride, int64_t head_stride,
                     int64_t batch_stride, int box0, int box_rows);

}  // namespace sparge::cuda::sm90
