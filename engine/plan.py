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
import logging
import struct

import numpy as np

from .errors import PlanFormatError
from .layers.base import Layer
from .network import Network
from .types import DataType, LayerType

MAGIC = b"CUPYRT\x00P"
PLAN_VERSION = 2            # 2: MatrixMultiply carries a fused epilogue (alpha, bias, activation, residual)
log = logging.getLogger(__name__)
_HEAD = struct.Struct("<8sIQQ32s")
_ALIGN = 64
_DTYPES = {d.value for d in DataType}
_STRIPPED = "stripped_weights"     # JSON key of a plan saved without its weight blob


class ArrayTable:
    """Collects arrays into one blob while encoding; serves them back when decoding."""

    def __init__(self, blob=None, stripped=False):
        self.parts, self.size = [], 0
        self.blob = blob
        self.stripped = stripped         # a plan saved without weights (strip_weights)

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
        if self.stripped:
            raise PlanFormatError("this plan was saved without its weights (strip_weights): "
                                  "rebuild them from their source and attach them with "
                                  "engine.plan.attach_weights before deserializing")
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
    return doc, ArrayTable(body[jlen:], stripped=bool(doc.get(_STRIPPED)))


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


# ----------------------------------------------------------------------------
# plans without weights
#
# A TensorFlow engine node already stores its segment's constants (the
# TensorFlow fallback); storing the engine's weights too doubles a model. So it
# stores the plan without its blob, and at load time the weights are rebuilt
# from the segment (converting it again and running the builder's passes, no
# tactic timing) and attached here:
#
#     full plan --strip_weights--> JSON header + {"stripped_weights": sha256, bytes}
#     stripped + rebuilt plan --attach_weights--> stripped's header (tactics,
#         precisions, scales) + rebuilt's blob, once both describe the same network

def strip_weights(data):
    """``data`` (a plan or a serialized network) without its weight blob: the same
    format, whose header records what the blob was (size and SHA-256)."""
    doc, arrays = loads(data)
    if doc.get(_STRIPPED):
        return bytes(data)
    doc = dict(doc, **{_STRIPPED: {"bytes": len(arrays.blob),
                                   "sha256": hashlib.sha256(arrays.blob).hexdigest()}})
    return dumps(doc, ArrayTable())


def is_stripped(data):
    """True for a plan or network saved by ``strip_weights``."""
    return bool(loads(data)[0].get(_STRIPPED))


def attach_weights(stripped, rebuilt):
    """A full plan: the header of ``stripped`` (its builder decisions) with the
    weight blob of ``rebuilt``, a plan or network built again from the same
    source. Raises PlanFormatError when the two do not describe the same
    network (same layers, attributes and array shapes); weights that differ
    only in their bits (another CPU may round a folded constant differently)
    are taken, with a log line."""
    doc, _ = loads(stripped)
    record = doc.get(_STRIPPED)
    if not record:
        raise PlanFormatError("attach_weights: the first plan has its weights already "
                              "(expected one made by strip_weights)")
    donor, arrays = loads(rebuilt)
    if donor.get(_STRIPPED):
        raise PlanFormatError("attach_weights: the rebuilt plan has no weights either")
    if donor.get("network") != doc.get("network"):
        raise PlanFormatError(
            "attach_weights: the rebuilt network differs from the stored one ("
            + _first_difference(doc.get("network") or {}, donor.get("network") or {})
            + "): the weights cannot be attached")
    if hashlib.sha256(arrays.blob).hexdigest() != record.get("sha256"):
        log.info(
            "attach_weights: rebuilt weights (%d bytes) differ bitwise from the ones the plan "
            "was built with (%d bytes); same network, taking them", len(arrays.blob),
            record.get("bytes", -1))
    doc = {k: v for k, v in doc.items() if k != _STRIPPED}
    table = ArrayTable()
    table.parts, table.size = [arrays.blob], len(arrays.blob)
    return dumps(doc, table)


def _first_difference(a, b):
    """Where two encoded networks first differ, in words (for the error message)."""
    if a.get("inputs") != b.get("inputs"):
        return f"inputs {a.get('inputs')} vs {b.get('inputs')}"
    la, lb = a.get("layers", []), b.get("layers", [])
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return (f"layer {i}: {x.get('type')} {x.get('name')!r} vs "
                    f"{y.get('type')} {y.get('name')!r}")
    if len(la) != len(lb):
        return f"{len(la)} layers vs {len(lb)}"
    return "outputs or dynamic ranges"
