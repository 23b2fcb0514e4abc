#!/bin/bash
# Session 3, call 2: short-reduction layers. The wgmma launch now takes only the ring stages
# a layer fills (1x1 layers with <= 256 channels: 2-4x more CTAs per SM) and a 64x64 tile;
# the small-C INT8 stem and the vectorised quantize kernels are on by default.
# Tests of the changed pieces, the short-K layers (bench_wgmma), a profiler look at one
# expand layer with and without residual, then ResNet-50 FP16 + INT8 at batch 256.
source "$(dirname "$0")/device_common.sh"
gpu_info
echo "ncu: $(command -v ncu || echo none)  nsys: $(command -v nsys || echo none)"
precompile_all True
W=$(mktemp -d)
run_tests changed 150 tests/gpu/test_conv_wgmma_gpu.py tests/gpu/test_conv_int8_smallc_gpu.py \
  tests/gpu/test_matmul_gpu.py tests/gpu/test_matmul_conv_gpu.py tests/gpu/test_conv_int8_gpu.py
for r in "" --residual; do
  for t in wgi8_128x128_s3 wgi8_64x64_s4 wgi8_64x128_s4 wgi8_128x64_s4; do
    python3 benchmarks/probe_shortk.py --layer s2_1x1_128_512 --tactic $t $r 2>&1 | tail -1
  done
done | tee "$OUT/probe.txt"
if command -v ncu >/dev/null; then
  timeout 90 ncu --launch-count 1 --launch-skip 2 --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
    python3 benchmarks/probe_shortk.py --layer s2_1x1_128_512 --tactic wgi8_128x128_s3 --residual \
    > "$OUT/ncu.txt" 2>&1; echo "== ncu rc=$?"
  grep -E "Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Block Limit|Registers|Stall|Warp Cycles" "$OUT/ncu.txt" | head -40
fi
timeout 100 python3 benchmarks/bench_wgmma.py --out "$W" --layers s1_1x1_64_64 s1_1x1_64_256 \
  s1_1x1_256_64 s2_1x1_128_512 s2_1x1_256_128 s3_1x1_256_1024 s3_1x1_1024_256 s1_3x3_64 \
  > "$OUT/bench_wgmma.log" 2>&1; echo "== bench_wgmma rc=$?"
cp "$W"/*.json "$OUT/" 2>/dev/null
python3 - "$W" <<'PY'
import json, glob, sys
for f in glob.glob(sys.argv[1] + "/*.json"):
    d = json.load(open(f))
    for r in d.get("rows", []):
        print(f"{r['layer']:16s} torch {r['torch_ms']:.3f} | f16 wg {r['fp16_wgmma_ms']:.3f} {r['fp16_wgmma_tactic']:14s}"
              f" mma {r['fp16_mma_ms']:.3f} | i8 wg {r['int8_wgmma_ms']:.3f} {r['int8_wgmma_tactic']:15s} mma {r['int8_mma_ms']:.3f}")
PY
resnet50_fp16_int8 130 20
