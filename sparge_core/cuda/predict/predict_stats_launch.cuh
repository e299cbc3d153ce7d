// The launcher of the stage-1 statistics kernel (predict_kernels.cuh), instantiated per dtype in
// predict_<dtype>.cu.
#pragma once

#include <atomic>
#include <cstdlib>

#include "predict_kernels.cuh"
#include "predict_launch.h"

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
  // Two K blocks per K item where both fit one chunk and the second starts at a multiple of 16 rows (the
  // legacy row -> warp mapping): half the per-item work (decoding, barriers, epilogue setup) of K. Only
  // without INT8 values: same-machine A/B on an H100 (bench_predict, 2 rounds,
  // results/kernels/h100/k_pairs_ab): prediction 3-5% faster (4-7% from a CUDA graph), the INT8 variants 2-6%
  // slower (two quantizing epilogues per item, and ptxas spills in the fused variant).
  // SPARGE_STATS_K_PAIRS=0: one block per K item, =1: pairs for every variant (measurement switches).
  const char* pairs_env = std::getenv("SPARGE_STATS_K_PAIRS");
  const bool pairs_on = pairs_env == nullptr ? !kQuant : pairs_env[0] != '0';
  const int pair =
      pairs_on && p.k.block % (kStatsWarps * kRowsPerStep) == 0 && 2 * p.k.block <= kChunkRows ? 2 : 1;
  p.k_item_blocks = pair;
  p.k_items = (p.k.num_blocks + pair - 1) / pair;
  p.num_items = 2 * groups * p.k_items + p.batch * p.q.heads * p.q.num_blocks;
  p.k_items_div = FastDiv(p.k_items);
  p.k_heads_div = FastDiv(p.k.heads);
  p.q_blocks_div = FastDiv(p.q.num_blocks);
  p.q_heads_div = FastDiv(p.q.heads);

  int grid = 0;
  const cudaError_t e = persistent_grid<stats_kernel<kDtype, kD, kUnit, kQuant>, kStatsThreads>(&grid);
  if (e != cudaSuccess) return e;
  // Lookahead (see kInFlightItemsPerCta): the least L with L x (K items per group) >= the items held at once,
  // within [1, groups] (SPARGE_STATS_LOOKAHEAD=L overrides it: a measurement switch).
  const int64_t nki = p.k_items, in_flight = int64_t{kInFlightItemsPerCta} * grid;
  int64_t ahead = (in_flight + nki - 1) / nki;
  if (const char* env = std::getenv("SPARGE_STATS_LOOKAHEAD"); env != nullptr && std::atoi(env) > 0)
    ahead = std::atoi(env);
  p.lookahead = static_cast<int>(ahead < 1 ? 1 : ahead > groups ? groups : ahead);
  if (grid > p.num_items) grid = p.num_items;
  const cudaError_t zeroed =
      cudaMemsetAsync(p.counters, 0, stats_counter_count(int64_t{p.batch} * p.k.heads) * sizeof(int), stream);
  if (zeroed != cudaSuccess) return zeroed;
  stats_kernel<kDtype, kD, kUnit, kQuant><<<grid, kStatsThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

// The prediction's statistics as plain passes (stats_pass_kernel): the K block sums and mean
// (launch_k_mean), then one CTA per block.
template <DType kDtype, int kD, bool kQuant>
cudaError_t launch_stats_passes(const StatsParams& p, cudaStream_t stream) {
  const cudaError_t e = launch_k_mean(p.k, kDtype, p.batch, kD, p.k_sums, p.k_mean, stream);
  if (e != cudaSuccess) return e;
  const int64_t k_items = int64_t{p.batch} * p.k.heads * p.k.num_blocks;
  const int64_t q_items = int64_t{p.batch} * p.q.heads * p.q.num_blocks;
  stats_pass_kernel<kDtype, kD, kQuant>
      <<<static_cast<unsigned>(k_items + q_items), kStatsThreads, 0, stream>>>(p, k_items);
  return cudaGetLastError();
}

// The variant of the outputs requested, the same for Q and K: similarities (prediction), INT8 values
// (quantization), or both. (Neither is not a use of this kernel: cudaErrorInvalidValue.) With similarities
// (the prediction) the plain passes run by default: the same bits, 12-14% faster than the persistent kernel
// at N = 8K-32K on an H100 (results/kernels/h100/int8_passes_ab); SPARGE_STATS_PASSES=0 (a measurement
// switch, read at every call) runs the persistent kernel.
template <DType kDtype, int kD>
cudaError_t launch_stats_kernel(const StatsParams& p, cudaStream_t stream) {
  const bool unit = p.q.similarity != nullptr, quant = p.q.quant != nullptr;
  if (unit != (p.k.similarity != nullptr) || quant != (p.k.quant != nullptr) || !(unit || quant))
    return cudaErrorInvalidValue;
  const char* passes = std::getenv("SPARGE_STATS_PASSES");
  if (unit && (passes == nullptr || passes[0] != '0')) {
    return quant ? launch_stats_passes<kDtype, kD, true>(p, stream)
                 : launch_stats_passes<kDtype, kD, false>(p, stream);
  }
  if (unit) {
    return quant ? launch_stats_variant<kDtype, kD, true, true>(p, stream)
                 : launch_stats_variant<kDtype, kD, true, false>(p, stream);
  }
  return launch_stats_variant<kDtype, kD, false, true>(p, stream);
}

}  // namespace sparge::cuda::predict
