"""INormalizationLayer: layer, instance and group norm against independent
float64 formulas (and Keras' LayerNormalization), plus its errors."""
import numpy as np
import pytest

import engine as rt
from engine.testing import interpret, rel_l2

RNG = np.random.default_rng(31)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def run(x, scale, bias, axes, eps=1e-5, groups=1):
    net = rt.Network()
    t = net.add_input("x", rt.float32, x.shape)
    s = net.add_constant(scale.shape, scale).get_output(0)
    b = net.add_constant(bias.shape, bias).get_output(0)
    layer = net.add_normalization(t, s, b, axes)
    layer.epsilon, layer.num_groups = eps, groups
    net.mark_output(layer.get_output(0))
    return interpret(net, {"x": x})[layer.get_output(0).name]


def reference(x, scale, bias, axes, eps, groups=1):
    y = x.astype(np.float64)
    if groups > 1:
        n, c = y.shape[:2]
        g = y.reshape((n, groups, c // groups) + y.shape[2:])
        red = tuple(range(2, g.ndim))
        g = (g - g.mean(red, keepdims=True)) / np.sqrt(g.var(red, keepdims=True) + eps)
        y = g.reshape(y.shape)
    else:
        red = tuple(i for i in range(y.ndim) if axes >> i & 1)
        y = (y - y.mean(red, keepdims=True)) / np.sqrt(y.var(red, keepdims=True) + eps)
    return y * scale + bias


def test_layer_norm_matches_keras():
    tf = pytest.importorskip("tensorflow")
    x, gamma, beta = randn(3, 7, 16), randn(16), randn(16)
    ln = tf.keras.layers.LayerNormalization(epsilon=1e-3)
    ln.build((None, 7, 16))
    ln.set_weights([gamma, beta])
    got = run(x, gamma.reshape(1, 1, 16), beta.reshape(1, 1, 16), 1 << 2, eps=1e-3)
    assert rel_l2(got, ln(x).numpy()) <= 1e-5


@pytest.mark.parametrize("shape,axes,groups", [
    ((2, 4, 5, 6), 0b1100, 1),         # instance norm
    ((2, 4, 5, 6), 0b1110, 1),         # layer norm over C, H, W
    ((2, 6, 3, 5), 0b1100, 3),         # group norm
    ((2, 6, 3, 5), 0b1100, 6),         # one channel per group = instance norm
])
def test_normalization_against_a_float64_formula(shape, axes, groups):
    x = randn(*shape) * 3 + 1
    bshape = (1, shape[1], 1, 1)
    scale, bias = randn(*bshape), randn(*bshape)
    got = run(x, scale, bias, axes, 1e-4, groups)
    assert rel_l2(got, reference(x, scale, bias, axes, 1e-4, groups)) <= 1e-5


@pytest.mark.parametrize("edit,match", [
    (dict(axes=1 << 5), "bitmask"),
    (dict(epsilon=0.0), "a positive number"),
    (dict(num_groups=4), "a divisor of the channels"),
])
def test_bad_attributes(edit, match):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 6, 3))
    s = net.add_constant((1, 6, 1), np.ones((1, 6, 1), np.float32)).get_output(0)
    layer = net.add_normalization(x, s, s, 0b100)
    with pytest.raises(rt.NetworkDefinitionError, match=match):
        for k, v in edit.items():
            setattr(layer, k, v)


def test_bad_inputs():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 6, 3))
    i = net.add_input("i", rt.int32, (2, 6, 3))
    s = net.add_constant((1, 6, 1), np.ones((1, 6, 1), np.float32)).get_output(0)
    wide = net.add_constant((1, 6, 4), np.ones((1, 6, 4), np.float32)).get_output(0)
    with pytest.raises(rt.NetworkDefinitionError, match="FLOAT or HALF"):
        net.add_normalization(i, s, s, 0b100)
    with pytest.raises(rt.NetworkDefinitionError, match="'scale'"):
        net.add_normalization(x, wide, s, 0b100)
    with pytest.raises(rt.NetworkDefinitionError, match="'bias'"):
        net.add_normalization(x, s, i, 0b100)
    assert net.num_layers == 2
