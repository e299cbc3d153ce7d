#!/usr/bin/env bash
# Stage-1 prediction on a GPU machine, one call: builds the prediction test and benchmark into build-gpu/, runs
# the GPU prediction tests (bit-exactness against the first GPU predictor included), the prediction-overhead
# benchmark (bench_predict, the default statistics kernels), the same with the measurement switches
# (SPARGE_STATS_KERNEL=cta: the CTA kernel for the prediction variant too; SPARGE_STATS_LOOKAHEAD=L for each
# L given), and, where cuobjdump is installed, the SASS of the bf16 D = 128 warp statistics kernel.
#
#   scripts/gpu_predict.sh OUTDIR [LOOKAHEAD...]
# OUTDIR gets env.txt, build.log, tests.log, predict.json (+ .log), predict_cta.json, predict_l<L>.json and
# warp_stats_bf16_d128.sass.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

out="${1:?usage: scripts/gpu_predict.sh OUTDIR [LOOKAHEAD...]}"
shift
py="$(gpu_env "$out")" || exit 1
gpu_build "$out" "$py" test_cuda_predict bench_predict || exit 1
status=0
gpu_run_tests "$out" tests.log test_cuda_predict || status=1
grep -E "^\[  (PASSED|FAILED) |tests? ran" "$out/tests.log"
build-gpu/bin/bench_predict --json "$out/predict.json" > "$out/predict.log" 2>&1 || status=1
cat "$out/predict.log"
log "SPARGE_STATS_KERNEL=cta"
SPARGE_STATS_KERNEL=cta build-gpu/bin/bench_predict --quick --json "$out/predict_cta.json" 2>&1 || status=1
for l in "$@"; do
  log "SPARGE_STATS_LOOKAHEAD=$l"
  SPARGE_STATS_LOOKAHEAD="$l" build-gpu/bin/bench_predict --quick --json "$out/predict_l$l.json" 2>&1 || status=1
done
objdump_bin="$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)"
obj=build-gpu/sparge_core/cuda/predict/CMakeFiles/sparge_cuda_predict_kernels.dir/predict_bf16.cu.o
if [[ -x "$objdump_bin" && -f "$obj" ]]; then
  # The SASS of the bf16 D = 128 warp statistics kernel (where its spill stores and loads, STL / LDL, sit).
  "$objdump_bin" -sass -fun '_ZN6sparge4cuda7predict17warp_stats_kernelILNS0_5DTypeE1ELi128EEEvNS0_11StatsParamsE' \
    "$obj" > "$out/warp_stats_bf16_d128.sass" 2>&1
  log "spill instructions in it: $(grep -c 'STL\|LDL' "$out/warp_stats_bf16_d128.sass")"
fi
exit "$status"
