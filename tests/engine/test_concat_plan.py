"""Concat elision without a GPU: which producers the plan places where, and the
run-time protocol (placement, claims, the elided concat's checks and copies)
driven with NumPy standing in for CuPy."""
import numpy as np
import pytest

import engine as rt
from engine.backends.numpy_backend import NumpyBackend
from engine.gpu import concat as C
from engine.gpu.tactics import Tactic

RNG = np.random.default_rng(11)


def randn(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


def inception(net, x, c, widths=(8, 16, 4), pool=True, relu=True):
    """1x1, 3x3 and 5x5 convolutions (+ ReLU) and a 3x3 max pool of ``x``, concatenated.
    Returns (concat layer, producer layers in concat order)."""
    producers, outs = [], []
    for k, r in zip(widths, (1, 3, 5)):
        conv = net.add_convolution_nd(x, k, (r, r), kernel=randn(k, c, r, r, scale=0.3),
                                      bias=randn(k, scale=0.1), padding_nd=(r // 2, r // 2))
        producers.append(conv)
        y = conv.get_output(0)
        if relu:
            y = net.add_activation(y, rt.ActivationType.RELU).get_output(0)
        outs.append(y)
    if pool:
        p = net.add_pooling_nd(x, rt.PoolingType.MAX, (3, 3), stride_nd=(1, 1), padding_nd=(1, 1))
        producers.append(p)
        outs.append(p.get_output(0))
    return net.add_concatenation(outs), producers


def inception_net(n=2, c=8, hw=8, widths=(8, 16, 4), head=8):
    """data -> inception block -> 1x1 conv head (the network output)."""
    net = rt.Network()
    x = net.add_input("data", rt.float32, (n, c, hw, hw))
    cat, producers = inception(net, x, c, widths)
    total = sum(widths) + c
    head_conv = net.add_convolution_nd(cat.get_output(0), head, (1, 1),
                                       kernel=randn(head, total, 1, 1, scale=0.2), bias=randn(head))
    net.mark_output(head_conv.get_output(0))
    return net, cat, producers


def build(net, fp16=False, obey=False):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    if obey:
        cfg.set_flag(rt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return rt.Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(net, cfg))


# -- the plan --------------------------------------------------------------------------

def test_inception_block_places_every_branch_at_its_channel_offset():
    net = rt.Network()
    x = net.add_input("data", rt.float32, (2, 8, 8, 8))
    cat, producers = inception(net, x, 8, relu=False)
    net.mark_output(net.add_activation(cat.get_output(0), rt.ActivationType.RELU).get_output(0))
    plan = C.plan_concat_elision(net)
    assert plan == {producers[0].name: (cat.name, 0, 36), producers[1].name: (cat.name, 8, 36),
                    producers[2].name: (cat.name, 24, 36), producers[3].name: (cat.name, 28, 36)}
    assert plan[producers[1].name].offset == 8 and plan[producers[1].name].total == 36


def test_fused_activations_keep_the_branches_eligible_in_the_built_engine():
    net, _, _ = inception_net()
    raw_why = {}
    assert C.plan_concat_elision(net, raw_why) == {}          # ReLU layers sit between
    assert "ACTIVATION" in next(iter(raw_why.values()))
    engine = build(net)                                       # epilogue fusion folds them
    plan = C.plan_concat_elision(engine.network)
    assert len(plan) == 4
    cat = next(l for l in engine.network._layers if l.layer_type == rt.LayerType.CONCATENATION)
    assert {s.concat for s in plan.values()} == {cat.name}
    assert sorted(s.offset for s in plan.values()) == [0, 8, 24, 28]


def test_an_input_read_by_another_layer_prevents_elision():
    net = rt.Network()
    x = net.add_input("data", rt.float32, (2, 8, 8, 8))
    cat, producers = inception(net, x, 8, relu=False)
    side = net.add_activation(producers[1].get_output(0), rt.ActivationType.RELU)
    net.mark_output(cat.get_output(0))
    net.mark_output(side.get_output(0))
    why = {}
    assert C.plan_concat_elision(net, why) == {}
    assert "read by 2 layers" in why[cat.name]


def test_a_network_output_input_prevents_elision():
    net = rt.Network()
    x = net.add_input("data", rt.float32, (2, 8, 8, 8))
    cat, producers = inception(net, x, 8, relu=False)
    net.mark_output(cat.get_output(0))
    net.mark_output(producers[3].get_output(0))
    why = {}
    assert C.plan_concat_elision(net, why) == {}
    assert "network output" in why[cat.name]


@pytest.mark.parametrize("axis", [0, 2, 3])
def test_a_concat_along_another_axis_is_not_elided(axis):
    net = rt.Network()
    x = net.add_input("data", rt.float32, (2, 8, 8, 8))
    a = net.add_pooling_nd(x, rt.PoolingType.MAX, (1, 1))
    b = net.add_pooling_nd(x, rt.PoolingType.AVERAGE, (1, 1))
    cat = net.add_concatenation([a.get_output(0), b.get_output(0)], axis=axis)
    net.mark_output(cat.get_output(0))
    why = {}
    assert C.plan_concat_elision(net, why) == {}
    assert f"axis {axis}" in why[cat.name]


def test_dynamic_channels_are_not_elided():
    net = rt.Network()
    x = net.add_input("data", rt.float32, (2, -1, 8, 8))
    a = net.add_pooling_nd(x, rt.PoolingType.MAX, (3, 3), stride_nd=(1, 1), padding_nd=(1, 1))
    b = net.add_pooling_nd(x, rt.PoolingType.AVERAGE, (3, 3), stride_nd=(1, 1), padding_nd=(1, 1))
    cat = net.add_concatenation([a.get_output(0), b.get_output(0)])
    net.mark_output(cat.get_output(0))
    why = {}
    assert C.plan_concat_elision(net, why) == {}
    assert "static channels" in why[cat.name]


def test_dynamic_batch_and_spatial_dims_are_fine():
    net = rt.Network()
    x = net.add_input("data", rt.float32, (-1, 8, -1, -1))
    cat, producers = inception(net, x, 8, relu=False)
    net.mark_output(net.add_activation(cat.get_output(0), rt.ActivationType.RELU).get_output(0))
    assert len(C.plan_concat_elision(net)) == 4


def test_network_inputs_other_layer_types_and_repeated_tensors_are_not_elided():
    net = rt.Network()
    x = net.add_input("data", rt.float32, (2, 8, 8, 8))
    p = net.add_pooling_nd(x, rt.PoolingType.MAX, (1, 1))
    from_input = net.add_concatenation([x, p.get_output(0)])
    act = net.add_activation(x, rt.ActivationType.RELU)
    q = net.add_pooling_nd(x, rt.PoolingType.MAX, (1, 1))
    from_act = net.add_concatenation([act.get_output(0), q.get_output(0)])
    r = net.add_pooling_nd(x, rt.PoolingType.MAX, (1, 1))
    twice = net.add_concatenation([r.get_output(0), r.get_output(0)])
    for layer in (from_input, from_act, twice):
        net.mark_output(layer.get_output(0))
    why = {}
    assert C.plan_concat_elision(net, why) == {}
    assert "network input" in why[from_input.name]
    assert "ACTIVATION" in why[from_act.name]
    assert "twice" in why[twice.name]


def test_rank_3_concats_are_not_elided():
    net = rt.Network()
    x = net.add_input("data", rt.float32, (2, 4, 6))
    a = net.add_activation(x, rt.ActivationType.RELU)
    b = net.add_activation(x, rt.ActivationType.TANH)
    cat = net.add_concatenation([a.get_output(0), b.get_output(0)], axis=1)
    net.mark_output(cat.get_output(0))
    why = {}
    assert C.plan_concat_elision(net, why) == {}
    assert "rank 3" in why[cat.name]


def test_one_concat_elided_and_another_not_in_the_same_network():
    net = rt.Network()
    x = net.add_input("data", rt.float32, (2, 8, 8, 8))
    good, producers = inception(net, x, 8, relu=False)
    a = net.add_pooling_nd(x, rt.PoolingType.MAX, (1, 1))
    bad = net.add_concatenation([a.get_output(0), x])
    net.mark_output(net.add_activation(good.get_output(0), rt.ActivationType.RELU).get_output(0))
    net.mark_output(bad.get_output(0))
    plan = C.plan_concat_elision(net)
    assert {s.concat for s in plan.values()} == {good.name}
    assert set(plan) == {p.name for p in producers}


# -- the run-time protocol, NumPy standing in for CuPy ---------------------------------

class Plain(Tactic):
    """A producer that writes a fresh output (the generic tactic, cuBLAS in a graph)."""
    name = "test.plain"

    def run(self, state, layer, inputs, precision, out_dtypes):
        return NumpyBackend.run_layer(layer, inputs, precision, out_dtypes)


class Placing(Plain):
    """A producer that writes NHWC at a channel offset when handed the buffer, in
    the dtypes ``writable`` (as the conv/pool tactics do through their launchers)."""
    name = "test.placing"
    writes_into_concat = True

    def __init__(self, writable=(np.float16, np.float32), refuse=False):
        self.writable, self.refuse = writable, refuse
        self.placed = 0

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        (y,) = NumpyBackend.run_layer(layer, inputs, precision, out_dtypes)
        n, k, h, w = y.shape
        place = C.claim(into, (n, h, w, k), self.writable)
        if not place:
            return [y]
        if self.refuse:
            from kernels.gpu.errors import UnsupportedError
            raise UnsupportedError("this launcher takes no out=")
        buf, off = place["out"], place["out_channel_offset"]
        buf[..., off:off + k] = y.transpose(0, 2, 3, 1)
        self.placed += 1
        return [C.written(buf, place, k)]


@pytest.fixture
def numpy_as_cupy(monkeypatch):
    monkeypatch.setattr(C, "cupy", lambda: np)


def run_engine(engine, feeds, producer_tactics, elision):
    """The CuPy backend's run_layer loop (one run, one placement) over NumPy arrays.
    Returns (outputs, every layer's outputs by layer name)."""
    placement = elision.placement()
    values = {id(t): feeds[t.name] for t in engine.network._inputs}
    seen = {}
    for layer, precision, out_dtypes in engine.schedule():
        ins = [None if t is None else values[id(t)] for t in layer._inputs]
        if layer.layer_type == rt.LayerType.CONCATENATION:
            tactic = C.ELIDED
        else:
            tactic = producer_tactics.get(layer.name, Plain())
        outs = placement.run_layer(tactic, None, layer, ins, precision, out_dtypes)
        if outs is None:
            outs = tactic.run(None, layer, ins, precision, out_dtypes)
        seen[layer.name] = outs
        for t, v in zip(layer._outputs, outs):
            values[id(t)] = v
    assert placement.buffers == {}, "a concat left its buffer behind"
    return {t.name: np.asarray(values[id(t)]) for t in engine.network._outputs}, seen


def names(engine):
    cat = next(l for l in engine.network._layers if l.layer_type == rt.LayerType.CONCATENATION)
    plan = C.plan_concat_elision(engine.network)
    return cat.name, [n for n, _ in sorted(plan.items(), key=lambda kv: kv[1].offset)]


@pytest.mark.parametrize("mode", ["fp32", "fp16", "fp16_half_concat"])
def test_branches_in_place_give_the_reference_and_skip_the_copy(numpy_as_cupy, mode):
    net, cat_layer, _ = inception_net()
    if mode == "fp16_half_concat":
        cat_layer.precision = rt.float16
    engine = build(net, fp16=mode != "fp32", obey=mode == "fp16_half_concat")
    feeds = {"data": randn(2, 8, 8, 8)}
    ref = engine.create_execution_context().execute(feeds)
    elision = C.ConcatElision(engine)
    cat, producers = names(engine)
    # as on the GPU: convolution epilogues write either float type, pooling its input's
    compute = np.float32 if mode == "fp32" else np.float16
    tactics = {p: Placing() for p in producers[:3]}
    tactics[producers[3]] = Placing((compute,))
    got, seen = run_engine(engine, feeds, tactics, elision)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name])
    buf = seen[cat][0]
    # FP16 engine: the concat (a data-movement layer) reads only half tensors, so it
    # stores half too and every branch writes straight into it
    expect_all = True
    assert elision.counts == {"elided": 1, "partial": 0, "copied": 0}
    assert buf.dtype == (np.float32 if mode == "fp32" else np.float16)
    for p in producers:
        assert np.shares_memory(seen[p][0], buf) == (expect_all or p != producers[3])
    assert buf.transpose(0, 2, 3, 1).flags.c_contiguous      # the NHWC buffer itself


def test_a_producer_that_writes_its_own_output_is_copied_into_its_slice(numpy_as_cupy):
    net, _, _ = inception_net()
    engine = build(net)
    feeds = {"data": randn(2, 8, 8, 8)}
    ref = engine.create_execution_context().execute(feeds)
    elision = C.ConcatElision(engine)
    cat, producers = names(engine)
    tactics = {p: Placing() for p in producers}
    tactics[producers[0]] = Plain()          # the first branch: the buffer comes from the second
    got, seen = run_engine(engine, feeds, tactics, elision)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name])
    assert elision.counts["partial"] == 1
    assert not np.shares_memory(seen[producers[0]][0], seen[cat][0])
    assert np.shares_memory(seen[producers[1]][0], seen[cat][0])


def test_a_dtype_the_producer_cannot_write_falls_back_to_a_copy(numpy_as_cupy):
    net, _, _ = inception_net()
    engine = build(net)                      # the concat stores FP32
    feeds = {"data": randn(2, 8, 8, 8)}
    ref = engine.create_execution_context().execute(feeds)
    elision = C.ConcatElision(engine)
    cat, producers = names(engine)
    tactics = {p: Placing((np.float16,)) for p in producers}
    got, seen = run_engine(engine, feeds, tactics, elision)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name])
    assert elision.counts == {"elided": 0, "partial": 0, "copied": 1}
    assert all(t.placed == 0 for t in tactics.values())


def test_a_launcher_that_refuses_out_is_run_unplaced_and_not_asked_again(numpy_as_cupy):
    net, _, _ = inception_net()
    engine = build(net)
    feeds = {"data": randn(2, 8, 8, 8)}
    ref = engine.create_execution_context().execute(feeds)
    elision = C.ConcatElision(engine)
    cat, producers = names(engine)
    tactics = {p: Placing() for p in producers}
    tactics[producers[2]] = Placing(refuse=True)
    for _ in range(2):
        got, _ = run_engine(engine, feeds, tactics, elision)
        for name in ref:
            np.testing.assert_array_equal(got[name], ref[name])
    assert elision.refused == {producers[2]}
    assert elision.counts["partial"] == 2


def test_each_run_gets_fresh_buffers(numpy_as_cupy):
    net, _, _ = inception_net()
    engine = build(net)
    elision = C.ConcatElision(engine)
    cat, producers = names(engine)
    tactics = {p: Placing() for p in producers}
    _, first = run_engine(engine, {"data": randn(2, 8, 8, 8)}, tactics, elision)
    _, second = run_engine(engine, {"data": randn(2, 8, 8, 8)}, tactics, elision)
    assert not np.shares_memory(first[cat][0], second[cat][0])
    assert elision.counts["elided"] == 2


def test_the_elided_tactic_declines_what_it_cannot_join():
    net = rt.Network()
    x = net.add_input("data", rt.float32, (2, 4, 6))
    cat = net.add_concatenation([x, x], axis=1)
    t = C.ELIDED
    assert "rank-4" in t.supports(cat, [(2, 4, 6)] * 2, ["float32"] * 2, rt.float32)
    net4 = rt.Network()
    y = net4.add_input("data", rt.float32, (2, 4, 6, 6))
    cat2 = net4.add_concatenation([y, y], axis=2)
    assert "channel axis" in t.supports(cat2, [(2, 4, 6, 6)] * 2, ["float32"] * 2, rt.float32)
    cat1 = net4.add_concatenation([y, y])
    assert "floating" in t.supports(cat1, [(2, 4, 6, 6)] * 2, ["int32"] * 2, rt.float32)
    assert t.supports(cat1, [(2, 4, 6, 6)] * 2, ["float16"] * 2, rt.float16) is None


def test_the_elided_tactic_copies_inputs_of_any_layout(numpy_as_cupy):
    net = rt.Network()
    y = net.add_input("data", rt.float32, (2, 4, 3, 5))
    cat = net.add_concatenation([y, y])
    a = randn(2, 4, 3, 5)
    b = np.ascontiguousarray(randn(2, 3, 5, 4).transpose(0, 3, 1, 2))      # an NHWC view
    copied = []
    (out,) = C.ELIDED.run(None, cat, [a, b], rt.float32, [rt.float32], copied=copied)
    np.testing.assert_array_equal(out, np.concatenate([a, b], axis=1))
    assert copied == [0, 1]
