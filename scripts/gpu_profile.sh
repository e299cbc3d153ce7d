#!/usr/bin/env bash
# Nsight Compute profile of the attention kernels on a GPU machine, one call: builds the torch op library into
# build-gpu/ (with -lineinfo), then profiles one launch of each configuration below (scripts/profile_kernel.py,
# D = 128, N = 32768, H = 16, two warm-up launches skipped) and writes, per configuration, the ncu report and a
# CSV of the sections that locate a latency- or issue-bound loop: speed of light, compute workload (pipe
# utilization), scheduler and warp-state statistics (stall reasons), instruction statistics.
#
#   scripts/gpu_profile.sh OUTDIR [CONFIG...]
#     CONFIG = path:quant:density[:causal], e.g. sm90:int8_fp8:1.0 (default: sm90 none / int8_fp8 at density
#     1.0, sm90 int8_fp8 at 0.1, portable int8_fp8 at 1.0): the attention kernel of one op call;
#     all:path:quant:density[:causal]: every kernel of one op call (the quantization passes too);
#     predict:N: every kernel of one stage-1 prediction (sparge::predict_block_mask, bf16, D = 128, B = 32K / N)
#   SPARGE_PROFILE_SOURCE=1   also the source-level stall sampling (SourceCounters; slower)
# OUTDIR gets env.txt, build.log, <config>.ncu-rep, <config>.csv, <config>.log (the timing line of the
# un-profiled warm-ups) and profile.log.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

out="${1:?usage: scripts/gpu_profile.sh OUTDIR [CONFIG...]}"
shift
configs=("$@")
((${#configs[@]})) || configs=(sm90:none:1.0 sm90:int8_fp8:1.0 sm90:int8_fp8:0.1 portable:int8_fp8:1.0)
py="$(gpu_env "$out")" || exit 1
ncu_bin="$(command -v ncu)"
[[ -z "$ncu_bin" && -x /usr/local/cuda/bin/ncu ]] && ncu_bin=/usr/local/cuda/bin/ncu
[[ -n "$ncu_bin" ]] || { log "ncu (Nsight Compute) not found on this machine"; exit 1; }
export CUDAFLAGS="${CUDAFLAGS:-} -lineinfo"
gpu_build "$out" "$py" sparge_ops || exit 1

sections=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section SchedulerStats
          --section WarpStateStats --section InstructionStats --section LaunchStats --section Occupancy)
[[ "${SPARGE_PROFILE_SOURCE:-0}" == 1 ]] && sections+=(--section SourceCounters)
status=0
for cfg in "${configs[@]}"; do
  # The attention kernel of the third call (two warm-ups), or every kernel of that call (the NVTX range).
  filter=(--kernel-name regex:'block_sparse_attention_kernel' --launch-skip 2 --launch-count 1)
  whole=(--nvtx --nvtx-include 'profiled/')
  case "$cfg" in
    predict:*)
      n="${cfg#predict:}"
      name="predict_n${n}"
      args=(--lib build-gpu/lib/libsparge_ops.so --op predict --n "$n" --warmup 2)
      filter=("${whole[@]}") ;;
    *)
      [[ "$cfg" == all:* ]] && { filter=("${whole[@]}"); cfg="${cfg#all:}"; }
      IFS=: read -r path quant density causal <<< "$cfg"
      name="${path}_${quant}_d${density}${causal:+_causal}"
      [[ "${filter[0]}" == --nvtx ]] && name="all_$name"
      args=(--lib build-gpu/lib/libsparge_ops.so --path "$path" --quant "$quant" --density "$density" --warmup 2)
      [[ -n "${causal:-}" ]] && args+=(--causal) ;;
  esac
  t0=$SECONDS
  if "$ncu_bin" "${filter[@]}" \
       "${sections[@]}" --import-source yes -f -o "$out/$name" "$py" scripts/profile_kernel.py "${args[@]}" \
       > "$out/$name.log" 2>&1; then
    "$ncu_bin" --import "$out/$name.ncu-rep" --csv --page details > "$out/$name.csv" 2>> "$out/profile.log"
    log "$name: $((SECONDS - t0)) s"
  else
    status=1
    log "$name FAILED (log: $out/$name.log)"
    tail -5 "$out/$name.log"
  fi
done
# The headline numbers of every configuration, per kernel launch.
for f in "$out"/*.csv; do
  [[ -f "$f" ]] || continue
  echo "==== $(basename "$f" .csv)"
  "$py" - "$f" <<'PY'
import csv, sys
keep = ("Duration", "Compute (SM) Throughput", "Memory Throughput", "DRAM Throughput", "Issue Slots Busy",
        "Warp Cycles Per Issued Instruction", "No Eligible", "Executed Instructions", "Achieved Occupancy",
        "Registers Per Thread", "Grid Size")
seen = {}
for row in csv.DictReader(open(sys.argv[1])):
    if row.get("Metric Name") in keep:
        key = (row["ID"], row["Kernel Name"][:70])
        seen.setdefault(key, []).append(f'{row["Metric Name"]}={row["Metric Value"]}{row["Metric Unit"]}')
for (i, name), vals in seen.items():
    print(f"  [{i}] {name}\n      " + "; ".join(vals))
PY
done
exit "$status"
