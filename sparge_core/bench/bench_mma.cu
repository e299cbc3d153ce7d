// Peak throughput of the warp-level instructions the mma.sync attention kernel is built from, on this GPU:
// mma.sync m16n8k16 bf16 and fp16 (float accumulators), m16n8k32 s8 (int32) and e4m3 (float, sm_89+), and the
// MUFU ex2 (one per attention score). Each warp issues kChains independent MMAs per iteration (latency
// hidden), enough CTAs to fill every SM; dense TFLOPS (TOPS) = 2 m n k x MMAs / time. It tells what each
// precision of the kernel can gain at most: e.g. whether the FP8 P V of QuantMode::kInt8Fp8 is faster than
// 16-bit P V here.
//   bench_mma [--json PATH]
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

constexpr int kChains = 8;
constexpr int kIters = 4096;
constexpr int kThreads = 256;

enum class Kind { kBf16, kFp16, kS8, kE4m3, kEx2 };

template <Kind kKind>
__device__ __forceinline__ void step(float (&d)[kChains][4], int (&di)[kChains][4], const uint32_t (&a)[4],
                                     uint32_t b0, uint32_t b1) {
#pragma unroll
  for (int c = 0; c < kChains; ++c) {
    if constexpr (kKind == Kind::kBf16) {
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+f"(d[c][0]), "+f"(d[c][1]), "+f"(d[c][2]), "+f"(d[c][3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else if constexpr (kKind == Kind::kFp16) {
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+f"(d[c][0]), "+f"(d[c][1]), "+f"(d[c][2]), "+f"(d[c][3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else if constexpr (kKind == Kind::kS8) {
      asm volatile(
          "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+r"(di[c][0]), "+r"(di[c][1]), "+r"(di[c][2]), "+r"(di[c][3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else if constexpr (kKind == Kind::kE4m3) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
      asm volatile(
          "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+f"(d[c][0]), "+f"(d[c][1]), "+f"(d[c][2]), "+f"(d[c][3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
      __trap();
#endif
    } else {  // ex2: 4 per chain, dependent on the previous value (kChains x 4 independent streams)
#pragma unroll
      for (int i = 0; i < 4; ++i) asm volatile("ex2.approx.ftz.f32 %0, %0;\n" : "+f"(d[c][i]));
    }
  }
}

template <Kind kKind>
__global__ void __launch_bounds__(kThreads) throughput_kernel(float* sink, int flag) {
  float d[kChains][4];
  int di[kChains][4];
#pragma unroll
  for (int c = 0; c < kChains; ++c)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      d[c][i] = kKind == Kind::kEx2 ? -1.f / (1 + c + i + threadIdx.x % 7) : 0.f;
      di[c][i] = 0;
    }
  const uint32_t a[4] = {threadIdx.x * 0x01010101u, threadIdx.x ^ 0x3c3c3c3cu, threadIdx.x + 7u, 0x11223344u};
  const uint32_t b0 = threadIdx.x * 3u, b1 = threadIdx.x * 5u;
  for (int it = 0; it < kIters; ++it) step<kKind>(d, di, a, b0, b1);
  float acc = 0.f;
#pragma unroll
  for (int c = 0; c < kChains; ++c)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc += d[c][i] + static_cast<float>(di[c][i]);
  if (flag) sink[blockIdx.x * kThreads + threadIdx.x] = acc;  // never true: keeps the work alive
}

template <Kind kKind>
double measure_ms(int blocks, float* sink) {
  throughput_kernel<kKind><<<blocks, kThreads>>>(sink, 0);  // warm-up
  cudaEvent_t t0, t1;
  cudaEventCreate(&t0);
  cudaEventCreate(&t1);
  float best = 1e30f;
  for (int rep = 0; rep < 5; ++rep) {
    cudaEventRecord(t0);
    throughput_kernel<kKind><<<blocks, kThreads>>>(sink, 0);
    cudaEventRecord(t1);
    cudaEventSynchronize(t1);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, t0, t1);
    best = ms < best ? ms : best;
  }
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
  int dev = 0, sms = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    std::fprintf(stderr, "bench_mma: no CUDA device\n");
    return 1;
  }
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  const int blocks = sms * 4;
  float* sink = nullptr;
  cudaMalloc(&sink, sizeof(float) * blocks * kThreads);
  const double warps = static_cast<double>(blocks) * kThreads / 32;
  const double per_warp = static_cast<double>(kIters) * kChains;  // instructions (ex2: x 4 per lane)
  struct Row {
    const char* name;
    double ms, ops_per_instr;
  };
  std::vector<Row> rows = {
      {"mma_m16n8k16_bf16", measure_ms<Kind::kBf16>(blocks, sink), 2.0 * 16 * 8 * 16},
      {"mma_m16n8k16_fp16", measure_ms<Kind::kFp16>(blocks, sink), 2.0 * 16 * 8 * 16},
      {"mma_m16n8k32_s8", measure_ms<Kind::kS8>(blocks, sink), 2.0 * 16 * 8 * 32},
  };
  if (major * 10 + minor >= 89)
    rows.push_back({"mma_m16n8k32_e4m3", measure_ms<Kind::kE4m3>(blocks, sink), 2.0 * 16 * 8 * 32});
  rows.push_back({"ex2_approx (per lane)", measure_ms<Kind::kEx2>(blocks, sink), 4.0 * 32});
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) {
    std::fprintf(stderr, "bench_mma: %s\n", cudaGetErrorString(err));
    return 1;
  }
  std::printf("%-24s %10s %12s\n", "instruction", "ms", "T(FL)OPS");
  std::string json = "[\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const double rate = warps * per_warp * rows[i].ops_per_instr / (rows[i].ms * 1e-3) / 1e12;
    std::printf("%-24s %10.3f %12.1f\n", rows[i].name, rows[i].ms, rate);
    char buf[256];
    std::snprintf(buf, sizeof buf, "  {\"instruction\": \"%s\", \"ms\": %.4f, \"tera_ops_per_s\": %.2f}%s\n",
                  rows[i].name, rows[i].ms, rate, i + 1 < rows.size() ? "," : "");
    json += buf;
  }
  json += "]\n";
  if (!json_path.empty()) std::ofstream(json_path) << json;
  cudaFree(sink);
  return 0;
}
