#!/usr/bin/env bash
# Prints a JSON object describing where and with what a result was produced: git hash (and whether the tree was
# dirty), date, host CPU, GPU and driver (when nvidia-smi exists), torch version and CUDA build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh
py="${SPARGE_PYTHON:-$(cat build/.sparge_python 2>/dev/null || gpu_machine_python || echo python3)}"
"$py" - <<'PY'
import json, os, platform, subprocess
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None
cpu = None
if os.path.exists("/proc/cpuinfo"):
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
gpu = sh("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader")
import torch
print(json.dumps({
    # SPARGE_GIT_HASH / SPARGE_GIT_DIRTY, given by whoever copied the tree (a GPU machine's copy carries no .git,
    # or a stale one), win over the tree's own git state.
    "git_hash": os.environ.get("SPARGE_GIT_HASH") or sh("git", "rev-parse", "HEAD"),
    "git_dirty": ({"1": True, "0": False}.get(os.environ.get("SPARGE_GIT_DIRTY", "")))
                 if os.environ.get("SPARGE_GIT_HASH")
                 else (bool(sh("git", "status", "--porcelain", "--untracked-files=no"))
                       if sh("git", "rev-parse", "HEAD") else None),  # None: unknown
    "date_utc": sh("date", "-u", "+%Y-%m-%dT%H:%M:%SZ"),
    "host": platform.node(), "cpu": cpu, "cpu_count": os.cpu_count(),
    "gpu": gpu.split(", ")[0] if gpu else None, "driver": gpu.split(", ")[1] if gpu else None,
    "torch": torch.__version__, "torch_cuda": torch.version.cuda,
}, indent=2))
PY
