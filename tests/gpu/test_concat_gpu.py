"""Concat elision on the CuPy backend: an inception-style block (1x1, 3x3, 5x5
convolutions and a 3x3 max pool of one input, concatenated, then a convolution)
against the NumPy backend; the producers write into the concat's NHWC buffer
(checked by address), a concat that must not be elided is still right, and a
CUDA-graph replay equals eager execution."""
import os
import sys

import numpy as np
import pytest

import engine as rt
from engine.gpu import concat as C
from engine.gpu.tactics import by_name
from engine.testing import rel_l2

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from test_concat_plan import inception  # noqa: E402

cp = pytest.importorskip("cupy")
RNG = np.random.default_rng(2024)
N, CIN, HW, WIDTHS, HEAD = 4, 32, 16, (16, 32, 8), 16
TOTAL = sum(WIDTHS) + CIN


def randn(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


def block(half_concat=False, concat_is_output=False, side_output=False):
    """data -> inception block -> 1x1 conv head. ``side_output``: the 3x3 branch is
    also a network output (no elision). Returns (network, concat layer)."""
    net = rt.Network()
    x = net.add_input("data", rt.float32, (N, CIN, HW, HW))
    cat, producers = inception(net, x, CIN, WIDTHS)
    if half_concat:
        cat.precision = rt.float16
    if concat_is_output:
        net.mark_output(cat.get_output(0))
    else:
        head = net.add_convolution_nd(cat.get_output(0), HEAD, (1, 1),
                                      kernel=randn(HEAD, TOTAL, 1, 1, scale=0.1), bias=randn(HEAD))
        net.mark_output(head.get_output(0))
    if side_output:
        net.mark_output(producers[1].get_output(0))
    return net, cat


def build(net, backend, fp16=False, obey=False):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = backend
    # every layer in the precision the flag gives it: precision by timing moved a small FP16
    # producer to FP32 once under four test processes (the concat then stored FLOAT)
    cfg.precision_by_timing = False
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    if obey:
        cfg.set_flag(rt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(b.build_serialized_network(net, cfg))


def record(engine):
    """Keep every layer's outputs of the eager runs (by layer name)."""
    seen, backend = {}, engine.backend
    inner = backend.run_layer

    def run_layer(layer, inputs, precision, out_dtypes):
        outs = inner(layer, inputs, precision, out_dtypes)
        seen[layer.name] = outs
        return outs
    backend.run_layer = run_layer
    return seen


def check(got, ref, fp16):
    for name, value in ref.items():
        assert rel_l2(got[name], value) <= (1e-2 if fp16 else 1e-5), name


def concat_name(engine):
    return next(l.name for l in engine.network._layers if l.layer_type == rt.LayerType.CONCATENATION)


def writes_into_buffer(engine, producer, concat_dtype):
    """Whether the producer's chosen tactic can write the concat buffer's dtype."""
    layer = next(l for l in engine.network._layers if l.name == producer)
    tactic = by_name(layer, engine.backend.selected[producer])
    if not getattr(tactic, "writes_into_concat", False):
        return False
    if layer.layer_type == rt.LayerType.POOLING or tactic.name.startswith("conv.depthwise"):
        precision = engine._precision[producer]
        return concat_dtype == (np.float16 if precision == rt.float16 else np.float32)
    return True


@pytest.mark.parametrize("mode", ["fp32", "fp16", "fp16_half_concat"])
def test_inception_block_matches_numpy_and_its_producers_write_the_concat(mode):
    fp16, half = mode != "fp32", mode == "fp16_half_concat"
    net, _ = block(half_concat=half)
    feeds = {"data": randn(N, CIN, HW, HW)}
    ref = build(net, "numpy", fp16, obey=half).create_execution_context().execute(feeds)
    engine = build(net, "cupy", fp16, obey=half)
    engine.backend.use_graphs = False
    seen = record(engine)
    ctx = engine.create_execution_context()
    check(ctx.execute(feeds), ref, fp16)
    cat = concat_name(engine)
    assert engine.backend.selected[cat] == C.ELIDED.name
    elision = engine.backend.elision
    assert len(elision.plan) == 4 and elision.concats == {cat}
    y = seen[cat][0]
    buf = y.transpose(0, 2, 3, 1)
    assert buf.flags.c_contiguous and buf.shape == (N, HW, HW, TOTAL)
    # an FP16 engine stores the concat half: it reads only half tensors (runtime.py)
    assert buf.dtype == (np.float16 if fp16 else np.float32)
    placed = {}
    for producer, slot in elision.plan.items():
        placed[producer] = C.in_place(seen[producer][0], buf, slot.offset)
        assert placed[producer] == writes_into_buffer(engine, producer, buf.dtype), \
            (producer, engine.backend.selected[producer])
    if half:       # every branch in place: the tensor-core / pooling tactics all write FP16
        assert all(placed.values()), engine.backend.selected
        assert elision.counts["elided"] >= 1
    kind = "elided" if all(placed.values()) else "copied" if not any(placed.values()) else "partial"
    assert elision.counts[kind] >= 1, elision.counts
    again = ctx.execute({"data": randn(N, CIN, HW, HW)})       # a second run, fresh buffers
    assert again


def test_a_concat_that_must_not_be_elided_is_still_right():
    net, _ = block(side_output=True)
    feeds = {"data": randn(N, CIN, HW, HW)}
    ref = build(net, "numpy", True).create_execution_context().execute(feeds)
    engine = build(net, "cupy", True)
    engine.backend.use_graphs = False
    seen = record(engine)
    check(engine.create_execution_context().execute(feeds), ref, True)
    assert engine.backend.elision.plan == {}
    assert engine.backend.elision.counts == {"elided": 0, "partial": 0, "copied": 0}
    cat = seen[concat_name(engine)][0]
    for name, outs in seen.items():
        if name != concat_name(engine):
            assert not cp.shares_memory(outs[0], cat), name


def test_a_producer_forced_onto_the_generic_tactic_is_copied_and_the_rest_stay_in_place():
    net, _ = block(half_concat=True)
    feeds = {"data": randn(N, CIN, HW, HW)}
    ref = build(net, "numpy", True, obey=True).create_execution_context().execute(feeds)
    engine = build(net, "cupy", True, obey=True)
    engine.backend.use_graphs = False
    plan = C.plan_concat_elision(engine.network)
    generic = min(plan, key=lambda p: plan[p].offset)          # the first branch
    engine.backend.forced[generic] = "cupy.generic"
    engine.backend._build_shapes = {"data": (N, CIN, HW, HW)}
    seen = record(engine)
    check(engine.create_execution_context().execute(feeds), ref, True)
    assert engine.backend.selected[generic] == "cupy.generic"
    buf = seen[concat_name(engine)][0].transpose(0, 2, 3, 1)
    assert not C.in_place(seen[generic][0], buf, 0)
    for p in plan:
        if p != generic:
            assert C.in_place(seen[p][0], buf, plan[p].offset) == writes_into_buffer(engine, p, buf.dtype)
    assert engine.backend.elision.counts["partial"] >= 1


def test_an_elided_concat_can_be_the_network_output():
    net, _ = block(half_concat=True, concat_is_output=True)
    feeds = {"data": randn(N, CIN, HW, HW)}
    ref = build(net, "numpy", True, obey=True).create_execution_context().execute(feeds)
    engine = build(net, "cupy", True, obey=True)
    engine.backend.use_graphs = False
    check(engine.create_execution_context().execute(feeds), ref, True)
    # a network output keeps its declared FP32: the convolutions still write into it,
    # the FP16 pool branch is copied into its slice
    counts = engine.backend.elision.counts
    assert counts["elided"] + counts["partial"] >= 1 and counts["copied"] == 0


@pytest.mark.parametrize("cudnn", [False, True], ids=["own_kernels", "cudnn_allowed"])
def test_disabling_elision_gives_the_same_result(cudnn):
    """Our kernels take the concat buffer as a pitch and offset of the same arithmetic:
    bit-equal. A cuDNN graph writing into a concat slice is another graph (the output
    pitch is part of it) whose plan is chosen by timing on its own: it may run another
    cuDNN engine (seen on an H200 under load: 51 of 16,384 values 3e-4 apart), so
    there the two agree to FP16 rounding."""
    from engine.settings import overridden
    with overridden(cudnn=cudnn):
        net, _ = block(half_concat=True)
        feeds = {"data": randn(N, CIN, HW, HW)}
        engine = build(net, "cupy", True, obey=True)
        engine.backend.use_graphs = False
        with_elision = engine.create_execution_context().execute(feeds)
        chosen = dict(engine.backend.selected)
        engine.backend.concat_elision = False
        without = engine.create_execution_context().execute(feeds)
    assert engine.backend.selected == chosen
    if not cudnn:
        assert "conv.cudnn" not in chosen.values()
    for name in with_elision:
        if cudnn and "conv.cudnn" in chosen.values():
            assert rel_l2(with_elision[name], without[name]) <= 1e-3
        else:
            np.testing.assert_array_equal(with_elision[name], without[name])


@pytest.mark.parametrize("half", [False, True], ids=["fp16", "fp16_half_concat"])
def test_cuda_graph_replay_of_the_block_equals_eager(half):
    net, _ = block(half_concat=half)
    feeds = {"data": randn(N, CIN, HW, HW)}
    ref = build(net, "numpy", True, obey=half).create_execution_context().execute(feeds)
    engine = build(net, "cupy", True, obey=half)
    ctx = engine.create_execution_context()
    first = ctx.execute(feeds)                          # eager: selects, compiles
    check(first, ref, True)
    for _ in range(3):                                  # capture, then replay
        ctx.execute({"data": randn(N, CIN, HW, HW)})
    graphs = ctx.__dict__.get("_cuda_graphs", {})
    assert any(not isinstance(v, str) for v in graphs.values()), engine.backend.graph_notes
    x2 = randn(N, CIN, HW, HW)
    replayed = ctx.execute({"data": x2})
    engine.backend.use_graphs = False
    eager = engine.create_execution_context().execute({"data": x2})
    engine.backend.use_graphs = True
    for name in replayed:
        np.testing.assert_array_equal(replayed[name], eager[name])
    assert engine.backend.elision.counts["elided"] + engine.backend.elision.counts["partial"] >= 1
