"""The converter context: TF tensors -> engine tensors, with their layout.

TensorFlow graphs are NHWC; the engine's spatial layers are NCHW. Rather than
wrap every layer in a pair of transposes, each converted TF tensor carries a
*permutation* saying how its engine dimensions relate to TF's:

    engine dim i  ==  TF dim perm[i]

    NHWC tensor kept as NCHW:   perm = (0, 3, 1, 2)
        TF     (N, H, W, C)           engine (N, C, H, W)
                0  1  2  3                   0  3  1  2   <- TF dim each engine dim holds

Layout-sensitive converters (conv, pooling, LRN, batch norm, resize) ask for
the tensor in NCHW; layout-agnostic ones (elementwise, activations) keep
whatever layout their input has; converters with axes (concat, reduce,
softmax, pad, slice) map TF axes through ``perm``; a TF Transpose only
composes permutations. A real transpose (a shuffle layer) is emitted only when
a value is needed in a layout it does not have: at the engine's inputs and
outputs, and before order-dependent ops such as Reshape. Constants stay NumPy
arrays until a layer needs them, and are transposed in NumPy.
"""
import logging

import numpy as np
import tensorflow as tf

import engine as rt

from .errors import ConversionError
from .graph_utils import canonical, parse_input, tensor_name

logger = logging.getLogger(__name__)

NCHW = (0, 3, 1, 2)       # NHWC TF tensor held as NCHW in the engine


def identity(rank):
    return tuple(range(rank))


def tf_to_engine_dtype(dtype):
    table = {tf.float32: rt.float32, tf.float16: rt.float16, tf.int32: rt.int32,
             tf.int8: rt.int8, tf.bool: rt.DataType.BOOL}
    dtype = tf.dtypes.as_dtype(dtype)
    if dtype not in table:
        raise ConversionError(f"TF dtype {dtype.name} has no engine data type; expected one of "
                              + ", ".join(d.name for d in table))
    return table[dtype]


class Value:
    """A TF tensor inside the converter: an engine tensor or a NumPy constant, plus layout."""

    __slots__ = ("tensor", "const", "perm", "_cache")

    def __init__(self, tensor=None, const=None, perm=None):
        self.tensor, self.const = tensor, const
        if const is not None:
            perm = identity(np.ndim(const))
        elif perm is None:
            perm = identity(len(tensor.shape))
        self.perm = tuple(perm)
        self._cache = {}

    @property
    def is_const(self):
        return self.const is not None

    @property
    def rank(self):
        return len(self.perm)

    def tf_axis_to_engine(self, axis):
        axis = axis % self.rank if self.rank else 0
        return self.perm.index(axis)

    def tf_shape(self):
        """The TF-order shape (-1 unknown)."""
        if self.is_const:
            return tuple(self.const.shape)
        eshape = self.tensor.shape
        out = [0] * self.rank
        for i, d in enumerate(self.perm):
            out[d] = eshape[i]
        return tuple(out)

    def __repr__(self):
        what = f"const{tuple(self.const.shape)}" if self.is_const else repr(self.tensor)
        return f"Value({what}, perm={self.perm})"


def perm_after_removing(perm, removed):
    """Layout of a value after TF axes ``removed`` disappear (reduce/squeeze).

    Engine dims keep their order; the remaining TF axes are renumbered.
    """
    removed = set(removed)
    kept = [p for p in perm if p not in removed]
    order = sorted(kept)
    return tuple(order.index(p) for p in kept)


def transpose_between(src, dst):
    """The shuffle permutation taking an engine tensor in layout ``src`` to ``dst``."""
    return tuple(src.index(d) for d in dst)


class ConversionContext:
    """State of one segment's conversion: the network and the TF -> Value map."""

    def __init__(self, network, graph, name="engine"):
        self.network, self.graph, self.engine_name = network, graph, name
        self.values = {}
        self.node = None           # the TF node being converted (for error messages)

    # ------------------------------------------------------------------ inputs
    def add_input(self, tf_tensor, name, shape=None, dtype=None):
        dtype = dtype or self.graph.dtype(tf_tensor)
        if shape is None:
            shape = self.graph.shape(tf_tensor)
            if shape.rank is None:
                raise ConversionError(f"segment input {tf_tensor} has unknown rank; "
                                      "expected a static rank")
            shape = [-1 if d is None else d for d in shape.as_list()]
        t = self.network.add_input(name, tf_to_engine_dtype(dtype), tuple(shape))
        self.values[canonical(tf_tensor)] = Value(t)
        return t

    def input(self, node, i):
        """The Value of the node's i-th data input."""
        data = [x for x in node.input if not x.startswith("^")]
        if i >= len(data):
            raise ConversionError(f"{node.op} node {node.name!r} has {len(data)} inputs; "
                                  f"asked for input {i}")
        return self.value(data[i])

    def value(self, tf_tensor):
        key = canonical(tf_tensor)
        if key not in self.values:
            if self.graph.is_const(key):
                self.values[key] = Value(const=self.graph.const_value(key))
            else:
                raise ConversionError(f"tensor {key} has not been converted yet "
                                      f"(while converting {self.node and self.node.name!r})")
        return self.values[key]

    def const(self, node, i, what="input"):
        """The NumPy value of a constant input, or a ConversionError naming it."""
        v = self.input(node, i)
        if not v.is_const:
            raise ConversionError(f"{node.op} node {node.name!r}: {what} (input {i}) must be a "
                                  "constant; found a computed tensor")
        return v.const

    def set_outputs(self, node, outputs):
        for i, out in enumerate(outputs):
            if out is None:
                continue
            if not isinstance(out, Value):
                out = Value(out)
            self.values[tensor_name(node.name, i)] = out

    # ------------------------------------------------------------------ layout
    def tensor(self, value, perm=None):
        """The engine tensor of ``value`` laid out as ``perm`` (identity by default)."""
        perm = identity(value.rank) if perm is None else tuple(perm)
        if value.is_const:
            arr = np.ascontiguousarray(np.transpose(value.const, perm)) if perm else value.const
            return self.constant(arr)
        if perm == value.perm:
            return value.tensor
        if perm not in value._cache:
            layer = self.network.add_shuffle(value.tensor)
            layer.first_transpose = transpose_between(value.perm, perm)
            self._name(layer, f"transpose_{''.join(map(str, perm))}")
            out = layer.get_output(0)
            if value.tensor.dynamic_range is not None:     # a transpose keeps the values:
                out.dynamic_range = value.tensor.dynamic_range   # and so the Q/DQ range
            value._cache[perm] = out
        return value._cache[perm]

    def nchw(self, value):
        """Engine tensor of a rank-4 NHWC value in NCHW, and the perm it has."""
        return self.tensor(value, NCHW), NCHW

    def constant(self, array):
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype == np.int64:
            array = array.astype(np.int32)
        layer = self.network.add_constant(tuple(array.shape), array)
        self._name(layer, "const")
        return layer.get_output(0)

    def broadcast(self, value, rank, perm):
        """``value`` aligned with a rank-``rank`` operand in layout ``perm``.

        TF broadcasting aligns trailing dims; the engine wants equal ranks, so
        lower-rank operands get leading 1s (in TF order) and then the layout.
        """
        if value.rank == rank:
            return self.tensor(value, perm)
        if value.rank > rank:
            raise ConversionError(f"cannot broadcast rank {value.rank} down to rank {rank}")
        lead = rank - value.rank
        if value.is_const:
            return self.tensor(Value(const=value.const.reshape((1,) * lead + value.const.shape)),
                               perm)
        t = self.tensor(value)
        layer = self.network.add_unsqueeze(t, tuple(range(lead)))
        self._name(layer, "broadcast")
        return self.tensor(Value(layer.get_output(0)), perm)

    def common_layout(self, values):
        """The layout an n-ary elementwise op computes in: that of its first
        full-rank computed operand, so NCHW chains stay NCHW."""
        rank = max(v.rank for v in values)
        for v in values:
            if not v.is_const and v.rank == rank:
                return rank, v.perm
        return rank, identity(rank)

    # ------------------------------------------------------------------ naming
    def _name(self, layer, suffix):
        base = self.node.name if self.node is not None else self.engine_name
        layer.name = f"{base}/{suffix}" if suffix else base
        return layer

    def name(self, layer, suffix=""):
        return self._name(layer, suffix)


def data_inputs(node):
    return [parse_input(i) for i in node.input if not i.startswith("^")]
