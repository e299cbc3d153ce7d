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
