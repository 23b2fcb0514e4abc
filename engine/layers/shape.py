"""Layers that move data without arithmetic: Shuffle, Flatten, Squeeze,
Unsqueeze, Concatenation, Constant, Slice, Gather.

Shape rules work on partially known shapes (-1 = known only at run time): a
check that needs an unknown dim is skipped at construction and made again when
the same ``infer`` runs on the concrete shapes of an execution.

Shape tensors (TensorRT's term): small INT32 tensors that hold dims, made by
a Shape layer and the integer math after it. As in TensorRT, a Shuffle's
reshape dims (input 1) and a Slice's size (input 2) may be such tensors. The
network tracks what it statically knows of their values
(engine/shape_values.py), so shape rules see the dims they can; a build at
concrete input shapes knows them all and turns them back into attributes
(engine/passes/shape_tensors.py).
"""
import enum

import numpy as np

from kernels import shape as K
from kernels.xp import to_host

from ..errors import ExecutionError
from ..kernel_table import numpy_impl
from ..shape_values import get as known_values
from ..types import DataType, LayerType
from .base import Array, Bool, EnumAttr, Float, Int, Ints, Layer, normalise_axis


class SampleMode(enum.Enum):
    """TensorRT's SampleMode: how ISliceLayer treats out-of-bounds coordinates."""
    STRICT_BOUNDS = 0
    WRAP = 1
    CLAMP = 2
    FILL = 3
    REFLECT = 4
    DEFAULT = 0     # TensorRT 8's SliceMode.DEFAULT, an alias of STRICT_BOUNDS


def _volume(dims):
    """Product of dims, or -1 if any is unknown."""
    return -1 if -1 in dims else int(np.prod(dims, dtype=np.int64))


def _check_perm(layer, name, perm, rank):
    if perm is not None and sorted(perm) != list(range(rank)):
        layer.fail(name, perm, f"a permutation of 0..{rank - 1} (the rank of its input)")


# ----------------------------------------------------------------------------
# shuffle

class ShuffleLayer(Layer):
    """TensorRT's IShuffleLayer: out = second_transpose(reshape(first_transpose(x))).

    ``reshape_dims``: 0 copies the dim at the same index of the (transposed)
    input when ``zero_is_placeholder`` (the default; otherwise 0 is a literal
    empty dim), and one -1 takes whatever size is left. None for a step skips
    it; a builder pass composes these three attributes.

    Input 1 (``set_input(1, dims)``, as in TensorRT): a 1-D INT32 shape tensor
    that replaces ``reshape_dims``; its values are read at run time, with the
    same 0 and -1 rules."""
    layer_type = LayerType.SHUFFLE
    max_inputs = 2
    first_transpose = Ints(None, minimum=0)
    reshape_dims = Ints(None, minimum=-1)
    second_transpose = Ints(None, minimum=0)
    zero_is_placeholder = Bool(True)

    @property
    def dynamic_reshape(self):
        return len(self._inputs) > 1 and self._inputs[1] is not None

    def infer(self, in_shapes, in_dtypes):
        shape = tuple(in_shapes[0])
        _check_perm(self, "first_transpose", self.first_transpose, len(shape))
        if self.first_transpose is not None:
            shape = tuple(shape[p] for p in self.first_transpose)
        if self.dynamic_reshape:
            shape = self._reshape_by_tensor(shape, in_shapes[1], in_dtypes[1])
        elif self.reshape_dims is not None:
            shape = self._reshape(shape, self.reshape_dims)
        _check_perm(self, "second_transpose", self.second_transpose, len(shape))
        if self.second_transpose is not None:
            shape = tuple(shape[p] for p in self.second_transpose)
        return [(shape, in_dtypes[0])]

    def _reshape_by_tensor(self, shape, dims_shape, dims_dtype):
        """Output dims for reshape dims given by a shape tensor: exact where the
        network knows its values, -1 where they are known only at run time."""
        if dims_dtype != DataType.INT32 or len(dims_shape) != 1 or dims_shape[0] < 0:
            self.fail("input 1", f"a {dims_dtype.name} tensor of shape {tuple(dims_shape)}",
                      "a 1-D INT32 shape tensor of static length")
        known = known_values(self._inputs[1])
        if known is None:
            return (-1,) * dims_shape[0]
        if len(known) != dims_shape[0]:      # shapes at run time, values from the definition
            return (-1,) * dims_shape[0]
        if None not in known:
            return self._reshape(shape, known)
        out = []
        for i, d in enumerate(known):
            if d == 0 and self.zero_is_placeholder and i < len(shape):
                d = shape[i]
            out.append(-1 if d is None else d)
        return tuple(out)

    def _reshape(self, shape, dims):
        dims = list(dims)
        if dims.count(-1) > 1:
            self.fail("reshape_dims", tuple(dims), "at most one -1 (inferred) dim")
        out, copied = [], set()
        for i, d in enumerate(dims):
            if d == 0 and self.zero_is_placeholder:
                if i >= len(shape):
                    self.fail("reshape_dims", tuple(dims), f"0 (copy a dim) only at indices "
                              f"below the input rank {len(shape)}")
                d = shape[i]
                copied.add(i)
            out.append(d)
        # Unknown input dims copied by a 0 appear on both sides of the volume
        # balance and cancel, so (-1, 3, 4) -> (0, -1) still infers 12.
        unknown = {i for i, d in enumerate(shape) if d == -1}
        cancel = unknown if unknown <= copied else set()
        vol_in = _volume([d for i, d in enumerate(shape) if i not in cancel])
        where = dims.index(-1) if -1 in dims else None
        known = _volume([d for i, d in enumerate(out) if i != where and i not in cancel])
        if where is not None:
            if known == 0:
                self.fail("reshape_dims", tuple(dims),
                          "no -1 next to a 0-sized dim (the -1 cannot be inferred)")
            if vol_in >= 0 and known > 0:
                if vol_in % known:
                    self.fail("reshape_dims", tuple(dims),
                              f"dims whose volume divides that of the input {shape}")
                out[where] = vol_in // known
        elif vol_in >= 0 and known >= 0 and vol_in != known:
            self.fail("reshape_dims", tuple(dims), f"a shape of the input's volume (input {shape})")
        return tuple(out)


@numpy_impl(LayerType.SHUFFLE)
def _shuffle(layer, inputs):
    x = inputs[0]
    dims = layer.reshape_dims
    if len(inputs) > 1 and inputs[1] is not None:
        # a shape tensor: its values are needed on the host (one small copy, as
        # TensorRT computes shape tensors on the host)
        dims = tuple(int(d) for d in to_host(inputs[1]).reshape(-1))
    if dims is not None:
        shape = x.shape if layer.first_transpose is None else \
            tuple(x.shape[p] for p in layer.first_transpose)
        dims = layer._reshape(shape, dims)
    return [K.shuffle(x, layer.first_transpose, dims, layer.second_transpose)]


# ----------------------------------------------------------------------------
# flatten, squeeze, unsqueeze

class FlattenLayer(Layer):
    """The seed's Flatten (ONNX Flatten): (prod(dims[:axis]), prod(dims[axis:])),
    i.e. n x (c*h*w) for NCHW and axis 1."""
    layer_type = LayerType.FLATTEN
    axis = Int(1)

    def _axis(self, rank):
        if not -rank <= self.axis <= rank:
            self.fail("axis", self.axis, f"an axis in [{-rank}, {rank}]")
        return self.axis if self.axis >= 0 else self.axis + rank

    def infer(self, in_shapes, in_dtypes):
        shape = in_shapes[0]
        axis = self._axis(len(shape))
        return [((_volume(shape[:axis]), _volume(shape[axis:])), in_dtypes[0])]


@numpy_impl(LayerType.FLATTEN)
def _flatten(layer, inputs):
    return [K.flatten(inputs[0], layer._axis(inputs[0].ndim))]


def _unique_axes(layer, axes, rank):
    out = tuple(normalise_axis(layer, a, rank, "axes") for a in axes)
    if len(set(out)) != len(out):
        layer.fail("axes", axes, "no axis named twice")
    return out


class SqueezeLayer(Layer):
    """Removes the listed axes (negative count from the end); each must be 1."""
    layer_type = LayerType.SQUEEZE
    axes = Ints(())

    def infer(self, in_shapes, in_dtypes):
        shape = in_shapes[0]
        axes = _unique_axes(self, self.axes, len(shape))
        for a in axes:
            if shape[a] not in (1, -1):
                self.fail("axes", self.axes, f"axes of size 1; axis {a} of {shape} "
                          f"has size {shape[a]}")
        return [(tuple(d for i, d in enumerate(shape) if i not in axes), in_dtypes[0])]


@numpy_impl(LayerType.SQUEEZE)
def _squeeze(layer, inputs):
    return [K.squeeze(inputs[0], _unique_axes(layer, layer.axes, inputs[0].ndim))]


class UnsqueezeLayer(Layer):
    """Inserts size-1 dims at the listed axes of the output (ONNX Unsqueeze:
    axes index the output, whose rank is input rank + len(axes))."""
    layer_type = LayerType.UNSQUEEZE
    axes = Ints(())

    def infer(self, in_shapes, in_dtypes):
        shape = in_shapes[0]
        rank = len(shape) + len(self.axes)
        axes = _unique_axes(self, self.axes, rank)
        it = iter(shape)
        return [(tuple(1 if i in axes else next(it) for i in range(rank)), in_dtypes[0])]


@numpy_impl(LayerType.UNSQUEEZE)
def _unsqueeze(layer, inputs):
    rank = inputs[0].ndim + len(layer.axes)
    return [K.unsqueeze(inputs[0], _unique_axes(layer, layer.axes, rank))]


# ----------------------------------------------------------------------------
# concatenation, constant

class ConcatenationLayer(Layer):
    """Joins inputs along ``axis``; every other dim must agree. The network's
    ``add_concatenation`` sets TensorRT's default axis (the channel axis)."""
    layer_type = LayerType.CONCATENATION
    min_inputs = 1
    max_inputs = None
    axis = Int(1)

    def infer(self, in_shapes, in_dtypes):
        rank = len(in_shapes[0])
        for i, (s, t) in enumerate(zip(in_shapes, in_dtypes)):
            if len(s) != rank:
                self.fail(f"input {i}", f"rank {len(s)} ({s})", f"rank {rank} like input 0")
            if t != in_dtypes[0]:
                self.fail(f"input {i}", f"a {t.name} tensor", f"{in_dtypes[0].name} like input 0")
        axis = normalise_axis(self, self.axis, rank)
        out = list(in_shapes[0])
        for i, s in enumerate(in_shapes[1:], 1):
            for k, d in enumerate(s):
                if k == axis:
                    out[k] = -1 if -1 in (out[k], d) else out[k] + d
                elif out[k] == -1:
                    out[k] = d
                elif d not in (-1, out[k]):
                    self.fail(f"input {i}", f"shape {s}", f"dim {k} = {out[k]} as in "
                              f"{in_shapes[0]} (all dims but axis {axis} must match)")
        return [(tuple(out), in_dtypes[0])]


@numpy_impl(LayerType.CONCATENATION)
def _concatenation(layer, inputs):
    return [K.concatenate(inputs, normalise_axis(layer, layer.axis, inputs[0].ndim))]


class ConstantLayer(Layer):
    """A tensor of fixed ``shape`` holding ``weights`` (dtype from the weights)."""
    layer_type = LayerType.CONSTANT
    min_inputs = max_inputs = 0
    shape = Ints((), minimum=0)
    weights = Array(None)

    def infer(self, in_shapes, in_dtypes):
        if self.weights is None:
            self.fail("weights", None, "an array of values")
        volume = _volume(self.shape)
        if self.weights.size != volume:
            self.fail("weights", f"{self.weights.size} values",
                      f"{volume} values for shape {self.shape}")
        return [(self.shape, DataType.from_numpy(self.weights.dtype))]


@numpy_impl(LayerType.CONSTANT)
def _constant(layer, inputs):
    return [layer.weights.reshape(layer.shape).copy()]


# ----------------------------------------------------------------------------
# slice

class SliceLayer(Layer):
    """TensorRT's ISliceLayer: out[y] = x[start + y * stride] per dim, shape
    ``shape``; ``mode`` (SampleMode) says what out-of-bounds coordinates read
    (STRICT_BOUNDS rejects them; FILL reads ``fill_value``). Negative and zero
    strides are allowed.

    Extension: a ``shape`` entry of -1 takes every coordinate from ``start`` to
    the end of the dim (to its beginning for a negative stride), so a slice of
    a dynamic dim (TF's StridedSlice with an end mask) has a shape rule.

    Input 2 (``set_input(2, size)``, as in TensorRT): a 1-D INT32 shape tensor
    that replaces ``shape``; with stride 0 this broadcasts a tensor to a shape
    known only at run time (TensorRT's idiom for a fill). Start and stride
    (inputs 1 and 3) stay attributes here."""
    layer_type = LayerType.SLICE
    max_inputs = 3
    optional_inputs = (1, 2)
    start = Ints(None)
    shape = Ints(None, minimum=-1)
    stride = Ints(None)
    mode = EnumAttr(SampleMode, SampleMode.STRICT_BOUNDS)
    fill_value = Float(0.0)

    @property
    def dynamic_size(self):
        return len(self._inputs) > 2 and self._inputs[2] is not None

    def _size_attr(self, rank, runtime_size=None):
        """``shape``, or the size tensor's values (run time, else what the network knows)."""
        if len(self._inputs) > 1 and self._inputs[1] is not None:
            self.fail("input 1", "a start tensor", "None: the start is the 'start' attribute")
        if not self.dynamic_size:
            return self.shape
        if runtime_size is not None:
            return tuple(int(d) for d in runtime_size)
        known = known_values(self._inputs[2])
        if known is None or len(known) != rank:
            return (-1,) * rank
        return tuple(-1 if d is None else d for d in known)

    def sizes(self, in_shape, runtime_size=None):
        """The output shape for an input of ``in_shape`` (-1 where unknown)."""
        rank = len(in_shape)
        shape = self._size_attr(rank, runtime_size)
        for name, value in (("start", self.start), ("shape", shape), ("stride", self.stride)):
            if value is None or len(value) != rank:
                self.fail(name, value, f"{rank} values (the input rank)")
        out = []
        for k, (s, n, st, d) in enumerate(zip(self.start, shape, self.stride, in_shape)):
            if n == -1 and self.dynamic_size:
                pass                 # a size the shape tensor gives only at run time
            elif n == -1:
                if st == 0:
                    self.fail("stride", self.stride, f"a non-zero stride where shape is -1 (dim {k})")
                if d != -1:
                    # len(range(s, d, st)) or len(range(s, -1, st)), clipped at 0
                    n = max(0, -(-(d - s) // st) if st > 0 else -(-(s + 1) // -st))
            out.append(n)
        return tuple(out)

    def infer(self, in_shapes, in_dtypes):
        in_shape = in_shapes[0]
        if self.dynamic_size and (in_dtypes[2] != DataType.INT32 or len(in_shapes[2]) != 1
                                  or in_shapes[2][0] != len(in_shape)):
            self.fail("input 2", f"a {in_dtypes[2].name} tensor of shape {tuple(in_shapes[2])}",
                      f"a 1-D INT32 shape tensor of {len(in_shape)} values (the input rank)")
        sizes = self.sizes(in_shape)
        for k, (s, n, st, d) in enumerate(zip(self.start, sizes, self.stride, in_shape)):
            if d == -1 or n in (0, -1):
                continue
            if self.mode == SampleMode.STRICT_BOUNDS:
                last = s + (n - 1) * st
                if not (0 <= s < d and 0 <= last < d):
                    self.fail("start", self.start, f"coordinates inside the input in STRICT_BOUNDS "
                              f"mode: dim {k} reads {s}..{last} of size {d} (or use mode "
                              f"WRAP, CLAMP, FILL or REFLECT)")
            elif d == 0 and self.mode != SampleMode.FILL:
                self.fail("input", f"an empty dim {k}", f"a non-empty dim for {self.mode.name} mode")
        return [(sizes, in_dtypes[0])]


@numpy_impl(LayerType.SLICE)
def _slice(layer, inputs):
    x = inputs[0]
    size = None
    if len(inputs) > 2 and inputs[2] is not None:
        size = to_host(inputs[2]).reshape(-1)     # a shape tensor: read on the host
    return [K.slice_nd(x, layer.start, layer.sizes(x.shape, size), layer.stride, layer.mode.name,
                       layer.fill_value)]


# ----------------------------------------------------------------------------
# gather

class GatherLayer(Layer):
    """TensorRT's default-mode IGatherLayer (TF's tf.gather): output shape
    data.shape[:axis] + indices.shape + data.shape[axis+1:]. Indices are INT32;
    negative ones count from the end; out of range is an execution error."""
    layer_type = LayerType.GATHER
    min_inputs = max_inputs = 2
    axis = Int(0)

    def infer(self, in_shapes, in_dtypes):
        data, indices = in_shapes
        if in_dtypes[1] != DataType.INT32:
            self.fail("indices", f"a {in_dtypes[1].name} tensor", "an INT32 tensor")
        axis = normalise_axis(self, self.axis, len(data))
        return [(tuple(data[:axis]) + tuple(indices) + tuple(data[axis + 1:]), in_dtypes[0])]


@numpy_impl(LayerType.GATHER)
def _gather(layer, inputs):
    data, indices = inputs
    axis = normalise_axis(layer, layer.axis, data.ndim)
    d = data.shape[axis]
    bad = (indices < -d) | (indices >= d)
    # the typed error is part of the layer's contract, so on the device this
    # costs one synchronisation (a scalar comes back); the offending index only
    # on the error path
    if to_host(bad.any()):
        first = to_host(indices[bad]).flat[0]
        raise ExecutionError(f"{layer.describe()}: index {int(first)} is out of "
                             f"range for axis {axis} of size {d}; expected indices in [{-d}, {d})")
    return [K.gather(data, indices, axis)]


# ----------------------------------------------------------------------------
# shape

class ShapeLayer(Layer):
    """TensorRT's IShapeLayer: the dims of its input as a 1-D INT32 shape tensor.

    The network knows its value where the input's dims are known (all of them
    once a build fixes the input shapes), so the shape math after it folds
    into constants there; at run time it is the input's shape."""
    layer_type = LayerType.SHAPE

    def infer(self, in_shapes, in_dtypes):
        return [((len(in_shapes[0]),), DataType.INT32)]


@numpy_impl(LayerType.SHAPE)
def _shape(layer, inputs):
    return [np.asarray(inputs[0].shape, dtype=np.int32)]
