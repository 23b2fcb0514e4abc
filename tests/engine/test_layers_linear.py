"""FullyConnected (with its fused epilogue), MatrixMultiply, Reduce and SoftMax
against TensorFlow, plus shape inference and every argument error."""
import numpy as np
import pytest

import engine as rt
from engine.testing import interpret, rel_l2

tf = pytest.importorskip("tensorflow")

RNG = np.random.default_rng(7)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def run_one(make, feeds, dtypes=None):
    """Build a network with inputs named like ``feeds``; ``make(net, *tensors)``
    returns the layer whose output 0 is checked."""
    net = rt.Network()
    ts = [net.add_input(k, (dtypes or {}).get(k, rt.DataType.from_numpy(v.dtype)), v.shape)
          for k, v in feeds.items()]
    layer = make(net, *ts)
    net.mark_output(layer.get_output(0))
    return interpret(net, feeds)[layer.get_output(0).name]


# ----------------------------------------------------------------------------
# FullyConnected

FC_SHAPES = [(4, 10), (3, 2, 3, 4), (2, 3, 2, 2, 2), (5, 1, 1)]


@pytest.mark.parametrize("shape", FC_SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_fully_connected_matches_tf_matmul(shape, with_bias):
    k = 6
    x = rand(*shape)
    flat = shape[-1:] if len(shape) == 2 else shape[-3:]
    w = rand(k, int(np.prod(flat)))
    b = rand(k) if with_bias else None
    got = run_one(lambda n, t: n.add_fully_connected(t, k, w, b), {"x": x})
    lead = shape[:1] if len(shape) == 2 else shape[:-3]
    ref = tf.linalg.matmul(tf.reshape(x, (-1, w.shape[1])), w, transpose_b=True)
    if with_bias:
        ref = tf.nn.bias_add(ref, b)
    ref = tf.reshape(ref, lead + ((k,) if len(shape) == 2 else (k, 1, 1))).numpy()
    assert got.shape == ref.shape
    assert rel_l2(got, ref) <= 1e-5


@pytest.mark.parametrize("act, alpha, beta, tf_fn", [
    (None, None, None, lambda y: y),
    (rt.ActivationType.RELU, None, None, tf.nn.relu),
    (rt.ActivationType.LEAKY_RELU, 0.2, None, lambda y: tf.nn.leaky_relu(y, 0.2)),
    (rt.ActivationType.CLIP, None, None, lambda y: tf.clip_by_value(y, 0.0, 6.0)),  # defaults
    (rt.ActivationType.CLIP, -0.5, 0.5, lambda y: tf.clip_by_value(y, -0.5, 0.5)),
    (rt.ActivationType.SIGMOID, None, None, tf.nn.sigmoid),
])
@pytest.mark.parametrize("with_residual", [True, False])
def test_fully_connected_fused_epilogue(act, alpha, beta, tf_fn, with_residual):
    x, w, b = rand(3, 4, 2, 2), rand(5, 16), rand(5)
    r = rand(3, 5, 1, 1)
    feeds = {"x": x, "r": r} if with_residual else {"x": x}

    def make(net, t, res=None):
        fc = net.add_fully_connected(t, 5, w, b)
        fc.post_activation, fc.post_alpha, fc.post_beta = act, alpha, beta
        if res is not None:
            fc.set_input(1, res)
        return fc

    got = run_one(make, feeds)
    y = tf.linalg.matmul(x.reshape(3, 16), w, transpose_b=True) + b
    if with_residual:
        y = y + r.reshape(3, 5)
    ref = tf_fn(y).numpy().reshape(3, 5, 1, 1)
    assert rel_l2(got, ref) <= 1e-5


def test_fully_connected_residual_broadcasts_over_batch():
    x, w, r = rand(3, 4), rand(2, 4), rand(1, 2)
    got = run_one(lambda n, t, res: _with_input(n.add_fully_connected(t, 2, w), 1, res),
                  {"x": x, "r": r})
    assert rel_l2(got, x @ w.T + r) <= 1e-5


def _with_input(layer, i, t):
    layer.set_input(i, t)
    return layer


def test_fully_connected_fp16_input():
    x, w = rand(4, 8).astype(np.float16), rand(3, 8)
    got = run_one(lambda n, t: n.add_fully_connected(t, 3, w), {"x": x})
    assert got.dtype == np.float16
    assert rel_l2(got, x.astype(np.float32) @ w.T) <= 1e-2


def test_fully_connected_dynamic_dims_propagate():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3, -1, 2))
    fc = net.add_fully_connected(x, 7, rand(7, 12))      # H unknown: checked at run time
    assert fc.get_output(0).shape == (-1, 7, 1, 1)
    x2 = net.add_input("x2", rt.float32, (-1, 5))
    assert net.add_fully_connected(x2, 2, rand(2, 5)).get_output(0).shape == (-1, 2)


def test_fully_connected_attribute_change_reinfers_and_rolls_back():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 3, 1, 1))
    fc = net.add_fully_connected(x, 4, rand(4, 3))
    with pytest.raises(rt.NetworkDefinitionError, match="kernel.*expected shape \\(5, C\\*H\\*W\\)"):
        fc.num_output_channels = 5
    assert fc.num_output_channels == 4 and fc.get_output(0).shape == (2, 4, 1, 1)
    x.shape = (6, 3, 1, 1)
    assert fc.get_output(0).shape == (6, 4, 1, 1)


@pytest.mark.parametrize("kwargs, shape, dtype, match", [
    (dict(kernel=None), (2, 3), rt.float32, "'kernel' is None"),
    (dict(kernel=np.ones((4, 3), np.float32)), (2, 3), rt.float32, "num_output_channels rows"),
    (dict(kernel=np.ones(6, np.float32)), (2, 3), rt.float32, "num_output_channels rows"),
    (dict(kernel=np.ones((2, 5), np.float32)), (2, 3), rt.float32, "3 columns"),
    (dict(bias=np.ones(3, np.float32)), (2, 3), rt.float32, "'bias' is 3 values"),
    (dict(), (3,), rt.float32, "rank-2"),
    (dict(), (2, 3), rt.int32, "FLOAT or HALF"),
])
def test_fully_connected_rejects_bad_arguments(kwargs, shape, dtype, match):
    net = rt.Network()
    x = net.add_input("x", dtype, shape)
    args = dict(kernel=np.ones((2, 3), np.float32), bias=None)
    args.update(kwargs)
    with pytest.raises(rt.NetworkDefinitionError, match=match):
        net.add_fully_connected(x, 2, args["kernel"], args["bias"])
    assert net.num_layers == 0


def test_fully_connected_rejects_bad_residual():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 3))
    fc = net.add_fully_connected(x, 4, rand(4, 3))
    with pytest.raises(rt.NetworkDefinitionError, match="residual.*equal ranks"):
        fc.set_input(1, net.add_input("r", rt.float32, (2, 1, 4)))
    x4 = net.add_input("x4", rt.float32, (2, 3, 1, 1))
    fc4 = net.add_fully_connected(x4, 4, rand(4, 3))
    with pytest.raises(rt.NetworkDefinitionError, match="residual.*broadcasts to the output"):
        fc4.set_input(1, net.add_input("r2", rt.float32, (2, 4, 3, 1)))
    with pytest.raises(rt.NetworkDefinitionError, match="residual.*FLOAT or HALF"):
        fc.set_input(1, net.add_input("r3", rt.int32, (2, 4)))
    assert fc.num_inputs == 1 or fc.get_input(1) is None


# ----------------------------------------------------------------------------
# MatrixMultiply

N, T, V = rt.MatrixOperation.NONE, rt.MatrixOperation.TRANSPOSE, rt.MatrixOperation.VECTOR
_SUB = {N: ("mk", "kn"), T: ("km", "nk"), V: ("k", "k")}

MM_CASES = [
    (N, (3, 4), N, (4, 5)),
    (T, (4, 3), N, (4, 5)),
    (N, (3, 4), T, (5, 4)),
    (T, (2, 4, 3), T, (2, 5, 4)),
    (N, (2, 1, 3, 4), N, (1, 3, 4, 5)),      # batch broadcasting both ways
    (N, (2, 3, 4), V, (2, 4)),               # matrix x vector
    (V, (1, 4), T, (3, 6, 4)),               # vector x matrix, broadcast batch
    (V, (2, 4), V, (2, 4)),                  # dot products
    (V, (4,), V, (4,)),
]


@pytest.mark.parametrize("op0, sa, op1, sb", MM_CASES)
def test_matrix_multiply_matches_tf_einsum(op0, sa, op1, sb):
    a, b = rand(*sa), rand(*sb)
    got = run_one(lambda n, x, y: n.add_matrix_multiply(x, op0, y, op1), {"a": a, "b": b})
    out = ("m" if op0 != V else "") + ("n" if op1 != V else "")
    ref = tf.einsum(f"...{_SUB[op0][0]},...{_SUB[op1][1]}->...{out}",
                    tf.constant(a), tf.constant(b)).numpy()
    assert got.shape == ref.shape
    assert rel_l2(got, ref) <= 1e-5


def test_matrix_multiply_dynamic_dims_and_operation_change():
    net = rt.Network()
    a = net.add_input("a", rt.float32, (-1, 3, 4))
    b = net.add_input("b", rt.float32, (1, -1, 4))
    mm = net.add_matrix_multiply(a, N, b, T)
    assert mm.get_output(0).shape == (-1, 3, -1)
    assert mm.get_operation(1) == T
    with pytest.raises(rt.NetworkDefinitionError, match="inner dims 3 and 4"):
        mm.set_operation(0, T)
    assert mm.op0 == N and mm.get_output(0).shape == (-1, 3, -1)     # rolled back
    v = net.add_input("v", rt.float32, (-1, 4))
    mv = net.add_matrix_multiply(a, N, v, V)
    assert mv.get_output(0).shape == (-1, 3)
    a.shape = (-1, 5, 4)
    assert mv.get_output(0).shape == (-1, 5) and mm.get_output(0).shape == (-1, 5, -1)


@pytest.mark.parametrize("sa, op0, sb, op1, dtypes, match", [
    ((3, 4), N, (5, 6), N, None, "inner dims 4 and 5"),
    ((3, 4), N, (3, 4), N, None, "inner dims 4 and 3"),
    ((2, 3, 4), N, (4, 5), N, None, "equally many batch dims"),
    ((2, 3, 4), N, (3, 4, 5), N, None, "dims equal or 1"),
    ((4,), N, (4, 5), N, None, "rank >= 2 for a NONE operand"),
    ((3, 4), N, (), V, None, "rank >= 1 for a VECTOR operand"),
    ((3, 4), N, (4, 5), N, (rt.int32, rt.float32), "input0.*FLOAT or HALF"),
])
def test_matrix_multiply_rejects_bad_arguments(sa, op0, sb, op1, dtypes, match):
    net = rt.Network()
    da, db = dtypes or (rt.float32, rt.float32)
    a, b = net.add_input("a", da, sa), net.add_input("b", db, sb)
    with pytest.raises(rt.NetworkDefinitionError, match=match):
        net.add_matrix_multiply(a, op0, b, op1)
    assert net.num_layers == 0


# ----------------------------------------------------------------------------
# Reduce

_TF_REDUCE = {
    rt.ReduceOperation.SUM: tf.reduce_sum, rt.ReduceOperation.PROD: tf.reduce_prod,
    rt.ReduceOperation.MAX: tf.reduce_max, rt.ReduceOperation.MIN: tf.reduce_min,
    rt.ReduceOperation.AVG: tf.reduce_mean,
}


@pytest.mark.parametrize("op", list(rt.ReduceOperation))
@pytest.mark.parametrize("mask", [0b0001, 0b0110, 0b1000, 0b1111])
@pytest.mark.parametrize("keep_dims", [True, False])
def test_reduce_matches_tf(op, mask, keep_dims):
    x = rand(2, 3, 4, 5)
    if op == rt.ReduceOperation.PROD:
        x = (0.5 + RNG.random(x.shape)).astype(np.float32)   # keep the product O(1)
    got = run_one(lambda n, t: n.add_reduce(t, op, mask, keep_dims), {"x": x})
    axes = [i for i in range(4) if mask >> i & 1]
    ref = _TF_REDUCE[op](x, axis=axes, keepdims=keep_dims).numpy()
    assert got.shape == ref.shape
    assert rel_l2(got, ref) <= 1e-5


def test_reduce_long_sum_and_int32():
    x = rand(2, 50000)
    got = run_one(lambda n, t: n.add_reduce(t, rt.ReduceOperation.SUM, 0b10, False), {"x": x})
    assert rel_l2(got, tf.reduce_sum(tf.constant(x, tf.float64), axis=1).numpy()) <= 1e-4
    xi = RNG.integers(-100, 100, (3, 7)).astype(np.int32)
    got = run_one(lambda n, t: n.add_reduce(t, rt.ReduceOperation.MAX, 0b10, True), {"x": xi})
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, tf.reduce_max(xi, axis=1, keepdims=True).numpy())


def test_reduce_dynamic_dims_and_attribute_change():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3, 4))
    r = net.add_reduce(x, rt.ReduceOperation.AVG, 0b100, False)
    assert r.get_output(0).shape == (-1, 3)
    r.keep_dims = True
    assert r.get_output(0).shape == (-1, 3, 1)
    r.axes = 0b011
    assert r.get_output(0).shape == (1, 1, 4)


@pytest.mark.parametrize("dtype, op, mask, match", [
    (rt.float32, rt.ReduceOperation.SUM, 0b10000, "bitmask 0b10000.*below rank 4"),
    (rt.int32, rt.ReduceOperation.AVG, 0b1, "AVG on an INT32"),
    (rt.bool, rt.ReduceOperation.MAX, 0b1, "FLOAT, HALF or INT32"),
])
def test_reduce_rejects_bad_arguments(dtype, op, mask, match):
    net = rt.Network()
    x = net.add_input("x", dtype, (2, 3, 4, 5))
    with pytest.raises(rt.NetworkDefinitionError, match=match):
        net.add_reduce(x, op, mask, False)
    assert net.num_layers == 0


# ----------------------------------------------------------------------------
# SoftMax

@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_softmax_matches_tf(axis):
    x = rand(2, 3, 4, 5) * 3
    got = run_one(lambda n, t: _set(n.add_softmax(t), "axes", 1 << axis), {"x": x})
    assert rel_l2(got, tf.nn.softmax(x, axis=axis).numpy()) <= 1e-5


def _set(layer, attr, value):
    setattr(layer, attr, value)
    return layer


def test_softmax_default_axis_and_stability():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 6, 2, 2))
    sm = net.add_softmax(x)
    assert sm.axes == 0b10 and sm.get_output(0).shape == (-1, 6, 2, 2)
    net.mark_output(sm.get_output(0))
    big = rand(2, 6, 2, 2) * 1000            # exp would overflow without the max shift
    got = interpret(net, {"x": big})[sm.get_output(0).name]
    assert np.all(np.isfinite(got))
    assert rel_l2(got, tf.nn.softmax(big, axis=1).numpy()) <= 1e-5


@pytest.mark.parametrize("dtype, mask, match", [
    (rt.float32, 0b11, "exactly one bit set"),
    (rt.float32, 0b10000, "below rank 4"),
    (rt.int32, 0b1, "FLOAT or HALF"),
])
def test_softmax_rejects_bad_arguments(dtype, mask, match):
    net = rt.Network()
    x = net.add_input("x", dtype, (2, 3, 4, 5))
    with pytest.raises(rt.NetworkDefinitionError, match=match):
        sm = net.add_softmax(x)
        sm.axes = mask
    if dtype == rt.float32:
        assert net.get_layer(0).axes == 0b10       # rolled back


# ----------------------------------------------------------------------------
# through the builder and a plan file

def test_linear_layers_survive_a_plan_round_trip():
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 4, 2, 2))
    fc = net.add_fully_connected(x, 6, rand(6, 16), rand(6))
    act = net.add_activation(fc.get_output(0), rt.ActivationType.RELU)   # fused into fc
    sm = net.add_softmax(act.get_output(0))
    red = net.add_reduce(sm.get_output(0), rt.ReduceOperation.MAX, 0b110, False)
    q = net.add_input("q", rt.float32, (-1, 3, 4))
    mm = net.add_matrix_multiply(q, T, q, N)
    for layer in (red, mm):
        net.mark_output(layer.get_output(0))
    feeds = {"x": rand(3, 4, 2, 2), "q": rand(3, 3, 4)}
    ref = interpret(net, feeds)
    engine = rt.Runtime().deserialize_cuda_engine(
        b.build_serialized_network(net, b.create_builder_config()))
    got = engine.create_execution_context().execute(feeds)
    for name in ref:
        assert rel_l2(got[name], ref[name]) <= 1e-6


def test_reduce_kernel_rejects_unknown_operation():
    from kernels import reduce as R
    with pytest.raises(ValueError, match="unknown reduce operation 'MEDIAN'; valid: SUM"):
        R.reduce(rand(2, 3), "MEDIAN", (1,), False)
