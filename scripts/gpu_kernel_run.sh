#!/usr/bin/env bash
# The kernel measurements of results/kernels/<gpu>/run_<hash>/ in one GPU call (shorter than gpu_check.sh: no
# CPU tests, no shape table): builds sparge_ops, test_cuda_attention and bench_predict for the local GPU, runs the
# attention tests (every case on both kernel paths), the FlexAttention / cuDNN summary (bench_flex.py
# --summary-only), the prediction overhead (bench_predict) and compute-sanitizer memcheck and racecheck on the
# Hopper path (SPARGE_TEST_KERNEL_PATH=sm90) of the small attention cases (racecheck: the attention kernel only;
# the tests' judges on the CPU, SPARGE_TEST_JUDGES_ON_CPU=1: cuBLAS's TMA GEMMs break racecheck).
#
#   SPARGE_GIT_HASH=<hash> scripts/gpu_kernel_run.sh OUTDIR
#     OUTDIR gets env.txt, env.json, flex.json, predict.json, summary.json, summary.md (scripts/kernel_summary.py:
#     the ratios against issue 3's floors and issue 8's targets) and logs.tgz (build, tests, flex, bench_predict,
#     sanitizer logs).
#   SPARGE_SANITIZER_LIMIT  seconds per sanitizer tool (default 150)
#   SPARGE_KERNEL_RUN_TESTS=all  run the whole `ctest -L gpu` (attention, prediction, MInference and the
#                                reference on CUDA; a few minutes more) instead of test_cuda_attention alone
# Exit status: non-zero if the build or a test failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# shellcheck source=scripts/common.sh
source scripts/common.sh

out="${1:?usage: SPARGE_GIT_HASH=<hash> scripts/gpu_kernel_run.sh OUTDIR}"
export SPARGE_GIT_HASH="${SPARGE_GIT_HASH:?set SPARGE_GIT_HASH (the copy on the GPU machine has no .git)}"
py="$(gpu_env "$out")" || exit 1
tests=(test_cuda_attention)
[[ ${SPARGE_KERNEL_RUN_TESTS:-attention} == all ]] &&
  tests+=(test_cuda_predict test_cuda_minference test_reference_cuda test_ops)
gpu_build "$out" "$py" sparge_ops bench_predict "${tests[@]}" || exit 1
status=0
if [[ ${#tests[@]} -gt 1 ]]; then
  (cd build-gpu && ctest -L gpu --output-on-failure) > "$out/tests.log" 2>&1 || status=1
  grep -E "tests passed|\(Failed\)|\(Skipped\)" "$out/tests.log"
else
  gpu_run_tests "$out" tests.log test_cuda_attention || status=1
  grep -E "^\[  (PASSED|FAILED)" "$out/tests.log"
fi
SPARGE_PYTHON="$py" scripts/provenance.sh > "$out/env.json"
PYTHONUNBUFFERED=1 timeout 200 "$py" scripts/bench_flex.py --lib build-gpu/lib/libsparge_ops.so \
  --json "$out/flex.json" --summary-only > "$out/flex.log" 2>&1 || { status=1; tail -3 "$out/flex.log"; }
timeout 90 build-gpu/bin/bench_predict --json "$out/predict.json" > "$out/bench_predict.log" 2>&1 ||
  { status=1; tail -3 "$out/bench_predict.log"; }
small='CudaAttention.StridedAndMisalignedInputs:CudaAttention.EmptyRowsWriteZerosAndMinusInfinity'
small+=':CudaAttention.RingWrappingRows:CudaAttention.JumpingMaximaMatchReference'
# memcheck on every kernel of the cases; racecheck only on the attention kernel (the reference's cuBLAS kernels
# are slow under it and report hazards of their own).
for tool in memcheck racecheck; do
  echo "== $tool" >> "$out/sanitizer.log"
  filter=()
  [[ $tool == racecheck ]] && filter=(--kernel-name kns=block_sparse_attention_kernel)
  SPARGE_TEST_KERNEL_PATH=sm90 SPARGE_TEST_JUDGES_ON_CPU=1 timeout "${SPARGE_SANITIZER_LIMIT:-150}" \
    compute-sanitizer --tool "$tool" \
    "${filter[@]}" --error-exitcode 1 build-gpu/bin/test_cuda_attention --gtest_filter="$small" \
    >> "$out/sanitizer.log" 2>&1 || echo "sanitizer $tool: rc=$? (124: ran past the limit)" | tee -a "$out/sanitizer.log"
done
grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$out/sanitizer.log"
"$py" scripts/kernel_summary.py "$out" > /dev/null || { status=1; echo "kernel_summary.py failed"; }
grep -E "^\| (bf16|quant|causal|predict)_" "$out/summary.md" | head -12
(cd "$out" && tar -czf logs.tgz build.log tests.log flex.log bench_predict.log sanitizer.log &&
  rm -f build.log tests.log flex.log bench_predict.log sanitizer.log)
exit "$status"
