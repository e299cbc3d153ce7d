// The device tile vocabulary of the attention kernels (sm_80+): element types, 16-byte async copies,
// ldmatrix fragment loads, the m16n8k16 tensor-core MMA, exp2, and the padded shared-memory layout.
// Fragment layouts are those of the PTX ISA for mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16x16, row): a0a1 = (g, 2t..2t+1), a2a3 = (g+8, 2t..), a4a5 = (g, 2t+8..), a6a7 = (g+8, 2t+8..)
//   B (16x8, col):  b0b1 = (k 2t..2t+1, n g), b2b3 = (k 2t+8.., n g)
//   C (16x8, f32):  c0c1 = (g, 2t..2t+1), c2c3 = (g+8, 2t..)
// so an S accumulator pair (c0c1 / c2c3) of two adjacent n8 tiles is exactly an A fragment of P (FA2's
// trick). mma.m16n8k32 with s8 operands (INT8 Q K^T) has the same register pattern with 4 values per
// register: a0 = (g, 4t..4t+3), a1 = (g+8, 4t..), a2 = (g, 4t+16..), a3 = (g+8, 4t+16..); b0 = (k 4t..4t+3,
// n g), b1 = (k 4t+16.., n g); so one ldmatrix.b16 8x8 matrix (8 rows x 16 bytes) is 8 rows x 16 int8
// values and the m16n8k16 ldmatrix addressing, counted in 16-byte chunks, serves both. mma.m16n8k32 with e4m3
// operands (FP8 P V) has that same pattern again.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "params.h"

namespace sparge::cuda::tile {

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;
inline constexpr float kNegInf = -__builtin_huge_valf();  // -infinity
inline constexpr unsigned kFullWarp = 0xffffffffu;

template <DType>
struct Element;
template <>
struct Element<DType::kFp16> {
  using type = __half;
  // Two floats -> one register of two 16-bit values (low = a).
  __device__ static uint32_t pack(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  // D += A B, m16n8k16, f32 accumulators.
  __device__ static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <>
struct Element<DType::kBf16> {
  using type = __nv_bfloat16;
  __device__ static uint32_t pack(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// D += A B, m16n8k32, s8 x s8 -> s32 accumulators (exact).
__device__ __forceinline__ void mma_s8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The Q and K operands of S = Q K^T: storage type, accumulator type and MMA. One MMA k step is 32 bytes of a
// row (16 16-bit values or 32 INT8 values), i.e. two 16-byte chunks.
template <DType kDtype, Precision kQk>
struct QkOperand {
  using type = typename Element<kDtype>::type;
  using Acc = float;
  static constexpr int kStepElems = 16;
  __device__ static void mma(Acc (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    Element<kDtype>::mma(d, a, b0, b1);
  }
};
struct Int8QkOperand {
  using type = int8_t;
  using Acc = int;
  static constexpr int kStepElems = 32;
  __device__ static void mma(Acc (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    mma_s8(d, a, b0, b1);
  }
};
template <DType kDtype>
struct QkOperand<kDtype, Precision::kInt8> : Int8QkOperand {};
template <DType kDtype>
struct QkOperand<kDtype, Precision::kInt8Fp8> : Int8QkOperand {};

// FP8 e4m3 (sm_89+; the kInt8Fp8 instantiations are only launched there, older targets compile a trap).
// D += A B, m16n8k32, e4m3 x e4m3 -> f32 accumulators. The register pattern is m16n8k32 s8's (4 values per
// register, the lowest k in the lowest byte).
__device__ __forceinline__ void mma_e4m3(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}
// Four floats -> four e4m3 bytes (x0 in the lowest), round to nearest even, saturating to +-448.
__device__ __forceinline__ uint32_t pack_e4m3x4(float x0, float x1, float x2, float x3) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  uint16_t lo, hi;  // cvt.e4m3x2 puts its first source in the upper byte
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(lo) : "f"(x1), "f"(x0));
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(hi) : "f"(x3), "f"(x2));
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
#else
  __trap();
  return 0;
#endif
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronous; valid == false writes 16 zero bytes (src is not read).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
// Waits until at most `kPending` committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 2^x (ex2.approx: relative error ~2^-22; exp2(-inf) = 0).
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Sum / max over the 4 lanes of a quad (the lanes holding one accumulator row).
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(kFullWarp, x, 1);
  return x + __shfl_xor_sync(kFullWarp, x, 2);
}
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(kFullWarp, x, 1));
  return fmaxf(x, __shfl_xor_sync(kFullWarp, x, 2));
}

// Row-major tile of kRows x kHeadDim 16-bit elements (or 2 * kHeadDim bytes of INT8) in shared memory, each
// row padded by one 16-byte chunk: the 8 row addresses of one ldmatrix matrix (same chunk, 8 consecutive
// rows) are then 4 banks apart, i.e. all 32 banks, conflict-free. Unlike an XOR swizzle the offset is affine
// in (row, chunk), so every fragment address is one per-thread base register plus an immediate (an XOR
// swizzle made ptxas keep ~80 hoisted addresses live and spill at D = 128).
template <int kRows, int kHeadDim>
struct SmemTile {
  static constexpr int kChunks = kHeadDim / 8;          // 16-byte chunks of data per row
  static constexpr int kRowBytes = (kChunks + 1) * 16;  // + one chunk of padding
  static constexpr int kBytes = kRows * kRowBytes;
  __host__ __device__ static constexpr uint32_t offset(int row, int chunk) {  // byte offset of (row, chunk)
    return static_cast<uint32_t>(row * kRowBytes + chunk * 16);
  }
};

// Asynchronously copies rows [0, rows_valid) of a kRows x kHeadDim global tile (row stride in elements) into
// a padded shared tile; rows >= rows_valid are zero-filled (zeros keep 0 * garbage = NaN out of P V).
// Thread tid copies chunk tid % kChunks of rows tid / kChunks + i * kRowsPerStep: its shared addresses are
// one base plus immediates and its global address advances by one fixed stride per row step. (Computing each
// step's (row, chunk) from tid + i * kThreads instead let ptxas hoist the per-step offsets of the K and V
// copies out of the mainloop as loop invariants: 16 more live registers, the D = 128 spills.)
template <int kRows, int kHeadDim, int kThreads, typename T>
__device__ __forceinline__ void load_tile_async(uint32_t smem, const T* gmem, int64_t row_stride,
                                                int rows_valid, int tid) {
  using Layout = SmemTile<kRows, kHeadDim>;
  static_assert(kThreads % Layout::kChunks == 0, "each thread copies one chunk column");
  constexpr int kRowsPerStep = kThreads / Layout::kChunks;
  static_assert(kRows % kRowsPerStep == 0, "whole row steps per tile");
  const int row0 = tid / Layout::kChunks, chunk = tid % Layout::kChunks;
  const uint32_t dst = smem + Layout::offset(row0, chunk);
  const T* src = gmem + row0 * row_stride + chunk * 8;
  const int64_t step = kRowsPerStep * row_stride;
#pragma unroll
  for (int i = 0; i < kRows / kRowsPerStep; ++i) {
    const bool valid = row0 + i * kRowsPerStep < rows_valid;
    cp_async_16(dst + Layout::offset(i * kRowsPerStep, 0), valid ? src : gmem, valid);
    src += step;
  }
}

}  // namespace sparge::cuda::tile
