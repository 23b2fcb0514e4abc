"""Graph rewrites that run before segmentation (tf2onnx's ``rewriter/`` idea).

Each takes a GraphDef and returns one (the same object when nothing changed):
vacuous control edges dropped, constant subexpressions folded with TF itself,
batch-dependent reshape targets turned into constants, dead constants pruned.
"""
import logging

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from .graph_utils import (FORWARDING_OPS, LOWERED_CONTROL_FLOW_OPS, MERGE_OPS, ROOT_FRAME,
                          SWITCH_OPS, GraphIndex, canonical, get_attr, make_const_node, node_of,
                          parse_input, tensor_name)

logger = logging.getLogger(__name__)

# Ops whose value changes between runs or that have effects: never folded.
_UNFOLDABLE_OPS = frozenset({"Placeholder", "PlaceholderWithDefault", "NoOp", "VarHandleOp",
                             "ReadVariableOp", "VariableV2", "RandomUniform",
                             "RandomStandardNormal", "TruncatedNormal", "PyFunc",
                             "PyFuncStateless", "EagerPyFunc", "Assert", "Print", "PrintV2"}
                            | LOWERED_CONTROL_FLOW_OPS)


def _is_stateful(op):
    """TF's own flag: stateful ops (random, variables, queues, I/O) may not be folded."""
    op_def = op_def_registry.get(op)
    return op_def is None or op_def.is_stateful


def _cond_contexts(index):
    """{node: tuple of (predicate, branch)} -- the lowered conds a node's liveness hangs on.

    A Switch's output p is live only when its predicate says p, so a consumer of
    Switch:p is inside branch (pred, p); a Merge of both branches is back outside.
    Loop switches (predicate from LoopCond) are not conds: loop frames are handled
    apart. A node folded to a Const loses its inputs and with them this liveness,
    so only nodes with the empty context may become constants.
    """
    ctx = {}
    for name in index.topological_order():
        node = index.nodes[name]
        ins = []
        for inp in node.input:
            src, port, ctrl = parse_input(inp)
            if index.is_back_edge(src):
                continue
            c = ctx[src]
            snode = index.nodes[src]
            if snode.op in SWITCH_OPS and not ctrl:
                pred = canonical(snode.input[1])
                if index.nodes[node_of(pred)].op != "LoopCond":
                    c = c + ((pred, port),)
            ins.append(c)
        if not ins:
            ctx[name] = ()
        elif node.op in MERGE_OPS:      # the longest context all inputs share
            common = ins[0]
            for c in ins[1:]:
                k = 0
                while k < min(len(common), len(c)) and common[k] == c[k]:
                    k += 1
                common = common[:k]
            ctx[name] = common
        else:
            ctx[name] = max(ins, key=len)
    return ctx


def fold_constants(graph_def, keep=()):
    """Evaluate every node whose inputs are all constant, with TensorFlow itself.

    Keras 3 leaves batch-norm arithmetic (Rsqrt(var + eps) * gamma ...) on
    constants in the frozen graph, and Flatten/Reshape compute target shapes
    from Shape ops of statically shaped tensors. Folding them here, with TF's
    own kernels, gives the converters plain constants and exact TF numerics.
    Nodes named in ``keep`` (outputs, denylisted nodes) are never replaced.

    Only truly constant subgraphs fold, so folding never needs a feed: a node is
    constant when every input, data and control, is (a Const waiting on a cond's
    pivot is not: it is live only in its branch), it is neither stateful nor a
    control-flow primitive (Switch/Merge/Enter/... never fold, even on constant
    inputs: one Switch output is dead, a Merge forwards whichever input arrives),
    and it is outside loop frames. A Shape of a statically shaped tensor folds without running
    anything, but only outside conds and loops, where its liveness is unconditional.
    """
    index = GraphIndex(graph_def)
    keep = {node_of(k) for k in keep}
    cond_ctx = _cond_contexts(index)
    const = {}            # node name -> True when its value is known without inputs
    to_fold = []
    for name in index.topological_order():
        node = index.nodes[name]
        if node.op == "Const":
            const[name] = not index.control_inputs(node)
            continue
        if (node.op in _UNFOLDABLE_OPS or name in keep or _is_stateful(node.op)
                or index.frame_of(name) != ROOT_FRAME or cond_ctx[name]):
            continue
        if (node.op == "Shape" and not index.control_inputs(node)
                and index.shape(node.input[0]).is_fully_defined()):
            const[name] = True
            to_fold.append(name)
            continue
        ins = [node_of(i) for i in node.input]
        if ins and all(const.get(i) for i in ins):
            if node.op in FORWARDING_OPS:
                const[name] = True
                continue            # forwarding nodes stay; const_node sees through them
            dt = index.dtype(tensor_name(name, 0))
            if dt is None or dt in (tf.string, tf.resource, tf.variant):
                continue
            const[name] = True
            to_fold.append(name)
    if not to_fold:
        return graph_def, 0

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    fetches, targets = {}, []
    for name in to_fold:
        node = index.nodes[name]
        if node.op == "Shape":
            shape = index.shape(node.input[0]).as_list()
            out_t = get_attr(node, "out_type", tf.int32)
            fetches[name] = [np.array(shape, dtype=out_t.as_numpy_dtype)]
            continue
        n_out = len(graph.get_operation_by_name(name).outputs)
        fetches[name] = [graph.get_tensor_by_name(tensor_name(name, i)) for i in range(n_out)]
        targets.append(name)
    tensors = {n: v for n, v in fetches.items() if n in targets}
    with tf.compat.v1.Session(graph=graph) as sess:
        values = sess.run(tensors)
    values.update({n: v for n, v in fetches.items() if n not in targets})

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    renamed = {}    # 'n:i' -> new const node name, for multi-output folded nodes
    for node in graph_def.node:
        if node.name in values:
            vals = values[node.name]
            if len(vals) == 1:
                out.node.append(make_const_node(node.name, vals[0], node.device))
            else:
                for i, v in enumerate(vals):
                    cname = node.name if i == 0 else f"{node.name}/folded_{i}"
                    out.node.append(make_const_node(cname, v, node.device))
                    renamed[tensor_name(node.name, i)] = cname
        else:
            out.node.append(node)
    if renamed:
        for node in out.node:
            for j, inp in enumerate(node.input):
                c = canonical(inp)
                if not inp.startswith("^") and c in renamed:
                    node.input[j] = renamed[c]
    logger.info("folded %d constant subexpressions", len(to_fold))
    return prune_dead_nodes(out, keep, reference=graph_def), len(to_fold)


def prune_dead_nodes(graph_def, keep, reference=None):
    """Drop constant chains (Const, and Identity-like forwarding nodes over one, i.e.
    frozen variable reads) that nothing reads any more; never ``keep``.

    With ``reference`` (the GraphDef before a rewrite) only nodes that something
    read there are dropped: an unread node of the original graph may be one the
    user fetches. Without it, only bare Consts are dropped (as before folding).
    """
    keep = {node_of(k) for k in keep}
    index = GraphIndex(graph_def, infer_shapes=False)
    if reference is None:
        prunable = {n for n, node in index.nodes.items() if node.op == "Const"}
    else:
        read = {node_of(i) for n in reference.node for i in n.input}
        prunable = {n for n, node in index.nodes.items() if n in read and (
            node.op == "Const" or node.op in FORWARDING_OPS and index.is_const(n))}
    prunable -= keep
    nodes = list(graph_def.node)
    n_before = len(nodes)
    changed = True
    while changed:
        used = {node_of(i) for n in nodes for i in n.input}
        survivors = [n for n in nodes if n.name not in prunable or n.name in used]
        changed = len(survivors) != len(nodes)
        nodes = survivors
    if len(nodes) == n_before:
        return graph_def          # copying a GraphDef full of weights is not free
    logger.info("pruned %d dead constant / forwarding node(s)", n_before - len(nodes))
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    out.node.extend(nodes)
    return out


def strip_constant_control_edges(graph_def, keep=()):
    """Drop control edges that order nothing, and the NoOps left holding none.

    A frozen Keras graph ends in ``Identity(output, ^NoOp)`` where the NoOp
    waits on every (now constant) variable read. Constants have no effects,
    so waiting on them is vacuous; keeping the edges would tie the output
    node to hundreds of constants and block segment formation.
    """
    index = GraphIndex(graph_def, infer_shapes=False)
    keep = {node_of(k) for k in keep}
    trivial = set()
    for name in index.topological_order():
        node = index.nodes[name]
        if index.is_const(tensor_name(name, 0)):
            trivial.add(name)
        elif node.op == "NoOp" and name not in keep and all(
                node_of(i) in trivial for i in node.input):
            trivial.add(name)
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    dropped = 0
    for node in graph_def.node:
        if node.op == "NoOp" and node.name in trivial:
            dropped += 1
            continue
        new = tf.compat.v1.NodeDef()
        new.CopyFrom(node)
        del new.input[:]
        for inp in node.input:
            if inp.startswith("^") and node_of(inp) in trivial:
                dropped += 1
                continue
            new.input.append(inp)
        out.node.append(new)
    logger.debug("dropped %d trivial control edges / NoOps", dropped)
    return out


_SHAPE_MATH_OPS = frozenset({"Shape", "StridedSlice", "Pack", "Const", "Identity", "Cast", "Prod",
                             "ConcatV2", "Slice"})


def rewrite_batch_reshapes(graph_def, keep=()):
    """Reshape(x, Pack(Shape(x)[0], d1, ...)) -> Reshape(x, [-1, d1', ...]).

    Keras 3's Flatten (and many hand-written graphs) reshape to a target built
    from the runtime batch size. When every other dim of x is static, the target
    is a constant with -1 for the batch, which the engine can take. Shape-math
    nodes left without consumers are removed.
    """
    packs = {n.name for n in graph_def.node if n.op == "Pack"}
    if not any(n.op == "Reshape" and node_of(n.input[1]) in packs for n in graph_def.node):
        return graph_def
    index = GraphIndex(graph_def)
    new_consts, rewired = [], {}
    for node in graph_def.node:
        if node.op != "Reshape":
            continue
        target = _batch_target(index, node)
        if target is None:
            continue
        name = f"{node.name}/cupyrt_static_shape"
        new_consts.append(make_const_node(name, np.array(target, dtype=np.int32)))
        rewired[node.name] = name
    if not rewired:
        return graph_def
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        new = out.node.add()
        new.CopyFrom(node)
        if node.name in rewired:
            new.input[1] = rewired[node.name]
    out.node.extend(new_consts)
    logger.info("rewrote %d batch-dependent reshape targets to constants", len(rewired))
    return _prune_dead_shape_math(out, keep)


def _batch_target(index, reshape):
    data, shape_in = reshape.input[0], reshape.input[1]
    pack = index.nodes.get(node_of(shape_in))
    if pack is None or pack.op != "Pack" or get_attr(pack, "axis", 0) != 0:
        return None
    dims = index.shape(data)
    if dims.rank is None or any(d is None for d in dims.as_list()[1:]):
        return None
    vals = []
    for i, inp in enumerate(pack.input):
        if index.is_const(inp):
            vals.append(int(np.ravel(index.const_value(inp))[0]))
            continue
        ss = index.nodes[node_of(inp)]
        if (i != 0 or ss.op != "StridedSlice" or get_attr(ss, "shrink_axis_mask", 0) != 1
                or not all(index.is_const(x) for x in ss.input[1:4])
                or [int(v) for v in np.ravel(index.const_value(ss.input[1]))] != [0]):
            return None
        shp = index.nodes[node_of(ss.input[0])]
        if shp.op != "Shape" or canonical(shp.input[0]) != canonical(data):
            return None
        vals.append(None)
    if vals.count(None) != 1 or vals[0] is not None:
        return None
    rest = int(np.prod(dims.as_list()[1:]))
    known = int(np.prod([v for v in vals[1:] if v != -1])) if len(vals) > 1 else 1
    if vals.count(-1) > 1 or known == 0:
        return None
    return [-1] + [rest // known if v == -1 else v for v in vals[1:]]


def _prune_dead_shape_math(graph_def, keep):
    keep = {node_of(k) for k in keep}
    nodes = list(graph_def.node)
    while True:
        used = {node_of(i) for n in nodes for i in n.input}
        survivors = [n for n in nodes if n.name in used or n.name in keep
                     or n.op not in _SHAPE_MATH_OPS]
        if len(survivors) == len(nodes):
            break
        nodes = survivors
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    out.node.extend(nodes)
    return out
