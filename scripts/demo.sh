#!/usr/bin/env bash
# The README's main command (for now): the reference SpargeAttn algorithm on structured inputs, printing
# stage-1/stage-2 sparsity and the error against dense attention for a few thresholds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh
scripts/build.sh >&2
exec build/bin/sparge_demo "$@"
