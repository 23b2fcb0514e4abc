#!/bin/bash
# One device call (< 10 min): first GPU run of new kernels. Parallel NVRTC warm-up of
# every tile family, the kernel tests (wgmma, 3xTF32, GEMM, layer norm), the engine
# tests that use them, then the wgmma and FP32 kernel benchmarks. Logs under $OUT.
#   bash benchmarks/device_validate.sh
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
run_tests wgmma 80 tests/gpu/test_conv_wgmma_gpu.py
run_tests tf32 50 tests/gpu/test_conv_tf32_gpu.py
run_tests matmul 50 tests/gpu/test_matmul_gpu.py tests/gpu/test_norm_gpu.py
run_tests engine 100 tests/gpu/test_encoder_gpu.py tests/gpu/test_precision_timing_gpu.py \
  tests/gpu/test_constant_gpu.py tests/gpu/test_layers_cupy.py
timeout ${WG_TIMEOUT:-100} python3 benchmarks/bench_wgmma.py --out "$OUT" > "$OUT/bench_wgmma.log" 2>&1
echo "== bench wgmma rc=$?"; tail -${WG_TAIL:-30} "$OUT/bench_wgmma.log"
timeout ${FP32_TIMEOUT:-70} python3 benchmarks/bench_fp32.py --out "$OUT" > "$OUT/bench_fp32.log" 2>&1
echo "== bench fp32 rc=$?"; tail -${FP32_TAIL:-30} "$OUT/bench_fp32.log"
