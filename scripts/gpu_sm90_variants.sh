#!/usr/bin/env bash
# Compile-time variants of the Hopper kernel timed against cuDNN SDPA on a GPU machine, one call: builds the torch
# op library into build-gpu/ once per variant (only the Hopper objects recompile: SPARGE_SM90_DEFINES, see
# sparge_core/cuda/hopper/CMakeLists.txt), keeps a copy of each, then runs scripts/profile_kernel.py --vs-cudnn
# (the op and cuDNN interleaved in one process: their ratio cancels clock drift) for every variant and
# configuration, variant after variant within a configuration.
#
#   scripts/gpu_sm90_variants.sh OUTDIR VARIANT...
#     VARIANT = a ;-separated list of definitions, "" for the default build, e.g.
#     "SPARGE_SM90_DIAG_NO_EXP" (timing-only diagnostics of hopper/NOTES.md: wrong outputs)
#   SPARGE_VARIANT_CONFIGS  profile_kernel.py arguments per configuration, |-separated
#                           (default "--quant none|--quant int8_fp8": bf16 and INT8 + FP8, dense, N 32K, D 128)
#   SPARGE_VARIANT_ROUNDS   how often the whole table is repeated (default 1)
# OUTDIR gets env.txt, build.log (per variant: build-<i>.log) and variants.log (one line per variant and config).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# shellcheck source=scripts/common.sh
source scripts/common.sh

out="${1:?usage: scripts/gpu_sm90_variants.sh OUTDIR VARIANT...}"
shift
(($#)) || { log "give at least one variant (\"\" = the default build)"; exit 2; }
variants=("$@")
IFS='|' read -r -a configs <<< "${SPARGE_VARIANT_CONFIGS:---quant none|--quant int8_fp8}"
py="$(gpu_env "$out")" || exit 1
gpu_build "$out" "$py" sparge_ops || exit 1
libs=()
for i in "${!variants[@]}"; do
  t0=$SECONDS
  if ! cmake -B build-gpu -DSPARGE_SM90_DEFINES="${variants[$i]}" > "$out/build-$i.log" 2>&1 ||
     ! cmake --build build-gpu -j "$(nproc)" --target sparge_ops >> "$out/build-$i.log" 2>&1; then
    tail -20 "$out/build-$i.log"
    log "variant '${variants[$i]}': build FAILED"
    exit 1
  fi
  mkdir -p build-gpu/variants
  cp build-gpu/lib/libsparge_ops.so "build-gpu/variants/libsparge_ops_$i.so"
  libs+=("build-gpu/variants/libsparge_ops_$i.so")
  log "variant '${variants[$i]}': build $((SECONDS - t0)) s"
done
cmake -B build-gpu -DSPARGE_SM90_DEFINES= > /dev/null 2>&1  # the default again for later builds
for ((round = 0; round < ${SPARGE_VARIANT_ROUNDS:-1}; ++round)); do
  for cfg in "${configs[@]}"; do
    for i in "${!variants[@]}"; do
      # shellcheck disable=SC2086  # cfg is a list of arguments
      line="$("$py" scripts/profile_kernel.py --lib "${libs[$i]}" --reps 5 --vs-cudnn $cfg 2>&1 | tail -1)"
      echo "variant '${variants[$i]}' | $line" | tee -a "$out/variants.log"
    done
  done
done
