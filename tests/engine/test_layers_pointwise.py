"""Pointwise layers (Activation, Unary, ElementWise, Scale, Identity, Cast,
Select) against TensorFlow ops or NumPy formulas written independently of
kernels/pointwise.py."""
import math

import numpy as np
import pytest

import engine as rt
from engine.layers import classes as L
from engine.testing import interpret, rel_l2
from kernels import pointwise as K

A, U, E = rt.ActivationType, rt.UnaryOperation, rt.ElementWiseOperation


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def rng(seed=0):
    return np.random.default_rng(seed)


def run(build, feeds):
    """Build a network from ``build(net, *inputs)`` (returns a layer) and run it."""
    net = rt.Network()
    ins = [net.add_input(name, rt.DataType.from_numpy(v.dtype), v.shape) for name, v in feeds.items()]
    layer = build(net, *ins)
    net.mark_output(layer.get_output(0))
    out = interpret(net, feeds)[layer.get_output(0).name]
    assert out.dtype == layer.get_output(0).dtype.to_numpy()
    return out


def close(got, ref, tol=1e-5):
    assert got.shape == ref.shape
    assert rel_l2(got, ref) <= tol, rel_l2(got, ref)


# ----------------------------------------------------------------------------
# erf

def test_erf_matches_math_erf_everywhere():
    xs = np.concatenate([np.linspace(-9, 9, 200001), [0.0, -0.0, 2.5, -2.5, 6.0, -6.0]])
    ref = np.array([math.erf(v) for v in xs])
    assert np.abs(K.erf(xs) - ref).max() < 1e-12


def test_erf_keeps_dtype_and_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 0.5], np.float32)
    y = K.erf(x)
    assert y.dtype == np.float32
    assert np.isnan(y[0]) and y[1] == 1 and y[2] == -1
    assert abs(y[3] - math.erf(0.5)) < 1e-7
    assert K.erf(np.array([1, 2])).dtype == np.float64


def test_erf_large_array_is_vectorised():
    x = rng().standard_normal((64, 1024)).astype(np.float32) * 3
    ref = np.array([math.erf(v) for v in x.astype(np.float64).ravel()]).reshape(x.shape)
    close(K.erf(x), ref, 1e-7)


# ----------------------------------------------------------------------------
# activation

def _tf_activation(tf, kind, x):
    n = tf.nn
    return {
        A.RELU: n.relu, A.SIGMOID: n.sigmoid, A.TANH: n.tanh,
        A.LEAKY_RELU: lambda v: n.leaky_relu(v, 0.01), A.ELU: n.elu, A.SELU: n.selu,
        A.SOFTSIGN: n.softsign, A.SOFTPLUS: n.softplus,
        A.CLIP: lambda v: tf.clip_by_value(v, 0.0, 6.0),
        A.GELU_ERF: lambda v: n.gelu(v, approximate=False),
        A.GELU_TANH: lambda v: n.gelu(v, approximate=True),
    }[kind](x).numpy()


def _np_activation(kind, x, a, b):
    # written from TensorRT's operator page, independently of the kernel
    x = x.astype(np.float64)
    if kind == A.HARD_SIGMOID:
        return np.maximum(0, np.minimum(1, a * x + b))
    if kind == A.SCALED_TANH:
        return a * np.tanh(b * x)
    if kind == A.THRESHOLDED_RELU:
        return x * (x > a)
    if kind == A.LEAKY_RELU:
        return np.maximum(x, 0) + a * np.minimum(x, 0)
    if kind == A.ELU:
        return np.maximum(x, 0) + a * (np.exp(np.minimum(x, 0)) - 1)
    if kind == A.SELU:
        return b * (np.maximum(x, 0) + a * (np.exp(np.minimum(x, 0)) - 1))
    if kind == A.SOFTPLUS:
        return a * np.log1p(np.exp(b * x))
    if kind == A.CLIP:
        return np.minimum(np.maximum(x, a), b)
    raise AssertionError(kind)


X = rng(1).standard_normal((2, 3, 5, 7)).astype(np.float32) * 3


@pytest.mark.parametrize("kind", [k for k in A if k not in
                                  (A.HARD_SIGMOID, A.SCALED_TANH, A.THRESHOLDED_RELU)])
def test_activation_matches_tensorflow(tf, kind):
    got = run(lambda n, x: n.add_activation(x, kind), {"x": X})
    close(got, _tf_activation(tf, kind, X))


@pytest.mark.parametrize("kind,alpha,beta", [
    (A.HARD_SIGMOID, None, None), (A.HARD_SIGMOID, 0.3, 0.4),
    (A.SCALED_TANH, None, None), (A.SCALED_TANH, 1.7, 0.66),
    (A.THRESHOLDED_RELU, None, None), (A.THRESHOLDED_RELU, 0.5, None),
    (A.LEAKY_RELU, 0.2, None), (A.ELU, 0.5, None), (A.SELU, 1.5, 1.1),
    (A.SOFTPLUS, 2.0, 0.5), (A.CLIP, -1.0, 2.0)])
def test_activation_alpha_beta(kind, alpha, beta):
    def build(n, x):
        layer = n.add_activation(x, kind)
        if alpha is not None:
            layer.alpha = alpha
        if beta is not None:
            layer.beta = beta
        return layer
    got = run(build, {"x": X})
    defaults = {A.HARD_SIGMOID: (0.2, 0.5), A.SCALED_TANH: (1.0, 1.0),
                A.THRESHOLDED_RELU: (1.0, 0.0)}
    da, db = defaults.get(kind, (0.0, 0.0))
    close(got, _np_activation(kind, X, da if alpha is None else alpha, db if beta is None else beta))


def test_activation_fp16(tf):
    x = X.astype(np.float16)
    got = run(lambda n, t: n.add_activation(t, A.GELU_ERF), {"x": x})
    assert got.dtype == np.float16
    close(got, _tf_activation(tf, A.GELU_ERF, X.astype(np.float16).astype(np.float32)), 1e-2)


def test_activation_type_setter_reinfers():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3))
    act = net.add_activation(x, A.RELU)
    act.type = A.TANH
    assert act.activation_type == A.TANH and act.get_output(0).shape == (-1, 3)


def test_activation_rejects_int32():
    net = rt.Network()
    x = net.add_input("x", rt.int32, (2, 3))
    with pytest.raises(rt.NetworkDefinitionError, match="expected a FLOAT, HALF or INT8 tensor"):
        net.add_activation(x, A.RELU)
    assert net.num_layers == 0


def test_activation_kernel_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown activation 'NOPE'"):
        K.activation(X, "NOPE")


# ----------------------------------------------------------------------------
# unary

def _unary_case(tf, op):
    r = rng(2)
    x = r.standard_normal((3, 4, 5)).astype(np.float32) * 2
    m = tf.math
    table = {
        U.EXP: (x, m.exp), U.LOG: (np.abs(x) + 0.1, m.log), U.SQRT: (np.abs(x), m.sqrt),
        U.RECIP: (np.abs(x) + 0.5, m.reciprocal), U.ABS: (x, m.abs), U.NEG: (x, m.negative),
        U.SIN: (x, m.sin), U.COS: (x, m.cos), U.TAN: (x / 2, m.tan), U.SINH: (x, m.sinh),
        U.COSH: (x, m.cosh), U.ASIN: (np.tanh(x), m.asin), U.ACOS: (np.tanh(x), m.acos),
        U.ATAN: (x, m.atan), U.ASINH: (x, m.asinh), U.ACOSH: (np.abs(x) + 1, m.acosh),
        U.ATANH: (np.tanh(x) * 0.9, m.atanh), U.CEIL: (x, m.ceil), U.FLOOR: (x, m.floor),
        U.ERF: (x, m.erf), U.NOT: (x > 0, m.logical_not), U.SIGN: (x, m.sign),
        # halves included: TensorRT (and TF) round them to even
        U.ROUND: (np.concatenate([x.ravel(), [0.5, 1.5, 2.5, -0.5, -2.5]]).astype(np.float32),
                  m.round),
    }
    return table[op]


@pytest.mark.parametrize("op", list(U))
def test_unary_matches_tensorflow(tf, op):
    x, fn = _unary_case(tf, op)
    got = run(lambda n, t: n.add_unary(t, op), {"x": x})
    ref = fn(x).numpy()
    if op == U.NOT:
        np.testing.assert_array_equal(got, ref)
    else:
        close(got, ref)


@pytest.mark.parametrize("op", [U.ABS, U.NEG, U.SIGN])
def test_unary_int32(tf, op):
    x = rng(3).integers(-50, 50, (4, 6)).astype(np.int32)
    got = run(lambda n, t: n.add_unary(t, op), {"x": x})
    fn = {U.ABS: tf.math.abs, U.NEG: tf.math.negative, U.SIGN: tf.math.sign}[op]
    np.testing.assert_array_equal(got, fn(x).numpy())


@pytest.mark.parametrize("op,dtype,expected", [
    (U.NOT, rt.float32, "expected a BOOL tensor"),
    (U.EXP, rt.int32, "expected a FLOAT, HALF tensor"),
    (U.ABS, rt.bool, "expected a FLOAT, HALF, INT32 tensor")])
def test_unary_rejects_dtype(op, dtype, expected):
    net = rt.Network()
    x = net.add_input("x", dtype, (2, 3))
    with pytest.raises(rt.NetworkDefinitionError, match=expected):
        net.add_unary(x, op)


def test_unary_op_change_reinfers_and_rolls_back():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3))
    u = net.add_unary(x, U.EXP)
    assert u.get_output(0).shape == (-1, 3)
    with pytest.raises(rt.NetworkDefinitionError, match="NOT"):
        u.op = U.NOT
    assert u.op == U.EXP


def test_unary_kernel_errors():
    with pytest.raises(ValueError, match="unknown unary operation"):
        K.unary(X, "NOPE")
    with pytest.raises(ValueError, match="RECIP needs a floating-point array"):
        K.unary(np.array([1, 2], np.int32), "RECIP")


# ----------------------------------------------------------------------------
# elementwise

FLOAT_OPS = [E.SUM, E.PROD, E.MAX, E.MIN, E.SUB, E.DIV, E.POW, E.FLOOR_DIV]


def _tf_binary(tf, op):
    m = tf.math
    return {E.SUM: m.add, E.PROD: m.multiply, E.MAX: m.maximum, E.MIN: m.minimum,
            E.SUB: m.subtract, E.DIV: m.truediv, E.POW: m.pow, E.FLOOR_DIV: m.floordiv,
            E.AND: m.logical_and, E.OR: m.logical_or, E.XOR: m.logical_xor,
            E.EQUAL: m.equal, E.GREATER: m.greater, E.LESS: m.less}[op]


SHAPES = [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 1, 4, 1), (1, 3, 1, 5)), ((3, 1), (1, 1))]


@pytest.mark.parametrize("op", FLOAT_OPS)
@pytest.mark.parametrize("sa,sb", SHAPES)
def test_elementwise_float_matches_tensorflow(tf, op, sa, sb):
    r = rng(4)
    a = r.standard_normal(sa).astype(np.float32)
    b = r.standard_normal(sb).astype(np.float32)
    if op == E.POW:
        a = np.abs(a) + 0.5
    if op in (E.DIV, E.FLOOR_DIV):
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(np.float32)
    got = run(lambda n, x, y: n.add_elementwise(x, y, op), {"a": a, "b": b})
    ref = _tf_binary(tf, op)(a, b).numpy()
    close(got, ref)


@pytest.mark.parametrize("op", FLOAT_OPS)
def test_elementwise_int32(tf, op):
    r = rng(5)
    a = r.integers(-20, 20, (4, 6)).astype(np.int32)
    b = r.integers(1, 6, (4, 6)).astype(np.int32) * np.where(r.random((4, 6)) < 0.5, -1, 1)
    b = b.astype(np.int32)
    if op == E.POW:
        b = np.abs(b) % 4
    got = run(lambda n, x, y: n.add_elementwise(x, y, op), {"a": a, "b": b})
    # TensorRT's integer DIV truncates toward zero (TF's truncatediv)
    fn = tf.truncatediv if op == E.DIV else _tf_binary(tf, op)
    np.testing.assert_array_equal(got, fn(a, b).numpy())


def test_elementwise_int_pow_negative_exponent_truncates():
    a = np.array([2, -2, 1, 3], np.int32)
    b = np.array([-1, -1, -3, 2], np.int32)
    np.testing.assert_array_equal(K.elementwise(a, b, "POW"), [0, 0, 1, 9])


@pytest.mark.parametrize("op", [E.AND, E.OR, E.XOR, E.EQUAL])
def test_elementwise_bool(tf, op):
    r = rng(6)
    a, b = r.random((2, 1, 5)) < 0.5, r.random((2, 3, 1)) < 0.5
    got = run(lambda n, x, y: n.add_elementwise(x, y, op), {"a": a, "b": b})
    np.testing.assert_array_equal(got, _tf_binary(tf, op)(a, b).numpy())


@pytest.mark.parametrize("op", [E.EQUAL, E.GREATER, E.LESS])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_elementwise_comparisons_output_bool(tf, op, dtype):
    r = rng(7)
    a = r.integers(-3, 3, (3, 4)).astype(dtype)
    b = r.integers(-3, 3, (1, 4)).astype(dtype)
    got = run(lambda n, x, y: n.add_elementwise(x, y, op), {"a": a, "b": b})
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, _tf_binary(tf, op)(a, b).numpy())


def test_elementwise_fp16():
    a = rng(8).standard_normal((4, 5)).astype(np.float16)
    b = rng(9).standard_normal((4, 5)).astype(np.float16)
    got = run(lambda n, x, y: n.add_elementwise(x, y, E.PROD), {"a": a, "b": b})
    assert got.dtype == np.float16
    close(got, a.astype(np.float32) * b.astype(np.float32), 1e-2)


def test_elementwise_dynamic_dims_and_op_change():
    net = rt.Network()
    a = net.add_input("a", rt.float32, (-1, 3, 1))
    b = net.add_input("b", rt.float32, (1, 3, 5))
    ew = net.add_elementwise(a, b, E.SUM)
    assert ew.get_output(0).shape == (-1, 3, 5)
    assert ew.get_output(0).dtype == rt.float32
    ew.op = E.GREATER
    assert ew.get_output(0).dtype == rt.bool


@pytest.mark.parametrize("da,db,sa,sb,op,expected", [
    (rt.float32, rt.int32, (2, 3), (2, 3), E.SUM, "expected both inputs of one dtype"),
    (rt.float32, rt.float32, (2, 3), (2, 3), E.AND, "expected BOOL tensors"),
    (rt.bool, rt.bool, (2, 3), (2, 3), E.SUM, "expected FLOAT, HALF, INT32 tensors"),
    (rt.float32, rt.float32, (2, 3), (3,), E.SUM, "equal ranks"),
    (rt.float32, rt.float32, (2, 3), (2, 4), E.SUM, "dims equal or 1")])
def test_elementwise_rejects(da, db, sa, sb, op, expected):
    net = rt.Network()
    a, b = net.add_input("a", da, sa), net.add_input("b", db, sb)
    with pytest.raises(rt.NetworkDefinitionError, match=expected):
        net.add_elementwise(a, b, op)
    assert net.num_layers == 0


def test_elementwise_kernel_rejects_unknown_op():
    with pytest.raises(ValueError, match="unknown elementwise operation"):
        K.elementwise(X, X, "NOPE")


# ----------------------------------------------------------------------------
# scale

def _scale_ref(x, mode, shift, scale, power, axis):
    # a direct per-element loop over the coefficient index (small shapes only)
    y = np.empty(x.shape, np.float64)
    for idx in np.ndindex(*x.shape):
        if mode == rt.ScaleMode.UNIFORM:
            k = 0
        elif mode == rt.ScaleMode.CHANNEL:
            k = idx[axis]
        else:
            k = np.ravel_multi_index(idx[axis:], x.shape[axis:])
        s = 1.0 if scale is None else float(scale.ravel()[k])
        t = 0.0 if shift is None else float(shift.ravel()[k])
        p = 1.0 if power is None else float(power.ravel()[k])
        y[idx] = (float(x[idx]) * s + t) ** p
    return y


@pytest.mark.parametrize("mode", list(rt.ScaleMode))
@pytest.mark.parametrize("which", ["shift", "scale", "power", "shift+scale", "all"])
@pytest.mark.parametrize("shape,axis", [((2, 3, 4, 5), 1), ((2, 4, 3, 2, 2), 2), ((3, 4), 1)])
def test_scale_matches_formula(mode, which, shape, axis):
    r = rng(10)
    x = (np.abs(r.standard_normal(shape)) + 0.5).astype(np.float32)
    count = {rt.ScaleMode.UNIFORM: 1, rt.ScaleMode.CHANNEL: shape[axis],
             rt.ScaleMode.ELEMENTWISE: int(np.prod(shape[axis:]))}[mode]
    coeffs = {
        "shift": r.random(count).astype(np.float32) + 0.1,
        "scale": r.random(count).astype(np.float32) + 0.5,
        "power": (r.random(count) * 2 + 0.5).astype(np.float32)}
    given = {k: (v if k in which or which == "all" else None) for k, v in coeffs.items()}
    got = run(lambda n, t: n.add_scale_nd(t, mode, given["shift"], given["scale"], given["power"],
                                          axis), {"x": x})
    close(got, _scale_ref(x, mode, given["shift"], given["scale"], given["power"], axis))


def test_scale_builder_hook_attributes():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (1, 3, 2, 2))
    s = net.add_scale(x, rt.ScaleMode.CHANNEL, shift=rt.Weights(np.ones(3, np.float32)),
                      scale=np.full(3, 2.0, np.float32), power=rt.Weights())
    assert s.mode == rt.ScaleMode.CHANNEL and s.channel_axis == 1
    assert s.power is None and s.shift.dtype == np.float32 and s.scale.shape == (3,)


def test_scale_dynamic_channel_checked_at_execution():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, -1, 4))
    s = net.add_scale(x, rt.ScaleMode.CHANNEL, scale=np.ones(3, np.float32))
    assert s.get_output(0).shape == (2, -1, 4)
    assert s.infer([(2, 3, 4)], [rt.float32]) == [((2, 3, 4), rt.float32)]
    with pytest.raises(rt.NetworkDefinitionError, match="is 3 values; expected 5 values for CHANNEL"):
        s.infer([(2, 5, 4)], [rt.float32])


def test_scale_rejects_bad_sizes_and_rolls_back_mode():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 3, 4))
    with pytest.raises(rt.NetworkDefinitionError, match="argument 'shift' is 2 values; expected 3"):
        net.add_scale(x, rt.ScaleMode.CHANNEL, shift=np.ones(2, np.float32))
    s = net.add_scale(x, rt.ScaleMode.CHANNEL, scale=np.ones(3, np.float32))
    with pytest.raises(rt.NetworkDefinitionError, match="12 values for ELEMENTWISE"):
        s.mode = rt.ScaleMode.ELEMENTWISE
    assert s.mode == rt.ScaleMode.CHANNEL
    with pytest.raises(rt.NetworkDefinitionError, match="channel_axis"):
        s.channel_axis = 3


def test_scale_rejects_int_input_and_int_weights():
    net = rt.Network()
    x = net.add_input("x", rt.int32, (2, 3))
    with pytest.raises(rt.NetworkDefinitionError, match="expected a FLOAT or HALF tensor"):
        net.add_scale(x, rt.ScaleMode.UNIFORM, scale=np.ones(1, np.float32))
    y = net.add_input("y", rt.float32, (2, 3))
    with pytest.raises(rt.NetworkDefinitionError, match="an array of float32, float16"):
        net.add_scale(y, rt.ScaleMode.UNIFORM, scale=np.ones(1, np.int32))


def test_scale_kernel_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown scale mode"):
        K.scale(X, "NOPE")


# ----------------------------------------------------------------------------
# identity, cast, select

@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_])
def test_identity_copies(dtype):
    x = (rng(11).standard_normal((3, 4)) * 5).astype(dtype)
    got = run(lambda n, t: n.add_identity(t), {"x": x})
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("src,dst", [
    (np.float32, rt.int32), (np.float32, rt.bool), (np.int32, rt.float32),
    (np.bool_, rt.float32), (np.int32, rt.bool), (np.float32, rt.float16),
    (np.float16, rt.float32), (np.bool_, rt.int32)])
def test_cast_matches_tensorflow(tf, src, dst):
    x = (rng(13).standard_normal((4, 5)) * 4).astype(src)
    got = run(lambda n, t: n.add_cast(t, dst), {"x": x})
    ref = tf.cast(x, dst.value).numpy()     # TF also truncates float -> int toward zero
    np.testing.assert_array_equal(got, ref)


def test_cast_saturates_and_zeroes_nan():
    x = np.array([np.nan, np.inf, -np.inf, 3e10, -2.7, 2.7], np.float32)
    info = np.iinfo(np.int32)
    np.testing.assert_array_equal(K.cast(x, np.int32), [0, info.max, info.min, info.max, -2, 2])
    np.testing.assert_array_equal(K.cast(np.array([300, -300], np.int32), np.int8), [127, -128])


def test_cast_needs_to_type():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2,))
    with pytest.raises(rt.NetworkDefinitionError, match="argument 'to_type' is None"):
        net._add(L.CastLayer(net, [x]))
    c = net.add_cast(x, rt.int32)
    c.to_type = rt.bool
    assert c.get_output(0).dtype == rt.bool


@pytest.mark.parametrize("sc,sa,sb", [((2, 3, 4), (2, 3, 4), (2, 3, 4)),
                                      ((2, 1, 4), (1, 3, 1), (2, 3, 1))])
def test_select_matches_tensorflow(tf, sc, sa, sb):
    r = rng(14)
    c = r.random(sc) < 0.5
    a, b = r.standard_normal(sa).astype(np.float32), r.standard_normal(sb).astype(np.float32)
    got = run(lambda n, x, y, z: n.add_select(x, y, z), {"c": c, "a": a, "b": b})
    np.testing.assert_array_equal(got, tf.where(c, a, b).numpy())


def test_select_dynamic_shape():
    net = rt.Network()
    c = net.add_input("c", rt.bool, (-1, 1))
    a = net.add_input("a", rt.int32, (1, 4))
    b = net.add_input("b", rt.int32, (1, 1))
    assert net.add_select(c, a, b).get_output(0).shape == (-1, 4)


@pytest.mark.parametrize("dc,da,db,expected", [
    (rt.float32, rt.float32, rt.float32, "argument 'condition' is a FLOAT tensor"),
    (rt.bool, rt.float32, rt.int32, "expected one dtype for both")])
def test_select_rejects(dc, da, db, expected):
    net = rt.Network()
    ins = [net.add_input(n, d, (2, 3)) for n, d in zip("cab", (dc, da, db))]
    with pytest.raises(rt.NetworkDefinitionError, match=expected):
        net.add_select(*ins)


# ----------------------------------------------------------------------------
# plan round trip

def test_pointwise_layers_survive_a_plan_round_trip():
    from engine import plan as planfile
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3, 4))
    act = net.add_activation(x, A.LEAKY_RELU)
    act.alpha = 0.2
    u = net.add_unary(act.get_output(0), U.ABS)
    s = net.add_scale(u.get_output(0), rt.ScaleMode.CHANNEL, np.arange(3, dtype=np.float32),
                      np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32))
    add = net.add_elementwise(s.get_output(0), x, E.SUM)
    gt = net.add_elementwise(add.get_output(0), x, E.GREATER)
    sel = net.add_select(gt.get_output(0), net.add_identity(x).get_output(0), add.get_output(0))
    cast = net.add_cast(sel.get_output(0), rt.int32)
    net.mark_output(cast.get_output(0))
    arrays = planfile.ArrayTable()
    doc, table = planfile.loads(planfile.dumps(planfile.encode_network(net, arrays), arrays))
    back = planfile.decode_network(doc, table)
    feeds = {"x": X[0, :, :4, 0].reshape(1, 3, 4) * 4}
    np.testing.assert_array_equal(interpret(back, feeds)["cast_7_out"],
                                  interpret(net, feeds)["cast_7_out"])
    assert back.get_layer(0).alpha == 0.2 and back.get_layer(2).power[0] == 2.0
