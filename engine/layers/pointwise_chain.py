"""The builder's fused pointwise layer: a chain of activation / unary / scale /
elementwise layers applied to one running value, in one kernel on the GPU.

The chain keeps the fused layers themselves (detached from any network) and
replays their NumPy implementations in order, so every pointwise layer fuses
without a second formula to keep in step; the plan stores each as its type
and attributes, exactly as top-level layers are stored. An elementwise op's
other operand is a constant (stored with the op) or one of the fused layer's
extra inputs.

    v = x
    for each op:  v = op(v)            activation, unary, scale
                  v = v (op) operand    elementwise (or operand (op) v)
"""
import numpy as np

from kernels.xp import array_module

from ..errors import PlanFormatError
from ..kernel_table import numpy_impl, numpy_kernel
from ..types import FLOATING, LayerType
from .base import Attr, Layer


class Op:
    """One step of a chain: a detached layer and where its other operand comes from."""

    def __init__(self, layer, const=None, input_index=None, side=0):
        self.layer, self.const, self.input_index, self.side = layer, const, input_index, side

    def __repr__(self):
        return f"<Op {self.layer.layer_type.name} side={self.side}>"


class ChainAttr(Attr):
    """A list of Op, serialised through the same attribute codecs as layers."""

    def encode(self, value, arrays):
        out = []
        for op in value or ():
            attrs = {k: a.encode(getattr(op.layer, k), arrays)
                     for k, a in type(op.layer).declared_attrs().items()}
            out.append({"type": op.layer.layer_type.name, "attrs": attrs, "side": op.side,
                        "input": op.input_index,
                        "const": None if op.const is None else arrays.put(op.const)})
        return out

    def decode(self, value, arrays):
        ops = []
        for spec in value or ():
            try:
                cls = Layer.LAYER_CLASSES[LayerType[spec["type"]]]
            except KeyError:
                raise PlanFormatError(f"fused chain names layer type {spec.get('type')!r}") from None
            layer = cls.__new__(cls)
            Layer.__init__(layer, None, [])
            for key, attr in cls.declared_attrs().items():
                if key in spec["attrs"]:
                    setattr(layer, key, attr.decode(spec["attrs"][key], arrays))
            const = None if spec.get("const") is None else arrays.get(spec["const"])
            ops.append(Op(layer, const, spec.get("input"), int(spec.get("side", 0))))
        return ops


class PointwiseLayer(Layer):
    layer_type = LayerType.POINTWISE
    max_inputs = None
    chain = ChainAttr(None)

    def infer(self, in_shapes, in_dtypes):
        if in_dtypes[0] not in FLOATING:
            self.fail("input", f"a {in_dtypes[0].name} tensor", "a FLOAT or HALF tensor")
        for op in self.chain or ():
            other = None
            if op.input_index is not None:
                if not 0 <= op.input_index < len(in_shapes):     # 0: the chain's own input
                    self.fail("chain", f"an operand from input {op.input_index}",
                              f"an input index in [0, {len(in_shapes)})")
                other = in_shapes[op.input_index]
            elif op.const is not None:
                other = op.const.shape
            if other is not None and (len(other) != len(in_shapes[0]) or any(
                    o not in (1, i) and i != -1 for o, i in zip(other, in_shapes[0]))):
                self.fail("chain", f"an operand of shape {tuple(other)}",
                          f"a shape that broadcasts into {in_shapes[0]}")
        return [(in_shapes[0], in_dtypes[0])]


@numpy_impl(LayerType.POINTWISE)
def _pointwise(layer, inputs):
    v = inputs[0]
    xp = array_module(v)
    for op in layer.chain:
        if op.input_index is not None:
            other = inputs[op.input_index]
        elif op.const is not None:
            other = xp.asarray(op.const)
            if other.dtype == np.float16:
                other = other.astype(np.float32)
        else:
            other = None
        ins = [v] if other is None else ([v, other] if op.side == 0 else [other, v])
        v = numpy_kernel(op.layer)(op.layer, ins)[0]
        if v.dtype != np.float32:
            v = v.astype(np.float32)
    return [v]
