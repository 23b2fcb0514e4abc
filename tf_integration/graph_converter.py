"""TrtGraphConverter: TF-TRT's TF1 converter API over frozen GraphDefs.

    converted = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["Identity"]).convert()

Pipeline: drop vacuous control edges -> fold constants with TF -> segment ->
cut each segment into its own GraphDef -> convert it to an engine network (and
build the plan now when is_dynamic_op=False) -> splice engine nodes in.
A segment whose conversion fails stays in TensorFlow, with the reason.

INT8 (as in TF-TRT): with use_calibration=True, convert() returns a graph whose
engines run FP32 until ``calibrate()`` runs it on user data and returns the
INT8 graph (calibration.py). With use_calibration=False the ranges come from the
graph's quantization nodes (converters/quantization.py); a graph without any
falls back to FP16, with a warning.

FP16 range check (engine/precision_range.py): the calibration builds run FP16
where a layer has no INT8 kernel, so ``calibrate()`` also checks every layer's
FP32 values on the engine's recorded inputs against FP16's range; layers that
overflow or underflow are named per engine in the report ("fp16_range") and in
``summary()``, and with ``fp16_range_fallback=True`` they are kept in FP32.
"""
import json
import logging
import os
import time
import warnings

import tensorflow as tf

import engine as rt
from engine.atomic_file import write_bytes
from engine.settings import settings

from .calibration import calibrate_graph, check_algorithm, collect_engine_inputs
from .converters.quantization import QDQ_OPS
from .engine_node import ENGINE_OP, make_engine_node, runtime_stats
from .errors import ConverterArgumentError, TFIntegrationError
from .graph_utils import (GraphIndex, NON_COMPUTE_OPS, ROOT_FRAME, check_graph_def,
                          check_importable, node_of, parse_input, tensor_name)
from .loop_frames import drop_unused_functions
from .registry import Reason, supported_ops, validate
from .rewrites import (fold_constants, prune_dead_nodes, rewrite_batch_reshapes,
                       strip_constant_control_edges)
from .rnn_loops import rewrite_rnn_loops
from .segment_to_engine import (PRECISIONS, build_network, build_plan, engine_histograms,
                                engine_precision_histogram, example_shapes, segment_graph_def)
from .segmenter import histogram, segment_graph
from .summary import format_summary

logger = logging.getLogger(__name__)

MAX_RESEGMENTATIONS = 16     # nodes whose converter fails are dropped one at a time


class TrtGraphConverter:
    """Convert a frozen GraphDef; parameters mean what they mean in TF-TRT."""

    def __init__(self, input_saved_model_dir=None, input_saved_model_tags=None,
                 input_saved_model_signature_key=None, input_graph_def=None,
                 nodes_denylist=None, max_batch_size=1, max_workspace_size_bytes=1 << 30,
                 precision_mode="FP32", minimum_segment_size=3, is_dynamic_op=False,
                 maximum_cached_engines=1, use_calibration=True, report_path=None,
                 calibration_algorithm="entropy", fp16_range_fallback=False):
        if input_saved_model_dir is not None:
            raise ConverterArgumentError("input_saved_model_dir", input_saved_model_dir,
                                         "None: TrtGraphConverter takes frozen GraphDefs "
                                         "(input_graph_def); for a SavedModel use "
                                         "TrtGraphConverterV2(input_saved_model_dir=...)")
        if not isinstance(input_graph_def, tf.compat.v1.GraphDef):
            raise ConverterArgumentError("input_graph_def", type(input_graph_def).__name__,
                                         "a tf.compat.v1.GraphDef (a frozen graph)")
        if precision_mode not in PRECISIONS:
            raise ConverterArgumentError("precision_mode", precision_mode,
                                         "one of " + ", ".join(PRECISIONS))
        check_algorithm(calibration_algorithm)
        self.fp16_range_fallback = check_fp16_range_fallback(fp16_range_fallback)
        for arg, value, low in (("minimum_segment_size", minimum_segment_size, -1),
                                ("maximum_cached_engines", maximum_cached_engines, 1),
                                ("max_batch_size", max_batch_size, 1),
                                ("max_workspace_size_bytes", max_workspace_size_bytes, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConverterArgumentError(arg, value, f"an int >= {low}")
        if minimum_segment_size == 0:
            raise ConverterArgumentError("minimum_segment_size", 0,
                                         "an int >= 1, or -1 to disable conversion")
        if nodes_denylist is not None and (isinstance(nodes_denylist, str) or not all(
                isinstance(n, str) for n in nodes_denylist)):
            raise ConverterArgumentError("nodes_denylist", nodes_denylist,
                                         "a list of node or tensor names")
        self.input_graph_def = input_graph_def
        self.nodes_denylist = [node_of(n) for n in (nodes_denylist or [])]
        self.params = dict(max_batch_size=max_batch_size,
                           max_workspace_size_bytes=max_workspace_size_bytes,
                           precision_mode=precision_mode,
                           minimum_segment_size=minimum_segment_size,
                           is_dynamic_op=bool(is_dynamic_op),
                           maximum_cached_engines=maximum_cached_engines,
                           use_calibration=bool(use_calibration))
        self.calibration_algorithm = calibration_algorithm
        self.report_path = report_path or settings().report_json
        self.converted_graph_def = None
        self.report = None
        self.calibrated = False
        # precision the engine nodes carry, and the one convert() builds in (pending INT8: FP32)
        self._node_precision = self._build_precision = precision_mode

    @property
    def need_calibration(self):
        return self.params["precision_mode"] == "INT8" and self.params["use_calibration"]

    def _int8_mode(self, graph_def):
        """Decide what INT8 means for this graph (see the module docstring)."""
        self._node_precision = self._build_precision = self.params["precision_mode"]
        if self.params["precision_mode"] != "INT8":
            return
        if self.need_calibration:
            self._build_precision = "FP32"
        elif not any(n.op in QDQ_OPS for n in graph_def.node):
            msg = ("precision_mode='INT8' with use_calibration=False needs quantization nodes "
                   "(" + ", ".join(QDQ_OPS) + ") for its ranges; the graph has none, so the "
                   "engines are built in FP16")
            logger.warning(msg)
            warnings.warn(msg, UserWarning, stacklevel=3)
            self._node_precision = self._build_precision = "FP16"

    # ------------------------------------------------------------------ convert
    def convert(self):
        t0 = time.perf_counter()
        # engine nodes (a graph converted before) and ops a converter is registered for
        # are ours to run even where TensorFlow has no kernel for them
        check_graph_def(self.input_graph_def, known_ops={ENGINE_OP, *supported_ops()})
        known = {n.name for n in self.input_graph_def.node}
        missing = [n for n in self.nodes_denylist if n not in known]
        if missing:
            raise ConverterArgumentError("nodes_denylist", missing,
                                         "names of nodes in input_graph_def")
        keep = self.nodes_denylist
        gd = strip_constant_control_edges(self.input_graph_def, keep)
        gd, folded = fold_constants(gd, keep)
        gd, rnn_refused = rewrite_rnn_loops(gd, keep)     # Keras LSTM/GRU loops -> tagged calls
        gd = rewrite_batch_reshapes(gd, keep)
        self._int8_mode(gd)
        self.calibrated = False
        graph = GraphIndex(gd)
        check_importable(graph)          # shapes or types that disagree: TF's message, typed
        failed = {}          # node -> why its converter failed: left to TF, segment again

        def validate_unless_failed(node, graph):
            if node.name in failed:
                return Reason(Reason.CONVERSION_FAILED, failed[node.name])
            return validate(node, graph)

        for attempt in range(MAX_RESEGMENTATIONS + 1):
            result = segment_graph(graph, validate_unless_failed, keep, self.params["minimum_segment_size"])
            engines, engine_nodes, reasons = [], [], dict(result.reasons)
            retry = False
            for seg in result.segments:
                seg_gd = segment_graph_def(graph, seg)
                try:
                    plan, network = self._check_or_build(seg_gd)
                except (TFIntegrationError, ValueError, RuntimeError, TypeError) as exc:
                    node = getattr(exc, "node", None)
                    if node in seg.nodes and attempt < MAX_RESEGMENTATIONS:
                        logger.info("node %s stays in TensorFlow (%s); segmenting again", node,
                                    exc)
                        failed[node] = str(exc)
                        retry = True
                        break
                    logger.warning("segment %d (%d nodes) stays in TensorFlow: %s", seg.index,
                                   len(seg.nodes), exc)
                    for n in seg.nodes:
                        reasons[n] = Reason(Reason.CONVERSION_FAILED, str(exc))
                    continue
                name = f"CupyrtEngine_{len(engines)}"
                engine_nodes.append(make_engine_node(
                    name, seg, seg_gd, graph, plan,
                    dict(self.params, precision_mode=self._node_precision), network=network))
                engines.append(self._engine_report(name, seg, graph, plan))
            if not retry:
                break
        converted = self._splice(graph, result.segments, engine_nodes, engines)
        self.converted_graph_def = converted
        reasons.update({n: Reason(Reason.CONTROL_FLOW, why) for n, why in rnn_refused.items()
                        if n in reasons})
        self.report = self._make_report(graph, engines, reasons, folded,
                                        time.perf_counter() - t0)
        logger.info("converted in %.2f s: %d engine(s), %.1f%% of compute nodes",
                    self.report["conversion_seconds"], len(engines),
                    100 * self.report["converted_share"])
        if self.report_path:
            self.write_report(self.report_path)
        return converted

    def _check_or_build(self, seg_gd):
        """Convert the segment's network now (errors surface at convert time):
        ``(plan, network bytes)``. Static engines get the built plan; dynamic ones
        the serialized network, built per input shape at run time."""
        if not self.params["is_dynamic_op"]:
            return build_plan(seg_gd, self._build_precision,
                              max_workspace_size_bytes=self.params["max_workspace_size_bytes"],
                              max_batch_size=self.params["max_batch_size"]), None
        try:
            _, network = build_network(seg_gd)
        except rt.NetworkDefinitionError as exc:
            # Some layers need concrete dims (e.g. a slice across the batch dim); a
            # dynamic engine only ever sees concrete shapes, so check with one. Such a
            # network is only valid at those shapes: store none, convert per shape.
            shapes = example_shapes(seg_gd, self.params["max_batch_size"])
            logger.debug("segment needs concrete shapes (%s); checking with %s", exc, shapes)
            build_network(seg_gd, input_shapes=shapes)
            return None, None
        return None, rt.serialize_network(network)

    def _splice(self, graph, segments, engine_nodes, engines):
        """The output GraphDef: members replaced by engine nodes; each engine output
        'n:0' keeps its name through an Identity called n, others are rewired.

        Every reference to an absorbed member is redirected, in TF nodes and in
        engine nodes alike: a data input to the engine output that now carries the
        tensor, a control input ``^member`` to ``^engine`` (the engine runs the
        member, so waiting on the engine orders the same way; an engine never
        waits on itself). Constant chains only members read are then pruned."""
        by_name = {e["name"]: e for e in engines}
        out = tf.compat.v1.GraphDef()
        out.versions.CopyFrom(graph.graph_def.versions)
        out.library.CopyFrom(graph.graph_def.library)
        member_of, rewire, identities = {}, {}, []
        seg_by_index = {s.index: s for s in segments}
        for node in engine_nodes:
            seg = seg_by_index[by_name[node.name]["segment"]]
            for n in seg.nodes:
                member_of[n] = node.name
            for j, t in enumerate(seg.outputs):
                src, port, _ = parse_input(t)
                if port == 0:
                    ident = tf.compat.v1.NodeDef(name=src, op="Identity",
                                                 input=[tensor_name(node.name, j)])
                    ident.attr["T"].type = graph.dtype(t).as_datatype_enum
                    identities.append(ident)
                else:
                    rewire[t] = tensor_name(node.name, j)

        def redirect(node, own=None):
            inputs, seen = [], set()
            for inp in node.input:
                src, port, ctrl = parse_input(inp)
                if ctrl:
                    target = member_of.get(src, src)
                    if target == own or "^" + target in seen:
                        continue
                    inp = "^" + target
                    seen.add(inp)
                elif tensor_name(src, port) in rewire:
                    inp = rewire[tensor_name(src, port)]
                inputs.append(inp)
            del node.input[:]
            node.input.extend(inputs)

        for node in graph.graph_def.node:
            if node.name in member_of:
                continue
            new = out.node.add()
            new.CopyFrom(node)
            redirect(new)
        for node in engine_nodes:
            redirect(node, own=node.name)
        out.node.extend(engine_nodes)
        out.node.extend(identities)
        # functions only absorbed nodes called (RNN regions) live on in the segments
        return drop_unused_functions(prune_dead_nodes(out, self.nodes_denylist,
                                                      reference=self.input_graph_def))

    # ------------------------------------------------------------------ reports
    def _engine_report(self, name, seg, graph, plan):
        rep = {"name": name, "segment": seg.index, "nodes": len(seg.nodes),
               "compute_nodes": len(seg.compute_nodes),
               "precision": self._node_precision,
               "static": plan is not None,
               "inputs": [_tensor_report(graph, t) for t in seg.inputs],
               "outputs": [_tensor_report(graph, t) for t in seg.outputs],
               "ops": histogram(graph, seg.nodes), "members": list(seg.nodes)}
        if plan is not None:
            rep["layers"], rep["layer_precisions"] = engine_histograms(plan)
            rep["plan_bytes"] = len(plan)
        return rep

    def _make_report(self, graph, engines, reasons, folded, seconds):
        compute = [n for n, node in graph.nodes.items()
                   if node.op not in NON_COMPUTE_OPS and not graph.is_const(n)]
        converted = {m for e in engines for m in e["members"]}
        left = {n: r for n, r in reasons.items() if r.kind != Reason.NOT_COMPUTE
                or n not in converted}
        n_conv = sum(1 for n in compute if n in converted)
        return {"parameters": dict(self.params, nodes_denylist=self.nodes_denylist,
                                   fp16_range_fallback=self.fp16_range_fallback),
                "engines": engines,
                "compute_nodes": len(compute), "converted_compute_nodes": n_conv,
                "converted_share": n_conv / len(compute) if compute else 0.0,
                "constants_folded": folded, "conversion_seconds": seconds,
                "left_to_tensorflow": {n: dict(r.to_json(), op=graph.nodes[n].op,
                                               **_frame_entry(graph, n))
                                       for n, r in sorted(left.items(),
                                                          key=lambda kv: graph.order[kv[0]])}}

    def summary(self):
        """Human-readable conversion report (engines, share converted, and why not)."""
        if self.report is None:
            raise TFIntegrationError("summary() before convert(); call convert() first")
        return format_summary(self.report, runtime_stats(self.converted_graph_def))

    def write_report(self, path):
        if self.report is None:
            raise TFIntegrationError("write_report() before convert(); call convert() first")
        with open(path, "w") as f:
            json.dump(self.report, f, indent=1, sort_keys=True)

    # ------------------------------------------------------------------ misc API
    def save(self, output_saved_model_dir):
        """Write the converted frozen graph (binary GraphDef) to a .pb file."""
        if self.converted_graph_def is None:
            raise TFIntegrationError("save() before convert(); call convert() first")
        path = output_saved_model_dir
        if os.path.isdir(path):
            path = os.path.join(path, "model_opt.pb")
        # nothing half-written: a temporary file renamed over the old one, removed on failure
        return write_bytes(path, self.converted_graph_def.SerializeToString())

    def calibrate(self, fetch_names, num_runs, feed_dict_fn=None, input_map_fn=None):
        """Run the converted graph ``num_runs`` times (feeds from ``feed_dict_fn()``, or
        inputs mapped from ``input_map_fn()``, fetching ``fetch_names``), calibrate every
        engine on the inputs it received, and return the INT8 GraphDef (also kept as
        ``converted_graph_def``, so ``save()`` writes it)."""
        if self.converted_graph_def is None:
            raise TFIntegrationError("calibrate() before convert(); call convert() first")
        if not self.need_calibration:
            raise TFIntegrationError(
                f"calibrate() needs precision_mode='INT8' and use_calibration=True; this "
                f"converter has precision_mode={self.params['precision_mode']!r}, "
                f"use_calibration={self.params['use_calibration']}")
        if self.calibrated:
            raise TFIntegrationError("calibrate() was already called for this conversion; "
                                     "call convert() again to recalibrate")
        t0 = time.perf_counter()
        inputs = collect_engine_inputs(self.converted_graph_def, fetch_names,
                                       num_runs, feed_dict_fn, input_map_fn)
        out, plans = calibrate_graph(self.converted_graph_def, inputs,
                                     self.calibration_algorithm,
                                     self.fp16_range_fallback)
        self.converted_graph_def, self.calibrated = out, True
        for rep in self.report["engines"]:
            rep["calibration_batches"] = len(inputs.get(rep["name"], ()))
            if rep["name"] in plans:
                rep["fp16_range"] = fp16_range_findings(plans[rep["name"]])
            if rep["static"]:
                rep["layer_precisions"] = engine_precision_histogram(plans[rep["name"]])
                rep["plan_bytes"] = len(plans[rep["name"]])
        self.report["calibration"] = {"algorithm": self.calibration_algorithm,
                                      "num_runs": num_runs,
                                      "seconds": time.perf_counter() - t0}
        logger.info("calibrated %d engine(s) in %.2f s (%s)", len(plans),
                    self.report["calibration"]["seconds"], self.calibration_algorithm)
        if self.report_path:
            self.write_report(self.report_path)
        return out


GraphConverter = TrtGraphConverter


def check_fp16_range_fallback(value):
    if not isinstance(value, bool):
        raise ConverterArgumentError("fp16_range_fallback", value, "True or False")
    return value


def fp16_range_findings(plan):
    """The FP16 range findings a build recorded in its plan (engine/precision_range.py):
    a list of {"layer", "kind", ...}; [] for a plan built without sample inputs."""
    meta = rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).meta
    return [dict(f) for f in meta.get("fp16_range") or []]


def _tensor_report(graph, t):
    shape = graph.shape(t)
    return {"name": t, "dtype": graph.dtype(t).name,
            "shape": None if shape.rank is None else [-1 if d is None else d
                                                      for d in shape.as_list()]}


def count_engine_nodes(graph_def):
    return sum(1 for n in graph_def.node if n.op == ENGINE_OP)


def _frame_entry(graph, name):
    """{"frame": loop frame} for a node inside a lowered loop (summary.py lists a
    frame as one line), {} elsewhere."""
    frame = graph.frame_of(name)
    return {"frame": frame} if frame != ROOT_FRAME else {}
