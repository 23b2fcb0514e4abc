"""Plugins: layers written by users in Python, and the registry that names them.

A plugin is a subclass of ``Plugin`` (TensorRT's IPluginV2 + its creator in
one class):

    @engine.register_plugin
    class ClipSquare(engine.Plugin):
        plugin_type, plugin_version = "ClipSquare", "1"

        def __init__(self, lo=0.0, hi=1.0):
            super().__init__(lo=float(lo), hi=float(hi))

        def get_output_shapes(self, input_shapes, input_dtypes):
            return [(input_shapes[0], input_dtypes[0])]

        def enqueue_numpy(self, inputs):
            return [np.clip(inputs[0], self.lo, self.hi) ** 2]

Its fields (the keyword arguments handed to ``Plugin.__init__``) are plain
JSON data: None, bools, ints, floats, strs, lists and str-keyed dicts of them,
and NumPy arrays. A plan stores only the type, version and fields (arrays go
to the plan's weight blob, referenced as {"__ndarray__": ref}); loading it
looks the class up in the registry and calls ``cls(**fields)``, so nothing in
a plan names code to import or run.
"""
import logging
import threading

import numpy as np

from kernels.xp import array_module

from ..errors import NetworkDefinitionError, PlanFormatError, PluginError
from ..kernel_table import numpy_impl
from ..types import DataType, LayerType
from .base import MAX_DIMS, Attr, Layer

log = logging.getLogger(__name__)

_ARRAY_TAG = "__ndarray__"
_ARRAY_DTYPES = {d.value for d in DataType}


class PluginShapeError(NetworkDefinitionError, PluginError):
    """A plugin's shape rule misbehaved (a NetworkDefinitionError, so layer
    changes roll back, and a PluginError, so callers catching either see it)."""


class PluginPlanError(PluginError, PlanFormatError):
    """A plan names a plugin this process has not registered."""


# ----------------------------------------------------------------------------
# fields

def _check_value(where, path, v):
    """A JSON-able copy of one field value; arrays copied, tuples made lists."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_check_value(where, f"{path}[{i}]", x) for i, x in enumerate(v)]
    if isinstance(v, dict):
        if _ARRAY_TAG in v or not all(isinstance(k, str) for k in v):
            raise PluginError(f"{where}: field {path} is a dict with key {_ARRAY_TAG!r} or non-str "
                              "keys; expected str keys (the name is reserved for arrays)")
        return {k: _check_value(where, f"{path}.{k}", x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        a = v.astype(np.float32) if v.dtype == np.float64 else v
        if a.dtype.name not in _ARRAY_DTYPES:
            raise PluginError(f"{where}: field {path} is an array of {a.dtype}; expected one of "
                              f"{', '.join(sorted(_ARRAY_DTYPES))} (float64 becomes float32)")
        return np.array(a, copy=True, order="C")
    raise PluginError(f"{where}: field {path} is a {type(v).__name__}; expected None, bool, int, "
                      "float, str, a list or str-keyed dict of those, or a NumPy array")


def _equal(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _encode(v, arrays):
    if isinstance(v, np.ndarray):
        return {_ARRAY_TAG: arrays.put(v)}
    if isinstance(v, list):
        return [_encode(x, arrays) for x in v]
    if isinstance(v, dict):
        return {k: _encode(x, arrays) for k, x in v.items()}
    return v


def _decode(v, arrays):
    if isinstance(v, dict):
        if set(v) == {_ARRAY_TAG}:
            return arrays.get(v[_ARRAY_TAG])
        return {k: _decode(x, arrays) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x, arrays) for x in v]
    return v


# ----------------------------------------------------------------------------
# the plugin base class

class Plugin:
    """Base of user plugins. Subclasses set ``plugin_type``/``plugin_version``
    and implement ``get_output_shapes`` and ``enqueue_numpy``; ``enqueue_cupy``
    (same contract, CuPy arrays) is optional and used by the GPU backend."""

    plugin_type = None
    plugin_version = "1"
    plugin_namespace = ""
    num_outputs = 1           # TensorRT's getNbOutputs; None: whatever the shape rule gives
    enqueue_cupy = None

    def __init__(self, **fields):
        where = f"plugin {self.plugin_type!r}"
        self.fields = {k: _check_value(where, k, v) for k, v in fields.items()}

    def __getattr__(self, name):
        # fields read as attributes (self.lo); only reached when normal lookup fails
        fields = self.__dict__.get("fields")
        if fields is not None and name in fields:
            return fields[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or field {name!r}")

    def get_output_shapes(self, input_shapes, input_dtypes):
        """[(shape tuple, DataType)] per output; -1 dims in, -1 dims out."""
        raise NotImplementedError(f"{type(self).__name__}.get_output_shapes")

    def enqueue_numpy(self, inputs):
        """list of NumPy arrays in -> list of NumPy arrays out."""
        raise NotImplementedError(f"{type(self).__name__}.enqueue_numpy")

    def __eq__(self, other):
        return (type(self) is type(other) and self.fields.keys() == other.fields.keys()
                and all(_equal(v, other.fields[k]) for k, v in self.fields.items()))

    def __hash__(self):
        return hash((self.plugin_type, self.plugin_version))

    def __repr__(self):
        return f"<Plugin {self.plugin_type} v{self.plugin_version} {sorted(self.fields)}>"


# ----------------------------------------------------------------------------
# the registry

class PluginRegistry:
    """TensorRT's IPluginRegistry: plugin classes keyed by (type, version)."""

    def __init__(self):
        self._creators = {}
        self._lock = threading.Lock()

    def register_creator(self, cls):
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise PluginError(f"register_creator got {cls!r}; expected a subclass of engine.Plugin")
        t, v = cls.plugin_type, cls.plugin_version
        if not isinstance(t, str) or not t or not isinstance(v, str) or not v:
            raise PluginError(f"plugin class {cls.__name__} has plugin_type {t!r} and "
                              f"plugin_version {v!r}; expected non-empty strs")
        with self._lock:
            if (t, v) in self._creators:
                raise PluginError(f"plugin {t!r} version {v!r} is already registered (by "
                                  f"{self._creators[t, v].__qualname__}); deregister it first "
                                  "or bump plugin_version")
            self._creators[t, v] = cls
        log.debug("registered plugin %s v%s (%s)", t, v, cls.__qualname__)
        return cls

    def deregister_creator(self, cls):
        """True if ``cls`` was registered (and is no longer)."""
        with self._lock:
            key = (cls.plugin_type, cls.plugin_version)
            if self._creators.get(key) is cls:
                del self._creators[key]
                return True
        return False

    def get_creator(self, plugin_type, plugin_version="1"):
        """The class registered for (type, version), or None (as TensorRT)."""
        return self._creators.get((plugin_type, plugin_version))

    @property
    def plugin_creator_list(self):
        return list(self._creators.values())

    def create(self, plugin_type, plugin_version="1", fields=None):
        cls = self.get_creator(plugin_type, plugin_version)
        if cls is None:
            known = ", ".join(f"{t} v{v}" for t, v in sorted(self._creators)) or "none"
            raise PluginError(f"no plugin {plugin_type!r} version {plugin_version!r} is registered "
                              f"(registered: {known}); register its class with "
                              "engine.register_plugin before building or loading")
        fields = dict(fields or {})
        try:
            return cls(**fields)
        except PluginError:
            raise
        except (TypeError, ValueError) as e:
            raise PluginError(f"plugin {plugin_type!r} v{plugin_version} rejected fields "
                              f"{sorted(fields)}: {e}") from e


_REGISTRY = PluginRegistry()


def get_plugin_registry():
    return _REGISTRY


def register_plugin(cls):
    """Class decorator: ``@engine.register_plugin`` registers the plugin class."""
    return _REGISTRY.register_creator(cls)


# ----------------------------------------------------------------------------
# the layer

class _PluginAttr(Attr):
    """The plugin instance; serialised as type, version and fields only."""

    def normalise(self, layer, value):
        if not isinstance(value, Plugin):
            self.fail(layer, type(value).__name__, "an engine.Plugin instance")
        if not isinstance(value.__dict__.get("fields"), dict):
            self.fail(layer, f"a {type(value).__name__} without fields",
                      "a plugin whose __init__ calls Plugin.__init__(**fields)")
        return value

    def encode(self, value, arrays):
        if value is None:
            return None
        return {"type": value.plugin_type, "version": value.plugin_version,
                "fields": _encode(value.fields, arrays)}

    def decode(self, value, arrays):
        if value is None:
            return None
        try:
            return _REGISTRY.create(value["type"], value["version"],
                                    _decode(value["fields"], arrays))
        except PluginError as e:
            raise PluginPlanError(f"plan holds a plugin layer that cannot be recreated: {e}") from e


class PluginV2Layer(Layer):
    layer_type = LayerType.PLUGIN_V2
    # a finite bound (not None) so set_input can range-check an index
    min_inputs, max_inputs = 0, 64
    plugin = _PluginAttr(None)

    @property
    def plugin_type(self):
        return self.plugin.plugin_type

    @property
    def plugin_version(self):
        return self.plugin.plugin_version

    @property
    def plugin_fields(self):
        return self.plugin.fields

    def _bad_rule(self, given, expected):
        raise PluginShapeError(self.describe(), f"plugin {self.plugin_type!r} shape rule",
                               given, expected)

    def infer(self, in_shapes, in_dtypes):
        if self.plugin is None:
            self.fail("plugin", "None", "an engine.Plugin instance")
        if any(s is None for s in in_shapes):
            self.fail("inputs", "a missing (None) input", "a tensor for every plugin input")
        try:
            results = self.plugin.get_output_shapes([tuple(s) for s in in_shapes], list(in_dtypes))
        except (NetworkDefinitionError, PluginError):
            raise
        except Exception as e:  # a bug in user code: say whose
            self._bad_rule(f"raising {type(e).__name__}: {e}", "[(shape, DataType)] per output")
        want = self.plugin.num_outputs
        if not isinstance(results, (list, tuple)) or (want is not None and len(results) != want):
            got = f"{len(results)} outputs" if isinstance(results, (list, tuple)) else repr(results)
            self._bad_rule(got, f"a list of {want} (shape, DataType) pairs (num_outputs)")
        out = []
        for i, item in enumerate(results):
            try:
                shape, dtype = item
                shape = tuple(int(d) for d in shape)
            except (TypeError, ValueError):
                self._bad_rule(f"output {i} as {item!r}", "a (shape tuple, DataType) pair")
            if not isinstance(dtype, DataType) or len(shape) > MAX_DIMS or any(d < -1 for d in shape):
                self._bad_rule(f"output {i} as {item!r}",
                               f"a shape of <= {MAX_DIMS} dims >= -1 and an engine DataType")
            out.append((shape, dtype))
        return out


@numpy_impl(LayerType.PLUGIN_V2)
def _plugin_v2(layer, inputs):
    plugin = layer.plugin
    expected = layer.infer([x.shape for x in inputs], [t.dtype for t in layer._inputs])
    xp = array_module(*inputs)
    # on the GPU backend the inputs are CuPy arrays: the plugin's CuPy code runs if it
    # has some; a plugin with only NumPy code raises here and the host tactic takes it
    run = plugin.enqueue_cupy if xp is not np and plugin.enqueue_cupy is not None \
        else plugin.enqueue_numpy
    outs = run(list(inputs))
    if not isinstance(outs, (list, tuple)) or len(outs) != len(expected):
        got = f"{len(outs)} arrays" if isinstance(outs, (list, tuple)) else type(outs).__name__
        raise PluginError(f"{layer.describe()}: plugin {plugin.plugin_type!r} enqueue_numpy "
                          f"returned {got}; its shape rule declares {len(expected)} outputs")
    result = []
    for i, (a, (shape, dtype)) in enumerate(zip(outs, expected)):
        a = xp.asarray(a)
        if a.shape != shape:
            raise PluginError(f"{layer.describe()}: plugin {plugin.plugin_type!r} enqueue_numpy "
                              f"returned output {i} of shape {a.shape}; its shape rule says {shape}")
        result.append(a.astype(dtype.to_numpy(), copy=False))
    return result
