"""An engine node replaced by its segment's own TensorFlow ops.

Where engines do not run (no CUDA device and no backend asked for), the
fastest thing an engine node can do is to be the TensorFlow ops it replaced:
no Python call, no copy, and TensorFlow's own graph optimisations across it.
The segment GraphDef (segment_to_engine.py) is spliced back in:

    x --> CupyrtEngine_0 (engine node) --> y
becomes
    x --> CupyrtEngine_0/<member nodes> --> CupyrtEngine_0 (IdentityN) --> y

The IdentityN keeps the engine node's name and output ports, so every
consumer (``CupyrtEngine_0:1``, ``^CupyrtEngine_0``) and every fetch by that
name works unchanged; the engine node's control inputs move onto it.
"""
import tensorflow as tf

from .graph_utils import parse_input, tensor_name
from .segment_to_engine import segment_io


def inline_engine_node(node):
    """The NodeDefs that replace engine node ``node`` (see module docstring)."""
    segment = tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s)
    ins, outs = segment_io(segment)
    data = [i for i in node.input if not i.startswith("^")]
    controls = [i for i in node.input if i.startswith("^")]
    fed = dict(zip(ins, data))              # segment placeholder -> the tensor it stands for
    prefix = node.name + "/"

    def rename(inp):
        src, port, ctrl = parse_input(inp)
        if src in fed:
            return "^" + parse_input(fed[src])[0] if ctrl else fed[src]
        return "^" + prefix + src if ctrl else tensor_name(prefix + src, port)

    by_name = {n.name: n for n in segment.node}
    result = []
    for member in segment.node:
        if member.name in fed or member.name in outs:
            continue
        new = tf.compat.v1.NodeDef()
        new.CopyFrom(member)
        new.name = prefix + member.name
        new.device = node.device
        if "_class" in new.attr:      # colocation with nodes named before the renaming
            del new.attr["_class"]
        del new.input[:]
        new.input.extend(rename(i) for i in member.input)
        result.append(new)
    joined = tf.compat.v1.NodeDef(name=node.name, op="IdentityN", device=node.device)
    joined.input.extend(rename(by_name[o].input[0]) for o in outs)
    joined.input.extend(controls)
    joined.attr["T"].list.type.extend(node.attr["Tout"].list.type)
    result.append(joined)
    return result
