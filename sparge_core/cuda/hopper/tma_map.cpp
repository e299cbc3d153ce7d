#include "tma_map.h"

#include <cudaTypedefs.h>

#include <mutex>

namespace sparge::cuda::sm90 {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder(cudaError_t& err) {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static cudaError_t status = cudaSuccess;
  static std::once_flag once;
  std::call_once(once, [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult found{};
    status =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &found);
    if (status == cudaSuccess && found != cudaDriverEntryPointSuccess) status = cudaErrorSymbolNotFound;
    fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  });
  err = status;
  return fn;
}

}  // namespace

cudaError_t make_map(CUtensorMap* map, const void* base, MapElement element, int64_t dim0, int64_t rows,
                     int64_t heads, int64_t batch, int64_t row_stride, int64_t head_stride,
                     int64_t batch_stride, int box0, int box_rows) {
  cudaError_t err = cudaSuccess;
  const auto encode = encoder(err);
  if (err != cudaSuccess) return err;
  const bool wide = element == MapElement::kFp16 || element == MapElement::kBf16;
  const int64_t bytes = wide ? 2 : 1;
  const int64_t box_bytes = box0 * bytes;
  if (box_bytes != 128 && box_bytes != 64) return cudaErrorInvalidValue;
  const CUtensorMapDataType type = element == MapElement::kFp16   ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                   : element == MapElement::kBf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                                  : CU_TENSOR_MAP_DATA_TYPE_UINT8;
  // Extent-1 dimensions may carry any stride in torch; TMA wants multiples of 16 bytes: use the packed one.
  if (rows == 1) row_stride = dim0;
  if (heads == 1) head_stride = rows * row_stride;
  if (batch == 1) batch_stride = heads * head_stride;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(dim0), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(batch)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(row_stride * bytes),
                                 static_cast<cuuint64_t>(head_stride * bytes),
                                 static_cast<cuuint64_t>(batch_stride * bytes)};
  const cuuint32_t box[4] = {static_cast<cuuint32_t>(box0), static_cast<cuuint32_t>(box_rows), 1, 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  const CUresult r = encode(map, type, 4, const_cast<void*>(base), dims, strides, box, elem_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE,
                            box_bytes == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace sparge::cuda::sm90
