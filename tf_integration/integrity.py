"""Checksums over every payload an engine node carries, checked before anything runs.

An engine node (engine_node.py) carries bytes that run: its TensorFlow segment,
its network and plan (stored without weights, engine_storage.py), its INT8
calibration table and, in SavedModels, the plans build() made ahead per input
shape. The plan format has its own checksum, but the segment graph did not: a
flipped byte inside it ran unchecked as the "fallback" and answered wrong,
silently. So at conversion each payload attribute gets a SHA-256, kept in

    payload_digests   list of b"<attribute>:<sha256 hex>", one per payload attribute

and every path that turns a node into something runnable (import_graph_def,
EngineRunner, load_saved_model, the SavedModel dispatcher) calls ``verify``
first: a mismatch raises PayloadIntegrityError naming the node and the
attribute. Nodes written before digests existed load with one warning per
process (they cannot be checked, and refusing them would strand old models).
A digest catches corruption and careless edits, not an attacker who rewrites
the digest too (that needs a signature, which a .pb has nowhere to keep).
"""
import hashlib
import logging
import warnings

from .errors import TFIntegrationError

logger = logging.getLogger(__name__)

DIGESTS_ATTR = "payload_digests"
# attributes whose bytes run or decide what runs (list attributes hash each element)
PAYLOAD_ATTRS = ("segment_graph", "serialized_network", "serialized_plan", "calibration_table",
                 "prebuilt_input_shapes", "prebuilt_plans")
_WARNED = []          # nodes without digests: said once per process


class PayloadIntegrityError(TFIntegrationError, ValueError):
    """An engine node's payload does not match the digest recorded at conversion."""

    def __init__(self, node, attribute, found, expected):
        self.node, self.attribute, self.found, self.expected = node, attribute, found, expected
        super().__init__(
            f"engine node {node!r}: attribute {attribute!r} {found}; expected {expected} "
            "(recorded at conversion). The model was changed or corrupted after it was "
            "converted; nothing of it was run. Convert the source model again")


class IntegrityWarning(UserWarning):
    """An engine node carries no payload digests (written before they existed)."""


def _digest(value):
    """SHA-256 hex of one attribute value (bytes, or a list of bytes: each
    element length-prefixed, so moving bytes between elements changes the digest)."""
    h = hashlib.sha256()
    if value.WhichOneof("value") == "list":
        for item in value.list.s:
            h.update(len(item).to_bytes(8, "little"))
            h.update(item)
    else:
        h.update(value.s)
    return h.hexdigest()


def digests(node):
    """{payload attribute: sha256 hex} of the payload attributes ``node`` has."""
    return {a: _digest(node.attr[a]) for a in PAYLOAD_ATTRS if a in node.attr}


def seal(node):
    """Record the digests of the node's payloads (call after its last payload change)."""
    node.attr[DIGESTS_ATTR].list.s[:] = [f"{a}:{d}".encode() for a, d in digests(node).items()]
    return node


def recorded(node):
    """{attribute: sha256 hex} recorded in the node, or None (a node without digests)."""
    if DIGESTS_ATTR not in node.attr:
        return None
    out = {}
    for item in node.attr[DIGESTS_ATTR].list.s:
        attr, sep, hexdigest = item.decode("ascii", "replace").partition(":")
        if not sep or len(hexdigest) != 64 or attr not in PAYLOAD_ATTRS:
            raise PayloadIntegrityError(node.name, DIGESTS_ATTR, f"holds the entry {item[:80]!r}",
                                        "'<payload attribute>:<64 hex digits>' with the "
                                        f"attribute one of {', '.join(PAYLOAD_ATTRS)}")
        out[attr] = hexdigest
    return out


def verify(node):
    """Raise PayloadIntegrityError unless every payload of ``node`` matches its digest
    (and every digested payload is there); a node without digests passes with a warning
    (once per process)."""
    want = recorded(node)
    if want is None:
        if not _WARNED:
            _WARNED.append(node.name)
            msg = (f"engine node {node.name!r} carries no payload digests (converted before "
                   "cupyrt recorded them): its segment and engine bytes cannot be checked; "
                   "convert the model again to have them checked (said once per process)")
            logger.warning(msg)
            warnings.warn(msg, IntegrityWarning, stacklevel=3)
        return False
    have = digests(node)
    for attr in PAYLOAD_ATTRS:
        if attr in want and attr not in have:
            raise PayloadIntegrityError(node.name, attr, "is missing",
                                        f"the attribute with sha256 {want[attr][:16]}...")
        if attr in have and attr not in want:
            raise PayloadIntegrityError(node.name, attr, "is present but has no digest",
                                        f"only the digested attributes {sorted(want)}")
        if attr in have and have[attr] != want[attr]:
            raise PayloadIntegrityError(node.name, attr, f"has sha256 {have[attr][:16]}...",
                                        f"sha256 {want[attr][:16]}...")
    return True
