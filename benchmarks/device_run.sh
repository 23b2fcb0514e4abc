#!/bin/bash
# One device call: GPU tests, then the kernel microbenchmark; logs under $OUT.
#   bash benchmarks/device_run.sh     (on the GPU machine, repo root)
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)"
timeout ${TEST_TIMEOUT:-140} python3 -m pytest -q --tb=line -p no:cacheprovider tests/gpu 2>&1 \
  | tee "$OUT/tests.log" | grep -vE "^(PASSED|SKIPPED)" | tail -40
timeout ${BENCH_TIMEOUT:-130} python3 benchmarks/bench_kernels.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" | tail -70
