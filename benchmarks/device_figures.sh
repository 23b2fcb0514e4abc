#!/bin/bash
# One device call for the issue's figures: the engine-level GPU tests of the new
# pieces, ResNet-50 FP16 + INT8 (same run: the INT8/FP16 ratio), MobileNetV2 FP16,
# the BERT-base encoder, and the TensorFlow path (carry benchmarks/tf_path).
#   bash benchmarks/device_figures.sh       logs and JSON under $OUT
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
run_tests new 120 tests/gpu/test_matmul_gpu.py tests/gpu/test_encoder_gpu.py \
  tests/gpu/test_mixed_precision_gpu.py tests/gpu/test_precision_timing_gpu.py tests/gpu/test_engine_gpu.py
timeout ${MODELS_TIMEOUT:-230} python3 benchmarks/bench_models.py --out "$OUT/r50" --models resnet50 \
  --precisions fp16,int8 --batches 1,256 --reps 20 > "$OUT/bench_r50.log" 2>&1
echo "== resnet50 rc=$?"
timeout ${MOBILE_TIMEOUT:-70} python3 benchmarks/bench_models.py --out "$OUT/mnv2" --models mobilenet_v2 \
  --precisions fp16 --batches 256 --reps 20 > "$OUT/bench_mnv2.log" 2>&1
echo "== mobilenet rc=$?"
timeout ${BERT_TIMEOUT:-110} python3 benchmarks/bench_models.py --out "$OUT/bert" --models none --bert \
  --bert-batches 1,32 --precisions fp16,fp32 --reps 20 --profile > "$OUT/bench_bert.log" 2>&1
echo "== bert rc=$?"
if [ -d benchmarks/tf_path ]; then
  timeout 90 python3 benchmarks/tf_path_run.py --dir benchmarks/tf_path --out "$OUT/tf_path.json" \
    > "$OUT/tf_path.log" 2>&1; echo "== tf path rc=$?"; tail -14 "$OUT/tf_path.log"
fi
for f in r50 mnv2 bert; do grep -E "^\[build\]" "$OUT/bench_$f.log" | cut -c1-260; done
for f in r50 mnv2 bert; do grep -E "^\[run\]" "$OUT/bench_$f.log"; done
