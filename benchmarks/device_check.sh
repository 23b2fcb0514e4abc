#!/bin/bash
# One device call: compile every tile in parallel, the GPU test suite, then the
# TensorFlow-to-GPU path (engines exported on the CPU machine; carry benchmarks/tf_path).
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/cupyrt_cupy_cache}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "
import logging, time; logging.basicConfig(level=logging.INFO)
from engine.gpu.precompile import precompile
print('precompile s', round(precompile(int8=True), 1))" 2>&1 | tail -2
timeout ${TEST_TIMEOUT:-330} python3 -m pytest -q --tb=short -p no:cacheprovider tests/gpu ${TESTK:+-k "$TESTK"} 2>&1 \
  | tee "$OUT/tests.log" | grep -vE "^(PASSED|SKIPPED)" | tail -${TEST_TAIL:-25}
if [ -d benchmarks/tf_path ]; then
  timeout 150 python3 benchmarks/tf_path_run.py --dir benchmarks/tf_path --out "$OUT/tf_path.json" 2>&1 | tail -12
fi
