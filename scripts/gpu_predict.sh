#!/usr/bin/env bash
# Stage-1 prediction on a GPU machine, one call: builds the prediction test and benchmark into build-gpu/, runs
# the GPU prediction tests (bit-exactness against the first GPU predictor included), the prediction-overhead
# benchmark (bench_predict), and the same with the K-sum lookahead forced (SPARGE_STATS_LOOKAHEAD=L, a
# measurement switch) for each L given.
#
#   scripts/gpu_predict.sh OUTDIR [LOOKAHEAD...]
# OUTDIR gets env.txt, build.log, tests.log, predict.json, predict.log and predict_l<L>.json.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
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
for l in "$@"; do
  log "SPARGE_STATS_LOOKAHEAD=$l"
  SPARGE_STATS_LOOKAHEAD="$l" build-gpu/bin/bench_predict --quick --json "$out/predict_l$l.json" 2>&1 || status=1
done
exit "$status"
