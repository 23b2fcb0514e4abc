"""Shape inference over ops this TensorFlow build does not register (graph_utils)."""
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from tf_integration import TrtGraphConverter
from tf_integration.graph_utils import GraphIndex, for_shape_inference
from tfi_helpers import build_graph, random_input, rel_l2, run_graph


def _rename(gd, name, op):
    for node in gd.node:
        if node.name == name:
            node.op = op
    return gd


def test_a_host_copy_unknown_to_this_build_reads_as_identity(monkeypatch):
    # tensorflow-cpu has no _CopyFromHostToGpu; graphs placed by a GPU build carry it
    real = op_def_registry.get
    monkeypatch.setattr(op_def_registry, "get",
                        lambda op: None if op == "_CopyFromHostToGpu" else real(op))
    x = random_input((3, 4), seed=9)
    gd, outs = build_graph(lambda a: tf.tanh(tf.identity(tf.nn.relu(a), name="copy")), [x.shape])
    ref = run_graph(gd, outs, {"x0:0": x})
    _rename(gd, "copy", "_CopyFromHostToGpu")
    graph = GraphIndex(gd)
    assert graph.shape("Tanh:0").as_list() == [None, 4]
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"], minimum_segment_size=1,
                             is_dynamic_op=True)
    converted = conv.convert()
    assert not any(n.op == "_CopyFromHostToGpu" for n in converted.node), conv.summary()
    assert rel_l2(run_graph(converted, outs, {"x0:0": x}, converted=True)[0], ref[0]) <= 1e-6


def test_an_unknown_custom_op_stands_in_as_a_placeholder_and_the_rest_gets_shapes():
    gd, _ = build_graph(lambda a: tf.nn.relu(tf.identity(a * 2.0, name="custom")) + 1.0, [(2, 5)])
    _rename(gd, "custom", "MyUnregisteredOp")
    standin = {n.name: n for n in for_shape_inference(gd).node}["custom"]
    assert standin.op == "Placeholder" and not standin.input
    graph = GraphIndex(gd)
    assert graph.shape("mul:0").as_list() == [None, 5]      # before the unknown op
    assert graph.shape("Relu:0").rank is None                 # after it: unknown, not an error
    assert for_shape_inference(graph.graph_def) is not gd      # the original is left alone
    assert {n.name: n.op for n in gd.node}["custom"] == "MyUnregisteredOp"


def test_an_unknown_op_without_a_type_leaves_the_graph_to_tensorflow_to_judge():
    gd, _ = build_graph(lambda a: tf.nn.relu(tf.identity(a, name="custom")), [(2, 5)])
    node = {n.name: n for n in gd.node}["custom"]
    node.op = "MyUnregisteredOp"
    del node.attr["T"]
    assert for_shape_inference(gd) is gd
    assert GraphIndex(gd).shape("Relu:0").rank is None
