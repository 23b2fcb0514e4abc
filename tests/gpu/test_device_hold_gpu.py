"""The profiler's device hold (kernels/gpu/device_hold.py) on a real stream."""
import time

import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from kernels.gpu.device_hold import hold_stream  # noqa: E402


def test_held_stream_runs_nothing_until_released_then_times_without_the_host_gap():
    stream = cp.cuda.Stream(non_blocking=True)
    x = cp.arange(1 << 20, dtype=cp.float32)
    # the kernels run once before the hold: CUDA's lazy loading may make a kernel's first
    # launch wait for the running (holding) kernel, which only a release ends
    (x * 2 + 1).sum()
    cp.cuda.Device().synchronize()
    with stream:
        hold = hold_stream(2000.0)
        e0 = cp.cuda.Event(); e0.record()
        y = x * 2
        time.sleep(0.05)                    # the host is slow between two layers
        z = y + 1
        e1 = cp.cuda.Event(); e1.record()
    time.sleep(0.02)
    assert not e0.done and not e1.done      # held: the queue has not started
    hold.release()
    e1.synchronize()
    assert hold.expired is False
    assert cp.cuda.get_elapsed_time(e0, e1) < 10.0     # the 50 ms host gap is not in it
    np.testing.assert_array_equal(cp.asnumpy(z), np.arange(1 << 20, dtype=np.float32) * 2 + 1)


def test_a_hold_nobody_releases_expires_after_max_ms_and_says_so():
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        hold = hold_stream(20.0)
        e = cp.cuda.Event(); e.record()
    t0 = time.perf_counter()
    e.synchronize()
    waited = time.perf_counter() - t0
    assert 0.015 < waited < 1.0
    assert hold.expired is True
    hold.release()                          # late and harmless

