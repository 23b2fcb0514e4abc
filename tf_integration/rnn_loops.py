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
the NumPy RNN reference (at the length and batch the input fixes, if it does:
Keras Input((6, 4)) bakes them into trip counts, list sizes and zero states),
and only then collapses it into ONE PartitionedCall
of a generated function holding the original region, tagged ``_cupyrt_rnn``
(JSON: kind, units, layout, outputs). TensorFlow runs that call natively (the
engine's TF fallback and any segment left to TF); converters/rnn.py turns it
into add_rnn_v2, reading the weights back out of the function
(``region_params``), so that they are stored once. The two halves of a Keras
Bidirectional then become one call (``fuse_bidirectional``). A loop that is
anything else stays as it was, and its reason is returned for the summary.
Raising lowered frames to While nodes lives in loop_frames.py.
"""
import hashlib
import json
import logging

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry
from tensorflow.python.framework.function_def_to_graph import function_def_to_graph_def

from .graph_utils import LOWERED_CONTROL_FLOW_OPS, GraphIndex, canonical, get_attr, node_of
from .loop_frames import (WHILE_OPS, frames, make_function, raise_frame, replace_nodes,
                          sanitize, unique_name)
from .rnn_cells import RNNLoopRefused, analyse_body, reference

logger = logging.getLogger(__name__)

RNN_ATTR = "_cupyrt_rnn"
CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
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
    loops, nested = frames(GraphIndex(gd, infer_shapes=False))
    for fname, members in loops.items():
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
    return fuse_bidirectional(gd, keep), refused


def _refuse_kept(keep, names):
    kept = sorted(set(names) & set(keep))
    if kept:
        raise RNNLoopRefused(f"{kept[0]} is in nodes_denylist (or fetched); the loop stays "
                             "as it is")


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
    fdef = make_function(unique_name(names, sanitize(while_name) + "_rnn_region"), index.nodes,
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
    call_name = unique_name(set(index.nodes), while_name + "_cupyrt_rnn")
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
    out = replace_nodes(graph_def, removed, call, rename)
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


# ----------------------------------------------------------------------------
# Keras Bidirectional: two tagged halves and their concat -> one tagged call

def fuse_bidirectional(graph_def, keep=()):
    """Each Keras Bidirectional (sequences) as ONE tagged call, ``"halves"`` naming
    the forward and backward region functions.

    Keras runs the backward half with go_backwards and flips its output back, then
    concatenates [forward, backward] on the feature axis. That is exactly the
    engine's bidirectional RNNv2 (kernels/rnn.py: direction 1 walks t = T-1 .. 0
    and writes y[:, t]; y holds the forward half first), so the pair becomes one
    layer. Only that shape fuses: the last-step form (return_sequences=False)
    keeps each half's h, and the engine's h_T of the backward direction is the
    same tensor, but Keras may also concatenate states or merge by sum/mul/ave;
    those stay two layers and a concat (still one engine, exact either way).
    """
    index = GraphIndex(graph_def)
    keep = {node_of(k) for k in keep}
    fusions = [f for f in (_bidirectional_pair(index, c, keep) for c, node in
                           index.nodes.items() if node.op == "ConcatV2") if f]
    out = graph_def
    for fwd, bwd, concat in fusions:
        out = _fuse(index, out, fwd, bwd, concat)
    return out


def _bidirectional_pair(index, concat, keep):
    """``(forward call, backward call, concat)`` when ``concat`` joins the two
    halves of a Keras Bidirectional that fuse; None otherwise."""
    node = index.nodes[concat]
    data = index.data_inputs(node)
    if concat in keep or len(data) != 3 or not index.is_const(data[2]):
        return None
    halves = [index.nodes.get(node_of(t)) for t in data[:2]]
    if any(h is None or RNN_ATTR not in h.attr or h.name in keep for h in halves) or \
            [canonical(t) for t in data[:2]] != [f"{h.name}:0" for h in halves]:
        return None
    (fwd, f_spec), (bwd, b_spec) = ((h.name, json.loads(h.attr[RNN_ATTR].s)) for h in halves)
    same = all(f_spec[k] == b_spec[k] for k in ("kind", "units", "input_perm", "input_size"))
    f_out, b_out = f_spec["outputs"], b_spec["outputs"]
    if not same or fwd == bwd or len(f_out) != 1 or len(b_out) != 1 or \
            canonical(halves[0].input[0]) != canonical(halves[1].input[0]):
        return None
    f_out, b_out = f_out[0], b_out[0]
    if not all(o["role"] == "sequence" and not o["last_only"] for o in (f_out, b_out)) \
            or f_out["perm"] != b_out["perm"]:
        return None
    # forward: reads and writes in time order; backward: reads reversed, writes back
    directions_ok = (not f_spec["reverse_input"] and not f_out["reverse"]
                     and b_spec["reverse_input"] and b_out["reverse"])
    axis = int(np.ravel(index.const_value(data[2]))[0]) % 3
    only_reader = all([c for c, p in index.consumers.get(h, ()) if p >= 0] == [concat]
                      for h in (fwd, bwd))
    if directions_ok and only_reader and f_out["perm"][axis] == 2:
        return fwd, bwd, concat
    return None


def _fuse(index, graph_def, fwd, bwd, concat):
    nodes = index.nodes
    x = canonical(nodes[fwd].input[0])
    f_spec = json.loads(nodes[fwd].attr[RNN_ATTR].s)
    members = [fwd, bwd, node_of(nodes[concat].input[2]), concat]
    names = {f.signature.name for f in graph_def.library.function}
    fdef = make_function(unique_name(names, sanitize(concat) + "_bidirectional"), nodes, members,
                         [index.dtype(x)], {x: 0}, [f"{concat}:0"], graph_def.library)
    spec = dict(f_spec, bidirectional=True, origin=f"{f_spec['origin']} + backward",
                halves=[nodes[h].attr["f"].func.name for h in (fwd, bwd)])
    call_name = unique_name(set(nodes), concat + "_cupyrt_rnn")
    call = tf.compat.v1.NodeDef(name=call_name, op="PartitionedCall", input=[x])
    call.attr["Tin"].list.type.append(index.dtype(x).as_datatype_enum)
    call.attr["Tout"].list.type.append(index.dtype(f"{concat}:0").as_datatype_enum)
    call.attr["f"].func.name = fdef.signature.name
    call.attr[RNN_ATTR].s = json.dumps(spec, sort_keys=True).encode()
    out = replace_nodes(graph_def, {fwd, bwd, concat}, call, {f"{concat}:0": f"{call_name}:0"})
    out.library.function.append(fdef)
    logger.info("Bidirectional %s: %s + %s -> one bidirectional %s", concat, fwd, bwd,
                spec["kind"])
    return out


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
    """The loop and the private plumbing feeding it (see module docstring).

    With a fixed sequence length Keras computes the trip count from constants
    (``Max(Range(...))`` of the static lengths); convert() folds that first, but
    a graph that was not folded keeps it, so expressions of constants alone
    (any stateless op) are plumbing too."""
    region, changed, memo = {while_name}, True, {}
    while changed:
        changed = False
        for n in list(region):
            for inp in index.nodes[n].input:
                src = node_of(inp)
                p = index.nodes[src]
                if src in region or src in keep or not (
                        p.op in _PRELUDE_OPS or _constant_expr(index, src, memo)):
                    continue
                if index.is_const(inp) or all(c in region for c, _ in index.consumers[src]):
                    region.add(src)
                    changed = True
    return region


def _constant_expr(index, name, memo):
    """Whether node ``name`` computes from constants alone (no feed, no state,
    no control flow): its value is the same on every run."""
    if name not in memo:
        node = index.nodes[name]
        memo[name] = False              # cycles (lowered loops) are not constant
        memo[name] = node.op == "Const" or (
            bool(node.input) and node.op not in LOWERED_CONTROL_FLOW_OPS
            and not getattr(op_def_registry.get(node.op), "is_stateful", True)
            and all(_constant_expr(index, node_of(i), memo) for i in node.input))
    return memo[name]


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
        # (tf_keras' inlined layer calls leave an Identity between stack and reverse)
        if len(cons) != 1 or cons[0] in keep or not index.consumers.get(cons[0]) or \
                node.op not in ("Transpose", "ReverseV2", "Identity") or \
                (node.op != "Identity" and not index.is_const(node.input[1])):
            break
        arg = [] if node.op == "Identity" else \
            [int(v) for v in np.ravel(index.const_value(node.input[1]))]
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
    dims = x_shape.as_list()
    e, batch = dims[in_perm[2]], dims[in_perm[1]] or 2
    # A fixed length or batch (Keras Input((6, 4)), batch_size=...) is baked into
    # the region: constant trip counts, list sizes and zero-state shapes. It is
    # verified at that size, the only one its input placeholder admits.
    lengths = _CHECK_STEPS if dims[in_perm[0]] is None else (dims[in_perm[0]],)
    for steps in lengths:
        shape = [0, 0, 0]
        shape[in_perm[0]], shape[in_perm[1]], shape[in_perm[2]] = steps, batch, e
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


def _rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
