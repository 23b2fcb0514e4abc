"""CUDA-graph replay reads bound inputs in place (CPU: CuPy's graph calls played on NumPy).

A fake stream in capture records each layer the loop runs, and the fake graph re-runs
them on the very arrays they were captured on, as a CUDA graph reads fixed addresses.
So a graph that reads a bound input in place follows the caller's array with no copy,
and one on private buffers follows only what was copied into them: the outputs tell
which one ran, and the copy log tells what was written where."""
import contextlib
import gc
import itertools
import threading
import types
import weakref

import numpy as np
import pytest

import engine as rt
from engine.backends.cupy_backend import CupyBackend
from engine.layer_exec import run_layer

RNG = np.random.default_rng(11)
SHAPE = (3, 8)
KEY = (("x", SHAPE, "float32"),)


class DeviceArray(np.ndarray):
    """A NumPy array with CuPy's ``data.ptr`` and ``data.device_id`` (device 0)."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0], device_id=0)


def device(a):
    """A "device" copy of ``a`` (the upload ``cp.asarray`` makes of a host array)."""
    return np.array(a, np.float32).view(DeviceArray)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


class Stream:
    def __init__(self, cp, ptr):
        self.cp, self.ptr = cp, ptr

    def record(self):
        self.cp.log.append(("record", self.ptr))
        return ("event", self.ptr)

    def wait_event(self, event):
        self.cp.log.append(("wait", self.ptr, event))

    def synchronize(self):
        self.cp.log.append(("sync", self.ptr))

    def begin_capture(self):
        if self.cp.refuse_capture:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.cp.log.append(("capture", self.ptr))
        self.cp.capturing = []

    def end_capture(self):
        graph, self.cp.capturing = Graph(self.cp, self.cp.capturing), None
        return graph

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Graph:
    def __init__(self, cp, steps):
        self.cp, self.steps = cp, steps

    def upload(self, stream):
        pass

    def launch(self, stream):
        self.cp.log.append(("launch", stream.ptr))
        for step in self.steps:
            step()


class Pool:
    def __init__(self, cp):
        self.cp = cp

    def malloc(self, nbytes):
        raise AssertionError("the fake allocates through NumPy")

    def free_all_blocks(self):
        self.cp.log.append(("free", self))


class FakeCupy:
    """The CuPy calls of the graph path, on NumPy, each logged."""

    def __init__(self, device_id=0):
        self.log, self.capturing, self.refuse_capture = [], None, False
        self.current = Stream(self, 1)
        ptrs = itertools.count(2)
        self.cuda = types.SimpleNamespace(
            get_current_stream=lambda: self.current,
            Stream=lambda non_blocking: Stream(self, next(ptrs)),
            MemoryPool=lambda: Pool(self),
            using_allocator=lambda malloc: contextlib.nullcontext(),
            Device=lambda: types.SimpleNamespace(
                id=device_id, synchronize=lambda: self.log.append(("device sync",))))

    def asarray(self, x):
        return x if isinstance(x, DeviceArray) else device(x)

    def asnumpy(self, x):
        return np.array(x).view(np.ndarray)

    def empty_like(self, a):
        return np.empty_like(a)

    def copyto(self, dst, src):
        self.log.append(("copy", dst, src))
        np.copyto(dst, src)

    def copies(self, since=0):
        return [e for e in self.log[since:] if e[0] == "copy"]

    def count(self, what, since=0):
        return sum(e[0] == what for e in self.log[since:])


def gpu_engine(cp):
    """sigmoid -> tanh, its backend the CuPy one on ``cp``: each layer runs its NumPy
    kernel, and a stream in capture records it for the graph to re-run."""
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 8))
    t = net.add_activation(x, rt.ActivationType.SIGMOID).get_output(0)
    t = net.add_activation(t, rt.ActivationType.TANH).get_output(0)
    t.name = "y"
    net.mark_output(t)
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    engine = b.build_engine(net, cfg)

    backend = CupyBackend.__new__(CupyBackend)
    backend.cp, backend._build_shapes, backend.use_graphs = cp, {}, True
    backend.cudnn_plans, backend.concat_elision, backend._runs = None, False, threading.local()
    backend._choice, backend._capturable, backend._trace = {}, {}, None
    backend.selected, backend.graph_notes = {}, []

    def run(layer, inputs, precision, out_dtypes):
        outs = [device(v) for v in run_layer(layer, inputs, precision, out_dtypes)]
        if cp.capturing is not None:      # captured, not run: the outputs wait for a launch
            for o in outs:
                o[...] = np.nan

            def replay():
                for o, v in zip(outs, run_layer(layer, inputs, precision, out_dtypes)):
                    np.copyto(o, v)
            cp.capturing.append(replay)
        return outs
    backend.run_layer = run
    engine.backend = backend
    return engine


def reference(x):
    return np.tanh(1 / (1 + np.exp(-np.asarray(x, np.float64))))


def bound_context(cp, x):
    engine = gpu_engine(cp)
    ctx = engine.create_execution_context()
    y = device(np.full(SHAPE, np.nan))
    ctx.set_tensor_address("x", x)
    ctx.set_tensor_address("y", y)
    return engine, ctx, y


def run_bound(ctx, x, y, calls, stream=None):
    """``calls`` enqueues, each on new contents written into ``x`` in place."""
    for _ in range(calls):
        x[...] = randn(*x.shape)
        assert ctx.execute_async_v3(stream)
        np.testing.assert_allclose(y, reference(x), rtol=1e-6)


def writes_into(cp, a):
    return [e for e in cp.copies() if np.shares_memory(e[1], a)]


def test_bound_input_is_read_in_place_and_replays_copy_nothing_into_the_graph():
    cp = FakeCupy()
    x = device(randn(*SHAPE))
    engine, ctx, y = bound_context(cp, x)
    run_bound(ctx, x, y, 5)               # eager, capture and replay, three replays
    graph = ctx._cuda_graphs[KEY]
    assert graph.in_place == {"x"} and graph.inputs["x"] is x
    assert cp.count("capture") == 1 and cp.count("launch") == 4
    # no input copy at all: every copy is the output's, into the bound y
    assert cp.copies() and all(dst is y for _, dst, _ in cp.copies())
    assert engine.backend.graph_notes == ["x (3, 8) float32: graph reads x in place (zero-copy)"]
    assert ctx.bound_feeds == {}          # only during the call


def test_a_view_of_the_captured_memory_is_the_same_input():
    cp = FakeCupy()
    x = device(randn(*SHAPE))
    _, ctx, y = bound_context(cp, x)
    run_bound(ctx, x, y, 2)
    view = x[:]
    assert view is not x and view.data.ptr == x.data.ptr
    ctx.set_tensor_address("x", view)
    mark = len(cp.log)
    run_bound(ctx, view, y, 2)
    assert cp.count("capture", mark) == 0 and cp.count("launch", mark) == 2
    assert all(dst is y for _, dst, _ in cp.copies(mark))
    assert ctx._cuda_graphs[KEY].in_place == {"x"}


@pytest.mark.parametrize("stream,steps", [
    (None, ["record", "wait", "launch", "sync", "copy"]),     # the graph's own stream
    ("current", ["launch", "copy"]),                          # the stream x was written on
], ids=["graph_stream", "callers_stream"])
def test_in_place_replay_waits_for_the_callers_stream_before_reading(stream, steps):
    cp = FakeCupy()
    x = device(randn(*SHAPE))
    _, ctx, y = bound_context(cp, x)
    run_bound(ctx, x, y, 2)
    mark = len(cp.log)
    run_bound(ctx, x, y, 1, cp.current if stream == "current" else None)
    assert [e[0] for e in cp.log[mark:]] == steps
    if stream is None:
        graph_stream = ctx._cuda_graphs[KEY].stream.ptr
        assert cp.log[mark] == ("record", 1)
        assert cp.log[mark + 1] == ("wait", graph_stream, ("event", 1))


def test_binding_another_array_captures_once_more_on_private_buffers_and_never_writes_the_old():
    cp = FakeCupy()
    x = device(randn(*SHAPE))
    engine, ctx, y = bound_context(cp, x)
    run_bound(ctx, x, y, 3)
    old = ctx._cuda_graphs[KEY]
    old_graph, old_pool = weakref.ref(old), old.pool
    del old
    graph_alive_at_free = []

    def free_all_blocks():               # the blocks its arrays held are free by then
        gc.collect()
        graph_alive_at_free.append(old_graph() is not None)
        cp.log.append(("free", old_pool))
    old_pool.free_all_blocks = free_all_blocks
    kept = np.array(x)
    x2 = device(randn(*SHAPE))
    ctx.set_tensor_address("x", x2)
    mark = len(cp.log)
    run_bound(ctx, x2, y, 3)             # the outputs follow x2's contents
    np.testing.assert_array_equal(x, kept)
    assert writes_into(cp, x) == []
    new = ctx._cuda_graphs[KEY]
    assert new.in_place == frozenset()
    assert not np.shares_memory(new.inputs["x"], x2) and not np.shares_memory(new.inputs["x"], x)
    assert cp.count("capture", mark) == 1
    # x2 copied by the capture, then by each of the three replays
    assert [(dst is new.inputs["x"]) for _, dst, src in cp.copies(mark) if src is x2] == [True] * 4
    # the old graph waited for, its pool freed, all before the new capture
    steps = [e[0] for e in cp.log[mark:]]
    assert steps.index("device sync") < steps.index("free") < steps.index("capture")
    assert [e[1] for e in cp.log[mark:] if e[0] == "free"] == [old_pool]
    assert graph_alive_at_free == [False]
    assert engine.backend.graph_notes[1:] == [
        "x (3, 8) float32: x fed from another array than the bound one read in place; graph "
        "captured again, copies every input from now on"]
    # binding x again: the private graph copies it, no capture
    ctx.set_tensor_address("x", x)
    mark = len(cp.log)
    run_bound(ctx, x, y, 2)
    assert cp.count("capture", mark) == 0 and ctx._cuda_graphs[KEY] is new
    assert [dst is new.inputs["x"] for _, dst, src in cp.copies(mark) if src is x] == [True] * 2
    assert len(engine.backend.graph_notes) == 2


def test_execute_feeds_another_array_than_the_bound_one_captured():
    # execute() after execute_async_v3: its fresh upload is not the captured memory
    cp = FakeCupy()
    x = device(randn(*SHAPE))
    engine, ctx, y = bound_context(cp, x)
    run_bound(ctx, x, y, 2)
    kept, host = np.array(x), randn(*SHAPE)
    np.testing.assert_allclose(ctx.execute({"x": host})["y"], reference(host), rtol=1e-6)
    np.testing.assert_array_equal(x, kept)
    assert writes_into(cp, x) == []
    assert ctx._cuda_graphs[KEY].in_place == frozenset()
    assert "x fed from another array" in engine.backend.graph_notes[-1]


def test_a_failed_capture_again_runs_the_shape_eagerly():
    cp = FakeCupy()
    x = device(randn(*SHAPE))
    engine, ctx, y = bound_context(cp, x)
    run_bound(ctx, x, y, 2)
    kept = np.array(x)
    cp.refuse_capture = True
    x2 = device(randn(*SHAPE))
    ctx.set_tensor_address("x", x2)
    mark = len(cp.log)
    run_bound(ctx, x2, y, 2)
    assert ctx._cuda_graphs[KEY] == "eager"
    assert cp.count("launch", mark) == 0
    np.testing.assert_array_equal(x, kept)
    assert engine.backend.graph_notes[-1] == (
        "eager: capture failed (RuntimeError: operation not permitted when stream is capturing)")


@pytest.mark.parametrize("bind", ["dict", "bound_array"])
def test_execute_with_a_dict_copies_into_private_buffers(bind):
    cp = FakeCupy()
    engine = gpu_engine(cp)
    ctx = engine.create_execution_context()
    x = device(randn(*SHAPE))
    if bind == "bound_array":             # bound, but execute() is not the enqueue call
        ctx.set_tensor_address("x", x)
    for call in range(4):
        feed = x if bind == "bound_array" else randn(*SHAPE)     # a host array: uploaded
        if bind == "bound_array":
            x[...] = randn(*SHAPE)
        np.testing.assert_allclose(ctx.execute({"x": feed})["y"], reference(feed), rtol=1e-6)
        if call >= 1:
            graph = ctx._cuda_graphs[KEY]
            dst, src = cp.copies()[-1][1:]
            assert dst is graph.inputs["x"] and np.array_equal(src, feed)
    assert graph.in_place == frozenset() and cp.count("launch") == 3
    assert not np.shares_memory(graph.inputs["x"], x)
    assert engine.backend.graph_notes == ["x (3, 8) float32: graph copies x (not a bound array)"]


def strided():
    return device(randn(3, 16))[:, ::2]


@pytest.mark.parametrize("make,device_id,why", [
    (strided, 0, "not C-contiguous"),
    (lambda: randn(*SHAPE), 0, "converted from the bound array"),     # host: uploaded per call
    (lambda: device(randn(*SHAPE)), 1, "on device 0, not 1"),
], ids=["strided", "host_array", "other_device"])
def test_odd_bound_inputs_are_copied_into_private_buffers(make, device_id, why):
    cp = FakeCupy(device_id)
    x = make()
    engine, ctx, y = bound_context(cp, x)
    mark = len(cp.log)
    run_bound(ctx, x, y, 4)
    graph = ctx._cuda_graphs[KEY]
    assert graph.in_place == frozenset() and not np.shares_memory(graph.inputs["x"], x)
    assert writes_into(cp, x) == []
    input_copies = [e for e in cp.copies(mark) if e[1] is graph.inputs["x"]]
    assert len(input_copies) == 4                 # the capture's and three replays'
    assert engine.backend.graph_notes == [f"x (3, 8) float32: graph copies x ({why})"]
