"""Which clock a tactic is timed by (engine/gpu/timing.py), without a GPU: short,
CUDA-graph-safe candidates are re-timed inside a graph; others keep eager timing."""
import math

import pytest

from engine.gpu import timing


@pytest.mark.parametrize("eager, graph_ok, replayed, expected", [
    (0.05, True, 0.01, 0.01),       # short and capturable: the in-graph time
    (0.05, True, None, 0.05),       # capture failed: eager
    (0.05, False, 0.01, 0.05),      # not graph safe: eager, never captured
    (1.00, True, 0.90, 1.00),       # long: the launch does not matter, eager
    (math.inf, True, 0.01, math.inf)])  # failed to run: stays failed
def test_time_ms_picks_the_clock(monkeypatch, eager, graph_ok, replayed, expected):
    calls = []
    monkeypatch.setattr(timing, "_eager_ms", lambda fn, best, warmup, reps: eager)
    monkeypatch.setattr(timing, "graph_time_ms", lambda fn: calls.append(fn) or replayed)
    assert timing.time_ms(lambda: None, graph=graph_ok) == expected
    assert bool(calls) == (graph_ok and eager < timing.GRAPH_TIMING_BELOW_MS)
