"""Tensors, the layer base class and the attribute descriptors layers are made of.

A layer is a bag of declared attributes (``Attr`` descriptors) plus a pure shape
rule ``infer(in_shapes, in_dtypes) -> [(shape, dtype), ...]``. Declaring the
attributes once buys three things for every layer: validation on assignment
(``conv.stride_nd = (0, 1)`` raises at once, naming layer and argument), plan
serialisation without per-layer code, and shape re-inference whenever a
parameter changes, as TensorRT does.

Shapes are tuples of ints; -1 marks a dimension known only at run time. The
same ``infer`` runs at network construction (with -1s) and at execution (with
the concrete shapes of the call), so there is one shape rule, not two.
"""

import numpy as np

from ..errors import NetworkDefinitionError
from ..types import DataType, LayerType

MAX_DIMS = 8


class Weights:
    """TensorRT's ``Weights``: a thin wrapper around a NumPy array."""

    def __init__(self, a=None, dtype=None):
        self.array = None if a is None else np.ascontiguousarray(a, dtype=dtype)

    @property
    def size(self):
        return 0 if self.array is None else self.array.size

    @property
    def dtype(self):
        return None if self.array is None else DataType.from_numpy(self.array.dtype)

    def numpy(self):
        return self.array


# ----------------------------------------------------------------------------
# attribute descriptors

_MISSING = object()


class Attr:
    """A declared layer attribute. Subclasses normalise and check values."""

    def __init__(self, default=None, doc=""):
        self.default, self.doc = default, doc

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, layer, owner=None):
        if layer is None:
            return self
        return layer._attrs.get(self.name, self.default)

    def __set__(self, layer, value):
        # None means "unset" for attributes whose default is None (bias, alpha...)
        if value is not None or self.default is not None:
            value = self.normalise(layer, value)
        old = layer._attrs.get(self.name, _MISSING)
        layer._attrs[self.name] = value
        if layer._network is not None:
            try:
                layer._network._on_layer_changed(layer)
            except NetworkDefinitionError:
                if old is _MISSING:
                    layer._attrs.pop(self.name)
                else:
                    layer._attrs[self.name] = old
                layer._network._on_layer_changed(layer)
                raise

    def fail(self, layer, given, expected):
        raise NetworkDefinitionError(layer.describe(), self.name, given, expected)

    def normalise(self, layer, value):
        return value

    # plan (de)serialisation: JSON-able values; arrays go through ``arrays``
    def encode(self, value, arrays):
        return value

    def decode(self, value, arrays):
        return value


class Int(Attr):
    def __init__(self, default=0, minimum=None, doc=""):
        super().__init__(default, doc)
        self.minimum = minimum

    def normalise(self, layer, value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            self.fail(layer, repr(value), "an int")
        if self.minimum is not None and value < self.minimum:
            self.fail(layer, value, f"an int >= {self.minimum}")
        return int(value)


class Float(Attr):
    def normalise(self, layer, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            self.fail(layer, repr(value), "a number")
        return float(value)


class Bool(Attr):
    def normalise(self, layer, value):
        if not isinstance(value, (bool, np.bool_)):
            self.fail(layer, repr(value), "True or False")
        return bool(value)


class Ints(Attr):
    """A tuple of ints (dims, strides, axes lists)."""

    def __init__(self, default=None, minimum=None, doc=""):
        super().__init__(default, doc)
        self.minimum = minimum

    def normalise(self, layer, value):
        if value is None and self.default is None:
            return None
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = (value,)
        try:
            out = tuple(int(v) for v in value)
            if any(isinstance(v, (bool, float, np.floating)) for v in value):
                raise TypeError
        except (TypeError, ValueError):
            self.fail(layer, repr(value), "a sequence of ints")
        if len(out) > MAX_DIMS:
            self.fail(layer, out, f"at most {MAX_DIMS} values")
        if self.minimum is not None and any(v < self.minimum for v in out):
            self.fail(layer, out, f"every value >= {self.minimum}")
        return out

    def encode(self, value, arrays):
        return None if value is None else list(value)

    def decode(self, value, arrays):
        return None if value is None else tuple(value)


class EnumAttr(Attr):
    def __init__(self, enum_cls, default=None, doc=""):
        super().__init__(default, doc)
        self.enum_cls = enum_cls

    def normalise(self, layer, value):
        if isinstance(value, self.enum_cls):
            return value
        if isinstance(value, str) and value in self.enum_cls.__members__:
            return self.enum_cls[value]
        self.fail(layer, repr(value), f"a {self.enum_cls.__name__}: "
                  + ", ".join(self.enum_cls.__members__))

    def encode(self, value, arrays):
        return None if value is None else value.name

    def decode(self, value, arrays):
        return None if value is None else self.enum_cls[value]


class Array(Attr):
    """Weights: a NumPy array (or ``Weights``), stored as given, C-contiguous."""

    def __init__(self, default=None, dtypes=None, doc=""):
        super().__init__(default, doc)
        self.dtypes = dtypes

    def normalise(self, layer, value):
        if value is None:
            return None
        if isinstance(value, Weights):
            value = value.array
            if value is None:
                return None
        if not isinstance(value, np.ndarray):
            try:
                value = np.asarray(value)
            except (TypeError, ValueError):
                self.fail(layer, type(value).__name__, "a NumPy array")
        if value.dtype == np.float64:       # NumPy's default float: weights are float32
            value = value.astype(np.float32)
        if value.dtype.kind not in "biuf" or value.dtype.name not in {d.value for d in DataType}:
            self.fail(layer, f"an array of {value.dtype}",
                      "an array of " + ", ".join(d.value for d in DataType))
        if self.dtypes is not None and DataType.from_numpy(value.dtype) not in self.dtypes:
            self.fail(layer, f"an array of {value.dtype}",
                      "an array of " + ", ".join(d.value for d in self.dtypes))
        return np.ascontiguousarray(value)

    def encode(self, value, arrays):
        return None if value is None else arrays.put(value)

    def decode(self, value, arrays):
        return None if value is None else arrays.get(value)


class Json(Attr):
    """Free-form JSON-able data (plugin fields, per-gate weight tables keyed by str)."""


class ArrayDict(Attr):
    """A dict str -> array (RNN gate weights)."""

    def encode(self, value, arrays):
        return {k: arrays.put(v) for k, v in sorted((value or {}).items())}

    def decode(self, value, arrays):
        return {k: arrays.get(v) for k, v in (value or {}).items()}


# ----------------------------------------------------------------------------
# tensors

class Tensor:
    """A named edge of the network. Shape and dtype come from the producer."""

    def __init__(self, network, name, producer=None, index=0):
        self._network, self._name = network, name
        self.producer, self.index = producer, index
        self._shape, self._dtype = None, None
        self._declared_shape = None      # network inputs only
        self.dynamic_range = None        # (min, max) for INT8; set by users/calibration
        self.allowed_formats = None

    # name ------------------------------------------------------------------
    @property
    def name(self):
        return self._name

    @name.setter
    def name(self, value):
        self._network._rename_tensor(self, value)

    @property
    def shape(self):
        self._network._ensure_inferred()
        return self._shape

    @shape.setter
    def shape(self, value):
        if not self.is_network_input:
            raise NetworkDefinitionError(f"tensor '{self.name}'", "shape", "set on a layer output",
                                         "only network input shapes to be set")
        self._network._set_input_shape(self, value)

    @property
    def dtype(self):
        self._network._ensure_inferred()
        return self._dtype

    @dtype.setter
    def dtype(self, value):
        if not self.is_network_input:
            raise NetworkDefinitionError(f"tensor '{self.name}'", "dtype", "set on a layer output",
                                         "set_output_type on the producing layer")
        self._network._set_input_dtype(self, value)

    @property
    def is_network_input(self):
        return self.producer is None

    @property
    def is_network_output(self):
        return self in self._network._outputs

    def set_dynamic_range(self, lo, hi):
        if not (float(lo) < float(hi)):
            raise NetworkDefinitionError(f"tensor '{self.name}'", "dynamic_range", (lo, hi),
                                         "min < max")
        self.dynamic_range = (float(lo), float(hi))
        return True

    def __repr__(self):
        return f"Tensor({self._name!r}, shape={self._shape}, dtype={self._dtype})"


# ----------------------------------------------------------------------------
# layers

class Layer:
    """Base of every layer: inputs, outputs, precision and declared attributes.

    Subclasses set ``type``, declare ``Attr``s, and implement ``infer``.
    ``min_inputs``/``max_inputs`` bound the input count (None inputs allowed
    only where a subclass says so through ``optional_inputs``).
    """

    layer_type: LayerType = None
    type_attr = None          # e.g. "activation_type": what TensorRT's ``layer.type = ...`` sets
    min_inputs = 1
    max_inputs = 1
    optional_inputs = ()

    def __init__(self, network, inputs, **attrs):
        self._network = None     # no re-inference while attributes are being set
        self._attrs = {}
        self._inputs = list(inputs)
        self.name = ""
        self._precision = None
        self._output_types = {}
        self.metadata = ""
        declared = type(self).declared_attrs()
        for key, value in attrs.items():
            if key not in declared and not isinstance(getattr(type(self), key, None), property):
                raise NetworkDefinitionError(self.describe(), key, "given",
                                             "one of the layer's attributes: " + ", ".join(declared))
            setattr(self, key, value)
        self._network = network
        self._outputs = []

    # TensorRT surface ------------------------------------------------------
    @property
    def type(self):
        """The LayerType. Assigning an ActivationType/PoolingType/... sets the
        layer's operation, as ``IActivationLayer.type = ...`` does in TensorRT."""
        return self.layer_type

    @type.setter
    def type(self, value):
        if self.type_attr is None:
            self.fail("type", repr(value), f"no assignment: a {self.layer_type.name} layer's type is fixed")
        setattr(self, self.type_attr, value)

    @property
    def num_inputs(self):
        return len(self._inputs)

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_input(self, i):
        return self._inputs[i]

    def set_input(self, i, tensor):
        limit = self.max_inputs if self.max_inputs is not None else len(self._inputs) + 1
        if not 0 <= i < limit:
            raise NetworkDefinitionError(self.describe(), "index", i,
                                         f"an input index in [0, {limit})")
        old = list(self._inputs)
        while len(self._inputs) <= i:
            self._inputs.append(None)
        self._inputs[i] = tensor
        try:
            self._network._on_layer_changed(self)
        except NetworkDefinitionError:
            self._inputs = old
            self._network._on_layer_changed(self)
            raise

    def get_output(self, i):
        if not 0 <= i < len(self._outputs):
            raise IndexError(f"{self.describe()} has {len(self._outputs)} outputs; asked for {i}")
        return self._outputs[i]

    @property
    def precision(self):
        return self._precision if self._precision is not None else DataType.FLOAT

    @precision.setter
    def precision(self, dtype):
        if not isinstance(dtype, DataType):
            raise NetworkDefinitionError(self.describe(), "precision", repr(dtype), "a DataType")
        self._precision = dtype

    @property
    def precision_is_set(self):
        return self._precision is not None

    def reset_precision(self):
        self._precision = None

    def set_output_type(self, index, dtype):
        if not isinstance(dtype, DataType):
            raise NetworkDefinitionError(self.describe(), "output_type", repr(dtype), "a DataType")
        if not 0 <= index < max(1, len(self._outputs)):
            raise NetworkDefinitionError(self.describe(), "index", index,
                                         f"an output index in [0, {len(self._outputs)})")
        self._output_types[index] = dtype
        if self._network is not None:
            self._network._on_layer_changed(self)

    def get_output_type(self, index):
        return self._output_types.get(index, self._outputs[index].dtype)

    def output_type_is_set(self, index):
        return index in self._output_types

    def reset_output_type(self, index):
        self._output_types.pop(index, None)
        if self._network is not None:
            self._network._on_layer_changed(self)

    def check_complete(self):
        """Raise BuildError if the layer cannot run yet (weights set after adding,
        e.g. RNN gates). The builder calls this on every layer."""

    # the shape rule ----------------------------------------------------------
    def infer(self, in_shapes, in_dtypes):
        """Return [(shape, dtype)] for each output. Raise via ``self.fail``."""
        raise NotImplementedError(type(self).__name__ + ".infer")

    def fail(self, argument, given, expected):
        raise NetworkDefinitionError(self.describe(), argument, given, expected)

    def describe(self):
        kind = self.layer_type.name if self.layer_type else type(self).__name__
        return f"layer '{self.name}' ({kind})" if self.name else f"{kind} layer"

    # attribute plumbing --------------------------------------------------------
    LAYER_CLASSES = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.layer_type is not None:
            Layer.LAYER_CLASSES[cls.layer_type] = cls

    @classmethod
    def declared_attrs(cls):
        seen = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Attr):
                    seen[key] = value
        return seen

    def attr_values(self):
        return {k: getattr(self, k) for k in self.declared_attrs()}

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


# ----------------------------------------------------------------------------
# helpers shared by shape rules

def check_float(layer, argument, dtype):
    """Raise (naming ``argument``) unless ``dtype`` is FLOAT or HALF."""
    if dtype not in (DataType.FLOAT, DataType.HALF):
        layer.fail(argument, f"a {dtype.name} tensor", "a FLOAT or HALF tensor")


def dim_known(d):
    return d >= 0


def broadcast_shapes(layer, a, b, arg="inputs"):
    """TensorRT broadcasting: equal ranks; a size-1 dim stretches to the other."""
    if len(a) != len(b):
        layer.fail(arg, f"ranks {len(a)} and {len(b)} ({a} and {b})",
                   "equal ranks (add a shuffle/unsqueeze to align them)")
    out = []
    for x, y in zip(a, b):
        if x == y:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        elif x == -1 or y == -1:
            out.append(max(x, y) if min(x, y) == -1 and max(x, y) > 1 else -1)
        else:
            layer.fail(arg, f"shapes {a} and {b}", "dims equal or 1 in every position")
    return tuple(out)


def axes_from_mask(layer, mask, rank, arg="axes"):
    """TensorRT's axes bitmask -> sorted tuple of axes (bit i set = axis i)."""
    if mask <= 0 or mask >= (1 << rank):
        layer.fail(arg, f"bitmask {mask:#b}", f"a non-empty bitmask of axes below rank {rank}")
    return tuple(i for i in range(rank) if mask >> i & 1)


def normalise_axis(layer, axis, rank, arg="axis"):
    if not -rank <= axis < rank:
        layer.fail(arg, axis, f"an axis in [{-rank}, {rank})")
    return axis % rank
