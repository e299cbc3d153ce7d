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
mkdir -p "$out"
py="$(gpu_machine_python)" || { log "no Python with torch found (expected /opt/torch/.venv)"; exit 1; }
{ nvidia-smi; "$py" -c 'import torch, transformers; print("torch", torch.__version__, torch.cuda.get_device_name(0));
print("transformers", transformers.__version__)'; nvcc --version; } > "$out/env.txt" 2>&1

status=0
gpu_build "$out" "$py" sparge test_llama test_gguf test_tokenizer || exit 1
[[ "${SPARGE_GPU_MODELS_BUILD_ONLY:-0}" == 1 ]] && exit 0

t0=$SECONDS
for t in test_llama test_gguf test_tokenizer; do
  echo "===== $t" >> "$out/parity.log"
  "build-gpu/bin/$t" >> "$out/parity.log" 2>&1 || { status=1; log "$t FAILED"; }
done
log "parity tests: $((SECONDS - t0)) s"
grep -E "max \|ours|FAILED|PASSED" "$out/parity.log"

for spec in "${specs[@]}"; do
  name="$(basename "$spec" .yaml)"
  t0=$SECONDS
  # shellcheck disable=SC2086
  build-gpu/bin/sparge run "$spec" --no-progress --output "$out/$name" ${SPARGE_RUN_ARGS:-} > "$out/$name.log" 2>&1 || { status=1; log "$spec FAILED"; tail -5 "$out/$name.log"; }
  mv "$out/$name.log" "$out/$name/run.log" 2>/dev/null
  log "$spec: $((SECONDS - t0)) s"
  cat "$out/$name/results.md" 2>/dev/null
  tar -czf "$out/$name.tgz" -C "$out" "$name" && rm -rf "${out:?}/$name"
done
exit "$status"
