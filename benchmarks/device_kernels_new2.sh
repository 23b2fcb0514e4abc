#!/bin/bash
# Second device call: sm_90a probe, then the batch-256 bench with the larger V2 tiles.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 60 python3 benchmarks/probe_sm90a.py 2>&1 | tee "$OUT/probe.log"
timeout ${BENCH_TIMEOUT:-150} python3 benchmarks/bench_kernels.py --batches 256 --out "$OUT" --tactics \
  igemm2_128x128x32_w2x4_s4 igemm2_128x128x64_w2x4_s3 igemm2_128x64x32_w2x2_s4 \
  igemm2_256x128x32_w4x2_s3 igemm2_128x256x32_w2x4_s3 igemm2_128x128x64_w2x4_s4 2>&1 \
  | tee "$OUT/bench256.log" | tail -32
