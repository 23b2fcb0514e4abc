"""Recognised Keras LSTM/GRU regions -> the engine's RNNv2 layer.

rnn_loops.rewrite_rnn_loops collapses each recognised loop region into a
PartitionedCall tagged ``_cupyrt_rnn`` (JSON) of a function holding the
region; the engine weights are read back out of that function's constants
(rnn_loops.region_params), the one place a converted graph keeps them. Only
tagged calls convert; any other function call stays in TensorFlow. The call's
one input is the sequence, laid out as ``input_perm`` says (its time, batch and
feature axes); its outputs are, per the ``outputs`` roles:

    sequence   the stacked step outputs (T, N, H) -- or (1, N, H) when Keras keeps
               only the last step -- then transposed by ``perm``, time reversed
               when ``reverse``: the engine's y (N, T, H) in that layout
    h, c       the final states (N, H): the engine's h_T / c_T without the layer axis

A fused Keras Bidirectional (``halves``: forward and backward region functions)
is one bidirectional layer with one output, the concat: y (N, T, 2H).
"""
import json

import numpy as np

import engine as rt

from ..context import Value
from ..errors import ConversionError
from ..graph_utils import get_attr
from ..registry import Reason, converter
from ..rnn_cells import RNNLoopRefused
from ..rnn_loops import CALL_OPS, RNN_ATTR, region_params

_OPS = {"LSTM": rt.RNNOperation.LSTM, "GRU": rt.RNNOperation.GRU}
_GATES = {"LSTM": ("INPUT", "FORGET", "CELL", "OUTPUT"), "GRU": ("UPDATE", "RESET", "HIDDEN")}
MAX_SEQ_LENGTH = 1 << 30     # T is dynamic: the layer serves any length the input has


def spec_of(node):
    """The region's description, or None for an untagged call."""
    if RNN_ATTR not in node.attr:
        return None
    return json.loads(get_attr(node, RNN_ATTR))


def _validate_rnn_call(node, graph):
    """only calls tagged _cupyrt_rnn (recognised Keras LSTM/GRU regions)"""
    spec = spec_of(node)
    if spec is None:
        return Reason(Reason.NOT_SUPPORTED, f"{node.op} of {get_attr(node, 'f', '?')}: a function "
                      "call that is not a recognised Keras LSTM/GRU region")
    if spec.get("kind") not in _OPS:
        return Reason(Reason.ATTRIBUTE, f"RNN kind {spec.get('kind')!r}; supported: "
                      + ", ".join(_OPS))
    return None


@converter(*CALL_OPS, validator=_validate_rnn_call, dtypes=None)
def convert_rnn_region(ctx, node):
    spec = spec_of(node)
    kind, units = spec["kind"], int(spec["units"])
    # a fused Keras Bidirectional names its two halves' functions: sub-layer 0 is
    # the forward one, 1 the backward one (TensorRT's 2*layer + dir)
    halves = spec.get("halves") or [node.attr["f"].func.name]
    try:
        params = [region_params(ctx.graph.graph_def.library, f) for f in halves]
    except RNNLoopRefused as exc:
        raise ConversionError(f"{node.op} {node.name!r} tagged as a Keras {kind}: {exc}") from exc
    t_ax, n_ax, e_ax = spec["input_perm"]
    x = ctx.tensor(ctx.input(node, 0), (n_ax, t_ax, e_ax))       # engine (N, T, E)
    layer = ctx.network.add_rnn_v2(x, 1, units, MAX_SEQ_LENGTH, _OPS[kind])
    ctx.name(layer, kind.lower())
    if len(halves) == 2:
        layer.direction = rt.RNNDirection.BIDIRECTION
    for index, p in enumerate(params):
        w, r, wb, rb = (np.asarray(p[k], np.float32) for k in ("W", "R", "Wb", "Rb"))
        for g, gate in enumerate(_GATES[kind]):
            rows = slice(g * units, (g + 1) * units)
            gate = rt.RNNGateType[gate]
            layer.set_weights_for_gate(index, gate, True, w[rows])
            layer.set_weights_for_gate(index, gate, False, r[rows])
            layer.set_bias_for_gate(index, gate, True, wb[rows])
            layer.set_bias_for_gate(index, gate, False, rb[rows])
    if len(halves) == 2:        # each direction keeps time order itself: no flips
        return [_sequence(layer.get_output(0), spec["outputs"][0])]
    layer.reverse_input = bool(spec["reverse_input"])
    layer.reverse_output = any(o["role"] == "sequence" and o["reverse"] for o in spec["outputs"])
    y = layer.get_output(0)
    finals = {"h": layer.get_output(1), "c": layer.get_output(2) if kind == "LSTM" else None}
    out = []
    for role in spec["outputs"]:
        if role["role"] == "sequence":
            out.append(_sequence(finals["h"] if role["last_only"] else y, role))
        else:
            squeeze = ctx.network.add_squeeze(finals[role["role"]], (1,))
            ctx.name(squeeze, f"{role['role']}_T")
            out.append(Value(squeeze.get_output(0)))
    return out


def _sequence(tensor, role):
    # engine (N, T, H) holds stack dims (1, 0, 2); TF dim j is stack dim perm[j]
    perm = role["perm"]
    return Value(tensor, perm=(perm.index(1), perm.index(0), perm.index(2)))
