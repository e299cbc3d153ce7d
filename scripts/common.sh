# Shared helpers for the scripts in this folder (sourced, not run).

log() { printf '[sparge] %s\n' "$*" >&2; }

# Prints the Python of a GPU machine's preinstalled torch (design.md: /opt/torch/.venv), or fails.
# SPARGE_PYTHON overrides the detection on any machine.
gpu_machine_python() {
  local cand
  for cand in "${SPARGE_PYTHON:-}" /opt/torch/.venv/bin/python; do
    [[ -n "$cand" && -x "$cand" ]] || continue
    "$cand" -c 'import torch' 2>/dev/null && { echo "$cand"; return 0; }
  done
  return 1
}

# Configures (once) and builds the project into build/. Extra arguments go to cmake's configure step.
sparge_build() {
  local py jobs
  py="$(cat build/.sparge_python)"
  jobs="${SPARGE_JOBS:-$(nproc)}"
  if [[ ! -f build/build.ninja ]]; then
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${SPARGE_BUILD_TYPE:-Release}" -DSPARGE_PYTHON="$py" "$@"
  fi
  cmake --build build -j "$jobs"
}

# Configures build-gpu/ for this machine's GPU (Release, its compute capability; SPARGE_CUDA_ARCH overrides) and
# builds TARGETS, logging to OUT/build.log. Prints the log's tail and fails when the build does.
#   gpu_build OUT PYTHON TARGET...
gpu_build() {
  local out="$1" py="$2" cc arch t0=$SECONDS
  shift 2
  cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')"
  cc="${cc:-9.0}"
  arch="${SPARGE_CUDA_ARCH:-${cc/./}}"
  if ! cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPARGE_PYTHON="$py" \
         -DCMAKE_CUDA_ARCHITECTURES="$arch" -DTORCH_CUDA_ARCH_LIST="$cc" > "$out/build.log" 2>&1 ||
     ! cmake --build build-gpu -j "$(nproc)" --target "$@" >> "$out/build.log" 2>&1; then
    tail -30 "$out/build.log"
    log "build FAILED (log: $out/build.log)"
    return 1
  fi
  log "build: $((SECONDS - t0)) s"
}
