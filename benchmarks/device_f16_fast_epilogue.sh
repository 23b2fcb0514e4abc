#!/bin/bash
# Not yet run: the FP16 wgmma kernel's residual prefetch + fixed-column epilogue (its FAST = 1
# instantiation, CUPYRT_WGMMA_F16_FAST_EPILOGUE=1). Its GPU test against the default path,
# the wgmma suite with the flag on, then ResNet-50 FP16 + INT8 at batch 256 with it off and
# on (same machine). If the test passes and FP16 is faster, make the flag the default.
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
run_tests fast_epilogue 150 tests/gpu/test_conv_wgmma_gpu.py tests/gpu/test_matmul_conv_gpu.py
CUPYRT_WGMMA_F16_FAST_EPILOGUE=1 run_tests fast_epilogue_on 150 tests/gpu/test_conv_wgmma_gpu.py \
  tests/gpu/test_engine_gpu.py tests/gpu/test_matmul_conv_gpu.py
resnet50_fp16_int8 130 30
mv "$OUT/bench_r50.log" "$OUT/bench_r50_off.log"; mv "$OUT/bench_r50.json" "$OUT/bench_r50_off.json"
CUPYRT_WGMMA_F16_FAST_EPILOGUE=1 resnet50_fp16_int8 130 30
