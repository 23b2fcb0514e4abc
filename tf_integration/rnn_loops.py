"""Keras LSTM/GRU loops -> one tagged node the RNN converter turns into IRNNv2.

A Keras recurrent layer reaches us in one of two forms:

  (a) lowered (convert_variables_to_constants_v2's default): a loop frame of
      Enter -> Merge -> Switch -> body -> NextIteration -> Merge, Switch -> Exit;
  (b) functional: a While/StatelessWhile node whose body and cond live in the
      graph's function library (a SavedModel signature frozen without lowering).

Form (a) is raised to form (b) first (the frame's body and cond become
functions), so one path reads both. Around the loop, Keras builds a region:

    x --Transpose--(ReverseV2)--> TensorListFromTensor --.
    Shape(x) -> batch -> Fill (zero states) -------------+--> While --> TensorListStack
    Shape -> T -> TensorListReserve ---------------------'      |  --> (Transpose, ReverseV2,
                                                              h, c       last-step slice)

``rewrite_rnn_loops`` finds the region by structure (the loop's private
plumbing: shape ops, transposes, list setup, stacks), reads the cell from the
body (rnn_cells.py), runs the region in TensorFlow on random sequences against
the NumPy RNN reference, and only then collapses it into ONE PartitionedCall
of a generated function holding the original region, tagged ``_cupyrt_rnn``
(JSON: kind, units, layout, outputs). TensorFlow runs that call natively (the
engine's TF fallback and any segment left to TF); converters/rnn.py turns it
into add_rnn_v2, reading the weights back out of the function
(``region_params``), so that they are stored once. A loop that is anything else stays as it was, and its reason is
returned for the summary.
"""
import hashlib
import json
import logging
import re

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.function_def_to_graph import function_def_to_graph_def
from tensorflow.python.framework.graph_to_function_def import graph_to_function_def

from .graph_utils import GraphIndex, canonical, get_attr, node_of, parse_input
from .rnn_cells import RNNLoopRefused, analyse_body, reference

logger = logging.getLogger(__name__)

RNN_ATTR = "_cupyrt_rnn"
CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
WHILE_OPS = ("While", "StatelessWhile")
_CF_OPS = frozenset({"Enter", "Merge", "Switch", "NextIteration", "Exit", "LoopCond"})
# the plumbing Keras builds around its loop; a region grows only through these
_PRELUDE_OPS = frozenset({"Const", "Identity", "Snapshot", "Shape", "StridedSlice", "Pack",
                          "Fill", "Transpose", "ReverseV2", "TensorListFromTensor",
                          "TensorListReserve", "Cast", "ZerosLike", "Unpack", "Split",
                          "Squeeze", "Reshape", "ExpandDims"})
_CHECK_STEPS = (2, 7)           # sequence lengths the region is verified at
_CHECK_TOL = 1e-5               # FP32 TF vs NumPy: far below any wrong weight's error


def rewrite_rnn_loops(graph_def, keep=()):
    """Collapse every recognised Keras LSTM/GRU loop into a tagged call.

    Returns ``(graph_def, refused)``: ``refused`` maps the nodes of each loop
    left as it was to the reason (one sentence naming what was found).
    Nodes in ``keep`` are never absorbed.
    """
    if not any(n.op in WHILE_OPS or n.op == "Enter" for n in graph_def.node):
        return graph_def, {}
    keep = {node_of(k) for k in keep}
    refused = {}
    gd = graph_def
    frames, nested = _frames(GraphIndex(gd, infer_shapes=False))
    for fname, members in frames.items():
        try:
            if fname in nested:
                raise RNNLoopRefused(f"it holds the nested loop {nested[fname]}; a Keras "
                                     "LSTM/GRU is one loop")
            _refuse_kept(keep, members)
            work, while_name = raise_frame(GraphIndex(gd), fname, members)
            gd = collapse_loop(work, while_name, keep, origin=f"lowered loop {fname}")
        except RNNLoopRefused as exc:
            logger.info("lowered loop %s stays in TensorFlow: %s", fname, exc)
            refused.update({n: f"loop {fname} is not a Keras LSTM/GRU: {exc}" for n in members})
    for name in [n.name for n in gd.node if n.op in WHILE_OPS]:
        try:
            gd = collapse_loop(gd, name, keep, origin=f"While {name}")
        except RNNLoopRefused as exc:
            logger.info("While %s stays in TensorFlow: %s", name, exc)
            refused[name] = f"While {name} is not a Keras LSTM/GRU: {exc}"
    return gd, refused


# ----------------------------------------------------------------------------
# lowered frames -> functional While

def _frames(index):
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
    base = _sanitize(fname)
    lib = index.graph_def.library
    names = {f.signature.name for f in lib.function}
    body = make_function(_unique(names, base + "_body"), nodes, body_nodes, dtypes, body_refs,
                         [r if r is not None else k for k, r in enumerate(results)], lib)
    cond = make_function(_unique(names | {body.signature.name}, base + "_cond"), nodes,
                         sorted(cond_nodes, key=index.order.get), dtypes, cond_refs,
                         [canonical(nodes[loopconds[0]].input[0])], lib)
    while_name = _unique(set(nodes), fname.rstrip("/"))
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
    out = _replace(index.graph_def, member_set, wnode, rename)
    out.library.function.extend([body, cond])
    return out, while_name


def _refuse_kept(keep, names):
    kept = sorted(set(names) & set(keep))
    if kept:
        raise RNNLoopRefused(f"{kept[0]} is in nodes_denylist (or fetched); the loop stays "
                             "as it is")


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


# ----------------------------------------------------------------------------
# the region around a While

def collapse_loop(graph_def, while_name, keep=(), origin=None):
    """``graph_def`` with the Keras RNN region around ``while_name`` collapsed
    into one tagged call; raises RNNLoopRefused (graph untouched) otherwise."""
    _refuse_kept(keep, [while_name])
    index = GraphIndex(graph_def)
    inits = [canonical(t) for t in index.data_inputs(index.nodes[while_name])]
    cell = _read_cell(index, while_name)
    region = _prelude(index, while_name, keep)
    outputs = _epilogue(index, while_name, cell, region, keep)
    region |= {node_of(i) for n in region for i in index.nodes[n].input
               if index.nodes[node_of(i)].op == "Const"}
    x, in_perm, rev_in = _input_layout(index, region, inits[cell.roles["inputs"]])
    if len({o["reverse"] for _, o in outputs if o["role"] == "sequence"}) > 1:
        raise RNNLoopRefused("the output sequence leaves the region in two time orders")
    members = sorted(region, key=index.order.get)
    names = {f.signature.name for f in graph_def.library.function}
    fdef = make_function(_unique(names, _sanitize(while_name) + "_rnn_region"), index.nodes,
                         members, [index.dtype(x)], {x: 0}, [t for t, _ in outputs],
                         graph_def.library,
                         [[None, cell.units] if o["role"] in ("h", "c") else None
                          for _, o in outputs])
    _verify(graph_def.library, fdef, cell, index.shape(x), in_perm, rev_in, outputs)
    spec = {"kind": cell.kind, "units": cell.units, "input_size": cell.input_size,
            "input_perm": list(in_perm), "reverse_input": rev_in,
            "activations": ["sigmoid", "tanh"], "origin": origin or while_name,
            "return_sequences": any(o["role"] == "sequence" and not o["last_only"]
                                    for _, o in outputs),
            "outputs": [o for _, o in outputs]}
    call_name = _unique(set(index.nodes), while_name + "_cupyrt_rnn")
    call = tf.compat.v1.NodeDef(name=call_name, op="PartitionedCall", input=[x])
    call.attr["Tin"].list.type.append(index.dtype(x).as_datatype_enum)
    call.attr["Tout"].list.type.extend(index.dtype(t).as_datatype_enum for t, _ in outputs)
    call.attr["f"].func.name = fdef.signature.name
    call.attr[RNN_ATTR].s = json.dumps(spec, sort_keys=True).encode()
    # constants may feed others too: they stay (dead ones go with prune_dead_nodes)
    removed = {n for n in region if not index.is_const(n)}
    rename = {t: f"{call_name}:{j}" for j, (t, _) in enumerate(outputs)}
    # Nothing outside may read what disappears. This holds by construction, hence
    # an assertion: _prelude takes a computed node only once all its readers are in
    # the region, the While's outputs that leave are h/c (renamed) or go to stacks
    # (_epilogue refuses any other reader), and each epilogue node either has one
    # reader, the next node absorbed, or is the renamed end of its chain.
    assert not [(c, n) for n in removed for c, port in index.consumers.get(n, ())
                if c not in region and port >= 0 and f"{n}:{port}" not in rename], \
        f"a node outside the region of {while_name} reads a node inside it"
    out = _replace(graph_def, removed, call, rename)
    out.library.function.append(fdef)
    logger.info("%s: Keras %s (%d units, input %s%s) -> %s", origin or while_name, cell.kind,
                cell.units, x, ", backwards" if rev_in else "", call_name)
    return out


def _read_cell(index, while_name):
    """The Cell the While's body computes, its weights read from the constants
    the loop starts with (rnn_cells.analyse_body)."""
    wnode = index.nodes[while_name]
    lib = {f.signature.name: f for f in index.graph_def.library.function}
    inits = [canonical(t) for t in index.data_inputs(wnode)]
    return analyse_body(lib[wnode.attr["body"].func.name], _constant_values(index, inits),
                        [tf.dtypes.as_dtype(t) for t in wnode.attr["T"].list.type])


_PARAMS_CACHE = {}          # digest of the region's functions -> engine weights
_PARAMS_CACHE_SIZE = 16


def region_params(library, name):
    """The engine weights {"W", "R", "Wb", "Rb"} of the tagged region function
    ``name``, read from its body exactly as collapse_loop read them.

    The weights live once in a converted graph: as the constants of the region
    function (which TensorFlow runs when an engine falls back); the RNN
    converter asks here instead of carrying a copy in the call node. The region
    was verified against the NumPy RNN when it was collapsed, so this reading is
    not verified again. Cached: engines are built again per input shape.
    """
    funcs = {f.signature.name: f for f in library.function}
    if name not in funcs:
        raise RNNLoopRefused(f"the region function {name!r} is not in the graph's function "
                             f"library ({len(funcs)} functions); the tagged call needs it")
    fdef = funcs[name]
    whiles = [n.name for n in fdef.node_def if n.op in WHILE_OPS]
    if len(whiles) != 1:
        raise RNNLoopRefused(f"the region function {name!r} holds {len(whiles)} While nodes; "
                             "a recognised region holds one")
    body = funcs.get(next(n for n in fdef.node_def if n.op in WHILE_OPS).attr["body"].func.name)
    key = hashlib.sha256(fdef.SerializeToString(deterministic=True)
                         + (body.SerializeToString(deterministic=True) if body else b"")).digest()
    if key not in _PARAMS_CACHE:
        scratch = tf.Graph()        # the While's body and cond must be known to it
        with scratch.as_default():
            tf.graph_util.import_graph_def(tf.compat.v1.GraphDef(library=library), name="")
            gd, _ = function_def_to_graph_def(fdef)
        gd.library.CopyFrom(library)
        if len(_PARAMS_CACHE) >= _PARAMS_CACHE_SIZE:
            _PARAMS_CACHE.pop(next(iter(_PARAMS_CACHE)))
        _PARAMS_CACHE[key] = _read_cell(GraphIndex(gd), whiles[0]).params
    return _PARAMS_CACHE[key]


def drop_unused_functions(graph_def):
    """``graph_def`` without the library functions no node calls (directly or
    through other functions): a region an engine absorbed lives on only in the
    engine's segment, so its weights are not stored twice."""
    funcs = {f.signature.name: f for f in graph_def.library.function}
    needed, todo = set(), [n for node in graph_def.node for n in _called(node.attr)]
    while todo:
        name = todo.pop()
        if name in funcs and name not in needed:
            needed.add(name)
            todo.extend(n for node in funcs[name].node_def for n in _called(node.attr))
    if len(needed) == len(funcs):
        return graph_def
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    del out.library.function[:]
    out.library.function.extend(f for f in graph_def.library.function
                                if f.signature.name in needed)
    out.library.gradient.extend(g for g in graph_def.library.gradient
                                if g.function_name in needed)
    return out


def _called(attrs):
    for value in attrs.values():
        if value.HasField("func"):
            yield value.func.name
        elif value.HasField("list"):
            yield from (f.name for f in value.list.func)


def _constant_values(index, tensors):
    """{position: value} of the tensors computed from constants alone (weights,
    and what Keras derives from them before the loop, e.g. tf_keras' bias unstack)."""
    memo = {}

    def constant(name):
        if name not in memo:
            node = index.nodes[name]
            memo[name] = False          # cycles (lowered loops) are not constant
            memo[name] = node.op == "Const" or (
                node.op in _PRELUDE_OPS and node.op != "Shape" and bool(node.input)
                and all(constant(node_of(i)) for i in node.input))
        return memo[name]

    found = {k: t for k, t in enumerate(tensors) if constant(node_of(t))
             and index.dtype(t) not in (tf.variant, tf.resource, tf.string)}
    values = {k: index.const_value(t) for k, t in found.items() if index.is_const(t)}
    rest = {k: t for k, t in found.items() if k not in values}
    if rest:
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(index.graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as sess:
            values.update(zip(rest, sess.run(list(rest.values()))))
    return values


def _prelude(index, while_name, keep):
    """The loop and the private plumbing feeding it (see module docstring)."""
    region, changed = {while_name}, True
    while changed:
        changed = False
        for n in list(region):
            for inp in index.nodes[n].input:
                src = node_of(inp)
                p = index.nodes[src]
                if src in region or src in keep or p.op not in _PRELUDE_OPS:
                    continue
                if index.is_const(inp) or all(c in region for c, _ in index.consumers[src]):
                    region.add(src)
                    changed = True
    return region


def _input_layout(index, region, list_init):
    """``(x, (time, batch, feature) axes of x, reversed)``: the one tensor the
    region reads, and how the transposes/reverses before the input list lay it out."""
    external = sorted({canonical(i) for n in region for i in index.data_inputs(index.nodes[n])
                       if node_of(i) not in region})
    if len(external) != 1:
        raise RNNLoopRefused(f"its region reads {len(external)} tensors from outside "
                             f"({', '.join(external[:4])}); a Keras RNN reads one sequence")
    x = external[0]
    shape = index.shape(x)
    if shape.rank != 3 or index.dtype(x) != tf.float32:
        raise RNNLoopRefused(f"the sequence {x} is {index.dtype(x).name} {shape}; expected "
                             "float32 of rank 3")
    node = index.nodes[node_of(list_init)]
    if node.op != "TensorListFromTensor":
        raise RNNLoopRefused(f"the input list comes from a {node.op}, not a TensorListFromTensor")
    steps, cur = [], canonical(node.input[0])
    while cur != x:
        node = index.nodes[node_of(cur)]
        if node.op not in ("Identity", "Snapshot", "Transpose", "ReverseV2") or (
                node.op in ("Transpose", "ReverseV2") and not index.is_const(node.input[1])):
            raise RNNLoopRefused(f"the input reaches the loop through a {node.op}; expected "
                                 "transposes and reverses of the sequence")
        if node.op != "Identity" and node.op != "Snapshot":
            steps.append((node.op, [int(v) for v in np.ravel(index.const_value(node.input[1]))]))
        cur = canonical(node.input[0])
    axes, flipped = [0, 1, 2], []           # x axis each dim of the current tensor holds
    for op, arg in reversed(steps):
        if op == "Transpose":
            axes = [axes[p] for p in arg]
        else:
            flipped.extend(axes[a % 3] for a in arg)
    if any(d != axes[0] for d in flipped):
        raise RNNLoopRefused("the sequence is reversed along a non-time axis")
    if shape.as_list()[axes[2]] is None:
        raise RNNLoopRefused(f"the feature dim of {x} {shape} is unknown; the engine needs it")
    return x, tuple(axes), len(flipped) % 2 == 1


def _epilogue(index, while_name, cell, region, keep):
    """Region outputs ``[(tensor, role)]``: h, c and the output sequence, with the
    stack, transposes, time reverses and last-step slices after it absorbed."""
    roles = {cell.roles["outputs"]: "list", cell.roles["h"]: "h"}
    if "c" in cell.roles:
        roles[cell.roles["c"]] = "c"
    outputs, seen = [], set()
    for c, port in list(index.consumers.get(while_name, ())):
        if port < 0 or c in region or (port, c) in seen:
            continue
        seen.add((port, c))
        role = roles.get(port)
        if role is None:
            raise RNNLoopRefused(f"{c} reads loop variable {port} after the loop; only the "
                                 "outputs, h and c leave a Keras RNN")
        if role != "list":
            if all(t != f"{while_name}:{port}" for t, _ in outputs):
                outputs.append((f"{while_name}:{port}", {"role": role}))
            continue
        if index.nodes[c].op != "TensorListStack" or c in keep:
            raise RNNLoopRefused(f"the output list goes to a {index.nodes[c].op}, not a "
                                 "TensorListStack")
        region.add(c)
        outputs.extend(_stack_outputs(index, c, cell.last_only, region, keep))
    if not outputs:
        raise RNNLoopRefused("nothing reads the loop's results")
    return outputs


def _stack_outputs(index, stack, last_only, region, keep):
    out = []
    for c, _ in index.consumers.get(stack, ()):
        node = index.nodes[c]
        if node.op == "StridedSlice" and c not in keep and _is_last_step(index, node):
            region.add(c)
            out.append((f"{c}:0", {"role": "h"}))
    t, perm, flip = f"{stack}:0", [0, 1, 2], False
    while True:
        cons = [c for c, _ in index.consumers.get(node_of(t), ()) if c not in region]
        if not cons:
            return out
        node = index.nodes[cons[0]]
        # a node nothing reads may be what the user fetches: it keeps its name
        if len(cons) != 1 or cons[0] in keep or not index.consumers.get(cons[0]) or \
                node.op not in ("Transpose", "ReverseV2") or not index.is_const(node.input[1]):
            break
        arg = [int(v) for v in np.ravel(index.const_value(node.input[1]))]
        if node.op == "ReverseV2":
            if any(perm[a % 3] != 0 for a in arg):
                break
            flip ^= len(arg) % 2 == 1
        elif node.op == "Transpose":
            perm = [perm[p] for p in arg]
        region.add(cons[0])
        t = f"{cons[0]}:0"
    out.append((t, {"role": "sequence", "perm": perm, "reverse": flip,
                    "last_only": last_only}))
    return out


def _is_last_step(index, node):
    """x[-1] on the time axis of the stack (Keras' ``outputs[-1]``)."""
    if not all(index.is_const(i) for i in node.input[1:4]):
        return False
    begin, end, stride = (np.ravel(index.const_value(i)) for i in node.input[1:4])
    masks = [get_attr(node, k, 0) for k in ("ellipsis_mask", "new_axis_mask")]
    return (len(begin) == 1 and begin[0] == -1 and stride[0] == 1
            and get_attr(node, "shrink_axis_mask", 0) & 1 and not any(masks))


def _verify(library, fdef, cell, x_shape, in_perm, rev_in, outputs):
    """Run the region in TensorFlow on random sequences; compare with NumPy."""
    rng = np.random.default_rng(0)
    e = x_shape.as_list()[in_perm[2]]
    for steps in _CHECK_STEPS:
        shape = [0, 0, 0]
        shape[in_perm[0]], shape[in_perm[1]], shape[in_perm[2]] = steps, 2, e
        x = rng.standard_normal(shape).astype(np.float32)
        got = run_function(library, fdef, [x])
        y, h, c = reference(cell, x, in_perm, rev_in)
        for (t, role), value in zip(outputs, got):
            want = {"h": h, "c": c}.get(role["role"])
            if role["role"] == "sequence":
                stack = h[None] if role["last_only"] else np.transpose(y, (1, 0, 2))
                want = np.transpose(stack[::-1] if role["reverse"] else stack, role["perm"])
            err = _rel_l2(value, want)
            if not err <= _CHECK_TOL:
                raise RNNLoopRefused(
                    f"its {role['role']} output ({t}) differs from a {cell.kind} with the "
                    f"weights read from the body by rel. L2 {err:.2e} on random data (T={steps}); "
                    "the structure is not what it computes")


def run_function(library, fdef, arrays):
    """Call ``fdef`` once in a scratch graph: a list of NumPy outputs."""
    gd = tf.compat.v1.GraphDef()
    gd.library.CopyFrom(library)
    gd.library.function.append(fdef)
    call = gd.node.add(name="call", op="PartitionedCall")
    for i, a in enumerate(arrays):
        gd.node.add(name=f"in_{i}", op="Placeholder").attr["dtype"].type = \
            tf.dtypes.as_dtype(a.dtype).as_datatype_enum
        call.input.append(f"in_{i}")
        call.attr["Tin"].list.type.append(tf.dtypes.as_dtype(a.dtype).as_datatype_enum)
    call.attr["Tout"].list.type.extend(a.type for a in fdef.signature.output_arg)
    call.attr["f"].func.name = fdef.signature.name
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(gd, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        fetches = [f"call:{j}" for j in range(len(fdef.signature.output_arg))]
        try:
            return sess.run(fetches, {f"in_{i}:0": a for i, a in enumerate(arrays)})
        except tf.errors.OpError as exc:
            raise RNNLoopRefused(f"its region fails in TensorFlow on random data: "
                                 f"{exc.message.splitlines()[0]}") from exc


# ----------------------------------------------------------------------------
# small helpers

def _replace(graph_def, removed, new_node, rename):
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


def _sanitize(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "loop"


def _unique(taken, base):
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
