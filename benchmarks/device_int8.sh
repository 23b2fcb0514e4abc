#!/bin/bash
# INT8 follow-up call: the tests touched by the int8 pooling / precision-timing changes,
# then ResNet-50 FP16 and INT8 (same run) at batch 1 and 256 with the precision record.
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
CUPYRT_PRECOMPILE=0 timeout ${TEST_TIMEOUT:-100} python3 -m pytest -q --tb=short -p no:cacheprovider -rf \
  tests/gpu/test_misc_gpu.py tests/gpu/test_conv_int8_gpu.py tests/gpu/test_mixed_precision_gpu.py \
  tests/gpu/test_precision_timing_gpu.py tests/gpu/test_engine_gpu.py > "$OUT/tests_int8.log" 2>&1
echo "== tests rc=$?: $(tail -1 "$OUT/tests_int8.log")"
grep -E "^FAILED|^ERROR" "$OUT/tests_int8.log" | head -12
timeout ${MODELS_TIMEOUT:-170} python3 benchmarks/bench_models.py --out "$OUT" --models resnet50 \
  --precisions fp16,int8 --batches 1,256 --reps 20 > "$OUT/bench_int8.log" 2>&1
echo "== resnet50 rc=$?"
rm -f "$OUT/bench_models_partial.json"
grep -E "^\[precision\].*moved True|^\[build\]|^\[run\]" "$OUT/bench_int8.log" | cut -c1-330
