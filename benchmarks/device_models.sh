#!/bin/bash
# One device call: FP32 tensor-core tests + kernel bench, the engine suite, then the
# model benchmark (ResNet-50 FP16/FP32/INT8, MobileNetV2 FP16) against PyTorch eager.
#   bash benchmarks/device_models.sh        logs and JSON under $OUT
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
if [ -z "$SKIP_TESTS" ]; then
run_tests tf32 60 tests/gpu/test_conv_tf32_gpu.py
run_tests engine 90 tests/gpu/test_engine_gpu.py tests/gpu/test_precision_timing_gpu.py
timeout 70 python3 benchmarks/bench_fp32.py --out "$OUT" > "$OUT/bench_fp32.log" 2>&1
echo "== bench fp32 rc=$?"; tail -4 "$OUT/bench_fp32.log"
fi
timeout ${MODELS_TIMEOUT:-300} python3 benchmarks/bench_models.py --out "$OUT" ${MODEL_ARGS:---models resnet50 --precisions fp16,fp32,int8 --batches 1,256 --reps 20} \
  > "$OUT/bench_models.log" 2>&1
echo "== bench models rc=$?"; grep -E "^\[build\]" "$OUT/bench_models.log" | cut -c1-400
grep -E "^\[graph\]" "$OUT/bench_models.log" | cut -c1-300
tail -12 "$OUT/bench_models.log"
