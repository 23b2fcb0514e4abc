"""Engine nodes: how a converted segment lives in a GraphDef and runs in TensorFlow.

In the GraphDef an engine node is a node of op type ``CupyrtEngineOp`` whose
attributes carry everything it needs (so a saved .pb is self-contained):

    segment_graph   the segment as its own GraphDef (conversion.py): what TF runs
                    when an engine cannot (the fallback)
    serialized_network  the converted network (engine.serialize_network bytes,
                    dynamic engines): built per input shape; empty when the
                    segment only converts at concrete shapes (then the segment
                    is converted again per shape)
    serialized_plan the plan built at convert() time (static engines), or empty
    Tin / Tout      input and output dtypes; input_shapes / output_shapes
    precision_mode, is_dynamic_op, max_cached_engines, max_batch_size,
    max_workspace_size_bytes
    use_calibration INT8 engines whose ranges come from calibration
    calibration_table   TensorRT-format calibration cache (calibration.py); an
                    INT8 node with use_calibration and no table is *pending*:
                    it runs FP32 (and records its inputs while calibrate() runs)

TensorFlow has no kernel for that op type (we ship no C++), so
``import_graph_def`` rewrites each engine node into a ``PyFunc`` node bound to
an ``EngineRunner`` before importing. ``PyFunc`` is what ``tf.numpy_function``
builds; it runs in ``tf.compat.v1.Session`` and inside ``tf.function`` graphs.
"""
import collections
import logging
import threading
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import script_ops

from . import conversion
from .errors import EngineNodeError
from .graph_utils import get_attr

logger = logging.getLogger(__name__)

ENGINE_OP = "CupyrtEngineOp"
_RUNNERS = []          # strong references: TF's PyFunc registry holds weak ones


class EngineFallbackWarning(UserWarning):
    """An engine could not be built or run; the TensorFlow segment ran instead."""


def make_engine_node(name, segment, segment_gd, graph, plan, params, network=None):
    """The NodeDef of an engine node for ``segment`` (see module docstring)."""
    node = tf.compat.v1.NodeDef(name=name, op=ENGINE_OP)
    node.input.extend(segment.inputs)
    node.input.extend(f"^{c}" for c in segment.control_inputs)
    node.attr["segment_graph"].s = segment_gd.SerializeToString()
    node.attr["serialized_network"].s = network or b""
    node.attr["serialized_plan"].s = plan or b""
    node.attr["Tin"].list.type.extend(graph.dtype(t).as_datatype_enum for t in segment.inputs)
    node.attr["Tout"].list.type.extend(graph.dtype(t).as_datatype_enum for t in segment.outputs)
    for key, tensors in (("input_shapes", segment.inputs), ("output_shapes", segment.outputs)):
        node.attr[key].list.shape.extend(graph.shape(t).as_proto() for t in tensors)
    node.attr["precision_mode"].s = params["precision_mode"].encode()
    node.attr["is_dynamic_op"].b = bool(params["is_dynamic_op"])
    node.attr["max_cached_engines"].i = int(params["maximum_cached_engines"])
    node.attr["max_batch_size"].i = int(params["max_batch_size"] or 0)
    node.attr["max_workspace_size_bytes"].i = int(params["max_workspace_size_bytes"] or 0)
    node.attr["use_calibration"].b = bool(params.get("use_calibration", False))
    node.attr["calibration_table"].s = b""
    return node


class EngineRunner:
    """Runs one engine node: per-shape engine cache (LRU), TF fallback on failure."""

    def __init__(self, node):
        self.name = node.name
        self.segment_gd = tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s)
        self.static_plan = node.attr["serialized_plan"].s or None
        self.network = (node.attr["serialized_network"].s
                        if "serialized_network" in node.attr else b"") or None
        self.precision = get_attr(node, "precision_mode", "FP32")
        self.dynamic = get_attr(node, "is_dynamic_op", True)
        self.capacity = max(1, get_attr(node, "max_cached_engines", 1))
        self.max_batch = get_attr(node, "max_batch_size", 0)
        self.workspace = get_attr(node, "max_workspace_size_bytes", 0)
        self.tout = [np.dtype(t.as_numpy_dtype) for t in get_attr(node, "Tout", [])]
        self.table = (node.attr["calibration_table"].s
                      if "calibration_table" in node.attr else b"") or None
        self.pending = (self.precision == "INT8" and get_attr(node, "use_calibration", False)
                        and self.table is None)
        self.calibration_inputs = None               # a list while calibrate() records
        self.cache = collections.OrderedDict()      # input shapes -> execution context
        self.failed = set()                          # shapes whose engine failed to build
        self.stats = collections.Counter()
        self._lock = threading.Lock()
        self._static = None
        self._native = None

    # ------------------------------------------------------------------ engines
    def _context(self, shapes):
        """An execution context for these input shapes, or None (run natively)."""
        import engine as rt

        if self.pending and self.calibration_inputs is None and not self.stats["pending_warned"]:
            self.stats["pending_warned"] += 1
            logger.warning("engine %s is INT8 but not calibrated yet: it runs FP32 until "
                           "converter.calibrate() stores its calibration table", self.name)
        if self.static_plan is not None:
            if self._static is None:
                self._static = rt.Runtime().deserialize_cuda_engine(self.static_plan)
            if self.max_batch and shapes and shapes[0] and shapes[0][0] > self.max_batch:
                self._warn(f"batch {shapes[0][0]} exceeds max_batch_size {self.max_batch} of "
                           "the static engine")
                return None
            if shapes not in self.cache:
                self._insert(shapes, self._static.create_execution_context())
            self.cache.move_to_end(shapes)
            return self.cache[shapes]
        if shapes in self.cache:
            self.cache.move_to_end(shapes)
            self.stats["cache_hits"] += 1
            return self.cache[shapes]
        if shapes in self.failed:
            return None
        if not self.dynamic:
            self._warn("static engine node without a plan")
            return None
        try:
            plan = build_engine(self.segment_gd, "FP32" if self.pending else self.precision,
                                shapes, self.workspace, network=self.network, table=self.table)
            ctx = rt.Runtime().deserialize_cuda_engine(plan).create_execution_context()
        except Exception as exc:          # noqa: BLE001 - any failure means: run natively
            self.failed.add(shapes)
            self._warn(f"building an engine for input shapes {list(shapes)} failed: {exc}")
            return None
        self.stats["engines_built"] += 1
        self._insert(shapes, ctx)
        return ctx

    def _insert(self, shapes, ctx):
        self.cache[shapes] = ctx
        while len(self.cache) > self.capacity:
            old, _ = self.cache.popitem(last=False)
            self.stats["evictions"] += 1
            logger.info("engine %s: evicted the engine for shapes %s (LRU, capacity %d)",
                        self.name, list(old), self.capacity)

    def _warn(self, why):
        msg = f"engine node {self.name}: {why}; running the TensorFlow segment instead"
        logger.warning(msg)
        warnings.warn(msg, EngineFallbackWarning, stacklevel=3)

    # ------------------------------------------------------------------ running
    def __call__(self, *arrays):
        arrays = [np.asarray(a) for a in arrays]
        shapes = tuple(tuple(a.shape) for a in arrays)
        with self._lock:
            if self.calibration_inputs is not None:
                self.calibration_inputs.append([a.copy() for a in arrays])
            ctx = self._context(shapes)
            if ctx is not None:
                try:
                    outs = ctx.execute({f"input_{i}": a for i, a in enumerate(arrays)})
                    self.stats["engine_runs"] += 1
                    return [np.asarray(outs[f"output_{j}"], dtype=dt)
                            for j, dt in enumerate(self.tout)]
                except Exception as exc:      # noqa: BLE001
                    self.cache.pop(shapes, None)
                    self.failed.add(shapes)
                    self._warn(f"engine execution failed: {exc}")
            self.stats["native_runs"] += 1
            return self.run_native(arrays)

    def run_native(self, arrays):
        """Run the original TF segment (its own graph and session, made once)."""
        if self._native is None:
            graph = tf.Graph()
            with graph.as_default():
                tf.compat.v1.import_graph_def(self.segment_gd, name="")
            ins, outs = conversion.segment_io(self.segment_gd)
            self._native = (tf.compat.v1.Session(graph=graph), [f"{n}:0" for n in ins],
                            [f"{n}:0" for n in outs])
        sess, ins, outs = self._native
        values = sess.run(outs, dict(zip(ins, arrays)))
        return [np.asarray(v, dtype=dt) for v, dt in zip(values, self.tout)]


def build_engine(segment_gd, precision, shapes, workspace, network=None, table=None):
    """Build a plan for concrete input shapes (module-level so tests can force failures):
    from the stored network when there is one, else by converting the segment. INT8
    builds replay the stored calibration ``table`` (no calibration at run time)."""
    calibrator = None
    if precision == "INT8" and table:
        from .calibration import TableCalibrator
        calibrator = TableCalibrator(table)
    if network is not None:
        return conversion.build_serialized_network_plan(network, precision, input_shapes=shapes,
                                                        max_workspace_size_bytes=workspace,
                                                        calibrator=calibrator)
    return conversion.build_plan(segment_gd, precision, input_shapes=shapes,
                                 max_workspace_size_bytes=workspace, calibrator=calibrator)


# ---------------------------------------------------------------------------- import

def _to_py_func(node, token):
    new = tf.compat.v1.NodeDef(name=node.name, op="PyFunc", device=node.device)
    new.input.extend(node.input)
    new.attr["token"].s = token.encode()
    new.attr["Tin"].CopyFrom(node.attr["Tin"])
    new.attr["Tout"].CopyFrom(node.attr["Tout"])
    return new


def runnable_graph_def(graph_def):
    """(GraphDef with engine nodes as PyFunc nodes, {engine name: EngineRunner})."""
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    runners = {}
    for node in graph_def.node:
        if node.op != ENGINE_OP:
            out.node.append(node)
            continue
        runner = EngineRunner(node)
        token = script_ops._py_funcs.insert(runner)   # noqa: SLF001 - the PyFunc registry
        _RUNNERS.append(runner)
        runners[node.name] = runner
        out.node.append(_to_py_func(node, token))
    return out, runners


def import_graph_def(graph_def, input_map=None, return_elements=None, name=None, op_dict=None,
                     producer_op_list=None):
    """Drop-in for ``tf.compat.v1.import_graph_def`` that makes engine nodes runnable.

    Works in a ``tf.Graph`` used by a ``tf.compat.v1.Session`` and inside
    ``tf.function`` / ``tf.compat.v1.wrap_function`` graphs.
    """
    return import_with_runners(graph_def, input_map, return_elements, name, op_dict,
                               producer_op_list)[0]


def import_with_runners(graph_def, input_map=None, return_elements=None, name=None,
                        op_dict=None, producer_op_list=None):
    """``import_graph_def``, also returning {engine node name: its EngineRunner}."""
    if not isinstance(graph_def, tf.compat.v1.GraphDef):
        raise EngineNodeError(f"import_graph_def: graph_def is a {type(graph_def).__name__}; "
                              "expected a tf.compat.v1.GraphDef")
    runnable, runners = runnable_graph_def(graph_def)
    graph = tf.compat.v1.get_default_graph()
    outer = graph
    while getattr(outer, "outer_graph", None) is not None:
        outer = outer.outer_graph
    for g in {id(graph): graph, id(outer): outer}.values():
        if not hasattr(g, "_py_funcs_used_in_graph"):
            g._py_funcs_used_in_graph = []      # noqa: SLF001 - as script_ops does
        g._py_funcs_used_in_graph.extend(runners.values())
    del op_dict          # deprecated and ignored by TensorFlow itself
    result = tf.compat.v1.import_graph_def(runnable, input_map=input_map,
                                           return_elements=return_elements, name=name,
                                           producer_op_list=producer_op_list)
    prefix = "import" if name is None else name
    for node in graph_def.node:
        if node.op != ENGINE_OP:
            continue
        op_name = f"{prefix}/{node.name}" if prefix else node.name
        try:
            op = graph.get_operation_by_name(op_name)
        except KeyError:
            continue
        for t, shape in zip(op.outputs, get_attr(node, "output_shapes", [])):
            t.set_shape(shape)
    return result, runners


def wrap_frozen_graph(graph_def, inputs, outputs):
    """A ``tf.function``-callable (ConcreteFunction) over a converted frozen graph."""
    def _import():
        import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    graph = wrapped.graph
    return wrapped.prune(tf.nest.map_structure(graph.as_graph_element, inputs),
                         tf.nest.map_structure(graph.as_graph_element, outputs))


def engine_runners():
    """Every EngineRunner created in this process (for stats and tests)."""
    return list(_RUNNERS)
