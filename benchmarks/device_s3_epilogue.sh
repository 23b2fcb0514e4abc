#!/bin/bash
# Session 3, call 4: the INT8 epilogue keeps one 8-channel group per thread (per-channel
# factors loaded once) and converts to int8 in one instruction (cvt.rni.sat.s8.f32, bytes
# packed with byte permutes). The whole GPU suite (bit-exact INT8 tests vs the NumPy
# emulation), the expand-layer probes, then ResNet-50 FP16 + INT8 at batch 256.
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
FAIL_LINES=15 run_tests gpu 200 tests/gpu
for l in s1_1x1_64_256 s2_1x1_128_512; do
  for t in wgi8_128x128_s3 wgi8_64x128_s4; do
    python3 benchmarks/probe_shortk.py --layer $l --tactic $t --residual 2>&1 | tail -1
  done
done | tee "$OUT/probe.txt"
resnet50_fp16_int8 130 30
