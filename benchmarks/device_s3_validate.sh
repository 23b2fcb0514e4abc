#!/bin/bash
# Session 3, first call: the whole GPU suite (validates the session-2 closing refactors and
# the INT8 small-C stem / vectorised quantize tests), the stem benchmark, then ResNet-50
# FP16 + INT8 at batch 256 twice: defaults, and with the experimental INT8 stem and the
# fast quantize kernels on (CUPYRT_EXPERIMENTAL_INT8_STEM=1 CUPYRT_FAST_QUANTIZE=1).
# Kept as it ran (RESULTS, session 3): both are on by default since, and
# CUPYRT_EXPERIMENTAL_INT8_STEM no longer exists (CUPYRT_INT8_SMALLC=0 takes the stem out).
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
W=$(mktemp -d)
FAIL_LINES=15 run_tests gpu ${TEST_TIMEOUT:-200} tests/gpu
timeout 50 python3 benchmarks/bench_int8_stem.py --out "$W" --batch 256 --reps 20 \
  > "$OUT/bench_int8_stem.log" 2>&1
echo "== stem bench rc=$?"; tail -14 "$OUT/bench_int8_stem.log"
timeout 120 python3 benchmarks/bench_models.py --out "$W/a" --models resnet50 \
  --precisions fp16,int8 --batches 256 --reps 20 > "$OUT/bench_r50_default.log" 2>&1
echo "== resnet50 default rc=$?"
CUPYRT_EXPERIMENTAL_INT8_STEM=1 CUPYRT_FAST_QUANTIZE=1 timeout 100 python3 benchmarks/bench_models.py \
  --out "$W/b" --models resnet50 --precisions int8 --batches 256 --reps 20 \
  > "$OUT/bench_r50_stem.log" 2>&1
echo "== resnet50 int8 stem rc=$?"
cat "$W"/a/bench_models.json > "$OUT/bench_r50_default.json" 2>/dev/null
cat "$W"/b/bench_models.json > "$OUT/bench_r50_stem.json" 2>/dev/null
grep -E "^\[precision\].*(conv.*_0|pool)" "$OUT"/bench_r50_*.log | head -12
grep -E "^\[run\]" "$OUT"/bench_r50_*.log
