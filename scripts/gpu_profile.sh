#!/usr/bin/env bash
# Nsight Compute profile of the attention kernels on a GPU machine, one call: builds the torch op library into
# build-gpu/ (with -lineinfo), then profiles one launch of each configuration below (scripts/profile_kernel.py,
# D = 128, N = 32768, H = 16, two warm-up launches skipped) and writes, per configuration, the ncu report and a
# CSV of the sections that locate a latency- or issue-bound loop: speed of light, compute workload (pipe
# utilization), scheduler and warp-state statistics (stall reasons), instruction statistics.
#
#   scripts/gpu_profile.sh OUTDIR [CONFIG...]
#     CONFIG = path:quant:density[:causal], e.g. sm90:int8_fp8:1.0 (default: sm90 none / int8_fp8 at density
#     1.0, sm90 int8_fp8 at 0.1, portable int8_fp8 at 1.0)
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
  IFS=: read -r path quant density causal <<< "$cfg"
  name="${path}_${quant}_d${density}${causal:+_causal}"
  args=(--lib build-gpu/lib/libsparge_ops.so --path "$path" --quant "$quant" --density "$density" --warmup 2)
  [[ -n "${causal:-}" ]] && args+=(--causal)
  t0=$SECONDS
  # The attention kernels only (the quantization and mask kernels of the op are not profiled).
  if "$ncu_bin" --kernel-name regex:'block_sparse_attention_kernel' --launch-skip 2 --launch-count 1 \
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
# The headline numbers of every configuration.
for f in "$out"/*.csv; do
  [[ -f "$f" ]] || continue
  echo "==== $(basename "$f" .csv)"
  grep -E '"(Duration|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|Issued Ipc Active|Warp Cycles Per Issued Instruction|No Eligible|Executed Instructions)"' "$f" |
    awk -F'","' '{printf "  %-40s %s %s\n", $(NF-2), $NF, $(NF-1)}' | tr -d '"' | head -12
done
exit "$status"
