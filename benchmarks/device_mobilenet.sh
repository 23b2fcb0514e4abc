#!/bin/bash
# One device call: parallel NVRTC warm-up, the depthwise + narrow-tile GPU tests, then
# the MobileNetV2 kernel benchmark (table last). Results under $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
date -Is | tee -a "$OUT/gpu.txt"
timeout 70 python3 benchmarks/bench_mobilenet_kernels.py --precompile > "$OUT/precompile.log" 2>&1
echo "precompile rc=$? $(grep -c compiled "$OUT/precompile.log") modules"; tail -3 "$OUT/precompile.log"
timeout ${TEST_TIMEOUT:-75} python3 -m pytest -q -p no:cacheprovider tests/gpu/test_dw_gpu.py tests/gpu/test_conv_gpu.py \
  -k "depthwise or pack_weight_dw or w4x1 or w2x1 or x16_w or 256x64x32" 2>&1 \
  | tee "$OUT/tests.log" | tail -15
timeout ${BENCH_TIMEOUT:-110} python3 benchmarks/bench_mobilenet_kernels.py --out "$OUT" 2>&1 \
  | tee "$OUT/bench.log" | grep -v "^N=" | tail -70
