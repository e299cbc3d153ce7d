// The launcher of the stage-1 statistics kernel (predict_kernels.cuh), instantiated per dtype in
// predict_<dtype>.cu.
#pragma once

#include <atomic>
#include <cstdlib>

#include "predict_kernels.cuh"

namespace sparge::cuda::predict {

// SMs x resident CTAs of kKernel at kThreads threads, queried once per device (the query costs more than the
// launch).
template <auto kKernel, int kThreads>
cudaError_t persistent_grid(int* grid) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  *grid = device < kMaxDevices ? cache[device].load(std::memory_order_relaxed) : 0;
  if (*grid != 0) return cudaSuccess;
  int sms = 0, per_sm = 0;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return e;
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kKernel, kThreads, 0);
  if (e != cudaSuccess) return e;
  *grid = sms * (per_sm < 1 ? 1 : per_sm);
  if (device < kMaxDevices) cache[device].store(*grid, std::memory_order_relaxed);
  return cudaSuccess;
}

// The launcher: lookahead and item count, then a persistent grid of min(items, SMs x resident CTAs).
template <DType kDtype, int kD, bool kUnit, bool kQuant>
cudaError_t launch_stats_variant(StatsParams p, cudaStream_t stream) {
  const int groups = p.batch * p.k.heads;
  p.num_items = 2 * groups * p.k.num_blocks + p.batch * p.q.heads * p.q.num_blocks;
  p.k_blocks_div = FastDiv(p.k.num_blocks);
  p.k_heads_div = FastDiv(p.k.heads);
  p.q_blocks_div = FastDiv(p.q.num_blocks);
  p.q_heads_div = FastDiv(p.q.heads);

  int grid = 0;
  const cudaError_t e = persistent_grid<stats_kernel<kDtype, kD, kUnit, kQuant>, kStatsThreads>(&grid);
  if (e != cudaSuccess) return e;
  // Lookahead (see kInFlightItemsPerCta): the least L with L NKB >= the items held at once, within [1,
  // groups] (SPARGE_STATS_LOOKAHEAD=L overrides it: a measurement switch).
  const int64_t nkb = p.k.num_blocks, in_flight = int64_t{kInFlightItemsPerCta} * grid;
  int64_t ahead = (in_flight + nkb - 1) / nkb;
  if (const char* env = std::getenv("SPARGE_STATS_LOOKAHEAD"); env != nullptr && std::atoi(env) > 0)
    ahead = std::atoi(env);
  p.lookahead = static_cast<int>(ahead < 1 ? 1 : ahead > groups ? groups : ahead);
  if (grid > p.num_items) grid = p.num_items;
  stats_kernel<kDtype, kD, kUnit, kQuant><<<grid, kStatsThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

// The variant of the outputs requested, the same for Q and K: similarities (prediction), INT8 values
// (quantization), or both. (Neither is not a use of this kernel: cudaErrorInvalidValue.)
template <DType kDtype, int kD>
cudaError_t launch_stats_kernel(const StatsParams& p, cudaStream_t stream) {
  const bool unit = p.q.similarity != nullptr, quant = p.q.quant != nullptr;
  if (unit != (p.k.similarity != nullptr) || quant != (p.k.quant != nullptr) || !(unit || quant))
    return cudaErrorInvalidValue;
  if (unit) {
    return quant ? launch_stats_variant<kDtype, kD, true, true>(p, stream)
                 : launch_stats_variant<kDtype, kD, true, false>(p, stream);
  }
  return launch_stats_variant<kDtype, kD, false, true>(p, stream);
}

}  // namespace sparge::cuda::predict
