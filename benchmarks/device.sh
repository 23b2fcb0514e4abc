#!/bin/bash
# One device call (GPU machine, repo root):  bash benchmarks/device.sh [--tests] [SUITE ...]
# Installs carried wheels (.whl/, e.g. the cuDNN frontend), precompiles every kernel
# family in parallel, runs the GPU tests (--tests; TESTS= picks files, default tests/gpu),
# then each suite through `python -m benchmarks run`, its JSON and log under $OUT.
# TESTS= picks test files (a glob), SHARDS= how many pytest processes share the GPU (4).
# AB="ARGS[;ARGS...]" runs `python -m benchmarks ab ARGS` for each, after the tests and
# before the suites (e.g. AB="resnet50 cudnn_int8=1 --precision int8 --peer").
# Prints the test summary, each A/B table and each suite's short table last.
# The device's copy may sit on an older git HEAD than its files: pass BENCH_COMMIT=<sha> written out
# on the host (not $(git rev-parse ...) run here), or the records say '<old sha>+changes'.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/cupyrt_out}; mkdir -p "$OUT"
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/cupyrt_cupy_cache}
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
LOG="$OUT/suites.log"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader; date -Iseconds
  python3 -c "from kernels.gpu import cudnn_graphs as G; print('cuDNN graphs:', G.frontend_version() or G.unavailable_reason())"
  timeout ${COMPILE_TIMEOUT:-150} python3 -c "
from engine.gpu.precompile import precompile, report_lines
print('precompile s', round(precompile(int8=True), 1)); print(*report_lines(), sep=chr(10))" 2>&1 | tail -8; } | tee "$LOG"
if [ "$1" = "--tests" ]; then
  shift
  # SHARDS=N (default 4) pytest processes share the GPU, files dealt round robin by size:
  # about 100 s instead of 160 s on an H200, and concurrent load exposes stream-ordering races
  ls -S ${TESTS:-tests/gpu/test_*.py} > "$OUT/test_files.txt"
  SHARDS=${SHARDS:-4}; rc=0; pids=()
  # never more shards than files: a shard with no file would run pytest on the whole tree
  NFILES=$(wc -l < "$OUT/test_files.txt"); [ "$SHARDS" -gt "$NFILES" ] && SHARDS=$NFILES
  for i in $(seq 0 $((SHARDS - 1))); do
    CUPYRT_PRECOMPILE=0 timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q --tb=short -p no:cacheprovider -rf \
      $(awk -v i=$i -v n=$SHARDS 'NR % n == i' "$OUT/test_files.txt") > "$OUT/tests_gpu_$i.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  TESTS_LINE="== tests rc=$rc: $(for i in $(seq 0 $((SHARDS - 1))); do tail -1 "$OUT/tests_gpu_$i.log"; done | python3 -c "
import re, sys
tot = {}
for line in sys.stdin:
    for n, k in re.findall(r'(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)', line):
        tot[k] = tot.get(k, 0) + int(n)
print(', '.join(f'{v} {k}' for k, v in tot.items()))")"
  echo "$TESTS_LINE" | tee -a "$LOG"
  # one file back (the device tool returns at most 8): the shards' logs, one after another
  for i in $(seq 0 $((SHARDS - 1))); do echo "## shard $i"; cat "$OUT/tests_gpu_$i.log"; done > "$OUT/tests_gpu.log"
  rm -f "$OUT"/tests_gpu_[0-9]*.log "$OUT/test_files.txt"
  grep -E "^FAILED|^ERROR" "$OUT/tests_gpu.log" | head -15
fi
IFS=';' read -ra ABS <<< "${AB:-}"
for ab in "${ABS[@]}"; do
  [ -z "${ab// }" ] && continue
  # shellcheck disable=SC2086  (the arguments split as on a command line)
  env -u CUPY_CACHE_DIR timeout ${AB_TIMEOUT:-300} python3 -m benchmarks ab $ab --out "$OUT" >> "$LOG" 2>&1
  echo "== ab $ab rc=$?" | tee -a "$LOG"
done
for suite in "$@"; do
  # without the tests' kernel cache: a suite's cold build starts from an empty one (benchmarks/models.py)
  env -u CUPY_CACHE_DIR timeout ${SUITE_TIMEOUT:-420} python3 -m benchmarks run "$suite" --out "$OUT" ${SUITE_ARGS} >> "$LOG" 2>&1
  echo "== suite $suite rc=$?" | tee -a "$LOG"
done
# the device tool returns at most 8 files: past that, the profiles go back as one archive
if [ "$(find "$OUT" -maxdepth 1 -type f | wc -l)" -gt 8 ]; then
  (cd "$OUT" && ls -- *profile*.txt >/dev/null 2>&1 && tar czf profiles.tar.gz -- *profile*.txt && rm -f -- *profile*.txt)
fi
echo; [ -n "$TESTS_LINE" ] && echo "$TESTS_LINE"
awk '/^ab [a-z0-9_]+ [a-z0-9]+: A = /{p=1} p{print} /^== ab /{p=0}' "$LOG"
grep -E "^\[build\]|^\[graph\]" "$LOG" | tail -6
awk '/^[a-z0-9_]+: .*commit/{p=1} p{print} /^== suite/{p=0}' "$LOG"
