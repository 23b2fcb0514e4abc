"""kernels/gpu/cudnn_workers.py without a GPU: real worker processes running a stand-in
builder (no cuDNN): answers come back per request, builds overlap across workers, a
worker's exception or death reaches the caller, idle workers exit and come back."""
import json
import sys
import time

import pytest

from kernels.gpu import cudnn_graphs as G
from kernels.gpu.cudnn_workers import PlanWorkers

# a stand-in builder: sleeps the requested time, answers with its pid and when it ran;
# index 7 raises, index 9 kills the worker, index 5 prints to stdout (must not corrupt answers)
FAKE = r"""
import os, sys, time
from kernels.gpu.cudnn_workers import main
def build(req):
    i = req["index"]
    if i == 7:
        raise ValueError("no such engine")
    if i == 9:
        os._exit(3)
    if i == 5:
        print("chatter from a library")
        os.write(1, b"raw chatter\n")
    t0 = time.time()
    time.sleep(req["spec"]["h"] / 10)
    return {"index": i, "pid": os.getpid(), "t0": t0, "t1": time.time(), "k": req["spec"]["k"]}
main(build, float(sys.argv[1]))
"""


def spec(h=1, k=32):
    return G.ConvSpec(n=2, c=16, h=h, w=11, k=k, r=3, s=3)


def workers(n, idle_s=30.0):
    return PlanWorkers(n, command=[sys.executable, "-c", FAKE, str(idle_s)])


def test_answers_come_back_and_builds_overlap_across_workers():
    pool = workers(2)
    try:
        futs = [pool.submit(spec(h=5, k=8 * (i + 1)), 0, i) for i in range(4)]
        got = [f.result(timeout=60) for f in futs]
    finally:
        pool.close()
    assert [g["index"] for g in got] == [0, 1, 2, 3] and [g["k"] for g in got] == [8, 16, 24, 32]
    assert len({g["pid"] for g in got}) == 2 and pool.started == 2
    a, b = sorted(got, key=lambda g: g["t0"])[:2]
    assert b["t0"] < a["t1"], "the first two builds did not run at the same time"


def test_a_failing_build_is_answered_and_a_dead_worker_raises():
    pool = workers(1)
    try:
        answer = pool.submit(spec(), 0, 7).result(timeout=60)
        assert answer["index"] == 7 and "ValueError: no such engine" in answer["worker_error"]
        assert pool.submit(spec(), 0, 5).result(timeout=60)["index"] == 5     # stdout chatter ignored
        with pytest.raises(RuntimeError, match="worker exited"):
            pool.submit(spec(), 0, 9).result(timeout=60)
        assert pool.submit(spec(), 0, 1).result(timeout=60)["index"] == 1     # a fresh worker
    finally:
        pool.close()


def test_idle_workers_exit_and_a_new_one_starts_on_demand():
    pool = workers(1, idle_s=0.3)
    try:
        first = pool.submit(spec(), 0, 0).result(timeout=60)
        time.sleep(1.5)
        second = pool.submit(spec(), 0, 1).result(timeout=60)
    finally:
        pool.close()
    assert first["pid"] != second["pid"] and pool.started == 2


def test_close_cancels_queued_work_and_refuses_more():
    pool = workers(1)
    running = pool.submit(spec(h=10), 0, 0)
    queued = [pool.submit(spec(), 0, i) for i in (1, 2)]
    time.sleep(0.3)
    pool.close()
    assert all(f.cancelled() for f in queued)
    assert running.done()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(spec(), 0, 3)
    with pytest.raises(ValueError, match="expected at least 1"):
        PlanWorkers(0)


def test_requests_carry_the_spec_as_json():
    s = spec()
    assert G.ConvSpec.from_json(json.loads(json.dumps({"spec": s.to_json()}))["spec"]) == s
