"""Write a converted graph's engine networks out as files, for machines without TensorFlow.

    paths = export_engines(converted_graph_def, "out/")       # or: cupyrt export-engines

    out/
      CupyrtEngine_0.network     engine.serialize_network bytes (weights included)
      CupyrtEngine_1.network
      CupyrtEngine_1.calib       calibrated INT8 engines: the calibration table
                                 (TensorRT's cache format; give it to an engine
                                 calibrator as cache_file and the build skips calibration)
      manifest.json              per engine: file, precision, inputs/outputs
                                 (engine name, TF tensor it replaces, dtype, shape),
                                 calibration_cache (file or null)

A network is the engine node's converted network, before the builder's passes
(the stored one for dynamic engines; for static engines the segment is
converted again, which is what the stored plan was built from). Its inputs and
outputs are in TF's layout (NHWC stays NHWC), so the values TF feeds the
engine node go in unchanged:

    net = engine.deserialize_network(open("out/CupyrtEngine_0.network", "rb").read())
    net.get_tensor("input_0").shape = x.shape          # -1 dims: pick the shape
    plan = builder.build_serialized_network(net, config)
"""
import json
import logging
import os
import re

import tensorflow as tf

import engine as rt
from engine.atomic_file import write_bytes

from .engine_storage import stored_network
from .engine_node import ENGINE_OP
from .errors import EngineNodeError
from .graph_utils import get_attr, parse_input, tensor_name
from .segment_to_engine import build_network, example_shapes, segment_io

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def engine_network_bytes(node):
    """The engine node's network as engine.serialize_network bytes, and whether
    its input shapes had to be fixed (a segment that converts only at concrete shapes)."""
    stored = stored_network(node)      # weights rebuilt from the segment
    if stored:
        return stored, False
    segment_gd = tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s)
    try:
        _, network = build_network(segment_gd)
        fixed = False
    except rt.NetworkDefinitionError as exc:
        batch = get_attr(node, "max_batch_size", 0) or 1
        shapes = example_shapes(segment_gd, batch)
        logger.warning("engine %s converts only at concrete shapes (%s); exporting it for "
                       "input shapes %s", node.name, exc, shapes)
        _, network = build_network(segment_gd, input_shapes=shapes)
        fixed = True
    return rt.serialize_network(network), fixed


def _io(network, tensors, replaces, tf_shapes):
    out = []
    for t, tf_name, tf_shape in zip(tensors, replaces, tf_shapes):
        out.append({"name": t.name, "replaces": tf_name, "dtype": t.dtype.to_numpy().name,
                    "shape": [int(d) for d in t.shape],
                    "tf_shape": None if tf_shape.rank is None else
                    [-1 if d is None else d for d in tf_shape.as_list()]})
    return out


def _file_name(node_name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", node_name) + ".network"


def engine_manifest_entry(node, network_bytes, file_name, fixed_shapes=False):
    """What a user needs to run one exported network without TensorFlow."""
    network = rt.deserialize_network(network_bytes)
    segment_gd = tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s)
    _, out_names = segment_io(segment_gd)
    by_name = {n.name: n for n in segment_gd.node}
    ins = [i for i in node.input if not i.startswith("^")]
    outs = [by_name[n].input[0] for n in out_names]
    ins = [tensor_name(*parse_input(i)[:2]) for i in ins]
    outs = [tensor_name(*parse_input(o)[:2]) for o in outs]
    return {"name": node.name, "file": file_name,
            "precision": get_attr(node, "precision_mode", "FP32"),
            "static": bool(node.attr["serialized_plan"].s),
            "fixed_shapes": fixed_shapes,
            "inputs": _io(network, [network.get_input(i) for i in range(network.num_inputs)],
                          ins, get_attr(node, "input_shapes", [])),
            "outputs": _io(network, [network.get_output(j) for j in range(network.num_outputs)],
                           outs, get_attr(node, "output_shapes", []))}


def engine_output_of(graph_def, tensor):
    """``(engine node, output index)`` whose value ``tensor`` is, through Identity
    nodes (a model output kept in TF is usually an Identity of an engine output), or None."""
    nodes = {n.name: n for n in graph_def.node}
    seen = set()
    while True:
        name, port, _ = parse_input(tensor)
        node = nodes.get(name)
        if node is None or name in seen:
            return None
        seen.add(name)
        if node.op == ENGINE_OP:
            return name, port
        if node.op not in ("Identity", "Snapshot", "StopGradient") or port != 0:
            return None
        tensor = [i for i in node.input if not i.startswith("^")][0]


def export_engines(graph_def, out_dir, model_outputs=None):
    """Write each engine node's network to ``out_dir/<node name>.network`` and a
    ``manifest.json`` describing them; returns the paths written (manifest last).

    ``model_outputs``: TF tensor names of the model's outputs; the manifest then
    says which engine output each one is (``model_outputs`` section).
    """
    if not isinstance(graph_def, tf.compat.v1.GraphDef):
        raise EngineNodeError(f"export_engines: graph_def is a {type(graph_def).__name__}; "
                              "expected a tf.compat.v1.GraphDef (a converted graph)")
    nodes = [n for n in graph_def.node if n.op == ENGINE_OP]
    if not nodes:
        raise EngineNodeError("export_engines: the graph has no engine nodes "
                              f"({ENGINE_OP}); expected a graph from TrtGraphConverter.convert()")
    os.makedirs(out_dir, exist_ok=True)
    paths, entries = [], []
    for node in nodes:
        data, fixed = engine_network_bytes(node)
        entry = engine_manifest_entry(node, data, _file_name(node.name), fixed)
        paths.append(_write(os.path.join(out_dir, entry["file"]), data))
        table = node.attr["calibration_table"].s if "calibration_table" in node.attr else b""
        entry["calibration_cache"] = None
        if table:
            entry["calibration_cache"] = entry["file"].rsplit(".", 1)[0] + ".calib"
            paths.append(_write(os.path.join(out_dir, entry["calibration_cache"]), table))
        entries.append(entry)
    manifest = {"version": MANIFEST_VERSION, "plan_version": rt.PLAN_VERSION,
                "engines": entries}
    if model_outputs:
        manifest["model_outputs"] = {}
        for t in model_outputs:
            hit = engine_output_of(graph_def, t)
            manifest["model_outputs"][t] = None if hit is None else {
                "engine": hit[0], "output": f"output_{hit[1]}"}
    text = json.dumps(manifest, indent=1, sort_keys=True).encode()
    paths.append(_write(os.path.join(out_dir, MANIFEST), text))
    logger.info("exported %d engine network(s) to %s", len(nodes), out_dir)
    return paths


def _write(path, data):
    return write_bytes(path, data)    # nothing half-written (engine/atomic_file.py)


def load_manifest(out_dir):
    with open(os.path.join(out_dir, MANIFEST)) as f:
        return json.load(f)
