"""The CLI's TensorFlow models: frozen or converted .pb files and SavedModel directories.

    model = open_tf_model(path, kind, args)       # kind from workflows.cli_models.detect_kind
    model.inputs, model.output_names, model.run(feeds), model.profiled_contexts()
    entries = engine_entries(path, kind)          # every engine node, for cupyrt inspect

Every mistake a user can make here (a truncated .pb, a wrong output name, an
unknown signature) is a ``workflows.cli.CliError``: one line naming the file,
option or node, what was found and what was expected.
"""
import difflib
import logging

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from workflows.cli import CliError
from workflows.cli import _names as split_names

from engine import plan as planfile
from engine.settings import configure

from .engine_node import ENGINE_OP, EngineRunner, build_engine, import_with_runners
from .engine_storage import SEGMENT, WEIGHTS_ATTR, stored_network, stored_plan
from .graph_utils import get_attr
from .saved_model_runtime import (PREBUILT_PLANS, PREBUILT_SHAPES, bound_engine, engine_blobs,
                                  load_saved_model)

logger = logging.getLogger(__name__)

# nodes that never are a model's output, though nothing consumes them
_NOT_OUTPUTS = {"NoOp", "Const", "Placeholder", "Assert", "SaveV2", "RestoreV2"}


def read_graph_def(path, option="MODEL"):
    """A GraphDef from a binary .pb, with a one-line error for anything else."""
    with open(path, "rb") as f:        # an OSError is said in one line by main()
        data = f.read()
    gd = tf.compat.v1.GraphDef()
    try:
        gd.ParseFromString(data)
    except DecodeError as exc:
        raise CliError(f"{option} {path!r}", f"not a GraphDef ({len(data)} bytes; protobuf: "
                       f"{exc})", "a binary frozen GraphDef (.pb), complete (not truncated)"
                       ) from exc
    if not gd.node:
        raise CliError(f"{option} {path!r}", "a GraphDef without nodes",
                       "a frozen GraphDef (.pb) holding the model")
    return gd


def sink_nodes(graph_def):
    """Nodes nothing consumes (the likely outputs), in graph order."""
    used = {i.lstrip("^").split(":")[0] for n in graph_def.node for i in n.input}
    return [n.name for n in graph_def.node if n.name not in used and n.op not in _NOT_OUTPUTS]


def check_node_names(graph_def, names, option, path):
    """Every name (``node`` or ``node:k``) is a node of the graph, else one line naming it."""
    known = {n.name for n in graph_def.node}
    for name in names:
        node = name.split(":")[0].lstrip("^")
        if node not in known:
            close = difflib.get_close_matches(node, sorted(known), n=3)
            hint = f"close: {close}; " if close else ""
            raise CliError(option, f"node {node!r} is not in {path}",
                           f"a node of the graph ({hint}nodes nothing consumes: "
                           f"{sink_nodes(graph_def)[:8]})")


def _tensor(name):
    return name if ":" in name else f"{name}:0"


def _set_backend(backend):
    """--backend cupy|numpy: engine nodes run there (for this process and its children)."""
    if backend in ("cupy", "numpy"):
        configure(backend=backend)


class GraphModel:
    """An original or converted frozen GraphDef, run in one tf.compat.v1.Session."""
    kind = "graphdef"

    def __init__(self, path, outputs=(), backend="auto", graph_def=None, label=None):
        self.path = path
        gd = graph_def if graph_def is not None else read_graph_def(path)
        self.graph_def = gd
        check_node_names(gd, outputs, "--outputs", path)
        self.output_names = [_tensor(o) for o in outputs] or [_tensor(n) for n in sink_nodes(gd)]
        if not self.output_names:
            raise CliError(f"MODEL {path!r}", "a graph whose every node is consumed",
                           "output names: pass --outputs")
        self.inputs = {}
        for n in gd.node:
            if n.op == "Placeholder":
                shape = tf.TensorShape(n.attr["shape"].shape)
                self.inputs[f"{n.name}:0"] = (
                    np.dtype(tf.dtypes.as_dtype(n.attr["dtype"].type).as_numpy_dtype),
                    None if shape.rank is None else [-1 if d is None else d
                                                     for d in shape.as_list()])
        self.engines = sum(n.op == ENGINE_OP for n in gd.node)
        _set_backend(backend)
        inline = True if backend == "tensorflow" else None
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.fetches, self.runners = import_with_runners(
                gd, return_elements=self.output_names, name="", inline=inline)
        self.session = tf.compat.v1.Session(graph=self.graph)
        self.mode = "tensorflow" if inline or not self.runners else next(
            iter(self.runners.values())).mode
        self.label = label or (f"{'converted' if self.engines else 'original'} .pb {path}"
                               + (f" ({self.engines} engine node(s), engines on {self.mode})"
                                  if self.engines else ""))

    def run(self, feeds):
        try:
            values = self.session.run(self.fetches, {_tensor(k): v for k, v in feeds.items()})
        except tf.errors.OpError as exc:
            raise CliError(f"--inputs for {self.path!r}",
                           f"TensorFlow refused them ({exc.message.splitlines()[0]})",
                           f"arrays for {sorted(self.inputs)} of the graph's shapes") from exc
        return dict(zip(self.output_names, values))

    def profiled_contexts(self):
        return [(name, ctx) for name, r in self.runners.items() for ctx in _contexts(r)]

    def describe(self):
        return self.label

    def original(self):
        """The same graph with every engine node replaced by its segment's own TF ops."""
        if not self.engines:
            raise CliError("--compare", f"{self.path} has no engine nodes (it is the original "
                           "graph)", "a model written by cupyrt convert, or --compare ORIGINAL")
        outs = [o.split(":")[0] for o in self.output_names]
        return GraphModel(self.path, outs, "tensorflow", graph_def=self.graph_def,
                          label=f"TensorFlow: {self.path} with each engine's segment inlined "
                                "(the original ops)")


class SavedModelModel:
    """A SavedModel directory (original or converted), one signature."""
    kind = "savedmodel"

    def __init__(self, path, signature=None, backend="auto", outputs=()):
        _set_backend(backend)
        self.path = path
        try:
            self.keys = list(engine_blobs(path))
            self.loaded = load_saved_model(path)
        except (OSError, ValueError, DecodeError) as exc:
            raise CliError(f"MODEL {path!r}", f"not a loadable SavedModel ({exc})",
                           "a SavedModel directory written by TensorFlow or cupyrt convert"
                           ) from exc
        sigs = sorted(self.loaded.signatures)
        key = signature or ("serving_default" if "serving_default" in sigs else
                            sigs[0] if sigs else None)
        if key not in sigs:
            raise CliError("--signature", f"{key!r} is not a signature of {path}",
                           f"one of {sigs}")
        self.signature = key
        self.fn = self.loaded.signatures[key]
        specs = self.fn.structured_input_signature[1]
        self.inputs = {k: (np.dtype(s.dtype.as_numpy_dtype),
                           None if s.shape.rank is None else
                           [-1 if d is None else d for d in s.shape.as_list()])
                       for k, s in specs.items()}
        names = sorted(self.fn.structured_outputs)
        bad = [o for o in outputs if o not in names]
        if bad:
            raise CliError("--outputs", f"{bad} not outputs of signature {key!r}",
                           f"some of {names}")
        self.output_names = list(outputs) or names
        self.engines = [bound_engine(k) for k in self.keys]
        if backend == "tensorflow":
            for e in self.engines:            # the segments' own ops, in this process
                for r in _runners(e):
                    r.mode = "tensorflow"
        self.mode = backend if backend == "tensorflow" or not self.engines else \
            self.engines[0].runner.mode

    def run(self, feeds):
        try:
            out = self.fn(**{k: tf.constant(v) for k, v in feeds.items()})
        except (tf.errors.OpError, TypeError, ValueError) as exc:
            raise CliError(f"--inputs for {self.path!r}",
                           f"signature {self.signature!r} refused them "
                           f"({str(exc).splitlines()[0]})",
                           f"arrays for {sorted(self.inputs)} of the signature's shapes") from exc
        return {k: out[k].numpy() for k in self.output_names}

    def profiled_contexts(self):
        return [(e.name, ctx) for e in self.engines for r in _runners(e)
                for ctx in _contexts(r)]

    def describe(self):
        return (f"SavedModel {self.path} signature {self.signature!r} "
                f"({len(self.engines)} engine(s), engines on {self.mode})")


def _runners(saved_engine):
    """The EngineRunners of a SavedEngine: its own, and one per engine built ahead
    where those are runners of their own."""
    ahead = getattr(saved_engine, "prebuilt", {}) or {}
    return [saved_engine.runner] + [r for r in ahead.values() if isinstance(r, EngineRunner)]


def _contexts(runner):
    """The execution contexts a runner holds (per-shape cache, engines built ahead)."""
    values = list(runner.cache.values()) + list((getattr(runner, "ahead", None) or {}).values())
    return [c for c in values if hasattr(c, "profiler") and hasattr(c, "execute")]


def open_tf_model(path, kind, args):
    outputs = _names(getattr(args, "outputs", None))
    if kind == "savedmodel":
        return SavedModelModel(path, args.signature, args.backend, outputs)
    return GraphModel(path, outputs, args.backend)


def _names(values):
    return split_names(values)


# ---------------------------------------------------------------------------- inspect

def engine_nodes(path, kind):
    """(engine NodeDefs, {what the model holds besides}) of a .pb or SavedModel."""
    if kind == "savedmodel":
        try:
            blobs = engine_blobs(path)
        except (OSError, ValueError, DecodeError) as exc:
            raise CliError(f"FILE {path!r}", f"not a readable SavedModel ({exc})",
                           "a SavedModel directory") from exc
        nodes = [tf.compat.v1.NodeDef.FromString(b) for b in blobs.values()]
        return nodes, {"engine_nodes": len(nodes)}
    gd = read_graph_def(path, "FILE")
    nodes = [n for n in gd.node if n.op == ENGINE_OP]
    return nodes, {"graph_nodes": len(gd.node), "engine_nodes": len(nodes),
                   "tensorflow_nodes": len(gd.node) - len(nodes)}


def engine_entries(path, kind, built=False):
    """Per engine node: its attributes and the engine to describe: ("plan", bytes) for a
    static engine (and every plan built ahead), ("network", bytes) for a dynamic one."""
    nodes, totals = engine_nodes(path, kind)
    entries = []
    for node in nodes:
        segment = tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s)
        entry = {"name": node.name, "precision": get_attr(node, "precision_mode", "FP32"),
                 "static": bool(node.attr["serialized_plan"].s),
                 "segment_nodes": len(segment.node),
                 "calibrated": bool(node.attr["calibration_table"].s)
                 if "calibration_table" in node.attr else False,
                 "max_batch_size": get_attr(node, "max_batch_size", 0), "engines": []}
        if entry["static"]:
            entry["engines"].append(("plan", "static plan: the optimised network as built (after "
                                     "the builder's passes)", stored_plan(node)))
        else:
            net = stored_network(node)
            if net is None:
                entry["note"] = "converts only at concrete input shapes: built per shape"
            elif built:
                table = node.attr["calibration_table"].s if entry["calibrated"] else None
                # an INT8 engine not calibrated yet runs FP32 (engine_node.EngineRunner)
                prec = "FP32" if entry["precision"] == "INT8" and not table else \
                    entry["precision"]
                entry["engines"].append(("plan", f"network after the builder's passes ({prec})",
                                         build_engine(segment, prec, None, 0, network=net,
                                                      table=table)))
            else:
                entry["engines"].append(("network", "network as converted (before the "
                                         "builder's passes; --built shows it after)", net))
        shapes = get_attr(node, PREBUILT_SHAPES, [])
        plans = list(node.attr[PREBUILT_PLANS].list.s) if PREBUILT_PLANS in node.attr \
            else []
        for s, plan in zip(shapes, plans):
            if planfile.is_stripped(plan):        # stored without weights: from the segment
                fixed = tf.compat.v1.NodeDef()
                fixed.CopyFrom(node)
                fixed.attr["serialized_plan"].s = plan
                fixed.attr[WEIGHTS_ATTR].s = SEGMENT
                plan = stored_plan(fixed, segment)
            entry["engines"].append(("plan", f"built ahead for input shapes {s} (after the "
                                     "builder's passes)", plan))
        entries.append(entry)
    return entries, totals
