#!/usr/bin/env bash
# Set up (idempotent) and build everything into build/. Extra arguments go to cmake's first configure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh
scripts/setup.sh
sparge_build "$@"
