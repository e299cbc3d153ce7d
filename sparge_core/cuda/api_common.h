// Helpers shared by the torch-facing APIs of the CUDA kernels (attention_api.cpp, vertical_slash_api.cpp,
// predict/predict_api.cpp): message assembly, operand preparation and stride extraction. Internal; included
// only by those files.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <sstream>
#include <string>

namespace sparge::cuda::api {

// Grid y/z dimension limit: the kernels put heads and batch on them.
inline constexpr int64_t kMaxGridYZ = 65535;

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// The tensor as a kernel operand in logical HND order: a view when the last dimension is contiguous, the
// other strides are multiples of 8 elements and the data is 16-byte aligned (16-byte cp.async / TMA), else
// a contiguous copy.
inline at::Tensor kernel_operand(const at::Tensor& hnd) {
  bool ok = hnd.stride(3) == 1 && reinterpret_cast<uintptr_t>(hnd.data_ptr()) % 16 == 0;
  for (int d = 0; d < 3; ++d) ok = ok && (hnd.size(d) == 1 || hnd.stride(d) % 8 == 0);
  if (ok) return hnd;
  return hnd.is_contiguous() ? hnd.clone() : hnd.contiguous();
}

inline void set_strides(const at::Tensor& hnd, int64_t& batch, int64_t& head, int64_t& row) {
  batch = hnd.stride(0);
  head = hnd.stride(1);
  row = hnd.stride(2);
}

}  // namespace sparge::cuda::api
