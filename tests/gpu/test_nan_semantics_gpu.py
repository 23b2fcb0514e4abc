"""NaN / +-Inf on the CuPy backend equal the NumPy backend's pattern (which equals
TensorFlow's: tests/tf_integration/test_nan_semantics.py), through the tactics the
builder picks, fused epilogues included (issue 11). The CUDA changes these cover:
common.cuh (apply_act RELU/CLIP/RELU6/HARD_*, ActLin's NaN-keeping clamp with +-inf
bounds), pointwise_gen MAX/MIN (max_nan/min_nan), pooling.cu (FP16 max-pool
lowest), rnn.cu (RNN relu)."""
import numpy as np
import pytest

import engine as rt

SHAPE = (2, 8, 6, 6)                       # NCHW
SPECIALS = ((3, np.nan), (75, np.inf), (300, -np.inf))


def poisoned(shape=SHAPE, specials=SPECIALS, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    for i, v in specials:
        x.reshape(-1)[i] = v
    return x


def _conv(net, x, act=None):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, SHAPE[1], 3, 3)).astype(np.float32) * 0.2
    c = net.add_convolution_nd(x, 16, (3, 3), kernel=w, bias=rng.standard_normal(16).astype(np.float32))
    c.padding_nd = (1, 1)
    y = c.get_output(0)
    return net.add_activation(y, act).get_output(0) if act is not None else y


def _pool(kind, window=(3, 3), stride=(2, 2), pad=(1, 1)):
    def body(net, x):
        p = net.add_pooling_nd(x, kind, window)
        p.stride_nd, p.padding_nd = stride, pad
        return p.get_output(0)
    return body


def _act(kind, alpha=None, beta=None):
    def body(net, x):
        a = net.add_activation(x, kind)
        if alpha is not None:
            a.alpha, a.beta = alpha, beta
        return a.get_output(0)
    return body


def _ew(op):
    def body(net, x):
        other = net.add_constant(SHAPE, poisoned(seed=2, specials=((5, np.nan),))).get_output(0)
        return net.add_elementwise(x, other, op).get_output(0)
    return body


def _reduce(op):
    return lambda net, x: net.add_reduce(x, op, 0b1100, False).get_output(0)


def _softmax(net, x):
    s = net.add_softmax(x)
    s.axes = 1 << 1
    return s.get_output(0)


def _issue_graph(net, x):          # conv -> relu -> mean -> softmax (the issue's example)
    y = _conv(net, x, rt.ActivationType.RELU)
    m = net.add_reduce(y, rt.ReduceOperation.AVG, 0b1100, False).get_output(0)
    s = net.add_softmax(m)
    s.axes = 1 << 1
    return s.get_output(0)


CASES = {
    "relu": _act(rt.ActivationType.RELU),
    "clip": _act(rt.ActivationType.CLIP, -0.5, 0.5),
    "leaky_relu": _act(rt.ActivationType.LEAKY_RELU, 0.2, 0.0),
    "max_pool": _pool(rt.PoolingType.MAX),
    "max_pool_valid": _pool(rt.PoolingType.MAX, (2, 2), (2, 2), (0, 0)),
    "avg_pool": _pool(rt.PoolingType.AVERAGE),
    "max": _ew(rt.ElementWiseOperation.MAX),
    "min": _ew(rt.ElementWiseOperation.MIN),
    "sum": _reduce(rt.ReduceOperation.SUM),
    "mean": _reduce(rt.ReduceOperation.AVG),
    "reduce_max": _reduce(rt.ReduceOperation.MAX),
    "reduce_min": _reduce(rt.ReduceOperation.MIN),
    "softmax": _softmax,
    "conv_relu": lambda net, x: _conv(net, x, rt.ActivationType.RELU),     # fused epilogue
    "conv_clip": lambda net, x: _conv(net, x, rt.ActivationType.CLIP),
    "conv": lambda net, x: _conv(net, x),                                  # ActLin NONE
    "issue_graph": _issue_graph,
}


def run(body, backend, fp16, x):
    net = rt.Network()
    inp = net.add_input("x", rt.float32, x.shape)
    net.mark_output(body(net, inp))
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = backend
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    out = b.build_engine(net, cfg).create_execution_context().execute({"x": x})
    return np.asarray(list(out.values())[0])


def assert_same_pattern(got, ref, tol):
    for what, f in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        np.testing.assert_array_equal(f(got), f(ref), err_msg=f"{what} positions differ")
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=tol, atol=tol)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", list(CASES))
def test_cupy_backend_nan_inf_pattern_equals_numpy_backend(case, fp16):
    x = poisoned()
    ref = run(CASES[case], "numpy", fp16, x)
    got = run(CASES[case], "cupy", fp16, x)
    assert_same_pattern(got, ref, 2e-2 if fp16 else 1e-4)


def test_pointwise_chain_max_min_keep_nan():
    import cupy as cp

    from kernels.gpu.pointwise_gen import pointwise_chain
    x = poisoned()
    t = poisoned(seed=3, specials=((7, np.nan),))
    ops = [("const", "MAX", 0.1), ("tensor", "MIN", cp.asarray(t)), ("act", "CLIP", -0.3, 0.3)]
    got = cp.asnumpy(pointwise_chain(cp.asarray(x), ops))
    ref = np.clip(np.minimum(np.maximum(x, np.float32(0.1)), t), -0.3, 0.3)
    assert np.isnan(ref).sum() == 2
    assert_same_pattern(got, ref, 1e-6)


def test_max_pool_kernel_all_nan_window_gives_lowest_of_the_dtype():
    import cupy as cp

    from kernels import pooling as kpool
    from kernels.gpu.pooling import pool2d
    for dt in (np.float32, np.float16):
        x = np.random.default_rng(4).standard_normal((1, 4, 4, 8)).astype(dt)   # NHWC
        x[0, :2, :2, :] = np.nan
        got = cp.asnumpy(pool2d(cp.asarray(x), "max", 2, stride=2))
        ref = kpool.pool_nd(np.moveaxis(x, -1, 1), "MAX", (2, 2), (2, 2), (0, 0), (0, 0), (2, 2))
        np.testing.assert_array_equal(got, np.moveaxis(ref, 1, -1))
        assert got[0, 0, 0, 0] == np.finfo(dt).min
