#!/bin/bash
# One device call (repo root, GPU machine): parallel NVRTC warm-up of the conv_tf32 tiles,
# the FP32 tensor-core tests, then the ResNet-50 FP32 benchmark (table printed last).
#   bash benchmarks/device_fp32.sh          results and logs under $OUT
# Expected wall time on an H100: ~2.5 min; the timeouts cap it at 4 min.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
date -Iseconds | tee -a "$OUT/gpu.txt"
python3 -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
timeout ${COMPILE_TIMEOUT:-40} python3 benchmarks/bench_fp32.py --precompile > "$OUT/precompile_fp32.log" 2>&1
echo "precompile rc=$? $(grep -c compiled "$OUT/precompile_fp32.log") of 8 modules"; tail -3 "$OUT/precompile_fp32.log"
# FP32 engines never run the FP16 tiles: skip the builder's warm-up of those
CUPYRT_PRECOMPILE=0 timeout ${TEST_TIMEOUT:-120} python3 -m pytest -q --tb=short -p no:cacheprovider \
  tests/gpu/test_conv_tf32_gpu.py 2>&1 | tee "$OUT/tests_fp32.log" | grep -vE "^(PASSED|SKIPPED)" | tail -40
timeout ${BENCH_TIMEOUT:-80} python3 benchmarks/bench_fp32.py --out "$OUT" "$@" 2>&1 \
  | tee "$OUT/bench_fp32.log" | tail -45
