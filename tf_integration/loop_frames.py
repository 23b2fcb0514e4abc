r"""Lowered v1 loop frames raised to functional While nodes, and the GraphDef
plumbing the loop rewrites share (functions made from nodes, node replacement).

A lowered loop (convert_variables_to_constants_v2's default) is a frame:

    init --Enter--> Merge --Switch--(true:1)--> body ... --NextIteration--> Merge
                      \        \--(false:0)--> Exit --> users
                       cond ... --> LoopCond --> (every Switch's predicate)

``raise_frame`` turns one back into ``While(inits)`` with a body and a cond
function, so rnn_loops.py reads both forms of a Keras RNN the same way.
"""
import re

import tensorflow as tf
from tensorflow.python.framework.graph_to_function_def import graph_to_function_def

from .graph_utils import canonical, functions_called, get_attr, node_of, parse_input
from .rnn_cells import RNNLoopRefused

WHILE_OPS = ("While", "StatelessWhile")
_CF_OPS = frozenset({"Enter", "Merge", "Switch", "NextIteration", "Exit", "LoopCond"})


def frames(index):
    """``({frame: member names}, {frame: a nested frame})`` of the lowered loops.

    A node is in its inputs' frame; Enter opens its ``frame_name``, Exit returns
    to the parent. Members: the frame's nodes and its Exits.
    """
    frame, parent = {}, {}
    changed = True
    while changed:
        changed = False
        for name, node in index.nodes.items():
            if name in frame:
                continue
            srcs = [node_of(i) for i in node.input]
            known = [frame[s] for s in srcs if s in frame]
            if node.op == "Enter":
                if node_of(node.input[0]) not in frame:
                    continue
                f = get_attr(node, "frame_name")
                parent[f] = frame[node_of(node.input[0])]
            elif node.op == "Exit":
                if not known:
                    continue
                f = parent.get(known[0], "")
            elif srcs and not known:
                continue
            else:
                f = known[0] if known else ""
            frame[name] = f
            changed = True
    members = {}
    for name, node in index.nodes.items():
        f = frame.get(name, "")
        if node.op == "Exit":
            f = frame.get(node_of(node.input[0]), "")
        if f:
            members.setdefault(f, []).append(name)
    nested = {}
    for child, par in parent.items():
        while par:
            nested.setdefault(par, child)
            par = parent.get(par, "")
    return members, nested


def raise_frame(index, fname, members):
    """The graph with frame ``fname`` replaced by a While node (body and cond
    functions added to its library): ``(graph_def, while node name)``."""
    nodes = index.nodes
    member_set = set(members)
    # lowering adds NoOps that only order the loop (LoopControlInputs before the
    # Enters, LoopExecuted after the Exits): they go with it
    member_set |= {n for n, node in nodes.items() if node.op == "NoOp" and n not in member_set
                   and ((index.consumers.get(n) and all(c in member_set for c, _ in
                                                         index.consumers[n]))
                        or (node.input and all(node_of(i) in member_set for i in node.input)))}
    cons = {n: [c for c, p in index.consumers.get(n, ()) if p >= 0] for n in members}
    loopconds = [n for n in members if nodes[n].op == "LoopCond"]
    if len(loopconds) != 1:
        raise RNNLoopRefused(f"frame has {len(loopconds)} LoopCond nodes; expected one")
    body_refs, cond_refs, inits, results, exits = {}, {}, [], [], []
    for e in (n for n in members if nodes[n].op == "Enter"):
        k = len(inits)
        inits.append(canonical(index.data_inputs(nodes[e])[0]))
        if get_attr(nodes[e], "is_constant", False):
            body_refs[f"{e}:0"] = cond_refs[f"{e}:0"] = k
            results.append(None)
            exits.append(None)
            continue
        merge = _only(nodes, cons[e], "Merge", e)
        nxt = [node_of(i) for i in nodes[merge].input if node_of(i) != e][0]
        switch = _only(nodes, cons[merge], "Switch", merge)
        out = [c for c in cons[switch] if nodes[c].op == "Exit"]
        body_refs[f"{switch}:1"], cond_refs[f"{merge}:0"] = k, k
        results.append(canonical(index.data_inputs(nodes[nxt])[0]))
        exits.append(out[0] if out else None)
    inner = [n for n in members if nodes[n].op not in _CF_OPS]
    cond_nodes, todo = set(), [node_of(nodes[loopconds[0]].input[0])]
    while todo:
        n = todo.pop()
        if n in cond_nodes or n not in member_set or nodes[n].op in _CF_OPS:
            continue
        cond_nodes.add(n)
        todo.extend(node_of(i) for i in nodes[n].input)
    body_nodes = [n for n in inner if n not in cond_nodes]
    dtypes = [index.dtype(t) for t in inits]
    base = sanitize(fname)
    lib = index.graph_def.library
    names = {f.signature.name for f in lib.function}
    body = make_function(unique_name(names, base + "_body"), nodes, body_nodes, dtypes, body_refs,
                         [r if r is not None else k for k, r in enumerate(results)], lib)
    cond = make_function(unique_name(names | {body.signature.name}, base + "_cond"), nodes,
                         sorted(cond_nodes, key=index.order.get), dtypes, cond_refs,
                         [canonical(nodes[loopconds[0]].input[0])], lib)
    while_name = unique_name(set(nodes), fname.rstrip("/"))
    wnode = tf.compat.v1.NodeDef(name=while_name, op="While", input=inits)
    wnode.attr["T"].list.type.extend(d.as_datatype_enum for d in dtypes)
    wnode.attr["body"].func.name = body.signature.name
    wnode.attr["cond"].func.name = cond.signature.name
    # what TF inferred for each Exit: the While's users keep their static shapes
    wnode.attr["output_shapes"].list.shape.extend(
        (index.shape(f"{x}:0") if x else tf.TensorShape(None)).as_proto() for x in exits)
    enter = nodes[next(n for n in members if nodes[n].op == "Enter")]
    wnode.attr["parallel_iterations"].i = get_attr(enter, "parallel_iterations", 10)
    rename = {f"{x}:0": f"{while_name}:{k}" for k, x in enumerate(exits) if x}
    out = replace_nodes(index.graph_def, member_set, wnode, rename)
    out.library.function.extend([body, cond])
    return out, while_name


def _only(nodes, names, op, of):
    hits = [n for n in names if nodes[n].op == op]
    if len(hits) != 1:
        raise RNNLoopRefused(f"{of} feeds {len(hits)} {op} nodes; a lowered While has one")
    return hits[0]


def make_function(name, nodes, members, arg_dtypes, refs, outputs, library, shapes=None):
    """A FunctionDef of the nodes ``members``: tensor names in ``refs`` read
    argument ``refs[t]``; ``outputs`` are tensor names or argument indices;
    ``shapes`` (one per output, or None) are asserted with EnsureShape, so shape
    inference through the call knows them (it loses a While's output_shapes)."""
    gd = tf.compat.v1.GraphDef()
    gd.library.CopyFrom(library)
    for k, dt in enumerate(arg_dtypes):
        ph = gd.node.add(name=f"cupyrt_arg_{k}", op="Placeholder")
        ph.attr["dtype"].type = tf.dtypes.as_dtype(dt).as_datatype_enum
    keep = set(members)

    def remap(t):
        t = canonical(t)
        return f"cupyrt_arg_{refs[t]}:0" if t in refs else t

    for n in members:
        node = gd.node.add()
        node.CopyFrom(nodes[n])
        node.device = ""
        del node.input[:]
        for inp in nodes[n].input:
            src, _, ctrl = parse_input(inp)
            if not ctrl:
                node.input.append(remap(inp))
            elif src in keep:
                node.input.append(inp)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(gd, name="")
    args = [graph.get_tensor_by_name(f"cupyrt_arg_{k}:0") for k in range(len(arg_dtypes))]
    outs = [args[o] if isinstance(o, int) else graph.get_tensor_by_name(remap(o))
            for o in outputs]
    ops = [graph.get_operation_by_name(n) for n in members]
    with graph.as_default():
        for j, shape in enumerate(shapes or ()):
            if shape is not None:
                outs[j] = tf.ensure_shape(outs[j], shape, name=f"cupyrt_out_{j}_shape")
                ops.append(outs[j].op)
    fdef = graph_to_function_def(graph, ops, args, outs,
                                 out_names=[f"out_{j}" for j in range(len(outs))])
    fdef.signature.name = name
    return fdef


def drop_unused_functions(graph_def):
    """``graph_def`` without the library functions no node calls (directly or
    through other functions): a region an engine absorbed lives on only in the
    engine's segment, so its weights are not stored twice."""
    needed = functions_called(graph_def.library, graph_def.node)
    if len(needed) == len(graph_def.library.function):
        return graph_def
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    del out.library.function[:]
    del out.library.gradient[:]
    out.library.function.extend(f for f in graph_def.library.function
                                if f.signature.name in needed)
    out.library.gradient.extend(g for g in graph_def.library.gradient
                                if g.function_name in needed)
    return out


def replace_nodes(graph_def, removed, new_node, rename):
    """Copy of ``graph_def`` without ``removed``, with ``new_node`` in the place
    of the first removed node; inputs renamed by ``rename`` (tensor -> tensor);
    control edges to removed nodes go to ``new_node``."""
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    placed = False
    for node in graph_def.node:
        if node.name in removed:
            if not placed:
                out.node.add().CopyFrom(new_node)
                placed = True
            continue
        new = out.node.add()
        new.CopyFrom(node)
        del new.input[:]
        seen = set()
        for inp in node.input:
            src, port, ctrl = parse_input(inp)
            if ctrl:
                inp = f"^{new_node.name}" if src in removed else inp
                if inp in seen:
                    continue
                seen.add(inp)
            else:
                inp = rename.get(canonical(inp), inp)
            new.input.append(inp)
    return out


def sanitize(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "loop"


def unique_name(taken, base):
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name
