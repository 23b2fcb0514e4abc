"""INT8 calibration inside TensorFlow (TF-TRT's ``converter.calibrate``).

    converter = TrtGraphConverter(input_graph_def=gd, precision_mode="INT8")
    converter.convert()                      # engines run FP32 until calibrated
    int8_gd = converter.calibrate(["probs:0"], num_runs=10, feed_dict_fn=lambda: {"x:0": batch()})

How (exact, and simple): the converted graph runs ``num_runs`` times in a TF
session; every engine node records the arrays it receives (its engines run
FP32 meanwhile). Each engine's network is then calibrated by the engine's own
calibrator on exactly those batches -- statistics of every tensor of the
optimised network, as TensorRT collects them -- and the resulting table, in
TensorRT's text format (engine.calibration.write_cache), is stored in the
engine node's ``calibration_table`` attribute:

    run 1..num_runs:  TF ops --> CupyrtEngine_0 (FP32, records inputs) --> ...
    then per engine:  recorded batches --> EntropyCalibrator2 --> table --> INT8+FP16 build

Static engines get their INT8 plan built now; dynamic ones keep the network
and the table and build INT8 per input shape, replaying the table
(``TableCalibrator``, calibration_table.py) instead of calibrating again. A
saved .pb is therefore self-contained.
"""
import logging

import tensorflow as tf

import engine as rt

from .calibration_table import ALGORITHMS
from .engine_storage import store, stored_network
from .engine_node import ENGINE_OP, import_with_runners
from .errors import ConverterArgumentError
from .graph_utils import get_attr
from .segment_to_engine import build_plan, build_serialized_network_plan

logger = logging.getLogger(__name__)

CAUSES_NO_BATCHES = """\
engine node {name} received no inputs while calibrate() ran the graph. Likely causes:
  1. fetch_names do not depend on this engine (fetch the model's outputs)
  2. the engine sits in a branch the fed data never takes (tf.cond / Switch)
  3. a different graph was run: calibrate() runs the converter's converted graph"""


def check_algorithm(name):
    if name not in ALGORITHMS:
        raise ConverterArgumentError("calibration_algorithm", name,
                                     "one of " + ", ".join(repr(a) for a in ALGORITHMS))
    return name


def collect_engine_inputs(graph_def, fetch_names, num_runs, feed_dict_fn=None,
                          input_map_fn=None, native=False):
    """Run ``graph_def`` ``num_runs`` times; {engine node name: [[arrays of one run]...]}.
    ``native``: every engine node runs its TensorFlow segment meanwhile, so an engine
    fed by another one records TensorFlow's values (the FP16 range check's samples must
    not carry an upstream FP16 engine's rounding)."""
    if (feed_dict_fn is None) == (input_map_fn is None):
        raise ConverterArgumentError("feed_dict_fn/input_map_fn",
                                     "both" if feed_dict_fn else "neither",
                                     "exactly one of feed_dict_fn and input_map_fn")
    if isinstance(num_runs, bool) or not isinstance(num_runs, int) or num_runs < 1:
        raise ConverterArgumentError("num_runs", num_runs, "an int >= 1")
    if isinstance(fetch_names, str):
        fetch_names = [fetch_names]
    graph = tf.Graph()
    with graph.as_default():
        input_map = None
        if input_map_fn is not None:
            input_map = input_map_fn()
            for k, v in input_map.items():
                if not isinstance(k, str) or not isinstance(v, tf.Tensor):
                    raise ConverterArgumentError(
                        "input_map_fn", f"{{{type(k).__name__}: {type(v).__name__}}}",
                        "a function returning {tensor name (str): tf.Tensor}")
        # runners even where engines do not run (no CUDA device): they record what
        # reaches each engine node, and run its TensorFlow segment meanwhile
        fetches, runners = import_with_runners(graph_def, input_map=input_map,
                                               return_elements=list(fetch_names), name="",
                                               inline=False)
        for runner in runners.values():
            runner.calibration_inputs = []
            if native:
                runner.mode = "tensorflow"
        with tf.compat.v1.Session(graph=graph) as sess:
            for i in range(num_runs):
                sess.run(fetches, feed_dict=feed_dict_fn() if feed_dict_fn else None)
                logger.debug("calibration run %d/%d", i + 1, num_runs)
    out = {}
    for name, runner in runners.items():
        out[name], runner.calibration_inputs = runner.calibration_inputs, None
    return out


def calibrate_engine_node(node, runs, algorithm="entropy", fp16_range_fallback=False):
    """Calibrate one engine node (in place) on the inputs it recorded: sets
    ``calibration_table`` and, for static engines, the INT8 ``serialized_plan``.
    The same batches are the FP16 range check's samples (the layers without an INT8
    kernel run FP16); ``fp16_range_fallback`` keeps those out of range in FP32."""
    cls = ALGORITHMS[algorithm][0]
    segment_gd = tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s)
    network = stored_network(node, segment_gd)
    workspace = get_attr(node, "max_workspace_size_bytes", 0)
    static = not get_attr(node, "is_dynamic_op", True)
    batches = [{f"input_{i}": a for i, a in enumerate(arrays)} for arrays in runs]
    if static or network:
        calibrator = cls(batches)
        if network:
            plan = build_serialized_network_plan(
                network, "INT8", None, workspace, calibrator, range_inputs=batches,
                fp16_range_fallback=fp16_range_fallback)
        else:
            plan = build_plan(segment_gd, "INT8", None, workspace,
                              calibrator=calibrator,
                              max_batch_size=get_attr(node, "max_batch_size", 0),
                              range_inputs=batches,
                              fp16_range_fallback=fp16_range_fallback)
    else:
        # a segment that converts only at concrete shapes: calibrate at the first
        # batch's shapes, on the batches of those shapes
        shapes = [a.shape for a in runs[0]]
        same = [b for b, arrays in zip(batches, runs) if [a.shape for a in arrays] == shapes]
        calibrator = cls(same)
        plan = build_plan(segment_gd, "INT8", shapes, workspace, calibrator=calibrator,
                          range_inputs=same, fp16_range_fallback=fp16_range_fallback)
    table = calibrator.read_calibration_cache()
    node.attr["calibration_table"].s = table
    # weights stay in the segment only (engine_storage.py), whatever format the node had
    store(node, plan=plan if static else None, network=network)
    logger.info("engine %s calibrated (%s) on %d batch(es): %d tensor ranges", node.name,
                algorithm, len(runs), table.count(b"\n") - 1)
    return plan


def calibrate_graph(graph_def, inputs_by_engine, algorithm="entropy", fp16_range_fallback=False):
    """A copy of ``graph_def`` with every engine node calibrated on its recorded inputs.
    Returns (GraphDef, {engine name: plan bytes of the calibration build})."""
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    plans = {}
    for node in out.node:
        if node.op != ENGINE_OP or get_attr(node, "precision_mode") != "INT8":
            continue
        runs = inputs_by_engine.get(node.name)
        if not runs:
            raise rt.CalibrationError(CAUSES_NO_BATCHES.format(name=node.name))
        plans[node.name] = calibrate_engine_node(node, runs, algorithm, fp16_range_fallback)
    return out, plans
