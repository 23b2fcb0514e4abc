#!/bin/bash
# One device call for the transformer encoder: the GEMM / layer-norm / encoder GPU
# tests, then the BERT-base-sized encoder benchmark (FP16, FP32; batch 1, 32)
# against PyTorch eager; the table is printed last. Logs under $OUT. Timeouts
# (100 s + 130 s) keep the call under 4 minutes.
#   bash benchmarks/device_encoder.sh
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
# one kernel cache for tests and benchmark: NVRTC runs once per kernel
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-$(mktemp -d)}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout ${TEST_TIMEOUT:-100} python3 -m pytest -q --tb=short -p no:cacheprovider \
    tests/gpu/test_matmul_gpu.py tests/gpu/test_norm_gpu.py tests/gpu/test_encoder_gpu.py 2>&1 \
  | tee "$OUT/tests.log" | grep -vE "^(PASSED|SKIPPED)" | tail -${TEST_TAIL:-40}
timeout ${BENCH_TIMEOUT:-130} python3 benchmarks/bench_models.py --out "$OUT" --models none --bert \
    --bert-batches 1,32 --precisions fp16,fp32 --reps 20 2>&1 | tee "$OUT/bench.log" | tail -20
