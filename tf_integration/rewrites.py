"""Graph rewrites that run before segmentation (tf2onnx's ``rewriter/`` idea).

Each takes a GraphDef and returns one (the same object when nothing changed):
vacuous control edges dropped, constant subexpressions folded with TF itself,
batch-dependent reshape targets turned into constants, dead constants pruned.
"""
import logging

import numpy as np
import tensorflow as tf

from .graph_utils import (FORWARDING_OPS, GraphIndex, canonical, get_attr, make_const_node,
                          node_of, tensor_name)

logger = logging.getLogger(__name__)

# Ops whose value changes between runs or that have effects: never folded.
_UNFOLDABLE_OPS = frozenset({"Placeholder", "PlaceholderWithDefault", "NoOp", "VarHandleOp",
                             "ReadVariableOp", "VariableV2", "RandomUniform",
                             "RandomStandardNormal", "TruncatedNormal", "PyFunc",
                             "PyFuncStateless", "EagerPyFunc", "Assert", "Print", "PrintV2"})


def fold_constants(graph_def, keep=()):
    """Evaluate every node whose inputs are all constant, with TensorFlow itself.

    Keras 3 leaves batch-norm arithmetic (Rsqrt(var + eps) * gamma ...) on
    constants in the frozen graph, and Flatten/Reshape compute target shapes
    from Shape ops of statically shaped tensors. Folding them here, with TF's
    own kernels, gives the converters plain constants and exact TF numerics.
    Nodes named in ``keep`` (outputs, denylisted nodes) are never replaced.
    """
    index = GraphIndex(graph_def)
    keep = {node_of(k) for k in keep}
    const = {}            # node name -> True when its value is known without inputs
    to_fold = []
    for name in index.topological_order():
        node = index.nodes[name]
        if node.op == "Const":
            const[name] = True
            continue
        if node.op in _UNFOLDABLE_OPS or name in keep or index.control_inputs(node):
            continue
        if node.op == "Shape" and index.shape(node.input[0]).is_fully_defined():
            const[name] = True
            to_fold.append(name)
            continue
        ins = index.data_inputs(node)
        if ins and all(const.get(node_of(i)) for i in ins):
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
    return prune_dead_nodes(out, keep), len(to_fold)


def prune_dead_nodes(graph_def, keep):
    """Drop Const/Identity-of-const nodes that nothing reads any more (never ``keep``)."""
    keep = {node_of(k) for k in keep}
    changed = True
    nodes = list(graph_def.node)
    n_before = len(nodes)
    while changed:
        used = {node_of(i) for n in nodes for i in n.input}
        survivors = [n for n in nodes
                     if n.op != "Const" or n.name in used or n.name in keep]
        changed = len(survivors) != len(nodes)
        nodes = survivors
    if len(nodes) == n_before:
        return graph_def          # copying a GraphDef full of weights is not free
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
