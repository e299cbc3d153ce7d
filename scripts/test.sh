#!/usr/bin/env bash
# The README's test command: set up (idempotent), build, check formatting, run every test under ctest.
# GPU tests (ctest label gpu) skip with a printed reason on machines without a GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh
scripts/build.sh
scripts/format.sh --check
ctest --test-dir build --output-on-failure -j "${SPARGE_JOBS:-$(nproc)}" "$@"
