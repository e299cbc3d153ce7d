// Block-sparse attention on the GPU: the mma.sync (sm_80+) FlashAttention-2-style kernel with the SpargeAttn
// stage-2 filter, and on sm_90 the Hopper kernel (wgmma, TMA; KernelPath below) with the same contract in
// every precision. Same contract as sparge::block_sparse_attention (reference.h) with the same config.quant
// on the same BlockMask; built only when SPARGE_CUDA is on (library sparge_cuda). Quantization:
//   QuantMode::kNone:    S and P V in the input's 16-bit type, float32 accumulation;
//   QuantMode::kInt8:    SageAttention-style: S = (INT8 Q . INT8 smoothed K, exact int32) * q_scale * k_scale
//                        with one scale per 128-row query block / 64-row key block; P rounded to the input's
//                        16-bit type (fp16 -> fp16, bf16 -> bf16), V as given, float32 accumulation. The INT8
//                        operands come from KernelOptions (normally cuda::predict_block_mask(..., quantize =
//                        true)); without them the API quantizes q and k itself as the reference does (torch
//                        ops, slower). K smoothing shifts every score of a row by the same q . mean(k): out
//                        is unchanged, lse is that of the smoothed scores (as in the reference emulation);
//   QuantMode::kInt8Fp8: SageAttention2-style: kInt8's S; P scaled by 448 and rounded to FP8 e4m3, V divided
//                        by its per-channel scale (max over the sequence of |v| / 448) and rounded to e4m3
//                        (the API transposes and quantizes V itself, or takes KernelOptions::v_fp8 from
//                        quantize_v_fp8: two passes over V), P V with the e4m3 MMA
//                        (sm_89+) accumulated in float (the MMA's own adds are narrower than float32;
//                        measured against the float32 emulation: 1e-4 - 3e-3 relative L2 up to N = 32768;
//                        the Hopper kernel, which rounds P relative to a 128-key step's maximum, 2e-3 -
//                        1.5e-2, as close to float64 attention as the emulation); O
//                        = acc / l * v_scale. On devices below sm_89 (no FP8 MMA) it runs kInt8's 16-bit P V
//                        instead (fp8_pv_supported tells which).
//
// Shapes (config.layout; NHD swaps the H and N axes, the output included; any strides with a contiguous last
// dimension, no copies):
//   q: (B, Hq, Nq, D)   k, v: (B, Hkv, Nk, D)   Hq % Hkv == 0   D in {64, 128}   float16 or bfloat16, CUDA
//   mask: block_q x block_k = kBlockQ x kBlockK, counts/indices on q's device
//   out: like q, contiguous in the layout; lse: (B, Hq, Nq) float32 natural log (config.return_lse)
// Stage 2: config.pvthreshd (1 or Hq values, log2 units, +inf off); config.stage2_group_rows selects the
// group that takes one skip decision: kStage2WarpRows (= 32, one warp's rows) or 0 / kBlockQ (the whole
// 128-row tile, a CTA-wide vote). The reference with the same stage2_group_rows makes the same decisions up
// to the rounding of S.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "sparge/block_mask.h"
#include "sparge/config.h"
#include "sparge/reference.h"

namespace sparge::cuda {

// Mask geometry of the kernel (cuda/tile_config.h holds the reasons): one mask block is one CTA tile.
inline constexpr int64_t kBlockQ = 128;
inline constexpr int64_t kBlockK = 64;
inline constexpr int64_t kStage2WarpRows = 32;  // rows of one warp: the per-warp stage-2 group

// Which kernel runs. kPortable: the mma.sync kernel (sm_80+, every precision). kSm90: the Hopper kernel
// (warpgroup MMAs fed by TMA, warp-specialized; devices of compute capability 9.0, every QuantMode). kAuto:
// the Hopper kernel where it applies, else the portable one. The environment variable
// SPARGE_KERNEL_PATH=auto|portable|sm90 replaces kAuto (for the torch ops and benchmarks); an explicit
// choice in KernelOptions wins over it.
enum class KernelPath { kAuto, kPortable, kSm90 };
std::string_view to_string(KernelPath path);          // "auto" | "portable" | "sm90"
KernelPath parse_kernel_path(std::string_view name);  // throws naming the accepted values

// The order in which the Hopper kernel's CTAs take the (query block, head, batch) tiles. kNatural:
// head-major, each head's query blocks last-first (longest causal rows first). kHeavyRowsFirst: mask rows
// listing at least 4x the mean number of blocks first, then the rest, each in natural order (greedy
// scheduling then never starts a long row in the last wave; one small extra kernel per call). kAuto:
// kHeavyRowsFirst, or what the environment variable SPARGE_TILE_ORDER says (0: natural, 1: heavy rows first;
// for A/B measurements). The portable kernel always runs the natural order.
enum class TileOrder { kAuto, kNatural, kHeavyRowsFirst };

// The kHeavyRowsFirst order of a mask's rows: counts (B, Hq, NQB) int32 on a CUDA device -> (B * Hq * NQB,)
// int32, entry i = the natural grid position (x + NQB * (head + Hq * batch), query block NQB - 1 - x) of the
// i-th tile to run. A stable partition: rows with count >= 4 * mean (and > 0), then the others.
at::Tensor heavy_rows_first_order(const at::Tensor& counts);

struct KernelOptions {
  KernelPath path = KernelPath::kAuto;
  TileOrder tile_order = TileOrder::kAuto;  // the Hopper kernel's CTA order (above)
  // Fill AttentionResult::stats (block and token counts from the mask, stage-2 units and skips counted by the
  // kernel, attention_ms); costs a device synchronization. stage2_skipped_pairs is not counted (left 0).
  bool collect_stats = false;
  // Validate mask.counts / mask.indices on the device (counts in [0, NKB], listed indices in range and
  // strictly ascending); costs a synchronization. The kernel trusts the mask otherwise.
  bool check_mask = true;
  // Optional preallocated outputs (e.g. poisoned by tests): out like q (dtype, device, shape) and contiguous;
  // lse (B, Hq, Nq) float32 contiguous, used when config.return_lse.
  at::Tensor out, lse;
  // QuantMode::kInt8 operands (ignored otherwise), each pair both defined or both undefined (then computed
  // here): the fields of cuda::Prediction with quantize = true for a config with block_q = kBlockQ, block_k =
  // kBlockK. q_int8 (B, Hq, Nq, D), k_int8 (B, Hkv, Nk, D): int8, contiguous in HND order whatever
  // config.layout, value = round(x / scale) (K smoothed: k - mean over the sequence); q_scale (B, Hq, NQB),
  // k_scale (B, Hkv, NKB): float32 contiguous, one per kBlockQ query rows / kBlockK key rows.
  at::Tensor q_int8, q_scale, k_int8, k_scale;
  // QuantMode::kInt8Fp8's FP8 V (ignored where P V is not FP8: other modes, devices below sm_89), both
  // defined or both undefined (then computed here, on the current stream): quantize_v_fp8 of this call's v,
  // e.g. computed on a side stream while the INT8 pass or the prediction runs (the torch ops do so).
  at::Tensor v_fp8, v_scale;
};

// QuantMode::kInt8Fp8's FP8 V operand, as block_sparse_attention computes it without KernelOptions::v_fp8:
// values (B, Hkv, D, NKB * kBlockK) uint8 (e4m3 bits): V^T, the keys of each 16-key group in the FP8 MMA's
// fragment order, zero past Nk (NKB = ceil(Nk / kBlockK)); scale (B, Hkv, D) float32: per channel the maximum
// over the sequence of |v| / 448 (1 / 448 for an all-zero channel), values = e4m3(v / scale) (IEEE division,
// round to nearest even, saturating). v: (B, Hkv, Nk, D) in `layout`, float16 or bfloat16, D in {64, 128},
// on a CUDA device with FP8 MMA (fp8_pv_supported). Two kernels on the current stream.
struct Fp8V {
  at::Tensor values, scale;
};
Fp8V quantize_v_fp8(const at::Tensor& v, Layout layout);

// Whether the Hopper kernel can run on `device` (compute capability 9.0 exactly: its code is sm_90a).
bool sm90_supported(const at::Device& device);
// The kernel block_sparse_attention runs on `device` (kPortable or kSm90): `requested` (kAuto: the
// environment's choice, then the best that applies; both kernels have every precision). Throws naming
// `options.path` when kSm90 is requested where it cannot run.
KernelPath resolve_kernel_path(const at::Device& device, KernelPath requested);

// Whether QuantMode::kInt8Fp8 runs its P V in FP8 on `device` (compute capability 8.9 or newer).
bool fp8_pv_supported(const at::Device& device);

// "" when the kernel supports (q, k, v, config) with the given mask block sizes, else the first failed
// constraint (a validity predicate: callers fall back to the reference, tests mark the case unsupported).
std::string unsupported_reason(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const SpargeConfig& config, int64_t mask_block_q = kBlockQ,
                               int64_t mask_block_k = kBlockK);

// Block-sparse attention over `mask` (its block sizes must be kBlockQ x kBlockK); throws sparge::Error naming
// the argument on bad input. Rows whose mask computes no allowed key get out = 0, lse = -inf.
AttentionResult block_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const BlockMask& mask, const SpargeConfig& config,
                                       const KernelOptions& options = {});

}  // namespace sparge::cuda
