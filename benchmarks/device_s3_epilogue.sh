#!/bin/bash
# Session 3, call 4: the INT8 epilogue keeps one 8-channel group per thread (per-channel
# factors loaded once) and converts to int8 in one instruction (cvt.rni.sat.s8.f32, bytes
# packed with byte permutes). The whole GPU suite (bit-exact INT8 tests vs the NumPy
# emulation), the expand-layer probes, then ResNet-50 FP16 + INT8 at batch 256.
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
W=$(mktemp -d)
FAIL_LINES=15 run_tests gpu 200 tests/gpu
for l in s1_1x1_64_256 s2_1x1_128_512; do
  for t in wgi8_128x128_s3 wgi8_64x128_s4; do
    python3 benchmarks/probe_shortk.py --layer $l --tactic $t --residual 2>&1 | tail -1
  done
done | tee "$OUT/probe.txt"
timeout 130 python3 benchmarks/bench_models.py --out "$W/a" --models resnet50 \
  --precisions fp16,int8 --batches 256 --reps 30 > "$OUT/bench_r50.log" 2>&1
echo "== resnet50 rc=$?"
cp "$W/a/bench_models.json" "$OUT/bench_r50.json" 2>/dev/null
grep -E "^\[precision\].*moved True" "$OUT/bench_r50.log" | head -8
grep -E "^\[run\]" "$OUT/bench_r50.log"
