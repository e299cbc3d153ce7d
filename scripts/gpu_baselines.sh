#!/usr/bin/env bash
# The baselines on a GPU machine (no network needed): builds sparge and the baseline tests into build-gpu/, runs
# the tests (each has a CUDA-vs-CPU case that runs only here) and the GPU specs.
#
#   scripts/gpu_baselines.sh OUTDIR [SPEC...]      SPECs default to experiments/baselines_speed.yaml
#   SPARGE_GPU_BASELINES_BUILD_ONLY=1             only build
# OUTDIR gets env.txt, build.log, tests.log and one <spec name>.tgz per spec (its results directory).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

out="${1:?usage: scripts/gpu_baselines.sh OUTDIR [SPEC...]}"
shift
specs=("$@")
((${#specs[@]})) || specs=(experiments/baselines_speed.yaml)
py="$(gpu_env "$out")" || exit 1

status=0
tests=(test_cuda_minference test_xattention test_flexprefill test_minference test_block_mask)
gpu_build "$out" "$py" sparge "${tests[@]}" || exit 1
[[ "${SPARGE_GPU_BASELINES_BUILD_ONLY:-0}" == 1 ]] && exit 0
gpu_run_tests "$out" tests.log "${tests[@]}" || status=1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |Cuda" "$out/tests.log"
for spec in "${specs[@]}"; do
  gpu_run_spec "$out" "$spec" || status=1
done
exit "$status"
