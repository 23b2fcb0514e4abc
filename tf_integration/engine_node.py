"""Engine nodes: how a converted segment lives in a GraphDef and runs in TensorFlow.

In the GraphDef an engine node is a node of op type ``CupyrtEngineOp`` whose
attributes carry everything it needs (so a saved .pb is self-contained):

    segment_graph   the segment as its own GraphDef (segment_to_engine.py): what TF runs
                    when an engine cannot, and the one copy of the segment's weights
    serialized_network  the converted network (dynamic engines), stored without
                    weights (engine_storage.py); empty when the segment only
                    converts at concrete shapes (then it is converted per shape)
    serialized_plan the plan built at convert() time (static engines), stored
                    without weights, or empty
    weights_stored_in   "segment_graph" (absent in nodes that store weights twice)
    Tin / Tout      input and output dtypes; input_shapes / output_shapes
    precision_mode, is_dynamic_op, max_cached_engines, max_batch_size,
    max_workspace_size_bytes
    use_calibration INT8 engines whose ranges come from calibration
    calibration_table   TensorRT-format calibration cache (calibration.py); an
                    INT8 node with use_calibration and no table is *pending*:
                    it runs FP32 (and records its inputs while calibrate() runs)
    payload_digests SHA-256 of each payload attribute above (integrity.py),
                    checked before a node is imported, inlined or bound: a changed
                    byte raises PayloadIntegrityError instead of running

TensorFlow has no kernel for that op type (we ship no C++), so
``import_graph_def`` rewrites each engine node before importing, by where the
process runs engines (``runtime_mode``):

- "cupy" (a CUDA device) or "numpy" (asked for with CUPYRT_BACKEND=numpy): an
  ``EagerPyFunc`` node (what ``tf.py_function`` builds) bound to an
  ``EngineRunner``. It receives TF eager tensors, so a GPU tensor reaches CuPy
  through DLPack without a host copy and the outputs go back the same way
  (engine/exchange.py); it runs in ``tf.compat.v1.Session`` and ``tf.function``.
  A tensor TF keeps on the host (a CPU-only TensorFlow on a GPU machine) is
  copied to the device once: the engine is why the model was converted.
- "tensorflow" (no CUDA device, nothing asked for): the segment's own nodes,
  inlined (engine_inline.py). A CPU host runs exactly the TF ops it ran
  before conversion: converting never slows it down.
"""
import collections
import hashlib
import logging
import threading
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import script_ops

import engine as rt
from engine import exchange
from engine import plan as planfile
from engine.backends import requested
from engine.gpu.device import available as cuda_available

from .calibration_table import TableCalibrator
from .engine_inline import inline_engine_node
from .engine_storage import plan_with_weights, store, stored_network, stored_plan
from .errors import EngineNodeError
from .graph_utils import get_attr
from .integrity import seal, verify
from .segment_to_engine import build_plan, build_serialized_network_plan, segment_io

logger = logging.getLogger(__name__)

ENGINE_OP = "CupyrtEngineOp"
_RUNNERS = []          # strong references: TF's PyFunc registry holds weak ones
_INLINED = collections.Counter()      # engine key -> imports that inlined its segment
_ANNOUNCED = []        # the no-CUDA line goes to the log once per process

# why a call ran the TensorFlow segment instead of an engine (keys of EngineRunner.fallbacks)
BATCH_TOO_LARGE = "batch exceeds max_batch_size"
BUILD_FAILED = "engine build failed"
RUN_FAILED = "engine execution failed"
NO_PLAN = "static engine without a plan"


class EngineFallbackWarning(UserWarning):
    """An engine could not be built or run; the TensorFlow segment ran instead."""

def runtime_mode():
    """Where engine nodes run in this process: "cupy" or "numpy" when
    $CUPYRT_BACKEND names one, else "cupy" with a CUDA device and "tensorflow"
    (the segment's own ops) without one, said once in the log."""
    name = requested()
    if name is not None:
        return name
    if cuda_available():
        return "cupy"
    if not _ANNOUNCED:
        _ANNOUNCED.append(True)
        logger.warning("no CUDA device: engine nodes run their TensorFlow segments (as fast "
                       "as the original model); set CUPYRT_BACKEND=numpy to run the engines "
                       "on the NumPy reference backend instead")
    return "tensorflow"


def engine_key(node):
    """Identifies an engine node across imports (its name and a digest of the whole
    node), so runtime statistics of one conversion are not mixed with another's."""
    data = node.SerializeToString(deterministic=True)
    return node.name, hashlib.blake2b(data, digest_size=16).hexdigest()


def make_engine_node(name, segment, segment_gd, graph, plan, params, network=None):
    """The NodeDef of an engine node for ``segment`` (see module docstring)."""
    node = tf.compat.v1.NodeDef(name=name, op=ENGINE_OP)
    node.input.extend(segment.inputs)
    node.input.extend(f"^{c}" for c in segment.control_inputs)
    node.attr["segment_graph"].s = segment_gd.SerializeToString()
    store(node, plan=plan, network=network)
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
    return seal(node)


class EngineRunner:
    """Runs one engine node: per-shape engine cache (LRU), TF fallback on failure.

    ``eager_call`` is what the EagerPyFunc node calls (TF eager tensors in and
    out); calling the runner itself takes and returns host arrays (tools, tests).
    """
    def __init__(self, node, mode=None, verified=False):
        if not verified:          # ``verified``: the caller checked this very node already
            verify(node)
        self.name = node.name
        self.key = engine_key(node)
        self.mode = mode or runtime_mode()
        self.segment_gd = tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s)
        self.node = tf.compat.v1.NodeDef()      # the attributes, without a second segment copy
        self.node.CopyFrom(node)
        del self.node.attr["segment_graph"]
        self.has_plan = bool(node.attr["serialized_plan"].s)
        self._plan = None
        self._network = None
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
        self.ahead = {}          # input shapes -> plan built ahead (bytes), then its context
        self.failed = set()                          # shapes whose engine failed to build
        self.stats = collections.Counter()
        self.fallbacks = collections.Counter()       # reason -> calls run natively for it
        self._lock = threading.Lock()
        self._static = None
        self._static_error = None
        self._native = None
        _RUNNERS.append(self)

    # ------------------------------------------------------------------ stored engine
    @property
    def static_plan(self):
        """The static plan with its weights (rebuilt from the segment once), or None."""
        if self._plan is None and self.has_plan:
            self._plan = stored_plan(self.node, self.segment_gd)
        return self._plan

    @property
    def network(self):
        """The dynamic engine's network with its weights (derived once), or None when
        the segment converts only at concrete shapes."""
        if self._network is None:
            self._network = stored_network(self.node, self.segment_gd) or b""
        return self._network or None

    # ------------------------------------------------------------------ engines
    def add_engine(self, shapes, plan):
        """Serve input ``shapes`` with ``plan``, built ahead of time (e.g. by
        TrtGraphConverterV2.build()). A plan stored without weights
        (engine_storage.strip_weights) gets them from the segment on first use.
        Engines added so are kept beside the LRU cache and never evicted."""
        self.ahead[tuple(tuple(int(d) for d in s) for s in shapes)] = bytes(plan)

    def _ahead_context(self, shapes):
        """The execution context of the engine added for ``shapes``, or None when it
        cannot load (then it is dropped, and the shapes are served as any other)."""
        ctx = self.ahead[shapes]
        if not isinstance(ctx, bytes):
            return ctx
        try:
            plan = ctx
            if planfile.is_stripped(plan):
                # the donor of the weights is built as the plan was (build_engine)
                plan = plan_with_weights(self.node, plan, self.segment_gd,
                                         shapes, self.network)
            ctx = rt.Runtime(backend=self.mode).deserialize_cuda_engine(
                plan).create_execution_context()
        except Exception as exc:      # noqa: BLE001 - any failure: serve the shapes as usual
            del self.ahead[shapes]
            logger.warning("engine %s: the engine built ahead for input shapes %s cannot "
                           "load (%s); serving them as shapes without one", self.name,
                           list(shapes), exc)
            return None
        self.ahead[shapes] = ctx
        return ctx

    def _context(self, shapes):
        """An execution context for these input shapes, or None (run natively)."""
        if self.pending and self.calibration_inputs is None and not self.stats["pending_warned"]:
            self.stats["pending_warned"] += 1
            logger.warning("engine %s is INT8 but not calibrated yet: it runs FP32 until "
                           "converter.calibrate() stores its calibration table", self.name)
        if shapes in self.ahead:
            ctx = self._ahead_context(shapes)
            if ctx is not None:
                self.stats["ahead_runs"] += 1
                return ctx
        if self.has_plan:
            if self.max_batch and shapes and shapes[0] and shapes[0][0] > self.max_batch:
                self._fallback(BATCH_TOO_LARGE, f"batch {shapes[0][0]} exceeds max_batch_size "
                               f"{self.max_batch} of the static engine")
                return None
            if shapes in self.failed:
                self._fallback(RUN_FAILED, f"the engine failed at input shapes {list(shapes)}")
                return None
            if self._static is None:
                if self._static_error is None:
                    try:
                        self._static = rt.Runtime(backend=self.mode).deserialize_cuda_engine(
                            self.static_plan)
                    except Exception as exc:      # noqa: BLE001 - any failure: run natively
                        self._static_error = f"loading the static engine failed: {exc}"
                    self._plan = None           # the engine holds the weights now
                if self._static is None:
                    self._fallback(BUILD_FAILED, self._static_error)
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
            self._fallback(BUILD_FAILED, f"no engine for input shapes {list(shapes)}")
            return None
        if not self.dynamic:
            self._fallback(NO_PLAN, "static engine node without a plan")
            return None
        try:
            plan = build_engine(self.segment_gd, "FP32" if self.pending else self.precision,
                                shapes, self.workspace, network=self.network, table=self.table)
            ctx = rt.Runtime(backend=self.mode).deserialize_cuda_engine(
                plan).create_execution_context()
        except Exception as exc:          # noqa: BLE001 - any failure means: run natively
            self.failed.add(shapes)
            self._fallback(BUILD_FAILED, f"building an engine for input shapes {list(shapes)} "
                           f"failed: {exc}")
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

    def _fallback(self, reason, detail):
        """Count a call that runs natively for ``reason``; say so the first time only
        (a server calling at an unservable batch must not flood its log)."""
        self.fallbacks[reason] += 1
        if self.fallbacks[reason] > 1:
            return
        msg = (f"engine node {self.name}: {detail}; running the TensorFlow segment instead "
               "(said once per engine node and reason; counted in converter.summary())")
        logger.warning(msg)
        warnings.warn(msg, EngineFallbackWarning, stacklevel=4)

    # ------------------------------------------------------------------ running
    def _record(self, values):
        if self.calibration_inputs is not None:
            self.calibration_inputs.append(
                [np.array(exchange.to_engine(v, "numpy"), copy=True) for v in values])

    def _run_engine(self, values):
        """Run on an engine: backend arrays out, or None when the segment must run."""
        try:
            arrays = [exchange.to_engine(v, self.mode) for v in values]
        except Exception as exc:      # noqa: BLE001 - e.g. CUPYRT_BACKEND=cupy without a device
            self._fallback(RUN_FAILED, f"inputs could not reach the {self.mode} backend: {exc}")
            return None
        shapes = tuple(tuple(a.shape) for a in arrays)
        ctx = self._context(shapes)
        if ctx is None:
            return None
        try:
            outs = exchange.execute(ctx, {f"input_{i}": a for i, a in enumerate(arrays)})
        except Exception as exc:      # noqa: BLE001
            self.cache.pop(shapes, None)
            self.failed.add(shapes)
            self._fallback(RUN_FAILED, f"engine execution failed: {exc}")
            return None
        self.stats["engine_runs"] += 1
        return [outs[f"output_{j}"] for j in range(len(self.tout))]

    def _run(self, values):
        with self._lock:
            self._record(values)
            outs = None if self.mode == "tensorflow" else self._run_engine(values)
            if outs is None:
                self.stats["native_runs"] += 1
            return outs

    def eager_call(self, *tensors):
        """The EagerPyFunc body: TF eager tensors in, TF tensors out (device tensors
        through DLPack, host arrays converted by TF)."""
        outs = self._run(tensors)
        if outs is None:
            return self.run_native(tensors)
        result = []
        for out in outs:
            value = exchange.from_engine(out)
            result.append(value if isinstance(value, np.ndarray)
                          else tf.experimental.dlpack.from_dlpack(value))
        return result

    def check_inputs(self, arrays):
        """Raise EngineNodeError unless ``arrays`` fit the node's inputs (count, dtype,
        rank and the dims TensorFlow knew). Inside a TF graph TF guarantees this; a
        direct call must not reach the engine, or the segment, with the wrong thing."""
        tin = [np.dtype(tf.dtypes.as_dtype(t).as_numpy_dtype)
               for t in self.node.attr["Tin"].list.type]
        if len(arrays) != len(tin):
            raise EngineNodeError(f"engine node {self.name} takes {len(tin)} input(s) "
                                  f"({', '.join(map(str, tin))}); got {len(arrays)}")
        shapes = get_attr(self.node, "input_shapes", [])
        for i, (a, dt) in enumerate(zip(arrays, tin)):
            where = f"engine node {self.name}: input {i}" + (
                f" ({self.node.input[i]})" if i < len(self.node.input) else "")
            got = getattr(a, "dtype", None)
            got = np.dtype(getattr(got, "as_numpy_dtype", got) if got is not None
                           else np.asarray(a).dtype)
            if got != dt:
                raise EngineNodeError(f"{where} has dtype {got}; expected {dt}")
            if i >= len(shapes) or shapes[i].rank is None:
                continue
            want, have = shapes[i].as_list(), tuple(np.shape(a))
            if len(have) != len(want) or any(w is not None and w != h
                                             for w, h in zip(want, have)):
                raise EngineNodeError(f"{where} has shape {have}; expected "
                                      f"{[-1 if w is None else w for w in want]} (-1 = any)")

    def __call__(self, *arrays):
        """Host arrays in, host arrays (of the node's output dtypes) out."""
        self.check_inputs(arrays)
        outs = self._run(arrays)
        if outs is None:
            outs = self.run_native(arrays)
        return [np.asarray(exchange.to_engine(o, "numpy"), dtype=dt)
                for o, dt in zip(outs, self.tout)]

    def run_native(self, values):
        """Run the original TF segment (a function made once): TF tensors out, on the
        device TF places them (no host round trip for GPU tensors)."""
        if self._native is None:
            def body():
                tf.compat.v1.import_graph_def(self.segment_gd, name="")

            wrapped = tf.compat.v1.wrap_function(body, [])
            ins, outs = segment_io(self.segment_gd)
            graph = wrapped.graph
            self._native = wrapped.prune([graph.as_graph_element(f"{n}:0") for n in ins],
                                         [graph.as_graph_element(f"{n}:0") for n in outs])
        # a pruned function binds tensors only (host arrays from tools are converted)
        return list(self._native(*[tf.convert_to_tensor(v) for v in values]))


def build_engine(segment_gd, precision, shapes, workspace, network=None, table=None):
    """Build a plan for concrete input shapes (module-level so tests can force failures):
    from the stored network when there is one, else by converting the segment. INT8
    builds replay the stored calibration ``table`` (no calibration at run time)."""
    calibrator = None
    if precision == "INT8" and table:
        calibrator = TableCalibrator(table)
    if network is not None:
        return build_serialized_network_plan(network, precision, input_shapes=shapes,
                                             max_workspace_size_bytes=workspace,
                                             calibrator=calibrator)
    return build_plan(segment_gd, precision, input_shapes=shapes,
                      max_workspace_size_bytes=workspace, calibrator=calibrator)


# ---------------------------------------------------------------------------- import

def bind_engine_node(node, mode=None, verified=False):
    """``(EagerPyFunc NodeDef, EngineRunner)`` for one engine node: the runner is
    registered where TF's EagerPyFunc kernel finds it (by the node's token)."""
    runner = EngineRunner(node, mode, verified=verified)
    func = script_ops.EagerFunc(runner.eager_call, [tf.dtypes.as_dtype(t) for t in
                                                    node.attr["Tout"].list.type], False)
    runner.eager_func = func                  # the registry holds it weakly; the runner strongly
    token = script_ops._py_funcs.insert(func)   # noqa: SLF001 - the py_func registry
    new = tf.compat.v1.NodeDef(name=node.name, op="EagerPyFunc", device=node.device)
    new.input.extend(node.input)
    new.attr["token"].s = token.encode()
    new.attr["is_async"].b = False
    new.attr["Tin"].CopyFrom(node.attr["Tin"])
    new.attr["Tout"].CopyFrom(node.attr["Tout"])
    return new, runner


def runnable_graph_def(graph_def, inline=None):
    """(GraphDef TF can run, {engine name: EngineRunner}).

    ``inline``: True puts each segment's own ops in place of its engine node
    (no runner), False binds runners; None decides by ``runtime_mode()``.
    Every engine node's payloads are checked first (integrity.verify): one
    changed byte anywhere raises before any node is inlined or bound.
    """
    for node in graph_def.node:
        if node.op == ENGINE_OP:
            verify(node)
    mode = runtime_mode()
    if inline is None:
        inline = mode == "tensorflow"
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    runners = {}
    for node in graph_def.node:
        if node.op != ENGINE_OP:
            out.node.append(node)
        elif inline:
            out.node.extend(inline_engine_node(node))
            _INLINED[engine_key(node)] += 1
        else:
            new, runners[node.name] = bind_engine_node(node, mode, verified=True)
            out.node.append(new)
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
                        op_dict=None, producer_op_list=None, inline=None):
    """``import_graph_def``, also returning {engine node name: its EngineRunner}
    (``inline`` as in ``runnable_graph_def``; calibration passes False: it needs
    runners to record what reaches each engine)."""
    if not isinstance(graph_def, tf.compat.v1.GraphDef):
        raise EngineNodeError(f"import_graph_def: graph_def is a {type(graph_def).__name__}; "
                              "expected a tf.compat.v1.GraphDef")
    runnable, runners = runnable_graph_def(graph_def, inline)
    graph = tf.compat.v1.get_default_graph()
    outer = graph
    while getattr(outer, "outer_graph", None) is not None:
        outer = outer.outer_graph
    for g in {id(graph): graph, id(outer): outer}.values():
        if not hasattr(g, "_py_funcs_used_in_graph"):
            g._py_funcs_used_in_graph = []      # noqa: SLF001 - as script_ops does
        g._py_funcs_used_in_graph.extend(r.eager_func for r in runners.values())
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


def runtime_stats(graph_def):
    """What the engine nodes of ``graph_def`` did at run time in this process, over
    every import of them: {engine name: {mode, imports, inlined, engine_runs,
    native_runs, engines_built, fallbacks: {reason: calls}}}."""
    out = {}
    for node in graph_def.node if graph_def is not None else ():
        if node.op != ENGINE_OP:
            continue
        key = engine_key(node)
        mine = [r for r in _RUNNERS if r.key == key]
        fallbacks = collections.Counter()
        for r in mine:
            fallbacks.update(r.fallbacks)
        out[node.name] = {
            "modes": sorted({r.mode for r in mine}), "imports": len(mine),
            "inlined": _INLINED[key],
            **{k: sum(r.stats[k] for r in mine)
               for k in ("engine_runs", "native_runs", "engines_built")},
            "fallbacks": dict(fallbacks)}
    return out
