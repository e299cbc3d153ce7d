#!/usr/bin/env bash
# Same-machine A/B of the attention op between this source tree and another one (e.g. the previous commit), on a
# GPU machine, one call: builds `sparge_ops` (plus any extra targets, e.g. test_cuda_attention, which then runs)
# in both trees, then times both libraries in alternating processes, each call interleaved with cuDNN SDPA in the
# same process (scripts/profile_kernel.py --vs-cudnn: 15 rounds of 5 calls, medians; the ratio to cuDNN cancels
# clock drift between processes).
#
#   scripts/gpu_ab_trees.sh OUTDIR BASE_TREE [TARGET...]
#     BASE_TREE   another checkout of this project, e.g. made here by
#                 `git archive main | tar -x -C .ab/base` and carried to the GPU machine with the call
#     TARGET      extra build targets of this tree; test_cuda_attention is run when given
#   SPARGE_AB_CONFIGS  profile_kernel.py arguments per configuration, |-separated (default: bf16 and INT8 + FP8
#                      dense, both at density 0.1, bf16 causal; D 128, N 32K)
#   SPARGE_AB_ROUNDS   repetitions of the table (default 2)
# OUTDIR gets env.txt, build.log, base/build.log, tests.log (when tested) and ab.log ("new" = this tree).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# shellcheck source=scripts/common.sh
source scripts/common.sh

out="${1:?usage: scripts/gpu_ab_trees.sh OUTDIR BASE_TREE [TARGET...]}"
base="${2:?usage: scripts/gpu_ab_trees.sh OUTDIR BASE_TREE [TARGET...]}"
shift 2
[[ -f "$base/CMakeLists.txt" ]] || { log "BASE_TREE: expected a source tree of this project, got '$base'"; exit 2; }
IFS='|' read -r -a configs <<< "${SPARGE_AB_CONFIGS:---quant none|--quant int8_fp8|--quant none --density 0.1|--quant int8_fp8 --density 0.1|--quant none --causal}"
py="$(gpu_env "$out")" || exit 1
gpu_build "$out" "$py" sparge_ops "$@" || exit 1
mkdir -p "$out/base"
base_out="$(cd "$out/base" && pwd)"
(cd "$base" && gpu_build "$base_out" "$py" sparge_ops) || { log "BASE_TREE build FAILED"; exit 1; }
status=0
for t in "$@"; do
  if [[ "$t" == test_cuda_attention ]]; then
    gpu_run_tests "$out" tests.log test_cuda_attention || status=1
    grep -E "^\[  (PASSED|FAILED)" "$out/tests.log"
  fi
done
for ((round = 0; round < ${SPARGE_AB_ROUNDS:-2}; ++round)); do
  for cfg in "${configs[@]}"; do
    for tag in new base; do
      lib=build-gpu/lib/libsparge_ops.so
      [[ $tag == base ]] && lib="$base/build-gpu/lib/libsparge_ops.so"
      # shellcheck disable=SC2086  # cfg is a list of arguments
      echo "$tag | $("$py" scripts/profile_kernel.py --lib "$lib" --reps 5 --vs-cudnn $cfg 2>&1 | tail -1)"
    done
  done
done | tee "$out/ab.log"
exit "$status"
