"""The INT8 cuDNN convolution graphs (kernels/gpu/cudnn_int8.py) without a GPU: what a
spec can express, its JSON and keys, the graph it defines on the stand-in frontend
(cudnn_fake.py) op by op with its uids and data types, that graph evaluated in NumPy
op by op and against our INT8 epilogue (kernels/quantize.py: within a code), the epilogue
vectors and the variant pack, and operands refused before any GPU is touched. On a GPU:
tests/gpu/test_cudnn_int8_gpu.py."""
import json
import os
import sys
import types

import numpy as np
import pytest

from kernels import quantize as Q
from kernels.pointwise import activation
from kernels.gpu import cudnn_graphs as G
from kernels.gpu import cudnn_int8 as CI

sys.path.insert(0, os.path.dirname(__file__))
import cudnn_fake  # noqa: E402


def spec(**kw):
    base = dict(n=2, c=16, h=9, w=11, k=32, r=3, s=3, stride=(2, 2), pre_padding=(1, 1),
                post_padding=(1, 1))
    return CI.Int8ConvSpec(**{**base, **kw})


@pytest.fixture
def fake(monkeypatch):
    f = cudnn_fake.frontend()
    monkeypatch.setitem(G._frontend_state, "module", f)
    yield f
    G.clear()


@pytest.mark.parametrize("kw, words", [
    (dict(c=24), "C = 24, K = 32: both must be multiples of 16"),
    (dict(k=8), "C = 16, K = 8: both must be multiples of 16"),
    (dict(act="SELU"), "activation SELU not fused"),
    (dict(out_dtype="int32"), "output dtype int32"),
    (dict(residual="int16"), "residual dtype int16"),
    (dict(h=1, w=1, r=7, s=7, pre_padding=(0, 0), post_padding=(0, 0)), "empty output"),
])
def test_specs_a_graph_cannot_express_say_why(kw, words, fake):
    assert words in spec(**kw).reason()
    with pytest.raises(ValueError, match=words):
        G.ConvGraph(spec(**kw))


def test_supported_specs_have_no_reason_and_keys_of_their_own():
    ok = [spec(), spec(act="CLIP", alpha=0.0, beta=6.0, residual="int8"),
          spec(out_dtype="float16", residual="float16"), spec(out_dtype="float32", residual="float32")]
    assert all(s.reason() is None for s in ok)
    assert spec().out_hw() == (5, 6)
    fp16 = G.ConvSpec(**{f: getattr(spec(), f) for f in ("n", "c", "h", "w", "k", "r", "s", "stride",
                                                          "pre_padding", "post_padding")})
    keys = {s.key("H200") for s in ok} | {spec().key("H100"), fp16.key("H200")}
    assert len(keys) == len(ok) + 2
    assert spec().key("H200") == spec().key("H200")


def test_spec_kind_survives_json():
    a = spec(act="LEAKY_RELU", alpha=0.1, residual="int8", out_dtype="float16", dilation=(2, 1))
    doc = json.loads(json.dumps(a.to_json()))
    assert doc["kind"] == "conv_int8" and G.spec_from_json(doc) == a
    assert CI.Int8ConvSpec.from_json(doc) == a and isinstance(G.spec_from_json(doc).stride, tuple)


def _graph(fake, **kw):
    g = G.ConvGraph(spec(**kw))
    ops = [(op, k, out) for (op, k), out in zip(g.graph.ops, g.graph.outputs)]
    return g, ops


def test_graph_is_our_epilogue_op_by_op_with_fixed_uids(fake):
    g, ops = _graph(fake, act="RELU", residual="int8")
    t = g.tensors
    assert [op for op, _, _ in ops] == ["conv", "mul", "add", "mul", "add", "relu", "mul"]
    conv, scale, bias, deq, res, act, req = (k for _, k, _ in ops)
    assert conv["image"] is t["X"] and conv["weight"] is t["W"] and conv["compute_data_type"] == "int32"
    assert ops[0][2].data_type == "float"                     # the int32 sum handed on as float32
    assert (conv["stride"], conv["pre_padding"], conv["post_padding"]) == ([2, 2], [1, 1], [1, 1])
    assert scale["a"] is ops[0][2] and scale["b"] is t["M"]
    assert bias["a"] is ops[1][2] and bias["b"] is t["B"]
    assert deq["a"] is t["R"] and deq["b"] is t["RS"]
    assert res["a"] is ops[2][2] and res["b"] is ops[3][2]
    assert act["input"] is ops[4][2] and req["a"] is ops[5][2] and req["b"] is t["IO"]
    assert t["Y"] is ops[6][2] and t["Y"].data_type == "int8"
    assert {n: x.uid for n, x in t.items()} == {n: CI.UIDS[n] for n in t}
    assert len(set(CI.UIDS.values())) == len(CI.UIDS)
    assert [t[n].data_type for n in ("X", "W", "R", "M", "B", "RS", "IO")] == ["int8"] * 3 + ["float"] * 4
    assert (t["X"].dim, t["X"].stride) == ([2, 16, 9, 11], [9 * 11 * 16, 1, 11 * 16, 16])    # NHWC
    assert (t["W"].dim, t["W"].stride) == ([32, 16, 3, 3], [3 * 3 * 16, 1, 3 * 16, 16])     # KRSC
    assert (t["Y"].dim, t["Y"].stride) == ([2, 32, 5, 6], [5 * 6 * 32, 1, 6 * 32, 32])
    assert g.graph.kw["io_data_type"] == "int8" and g.graph.kw["compute_data_type"] == "float"


def test_float_outputs_and_residuals_skip_the_requantisation_and_the_dequantisation(fake):
    g, ops = _graph(fake, out_dtype="float16", residual="float16", act="CLIP", alpha=0.0, beta=6.0)
    assert [op for op, _, _ in ops] == ["conv", "mul", "add", "add", "relu"]
    assert ops[3][1]["b"] is g.tensors["R"] and g.tensors["R"].data_type == "half"
    assert ops[4][1]["lower_clip"] == 0.0 and ops[4][1]["upper_clip"] == 6.0
    assert g.tensors["Y"].data_type == "half" and "IO" not in g.tensors and "RS" not in g.tensors
    g, ops = _graph(fake, out_dtype="float32")
    assert [op for op, _, _ in ops] == ["conv", "mul", "add"] and g.tensors["Y"].data_type == "float"


def _evaluate(g, ops, values):
    """The defined graph run in NumPy: each op in float32 on its own, the output converted
    as cuDNN converts it (float -> int8: round half to even, saturate)."""
    env = {id(g.tensors[n]): v for n, v in values.items()}
    for op, kw, out in ops:
        if op == "conv":
            x, w = env[id(kw["image"])], env[id(kw["weight"])]
            p, q = g.spec.out_hw()
            acc = Q.conv_int8(x, w, kw["stride"], kw["pre_padding"], (p, q), kw["dilation"], 1)
            env[id(out)] = acc.astype(np.float32)
        elif op in ("mul", "add"):
            a, b = (env[id(kw[n])].astype(np.float32) for n in ("a", "b"))
            env[id(out)] = a * b if op == "mul" else a + b
        elif op == "relu":
            v = env[id(kw["input"])]
            if "lower_clip" in kw:
                env[id(out)] = np.clip(v, np.float32(kw["lower_clip"]), np.float32(kw["upper_clip"]))
            else:
                env[id(out)] = np.where(v >= 0, v, np.float32(kw.get("negative_slope", 0.0)) * v)
        else:
            raise AssertionError(f"op {op} not evaluated here")
    y = env[id(g.tensors["Y"])]
    want = {"int8": lambda v: np.clip(np.rint(v), -128, 127).astype(np.int8),
            "half": lambda v: v.astype(np.float16), "float": lambda v: v}
    return want[g.tensors["Y"].data_type](y)


@pytest.mark.parametrize("out_dtype, residual, act", [
    ("int8", "int8", "RELU"), ("int8", None, None), ("int8", "float16", "CLIP"),
    ("float16", "int8", "LEAKY_RELU"), ("float32", "float32", "RELU"), ("float16", None, "CLIP"),
])
def test_the_graph_computes_our_int8_epilogue(fake, out_dtype, residual, act):
    rng = np.random.default_rng(7)
    alpha, beta = {"CLIP": (0.0, 6.0), "LEAKY_RELU": (0.1, 0.0)}.get(act, (0.0, 0.0))
    g, ops = _graph(fake, out_dtype=out_dtype, residual=residual, act=act, alpha=alpha, beta=beta)
    s = g.spec
    p, q = s.out_hw()
    xq = rng.integers(-128, 128, (s.n, s.c, s.h, s.w)).astype(np.int8)
    wq = rng.integers(-127, 128, (s.k, s.c, s.r, s.s)).astype(np.int8)
    s_in, s_res, s_out = np.float32(0.021), np.float32(0.037), np.float32(0.043)
    s_w = rng.uniform(0.5, 1.5, s.k).astype(np.float32) / np.float32(127 * 12)
    bias = rng.standard_normal(s.k).astype(np.float32)
    vec = CI.epilogue_vectors(s_in, s_w, bias, s_res if residual == "int8" else None,
                              s_out if out_dtype == "int8" else None)
    rows = dict(zip(CI.VECTOR_ROWS, vec))
    values = {"X": xq, "W": wq, **{n: rows[n].reshape(1, -1, 1, 1) for n in CI.VECTOR_ROWS if n in g.tensors}}
    res_arg = None
    if residual == "int8":
        values["R"] = rng.integers(-128, 128, (s.n, s.k, p, q)).astype(np.int8)
        res_arg = (values["R"], s_res)
    elif residual is not None:
        values["R"] = rng.standard_normal((s.n, s.k, p, q)).astype(residual)
        res_arg = values["R"]
    got = _evaluate(g, ops, values)
    acc = Q.conv_int8(xq, wq, s.stride, s.pre_padding, (p, q), s.dilation, 1)
    s_o = s_out if out_dtype == "int8" else None
    assert got.dtype == np.dtype(out_dtype)
    if out_dtype == "int8":
        assert np.unique(got).size > 50          # codes spread over the range, not saturated
    # op by op, bit for bit: the graph's multiplies and adds each round on their own
    np.testing.assert_array_equal(
        got, _unfused(acc, s_in, s_w, bias, res_arg, act, alpha, beta, s_o).astype(out_dtype))
    # against our kernels' epilogue (two fused multiply-adds): the same values but for
    # the last place, so int8 codes one apart at most, and rarely
    ref = Q.epilogue_int8(acc, s_in, s_w, bias, res_arg, act, alpha, beta, s_out=s_o)
    if out_dtype == "int8":
        d = np.abs(got.astype(np.int64) - ref.astype(np.int64))
        assert d.max() <= 1 and np.mean(d > 0) <= 1e-2
    else:
        np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32),
                                   rtol=2e-6 if out_dtype == "float32" else 1e-3, atol=1e-6)


def _unfused(acc, s_in, s_w, bias, residual, act, alpha, beta, s_out):
    """The cuDNN graph's sequence in NumPy, every multiply and add rounded to float32 on
    its own: acc * M + B (+ R * RS or + R), act, then (int8 out) * IO and saturating rint."""
    sh = (1, -1, 1, 1)
    y = acc.astype(np.float32) * (np.float32(s_in) * s_w).astype(np.float32).reshape(sh)
    y = y + np.asarray(bias, np.float32).reshape(sh)
    if isinstance(residual, tuple):
        y = y + residual[0].astype(np.float32) * np.float32(residual[1])
    elif residual is not None:
        y = y + residual.astype(np.float32)
    if act is not None:
        y = activation(y, act, alpha, beta)
    return y if s_out is None else Q.quantize(y, s_out)


def test_epilogue_vectors_round_in_float32_as_the_int8_contract():
    s_w = np.array([0.013, 0.7, 1e-3], np.float32)
    v = CI.epilogue_vectors(0.05, s_w, [1.0, -2.0, 0.5], s_res=0.2, s_out=0.3)
    assert v.dtype == np.float32 and v.shape == (4, 3)
    np.testing.assert_array_equal(v[0], np.float32(0.05) * s_w)
    np.testing.assert_array_equal(v[1], np.float32([1.0, -2.0, 0.5]))
    np.testing.assert_array_equal(v[2], np.full(3, np.float32(0.2)))
    np.testing.assert_array_equal(v[3], np.full(3, np.float32(1) / np.float32(0.3)))
    plain = CI.epilogue_vectors(0.05, s_w)
    np.testing.assert_array_equal(plain[1:], [[0, 0, 0], [1, 1, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"bias: found shape \(2,\), expected \(3,\)"):
        CI.epilogue_vectors(0.05, s_w, [1.0, 2.0])


def _dev(ptr, shape=(1,), strides=(1,)):
    return types.SimpleNamespace(data=types.SimpleNamespace(ptr=ptr), shape=shape, strides=strides)


def test_variant_pack_binds_the_rows_the_graph_reads():
    vec = _dev(4096, (4, 32), (128, 4))
    x, w, r, y = _dev(100), _dev(200), _dev(300), _dev(400)
    full = spec(residual="int8").variant_pack(x, w, vec, r, y)
    U = CI.UIDS
    assert full == {U["X"]: 100, U["W"]: 200, U["Y"]: 400, U["R"]: 300, U["M"]: 4096,
                    U["B"]: 4096 + 128, U["RS"]: 4096 + 256, U["IO"]: 4096 + 384}
    half = spec(out_dtype="float16", residual="float16").variant_pack(x, w, vec, r, y)
    assert set(half) == {U["X"], U["W"], U["Y"], U["R"], U["M"], U["B"]}
    assert set(spec(out_dtype="float32").variant_pack(x, w, vec, None, y)) == {U[n] for n in "XWYMB"}


def test_the_conv_graph_hands_its_pack_to_the_int8_kind(fake):
    g = G.ConvGraph(spec(out_dtype="float32"))
    vec = _dev(4096, (4, 32), (128, 4))
    assert g._pack(_dev(1), _dev(2), vec, None, _dev(3))[CI.UIDS["B"]] == 4096 + 128


def test_bad_operands_are_refused_before_touching_a_gpu():
    s = spec(residual="int8")
    p, q = s.out_hw()
    x = np.zeros((2, 9, 11, 16), np.int8)
    w = np.zeros((32, 3, 3, 16), np.int8)
    vec = np.zeros((4, 32), np.float32)
    r = np.zeros((2, p, q, 32), np.int8)
    with pytest.raises(ValueError, match="multiples of 16"):
        CI.conv2d_int8_graph(x, w, vec, spec(k=24))
    with pytest.raises(ValueError, match="residual was given"):
        CI.conv2d_int8_graph(x, w, vec, spec(), residual=r)
    with pytest.raises(ValueError, match=r"cuDNN INT8 conv x: found float16 \(2, 9, 11, 16\)"):
        CI.conv2d_int8_graph(x.astype(np.float16), w, vec, s, residual=r)
    with pytest.raises(ValueError, match=r"vectors: found float32 \(32,\)"):
        CI.conv2d_int8_graph(x, w, vec[0], s, residual=r)
    with pytest.raises(ValueError, match="residual: found None"):
        CI.conv2d_int8_graph(x, w, vec, s)
    with pytest.raises(ValueError, match=r"residual: found float16 .* expected C-contiguous int8"):
        CI.conv2d_int8_graph(x, w, vec, s, residual=r.astype(np.float16))
    with pytest.raises(ValueError, match=r"out: found int8 \(2, 5, 6, 32\) .* expected C-contiguous float16"):
        CI.conv2d_int8_graph(x, w, vec, spec(out_dtype="float16", residual="int8"), residual=r,
                             out=np.zeros((2, p, q, 32), np.int8))
