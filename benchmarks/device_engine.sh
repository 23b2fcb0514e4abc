#!/bin/bash
# One device call for the engine: GPU tests, then the model benchmark. Logs under $OUT.
#   bash benchmarks/device_engine.sh [bench_models.py args...]
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
if [ -n "$TESTS" ]; then
  timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q --tb=short -p no:cacheprovider $TESTS ${TESTK:+-k "$TESTK"} 2>&1 \
    | tee "$OUT/tests.log" | grep -vE "^(PASSED|SKIPPED)" | tail -${TEST_TAIL:-30}
fi
timeout ${BENCH_TIMEOUT:-300} python3 benchmarks/bench_models.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" | tail -40
