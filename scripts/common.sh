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

# Creates OUT, writes OUT/env.txt (nvidia-smi, the torch and, where installed, transformers versions, nvcc) and
# prints the GPU machine's Python; fails without one.      py="$(gpu_env OUT)" || exit 1
gpu_env() {
  local out="$1" py
  mkdir -p "$out"
  py="$(gpu_machine_python)" || { log "no Python with torch found (expected /opt/torch/.venv)"; return 1; }
  { nvidia-smi; "$py" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))
try:
    import transformers; print("transformers", transformers.__version__)
except ImportError:
    pass'; nvcc --version; } > "$out/env.txt" 2>&1
  echo "$py"
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

# Runs binaries (tests) one after another into OUT/LOGNAME; prints the pass/fail lines. Fails when one fails.
#   gpu_run_tests OUT LOGNAME BINARY...
gpu_run_tests() {
  local out="$1" logname="$2" t t0=$SECONDS rc=0
  shift 2
  for t in "$@"; do
    echo "===== $t" >> "$out/$logname"
    "build-gpu/bin/$t" >> "$out/$logname" 2>&1 || { rc=1; log "$t FAILED"; }
  done
  log "tests ($*): $((SECONDS - t0)) s"
  return "$rc"
}

# `sparge run SPEC` from build-gpu/ into OUT/<spec name>, packed as OUT/<spec name>.tgz (its results.md printed).
# Extra arguments go to `sparge run`. Fails when the run does.
#   gpu_run_spec OUT SPEC [ARGS...]
gpu_run_spec() {
  local out="$1" spec="$2" name t0=$SECONDS rc=0
  shift 2
  name="$(basename "$spec" .yaml)"
  build-gpu/bin/sparge run "$spec" --no-progress --output "$out/$name" "$@" > "$out/$name.log" 2>&1 ||
    { rc=1; log "$spec FAILED"; tail -5 "$out/$name.log"; }
  mv "$out/$name.log" "$out/$name/run.log" 2>/dev/null
  log "$spec: $((SECONDS - t0)) s"
  cat "$out/$name/results.md" 2>/dev/null
  tar -czf "$out/$name.tgz" -C "$out" "$name" && rm -rf "${out:?}/$name"
  return "$rc"
}
