#!/bin/bash
# Short call: the conv-backed linear-layer tactics' tests, then the BERT-base encoder.
source "$(dirname "$0")/device_common.sh"
gpu_info
precompile_all False
CUPYRT_PRECOMPILE=0 timeout ${TEST_TIMEOUT:-45} python3 -m pytest -q --tb=short -p no:cacheprovider -rf \
  tests/gpu/test_matmul_conv_gpu.py tests/gpu/test_encoder_gpu.py > "$OUT/tests_enc.log" 2>&1
echo "== tests rc=$?: $(tail -1 "$OUT/tests_enc.log")"
grep -E "^FAILED|^ERROR" "$OUT/tests_enc.log" | head -8
timeout ${BERT_TIMEOUT:-80} python3 benchmarks/bench_models.py --out "$OUT" --models none --bert \
  --bert-batches 1,32 --precisions fp16,fp32 --reps 20 > "$OUT/bench_bert.log" 2>&1
echo "== bert rc=$?"; rm -f "$OUT/bench_models_partial.json"
grep -E "^\[run\]" "$OUT/bench_bert.log"
