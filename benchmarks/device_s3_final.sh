#!/bin/bash
# Session 3, closing call: tactic timing with the stream held by a spin kernel (host launch
# time out of the events), KERNEL_VERSION 3. The whole GPU suite, then ResNet-50 FP16 +
# INT8 at batch 256 against PyTorch eager FP16 in the same process (figures for RESULTS.md).
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
W=$(mktemp -d)
FAIL_LINES=15 run_tests gpu 200 tests/gpu
timeout 150 python3 benchmarks/bench_models.py --out "$W/a" --models resnet50 \
  --precisions fp16,int8 --batches 256 --reps 30 > "$OUT/bench_r50.log" 2>&1
echo "== resnet50 rc=$?"
cp "$W/a/bench_models.json" "$OUT/bench_r50.json" 2>/dev/null
grep -E "^\[precision\].*moved True" "$OUT/bench_r50.log" | head -8
grep -E "^\[build\]|^\[run\]" "$OUT/bench_r50.log"
