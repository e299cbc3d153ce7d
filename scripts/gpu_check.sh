#!/usr/bin/env bash
# GPU check (run on a GPU machine; no network needed): Release build for the local GPU's architecture into
# build-gpu/, the GPU tests (ctest -L gpu), the CPU tests (ctest -L core), then the benchmarks: the kernel vs SDPA
# (bench_cuda_attention), the mma.sync peak per precision (bench_mma), the prediction overhead (bench_predict),
# ours vs FlexAttention with the same masks
# (bench_flex.py through the torch ops), and the summary of ratios (kernel_summary.py).
#
#   scripts/gpu_check.sh OUTDIR        results go to OUTDIR: env.txt env.json bench.json predict.json flex.json
#                                      summary.json summary.md, and every log in logs.tgz (8 files)
#   SPARGE_GPU_CHECK_BENCH=0           skip the benchmarks;  SPARGE_GPU_CHECK_CORE=0  skip the CPU tests
#   SPARGE_GPU_CHECK_SHAPES=0          skip bench_cuda_attention and bench_mma (the shape table and the mma.sync
#                                      peaks; the summary's ratios come from bench_flex and bench_predict)
#   SPARGE_CUDA_ARCH=90                override the architecture
#
# Exit status: non-zero if the build or any test failed. Prints a short summary last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

out="${1:?usage: scripts/gpu_check.sh OUTDIR}"
py="$(gpu_env "$out")" || exit 1
cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')"
cc="${cc:-9.0}"
arch="${SPARGE_CUDA_ARCH:-${cc/./}}"
jobs="$(nproc)"
log "GPU compute capability $cc -> building sm_$arch with $jobs jobs"

status=0
t0=$SECONDS
if ! cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPARGE_PYTHON="$py" \
       -DCMAKE_CUDA_ARCHITECTURES="$arch" -DTORCH_CUDA_ARCH_LIST="$cc" > "$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  log "configure FAILED (log: $out/build.log)"
  exit 1
fi
# Keep going past a failing target (the tree is shared: one broken target must not hide the others' results).
if ! cmake --build build-gpu -j "$jobs" -- -k 0 >> "$out/build.log" 2>&1; then
  status=1
  log "build FAILED for some targets (log: $out/build.log):"
  grep -E "^FAILED:" "$out/build.log" | head -10
fi
log "build: $((SECONDS - t0)) s"
grep -h "spill" "$out/build.log" | sort -u | head -8

t0=$SECONDS
ctest --test-dir build-gpu -L gpu -V --timeout 500 > "$out/ctest_gpu.log" 2>&1 || status=1
log "ctest -L gpu: $((SECONDS - t0)) s"
# compute-sanitizer memcheck and racecheck on small cases of both kernels.
if command -v compute-sanitizer > /dev/null; then
  t0=$SECONDS
  small_attn='CudaAttention.StridedAndMisalignedInputs:CudaAttention.EmptyRowsWriteZerosAndMinusInfinity'
  small_pred='Shapes/CudaPredict.MatchesTheReference/3:Shapes/CudaPredict.MatchesTheReference/2'
  for tool in memcheck racecheck; do
    for t in "test_cuda_attention:$small_attn" "test_cuda_predict:$small_pred"; do
      compute-sanitizer --tool "$tool" --error-exitcode 1 "build-gpu/bin/${t%%:*}" --gtest_filter="${t#*:}" \
        >> "$out/sanitizer.log" 2>&1 || { status=1; log "compute-sanitizer $tool FAILED on ${t%%:*}"; }
    done
  done
  log "compute-sanitizer: $((SECONDS - t0)) s"
fi
if [[ "${SPARGE_GPU_CHECK_CORE:-1}" != 0 ]]; then
  t0=$SECONDS
  ctest --test-dir build-gpu -L core -j "$jobs" --output-on-failure --timeout 300 > "$out/ctest_core.log" 2>&1 || status=1
  log "ctest -L core: $((SECONDS - t0)) s"
fi

if [[ "${SPARGE_GPU_CHECK_BENCH:-1}" != 0 ]]; then
  if [[ "${SPARGE_GPU_CHECK_SHAPES:-1}" != 0 ]]; then
    build-gpu/bin/bench_mma --json "$out/mma.json" > "$out/bench_mma.log" 2>&1 || status=1
    t0=$SECONDS
    build-gpu/bin/bench_cuda_attention --json "$out/bench.json" > "$out/bench.log" 2>&1 || status=1
    log "benchmark: $((SECONDS - t0)) s"
  fi
  t0=$SECONDS
  build-gpu/bin/bench_predict --json "$out/predict.json" > "$out/bench_predict.log" 2>&1 || status=1
  log "prediction benchmark: $((SECONDS - t0)) s"
  t0=$SECONDS
  PYTHONUNBUFFERED=1 "$py" scripts/bench_flex.py --lib build-gpu/lib/libsparge_ops.so --json "$out/flex.json" \
    > "$out/bench_flex.log" 2>&1 || status=1
  log "FlexAttention comparison: $((SECONDS - t0)) s"
  SPARGE_PYTHON="$py" scripts/provenance.sh > "$out/env.json" 2>/dev/null
  "$py" scripts/kernel_summary.py "$out" > "$out/summary.log" 2>&1 || status=1
fi

echo "==== GPU test failures (full per-case lines in $out/ctest_gpu.log) ===="
grep -E -A3 "Failure$" "$out/ctest_gpu.log" | head -40
echo "==== ctest -L gpu ===="
grep -E "tests passed|tests failed|Failed|\*\*\*|Passed|Not Run|Skipped" "$out/ctest_gpu.log" | tail -12
echo "==== compute-sanitizer ===="
grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$out/sanitizer.log" 2>/dev/null
echo "==== ctest -L core ===="
grep -E "tests passed|tests failed|Failed|\*\*\*" "$out/ctest_core.log" | tail -8
if [[ -f "$out/bench.log" ]]; then
  echo "==== benchmark (ms, dense-equivalent TFLOPS) ===="
  grep -E "^(validate|VALID)" "$out/bench.log" | awk '{printf "%s %s %s %s %s; ", $2, $3, $4, $5, $NF} END {print ""}'
  grep -E "^(sparge|cudnn|flash)" "$out/bench.log" | awk '{printf "%-7s %-6s %-8s %-7s dens %-5s %9s ms %8s TFLOPS (block %s)\n", $1, $2, $3, $4, $6, $9, $11, $14}' 
fi
if [[ -f "$out/summary.md" ]]; then echo "==== summary ===="; cat "$out/summary.md"; fi
for f in bench_mma.log bench_predict.log bench_flex.log summary.log; do
  [[ -f "$out/$f" ]] && { echo "==== $f (tail) ===="; tail -12 "$out/$f"; }
done
# At most 8 files come back from the GPU machine: the logs (and mma.json, embedded in summary.json) travel as one
# archive.
(cd "$out" && tar czf logs.tgz -- *.log $(ls mma.json 2>/dev/null) && rm -f -- *.log mma.json)
exit "$status"
