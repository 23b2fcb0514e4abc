#!/bin/bash
# Session 3, closing call: tactic timing with the stream held by a spin kernel (host launch
# time out of the events), KERNEL_VERSION 3. The whole GPU suite, then ResNet-50 FP16 +
# INT8 at batch 256 against PyTorch eager FP16 in the same process (figures for RESULTS.md).
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all True
FAIL_LINES=15 run_tests gpu 260 tests/gpu
resnet50_fp16_int8 150 30
