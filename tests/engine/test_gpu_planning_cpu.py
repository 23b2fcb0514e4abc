"""GPU-side planning that needs no GPU: how a fused pointwise chain maps onto one
generated kernel (and when it must not), with NumPy standing in for CuPy."""
import numpy as np
import pytest

import engine as rt
from engine.gpu import pointwise_tactics as PT
from engine.layers.classes import (ActivationLayer, ElementWiseLayer, PointwiseLayer, ScaleLayer,
                                   UnaryLayer)
from engine.layers.pointwise_chain import Op

E = rt.ElementWiseOperation


@pytest.fixture(autouse=True)
def numpy_for_cupy(monkeypatch):
    monkeypatch.setattr(PT, "cupy", lambda: np)


def chain(*ops, rank=4):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 3, 4, 5)[:rank])
    other = net.add_activation(x, rt.ActivationType.TANH).get_output(0)
    return net._add(PointwiseLayer(net, [x, other], chain=list(ops)))


def ew(op):
    return ElementWiseLayer(None, [], op=op)


def test_a_chain_maps_to_kernel_ops_with_one_channel_axis():
    c = np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1) + 1
    layer = chain(Op(ActivationLayer(None, [], activation_type=rt.ActivationType.ELU, alpha=0.5)),
                  Op(UnaryLayer(None, [], op=rt.UnaryOperation.EXP)),
                  Op(ew(E.SUB), const=c, side=1),
                  Op(ew(E.DIV), const=c),
                  Op(ew(E.PROD), const=np.full((1, 1, 1, 1), 2.0, np.float32), side=1),
                  Op(ew(E.MAX), input_index=1, side=1))
    axis, ops = PT.plan_chain(layer, 4)
    assert axis == 1
    assert [o[0] for o in ops] == ["act", "unary", "channel", "channel", "rconst", "tensor"]
    np.testing.assert_allclose(ops[2][2], c.reshape(-1))          # c - v = (-1) * v + c
    np.testing.assert_allclose(ops[3][1], 1 / c.reshape(-1))      # v / c = v * (1 / c)


@pytest.mark.parametrize("op,match", [
    (Op(ew(E.SUM), const=np.ones((1, 3, 4, 1), np.float32)), "a constant of shape"),
    (Op(UnaryLayer(None, [], op=rt.UnaryOperation.NOT)), "unary NOT"),
    (Op(ScaleLayer(None, [], mode=rt.ScaleMode.ELEMENTWISE, scale=np.ones(60, np.float32))),
     "an ELEMENTWISE scale"),
    (Op(ew(E.SUB), input_index=1, side=1), "tensor SUB v"),
    (Op(ew(E.DIV), const=np.ones((1, 3, 1, 1), np.float32), side=1), "constant on the left"),
])
def test_ops_without_a_single_kernel_form_are_declined(op, match):
    with pytest.raises(PT.Unfusable, match=match):
        PT.plan_chain(chain(op), 4)
    reason = PT.PointwiseChainKernel().supports(chain(op), [(2, 3, 4, 5)] * 2, ["float32"] * 2,
                                                rt.float32)
    assert reason and "no single-kernel form" in reason


def test_constants_along_two_axes_are_declined():
    a = Op(ew(E.SUM), const=np.ones((1, 3, 1, 1), np.float32))
    b = Op(ew(E.PROD), const=np.ones((1, 1, 4, 1), np.float32))
    with pytest.raises(PT.Unfusable, match="several axes"):
        PT.plan_chain(chain(a, b), 4)


def test_a_non_pointwise_op_is_declined():
    from engine.layers.classes import IdentityLayer
    with pytest.raises(PT.Unfusable, match="IDENTITY"):
        PT.plan_chain(chain(Op(IdentityLayer(None, []))), 4)
