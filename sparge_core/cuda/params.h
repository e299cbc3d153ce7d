// The kernel boundary of the block-sparse attention kernels: raw pointers, int64 strides, sizes and flags.
// No torch and no CUDA headers here: the API file (attention_api.cpp) fills it, the kernels read it.
//
// Shapes, addressed through strides in logical HND order (so HND and NHD tensors both work without copies):
//   q, o: (B, Hq, Nq, D)   k, v: (B, Hkv, Nk, D)   last dimension contiguous, every stride a multiple of 8
//   elements and every base pointer 16-byte aligned (one cp.async / 16-byte store per 8 elements);
//   lse: (B, Hq, Nq) float32 contiguous, natural log (nullptr: not written);
//   mask_counts: (B, Hq, NQB) int32 contiguous, mask_indices: (B, Hq, NQB, NKB) int32 contiguous, the first
//   counts entries of each row valid ascending key-block indices (the API checks this), the rest -1;
//   pvthreshd: (Hq) float32 stage-2 thresholds in log2 units (nullptr: stage 2 off; +inf disables one head);
//   stage2_units, stage2_skipped: one int64 counter each (nullptr: not counted), incremented with the
//   (row group, key block) units that had at least one allowed key, and those of them stage 2 skipped.
// QkPrecision::kInt8 (SageAttention-style): q and k point to int8 values (strides in elements = bytes) of Q
// and of the smoothed K, q_scale (B, Hq, NQB) and k_scale (B, Hkv, NKB) float32 contiguous, one scale per
// kBlockM query rows / kBlockN key rows (value = round(x / scale)); S = int32 dot * q_scale * k_scale. v
// stays in the 16-bit type.
#pragma once

#include <cstdint>

namespace sparge::cuda {

enum class DType { kFp16, kBf16 };

// Rows that take one stage-2 decision: one warp's rows, or the whole CTA query tile (a CTA-wide vote).
enum class Stage2Granularity { kWarp, kCta };

// Precision of S = Q K^T: the 16-bit inputs (mma m16n8k16, float accumulators), or INT8 Q and smoothed K with
// per-block scales (mma m16n8k32 s8, int32 accumulators). P V is in the 16-bit type either way.
enum class QkPrecision { k16Bit, kInt8 };

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

  const float* q_scale = nullptr;  // QkPrecision::kInt8 only
  const float* k_scale = nullptr;
};

}  // namespace sparge::cuda
