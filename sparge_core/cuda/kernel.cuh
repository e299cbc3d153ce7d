// The block-sparse attention kernel (FlashAttention-2 style, mma.sync, sm_80+) and its launcher: composes the
// block-mask iterator, the mainloop (with the online softmax and the stage-2 filter) and the epilogue.
// Grid: (NQB, Hq, B); CTA x processes query block NQB - 1 - x (longest first: under a causal mask the last
// query blocks list the most key blocks, so they start first and the short ones fill the tail).
#pragma once

#include "epilogue.cuh"
#include "launch.h"

namespace sparge::cuda {

template <DType kDtype, int kHeadDim, Stage2Granularity kGranularity, Precision kQk>
__global__ void __launch_bounds__(TileConfig<kHeadDim, kQk>::kThreads)
    block_sparse_attention_kernel(const __grid_constant__ AttentionParams p) {
  using Cfg = TileConfig<kHeadDim, kQk>;
  using Loop = Mainloop<kDtype, kHeadDim, kGranularity, kQk>;
  using T = typename Loop::T;
  using QkT = typename Loop::QkT;
  extern __shared__ __align__(128) unsigned char smem[];

  const int q_block = p.num_q_blocks - 1 - static_cast<int>(blockIdx.x);
  const int head = blockIdx.y, batch = blockIdx.z, kv_head = head / p.kv_group;
  const int q0 = q_block * Cfg::kBlockM;
  const uint32_t q_tile = tile::smem_addr(smem);

  const QkT* q_gmem =
      static_cast<const QkT*>(p.q) + batch * p.q_batch_stride + head * p.q_head_stride + q0 * p.q_row_stride;
  const QkT* k_gmem = static_cast<const QkT*>(p.k) + batch * p.k_batch_stride + kv_head * p.k_head_stride;
  using VT = typename Loop::VT;
  const VT* v_gmem = static_cast<const VT*>(p.v) + batch * p.v_batch_stride + kv_head * p.v_head_stride;
  T* o_gmem = static_cast<T*>(p.o) + batch * p.o_batch_stride + head * p.o_head_stride;
  float* lse_row =
      p.lse != nullptr ? p.lse + (static_cast<int64_t>(batch) * p.heads_q + head) * p.seq_q : nullptr;
  const float pvthreshd = p.pvthreshd != nullptr ? p.pvthreshd[head] : __builtin_huge_valf();
  float q_scale = 1.f;
  const float* k_scale_row = nullptr;
  const float* v_scale_row = nullptr;  // FP8 P V: the kv head's per-channel V scales
  if constexpr (Loop::kInt8) {
    q_scale = p.q_scale[(static_cast<int64_t>(batch) * p.heads_q + head) * p.num_q_blocks + q_block];
    k_scale_row = p.k_scale + (static_cast<int64_t>(batch) * p.heads_kv + kv_head) * p.num_k_blocks;
  }
  if constexpr (Loop::kFp8Pv) {
    v_scale_row = p.v_scale + (static_cast<int64_t>(batch) * p.heads_kv + kv_head) * kHeadDim;
  }

  BlockMaskIterator it(p, batch, head, q_block);
  typename Loop::State st;
  Loop::run(st, p, it, q_tile, q_tile + Cfg::kSmemQ, q_gmem, k_gmem, v_gmem, q0, pvthreshd, q_scale,
            k_scale_row);
  Epilogue<kDtype, kHeadDim, kGranularity, kQk>::store(st, p, q_tile, o_gmem, lse_row, v_scale_row, q0);
}

template <DType kDtype, int kHeadDim, Precision kQk>
cudaError_t launch_block_sparse_attention(const AttentionParams& p, cudaStream_t stream) {
  using Cfg = TileConfig<kHeadDim, kQk>;
  auto kernel = p.stage2_granularity == Stage2Granularity::kCta
                    ? &block_sparse_attention_kernel<kDtype, kHeadDim, Stage2Granularity::kCta, kQk>
                    : &block_sparse_attention_kernel<kDtype, kHeadDim, Stage2Granularity::kWarp, kQk>;
  // Above 48 KiB a kernel must opt in to dynamic shared memory (per device; cheap enough to repeat).
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(p.num_q_blocks, p.heads_q, p.batch);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace sparge::cuda
