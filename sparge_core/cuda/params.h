// The kernel boundary of the block-sparse attention kernels: raw pointers, int64 strides, sizes and flags.
// No torch and no CUDA headers here: the API file (attention_api.cpp) fills it, the kernels read it.
//
// Shapes, addressed through strides in logical HND order (so HND and NHD tensors both work without copies):
//   q, o: (B, Hq, Nq, D)   k, v: (B, Hkv, Nk, D) (FP8 v: transposed, see below)   last dimension contiguous,
//   every stride a multiple of 8 elements and every base pointer 16-byte aligned (one cp.async / 16-byte
//   store per 8 elements); lse: (B, Hq, Nq) float32 contiguous, natural log (nullptr: not written);
//   mask_counts: (B, Hq, NQB) int32 contiguous, mask_indices: (B, Hq, NQB, NKB) int32 contiguous, the first
//   counts entries of each row valid ascending key-block indices (the API checks this), the rest -1;
//   pvthreshd: (Hq) float32 stage-2 thresholds in log2 units (nullptr: stage 2 off; +inf disables one head);
//   stage2_units, stage2_skipped: one int64 counter each (nullptr: not counted), incremented with the
//   (row group, key block) units that had at least one allowed key, and those of them stage 2 skipped.
// Precision::kInt8 (SageAttention-style): q and k point to int8 values (strides in elements = bytes) of Q
// and of the smoothed K, q_scale (B, Hq, NQB) and k_scale (B, Hkv, NKB) float32 contiguous, one scale per
// kBlockM query rows / kBlockN key rows (value = round(x / scale)); S = int32 dot * q_scale * k_scale. v
// stays in the 16-bit type.
// Precision::kInt8Fp8 (SageAttention2-style): q, k as for kInt8; v points to V^T in FP8 e4m3 (one byte per
// value): (B, Hkv, D, Nk_pad) with Nk_pad = NKB * kBlockN, v_row_stride = the stride between head-dim rows
// (in bytes, a multiple of 16), keys >= Nk zero, and within every 16 keys the columns permuted so that an
// m16n8k32 A fragment built from the thread's S accumulators lines up with them (fp8_key_position below);
// value = e4m3(v / v_scale), v_scale (B, Hkv, D) float32 contiguous = max over the keys of |v| / 448.
#pragma once

#include <cstdint>

namespace sparge::cuda {

enum class DType { kFp16, kBf16 };

// Rows that take one stage-2 decision: one warp's rows, or the whole CTA query tile (a CTA-wide vote).
enum class Stage2Granularity { kWarp, kCta };

// Precision of the two matmuls. k16Bit: S = Q K^T and P V in the input's 16-bit type (mma m16n8k16, float
// accumulators). kInt8: S from INT8 Q and smoothed K with per-block scales (mma m16n8k32 s8, int32
// accumulators), P V in the 16-bit type. kInt8Fp8: kInt8's S, and P V in FP8 e4m3 (mma m16n8k32 e4m3, float
// accumulators, sm_89+) with P scaled by 448 and V by one scale per channel.
enum class Precision { k16Bit, kInt8, kInt8Fp8 };

// The column of key k (0 <= k < 16, within its group of 16) in the FP8 V^T operand. Thread t of a quad holds
// S columns 2t, 2t + 1 of each n8 tile, and the m16n8k32 A fragment wants k positions 4t..4t + 3 in one
// register: positions 4t, 4t + 1, 4t + 2, 4t + 3 take keys 2t, 2t + 1, 8 + 2t, 9 + 2t. P V sums over keys,
// so permuting them in V^T (once, when V is quantized) costs nothing in the kernel.
constexpr int fp8_key_position(int k) {
  return 4 * ((k % 8) / 2) + 2 * (k / 8) + k % 2;
}
// Its inverse: position 4t + j holds key 8 (j / 2) + 2t + j % 2.
constexpr int fp8_key_at_position(int pos) {
  return 8 * ((pos % 4) / 2) + 2 * (pos / 4) + pos % 2;
}
constexpr bool fp8_permutation_is_bijective() {
  for (int k = 0; k < 16; ++k)
    if (fp8_key_at_position(fp8_key_position(k)) != k) return false;
  return true;
}
static_assert(fp8_permutation_is_bijective(), "fp8_key_at_position inverts fp8_key_position");

struct AttentionParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;

  // Strides in elements, logical (batch, head, row) order; the head-dim stride is 1.
  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;
  int64_t o_batch_stride = 0, o_head_stride = 0, o_row_stride = 0;

  int batch = 0, heads_q = 0, heads_kv = 0, seq_q = 0, seq_k = 0, head_dim = 0;
  int kv_group = 1;  // heads_q / heads_kv: query head h reads kv head h / kv_group

  float scale_log2 = 0.f;  // softmax scale * log2(e): scores live in log2 units
  bool causal = false;     // bottom-right aligned: query i sees key j iff j <= i + seq_k - seq_q

  const int32_t* mask_counts = nullptr;
  const int32_t* mask_indices = nullptr;
  int num_q_blocks = 0, num_k_blocks = 0;  // NQB = ceil(Nq / kBlockM), NKB = ceil(Nk / kBlockN)

  const float* pvthreshd = nullptr;
  Stage2Granularity stage2_granularity = Stage2Granularity::kWarp;

  int64_t* stage2_units = nullptr;
  int64_t* stage2_skipped = nullptr;

  const float* q_scale = nullptr;  // Precision::kInt8 and kInt8Fp8
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;  // Precision::kInt8Fp8 only

  // Hopper kernel: the CTA at linear grid position i (x fastest over the (NQB, Hq, B) grid) computes the tile
  // of natural position tile_order[2 i] (natural position L: q block NQB - 1 - L % NQB of row group L / NQB =
  // batch * Hq + head), whose mask row lists tile_order[2 i + 1] blocks (8-byte aligned pairs, written by
  // launch_heavy_rows_first, which the kernel's launch then overlaps). nullptr: the natural order. (The
  // portable kernel ignores it.)
  const int32_t* tile_order = nullptr;
};

}  // namespace sparge::cuda
