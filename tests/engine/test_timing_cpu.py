"""Which clock a tactic is timed by (engine/gpu/timing.py), without a GPU: short,
CUDA-graph-safe candidates are re-timed inside a graph; others keep eager timing."""
import math

import pytest

from engine.gpu import timing
from engine.settings import from_environ, tactic_key


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


@pytest.mark.parametrize("eager, best, replayed_expected", [
    (0.15, 0.07, True),             # within GRAPH_CONTENDER of the best (+ slack): it may win in a graph
    (0.16, 0.07, True),             # exactly at the factor plus the slack still counts
    (0.17, 0.07, False),            # more than that: eager stands, no capture
    (0.012, 0.004, True),           # a few microseconds: launch gaps may be most of it, re-timed
    (0.05, math.inf, True)])        # the first candidate has nothing to lose to
def test_only_contenders_are_re_timed_in_a_graph(monkeypatch, eager, best, replayed_expected):
    calls = []
    monkeypatch.setattr(timing, "_eager_ms", lambda fn, best, warmup, reps: eager)
    monkeypatch.setattr(timing, "graph_time_ms", lambda fn: calls.append(fn) or 0.04)
    got = timing.time_ms(lambda: None, best_so_far=best, graph=True)
    assert bool(calls) == replayed_expected
    assert got == (0.04 if replayed_expected else eager)


class _FakeCupy:
    """Just enough of cupy for _eager_ms: events and a stream that log what they do."""
    def __init__(self, log, gpu_ms):
        self.log, self.gpu_ms = log, gpu_ms
        outer = self

        class Event:
            def record(self, stream=None):
                outer.log.append("record")

            def synchronize(self):
                pass

        class Cuda:
            pass
        self.cuda = Cuda()
        self.cuda.Event = Event
        self.cuda.get_current_stream = lambda: "stream"
        self.cuda.get_elapsed_time = lambda a, b: outer.gpu_ms.pop(0)


@pytest.mark.parametrize("spin_ok", [True, False])
def test_eager_timing_holds_the_stream_before_each_timed_call(monkeypatch, spin_ok):
    import sys
    log = []
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy(log, [0.3, 0.5, 0.2, 0.4, 0.1]))
    monkeypatch.setattr(timing, "_spin", lambda stream: log.append("spin") or spin_ok)
    ms = timing._eager_ms(lambda: log.append("fn"), math.inf, warmup=1, reps=5)
    assert ms == 0.3                                   # the median of the five
    timed = log[1:]                                    # after the one warm-up call
    assert log[0] == "fn"
    assert timed == ["spin", "record", "fn", "record"] * 5


def test_eager_timing_stops_early_on_a_clearly_slower_candidate(monkeypatch):
    import sys
    log = []
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy(log, [2.0, 2.1, 2.2, 9.0, 9.0]))
    monkeypatch.setattr(timing, "_spin", lambda stream: True)
    assert timing._eager_ms(lambda: None, 1.0, warmup=0, reps=5) == 2.1
    assert log.count("record") == 6                    # three timed calls, not five


def test_a_failing_candidate_scores_infinity(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy([], []))

    def boom():
        raise RuntimeError("launch failed")
    assert timing._eager_ms(boom, math.inf, warmup=1, reps=3) == math.inf


@pytest.mark.parametrize("env, want", [
    ({}, {}),
    ({"CUPYRT_WGMMA": "1", "CUPYRT_INT8_SMALLC": "1", "CUPYRT_FAST_QUANTIZE": "yes"}, {}),
    ({"CUPYRT_WGMMA": "0"}, {"CUPYRT_WGMMA": False}),
    ({"CUPYRT_FAST_QUANTIZE": "0", "CUPYRT_INT8_SMALLC": "0"},
     {"CUPYRT_FAST_QUANTIZE": False, "CUPYRT_INT8_SMALLC": False}),
    ({"CUPYRT_WGMMA_F16_FAST_EPILOGUE": "0"}, {"CUPYRT_WGMMA_F16_FAST_EPILOGUE": False}),
    ({"CUPYRT_WGMMA_F16_FAST_EPILOGUE": "1"}, {}),
    ({"CUPYRT_CUDNN": "0"}, {"CUPYRT_CUDNN": False}),
    ({"CUPYRT_PRECOMPILE": "0", "CUPYRT_CUDA_GRAPHS": "0"}, {}),     # no effect on tactics
    ({"UNRELATED": "0"}, {}),
])
def test_tactic_switches_away_from_default_join_the_key(env, want):
    """The timing-cache key's switch part is engine.settings.tactic_key(): the
    tactic-changing switches set away from their default, nothing else."""
    assert tactic_key(from_environ(env)) == want


def test_switches_change_the_timing_cache_key(monkeypatch):
    from engine.backends import cupy_backend as cb
    seen = []
    monkeypatch.setattr(cb, "layer_signature", lambda *a: {"type": "CONVOLUTION"})
    monkeypatch.setattr(cb.TimingCache, "key", staticmethod(lambda gpu, sig: seen.append(dict(sig))))
    fake = type("B", (), {"tf32": False, "gpu": "H100"})()
    for value in (None, "0"):
        if value is None:
            monkeypatch.delenv("CUPYRT_WGMMA_F16_FAST_EPILOGUE", raising=False)
        else:
            monkeypatch.setenv("CUPYRT_WGMMA_F16_FAST_EPILOGUE", value)
        cb.CupyBackend._signature_key(fake, None, (), (), None, ())
    assert seen == [{"type": "CONVOLUTION"},
                    {"type": "CONVOLUTION", "switches": {"CUPYRT_WGMMA_F16_FAST_EPILOGUE": False}}]
