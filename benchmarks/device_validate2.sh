#!/bin/bash
# Second validation call: wgmma tests (INT8 references now compile), the engine GPU
# suite (every tactic forced on whole networks), precision by timing with a diagnosis,
# the wgmma kernel benchmark, then the encoder benchmark. Logs under $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/cupyrt_cupy_cache}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
date -Iseconds | tee -a "$OUT/gpu.txt"
timeout 120 python3 -c "
from engine.gpu.precompile import precompile
print('precompile s', round(precompile(int8=True), 1))" 2>&1 | tail -2
run_tests() {  # name timeout files...
  local name=$1 t=$2; shift 2
  CUPYRT_PRECOMPILE=0 timeout $t python3 -m pytest -q --tb=short -p no:cacheprovider -rf "$@" \
    > "$OUT/tests_$name.log" 2>&1
  echo "== tests $name rc=$?: $(tail -1 "$OUT/tests_$name.log")"
  grep -E "^FAILED|^ERROR" "$OUT/tests_$name.log" | head -${FAIL_LINES:-10}
}
run_tests wgmma 70 tests/gpu/test_conv_wgmma_gpu.py
run_tests engine 150 tests/gpu/test_engine_gpu.py tests/gpu/test_precision_timing_gpu.py tests/gpu/test_constant_gpu.py
timeout 80 python3 benchmarks/diag_precision_timing.py > "$OUT/diag_pt.log" 2>&1; echo "== diag rc=$?"
timeout ${WG_TIMEOUT:-100} python3 benchmarks/bench_wgmma.py --out "$OUT" > "$OUT/bench_wgmma.log" 2>&1
echo "== bench wgmma rc=$?"
timeout 130 python3 benchmarks/bench_models.py --out "$OUT" --models none --bert \
    --bert-batches 1,32 --precisions fp16,fp32 --reps 20 > "$OUT/bench_encoder.log" 2>&1
echo "== bench encoder rc=$?"; tail -12 "$OUT/bench_encoder.log"
tail -${WG_TAIL:-32} "$OUT/bench_wgmma.log"
