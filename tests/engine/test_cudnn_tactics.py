"""engine/gpu/cudnn_tactics.py without a GPU: which layers the cuDNN tactic declines
and why, the switches (through engine.settings), the spec it derives from a layer, the
plan store over the timing cache, and the network-wide prefetch of plans."""
import concurrent.futures as futures
import json
import math

import numpy as np
import pytest

import engine as rt
from engine.gpu import cudnn_tactics as CT
from engine.gpu.timing import KERNEL_VERSION, TimingCache
from kernels.gpu import cudnn_graphs as G
from kernels.gpu import cudnn_workers as W


def conv_layer(act=None, residual=False, groups=1, pad=(1, 1), stride=(1, 1)):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 8, 10, 12))
    w = np.random.default_rng(0).standard_normal((8, 8 // groups, 3, 3)).astype(np.float32)
    conv = net.add_convolution_nd(x, 8, (3, 3), kernel=w)
    conv.num_groups = groups
    conv.padding_nd, conv.stride_nd = pad, stride
    if act is not None:
        conv.post_activation = act
    if residual:
        conv.set_input(1, x)
    net.mark_output(conv.get_output(0))
    return conv


def test_spec_carries_geometry_activation_and_residual():
    layer = conv_layer(act=rt.ActivationType.CLIP, residual=True)
    layer.post_alpha, layer.post_beta = 0.0, 6.0
    s = CT.conv_spec(layer, (2, 8, 10, 12), np.float16)
    assert (s.n, s.c, s.h, s.w, s.k, s.r, s.s) == (2, 8, 10, 12, 8, 3, 3)
    assert s.pre_padding == (1, 1) and s.post_padding == (1, 1) and s.out_hw() == (10, 12)
    assert (s.act, s.alpha, s.beta, s.residual, s.out_dtype) == ("CLIP", 0.0, 6.0, True, "float16")
    s2 = CT.conv_spec(conv_layer(stride=(2, 2)), (2, 8, 10, 12), np.float32)
    assert s2.out_hw() == (5, 6) and s2.act is None and not s2.residual and s2.out_dtype == "float32"


def test_declines_what_it_cannot_run_and_says_why(monkeypatch):
    t = CT.ConvCudnn()
    shapes, dtypes = [(2, 8, 10, 12)], ["float32"]
    assert "FP16" in t.supports(conv_layer(), shapes, dtypes, rt.DataType.FLOAT)
    assert "grouped" in t.supports(conv_layer(groups=2), shapes, dtypes, rt.DataType.HALF)
    assert "rank-4" in t.supports(conv_layer(), [(2, 8, 10)], dtypes, rt.DataType.HALF)
    assert "multiples of 8" in t.supports(conv_layer(), [(2, 3, 10, 12)], dtypes, rt.DataType.HALF)
    monkeypatch.setenv("CUPYRT_CUDNN", "0")
    assert "CUPYRT_CUDNN=0" in t.supports(conv_layer(), shapes, dtypes, rt.DataType.HALF)
    monkeypatch.delenv("CUPYRT_CUDNN")
    reason = t.supports(conv_layer(act=rt.ActivationType.SELU), shapes, dtypes, rt.DataType.HALF)
    assert "SELU" in reason
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "0")      # no worker processes from this test
    reason = t.supports(conv_layer(act=rt.ActivationType.RELU), shapes, dtypes, rt.DataType.HALF)
    assert reason is None if G.available() else "cupyrt[cudnn]" in reason


def test_switches_are_read_through_the_settings(monkeypatch, tmp_path):
    from engine.settings import tactic_key
    assert CT.enabled()
    monkeypatch.setenv("CUPYRT_CUDNN", "0")
    assert not CT.enabled() and tactic_key()["CUPYRT_CUDNN"] is False
    monkeypatch.delenv("CUPYRT_CUDNN")
    monkeypatch.setenv("CUPYRT_CUDNN_MAX_PLANS", "2")
    monkeypatch.setenv("CUPYRT_CUDNN_BUILD_BUDGET_S", "1.5")
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "1")
    monkeypatch.delenv("CUPYRT_TIMING_CACHE", raising=False)
    monkeypatch.delenv("CUPYRT_CUDNN_PLAN_CACHE", raising=False)
    opts = CT.plan_options()
    assert (opts["max_plans"], opts["build_budget_s"], opts["store"], opts["workers"]) == (2, 1.5, None, 1)
    monkeypatch.setenv("CUPYRT_TIMING_CACHE", str(tmp_path / "t.cache"))
    assert CT.plan_options()["store"].path == str(tmp_path / "t.cache")     # the timing cache by default
    monkeypatch.setenv("CUPYRT_CUDNN_PLAN_CACHE", str(tmp_path / "p.cache"))
    assert CT.plan_options()["store"].path == str(tmp_path / "p.cache")


def test_plan_store_round_trip_keeps_other_entries_and_survives_a_bad_blob(tmp_path, caplog):
    path = str(tmp_path / "timing.cache")
    other = TimingCache(path)                      # the engine's own entries in the same file
    other.put("layer-key", "conv.wgmma", {"conv.wgmma": 0.1})
    other.save()
    spec = G.ConvSpec(n=2, c=16, h=9, w=11, k=32, r=3, s=3, act="RELU")
    blob = G.encode_blob(b"\x01plan")
    CT.PlanStore(path).put(spec, "H200", 2, {0: 0.3, 1: math.inf, 2: 0.1}, blob)
    wider = G.ConvSpec(**{**spec.to_json(), "k": 48})
    CT.PlanStore(path).put(wider, "H200", 0, {0: 0.2}, None)      # a plan that does not serialize
    fresh = CT.PlanStore(path)                     # another process
    assert fresh.get(spec, "H200") == (2, blob)
    assert fresh.get(wider, "H200") == (0, None)
    assert fresh.get(spec, "H100") is None         # per device
    doc = json.loads(open(path).read())
    assert doc["version"] == KERNEL_VERSION and doc["entries"]["layer-key"]["tactic"] == "conv.wgmma"
    entry = doc["entries"][fresh.key(spec, "H200")]
    assert entry == {"tactic": "cudnn.plan.2", "ms": {"0": 0.3, "1": None, "2": 0.1}}
    with open(fresh._blob_path(fresh.key(spec, "H200")), "w") as f:
        f.write("{truncated")
    with caplog.at_level("WARNING"):
        assert CT.PlanStore(path).get(spec, "H200") == (2, None)     # the index still serves
    assert "unreadable" in caplog.text
    other.put(fresh.key(spec, "H100"), "conv.cudnn", {})          # not a plan entry
    other.save()
    assert CT.PlanStore(path).get(spec, "H100") is None


class Workers:
    def __init__(self):
        self.submitted = []

    def submit(self, spec, device_id, index):
        self.submitted.append((spec, device_id, index))
        return futures.Future()


def test_prefetch_queues_every_convolution_the_tactic_would_take(monkeypatch):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 16, 12, 12))
    rng = np.random.default_rng(1)

    def conv(t, k, c, groups=1, act=None, residual=None):
        w = rng.standard_normal((k, c // groups, 3, 3)).astype(np.float32)
        layer = net.add_convolution_nd(t, k, (3, 3), kernel=w)
        layer.padding_nd, layer.num_groups = (1, 1), groups
        if act is not None:
            layer.post_activation = act
        if residual is not None:
            layer.set_input(1, residual)
        return layer
    a = conv(x, 16, 16, act=rt.ActivationType.RELU)
    b = conv(a.get_output(0), 16, 16, residual=x)
    conv(b.get_output(0), 16, 16, groups=2)                         # grouped: not a cuDNN graph
    conv(b.get_output(0), 16, 16, act=rt.ActivationType.SELU)  # activation not fused
    d = conv(b.get_output(0), 24, 16)
    net.mark_output(d.get_output(0))
    w = Workers()
    monkeypatch.setattr(W, "shared", lambda n: w)
    opts = {"max_plans": 2, "build_budget_s": 1.0, "store": None, "workers": 3}
    try:
        assert CT.prefetch_network(a, 4, opts, device_id=0) == 6
        assert CT.prefetch_network(b, 4, opts, device_id=0) == 0         # once per network and batch
        specs = {s for s, _, _ in w.submitted}
        assert specs == {CT.conv_spec(a, (4, 16, 12, 12), np.float16),
                         CT.conv_spec(b, (4, 16, 12, 12), np.float16),
                         CT.conv_spec(d, (4, 16, 12, 12), np.float32)}   # a network output: as declared
        assert sorted(i for _, _, i in w.submitted) == [0, 0, 0, 1, 1, 1]
        assert CT.prefetch_network(a, 8, opts, device_id=0) == 6         # another batch
        assert CT.prefetch_network(a, 2, dict(opts, workers=0), device_id=0) == 0
        # inside prefetch_only: those layers' graphs only, once per set; the others later,
        # when an unscoped request comes, and nothing twice
        G.clear()
        w.submitted.clear()
        with CT.prefetch_only([d.name]):
            assert CT.prefetch_network(a, 16, opts, device_id=0) == 2
            assert CT.prefetch_network(b, 16, opts, device_id=0) == 0
        assert {s for s, _, _ in w.submitted} == {CT.conv_spec(d, (16, 16, 12, 12), np.float32)}
        with CT.prefetch_only([a.name, d.name]):
            assert CT.prefetch_network(a, 16, opts, device_id=0) == 2     # d's queued already
        assert CT.prefetch_network(a, 16, opts, device_id=0) == 2         # b's, at last
        assert len(w.submitted) == 6 and len({s for s, _, _ in w.submitted}) == 3
    finally:
        G.clear()


def matmul_layer(k=16, n=24, op1=rt.MatrixOperation.NONE, lead=(1,), const_left=False, act=None):
    rng = np.random.default_rng(5)
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 5, k))
    wshape = lead + ((k, n) if op1 == rt.MatrixOperation.NONE else (n, k))
    w = net.add_constant(wshape, rng.standard_normal(wshape).astype(np.float32)).get_output(0)
    left = net.add_constant((2, 5, k), rng.standard_normal((2, 5, k)).astype(np.float32)).get_output(0) \
        if const_left else x
    mm = net.add_matrix_multiply(left, rt.MatrixOperation.NONE, w, op1)
    if act is not None:
        mm.post_activation = act
    net.mark_output(mm.get_output(0))
    return mm


@pytest.mark.parametrize("kw, shapes_extra, precision, words", [
    ({}, [], rt.DataType.FLOAT, "FP16"),
    ({"lead": (2,)}, [], rt.DataType.HALF, "a 2-D constant"),
    ({"const_left": True}, [], rt.DataType.HALF, "the right operand alone must be a Constant"),
    ({"k": 12}, [], rt.DataType.HALF, "multiples of 8"),
    ({"n": 20}, [], rt.DataType.HALF, "multiples of 8"),
    ({"act": rt.ActivationType.SELU}, [], rt.DataType.HALF, "activation SELU not fused"),
    ({}, [(1, 5, 24)], rt.DataType.HALF, "a residual of the output's shape"),
])
def test_matmul_tactic_declines_what_a_graph_cannot_run(kw, shapes_extra, precision, words):
    mm = matmul_layer(**kw)
    shapes = [tuple(mm.get_input(0).shape), tuple(mm.get_input(1).shape)] + shapes_extra
    assert words in CT.MatMulCudnn().supports(mm, shapes, ["float32"] * len(shapes), precision)


def test_matmul_tactic_takes_a_linear_layer_with_gelu_where_the_frontend_is(monkeypatch):
    t = CT.MatMulCudnn()
    for op1 in (rt.MatrixOperation.NONE, rt.MatrixOperation.TRANSPOSE):
        mm = matmul_layer(op1=op1, act=rt.ActivationType.GELU_ERF)
        shapes = [tuple(mm.get_input(0).shape), tuple(mm.get_input(1).shape), (2, 5, 24)]
        reason = t.supports(mm, shapes, ["float32"] * 3, rt.DataType.HALF)
        assert reason is None if G.available() else "cupyrt[cudnn]" in reason
    monkeypatch.setenv("CUPYRT_CUDNN", "0")
    assert "CUPYRT_CUDNN=0" in t.supports(mm, shapes[:2], ["float32"] * 2, rt.DataType.HALF)


def test_matmul_tactic_is_a_candidate_of_every_matrix_multiply():
    from engine.gpu.tactics import candidates
    assert "matmul.cudnn" in [c.name for c in candidates(matmul_layer())]


def test_matmul_plans_are_stored_under_their_own_kind(tmp_path):
    from kernels.gpu.cudnn_matmul import MatmulSpec
    store = CT.PlanStore(str(tmp_path / "cache"))
    m, c = MatmulSpec(m=8, n=16, k=32), G.ConvSpec(n=1, c=8, h=4, w=4, k=8, r=1, s=1)
    store.put(m, "H200", 2, {0: 0.5, 2: 0.25}, None)
    assert store.get(m, "H200") == (2, None) and store.get(c, "H200") is None


def test_prefetch_queues_the_linear_layers_a_matmul_graph_would_take(monkeypatch):
    """A transformer block with a dynamic batch: each linear layer's spec at the asked
    batch (m = batch x sequence), its epilogue, its stored dtype; non-constant and
    misaligned matmuls are left alone."""
    MO = rt.MatrixOperation
    rng = np.random.default_rng(3)
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 8, 32))

    def linear(t, k, n, act=None, residual=None):
        w = net.add_constant((1, k, n), rng.standard_normal((1, k, n)).astype(np.float32)).get_output(0)
        mm = net.add_matrix_multiply(t, MO.NONE, w, MO.NONE)
        if act is not None:
            mm.post_activation = act
        if residual is not None:
            mm.set_input(2, residual)
        return mm
    up = linear(x, 32, 64, act=rt.ActivationType.GELU_ERF)
    down = linear(up.get_output(0), 64, 32, residual=x)
    odd = linear(down.get_output(0), 32, 12)                        # n = 12: not 16-byte rows
    both = net.add_matrix_multiply(down.get_output(0), MO.NONE, down.get_output(0), MO.TRANSPOSE)
    net.mark_output(odd.get_output(0))
    net.mark_output(both.get_output(0))
    w = Workers()
    monkeypatch.setattr(W, "shared", lambda n: w)
    opts = {"max_plans": 2, "build_budget_s": 1.0, "store": None, "workers": 3}
    try:
        assert CT.prefetch_network(up, 4, opts, device_id=0) == 4
        specs = {s for s, _, _ in w.submitted}
        assert specs == {CT.matmul_spec(up, (4, 8, 32), np.float16),
                         CT.matmul_spec(down, (4, 8, 64), np.float16, residual=True)}
        got = {s.n: s for s in specs}
        assert (got[64].m, got[64].k, got[64].act, got[64].residual) == (32, 32, "GELU_ERF", False)
        assert (got[32].m, got[32].k, got[32].act, got[32].residual) == (32, 64, None, True)
        assert all(s.to_json()["kind"] == "matmul" for s in specs)
    finally:
        G.clear()
