"""The one converter registry: TF op type -> (converter, validator).

A converter is ``fn(ctx, node) -> [engine tensors]`` (one per TF output of the
node). A validator is ``fn(node, graph) -> None | Reason`` and decides, before
any engine exists, whether the segmenter may hand the node to the engine; it
sees the ``GraphIndex`` so it can ask for static shapes and constant inputs.

The registry is the single list of supported ops: the segmenter asks it for
candidates and ``supported_ops_markdown()`` turns it into the docs table.
"""
import collections
import logging

import tensorflow as tf

from .errors import RegistryError
from .graph_utils import node_dtype
from .tftrt_ops import EXCLUDED, TFTRT_OPS

logger = logging.getLogger(__name__)


class Reason:
    """Why a node stays in TensorFlow. ``kind`` is one of ``KINDS``."""

    NOT_SUPPORTED = "op not supported"
    ATTRIBUTE = "unsupported attribute value or dtype"
    UNKNOWN_RANK = "unknown rank"
    DENYLISTED = "denylisted"
    BELOW_MINIMUM = "segment below minimum size"
    CYCLE = "would create a cycle"
    NOT_COMPUTE = "not a compute node"
    CONVERSION_FAILED = "conversion failed"
    CONTROL_FLOW = "control flow"      # loops and conds stay in TensorFlow (segmenter.py)
    KINDS = (NOT_SUPPORTED, ATTRIBUTE, UNKNOWN_RANK, DENYLISTED, BELOW_MINIMUM, CYCLE,
             NOT_COMPUTE, CONVERSION_FAILED, CONTROL_FLOW)

    def __init__(self, kind, detail=""):
        if kind not in self.KINDS:
            raise RegistryError(f"reason kind {kind!r} is unknown; expected one of "
                                + ", ".join(repr(k) for k in self.KINDS))
        self.kind, self.detail = kind, detail

    def __str__(self):
        return f"{self.kind}: {self.detail}" if self.detail else self.kind

    def __repr__(self):
        return f"Reason({self.kind!r}, {self.detail!r})"

    def __eq__(self, other):
        return isinstance(other, Reason) and (self.kind, self.detail) == (other.kind, other.detail)

    def __hash__(self):
        return hash((self.kind, self.detail))

    def to_json(self):
        return {"kind": self.kind, "detail": self.detail}


Entry = collections.namedtuple("Entry", "op fn validator family dtypes")

_REGISTRY = {}

FLOAT_TYPES = (tf.float32, tf.float16)
# dtypes the engine can hold (engine.DataType); TF int64 shape math is cast by converters
ENGINE_TYPES = (tf.float32, tf.float16, tf.int32, tf.int8, tf.bool)


def converter(*ops, validator=None, dtypes=FLOAT_TYPES, family=None):
    """Register ``fn(ctx, node)`` as the converter of every TF op in ``ops``.

    ``dtypes``: the element types (``T`` attribute) the converter handles;
    None to skip the check (the validator then owns it). Registering an op
    that already has a converter raises ``RegistryError``.
    """
    if not ops:
        raise RegistryError("@converter() needs at least one TF op type; got none")

    def register(fn):
        fam = family or fn.__module__.rpartition(".")[2]
        for op in ops:
            if op in _REGISTRY:
                old = _REGISTRY[op].fn
                raise RegistryError(f"op {op!r} already has a converter "
                                    f"({old.__module__}.{old.__qualname__}); "
                                    f"cannot register {fn.__module__}.{fn.__qualname__}")
            _REGISTRY[op] = Entry(op, fn, validator, fam, dtypes)
        return fn

    return register


def unregister(op):
    """Remove a converter (tests register throw-away ones)."""
    if op not in _REGISTRY:
        raise RegistryError(f"op {op!r} has no converter to unregister; registered: "
                            f"{len(_REGISTRY)} ops")
    del _REGISTRY[op]


def lookup(op):
    _ensure_loaded()
    if op not in _REGISTRY:
        raise RegistryError(f"no converter for TF op {op!r}; supported ops: "
                            + ", ".join(sorted(_REGISTRY)))
    return _REGISTRY[op]


def supported_ops():
    _ensure_loaded()
    return sorted(_REGISTRY)


def is_registered(op):
    _ensure_loaded()
    return op in _REGISTRY


def validate(node, graph):
    """None when the node can be converted, else the ``Reason`` it cannot."""
    _ensure_loaded()
    entry = _REGISTRY.get(node.op)
    if entry is None:
        return Reason(Reason.NOT_SUPPORTED, f"no converter for op {node.op}")
    if entry.dtypes is not None:
        dt = node_dtype(node)
        if dt is not None and dt not in entry.dtypes:
            return Reason(Reason.ATTRIBUTE, f"dtype {dt.name} not supported by {node.op}; "
                          "supported: " + ", ".join(d.name for d in entry.dtypes))
    # every data input (non-constant) must have a known rank: engine tensors do
    if node.op != "Const":
        for inp in node.input:
            if inp.startswith("^") or graph.is_const(inp):
                continue
            if graph.shape(inp).rank is None:
                return Reason(Reason.UNKNOWN_RANK, f"input {inp} has unknown rank")
    if entry.validator is not None:
        out = entry.validator(node, graph)
        if out is not None and not isinstance(out, Reason):
            out = Reason(Reason.ATTRIBUTE, str(out))
        return out
    return None


def supported_ops_markdown():
    """The docs table, generated from the registry: every op cupyrt converts and
    every op TF-TRT converts (tftrt_ops.py), side by side, by family."""
    _ensure_loaded()

    def yes(flag):
        return "yes" if flag else "no"

    rows = []
    for op, entry in _REGISTRY.items():
        dts = "any" if entry.dtypes is None else ", ".join(d.name for d in entry.dtypes)
        doc = (entry.validator.__doc__ or "").strip().splitlines()
        rows.append((entry.family, op, dts, doc[0] if doc else "", yes(op in TFTRT_OPS), "yes"))
    for op in TFTRT_OPS:
        if op not in _REGISTRY:
            why = EXCLUDED.get(op, "not converted yet")
            rows.append(("-", op, "-", f"excluded: {why}", "yes", "no"))
    lines = ["| TF op | family | dtypes | constraints | in TF-TRT | in cupyrt |",
             "|---|---|---|---|---|---|"]
    for fam, op, dts, doc, in_tftrt, ours in sorted(rows, key=lambda r: (r[0] == "-", r[:2])):
        lines.append(f"| {op} | {fam} | {dts} | {doc} | {in_tftrt} | {ours} |")
    return "\n".join(lines) + "\n"


_loaded = False


def _ensure_loaded():
    """Import the converter modules once (they register themselves on import)."""
    global _loaded
    if _loaded:
        return
    _loaded = True     # set first: a failed import must not re-register half a family
    try:
        # the one import circle tf_integration keeps: every converter module imports
        # this module's @converter, so the families are imported here, on first use
        import tf_integration.converters  # noqa: F401  (registers on import)
    except ImportError as exc:
        logger.warning("op converters unavailable (engine not importable?): %s", exc)
