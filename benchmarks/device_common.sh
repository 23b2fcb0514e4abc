# Sourced by the device_*.sh calls: environment, card line, parallel precompile, and a
# test runner that keeps the log under $OUT and prints the summary and failures only.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/cupyrt_cupy_cache}

gpu_info() {
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  date -Iseconds | tee -a "$OUT/gpu.txt"
}

precompile_all() {  # [int8: True|False]
  timeout ${COMPILE_TIMEOUT:-120} python3 -c "
import logging; logging.basicConfig(level=logging.WARNING)
from engine.gpu.precompile import precompile
print('precompile s', round(precompile(int8=${1:-True}), 1))" 2>&1 | tail -6
}

run_tests() {  # name timeout pytest-args...
  local name=$1 t=$2; shift 2
  CUPYRT_PRECOMPILE=0 timeout $t python3 -m pytest -q --tb=short -p no:cacheprovider -rf "$@" \
    > "$OUT/tests_$name.log" 2>&1
  echo "== tests $name rc=$?: $(tail -1 "$OUT/tests_$name.log")"
  grep -E "^FAILED|^ERROR" "$OUT/tests_$name.log" | head -${FAIL_LINES:-10}
}

resnet50_fp16_int8() {  # timeout reps [extra bench_models args...]: ResNet-50 b256, FP16 + INT8
  local t=$1 reps=$2; shift 2
  local d; d=$(mktemp -d)
  timeout $t python3 benchmarks/bench_models.py --out "$d" --models resnet50 \
    --precisions fp16,int8 --batches 256 --reps $reps "$@" > "$OUT/bench_r50.log" 2>&1
  echo "== resnet50 rc=$?"
  cp "$d/bench_models.json" "$OUT/bench_r50.json" 2>/dev/null
  cat "$d"/profile_*.txt > "$OUT/profiles.txt" 2>/dev/null
  grep -E "^\[precision\].*moved True" "$OUT/bench_r50.log" | head -8
  grep -E "^\[build\]|^\[run\]" "$OUT/bench_r50.log"
}
