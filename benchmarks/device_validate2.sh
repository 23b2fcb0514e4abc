#!/bin/bash
# Second validation call: wgmma tests (INT8 references now compile), the engine GPU
# suite (every tactic forced on whole networks), precision by timing with a diagnosis,
# the wgmma kernel benchmark, then the encoder benchmark. Logs under $OUT.
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
run_tests wgmma 70 tests/gpu/test_conv_wgmma_gpu.py
run_tests engine 150 tests/gpu/test_engine_gpu.py tests/gpu/test_precision_timing_gpu.py tests/gpu/test_constant_gpu.py
timeout 80 python3 benchmarks/diag_precision_timing.py > "$OUT/diag_pt.log" 2>&1; echo "== diag rc=$?"
timeout ${WG_TIMEOUT:-100} python3 benchmarks/bench_wgmma.py --out "$OUT" > "$OUT/bench_wgmma.log" 2>&1
echo "== bench wgmma rc=$?"
timeout 130 python3 benchmarks/bench_models.py --out "$OUT" --models none --bert \
    --bert-batches 1,32 --precisions fp16,fp32 --reps 20 > "$OUT/bench_encoder.log" 2>&1
echo "== bench encoder rc=$?"; tail -12 "$OUT/bench_encoder.log"
tail -${WG_TAIL:-32} "$OUT/bench_wgmma.log"
