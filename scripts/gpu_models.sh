#!/usr/bin/env bash
# The model port and the language-model experiments on a GPU machine (no network needed): Release build for the
# local GPU into build-gpu/ (the targets the model runs need), the parity tests against transformers (test_llama:
# tiny random checkpoints and the SmolLM2 GGUF, on the CPU and on the GPU; test_gguf; test_tokenizer), then
# experiment specs through the runner.
#
#   scripts/gpu_models.sh OUTDIR [SPEC...]   SPECs default to experiments/table1_smollm2_gpu.yaml
#   SPARGE_GPU_MODELS_BUILD_ONLY=1           only build
#   SPARGE_RUN_ARGS="--set model.dtype=bfloat16"   extra arguments for every `sparge run`
# OUTDIR gets env.txt, parity.log (every test's output, with the per-model logit differences) and one
# <spec name>.tgz per spec (its results directory). The oracles need transformers, accelerate and gguf importable
# by the machine's Python (PYTHONPATH may point at unpacked wheels). Needs data/models/SmolLM2-135M-Instruct.Q4_1.gguf
# (scripts/setup.sh puts it there).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

out="${1:?usage: scripts/gpu_models.sh OUTDIR [SPEC...]}"
shift
specs=("$@")
((${#specs[@]})) || specs=(experiments/table1_smollm2_gpu.yaml)
py="$(gpu_env "$out")" || exit 1

status=0
gpu_build "$out" "$py" sparge test_llama test_gguf test_tokenizer || exit 1
[[ "${SPARGE_GPU_MODELS_BUILD_ONLY:-0}" == 1 ]] && exit 0

gpu_run_tests "$out" parity.log test_llama test_gguf test_tokenizer || status=1
grep -E "max \|ours|FAILED|PASSED" "$out/parity.log"

for spec in "${specs[@]}"; do
  # shellcheck disable=SC2086
  gpu_run_spec "$out" "$spec" ${SPARGE_RUN_ARGS:-} || status=1
done
exit "$status"
