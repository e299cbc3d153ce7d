#!/usr/bin/env bash
# clang-format over the project's C++/CUDA sources. --check: fail (listing the files) instead of rewriting.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh
mapfile -t files < <(git ls-files --cached --others --exclude-standard \
  '*.h' '*.hpp' '*.cpp' '*.cu' '*.cuh' | while read -r f; do [[ -f "$f" ]] && echo "$f"; done)
((${#files[@]})) || exit 0
if [[ "${1:-}" == "--check" ]]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format --style=file "$f" | cmp -s - "$f" || bad+=("$f")
  done
  if ((${#bad[@]})); then log "not clang-formatted (run scripts/format.sh): ${bad[*]}"; exit 1; fi
  log "format check: ${#files[@]} files clean"
else
  clang-format --style=file -i "${files[@]}"
fi
