#!/bin/bash
# One device call: INT8 GPU tests, then the INT8 benchmark; logs under $OUT.
#   bash benchmarks/device_int8.sh     (on the GPU machine, repo root)
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
date -Iseconds | tee -a "$OUT/gpu.txt"
python3 -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
timeout ${TEST_TIMEOUT:-100} python3 -m pytest -q --tb=short -p no:cacheprovider tests/gpu/test_conv_int8_gpu.py 2>&1 \
  | tee "$OUT/tests_int8.log" | grep -vE "^(PASSED|SKIPPED)" | tail -40
timeout ${BENCH_TIMEOUT:-120} python3 benchmarks/bench_int8.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench_int8.log" | tail -60
