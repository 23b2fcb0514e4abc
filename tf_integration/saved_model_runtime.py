"""Engine nodes inside SavedModels: how they are saved, found and run again.

A SavedModel's functions may only hold ops TensorFlow knows, and we ship no
C++ kernel, so an engine node is saved as an ``EagerPyFunc`` (the op
``tf.py_function`` builds) whose token is the same fixed string in every
model, and whose first two inputs are constants of the saved graph:

    <engine>/cupyrt_key   Const string: sha256 of the blob (a short cache key)
    <engine>/cupyrt_blob  Const string: the engine NodeDef (segment graph,
                          network or plan, calibration table, engines built
                          ahead by build(), allow_build_at_runtime)
    <engine>              EagerPyFunc(key, blob, *tensors) -> tensors
                          token = TOKEN, Tin = [string, string] + Tin, Tout

Importing ``tf_integration`` registers one dispatcher under TOKEN in
TensorFlow's py-function registry. It turns a blob into a ``SavedEngine``
once per key (the blob tensor is handed over without a copy, and read only
on that first call) and runs the engine. So:

- ``tf.saved_model.load(dir)`` works in a fresh process after
  ``import tf_integration``; without that import TensorFlow fails with
  "Could not find callback with key=cupyrt_engine_v1 (import tf_integration
  before running this model)": the token says what is missing, and nothing
  runs silently wrong.
- ``load_saved_model(dir)`` also binds every engine at load time (from the
  constants in saved_model.pb), so the first call pays no parsing cost. On a
  host where engines do not run (no CUDA device, no CUPYRT_BACKEND), it
  rebuilds each signature with its engine calls replaced by the segments'
  TensorFlow ops instead (inline_engine_calls): no Python in the loop.
- Engines that build() made ahead are stored as plans without weights (the
  segment holds them, engine_storage.py); each engine's one runner takes
  them (EngineRunner.add_engine), so a SavedModel holds every weight once.
- Everything lives inside the SavedModel: nothing is read from the source
  model's directory, or from this one after loading.
- Nothing changed runs: the key constant is the blob's SHA-256 and the blob's
  node carries a digest per payload (integrity.py); load_saved_model checks both
  for every engine before it returns, the dispatcher before it binds one, and a
  mismatch raises PayloadIntegrityError naming the engine and the attribute.

Why not TF-TRT's way (engine ops with their own kernel): we ship no C++, and a
SavedModel function cannot hold an op type TensorFlow has no definition for;
EagerPyFunc is the one op that calls back into Python from a saved graph.
Each engine call crosses into Python once; with plain ``tf.saved_model.load``
on a CPU host that call runs the TensorFlow segment (measured at >= 0.9x the
original on ResNet50: benchmarks/host.py resnet50 --saved-model).
"""
import collections
import hashlib
import inspect
import json
import logging
import os
import threading
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.python.framework.function_def_to_graph import function_def_to_graph_def
from tensorflow.python.ops import script_ops
from tensorflow.python.saved_model import loader_impl

from engine import plan as planfile

from .engine_inline import inline_engine_node
from .engine_node import (ENGINE_OP, EngineFallbackWarning, EngineRunner, build_engine,
                          runtime_mode)
from .errors import TFIntegrationError
from .graph_utils import get_attr, make_const_node, parse_input
from .integrity import PayloadIntegrityError, seal, verify
from .loop_frames import drop_unused_functions

logger = logging.getLogger(__name__)

# The py-function token of every saved engine node. TensorFlow prints it when
# it is not registered, so it names the fix.
TOKEN = "cupyrt_engine_v1 (import tf_integration before running this model)"
KEY_SUFFIX, BLOB_SUFFIX = "/cupyrt_key", "/cupyrt_blob"
PREBUILT_SHAPES, PREBUILT_PLANS = "prebuilt_input_shapes", "prebuilt_plans"
ALLOW_BUILD = "allow_build_at_runtime"


class SavedModelError(TFIntegrationError, ValueError):
    """A SavedModel could not be read or bound (missing directory, bad engine data)."""

# ---------------------------------------------------------------------------- engines

class SavedEngine:
    """One saved engine node: one EngineRunner holding the engines build() made
    ahead of time (stored without weights, which come from the segment on first
    use: every weight is stored once) and building others per shape at run time.

    With allow_build_at_runtime=False, shapes without an engine built ahead run
    the TensorFlow segment (TF-TRT's rule), said once in the log.
    """
    def __init__(self, node):
        base = tf.compat.v1.NodeDef()
        base.CopyFrom(node)
        shapes = [json.loads(s) for s in get_attr(node, PREBUILT_SHAPES, [])]
        plans = list(node.attr[PREBUILT_PLANS].list.s) if PREBUILT_PLANS in node.attr else []
        self.allow_build = get_attr(node, ALLOW_BUILD, True)
        for key in (PREBUILT_SHAPES, PREBUILT_PLANS, ALLOW_BUILD):
            base.attr.pop(key, None)
        self.name = node.name
        self.static = bool(base.attr["serialized_plan"].s)     # one plan for every shape
        verify(node)            # the whole node: base lacks the plans built ahead
        self.runner = EngineRunner(base, verified=True)
        for shape_list, plan in zip(shapes, plans):
            self.runner.add_engine(shape_list, plan)
        self.stats = collections.Counter()
        self._warned = False

    @property
    def prebuilt(self):
        """{input shapes: plan bytes or execution context} of the engines built ahead."""
        return self.runner.ahead

    @property
    def engines_built(self):
        """Engines built at run time (build() ahead of time is not counted)."""
        return self.runner.stats["engines_built"]

    def __call__(self, values):
        """Run on TF eager tensors (or arrays); returns tensors or arrays."""
        shapes = _shape_key([v.shape for v in values])
        recorder = _RECORDER.get("shapes")
        if recorder is not None:          # build(): note the shapes, run TF's segment
            recorder.setdefault(self.key, []).append(shapes)
            self.stats["native_runs"] += 1
            return self.runner.run_native([np.asarray(v) for v in values])
        if shapes in self.runner.ahead:
            self.stats["prebuilt_runs"] += 1
            return _run(self.runner, values)
        if self.allow_build or self.static:
            self.stats["runtime_runs"] += 1
            return _run(self.runner, values)
        if not self._warned:
            self._warned = True
            msg = (f"engine node {self.name}: no engine was built ahead for input shapes "
                   f"{[list(s) for s in shapes]} and allow_build_at_runtime=False; running "
                   "the TensorFlow segment for such shapes")
            logger.warning(msg)
            warnings.warn(msg, EngineFallbackWarning, stacklevel=2)
        self.stats["native_runs"] += 1
        return self.runner.run_native([np.asarray(v) for v in values])

    def build_plan(self, shapes):
        """The plan this engine's runner would build at run time for input ``shapes``."""
        r = self.runner
        return build_engine(r.segment_gd, r.precision, [list(s) for s in shapes], r.workspace,
                            network=r.network, table=r.table)


def _run(runner, values):
    # EngineRunner.eager_call takes TF tensors as they are (GPU tensors by DLPack);
    # a runner without it takes host arrays.
    eager_call = getattr(runner, "eager_call", None)
    if eager_call is not None:
        return eager_call(*values)
    return runner(*[np.asarray(v) for v in values])


def _shape_key(shapes):
    return tuple(tuple(int(d) for d in s) for s in shapes)


_ENGINES = {}                 # key (bytes) -> SavedEngine, for the life of the process
_ENGINES_LOCK = threading.Lock()
# build() sets "shapes" to a dict; callbacks run on TensorFlow's threads, so this
# is process-wide rather than thread-local.
_RECORDER = {}


def engine_node_of(blob, key=None):
    """The engine NodeDef in a blob. ``key``: the blob's key constant, which must be
    its SHA-256; on a mismatch the node's own digests name the changed attribute
    where they can (verify), else the error names the blob."""
    actual = blob_key(blob)
    key = key or actual
    try:
        node = tf.compat.v1.NodeDef.FromString(blob)
    except Exception as exc:          # noqa: BLE001 - protobuf's DecodeError
        raise SavedModelError(f"engine data {key.decode()[:12]} is not a NodeDef "
                              f"({exc}); expected a blob written by "
                              "TrtGraphConverterV2.save()") from exc
    if node.op != ENGINE_OP:
        raise SavedModelError(f"engine data {key.decode()[:12]} holds a "
                              f"{node.op!r} node; expected {ENGINE_OP!r}")
    if key != actual:
        verify(node)
        raise PayloadIntegrityError(
            node.name, BLOB_SUFFIX[1:], f"has sha256 {actual.decode()[:16]}...",
            f"sha256 {key.decode()[:16]}... (its {KEY_SUFFIX[1:]} constant)")
    return node


def bind_engine(blob, key=None):
    """The SavedEngine of a blob (made once per key, after its checks:
    engine_node_of, verify)."""
    key = key or blob_key(blob)
    engine = _ENGINES.get(key)
    if engine is None:
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                engine = SavedEngine(engine_node_of(blob, key))
                engine.key = key
                _ENGINES[key] = engine
    return engine


def blob_key(blob):
    return hashlib.sha256(blob).hexdigest().encode()


def bound_engine(key):
    """The SavedEngine bound under ``key``, or None."""
    return _ENGINES.get(key)


def saved_engines():
    """Every SavedEngine bound in this process (stats and tests)."""
    return list(_ENGINES.values())


class _Dispatch(script_ops.EagerFunc):
    """The function behind TOKEN. TensorFlow's EagerFunc converts outputs to one
    fixed dtype list, but each engine has its own, so ``__call__`` is ours: the
    outputs already have the node's dtypes (EngineRunner returns them so)."""
    def __init__(self):
        super().__init__(None, [], False)

    def __call__(self, device, token, args):
        engine = _ENGINES.get(args[0].numpy())
        if engine is None:
            engine = bind_engine(args[1].numpy(), args[0].numpy())
        outs = engine(list(args[2:]))
        with context.eager_mode(), tf.device(device or "/device:CPU:0"):
            return [tf.convert_to_tensor(o) for o in outs]


_DISPATCH = _Dispatch()       # strong reference: the registry holds weak ones


def register():
    """Put the dispatcher under TOKEN (done on import; idempotent)."""
    script_ops._py_funcs._funcs[TOKEN] = _DISPATCH      # noqa: SLF001 - the registry


register()


class record_shapes:
    """Context manager: while active, engines note their input shapes and run natively.

    ``with record_shapes() as seen: fn(...)`` -> ``seen`` maps engine key to the
    list of input-shape tuples it received, in call order.
    """
    def __enter__(self):
        if "shapes" in _RECORDER:
            raise TFIntegrationError("record_shapes() is already active; build() calls "
                                     "cannot be nested")
        self.seen = _RECORDER["shapes"] = {}
        return self.seen

    def __exit__(self, *exc):
        _RECORDER.pop("shapes", None)
        return False


# ---------------------------------------------------------------------------- graphs

def saved_engine_node(node, prebuilt=None, allow_build_at_runtime=True):
    """The blob NodeDef: the engine node plus engines built ahead
    (``prebuilt``: {input shapes: plan bytes}) and the runtime-build rule."""
    verify(node)             # never re-seal a node changed since conversion
    out = tf.compat.v1.NodeDef()
    out.CopyFrom(node)
    del out.input[:]                   # the EagerPyFunc node carries the edges
    for shapes, plan in sorted((prebuilt or {}).items()):
        out.attr[PREBUILT_SHAPES].list.s.append(json.dumps([list(s) for s in shapes]).encode())
        # without weights: the segment holds them (engine_storage.py), once per engine
        out.attr[PREBUILT_PLANS].list.s.append(planfile.strip_weights(plan))
    out.attr[ALLOW_BUILD].b = bool(allow_build_at_runtime)
    return seal(out)


def runnable_graph_def(converted, prebuilt=None, allow_build_at_runtime=True):
    """A converted GraphDef with each engine node as key/blob constants + EagerPyFunc.

    ``prebuilt``: {engine name: {input shapes: plan}}. Returns (GraphDef,
    {engine name: key}, {engine name: [output TensorShape]}).
    """
    prebuilt = prebuilt or {}
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(converted.versions)
    out.library.CopyFrom(converted.library)
    keys, shapes = {}, {}
    for node in converted.node:
        if node.op != ENGINE_OP:
            out.node.append(node)
            continue
        blob = saved_engine_node(node, prebuilt.get(node.name),
                                 allow_build_at_runtime).SerializeToString()
        keys[node.name] = key = blob_key(blob)
        shapes[node.name] = get_attr(node, "output_shapes", [])
        out.node.append(make_const_node(node.name + KEY_SUFFIX, np.array(key, dtype=object)))
        out.node.append(make_const_node(node.name + BLOB_SUFFIX, np.array(blob, dtype=object)))
        call = out.node.add(name=node.name, op="EagerPyFunc", device=node.device)
        call.input.extend([node.name + KEY_SUFFIX, node.name + BLOB_SUFFIX])
        call.input.extend(node.input)
        call.attr["token"].s = TOKEN.encode()
        call.attr["is_async"].b = False
        call.attr["Tin"].list.type.extend([tf.string.as_datatype_enum] * 2)
        call.attr["Tin"].list.type.extend(node.attr["Tin"].list.type)
        call.attr["Tout"].CopyFrom(node.attr["Tout"])
    return out, keys, shapes


def graph_function(graph_def, input_names, output_names, input_specs, structured_outputs,
                   output_shapes=None):
    """A ConcreteFunction (a valid SavedModel signature) running ``graph_def``.

    ``input_specs``: [(signature input key, TensorSpec)] in the order of
    ``input_names`` (graph tensors fed); the outputs ``output_names`` are packed
    as ``structured_outputs`` (the source signature's dict). ``output_shapes``:
    {node name: [TensorShape]} for nodes whose static shapes TF cannot infer.
    """
    output_shapes = output_shapes or {}
    out_specs = tf.nest.flatten(structured_outputs)

    def body(*args):
        outs = tf.compat.v1.import_graph_def(graph_def, input_map=dict(zip(input_names, args)),
                                             return_elements=list(output_names), name="cupyrt")
        graph = tf.compat.v1.get_default_graph()
        for name, shapes in output_shapes.items():
            for t, shape in zip(graph.get_operation_by_name("cupyrt/" + name).outputs, shapes):
                t.set_shape(shape)
        # Identity: an output can also be an input; signatures need distinct tensors.
        # Shapes of the source signature: TF inferred those nodes' shapes at import,
        # before the engine outputs had theirs.
        flat = [tf.identity(t) for t in outs]
        for t, spec in zip(flat, out_specs):
            t.set_shape(t.shape.merge_with(spec.shape))
        return tf.nest.pack_sequence_as(structured_outputs, flat)

    keys = [key for key, _ in input_specs]
    if all(k.isidentifier() for k in keys):
        # named parameters: the function takes keywords in this process too, like
        # the loaded signature (a Python-keyword-safe name is all inspect needs)
        body.__signature__ = inspect.Signature(
            [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in keys])
    # Spec names become the signature's input keys.
    specs = [tf.TensorSpec(spec.shape, spec.dtype, name=key) for key, spec in input_specs]
    return tf.function(body, input_signature=specs, autograph=False).get_concrete_function()


# ---------------------------------------------------------------------------- loading

def engine_blobs(export_dir):
    """{key: blob} of every saved engine in a SavedModel directory's saved_model.pb;
    a blob whose key constant is not its SHA-256 raises (engine_node_of)."""
    proto = loader_impl.parse_saved_model(export_dir)
    blobs = {}
    for meta in proto.meta_graphs:
        graphs = [meta.graph_def.node] + [f.node_def for f in meta.graph_def.library.function]
        for nodes in graphs:
            consts = {n.name: n for n in nodes if n.op == "Const"}
            for name, node in consts.items():
                if not name.endswith(BLOB_SUFFIX):
                    continue
                blob = node.attr["value"].tensor.string_val[0]
                key_node = consts.get(name[:-len(BLOB_SUFFIX)] + KEY_SUFFIX)
                key = key_node.attr["value"].tensor.string_val[0] if key_node else None
                if key is not None and key != blob_key(blob):
                    engine_node_of(blob, key)             # raises, naming what changed
                blobs[blob_key(blob)] = blob
    return blobs


def load_saved_model(export_dir, tags=None, inline=None):
    """Load a SavedModel written by ``TrtGraphConverterV2.save`` (any SavedModel works).

    Returns what ``tf.saved_model.load`` returns: ``.signatures[key]`` run like
    the source model's, eagerly or inside a ``tf.function``. Where engines run
    (a CUDA device, or CUPYRT_BACKEND), every engine is bound here, from the
    model's own constants. Where they do not (engine_node.runtime_mode()
    "tensorflow"), each signature is rebuilt with its engine nodes replaced by
    their segments' TensorFlow ops (engine_inline.py): no Python call per engine,
    the model runs as fast as the original. ``inline``: True/False forces either.
    """
    path = os.fspath(export_dir)
    if not os.path.isdir(path):
        raise SavedModelError(f"load_saved_model: {path!r} is not a directory; expected a "
                              "SavedModel directory (as written by TrtGraphConverterV2.save)")
    if inline is None:
        inline = runtime_mode() == "tensorflow"
    # every engine checked before TensorFlow loads (and could run) anything
    blobs = engine_blobs(path)
    if inline:
        for blob in blobs.values():
            verify(engine_node_of(blob))
    loaded = tf.saved_model.load(path, tags=tags)
    if inline:
        rewrapped = {}
        for key in list(loaded.signatures):
            fn = loaded.signatures[key]
            if id(fn) not in rewrapped:
                rewrapped[id(fn)] = inlined_signature(fn)
            if rewrapped[id(fn)] is not None:
                loaded.signatures._add_signature(key, rewrapped[id(fn)])   # noqa: SLF001
        logger.info("loaded %s: engine nodes run as their TensorFlow segments (inlined), "
                    "signatures %s", path, sorted(loaded.signatures.keys()))
        return loaded
    for key, blob in blobs.items():
        bind_engine(blob, key)
    logger.info("loaded %s: %d engine(s) bound, signatures %s", path, len(blobs),
                sorted(loaded.signatures.keys()))
    return loaded


def inline_engine_calls(graph_def):
    """``graph_def`` with each saved engine call (EagerPyFunc under TOKEN) replaced
    by its segment's own ops and the key/blob constants dropped; returns
    (GraphDef, number of engines inlined). Calls inside library functions are
    left as they are (they still run, through the dispatcher)."""
    nodes = {n.name: n for n in graph_def.node}
    calls = [n for n in graph_def.node
             if n.op == "EagerPyFunc" and n.attr["token"].s == TOKEN.encode()]
    dropped = set()
    replaced = {}
    for call in calls:
        key_name, blob_name = (parse_input(i)[0] for i in call.input[:2])
        blob = nodes[blob_name].attr["value"].tensor.string_val[0]
        key = nodes[key_name].attr["value"].tensor.string_val[0] if key_name in nodes else None
        node = engine_node_of(blob, key)
        verify(node)
        node.name, node.device = call.name, call.device
        node.input.extend(call.input[2:])
        replaced[call.name] = inline_engine_node(node)
        dropped.update((key_name, blob_name))
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for n in graph_def.node:
        if n.name in replaced:
            out.node.extend(replaced[n.name])
        elif n.name not in dropped:
            out.node.append(n)
    return out, len(replaced)


def inlined_signature(fn):
    """A loaded signature's ConcreteFunction with its engine calls inlined
    (inline_engine_calls), taking and returning what ``fn`` does; None when
    there is nothing to inline or ``fn`` is not shaped as our saved signatures are.

    A loaded signature is a thin graph calling the saved function:

        <key> Placeholder --> StatefulPartitionedCall(f=<saved body>) --> Identity

    so the body (a FunctionDef) is turned back into a GraphDef, its engine calls
    inlined, and wrapped again with the signature's inputs and outputs."""
    if fn.captured_inputs:
        return None
    outer = fn.graph.as_graph_def()
    calls = [n for n in outer.node if n.op in ("StatefulPartitionedCall", "PartitionedCall")]
    funcs = {f.signature.name: f for f in outer.library.function}
    if len(calls) != 1 or calls[0].attr["f"].func.name not in funcs:
        return None
    call = calls[0]
    fdef = funcs[call.attr["f"].func.name]
    inner, flat = function_def_to_graph_def(fdef)
    inner.versions.CopyFrom(outer.versions)
    inner.library.CopyFrom(outer.library)
    inner, count = inline_engine_calls(inner)
    if not count:
        return None
    # signature input key -> the body's argument it feeds
    args = {parse_input(i)[0]: a.name for i, a in zip(call.input, fdef.signature.input_arg)}
    kwargs = fn.structured_input_signature[1]
    keys = sorted(kwargs)
    if {t.op.name for t in fn.inputs} != set(keys) or not set(keys) <= set(args):
        return None
    # signature output -> Identity of call:k -> the body's k-th return value
    by_name = {n.name: n for n in outer.node}
    outputs = []
    for t in fn.outputs:
        src = by_name[t.op.name]
        name, port, _ = parse_input(src.input[0]) if src.input else ("", 0, False)
        if src.op != "Identity" or name != call.name:
            return None
        ret = fdef.ret[fdef.signature.output_arg[port].name]
        outputs.append(flat.get(ret, ret if ":" in ret else ret + ":0"))
    wrapped = graph_function(drop_unused_functions(inner), [args[k] + ":0" for k in keys],
                             outputs, [(k, kwargs[k]) for k in keys], fn.structured_outputs)
    # The new function calls library functions (While bodies, conds) under the names fn's
    # library gives them; TensorFlow drops a function's library from the eager context when
    # the function is collected, so fn must live as long as the new one does.
    wrapped._cupyrt_source = fn         # noqa: SLF001 - a plain attribute, read by nobody
    return wrapped
