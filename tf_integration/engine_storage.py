"""How an engine node stores its engine: every weight once.

An engine node must carry its segment as a TensorFlow GraphDef (what runs when
an engine cannot, with all the segment's constants) and its engine (a plan
for static engines, a network for dynamic ones), which holds the same weights
again, converted. Stored naively a converted model is 2-3x its original. So
the plan and the network are stored without their weight blob
(engine.plan.strip_weights) and rebuilt from the segment at load:

    stored:  segment_graph (weights)     serialized_plan / serialized_network (no weights)
    load:    segment_graph --convert--> network --builder passes, NumPy, no timing--> weights
             stripped header (tactics, precisions, ranges) + those weights --> full plan

The builder's decisions (tactics timed on the GPU, precisions, INT8 scales)
come from the stored header, so a static engine loads without re-timing.
Nodes written before this format (attribute ``weights_stored_in`` absent) hold
full plans and networks and are read as they are.
"""
import logging

import tensorflow as tf

import engine as rt
from engine import plan as planfile

from .calibration_table import TableCalibrator
from .integrity import seal
from .segment_to_engine import build_network, build_plan

logger = logging.getLogger(__name__)

WEIGHTS_ATTR = "weights_stored_in"
SEGMENT = b"segment_graph"


def store(node, plan=None, network=None):
    """Set the node's ``serialized_plan`` / ``serialized_network`` without weights,
    and record the digests of its payloads (integrity.py) as they now are."""
    node.attr["serialized_plan"].s = planfile.strip_weights(plan) if plan else b""
    node.attr["serialized_network"].s = planfile.strip_weights(network) if network else b""
    node.attr[WEIGHTS_ATTR].s = SEGMENT
    seal(node)


def weights_in_segment(node):
    return WEIGHTS_ATTR in node.attr and node.attr[WEIGHTS_ATTR].s == SEGMENT


def _segment(node, segment_gd):
    if segment_gd is None:
        segment_gd = tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s)
    return segment_gd


def stored_network(node, segment_gd=None):
    """The node's engine network with its weights (engine.serialize_network bytes),
    or None when the segment converts only at concrete shapes."""
    data = node.attr["serialized_network"].s if "serialized_network" in node.attr else b""
    if not data:
        return None
    if not weights_in_segment(node):
        return data
    _, network = build_network(_segment(node, segment_gd))
    rebuilt = rt.serialize_network(network)
    try:
        return planfile.attach_weights(data, rebuilt)
    except rt.PlanFormatError as exc:
        # converters changed since the node was written: the network converted now
        # is the one to build (a dynamic engine times its tactics per shape anyway)
        logger.warning("engine %s: %s; using the network converted now", node.name, exc)
        return rebuilt


def stored_plan(node, segment_gd=None):
    """The node's static plan with its weights, or None (dynamic engines).

    The weights are rebuilt by the builder on the NumPy backend (no tactic is
    timed: the choices come from the stored header). A network that no longer
    matches the stored plan (converters changed since) is built afresh, with a
    warning: its tactics are then timed again."""
    data = node.attr["serialized_plan"].s
    if not data:
        return None
    if not weights_in_segment(node):
        return data
    return plan_with_weights(node, data, segment_gd)


def plan_with_weights(node, data, segment_gd=None, input_shapes=None, network=None):
    """A stripped plan of ``node`` (``data``) with its weights rebuilt from the segment.

    ``input_shapes``: the shapes a per-shape plan was built for (None: a static
    plan, built at the network's own shapes); ``network``: the node's stored
    network with weights, when the per-shape plan was built from it (as
    engine_node.build_engine does), so the donor is the same network."""
    segment_gd = _segment(node, segment_gd)
    doc, _ = planfile.loads(data)
    flags = doc.get("engine", {}).get("flags", [])
    table = node.attr["calibration_table"].s if "calibration_table" in node.attr else b""
    calibrator = TableCalibrator(table) if "INT8" in flags and table else None
    if network is not None:
        network = rt.deserialize_network(network)
        for i, shape in enumerate(input_shapes or ()):
            network.get_tensor(f"input_{i}").shape = tuple(shape)
    else:
        _, network = build_network(segment_gd, input_shapes)
    builder = rt.Builder()
    config = builder.create_builder_config()
    config.backend = "numpy"            # weights only: no tactic timing on any device
    for flag in flags:
        config.set_flag(rt.BuilderFlag[flag])
    config.int8_calibrator = calibrator
    donor = builder.build_serialized_network(network, config)
    try:
        return planfile.attach_weights(data, donor)
    except rt.PlanFormatError as exc:
        logger.warning("engine %s: %s; building the engine again (tactics are timed again)",
                       node.name, exc)
        precision = "INT8" if "INT8" in flags else "FP16" if "FP16" in flags else "FP32"
        return build_plan(segment_gd, precision, input_shapes=input_shapes,
                          calibrator=calibrator)


