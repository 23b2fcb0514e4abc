#!/bin/bash
# One device call for the post-run-2 kernels: their GPU tests, then bench_kernels.py --new.
#   bash benchmarks/device_kernels_new.sh     (on the GPU machine, repo root)
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
timeout ${TEST_TIMEOUT:-110} python3 -m pytest -q --tb=short --maxfail=15 -p no:cacheprovider \
  tests/gpu/test_conv_gpu.py tests/gpu/test_misc_gpu.py ${TESTK:+-k "$TESTK"} 2>&1 \
  | tee "$OUT/tests_new.log" | grep -vE "^(PASSED|SKIPPED)" | tail -30
timeout ${BENCH_TIMEOUT:-110} python3 benchmarks/bench_kernels.py --new --out "$OUT" 2>&1 \
  | tee "$OUT/bench_new.log" | tail -45
