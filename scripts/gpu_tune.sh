#!/usr/bin/env bash
# The tuner on a GPU machine (no network needed): builds sparge and the tuner tests into build-gpu/, runs them
# (test_tuned's GPU case: CUDA-kernel passes against reference passes), tunes the GPU specs (SmolLM2 at 8K in
# bf16 at two bounds, one CogVideoX-2b-shaped layer), then runs experiment specs that load the files.
#
#   scripts/gpu_tune.sh OUTDIR [TUNE_SPEC...] [-- RUN_SPEC...]
#     TUNE_SPECs default to tune_smollm2_gpu, tune_smollm2_gpu_l005, tune_cogvideox_layer; RUN_SPECs to
#     tuned_vs_fixed_gpu and table1_smollm2_gpu (experiments/*.yaml)
#   SPARGE_GPU_TUNE_BUILD_ONLY=1   only build
# OUTDIR gets env.txt, tests.log, tune.log (the per-layer lines and totals), the tuned files (*.json, also
# written to each spec's output path so the run specs find them) and one <spec name>.tgz per run spec.
# Needs data/models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/setup.sh puts it there).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

out="${1:?usage: scripts/gpu_tune.sh OUTDIR [TUNE_SPEC...] [-- RUN_SPEC...]}"
shift
tune_specs=()
run_specs=()
seen_sep=0
for a in "$@"; do
  if [[ "$a" == "--" ]]; then seen_sep=1; elif ((seen_sep)); then run_specs+=("$a"); else tune_specs+=("$a"); fi
done
((${#tune_specs[@]})) || tune_specs=(experiments/tune_smollm2_gpu.yaml experiments/tune_smollm2_gpu_l005.yaml
                                     experiments/tune_cogvideox_layer.yaml)
((seen_sep)) || run_specs=(experiments/tuned_vs_fixed_gpu.yaml experiments/table1_smollm2_gpu.yaml)
py="$(gpu_env "$out")" || exit 1

status=0
gpu_build "$out" "$py" sparge test_tuned test_tune || exit 1
[[ "${SPARGE_GPU_TUNE_BUILD_ONLY:-0}" == 1 ]] && exit 0

gpu_run_tests "$out" tests.log test_tuned test_tune || status=1
grep -E "^\[  (PASSED|FAILED) |GPU|cuda" "$out/tests.log"

for spec in "${tune_specs[@]}"; do
  t0=$SECONDS
  echo "===== $spec" >> "$out/tune.log"
  # --restart: a file committed from another machine or revision is retuned, not resumed.
  if build-gpu/bin/sparge tune "$spec" --restart >> "$out/tune.log" 2>&1; then
    file="$(tail -1 "$out/tune.log" | sed -n 's/.* -> //p')"
    [[ -n "$file" ]] && cp "$file" "$out/"
  else
    status=1
    log "$spec FAILED"
  fi
  log "$spec: $((SECONDS - t0)) s"
  tail -1 "$out/tune.log"
done

for spec in "${run_specs[@]}"; do
  gpu_run_spec "$out" "$spec" || status=1
done
exit "$status"
