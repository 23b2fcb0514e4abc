"""Spatial layers: Pooling, LRN, Padding, Resize (convolutions live in conv.py)."""
import math

from kernels import pooling as KP
from kernels import spatial as KS

from ..errors import NetworkDefinitionError
from ..kernel_table import numpy_impl
from ..types import (FLOATING, LayerType, PaddingMode, PoolingType,
                     ResizeCoordinateTransformation, ResizeMode, ResizeRoundMode)
from .base import Attr, Bool, EnumAttr, Int, Ints, Layer
from .conv import BoundedFloat, WindowedLayer, check_float_input


# -- pooling ----------------------------------------------------------------------

class PoolingLayer(WindowedLayer):
    """TensorRT's IPoolingLayer (N-d). Stride defaults to 1s, as TensorRT's
    setStrideNd documents (not to the window, as PyTorch's does)."""

    layer_type = LayerType.POOLING
    type_attr = "pooling_type"
    window_attr = "window_size_nd"
    geometry_kind = "pool"

    pooling_type = EnumAttr(PoolingType, PoolingType.MAX)
    window_size_nd = Ints(None, minimum=1)
    average_count_excludes_padding = Bool(True)
    # TensorRT: MAX_AVERAGE_BLEND = (1 - blend_factor) * max + blend_factor * average
    blend_factor = BoundedFloat(0.0, 0.0, 1.0)

    def infer(self, in_shapes, in_dtypes):
        shape, dtype = in_shapes[0], in_dtypes[0]
        check_float_input(self, dtype)
        self._check_window(shape)
        if self.padding_mode not in (PaddingMode.SAME_UPPER, PaddingMode.SAME_LOWER):
            # a window lying wholly in padding has nothing to take a max or mean of
            for name in ("pre_padding", "post_padding"):
                pad = getattr(self, name)
                if any(p >= f for p, f in zip(pad, self.window_size_nd)):
                    self.fail(name, pad, f"values below window_size_nd {self.window_size_nd}")
        out, pre, _ = self.geometry(shape)
        for axis, (i, o, s, b) in enumerate(zip(shape[2:], out, self.stride_nd, pre)):
            if i >= 0 and (o - 1) * s - b >= i:
                self.fail("padding_mode", f"{self.padding_mode.name} with stride {self.stride_nd}",
                          f"a setting whose last window starts inside the input (spatial axis "
                          f"{axis}: window {o - 1} starts at {(o - 1) * s - b} of {i})")
        return [(shape[:2] + out, dtype)]


@numpy_impl(LayerType.POOLING)
def _pooling(layer, inputs):
    x = inputs[0]
    out, pre, post = layer.geometry(x.shape)
    return [KP.pool_nd(x, layer.pooling_type.name, layer.window_size_nd, layer.stride_nd,
                       pre, post, out, layer.average_count_excludes_padding, layer.blend_factor)]


# -- LRN --------------------------------------------------------------------------

class LRNLayer(Layer):
    """TensorRT's ILRNLayer: cross-channel LRN,
    y = x / (k + alpha / window * sum of x^2 over the channel window) ^ beta.

    TF's ``tf.nn.local_response_normalization(depth_radius=r, bias, alpha, beta)``
    maps to window = 2r + 1, alpha = alpha_tf * window, k = bias. Defaults are
    Caffe's; the valid ranges are TensorRT's."""

    layer_type = LayerType.LRN
    window_size = Int(5)
    alpha = BoundedFloat(1.0, -1e20, 1e20)
    beta = BoundedFloat(0.75, 0.01, 1e5)
    k = BoundedFloat(1.0, 1e-5, 1e10)

    def infer(self, in_shapes, in_dtypes):
        shape, dtype = in_shapes[0], in_dtypes[0]
        check_float_input(self, dtype)
        if self.window_size % 2 == 0 or not 1 <= self.window_size <= 15:
            self.fail("window_size", self.window_size, "an odd int in [1, 15]")
        if len(shape) < 3:
            self.fail("input", f"a rank-{len(shape)} tensor {shape}",
                      "rank >= 3 (N, C and spatial dims; LRN runs across C)")
        return [(shape, dtype)]


@numpy_impl(LayerType.LRN)
def _lrn(layer, inputs):
    return [KS.lrn(inputs[0], layer.window_size, layer.alpha, layer.beta, layer.k)]


# -- padding ----------------------------------------------------------------------

class PaddingLayer(Layer):
    """TensorRT's IPaddingLayer: zero padding of the trailing len(pre_padding_nd)
    dims (2 by default); negative values crop."""

    layer_type = LayerType.PADDING
    pre_padding_nd = Ints((0, 0))
    post_padding_nd = Ints((0, 0))

    def infer(self, in_shapes, in_dtypes):
        shape, dtype = in_shapes[0], in_dtypes[0]
        pre, post = self.pre_padding_nd, self.post_padding_nd
        if len(pre) != len(post):
            self.fail("post_padding_nd", post, f"{len(pre)} values, as pre_padding_nd {pre}")
        if len(pre) > len(shape):
            self.fail("pre_padding_nd", pre, f"at most {len(shape)} values (the input's rank)")
        lead = shape[:len(shape) - len(pre)]
        out = []
        for axis, (n, b, a) in enumerate(zip(shape[len(lead):], pre, post)):
            if n >= 0 and n + b + a < 1:
                self.fail("pre_padding_nd", (pre, post),
                          f"padding that leaves at least 1 element of the {n} along trailing "
                          f"axis {axis} (negative values crop)")
            out.append(n + b + a if n >= 0 else -1)
        return [(lead + tuple(out), dtype)]


@numpy_impl(LayerType.PADDING)
def _padding(layer, inputs):
    return [KS.pad_nd(inputs[0], layer.pre_padding_nd, layer.post_padding_nd)]


# -- resize -----------------------------------------------------------------------

class Floats(Attr):
    """A tuple of positive finite floats (resize scales), or None."""

    def normalise(self, layer, value):
        if value is None:
            return None
        try:
            out = tuple(float(v) for v in value)
            if any(isinstance(v, bool) for v in value):
                raise TypeError
        except (TypeError, ValueError):
            self.fail(layer, repr(value), "a sequence of numbers")
        if any(not (math.isfinite(v) and v > 0) for v in out):
            self.fail(layer, out, "finite values > 0")
        return out

    def encode(self, value, arrays):
        return None if value is None else list(value)

    def decode(self, value, arrays):
        return None if value is None else tuple(value)


class OneOf:
    """Mixin for two attributes of which the last one set wins (TensorRT's
    resize ``shape`` and ``scales``): setting one clears the other."""

    def __init__(self, other, *args, **kw):
        super().__init__(*args, **kw)
        self.other = other

    def __set__(self, layer, value):
        sibling = layer._attrs.get(self.other)
        if value is None or sibling is None:
            return super().__set__(layer, value)
        del layer._attrs[self.other]
        try:
            super().__set__(layer, value)
        except NetworkDefinitionError:
            layer._attrs[self.other] = sibling
            if layer._network is not None:
                layer._network._on_layer_changed(layer)
            raise


class ResizeShape(OneOf, Ints):
    pass


class ResizeScales(OneOf, Floats):
    pass


# LINEAR interpolates over at most the 3 innermost dims (TensorRT's IResizeLayer)
MAX_LINEAR_DIMS = 3


class ResizeLayer(Layer):
    """TensorRT's IResizeLayer: NEAREST or LINEAR resize to ``shape`` (every output
    dim) or by ``scales`` (output dim = floor(input dim * scale)); with neither
    set the output has the input's shape. Defaults are TensorRT's: NEAREST,
    ASYMMETRIC coordinates, FLOOR rounding."""

    layer_type = LayerType.RESIZE
    shape = ResizeShape("scales", None, minimum=0)   # 0 copies the input's dim (dynamic batch)
    scales = ResizeScales("shape", None)
    resize_mode = EnumAttr(ResizeMode, ResizeMode.NEAREST)
    coordinate_transformation = EnumAttr(ResizeCoordinateTransformation,
                                         ResizeCoordinateTransformation.ASYMMETRIC)
    nearest_rounding = EnumAttr(ResizeRoundMode, ResizeRoundMode.FLOOR)

    def infer(self, in_shapes, in_dtypes):
        shape, dtype = in_shapes[0], in_dtypes[0]
        rank = len(shape)
        for name in ("shape", "scales"):
            value = getattr(self, name)
            if value is not None and len(value) != rank:
                self.fail(name, value, f"{rank} values (the input's rank)")
        out = self.output_shape(shape)
        if self.scales is not None:
            for axis, o in enumerate(out):
                if o == 0:
                    self.fail("scales", self.scales, f"scales that leave at least 1 element "
                              f"of the {shape[axis]} along axis {axis}")
            changed = [s != 1.0 for s in self.scales]
        else:
            changed = [o != i for o, i in zip(out, shape)]
        if self.resize_mode == ResizeMode.LINEAR:
            if dtype not in FLOATING:
                self.fail("input", f"a {dtype.name} tensor", "a FLOAT or HALF tensor for LINEAR")
            if any(changed[:max(0, rank - MAX_LINEAR_DIMS)]):
                self.fail("resize_mode", "LINEAR", f"NEAREST to resize dims outside the "
                          f"{MAX_LINEAR_DIMS} innermost (input {shape}, output {out})")
        return [(out, dtype)]

    def output_shape(self, in_shape):
        if self.shape is not None:
            return tuple(i if s == 0 else s for s, i in zip(self.shape, in_shape))
        if self.scales is not None:
            return tuple(-1 if i < 0 else KS.output_dim(i, s) for i, s in zip(in_shape, self.scales))
        return tuple(in_shape)

    def mapping_scales(self, in_shape, out_shape):
        """out/in per dim, the factor the coordinate transformation divides by:
        the user's scales when given (as ONNX Resize), else the size ratio."""
        if self.scales is not None:
            return self.scales
        return tuple(o / i if i else 1.0 for o, i in zip(out_shape, in_shape))


@numpy_impl(LayerType.RESIZE)
def _resize(layer, inputs):
    x = inputs[0]
    out = layer.output_shape(x.shape)
    return [KS.resize(x, out, layer.mapping_scales(x.shape, out), layer.resize_mode.name,
                      layer.coordinate_transformation.name, layer.nearest_rounding.name)]
