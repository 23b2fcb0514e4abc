#!/bin/bash
# Closing device call: the whole GPU test suite, then ResNet-50 FP16 + INT8 at batch 256
# with per-layer profiles and the precision-timing record, and the BERT-base encoder's
# FP16 profile at batch 32. Few files under $OUT (the transfer takes at most 8).
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
W=$(mktemp -d)
FAIL_LINES=15 run_tests gpu ${TEST_TIMEOUT:-240} tests/gpu
timeout ${MODELS_TIMEOUT:-150} python3 benchmarks/bench_models.py --out "$W/r50" --models resnet50 \
  --precisions fp16,int8 --batches 256 --reps 20 --profile > "$OUT/bench_r50_profile.log" 2>&1
echo "== resnet50 rc=$?"
timeout ${BERT_TIMEOUT:-80} python3 benchmarks/bench_models.py --out "$W/bert" --models none --bert \
  --bert-batches 32 --precisions fp16 --reps 20 --profile > "$OUT/bench_bert_profile.log" 2>&1
echo "== bert rc=$?"
for f in "$W"/r50/profile_*.txt "$W"/bert/profile_*.txt; do
  [ -f "$f" ] && { echo "### $(basename "$f")"; cat "$f"; } >> "$OUT/profiles.txt"
done
cp "$W/r50/bench_models.json" "$OUT/bench_r50.json" 2>/dev/null
grep -E "^\[precision\]" "$OUT/bench_r50_profile.log" | head -70
grep -E "^\[run\]" "$OUT/bench_r50_profile.log" "$OUT/bench_bert_profile.log"
for f in "$W"/r50/profile_*.txt "$W"/bert/profile_*.txt; do echo "### $(basename "$f")"; head -14 "$f"; done
