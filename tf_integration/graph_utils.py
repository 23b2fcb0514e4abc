"""GraphDef plumbing: freezing Keras models, names, attributes, constants, shapes.

Everything here works on ``tf.compat.v1.GraphDef`` protos. The segmenter and the
converters read the graph through ``GraphIndex``, which answers the questions
they ask over and over (who consumes this tensor, what is its static shape, is
it a constant) without re-walking the proto.
"""
import collections
import logging

import numpy as np
import tensorflow as tf

from .errors import GraphError

logger = logging.getLogger(__name__)

# Ops that only forward their first input (a constant behind them is a constant).
FORWARDING_OPS = frozenset({"Identity", "Snapshot", "StopGradient", "PreventGradient"})
# Ops that do no arithmetic; they never count towards minimum_segment_size.
NON_COMPUTE_OPS = frozenset({"Const", "Identity", "IdentityN", "Snapshot", "StopGradient",
                             "NoOp", "Placeholder", "PlaceholderWithDefault",
                             "PreventGradient"})
# Ops whose value changes between runs or that have effects: never folded.
_UNFOLDABLE_OPS = frozenset({"Placeholder", "PlaceholderWithDefault", "NoOp", "VarHandleOp",
                             "ReadVariableOp", "VariableV2", "RandomUniform",
                             "RandomStandardNormal", "TruncatedNormal", "PyFunc",
                             "PyFuncStateless", "EagerPyFunc", "Assert", "Print", "PrintV2"})


# ----------------------------------------------------------------------------
# names

def parse_input(name):
    """'^n' -> ('n', -1, True); 'n:1' -> ('n', 1, False); 'n' -> ('n', 0, False)."""
    if name.startswith("^"):
        return name[1:], -1, True
    node, sep, port = name.rpartition(":")
    if sep and port.isdigit():
        return node, int(port), False
    return name, 0, False


def tensor_name(node, port=0):
    """Canonical 'node:port' name of a tensor."""
    return f"{node}:{port}"


def canonical(name):
    """'n' -> 'n:0', 'n:1' -> 'n:1' (control inputs are left alone)."""
    node, port, ctrl = parse_input(name)
    return name if ctrl else tensor_name(node, port)


def node_of(name):
    return parse_input(name)[0]


# ----------------------------------------------------------------------------
# attributes

def get_attr(node, key, default=None):
    """A node attribute as a plain Python value (str, int, float, bool, list, DType)."""
    if key not in node.attr:
        return default
    value = node.attr[key]
    kind = value.WhichOneof("value")
    if kind == "s":
        return value.s.decode("utf-8", "replace")
    if kind in ("i", "f", "b"):
        return getattr(value, kind)
    if kind == "type":
        return tf.dtypes.as_dtype(value.type)
    if kind == "shape":
        return tf.TensorShape(value.shape)
    if kind == "tensor":
        return tf.make_ndarray(value.tensor)
    if kind == "list":
        lst = value.list
        if lst.i:
            return list(lst.i)
        if lst.f:
            return list(lst.f)
        if lst.s:
            return [s.decode("utf-8", "replace") for s in lst.s]
        if lst.type:
            return [tf.dtypes.as_dtype(t) for t in lst.type]
        if lst.shape:
            return [tf.TensorShape(s) for s in lst.shape]
        if lst.b:
            return list(lst.b)
        return []
    return default


def node_dtype(node):
    """The element type a node computes in ('T' attribute, else 'dtype'), or None."""
    for key in ("T", "dtype", "DstT"):
        if key in node.attr and node.attr[key].WhichOneof("value") == "type":
            return tf.dtypes.as_dtype(node.attr[key].type)
    return None


def make_const_node(name, array, device=""):
    node = tf.compat.v1.NodeDef(name=name, op="Const", device=device)
    array = np.asarray(array)
    node.attr["dtype"].type = tf.dtypes.as_dtype(array.dtype).as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array))
    return node


# ----------------------------------------------------------------------------
# freezing

def freeze_keras_model(model, input_shapes=None):
    """Freeze a Keras model (Keras 3 or tf_keras) into a frozen GraphDef.

    Returns ``(graph_def, input_names, output_names)`` where names are tensor
    names ('x:0'). The batch dimension stays unknown (None) so the frozen graph
    takes any batch, as a served model does. ``input_shapes`` overrides the
    model's declared input shapes (a list, one per input, batch included).
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    inputs = model.inputs if hasattr(model, "inputs") and model.inputs else None
    if input_shapes is None:
        if inputs is None:
            raise GraphError(f"model {getattr(model, 'name', model)!r} has no declared inputs; "
                             "expected a built functional/sequential model or input_shapes=[...]")
        input_shapes = [tuple(t.shape) for t in inputs]
    dtypes = [getattr(t, "dtype", "float32") for t in inputs] if inputs else ["float32"] * len(
        input_shapes)
    specs = [tf.TensorSpec([None] + list(s)[1:], tf.dtypes.as_dtype(d), name=f"input_{i}")
             for i, (s, d) in enumerate(zip(input_shapes, dtypes))]

    if len(specs) == 1:
        fn = tf.function(lambda x: model(x, training=False))
    else:
        fn = tf.function(lambda *xs: model(list(xs), training=False))
    concrete = fn.get_concrete_function(*specs)
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    input_names = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    output_names = [t.name for t in frozen.outputs]
    logger.info("froze %s: %d nodes, inputs %s, outputs %s", getattr(model, "name", "model"),
                len(graph_def.node), input_names, output_names)
    return graph_def, input_names, output_names


# ----------------------------------------------------------------------------
# the index

class GraphIndex:
    """Read-only view of a GraphDef: nodes by name, edges, static shapes and dtypes.

    Shapes and dtypes come from importing the graph into a scratch ``tf.Graph``
    (TensorFlow's own shape functions), so every op TF knows gets a shape.
    """

    def __init__(self, graph_def, infer_shapes=True):
        self.graph_def = graph_def
        self.nodes = collections.OrderedDict()
        for node in graph_def.node:
            if node.name in self.nodes:
                raise GraphError(f"graph has two nodes named {node.name!r}; expected unique names")
            self.nodes[node.name] = node
        self.order = {name: i for i, name in enumerate(self.nodes)}
        self.consumers = collections.defaultdict(list)       # node -> [(consumer, port|-1)]
        for node in graph_def.node:
            for inp in node.input:
                src, port, ctrl = parse_input(inp)
                if src not in self.nodes:
                    raise GraphError(f"node {node.name!r} reads {inp!r}, which no node produces")
                self.consumers[src].append((node.name, -1 if ctrl else port))
        self._shapes, self._dtypes = {}, {}
        if infer_shapes:          # one TF import: skipped by passes that need no shapes
            self._infer()

    def _infer(self):
        graph = tf.Graph()
        with graph.as_default():
            try:
                tf.graph_util.import_graph_def(self.graph_def, name="")
            except (ValueError, tf.errors.OpError) as exc:
                # Unknown op types (engine nodes of another converted graph, custom
                # ops): fall back to no shape information for anything.
                logger.warning("shape inference unavailable: %s", exc)
                return
        for op in graph.get_operations():
            for i, t in enumerate(op.outputs):
                self._shapes[tensor_name(op.name, i)] = t.shape
                self._dtypes[tensor_name(op.name, i)] = t.dtype

    # edges -------------------------------------------------------------------
    def data_inputs(self, node):
        return [i for i in node.input if not i.startswith("^")]

    def control_inputs(self, node):
        return [i[1:] for i in node.input if i.startswith("^")]

    def producers(self, name):
        """Names of nodes feeding ``name`` (data and control)."""
        return [parse_input(i)[0] for i in self.nodes[name].input]

    def successors(self, name):
        return [c for c, _ in self.consumers.get(name, ())]

    def topological_order(self):
        """Node names in a deterministic topological order (ties by graph position)."""
        import heapq

        indeg = {n: len(self.nodes[n].input) for n in self.nodes}
        heap = [(self.order[n], n) for n, d in indeg.items() if d == 0]
        heapq.heapify(heap)
        out = []
        while heap:
            _, n = heapq.heappop(heap)
            out.append(n)
            for c, _ in self.consumers.get(n, ()):
                indeg[c] -= 1
                if indeg[c] == 0:
                    heapq.heappush(heap, (self.order[c], c))
        if len(out) != len(self.nodes):
            stuck = sorted(n for n, d in indeg.items() if d > 0)[:5]
            raise GraphError(f"graph has a cycle through {stuck}; expected a DAG (frozen graph "
                             "without control flow loops)")
        return out

    # types -------------------------------------------------------------------
    def shape(self, tensor):
        """Static tf.TensorShape of a tensor ('n' or 'n:i'); unknown rank when unknown."""
        return self._shapes.get(canonical(tensor), tf.TensorShape(None))

    def dtype(self, tensor):
        t = canonical(tensor)
        if t in self._dtypes:
            return self._dtypes[t]
        return node_dtype(self.nodes[node_of(t)])

    def num_outputs(self, name):
        return max([0] + [int(k.rpartition(":")[2]) + 1 for k in self._shapes
                          if k.rpartition(":")[0] == name]) or 1

    # constants ---------------------------------------------------------------
    def const_node(self, tensor):
        """The Const node behind ``tensor`` (through Identity-like chains), or None."""
        name, port, _ = parse_input(tensor)
        seen = 0
        while seen < 64:
            node = self.nodes.get(name)
            if node is None:
                return None
            if node.op == "Const":
                return node if port == 0 else None
            if node.op in FORWARDING_OPS and port == 0:
                name, port, _ = parse_input(self.data_inputs(node)[0])
                seen += 1
                continue
            return None
        return None

    def is_const(self, tensor):
        return self.const_node(tensor) is not None

    def const_value(self, tensor):
        node = self.const_node(tensor)
        if node is None:
            raise GraphError(f"tensor {tensor!r} is not a constant; expected a Const "
                             "(possibly behind Identity nodes)")
        return tf.make_ndarray(node.attr["value"].tensor)


# ----------------------------------------------------------------------------
# graph rewrites that run before segmentation

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
