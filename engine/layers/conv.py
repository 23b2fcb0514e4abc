"""Convolution and deconvolution layers, and the window arithmetic they share
with pooling (stride, pre/post padding, TensorRT's PaddingMode).

Output sizes follow TensorRT's PaddingMode documentation (NvInfer.h), with
I input, B pre-padding, A post-padding, S stride, DK = 1 + D * (F - 1):

    convolution, pooling (D = 1)          deconvolution
    ROUND_DOWN  O = floor((I+B+A-DK)/S)+1  O = (I-1)*S + DK - (B+A)   (both EXPLICIT modes)
    ROUND_UP    O = ceil((I+B+A-DK)/S)+1
    SAME_*      O = ceil(I/S)              O = min(I*S, (I-1)*S + DK)
                P = (ceil(I/S)-1)*S+DK-I   P = max(DK - S, 0)
    SAME_UPPER: B = floor(P/2), A = P - B (the odd element at the end);
    SAME_LOWER: A = floor(P/2), B = P - A (at the start).

SAME modes ignore the explicit padding, as TensorRT's do ("padding mode takes
precedence"). For convolution and pooling P is clamped at 0 (TensorRT's formula
goes negative when the kernel is smaller than the stride; TF's SAME, which the
converter maps here, pads max(P, 0)).

Fusion hooks: the builder's vertical fusion folds a following activation and a
residual add into these layers: ``post_activation`` (+ ``post_alpha`` and
``post_beta``) and an optional second input of the output's shape give
y = act(conv(x) + bias + residual).
"""
import math

from kernels import conv as K

from ..errors import NetworkDefinitionError
from ..kernel_table import numpy_impl
from ..types import FLOATING, ActivationType, LayerType, PaddingMode
from .base import Array, EnumAttr, Float, Int, Ints, Layer
from .pointwise import _ACT_DEFAULTS

MAX_SPATIAL = 3   # TensorRT's *_nd layers: 2-D and 3-D windows (1-D costs nothing extra)


# -- attribute kinds ------------------------------------------------------------

class NdInts(Ints):
    """Per-spatial-dim ints whose default, ``(fill,) * nd``, follows the rank of
    the layer's window, as TensorRT's stride/padding/dilation defaults do."""

    def __init__(self, fill, minimum=None, doc=""):
        super().__init__(None, minimum, doc=doc)
        self.fill = fill

    def __get__(self, layer, owner=None):
        if layer is None:
            return self
        value = layer._attrs.get(self.name)
        return value if value is not None else (self.fill,) * layer.spatial_rank()


class OptionalEnum(EnumAttr):
    """An enum attribute that None resets to "not set"."""

    def normalise(self, layer, value):
        return None if value is None else super().normalise(layer, value)


class OptionalFloat(Float):
    def normalise(self, layer, value):
        return None if value is None else super().normalise(layer, value)


class BoundedFloat(Float):
    """A float in [lo, hi] (TensorRT documents the valid range of LRN's and
    pooling's scalars)."""

    def __init__(self, default, lo, hi, doc=""):
        super().__init__(default, doc)
        self.lo, self.hi = lo, hi

    def normalise(self, layer, value):
        value = super().normalise(layer, value)
        if not self.lo <= value <= self.hi:
            self.fail(layer, value, f"a number in [{self.lo:g}, {self.hi:g}]")
        return value


def check_float_input(layer, dtype):
    if dtype not in FLOATING:
        layer.fail("input", f"a {dtype.name} tensor", "a FLOAT or HALF tensor")


# -- window arithmetic ------------------------------------------------------------

def window_geometry(mode, kind, in_spatial, window, stride, dilation, pre, post):
    """Per spatial dim: (output size, pre padding, post padding) for ``kind`` in
    {"conv", "pool", "deconv"}; (-1, None, None) where the input dim is dynamic.
    Returns None for a dim whose output would be empty (the caller reports it)."""
    result = []
    for i, f, s, d, b, a in zip(in_spatial, window, stride, dilation, pre, post):
        dk = 1 + d * (f - 1)
        if i < 0:
            result.append((-1, None, None))
            continue
        if kind == "deconv":
            if mode in (PaddingMode.SAME_UPPER, PaddingMode.SAME_LOWER):
                p = max(dk - s, 0)
            else:
                p = None
        elif mode in (PaddingMode.SAME_UPPER, PaddingMode.SAME_LOWER):
            p = max((-(-i // s) - 1) * s + dk - i, 0)
        else:
            p = None
        if p is not None:
            b = p // 2 if mode == PaddingMode.SAME_UPPER else p - p // 2
            a = p - b
        if kind == "deconv":
            o = (i - 1) * s + dk - (b + a)
        elif mode == PaddingMode.EXPLICIT_ROUND_UP:
            o = -(-(i + b + a - dk) // s) + 1 if i + b + a >= dk else 0
        else:
            o = (i + b + a - dk) // s + 1 if i + b + a >= dk else 0
        result.append((o, b, a) if o >= 1 else None)
    return result


class WindowedLayer(Layer):
    """Shared by convolution, deconvolution and pooling: stride and padding over
    the trailing spatial dims, whose count is the window's rank."""

    window_attr = "kernel_size_nd"
    geometry_kind = "conv"
    stride_nd = NdInts(1, minimum=1)
    pre_padding = NdInts(0, minimum=0)
    post_padding = NdInts(0, minimum=0)
    padding_mode = EnumAttr(PaddingMode, PaddingMode.EXPLICIT_ROUND_DOWN)

    def spatial_rank(self):
        window = getattr(self, self.window_attr)
        return len(window) if window else 0

    @property
    def dilations(self):
        return (1,) * self.spatial_rank()

    @property
    def padding_nd(self):
        """TensorRT: setting it sets pre and post padding; reading gives the pre padding."""
        return self.pre_padding

    @padding_nd.setter
    def padding_nd(self, value):
        self._assign(pre_padding=value, post_padding=value)

    def _assign(self, **values):
        """Set several attributes with one re-inference, all or none."""
        attrs = self.declared_attrs()
        old = dict(self._attrs)
        for key, value in values.items():
            self._attrs[key] = attrs[key].normalise(self, value)
        if self._network is not None:
            try:
                self._network._on_layer_changed(self)
            except NetworkDefinitionError:
                self._attrs = old
                self._network._on_layer_changed(self)
                raise

    def _check_window(self, shape):
        """Validate the window attributes against an input shape; return the rank."""
        window = getattr(self, self.window_attr)
        if not window or len(window) > MAX_SPATIAL:
            self.fail(self.window_attr, window, f"1 to {MAX_SPATIAL} window sizes")
        nd = len(window)
        for name in ("stride_nd", "pre_padding", "post_padding") + (
                ("dilation_nd",) if hasattr(type(self), "dilation_nd") else ()):
            value = getattr(self, name)
            if len(value) != nd:
                self.fail(name, value, f"{nd} values, one per dim of {self.window_attr} {window}")
        if len(shape) != nd + 2:
            self.fail("input", f"a rank-{len(shape)} tensor {shape}",
                      f"rank {nd + 2} (N, C and {nd} spatial dims for a {nd}-D window)")
        return nd

    def geometry(self, shape):
        """(output spatial dims, pre padding, post padding) for input ``shape``."""
        window = getattr(self, self.window_attr)
        nd = len(window)
        geo = window_geometry(self.padding_mode, self.geometry_kind, shape[-nd:], window,
                              self.stride_nd, self.dilations, self.pre_padding, self.post_padding)
        for axis, g in enumerate(geo):
            if g is None:
                self.fail("input", f"spatial dims {tuple(shape[-nd:])}",
                          f"dims that leave an output of at least 1 along spatial axis {axis} "
                          f"(window {window}, stride {self.stride_nd}, padding "
                          f"{self.pre_padding}/{self.post_padding}, {self.padding_mode.name})")
        return (tuple(g[0] for g in geo), tuple(g[1] for g in geo), tuple(g[2] for g in geo))


class FusedConvLayer(WindowedLayer):
    """Convolution and deconvolution: weights, groups, dilation and the fused epilogue."""

    min_inputs = 1
    max_inputs = 2
    optional_inputs = (1,)     # the residual added before the activation

    num_output_maps = Int(1, minimum=1)
    kernel_size_nd = Ints(None, minimum=1)
    kernel = Array(None, dtypes=FLOATING)
    bias = Array(None, dtypes=FLOATING)
    dilation_nd = NdInts(1, minimum=1)
    num_groups = Int(1, minimum=1)
    post_activation = OptionalEnum(ActivationType, None)
    post_alpha = OptionalFloat(None)
    post_beta = OptionalFloat(None)

    @property
    def dilations(self):
        return self.dilation_nd

    def kernel_shape(self, channels):
        raise NotImplementedError

    def post_params(self):
        """(alpha, beta) of the fused activation, TensorRT's defaults filled in."""
        da, db = _ACT_DEFAULTS.get(self.post_activation, (0.0, 0.0))
        return (da if self.post_alpha is None else self.post_alpha,
                db if self.post_beta is None else self.post_beta)

    def infer(self, in_shapes, in_dtypes):
        shape, dtype = in_shapes[0], in_dtypes[0]
        check_float_input(self, dtype)
        self._check_window(shape)
        c, k, g = shape[1], self.num_output_maps, self.num_groups
        if c < 0:
            self.fail("input", f"shape {shape} with a dynamic channel dim",
                      "a known channel count (dim 1)")
        if c % g:
            self.fail("num_groups", g, f"a divisor of the input's {c} channels")
        if k % g:
            self.fail("num_groups", g, f"a divisor of num_output_maps {k}")
        w = self.kernel
        if w is not None and not self._kernel_fits(w, c) and not self._regroupable(w, c):
            expected = self.kernel_shape(c)
            self.fail("kernel", f"an array of shape {w.shape}",
                      f"shape {expected} ({self.kernel_layout}) or {math.prod(expected)} values")
        if self.bias is not None and self.bias.size != k:
            self.fail("bias", f"{self.bias.size} values", f"{k} (num_output_maps)")
        out = (shape[0], k) + self.geometry(shape)[0]
        return [(self._check_residual(in_shapes, in_dtypes, out), dtype)]

    def _check_residual(self, in_shapes, in_dtypes, out):
        if len(in_shapes) < 2 or in_shapes[1] is None:
            return out
        res, rdt = in_shapes[1], in_dtypes[1]
        if rdt not in FLOATING:
            self.fail("residual", f"a {rdt.name} tensor", "a FLOAT or HALF tensor")
        if len(res) != len(out) or any(r != o and r >= 0 and o >= 0 for r, o in zip(res, out)):
            self.fail("residual", f"shape {res}", f"the output's shape {out}")
        return tuple(o if o >= 0 else r for r, o in zip(res, out))

    def _kernel_fits(self, w, channels):
        expected = self.kernel_shape(channels)
        return w.shape == expected or (w.ndim == 1 and w.size == math.prod(expected))

    def _regroupable(self, w, channels):
        """True when ``w`` is a well-formed kernel for another valid group count.

        TensorRT users add the layer with its weights and set ``num_groups``
        afterwards (``add_convolution_nd(x, K, ks, w); conv.num_groups = G``), so
        a kernel shaped for a grouping that is still to come is accepted here;
        ``weights()`` insists on the exact shape when the layer runs.
        """
        k, nd = self.num_output_maps, self.spatial_rank()
        if w.ndim != nd + 2 or tuple(w.shape[2:]) != tuple(self.kernel_size_nd) or w.shape[1] < 1:
            return False
        if self.layer_type == LayerType.CONVOLUTION:     # (K, C/g, ...)
            g = channels // w.shape[1]
            return w.shape[0] == k and channels % w.shape[1] == 0 and k % g == 0
        g = k // w.shape[1]                                # deconvolution: (C, K/g, ...)
        return w.shape[0] == channels and k % w.shape[1] == 0 and channels % g == 0

    def weights(self, channels):
        """The kernel in its N-d layout, checked exactly (see ``_regroupable``)."""
        if self.kernel is None:
            self.fail("kernel", "not set", "kernel weights (assign layer.kernel) before execution")
        if not self._kernel_fits(self.kernel, channels):
            expected = self.kernel_shape(channels)
            self.fail("kernel", f"an array of shape {self.kernel.shape} with num_groups "
                      f"{self.num_groups}", f"shape {expected} ({self.kernel_layout})")
        return self.kernel.reshape(self.kernel_shape(channels))

    def epilogue(self, y, inputs):
        residual = inputs[1] if len(inputs) > 1 else None
        act = self.post_activation
        alpha, beta = self.post_params()
        return K.epilogue(y, residual, None if act is None else act.name, alpha, beta)


class ConvolutionLayer(FusedConvLayer):
    """TensorRT's IConvolutionLayer (N-d): cross-correlation, grouped and depthwise."""

    layer_type = LayerType.CONVOLUTION
    kernel_layout = "K, C/groups, *kernel_size_nd"

    def kernel_shape(self, channels):
        return (self.num_output_maps, channels // self.num_groups) + tuple(self.kernel_size_nd)


class DeconvolutionLayer(FusedConvLayer):
    """TensorRT's IDeconvolutionLayer (N-d): the transpose of convolution."""

    layer_type = LayerType.DECONVOLUTION
    geometry_kind = "deconv"
    kernel_layout = "C, K/groups, *kernel_size_nd"

    def kernel_shape(self, channels):
        return (channels, self.num_output_maps // self.num_groups) + tuple(self.kernel_size_nd)


@numpy_impl(LayerType.CONVOLUTION)
def _convolution(layer, inputs):
    x = inputs[0]
    out, pre, _ = layer.geometry(x.shape)
    y = K.conv_nd(x, layer.weights(x.shape[1]), layer.bias, layer.stride_nd, pre, out,
                  layer.dilation_nd, layer.num_groups)
    return [layer.epilogue(y, inputs)]


@numpy_impl(LayerType.DECONVOLUTION)
def _deconvolution(layer, inputs):
    x = inputs[0]
    out, pre, _ = layer.geometry(x.shape)
    y = K.deconv_nd(x, layer.weights(x.shape[1]), layer.bias, layer.stride_nd, pre, out,
                    layer.dilation_nd, layer.num_groups)
    return [layer.epilogue(y, inputs)]

