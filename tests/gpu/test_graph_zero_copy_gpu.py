"""Bound inputs read in place by the CUDA graph (execute_async_v3), against the NumPy
engine: replays follow new contents written into the bound array, with no copy of it;
binding another array captures once more on private buffers, the first array never
written and the old graph's memory given back; odd bound arrays are copied."""
import gc
import weakref

import numpy as np
import pytest

import engine as rt
from engine.testing import rel_l2

cp = pytest.importorskip("cupy")
RNG = np.random.default_rng(29)
SHAPE = (4, 16, 10, 10)
TOL = 1e-2                                # FP16 against the NumPy engine's FP16 emulation


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def network():
    net = rt.Network()
    x = net.add_input("x", rt.float32, SHAPE)
    conv = net.add_convolution_nd(x, 16, (3, 3), kernel=randn(16, 16, 3, 3) * 0.2, bias=randn(16))
    conv.padding_nd = (1, 1)
    y = net.add_activation(conv.get_output(0), rt.ActivationType.RELU).get_output(0)
    y.name = "y"
    net.mark_output(y)
    return net


def build(net, backend):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = backend
    cfg.precision_by_timing = False
    cfg.set_flag(rt.BuilderFlag.FP16)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(b.build_serialized_network(net, cfg))


@pytest.fixture(scope="module")
def engines():
    """(NumPy engine, CuPy engine) of one network; each test makes its own context."""
    net = network()
    return build(net, "numpy"), build(net, "cupy")


@pytest.fixture
def copies(monkeypatch):
    """Every cupy.copyto call, (dst, src) (the backend's input copies go through it)."""
    calls, real = [], cp.copyto

    def copyto(dst, src, *args, **kwargs):
        calls.append((dst, src))
        return real(dst, src, *args, **kwargs)
    monkeypatch.setattr(cp, "copyto", copyto)
    return calls


def graph_of(ctx):
    graphs = [g for g in ctx.__dict__.get("_cuda_graphs", {}).values() if not isinstance(g, str)]
    assert len(graphs) == 1, ctx.__dict__.get("_cuda_graphs")
    return graphs[0]


def bind(ctx, x):
    """Bind ``x`` and a NaN-filled output (any element left unwritten fails the check)."""
    y = cp.full(SHAPE, cp.nan, cp.float32)
    ctx.set_tensor_address("x", x)
    ctx.set_tensor_address("y", y)
    return y


def enqueue(ctx, ref, x, y, stream, calls):
    """``calls`` enqueues on ``stream``, each after new contents are written into the
    bound ``x`` on that stream; each output checked against the NumPy engine."""
    for _ in range(calls):
        host = randn(*SHAPE)
        with stream:
            if isinstance(x, np.ndarray):
                x[...] = host
            else:
                x[...] = cp.asarray(host)
            assert ctx.execute_async_v3(stream)
        stream.synchronize()
        assert rel_l2(cp.asnumpy(y), ref.execute({"x": host})["y"]) <= TOL


def reads(calls, a):
    return [c for c in calls if isinstance(c[1], cp.ndarray) and c[1].data.ptr == a.data.ptr]


def writes(calls, a):
    return [c for c in calls if isinstance(c[0], cp.ndarray) and cp.may_share_memory(c[0], a)]


def start(engines):
    """(CuPy engine, NumPy reference context, a fresh context with a random input bound,
    that input, the bound output, a non-blocking stream)."""
    ref_engine, engine = engines
    ctx = engine.create_execution_context()
    x = cp.asarray(randn(*SHAPE))
    stream = cp.cuda.Stream(non_blocking=True)
    return engine, ref_engine.create_execution_context(), ctx, x, bind(ctx, x), stream


def test_replays_read_the_bound_input_in_place_and_follow_its_contents(engines, copies):
    engine, ref, ctx, x, y, stream = start(engines)
    notes = len(engine.backend.graph_notes)
    enqueue(ctx, ref, x, y, stream, 2)            # eager (tactics), then capture and replay
    graph = graph_of(ctx)
    assert graph.in_place == {"x"} and graph.inputs["x"] is x, engine.backend.graph_notes
    del copies[:]
    enqueue(ctx, ref, x, y, stream, 3)
    assert reads(copies, x) == [] and writes(copies, x) == []
    assert [dst.data.ptr for dst, _ in copies] == [y.data.ptr] * 3      # the output's, only
    assert graph_of(ctx) is graph
    assert engine.backend.graph_notes[notes:] == [
        f"x {SHAPE} float32: graph reads x in place (zero-copy)"]


def test_another_bound_array_captures_once_on_private_buffers_and_the_first_is_not_written(
        engines, copies):
    engine, ref, ctx, x, y, stream = start(engines)
    enqueue(ctx, ref, x, y, stream, 3)
    old = graph_of(ctx)
    assert old.in_place == {"x"}, engine.backend.graph_notes
    old_graph, pool = weakref.ref(old), old.pool
    held, out_bytes = pool.total_bytes(), old.outputs["y"].nbytes
    del old
    kept = cp.asnumpy(x)
    notes = len(engine.backend.graph_notes)

    x2 = cp.asarray(randn(*SHAPE))
    ctx.set_tensor_address("x", x2)
    del copies[:]
    enqueue(ctx, ref, x2, y, stream, 3)           # captured again, then replays
    np.testing.assert_array_equal(cp.asnumpy(x), kept)
    assert writes(copies, x) == []
    new = graph_of(ctx)
    assert new.in_place == frozenset()
    assert not cp.may_share_memory(new.inputs["x"], x2)
    assert len(reads(copies, x2)) == 4            # the capture's, then each replay's
    assert engine.backend.graph_notes[notes:] == [
        f"x {SHAPE} float32: x fed from another array than the bound one read in place; "
        "graph captured again, copies every input from now on"]
    gc.collect()
    assert old_graph() is None                    # the old graph and its outputs let go
    assert held - pool.total_bytes() >= out_bytes

    # a third array: the private graph copies it, nothing captured
    x3 = cp.asarray(randn(*SHAPE))
    ctx.set_tensor_address("x", x3)
    enqueue(ctx, ref, x3, y, stream, 2)
    assert graph_of(ctx) is new and len(engine.backend.graph_notes) == notes + 1
    np.testing.assert_array_equal(cp.asnumpy(x), kept)


def test_execute_with_a_dict_copies_into_private_buffers(engines, copies):
    ref_engine, engine = engines
    ref = ref_engine.create_execution_context()
    ctx = engine.create_execution_context()
    notes = len(engine.backend.graph_notes)
    for call in range(4):
        host = randn(*SHAPE)
        x = cp.asarray(host)
        ctx.set_tensor_address("x", x)            # bound, but execute() is not the enqueue
        del copies[:]
        assert rel_l2(ctx.execute({"x": x})["y"], ref.execute({"x": host})["y"]) <= TOL
        if call >= 2:                             # replays: one copy of x into the graph
            graph = graph_of(ctx)
            assert [dst is graph.inputs["x"] for dst, _ in reads(copies, x)] == [True]
    assert graph.in_place == frozenset()
    assert engine.backend.graph_notes[notes:] == [
        f"x {SHAPE} float32: graph copies x (not a bound array)"]


def strided():
    return cp.asarray(randn(*SHAPE[:3], 2 * SHAPE[3]))[..., ::2]


@pytest.mark.parametrize("make,why", [
    (strided, "not C-contiguous"),
    (lambda: randn(*SHAPE), "converted from the bound array"),      # host: uploaded per call
], ids=["strided", "host_array"])
def test_odd_bound_inputs_are_copied_into_private_buffers(engines, copies, make, why):
    ref_engine, engine = engines
    ref = ref_engine.create_execution_context()
    ctx = engine.create_execution_context()
    x = make()
    y = bind(ctx, x)
    notes = len(engine.backend.graph_notes)
    stream = cp.cuda.Stream(non_blocking=True)
    enqueue(ctx, ref, x, y, stream, 4)
    graph = graph_of(ctx)
    assert graph.in_place == frozenset()
    if isinstance(x, cp.ndarray):
        assert writes(copies, x) == [] and not cp.may_share_memory(graph.inputs["x"], x)
        assert len(reads(copies, x)) == 4         # the capture's, then three replays'
    assert engine.backend.graph_notes[notes:] == [f"x {SHAPE} float32: graph copies x ({why})"]
