"""CUDA-graph replay orders itself after the caller's stream (CPU, a recording stand-in
for CuPy): the feeds are uploaded on the caller's stream and the graph's stream is
non-blocking, so the replay's input copies must wait for those uploads. Without the wait
an H200 under load replayed the previous call's inputs (tests/gpu/test_selection_gpu.py)."""
import types

import numpy as np

from engine.backends.cupy_backend import CupyBackend, _Graph


class Stream:
    def __init__(self, log, ptr):
        self.log, self.ptr = log, ptr

    def record(self):
        self.log.append(("record", self.ptr))
        return ("event", self.ptr)

    def wait_event(self, event):
        self.log.append(("wait", self.ptr, event))

    def synchronize(self):
        self.log.append(("sync", self.ptr))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _backend(log, current):
    graph = types.SimpleNamespace(launch=lambda s: log.append(("launch", s.ptr)))
    cp = types.SimpleNamespace(
        cuda=types.SimpleNamespace(get_current_stream=lambda: current),
        copyto=lambda dst, src: log.append(("copy", dst, src)))
    backend = CupyBackend.__new__(CupyBackend)
    backend.cp, backend._build_shapes, backend.use_graphs = cp, {}, True
    backend.cudnn_plans = None           # no engine plans: the settings' store, as before
    return backend, graph


def _replay(stream_arg=None):
    log = []
    current = Stream(log, 1)
    backend, graph = _backend(log, current)
    entry = _Graph(graph, {"x": "static-x"}, {"y": "static-y"}, pool=None, stream=Stream(log, 2))
    x = np.zeros((2, 3), np.float32)
    context = types.SimpleNamespace(profiler=None)
    context._cuda_graphs = {(("x", (2, 3), "float32"),): entry}
    outs = backend.execute(context, {"x": x}, sched=None, stream=stream_arg(log) if stream_arg else None)
    return log, outs


def test_replay_on_the_graph_stream_waits_for_the_callers_uploads_first():
    log, outs = _replay()
    assert outs == {"y": "static-y"}
    steps = [e[0] for e in log]
    assert steps == ["record", "wait", "copy", "launch", "sync"]
    assert log[0] == ("record", 1) and log[1] == ("wait", 2, ("event", 1))
    assert log[3] == ("launch", 2)


def test_replay_on_the_callers_own_stream_needs_no_wait():
    # execute_async_v3 with the stream the feeds were uploaded on: no event, no sync
    log, _ = _replay(lambda log: Stream(log, 1))
    assert [e[0] for e in log] == ["copy", "launch"]


def test_profiler_marks_are_events_on_the_current_stream_read_after_a_sync():
    log = []

    class Event:
        def record(self, stream=None):
            log.append(("record", stream))
            self.t = len(log)

        def synchronize(self):
            log.append(("sync", self.t))

    backend = CupyBackend.__new__(CupyBackend)
    backend.cp = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Event=Event, get_elapsed_time=lambda a, b: float(b.t - a.t)))
    start, end = backend.mark(), backend.mark()
    assert log == [("record", None), ("record", None)]      # None: CuPy's current stream
    assert backend.elapsed_ms(start, end) == 1.0
    assert log[-1] == ("sync", 2)                           # the end event waited for
