"""Plan files: a network (and what the builder decided about it) as bytes.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"CUPYRT\\x00P"
    8       4     format version (PLAN_VERSION)
    12      8     length J of the JSON header
    20      8     length B of the weight blob
    28      32    SHA-256 of JSON header + blob
    60      J     JSON header (UTF-8): network, layers, attributes, engine metadata
    60+J    B     blob: every array, 64-byte aligned, referenced from the JSON by
                  {"offset", "dtype", "shape"}

No pickle and nothing that evaluates code: the JSON names layer classes from a
fixed table (``Layer.LAYER_CLASSES``) and enum members by name, and arrays are
rebuilt with ``np.frombuffer`` from a whitelisted dtype. The checksum is
verified before anything is parsed, so a truncated or bit-flipped plan fails
with a PlanFormatError, never a half-built engine.
"""
import hashlib
import json
import struct

import numpy as np

from .errors import PlanFormatError
from .layers.base import Layer
from .types import DataType, LayerType

MAGIC = b"CUPYRT\x00P"
PLAN_VERSION = 2            # 2: MatrixMultiply carries a fused epilogue (alpha, bias, activation, residual)
_HEAD = struct.Struct("<8sIQQ32s")
_ALIGN = 64
_DTYPES = {d.value for d in DataType}


class ArrayTable:
    """Collects arrays into one blob while encoding; serves them back when decoding."""

    def __init__(self, blob=None):
        self.parts, self.size = [], 0
        self.blob = blob

    def put(self, a):
        a = np.ascontiguousarray(a)
        pad = -self.size % _ALIGN
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad
        ref = {"offset": self.size, "dtype": a.dtype.name, "shape": list(a.shape)}
        data = a.tobytes()
        self.parts.append(data)
        self.size += len(data)
        return ref

    def get(self, ref):
        try:
            dtype, shape, offset = ref["dtype"], tuple(int(d) for d in ref["shape"]), int(ref["offset"])
        except (KeyError, TypeError, ValueError):
            raise PlanFormatError(f"malformed array reference {ref!r} in plan") from None
        if dtype not in _DTYPES:
            raise PlanFormatError(f"array of dtype {dtype!r} in plan; valid: {sorted(_DTYPES)}")
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * np.dtype(dtype).itemsize
        if offset < 0 or offset + nbytes > len(self.blob):
            raise PlanFormatError(f"array reference {ref!r} points outside the weight blob "
                                  f"({len(self.blob)} bytes)")
        # a copy, so the engine owns its weights and the plan bytes can be dropped
        return np.frombuffer(self.blob, dtype=dtype, count=count, offset=offset).reshape(shape).copy()

    def getbytes(self):
        return b"".join(self.parts)


# ----------------------------------------------------------------------------
# network <-> JSON

def encode_network(network, arrays):
    layers = []
    for layer in network._layers:
        attrs = {k: a.encode(getattr(layer, k), arrays)
                 for k, a in type(layer).declared_attrs().items()}
        layers.append({
            "type": layer.layer_type.name,
            "name": layer.name,
            "inputs": [None if t is None else t.name for t in layer._inputs],
            "outputs": [t.name for t in layer._outputs],
            "attrs": attrs,
            "precision": None if layer._precision is None else layer._precision.name,
            "output_types": {str(i): d.name for i, d in layer._output_types.items()},
            "metadata": layer.metadata,
        })
    ranges = {t.name: list(t.dynamic_range) for t in _all_tensors(network)
              if t.dynamic_range is not None}
    return {
        "name": network.name,
        "inputs": [{"name": t.name, "dtype": t.dtype.name, "shape": list(t._declared_shape)}
                   for t in network._inputs],
        "outputs": [t.name for t in network._outputs],
        "layers": layers,
        "dynamic_ranges": ranges,
    }


def _all_tensors(network):
    yield from network._inputs
    for layer in network._layers:
        yield from layer._outputs


def decode_network(doc, arrays):
    from .network import Network
    try:
        net = Network()
        net.name = doc.get("name", "")
        for spec in doc["inputs"]:
            net.add_input(spec["name"], DataType[spec["dtype"]], tuple(spec["shape"]))
        for spec in doc["layers"]:
            cls = Layer.LAYER_CLASSES.get(LayerType[spec["type"]])
            if cls is None:
                raise PlanFormatError(f"plan names layer type {spec['type']!r}, which this "
                                      "version of cupyrt does not implement")
            layer = cls.__new__(cls)
            Layer.__init__(layer, net, [None if n is None else net._tensors[n]
                                        for n in spec["inputs"]])
            layer._network = None
            for key, attr in cls.declared_attrs().items():
                if key in spec["attrs"]:
                    setattr(layer, key, attr.decode(spec["attrs"][key], arrays))
            if spec.get("precision"):
                layer._precision = DataType[spec["precision"]]
            layer._output_types = {int(i): DataType[d] for i, d in spec["output_types"].items()}
            layer.metadata = spec.get("metadata", "")
            layer.name = spec["name"]
            net._add(layer)
            for t, name in zip(layer._outputs, spec["outputs"]):
                net._rename_tensor(t, name)
        for name in doc["outputs"]:
            net.mark_output(net._tensors[name])
        for name, rng in doc.get("dynamic_ranges", {}).items():
            net._tensors[name].dynamic_range = tuple(rng)
    except PlanFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PlanFormatError(f"plan does not describe a valid network: {type(e).__name__}: {e}") from e
    return net


# ----------------------------------------------------------------------------
# bytes

def dumps(doc, arrays):
    header = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    blob = arrays.getbytes()
    digest = hashlib.sha256(header + blob).digest()
    return _HEAD.pack(MAGIC, PLAN_VERSION, len(header), len(blob), digest) + header + blob


def loads(data):
    """bytes -> (JSON document, ArrayTable). Verifies magic, version, length, checksum."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PlanFormatError(f"a plan is bytes; got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEAD.size:
        raise PlanFormatError(f"plan is truncated: {len(data)} bytes, shorter than the "
                              f"{_HEAD.size}-byte header")
    magic, version, jlen, blen, digest = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise PlanFormatError(f"not a cupyrt plan: starts with {magic!r}, expected {MAGIC!r}")
    if version != PLAN_VERSION:
        raise PlanFormatError(f"plan format version {version}; this cupyrt reads version "
                              f"{PLAN_VERSION}: rebuild the engine with this version")
    body = data[_HEAD.size:]
    if len(body) != jlen + blen:
        raise PlanFormatError(f"plan is truncated or padded: body is {len(body)} bytes, "
                              f"header says {jlen + blen}")
    if hashlib.sha256(body).digest() != digest:
        raise PlanFormatError("plan checksum mismatch: the bytes were corrupted after writing")
    try:
        doc = json.loads(body[:jlen].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PlanFormatError(f"plan header is not valid JSON: {e}") from e
    return doc, ArrayTable(body[jlen:])


def serialize_network(network):
    """A network without building it: the plan format with no engine section
    (what an engine node in a GraphDef stores for dynamic shapes)."""
    network._ensure_inferred()
    arrays = ArrayTable()
    return dumps({"network": encode_network(network, arrays)}, arrays)


def deserialize_network(data):
    doc, arrays = loads(data)
    if "network" not in doc:
        raise PlanFormatError("the bytes hold no network section")
    return decode_network(doc["network"], arrays)
