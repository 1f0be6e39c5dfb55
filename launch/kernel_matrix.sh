#!/usr/bin/env bash
# The model tests under each CPU kernel choice of this machine (issue 29): results must not depend on the
# CPU, so every run must pass. ATen's kernels (default = portable C++, avx2, avx512), oneDNN's and MKL's
# held to AVX2, each at 1 and 2 threads; per run, the pytest result and how far the logits are from the
# stored goldens (tests/models/golden.py --spread).
#   bash launch/kernel_matrix.sh                 # the numeric model tests (golden, fold, sdpa, layers, ...)
#   bash launch/kernel_matrix.sh tests/models    # the whole of tests/models (~4 min a run on 2 cores)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
if [ "$#" -eq 0 ]; then
  set -- tests/models/test_golden.py tests/models/test_fold.py tests/models/test_sdpa.py \
    tests/models/test_layers.py tests/models/test_depthwise.py tests/models/test_layout.py
fi
lscpu | sed -n 's/^Model name: *//p'
failed=0
for threads in 1 2; do
  for variant in "" ATEN_CPU_CAPABILITY=default ATEN_CPU_CAPABILITY=avx2 ATEN_CPU_CAPABILITY=avx512 \
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2; do
    # shellcheck disable=SC2086  # $variant is one NAME=VALUE word or none
    result=$(env $variant SWAT_TEST_THREADS=$threads "$PY" -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -1)
    # shellcheck disable=SC2086
    far=$(env $variant SWAT_TEST_THREADS=$threads "$PY" -m tests.models.golden --spread 2>&1 | tail -1)
    echo "${variant:-native} | $threads thread(s) | $result | $far"
    case "$result" in *failed*|*error*) failed=1 ;; esac
  done
done
exit $failed
