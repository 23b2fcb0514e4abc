"""Segment -> self-contained segment GraphDef -> engine network -> plan.

A segment is cut out of the graph as its own small GraphDef:

    cupyrt_input_0 (Placeholder) --.
    cupyrt_input_1 (Placeholder) --+--> member nodes (+ copied constants) --> cupyrt_output_j (Identity)

That GraphDef is converted to an engine network once, at convert() time. In
dynamic mode the network (engine.serialize_network bytes) is stored in the
engine node and built per input shape; the GraphDef stays as what runs in
TensorFlow when an engine cannot (and is converted again per shape only for
the rare segment whose network needs concrete input shapes).
"""
import logging
from collections import Counter

import numpy as np
import tensorflow as tf

import engine as rt

from .context import ConversionContext, tf_to_engine_dtype
from .errors import ConversionError
from .graph_utils import GraphIndex, functions_called, make_const_node, parse_input, tensor_name
from .registry import lookup

logger = logging.getLogger(__name__)

INPUT_PREFIX, OUTPUT_PREFIX = "cupyrt_input_", "cupyrt_output_"
RECORDED_SHAPES = "_output_shapes"     # TF's attribute for known output shapes
PRECISIONS = ("FP32", "FP16", "INT8")


def segment_graph_def(graph, segment):
    """The self-contained GraphDef of ``segment`` (see module docstring)."""
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph.graph_def.versions)
    remap = {}
    for i, t in enumerate(segment.inputs):
        node = out.node.add(name=f"{INPUT_PREFIX}{i}", op="Placeholder")
        node.attr["dtype"].type = graph.dtype(t).as_datatype_enum
        node.attr["shape"].shape.CopyFrom(graph.shape(t).as_proto())
        remap[t] = node.name
    for t in segment.const_inputs:
        name = f"{parse_input(t)[0]}"
        out.node.append(make_const_node(name, graph.const_value(t)))
        remap[t] = name
    members = set(segment.nodes)
    for name in segment.nodes:
        node = out.node.add()
        node.CopyFrom(graph.nodes[name])
        node.device = ""
        del node.input[:]
        for inp in graph.nodes[name].input:
            src, port, ctrl = parse_input(inp)
            if ctrl:
                if src in members:
                    node.input.append(inp)
                continue
            t = tensor_name(src, port)
            node.input.append(inp if src in members else remap[t])
        if node.op == "Reshape" and graph.shape(tensor_name(name)).rank is not None:
            # a target computed outside the segment is a Placeholder here, so the
            # segment's own shape inference would lose the dims the whole graph knows
            # (the Shape of a tensor with static dims); TF's import applies recorded
            # _output_shapes, so the Reshape converter sees them (fuzz seed 2603)
            del node.attr[RECORDED_SHAPES].list.shape[:]     # one entry: a copied one goes
            node.attr[RECORDED_SHAPES].list.shape.add().CopyFrom(
                graph.shape(tensor_name(name)).as_proto())
    for j, t in enumerate(segment.outputs):
        node = out.node.add(name=f"{OUTPUT_PREFIX}{j}", op="Identity", input=[t])
        node.attr["T"].type = graph.dtype(t).as_datatype_enum
    # members that call functions (a recognised RNN region, a While) need them, and
    # the functions they call, for the TF fallback to run the segment
    needed = functions_called(graph.graph_def.library, [graph.nodes[n] for n in segment.nodes])
    out.library.function.extend(f for f in graph.graph_def.library.function
                                if f.signature.name in needed)
    return out


def segment_io(segment_gd):
    """(input names, output names) of a segment GraphDef, in index order."""
    ins = sorted((n.name for n in segment_gd.node if n.name.startswith(INPUT_PREFIX)),
                 key=lambda s: int(s[len(INPUT_PREFIX):]))
    outs = sorted((n.name for n in segment_gd.node if n.name.startswith(OUTPUT_PREFIX)),
                  key=lambda s: int(s[len(OUTPUT_PREFIX):]))
    return ins, outs


def example_shapes(segment_gd, batch=1, other=16):
    """Concrete input shapes for a segment: unknown batch -> ``batch``, others -> ``other``."""
    ins, _ = segment_io(segment_gd)
    nodes = {n.name: n for n in segment_gd.node}
    out = []
    for name in ins:
        dims = tf.TensorShape(nodes[name].attr["shape"].shape).as_list()
        out.append(tuple((batch if i == 0 else other) if d is None else d
                         for i, d in enumerate(dims)))
    return out


def build_network(segment_gd, input_shapes=None, graph=None):
    """Convert a segment GraphDef into ``(builder, network)``.

    ``input_shapes``: concrete shapes to build for (dynamic mode); None keeps
    the graph's shapes with -1 for unknown dims. Raises ConversionError (or the
    engine's NetworkDefinitionError) when a node cannot be expressed.
    """
    graph = graph or GraphIndex(segment_gd)
    builder = rt.Builder()
    network = builder.create_network()
    ctx = ConversionContext(network, graph)
    ins, outs = segment_io(segment_gd)
    for i, name in enumerate(ins):
        ctx.add_input(tensor_name(name), f"input_{i}",
                      shape=None if input_shapes is None else tuple(input_shapes[i]))
    skip = set(ins) | set(outs)
    for name in graph.topological_order():
        node = graph.nodes[name]
        if name in skip or node.op == "Const":
            continue
        ctx.node = node
        entry = lookup(node.op)
        try:
            produced = entry.fn(ctx, node)
        except (ConversionError, rt.NetworkDefinitionError) as exc:
            raise ConversionError(str(exc), node=node.name) from exc
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise ConversionError(f"converting {node.op} node {node.name!r}: {exc}",
                                  node=node.name) from exc
        ctx.set_outputs(node, produced)
    ctx.node = None
    marked = set()
    for j, name in enumerate(outs):
        src = graph.nodes[name].input[0]
        value = ctx.value(src)
        t = ctx.tensor(value)
        if t.is_network_input or id(t) in marked:
            t = network.add_identity(t).get_output(0)
        want = tf_to_engine_dtype(graph.dtype(src))
        if t.dtype != want:
            t = network.add_cast(t, want).get_output(0)
        t.name = f"output_{j}"
        network.mark_output(t)
        marked.add(id(t))
    return builder, network


def build_plan(segment_gd, precision_mode="FP32", input_shapes=None,
               max_workspace_size_bytes=None, graph=None, calibrator=None, max_batch_size=None,
               range_inputs=None, fp16_range_fallback=False):
    """Convert and build a segment: the serialized plan (bytes). ``max_batch_size``
    (static engines): recorded in the plan, whose execute() refuses larger batches.
    ``range_inputs``/``fp16_range_fallback``: see build_network_plan."""
    _check_precision(precision_mode)
    _, network = build_network(segment_gd, input_shapes, graph=graph)
    return build_network_plan(network, precision_mode, max_workspace_size_bytes, calibrator,
                              max_batch_size, range_inputs, fp16_range_fallback)


def build_serialized_network_plan(network_bytes, precision_mode="FP32", input_shapes=None,
                                  max_workspace_size_bytes=None, calibrator=None,
                                  range_inputs=None, fp16_range_fallback=False):
    """Build a stored network (engine.serialize_network bytes) for concrete input shapes.

    The network's inputs are ``input_0..``; ``input_shapes`` replace their
    declared shapes (-1 dims) before the build, as TensorRT's per-shape engines do.
    """
    _check_precision(precision_mode)
    network = rt.deserialize_network(network_bytes)
    if input_shapes is not None:
        for i, shape in enumerate(input_shapes):
            network.get_tensor(f"input_{i}").shape = tuple(shape)
    return build_network_plan(network, precision_mode, max_workspace_size_bytes, calibrator,
                              range_inputs=range_inputs, fp16_range_fallback=fp16_range_fallback)


def _check_precision(precision_mode):
    if precision_mode not in PRECISIONS:
        raise ConversionError(f"precision_mode {precision_mode!r}; expected one of "
                              + ", ".join(PRECISIONS))


def has_dynamic_ranges(network):
    """True when some tensor of ``network`` carries an INT8 range (from Q/DQ nodes)."""
    tensors = list(network._inputs) + [t for layer in network._layers for t in layer._outputs]
    return any(t.dynamic_range is not None for t in tensors)


def build_network_plan(network, precision_mode="FP32", max_workspace_size_bytes=None,
                       calibrator=None, max_batch_size=None, range_inputs=None,
                       fp16_range_fallback=False):
    """Build an engine network under TF-TRT's precision/workspace parameters: plan bytes.

    INT8 builds set FP16 too (layers without an INT8 kernel run FP16, as in
    TF-TRT). Their ranges come from ``calibrator`` (an engine calibrator, which
    may replay a stored table) or from ranges already on the network (explicit
    quantization); with neither, the engine is built FP16 with a warning.
    ``range_inputs`` (dicts input name -> array): FP16 builds check those values
    against FP16's range (engine/precision_range.py; findings in the plan's
    metadata "fp16_range"); ``fp16_range_fallback`` keeps the layers out of range in FP32.
    """
    builder = rt.Builder()
    config = builder.create_builder_config()
    if precision_mode in ("FP16", "INT8"):
        config.set_flag(rt.BuilderFlag.FP16)
    if precision_mode == "INT8":
        if calibrator is not None or has_dynamic_ranges(network):
            config.set_flag(rt.BuilderFlag.INT8)
            config.int8_calibrator = calibrator
        else:
            logger.warning("INT8 engine without calibration data or quantization ranges: "
                           "built in FP16")
    if max_workspace_size_bytes and hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(rt.MemoryPoolType.WORKSPACE, int(max_workspace_size_bytes))
    config.max_batch_size = max_batch_size or None
    if range_inputs is not None and precision_mode in ("FP16", "INT8"):
        config.range_check_inputs = range_inputs
        config.fp16_range_fallback = bool(fp16_range_fallback)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise rt.BuildError("the builder returned no plan")
    return bytes(plan)


def engine_histograms(plan):
    """(layer types, precisions) of a built plan's layers after the builder's passes,
    counted from one deserialization (e.g. ({'CONVOLUTION': 3}, {'HALF': 3}))."""
    layers = rt.Runtime().deserialize_cuda_engine(plan).layers
    return (dict(sorted(Counter(i.type.name for i in layers).items())),
            dict(sorted(Counter(i.precision.name for i in layers).items())))


def engine_precision_histogram(plan):
    """How many layers of a built plan run in each precision (e.g. {'INT8': 5, 'HALF': 2})."""
    return engine_histograms(plan)[1]


def numpy_dtype(tf_dtype):
    return np.dtype(tf.dtypes.as_dtype(tf_dtype).as_numpy_dtype)
