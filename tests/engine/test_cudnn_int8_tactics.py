"""engine/gpu/cudnn_int8_tactics.py without a GPU: which layers conv.cudnn_i8 declines and
why, that it is an INT8 candidate of every convolution, the state it shares with ConvInt8
(weight codes, scales, the epilogue vectors), and which INT8 graphs an INT8 build queues
ahead (layers expected in INT8, their output and residual storage)."""
import os
import sys
import types

import numpy as np
import pytest

import engine as rt
from engine.gpu import cudnn_int8_tactics as CIT
from engine.types import DataType
from kernels import quantize as Q
from kernels.gpu import cudnn_graphs as G
from kernels.gpu import cudnn_workers as W
sys.path.insert(0, os.path.dirname(__file__))
from test_cudnn_tactics import Workers  # noqa: E402  (this folder's stand-in plan workers)

RNG = np.random.default_rng(11)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def conv_layer(c=16, k=32, groups=1, act=None, residual=False, bias=True, shape=None):
    net = rt.Network()
    x = net.add_input("x", rt.float32, shape or (2, c, 10, 12))
    conv = net.add_convolution_nd(x, k, (3, 3), kernel=randn(k, c // groups, 3, 3),
                                  bias=randn(k) if bias else None)
    conv.num_groups, conv.padding_nd = groups, (1, 1)
    if act is not None:
        conv.post_activation = act
    if residual:
        r = net.add_input("r", rt.float32, (2, k, 10, 12))
        r.set_dynamic_range(-3.0, 3.0)
        conv.set_input(1, r)
    x.set_dynamic_range(-2.0, 2.0)
    conv.get_output(0).set_dynamic_range(-5.0, 5.0)
    net.mark_output(conv.get_output(0))
    return conv


I8 = rt.DataType.INT8


@pytest.mark.parametrize("kw, shapes, dtypes, precision, words", [
    ({}, [(2, 16, 10, 12)], ["int8"], rt.DataType.HALF, "INT8 tactic"),
    ({"c": 32, "groups": 2}, [(2, 32, 10, 12)], ["int8"], I8, "grouped convolution"),
    ({}, [(2, 16, 10)], ["int8"], I8, "rank-4"),
    ({"c": 8}, [(2, 8, 10, 12)], ["float32"], I8, "C = 8, K = 32: both must be multiples of 16"),
    ({"c": 3, "k": 64}, [(2, 3, 10, 12)], ["float32"], I8, "the stem stays on our small-C kernel"),
    ({"k": 24}, [(2, 16, 10, 12)], ["int8"], I8, "K = 24"),
    ({"act": rt.ActivationType.SELU}, [(2, 16, 10, 12)], ["int8"], I8, "activation SELU not fused"),
])
def test_declines_what_a_cudnn_int8_graph_cannot_run_and_says_why(kw, shapes, dtypes, precision, words):
    assert words in CIT.ConvCudnnInt8().supports(conv_layer(**kw), shapes, dtypes, precision)


def test_declines_an_fc_layer():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 16))
    fc = net.add_fully_connected(x, 16, randn(16, 16), randn(16))
    assert "convolutions only" in CIT.static_reason(fc, [(2, 16)])


@pytest.fixture
def fake_frontend(monkeypatch):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "kernels"))
    import cudnn_fake
    monkeypatch.setitem(G._frontend_state, "module", cudnn_fake.frontend())
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "0")        # no worker processes from a test
    yield
    G.clear()


def test_takes_an_int8_convolution_unless_switched_off_or_without_the_frontend(monkeypatch, fake_frontend):
    t = CIT.ConvCudnnInt8()
    layer = conv_layer(act=rt.ActivationType.RELU, residual=True)
    args = ([(2, 16, 10, 12), (2, 32, 10, 12)], ["int8", "int8"], I8)
    assert t.supports(layer, *args) is None
    assert t.supports(layer, [(2, 16, 10, 12), (2, 32, 10, 12)], ["float32", "float16"], I8) is None
    monkeypatch.setenv("CUPYRT_CUDNN", "0")
    assert "switched off (CUPYRT_CUDNN=0)" in t.supports(layer, *args)
    monkeypatch.delenv("CUPYRT_CUDNN")
    monkeypatch.setitem(G._frontend_state, "module", None)
    monkeypatch.setitem(G._frontend_state, "reason", "ImportError: no module named cudnn")
    assert "cupyrt[cudnn]" in t.supports(layer, *args)


def test_is_an_int8_candidate_of_every_convolution_unless_switched_off_and_launches_no_family_kernel(
        monkeypatch):
    from engine.gpu.tactics import candidates
    layer = conv_layer()
    # on by default since its GPU tests and an A/B against FP32 passed on a device
    assert "conv.cudnn_i8" in [c.name for c in candidates(layer, DataType.INT8)]
    monkeypatch.setenv("CUPYRT_CUDNN_INT8", "0")
    assert "conv.cudnn_i8" not in [c.name for c in candidates(layer, DataType.INT8)]
    monkeypatch.setenv("CUPYRT_CUDNN_INT8", "1")
    assert "conv.cudnn_i8" in [c.name for c in candidates(layer, DataType.INT8)]
    assert "conv.cudnn_i8" not in [c.name for c in candidates(layer, DataType.HALF)]
    tactic = next(c for c in candidates(layer) if c.name == "conv.cudnn_i8")
    assert tactic.int8 is True and not hasattr(tactic, "launch") and getattr(tactic, "tile", None) is None


@pytest.fixture
def numpy_cupy(monkeypatch):
    """CuPy's few calls in a tactic's prepare, answered by NumPy (no GPU here)."""
    stub = types.ModuleType("cupy")
    for name in ("asarray", "zeros", "ones", "float32", "float16", "int8"):
        setattr(stub, name, getattr(np, name))
    monkeypatch.setitem(sys.modules, "cupy", stub)


@pytest.mark.parametrize("residual, bias", [(True, True), (False, False)])
def test_state_is_convint8s_with_the_epilogue_vectors(numpy_cupy, residual, bias):
    from engine.gpu.conv_int8_tactics import ConvInt8
    from kernels.gpu import conv_int8
    layer = conv_layer(act=rt.ActivationType.CLIP, residual=residual, bias=bias)
    layer.post_alpha, layer.post_beta = 0.0, 6.0
    st = CIT.ConvCudnnInt8().prepare(layer)
    ref = ConvInt8(conv_int8.INT8_TACTICS[0]).prepare(layer)
    q, s_w = Q.quantize_weights(layer.kernel)
    np.testing.assert_array_equal(st["w"], q.transpose(0, 2, 3, 1))          # KRSC codes
    np.testing.assert_array_equal(st["s_w"], s_w)
    for key in ("s_in", "s_res", "s_out", "act", "alpha", "beta"):
        assert st[key] == ref[key], key
    assert st["s_in"] == Q.scale_from_amax(2.0) and st["s_out"] == Q.scale_from_amax(5.0)
    assert st["s_res"] == (Q.scale_from_amax(3.0) if residual else None)
    v = st["vectors"]
    assert v.shape == (4, 32) and v.dtype == np.float32
    np.testing.assert_array_equal(v[0], np.float32(st["s_in"]) * s_w)
    np.testing.assert_array_equal(v[1], layer.bias if bias else np.zeros(32, np.float32))
    np.testing.assert_array_equal(v[2], np.full(32, st["s_res"] if residual else 1.0, np.float32))
    np.testing.assert_array_equal(v[3], np.full(32, np.float32(1) / np.float32(st["s_out"])))


# -- the INT8 graphs an INT8 build queues ahead ------------------------------------------------

def int8_network():
    """x -> a (16->32, relu) -> b (32->32, + a's output) -> c (32->16, a network output);
    b -> sigmoid (no INT8 kernel) -> d (32->32, + sigmoid's output) -> tanh: d's residual
    and output are float; f has C = 8 (declined); g (after c) has no output range."""
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 16, 8, 8))
    x.set_dynamic_range(-1.0, 1.0)

    def conv(t, k, c, res=None, act=None, rng_out=4.0):
        layer = net.add_convolution_nd(t, k, (3, 3), kernel=randn(k, c, 3, 3), bias=randn(k))
        layer.padding_nd = (1, 1)
        if act is not None:
            layer.post_activation = act
        if res is not None:
            layer.set_input(1, res)
        if rng_out:
            layer.get_output(0).set_dynamic_range(-rng_out, rng_out)
        return layer
    a = conv(x, 32, 16, act=rt.ActivationType.RELU)
    b = conv(a.get_output(0), 32, 32, res=a.get_output(0))
    c = conv(b.get_output(0), 16, 32)
    sig = net.add_activation(b.get_output(0), rt.ActivationType.SIGMOID)
    sig.get_output(0).set_dynamic_range(0.0, 1.0)
    d = conv(b.get_output(0), 32, 32, res=sig.get_output(0))
    e = net.add_activation(d.get_output(0), rt.ActivationType.TANH)
    f_in = net.add_input("f_in", rt.float32, (-1, 8, 8, 8))
    f_in.set_dynamic_range(-1.0, 1.0)
    f = conv(f_in, 16, 8)
    g = conv(c.get_output(0), 16, 16, rng_out=None)
    for out in (c, e, f, g):
        net.mark_output(out.get_output(0))
    return net, {n: layer for n, layer in zip("abcdfg", (a, b, c, d, f, g))}


def test_int8_specs_follow_the_engines_storage_rules():
    net, L = int8_network()
    specs = CIT.int8_specs(net, 4)
    by_layer = {name: CIT.int8_conv_spec(L[name], (4, L[name]._inputs[0].shape[1], 8, 8), out, res)
                # a: read by INT8 layers only (b, twice): codes; b: the sigmoid reads it too:
                # half (the FP16 flag); c: a network output, as declared; d: float residual
                for name, out, res in [("a", np.int8, None), ("b", np.float16, np.int8),
                                       ("c", np.float32, None), ("d", np.float16, np.float16)]}
    assert sorted(specs, key=repr) == sorted(by_layer.values(), key=repr), specs
    assert by_layer["b"].residual == "int8" and by_layer["a"].act == "RELU" and by_layer["a"].n == 4
    without_fp16 = {s.out_dtype for s in CIT.int8_specs(net, 4, fp16=False)}
    assert without_fp16 == {"int8", "float32"}


def test_expected_int8_layers_keep_data_movement_only_between_int8_layers():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 16, 4, 4))
    x.set_dynamic_range(-1.0, 1.0)
    a = net.add_convolution_nd(x, 16, (1, 1), kernel=randn(16, 16, 1, 1))
    a.get_output(0).set_dynamic_range(-2.0, 2.0)
    keep = net.add_identity(a.get_output(0))
    keep.get_output(0).set_dynamic_range(-2.0, 2.0)
    b = net.add_convolution_nd(keep.get_output(0), 16, (1, 1), kernel=randn(16, 16, 1, 1))
    b.get_output(0).set_dynamic_range(-2.0, 2.0)
    drop = net.add_identity(b.get_output(0))
    drop.get_output(0).set_dynamic_range(-2.0, 2.0)
    net.mark_output(net.add_activation(drop.get_output(0), rt.ActivationType.SIGMOID).get_output(0))
    assert CIT.expected_int8_layers(net) == {a.name, keep.name, b.name}


def test_prefetch_queues_the_int8_graphs_once_per_network_and_batch(monkeypatch):
    net, L = int8_network()
    w = Workers()
    monkeypatch.setattr(W, "shared", lambda n: w)
    opts = {"max_plans": 2, "build_budget_s": 1.0, "store": None, "workers": 3}
    try:
        # 4 graphs, 2 plans each, but an int8 output's window starts at plan 1
        outs = sorted(s.out_dtype for s in CIT.int8_specs(net, 4))
        assert outs == ["float16", "float16", "float32", "int8"]
        assert CIT.prefetch_int8_network(L["a"], 4, opts, device_id=0) == 7
        assert {s for s, _, _ in w.submitted} == set(CIT.int8_specs(net, 4))
        assert all(s.kind == "conv_int8" for s, _, _ in w.submitted)
        assert sorted(i for s, _, i in w.submitted if s.out_dtype == "int8") == [1]
        assert sorted(i for s, _, i in w.submitted if s.out_dtype != "int8") == [0, 0, 0, 1, 1, 1]
        assert CIT.prefetch_int8_network(L["b"], 4, opts, device_id=0) == 0       # done for batch 4
        assert CIT.prefetch_int8_network(L["b"], 8, opts, device_id=0) == 7
        assert CIT.prefetch_int8_network(L["b"], 2, dict(opts, workers=0), device_id=0) == 0
    finally:
        G.clear()
