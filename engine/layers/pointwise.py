"""Pointwise layers: Activation, Unary, ElementWise, Scale, Identity, Cast, Select.

Type rules follow TensorRT's operator pages: arithmetic on FLOAT/HALF (and
INT32 where TensorRT allows it), logic on BOOL, comparisons producing BOOL.
Binary and ternary layers broadcast size-1 dims between inputs of equal rank.
"""
import numpy as np

from kernels import pointwise as K

from ..kernel_table import numpy_impl
from ..types import (ActivationType, DataType, ElementWiseOperation, LayerType, ScaleMode,
                     UnaryOperation)
from .base import Array, EnumAttr, Float, Int, Layer, broadcast_shapes, normalise_axis

_F, _H, _I32, _B = DataType.FLOAT, DataType.HALF, DataType.INT32, DataType.BOOL


def _names(dtypes):
    return ", ".join(d.name for d in dtypes)


# TensorRT's defaults for alpha/beta where the activation uses them
_ACT_DEFAULTS = {
    ActivationType.LEAKY_RELU: (0.01, 0.0),
    ActivationType.ELU: (1.0, 0.0),
    ActivationType.SELU: (1.6732632423543772, 1.0507009873554805),
    ActivationType.SOFTPLUS: (1.0, 1.0),
    ActivationType.CLIP: (0.0, 6.0),
    ActivationType.HARD_SIGMOID: (0.2, 0.5),
    ActivationType.SCALED_TANH: (1.0, 1.0),
    ActivationType.THRESHOLDED_RELU: (1.0, 0.0),
}


class ActivationLayer(Layer):
    layer_type = LayerType.ACTIVATION
    type_attr = "activation_type"
    activation_type = EnumAttr(ActivationType, ActivationType.RELU)
    alpha = Float(None)
    beta = Float(None)

    def params(self):
        """(alpha, beta) with TensorRT's defaults filled in."""
        da, db = _ACT_DEFAULTS.get(self.activation_type, (0.0, 0.0))
        return (da if self.alpha is None else self.alpha, db if self.beta is None else self.beta)

    def infer(self, in_shapes, in_dtypes):
        if in_dtypes[0] not in (DataType.FLOAT, DataType.HALF, DataType.INT8):
            self.fail("input", f"a {in_dtypes[0].name} tensor", "a FLOAT, HALF or INT8 tensor")
        return [(in_shapes[0], in_dtypes[0])]


@numpy_impl(LayerType.ACTIVATION)
def _activation(layer, inputs):
    alpha, beta = layer.params()
    return [K.activation(inputs[0], layer.activation_type.name, alpha, beta)]


# ----------------------------------------------------------------------------
# unary

_U = UnaryOperation
# ops TensorRT also runs on INT32; NOT runs on BOOL only; the rest need floats
_UNARY_INT_OK = (_U.ABS, _U.NEG, _U.SIGN)


class UnaryLayer(Layer):
    layer_type = LayerType.UNARY
    op = EnumAttr(UnaryOperation, UnaryOperation.EXP)

    def infer(self, in_shapes, in_dtypes):
        dtype = in_dtypes[0]
        if self.op == _U.NOT:
            allowed = (_B,)
        elif self.op in _UNARY_INT_OK:
            allowed = (_F, _H, _I32)
        else:
            allowed = (_F, _H)
        if dtype not in allowed:
            self.fail("input", f"a {dtype.name} tensor for {self.op.name}",
                      f"a {_names(allowed)} tensor")
        return [(in_shapes[0], dtype)]


@numpy_impl(LayerType.UNARY)
def _unary(layer, inputs):
    return [K.unary(inputs[0], layer.op.name)]


# ----------------------------------------------------------------------------
# elementwise

_E = ElementWiseOperation
_LOGIC = (_E.AND, _E.OR, _E.XOR)
_COMPARE = (_E.EQUAL, _E.GREATER, _E.LESS)


class ElementWiseLayer(Layer):
    """out = a op b, size-1 dims broadcast (ranks must match, as in TensorRT).

    DIV on INT32 truncates toward zero and FLOOR_DIV floors, as TensorRT's
    kDIV / kFLOOR_DIV do; comparisons and logic produce BOOL."""
    layer_type = LayerType.ELEMENTWISE
    min_inputs = max_inputs = 2
    op = EnumAttr(ElementWiseOperation, ElementWiseOperation.SUM)

    def infer(self, in_shapes, in_dtypes):
        a, b = in_dtypes
        if a != b:
            self.fail("inputs", f"dtypes {a.name} and {b.name}", "both inputs of one dtype")
        if self.op in _LOGIC:
            allowed = (_B,)
        elif self.op == _E.EQUAL:
            allowed = (_F, _H, _I32, _B)
        else:
            allowed = (_F, _H, _I32)
        if a not in allowed:
            self.fail("inputs", f"{a.name} tensors for {self.op.name}",
                      f"{_names(allowed)} tensors")
        shape = broadcast_shapes(self, in_shapes[0], in_shapes[1])
        return [(shape, _B if self.op in _LOGIC + _COMPARE else a)]


@numpy_impl(LayerType.ELEMENTWISE)
def _elementwise(layer, inputs):
    return [K.elementwise(inputs[0], inputs[1], layer.op.name)]


# ----------------------------------------------------------------------------
# scale

class _Coefficients(Array):
    """Scale coefficients: float weights; empty weights mean 'not given', as
    TensorRT's ``Weights()`` with count 0 does."""

    def __init__(self):
        super().__init__(None, dtypes=(_F, _H))

    def normalise(self, layer, value):
        value = super().normalise(layer, value)
        return None if value is None or value.size == 0 else value


class ScaleLayer(Layer):
    """TensorRT's IScaleLayer: y = (x * scale + shift) ** power.

    UNIFORM: one coefficient; CHANNEL: one per index of ``channel_axis``;
    ELEMENTWISE: one per element of the dims from ``channel_axis`` on
    (C*H*W for NCHW and axis 1). A coefficient left None is the identity
    (shift 0, scale 1, power 1)."""
    layer_type = LayerType.SCALE
    mode = EnumAttr(ScaleMode, ScaleMode.UNIFORM)
    shift = _Coefficients()
    scale = _Coefficients()
    power = _Coefficients()
    channel_axis = Int(1)

    def infer(self, in_shapes, in_dtypes):
        shape, dtype = in_shapes[0], in_dtypes[0]
        if dtype not in (_F, _H):
            self.fail("input", f"a {dtype.name} tensor", "a FLOAT or HALF tensor")
        if self.mode == ScaleMode.UNIFORM:
            count = 1
        else:
            axis = normalise_axis(self, self.channel_axis, len(shape), "channel_axis")
            dims = shape[axis:axis + 1] if self.mode == ScaleMode.CHANNEL else shape[axis:]
            count = None if -1 in dims else int(np.prod(dims, dtype=np.int64))
        for name in ("shift", "scale", "power"):
            w = getattr(self, name)
            if w is not None and count is not None and w.size != count:
                self.fail(name, f"{w.size} values",
                          f"{count} values for {self.mode.name} mode on input shape {shape}")
        return [(shape, dtype)]


@numpy_impl(LayerType.SCALE)
def _scale(layer, inputs):
    x = inputs[0]
    axis = layer.channel_axis % max(1, x.ndim)
    return [K.scale(x, layer.mode.name, layer.shift, layer.scale, layer.power, axis)]


# ----------------------------------------------------------------------------
# identity, cast, select

class IdentityLayer(Layer):
    """Copies its input; with ``set_output_type`` it converts (as in TensorRT)."""
    layer_type = LayerType.IDENTITY

    def infer(self, in_shapes, in_dtypes):
        return [(in_shapes[0], in_dtypes[0])]


@numpy_impl(LayerType.IDENTITY)
def _identity(layer, inputs):
    return [inputs[0].copy()]


class CastLayer(Layer):
    """TensorRT's ICastLayer: any supported type to ``to_type``; float to
    integer truncates toward zero, anything to BOOL is ``!= 0``."""
    layer_type = LayerType.CAST
    to_type = EnumAttr(DataType, None)

    def infer(self, in_shapes, in_dtypes):
        if self.to_type is None:
            self.fail("to_type", None, "a DataType: " + ", ".join(DataType.__members__))
        return [(in_shapes[0], self.to_type)]


@numpy_impl(LayerType.CAST)
def _cast(layer, inputs):
    return [K.cast(inputs[0], layer.to_type.to_numpy())]


class SelectLayer(Layer):
    """TensorRT's ISelectLayer: out = condition ? then : else, all three
    broadcast (equal ranks, size-1 dims stretch)."""
    layer_type = LayerType.SELECT
    min_inputs = max_inputs = 3

    def infer(self, in_shapes, in_dtypes):
        cond, a, b = in_dtypes
        if cond != _B:
            self.fail("condition", f"a {cond.name} tensor", "a BOOL tensor")
        if a != b:
            self.fail("inputs", f"then/else dtypes {a.name} and {b.name}", "one dtype for both")
        shape = broadcast_shapes(self, in_shapes[0], in_shapes[1])
        shape = broadcast_shapes(self, shape, in_shapes[2])
        return [(shape, a)]


@numpy_impl(LayerType.SELECT)
def _select(layer, inputs):
    return [K.select(inputs[0].astype(np.bool_, copy=False), inputs[1], inputs[2])]
