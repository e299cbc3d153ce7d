// The Hopper kernel's launcher template (included by the instantiation files only).
#pragma once

#include <algorithm>
#include <cstdlib>

#include "kernel_sm90.cuh"
#include "launch_sm90.h"
#include "tma_map.h"

namespace sparge::cuda {

template <DType kDtype, int kHeadDim, Precision kQk>
cudaError_t launch_block_sparse_attention_sm90(const AttentionParams& p, cudaStream_t stream) {
  using Cfg = Sm90Config<kHeadDim, kQk>;
  using sm90::MapElement;
  const MapElement wide = kDtype == DType::kBf16 ? MapElement::kBf16 : MapElement::kFp16;
  const MapElement qk = Cfg::kInt8 ? MapElement::kInt8 : wide;
  Sm90Params prm;
  prm.p = p;
  const char* pingpong = std::getenv("SPARGE_SM90_PINGPONG");  // measurement switch (default on)
  prm.pingpong = pingpong != nullptr && pingpong[0] == '0' ? 0 : 1;
  const char* lazy = std::getenv("SPARGE_SM90_LAZY");  // measurement switch (default on)
  prm.lazy = lazy != nullptr && lazy[0] == '0' ? 0 : 1;
  // The producer's back-off (measurement switch SPARGE_SM90_BACKOFF: 0 off, 1 or unset the default, n > 1 n
  // ns).
  constexpr unsigned kDefaultBackoffNs = 128;
  const char* backoff = std::getenv("SPARGE_SM90_BACKOFF");
  const long ns = backoff == nullptr ? 1 : std::strtol(backoff, nullptr, 10);
  prm.producer_sleep_ns = ns <= 0   ? 0u
                          : ns == 1 ? kDefaultBackoffNs
                                    : static_cast<unsigned>(std::min(ns, 100000L));
  cudaError_t err = sm90::make_map(&prm.q_map, p.q, qk, kHeadDim, p.seq_q, p.heads_q, p.batch, p.q_row_stride,
                                   p.q_head_stride, p.q_batch_stride, Cfg::kQkSliceElems, Cfg::kBlockM);
  if (err == cudaSuccess)
    err = sm90::make_map(&prm.k_map, p.k, qk, kHeadDim, p.seq_k, p.heads_kv, p.batch, p.k_row_stride,
                         p.k_head_stride, p.k_batch_stride, Cfg::kQkSliceElems, Cfg::kBlockN);
  if (err == cudaSuccess) {
    if constexpr (Cfg::kFp8Pv) {  // V^T (B, Hkv, D, NKB * 64): boxes of 64 keys x D rows
      err = sm90::make_map(&prm.v_map, p.v, MapElement::kFp8,
                           static_cast<int64_t>(p.num_k_blocks) * Cfg::kBlockN, kHeadDim, p.heads_kv, p.batch,
                           p.v_row_stride, p.v_head_stride, p.v_batch_stride, Cfg::kBlockN, kHeadDim);
    } else {
      err = sm90::make_map(&prm.v_map, p.v, wide, kHeadDim, p.seq_k, p.heads_kv, p.batch, p.v_row_stride,
                           p.v_head_stride, p.v_batch_stride, 64, Cfg::kBlockN);
    }
  }
  if (err == cudaSuccess)
    err = sm90::make_map(&prm.o_map, p.o, wide, kHeadDim, p.seq_q, p.heads_q, p.batch, p.o_row_stride,
                         p.o_head_stride, p.o_batch_stride, 64, 64);
  if (err != cudaSuccess) return err;
  constexpr auto kCta = Stage2Granularity::kCta, kWarp = Stage2Granularity::kWarp;
  const bool cta = p.stage2_granularity == kCta, stage2 = p.pvthreshd != nullptr;
  const auto kernel =
      cta ? (stage2 ? &sm90_block_sparse_attention_kernel<kDtype, kHeadDim, kQk, kCta, true>
                    : &sm90_block_sparse_attention_kernel<kDtype, kHeadDim, kQk, kCta, false>)
          : (stage2 ? &sm90_block_sparse_attention_kernel<kDtype, kHeadDim, kQk, kWarp, true>
                    : &sm90_block_sparse_attention_kernel<kDtype, kHeadDim, kQk, kWarp, false>);
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  // With a tile order: a programmatic dependent launch, overlapping the order kernel just before it (which
  // starts its dependents at once; the kernel waits for it before its first load).
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(p.num_q_blocks, p.heads_q, p.batch);
  config.blockDim = dim3(Cfg::kThreads);
  config.dynamicSmemBytes = Cfg::kSmemBytes;
  config.stream = stream;
  cudaLaunchAttribute overlap{};
  overlap.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap.val.programmaticStreamSerializationAllowed = 1;
  if (p.tile_order != nullptr) {
    config.attrs = &overlap;
    config.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&config, kernel, prm);
}

}  // namespace sparge::cuda
