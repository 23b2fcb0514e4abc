#!/bin/bash
# Session 3, call 3: the INT8 wgmma kernel prefetches its residual tile into shared memory
# (res_kind | 4). Tests of the wgmma / INT8 kernels and engine, the expand layers with and
# without residual per tile, a profiler look (stall reasons) at the s2 expand layer, then
# ResNet-50 FP16 + INT8 at batch 256.
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
run_tests wgmma 150 tests/gpu/test_conv_wgmma_gpu.py tests/gpu/test_conv_int8_gpu.py \
  tests/gpu/test_engine_gpu.py tests/gpu/test_mixed_precision_gpu.py
for l in s1_1x1_64_256 s2_1x1_128_512 s3_1x1_256_1024; do
  for r in "" --residual; do
    for t in wgi8_128x128_s3 wgi8_64x128_s4 wgi8_64x64_s4; do
      python3 benchmarks/probe_shortk.py --layer $l --tactic $t $r 2>&1 | tail -1
    done
  done
done | tee "$OUT/probe.txt"
M='regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio'
timeout 90 ncu -k regex:conv_wgmma_s8 --launch-count 1 --launch-skip 1 --section SpeedOfLight \
  --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
  --metrics "$M" python3 benchmarks/probe_shortk.py --layer s2_1x1_128_512 --tactic wgi8_64x128_s4 \
  --residual > "$OUT/ncu.txt" 2>&1; echo "== ncu rc=$?"
grep -E "Duration|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Theoretical Occupancy|Block Limit|Registers Per|Warp Cycles Per Issued|Eligible Warps|No Eligible|Dynamic Shared" "$OUT/ncu.txt" | head -24
grep -E "issue_stalled" "$OUT/ncu.txt" | awk '$NF+0 > 0.3' | sort -k3 -n -r | head -12
resnet50_fp16_int8 130 20 --profile
