#!/bin/bash
# One device call (H100/H200, < 5 min): parallel NVRTC warm-up of the wgmma + baseline tiles,
# the wgmma GPU tests, then the ResNet-50 batch-256 timing; logs and wgmma.json under $OUT.
#   bash benchmarks/device_wgmma.sh      (repo root, on the GPU machine)
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
date -Iseconds | tee -a "$OUT/gpu.txt"
python3 -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
timeout ${COMPILE_TIMEOUT:-90} python3 benchmarks/bench_wgmma.py --precompile 2>&1 | tee "$OUT/precompile.log" | tail -20
timeout ${TEST_TIMEOUT:-120} python3 -m pytest -q --tb=short -p no:cacheprovider tests/gpu/test_conv_wgmma_gpu.py 2>&1 \
  | tee "$OUT/tests_wgmma.log" | grep -vE "^(PASSED|SKIPPED)" | tail -60
timeout ${BENCH_TIMEOUT:-150} python3 benchmarks/bench_wgmma.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench_wgmma.log" | tail -40
