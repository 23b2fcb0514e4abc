#!/bin/bash
# First GPU run of the INT8 small-C stem and the fast quantize kernels (both unvalidated,
# neither a default): the CPU checks, their GPU tests (bit-exact vs conv2d_int8 / the scalar
# quantize, CUDA graph, the engine tactic), then the stem benchmark at batch 256.
# Under 4 minutes on an H100/H200 (timeouts: 60 + 120 + 50 s).
#   bash benchmarks/device_int8_stem.sh      (logs and JSON under $OUT)
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/cupyrt_cupy_cache}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
date -Iseconds | tee -a "$OUT/gpu.txt"
# the engine test times every INT8 tactic: fill the kernel cache in parallel first
timeout ${PRECOMPILE_TIMEOUT:-60} python3 -c "
from engine.gpu.precompile import precompile
print('precompile s', round(precompile(int8=True), 1))" 2>&1 | tail -2
CUPYRT_PRECOMPILE=0 timeout ${TEST_TIMEOUT:-120} python3 -m pytest -q --tb=short -p no:cacheprovider \
  -rf --maxfail=20 tests/kernels/test_conv_int8_smallc_args.py tests/engine/test_int8_stem_tactic_cpu.py \
  tests/gpu/test_conv_int8_smallc_gpu.py > "$OUT/tests_int8_stem.log" 2>&1
echo "== tests rc=$?: $(tail -1 "$OUT/tests_int8_stem.log")"
grep -E "^FAILED|^ERROR" "$OUT/tests_int8_stem.log" | head -20
timeout ${BENCH_TIMEOUT:-50} python3 benchmarks/bench_int8_stem.py --out "$OUT" --batch 256 \
  --reps 20 > "$OUT/bench_int8_stem.log" 2>&1
echo "== bench rc=$?"
tail -22 "$OUT/bench_int8_stem.log"
