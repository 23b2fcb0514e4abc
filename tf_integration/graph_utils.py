"""GraphDef plumbing: freezing Keras models, names, attributes, constants, shapes.

Everything here works on ``tf.compat.v1.GraphDef`` protos. The segmenter and the
converters read the graph through ``GraphIndex``, which answers the questions
they ask over and over (who consumes this tensor, what is its static shape, is
it a constant) without re-walking the proto.
"""
import collections
import heapq
import logging

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from .errors import GraphError

logger = logging.getLogger(__name__)

# Ops that only forward their first input (a constant behind them is a constant).
FORWARDING_OPS = frozenset({"Identity", "Snapshot", "StopGradient", "PreventGradient"})
# Ops that do no arithmetic; they never count towards minimum_segment_size.
NON_COMPUTE_OPS = frozenset({"Const", "Identity", "IdentityN", "Snapshot", "StopGradient",
                             "NoOp", "Placeholder", "PlaceholderWithDefault",
                             "PreventGradient"})

# Control flow. Lowered v1 loops are built from the frame ops; a lowered cond from
# Switch/Merge alone. Functional ops keep their bodies in the function library.
ENTER_OPS = frozenset({"Enter", "RefEnter"})
EXIT_OPS = frozenset({"Exit", "RefExit"})
NEXT_ITERATION_OPS = frozenset({"NextIteration", "RefNextIteration"})
SWITCH_OPS = frozenset({"Switch", "RefSwitch"})
MERGE_OPS = frozenset({"Merge", "RefMerge"})
LOWERED_CONTROL_FLOW_OPS = (ENTER_OPS | EXIT_OPS | NEXT_ITERATION_OPS | SWITCH_OPS | MERGE_OPS
                            | {"LoopCond", "ControlTrigger"})
FUNCTIONAL_CONTROL_FLOW_OPS = frozenset({"While", "StatelessWhile", "If", "StatelessIf",
                                         "Case", "StatelessCase"})
ROOT_FRAME = ""

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
# shape inference over ops this TensorFlow build does not know

# Ops that forward their input unchanged but exist only in some TensorFlow builds (the GPU
# placer's copies are not registered in tensorflow-cpu): shape inference reads them as this.
SHAPE_STANDINS = {"_CopyFromHostToGpu": "Identity"}


def for_shape_inference(graph_def):
    """``graph_def``, or a copy in which every node whose op this TensorFlow build does
    not register stands in for itself: a forwarding op (``SHAPE_STANDINS``) as that op,
    any other single-typed op as a Placeholder of unknown shape. TensorFlow then infers
    the shapes of everything else, instead of nothing (an import fails on the first
    unknown op). Nodes whose other outputs are read still fail the import, as before."""
    unknown = {n.name for n in graph_def.node if op_def_registry.get(n.op) is None}
    if not unknown:
        return graph_def
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.name not in unknown:
            out.node.append(node)
            continue
        dtype = node_dtype(node)
        standin = SHAPE_STANDINS.get(node.op)
        new = out.node.add(name=node.name, op=standin or "Placeholder")
        if standin:
            new.input.extend(node.input)
            new.attr["T"].CopyFrom(node.attr["T"])
        elif dtype is not None:
            new.attr["dtype"].type = dtype.as_datatype_enum
        else:
            return graph_def            # no type to stand in with: TF says what is wrong
    logger.info("shape inference: %d node(s) of ops this TensorFlow does not register stand "
                "in as Identity/Placeholder", len(unknown))
    return out


# ----------------------------------------------------------------------------
# the function library

def functions_called(library, nodes):
    """Names of the library functions ``nodes`` call, directly or through the
    functions they call (func and list(func) attributes: While bodies, If branches,
    PartitionedCall targets). ``library``: a FunctionDefLibrary."""
    funcs = {f.signature.name: f for f in library.function}
    needed, todo = set(), [n for node in nodes for n in _called(node.attr)]
    while todo:
        name = todo.pop()
        if name in funcs and name not in needed:
            needed.add(name)
            todo.extend(n for node in funcs[name].node_def for n in _called(node.attr))
    return needed


def _called(attrs):
    for value in attrs.values():
        if value.HasField("func"):
            yield value.func.name
        elif value.HasField("list"):
            yield from (f.name for f in value.list.func)


# ----------------------------------------------------------------------------
# the index

class Frame:
    """One lowered while loop (TF's executor frame): named by its Enter nodes'
    ``frame_name``; ``parent`` is the enclosing frame (ROOT_FRAME at top level)."""
    __slots__ = ("name", "parent", "enters", "exits", "members")

    def __init__(self, name, parent):
        self.name, self.parent = name, parent
        self.enters, self.exits, self.members = [], [], []   # node names, topological order

    def __repr__(self):
        return (f"Frame({self.name!r}, parent={self.parent!r}, {len(self.members)} nodes, "
                f"{len(self.enters)} Enter, {len(self.exits)} Exit)")


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
        self.infer_error = None          # why TensorFlow could not import the graph, if so
        self._topo = self._frame_of = self._frames = None
        if infer_shapes:          # one TF import: skipped by passes that need no shapes
            self._infer()

    def _infer(self):
        graph = tf.Graph()
        with graph.as_default():
            try:
                tf.graph_util.import_graph_def(for_shape_inference(self.graph_def), name="")
            except (ValueError, tf.errors.OpError) as exc:
                # Unknown op types (engine nodes of another converted graph, custom
                # ops): fall back to no shape information for anything.
                logger.warning("shape inference unavailable: %s", exc)
                self.infer_error = exc
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

    def is_back_edge(self, src):
        """True for edges out of NextIteration: the loop's edge into the next iteration
        (TensorFlow's executor, and every pass here, ignores them when ordering)."""
        return self.nodes[src].op in NEXT_ITERATION_OPS

    def topological_order(self):
        """Node names in a deterministic topological order (ties by graph position).

        NextIteration -> Merge back edges are left out, as in TensorFlow's own
        ``GetReversePostOrder``/executor, so lowered while loops order fine; any
        other cycle is malformed.
        """
        if self._topo is not None:
            return list(self._topo)

        indeg = {n: sum(1 for i in self.nodes[n].input if not self.is_back_edge(node_of(i)))
                 for n in self.nodes}
        heap = [(self.order[n], n) for n, d in indeg.items() if d == 0]
        heapq.heapify(heap)
        out = []
        while heap:
            _, n = heapq.heappop(heap)
            out.append(n)
            if self.is_back_edge(n):
                continue
            for c, _ in self.consumers.get(n, ()):
                indeg[c] -= 1
                if indeg[c] == 0:
                    heapq.heappush(heap, (self.order[c], c))
        if len(out) != len(self.nodes):
            stuck = sorted(n for n, d in indeg.items() if d > 0)[:5]
            raise GraphError(f"graph has a cycle through {stuck}; expected a DAG apart from "
                             "NextIteration back edges of while loops")
        self._topo = out
        return list(out)

    # loop frames -------------------------------------------------------------
    def frame_of(self, name):
        """The loop frame a node runs in (its Enter's ``frame_name``), ROOT_FRAME outside
        any loop. As TensorFlow's ``BuildControlFlowInfo``: Enter starts its frame, a
        node after an Exit is in the Exit's parent frame, anything else is in the frame
        of its inputs (a node without inputs is at the root)."""
        if self._frame_of is None:
            self._build_frames()
        return self._frame_of[name]

    @property
    def frames(self):
        """{frame name: Frame} for every lowered loop of the graph (nested ones too)."""
        if self._frames is None:
            self._build_frames()
        return self._frames

    def _build_frames(self):
        frame_of, frames = {}, {}
        for name in self.topological_order():
            node = self.nodes[name]
            srcs = [node_of(i) for i in node.input if not self.is_back_edge(node_of(i))]
            outer = ROOT_FRAME
            if srcs:
                src = srcs[0]
                outer = frame_of[src]
                if self.nodes[src].op in EXIT_OPS:
                    outer = frames[outer].parent if outer in frames else ROOT_FRAME
            if node.op in ENTER_OPS:
                frame = get_attr(node, "frame_name", "")
                if not frame:
                    raise GraphError(f"Enter node {name!r} has no frame_name; expected the "
                                     "name of the while loop it starts")
                info = frames.get(frame)
                if info is None:
                    info = frames[frame] = Frame(frame, outer)
                elif info.parent != outer:
                    raise GraphError(f"frame {frame!r} is entered from frame {outer!r} at "
                                     f"{name!r} and from {info.parent!r} elsewhere; expected "
                                     "one parent frame per loop")
                info.enters.append(name)
                outer = frame
            frame_of[name] = outer
            if outer != ROOT_FRAME:
                frames[outer].members.append(name)
                if node.op in EXIT_OPS:
                    frames[outer].exits.append(name)
        self._frame_of, self._frames = frame_of, frames

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
# input checks

def check_graph_def(graph_def, known_ops=(), what="input_graph_def"):
    """Refuse, with a GraphError naming the node, a GraphDef that TensorFlow itself
    could not import: no nodes, an op TensorFlow does not know (``known_ops``: op
    names made runnable elsewhere, such as engine nodes), a required attribute
    missing, or an attribute value outside the op's allowed values. Checked against
    TensorFlow's op registry, not by importing the graph: an import costs as much
    as the shape inference that follows, and its message names one node only."""
    if not graph_def.node:
        raise GraphError(f"{what} has no nodes; expected a frozen graph (e.g. from "
                         "convert_variables_to_constants_v2) with at least one node")
    functions = {f.signature.name for f in graph_def.library.function}
    unknown = []
    for node in graph_def.node:
        if node.op in functions:
            continue
        op_def = op_def_registry.get(node.op)
        if op_def is None:
            if node.op not in known_ops:
                unknown.append(f"{node.name!r} ({node.op})")
            continue
        for attr in op_def.attr:
            if attr.name not in node.attr:
                if not attr.HasField("default_value"):
                    raise GraphError(f"node {node.name!r} ({node.op}) has no attribute "
                                     f"{attr.name!r}; expected one of type {attr.type}, "
                                     "which the op requires")
                continue
            _check_allowed(node, attr, node.attr[attr.name])
    if unknown:
        raise GraphError(f"{what}: {len(unknown)} node(s) use ops TensorFlow does not know: "
                         f"{', '.join(unknown[:8])}; expected registered ops (load a custom "
                         "op's library with tf.load_op_library before converting)")


def _check_allowed(node, attr, value):
    """A string or type attribute outside the op's allowed values (e.g. padding 'SAME ')."""
    allowed = attr.allowed_values.list
    if attr.type == "string" and allowed.s and value.s not in allowed.s:
        found, valid = value.s.decode(errors="replace"), [s.decode() for s in allowed.s]
    elif attr.type == "type" and allowed.type and value.type not in allowed.type:
        found = tf.dtypes.as_dtype(value.type).name if value.type else "unset"
        valid = [tf.dtypes.as_dtype(t).name for t in allowed.type]
    else:
        return
    raise GraphError(f"node {node.name!r} ({node.op}): attribute {attr.name!r} is {found!r}; "
                     f"expected one of {', '.join(valid)}")


def check_importable(graph, what="input_graph_def"):
    """After ``check_graph_def``: a GraphIndex whose graph TensorFlow refused to import
    although every op is known (shapes or types that disagree, e.g. a placeholder of
    width 5 into a 4-row MatMul) is an error; TensorFlow's message names the node.
    Graphs with ops only we run (engine nodes) are imported without shapes, as before."""
    exc = graph.infer_error
    functions = {f.signature.name for f in graph.graph_def.library.function}
    if exc is None or any(op_def_registry.get(n.op) is None and n.op not in functions
                          for n in graph.graph_def.node):
        return
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    raise GraphError(f"{what} cannot be imported by TensorFlow: {first}; expected shapes and "
                     "types that agree between every node and its inputs")
