"""Conversion errors: typed, naming what was wrong, and never fatal to convert():
a segment that cannot be expressed stays in TensorFlow with the reason."""
import numpy as np
import pytest
import tensorflow as tf

import engine as rt
from tf_integration import TrtGraphConverter, freeze_keras_model
from tf_integration.context import ConversionContext, Value, tf_to_engine_dtype
from tf_integration.converters.tensor import strided_slice_plan
from tf_integration.errors import ConversionError, GraphError
from tf_integration.graph_utils import GraphIndex
from tfi_helpers import build_graph, random_input, run_graph


def convert_and_check(body, shape, reason_fragment):
    gd, outs = build_graph(body, [shape])
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"], minimum_segment_size=1,
                             is_dynamic_op=True)
    converted = conv.convert()
    left = conv.report["left_to_tensorflow"]
    failed = {n: r for n, r in left.items() if r["kind"] == "conversion failed"}
    assert failed and all(reason_fragment in r["detail"] for r in failed.values()), left
    x = random_input((2,) + tuple(shape[1:]))
    np.testing.assert_allclose(run_graph(converted, outs, {"x0:0": x}, converted=True)[0],
                               run_graph(gd, outs, {"x0:0": x})[0], rtol=1e-6)


def test_padding_three_axes_stays_in_tensorflow():
    convert_and_check(lambda x: tf.pad(tf.nn.relu(x), [[0, 0], [1, 0], [0, 1], [1, 1]]),
                      (1, 3, 4, 5), "pads at most 2")


def test_padding_a_vector_stays_in_tensorflow():
    convert_and_check(lambda x: tf.pad(tf.reduce_sum(x, [1]), [[0, 0]]) * 0 +
                      tf.pad(tf.reshape(tf.nn.relu(x[0]), [-1]), [[1, 2]])[0],
                      (1, 3), "rank-1")


def test_slice_of_dynamic_dim_at_offset_stays_in_tensorflow():
    convert_and_check(lambda x: tf.slice(tf.nn.relu(x), [1, 0], [-1, 2]), (3, 4),
                      "dim 0 is dynamic")


def test_strided_slice_of_dynamic_dim_stays_in_tensorflow():
    convert_and_check(lambda x: tf.nn.relu(x)[1:, :2], (3, 4), "strided slice of dynamic dim")


def test_strided_slice_negative_index_into_dynamic_dim_raises():
    with pytest.raises(ConversionError, match="negative index -1 into dynamic dim 0"):
        strided_slice_plan((-1, 4), [-1], [0], [1], (0, 0, 0, 0, 1))


def test_engine_dtype_errors_list_valid_types():
    with pytest.raises(ConversionError, match="float64 has no engine data type"):
        tf_to_engine_dtype(tf.float64)


def _ctx():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        tf.nn.relu(x, name="r")
        tf.add(x, x, name="s")
    gd = g.as_graph_def()
    graph = GraphIndex(gd)
    network = rt.Builder().create_network()
    ctx = ConversionContext(network, graph)
    ctx.add_input("x:0", "input_0")
    return ctx, graph


def test_context_errors_name_node_and_input():
    ctx, graph = _ctx()
    relu = graph.nodes["r"]
    with pytest.raises(ConversionError, match="has 1 inputs; asked for input 3"):
        ctx.input(relu, 3)
    with pytest.raises(ConversionError, match="must be a constant"):
        ctx.const(relu, 0, "weights")
    with pytest.raises(ConversionError, match="has not been converted yet"):
        ctx.value("s:0")
    with pytest.raises(ConversionError, match="cannot broadcast rank 2 down to rank 1"):
        ctx.broadcast(ctx.value("x:0"), 1, (0,))
    with pytest.raises(GraphError, match="is not a constant"):
        graph.const_value("x:0")


def test_unknown_rank_input_is_reported():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, None, name="x0")
        tf.identity(tf.nn.relu(tf.nn.relu(x)), name="out0")
    conv = TrtGraphConverter(input_graph_def=g.as_graph_def(), nodes_denylist=["out0"],
                             minimum_segment_size=1)
    conv.convert()
    assert conv.report["left_to_tensorflow"]["Relu"]["kind"] == "unknown rank"


def test_freezing_a_model_without_inputs_is_an_error():
    import keras

    class Bare(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(GraphError, match="no declared inputs"):
        freeze_keras_model(Bare())


def test_value_layout_helpers():
    v = Value(const=np.arange(6, dtype=np.float32).reshape(2, 3))
    assert v.is_const and v.rank == 2 and v.tf_shape() == (2, 3)
    assert "const" in repr(v)


def test_a_failing_node_is_left_out_and_the_rest_still_converts():
    w = np.random.default_rng(4).standard_normal((3, 3, 5, 5)).astype(np.float32)

    def body(x):
        y = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"))
        y = tf.pad(y, [[0, 0], [1, 0], [0, 1], [1, 1]], name="pad3")   # 3 padded axes
        return tf.nn.relu(tf.nn.conv2d(y[..., 1:6], w, 1, "SAME"))

    gd, outs = build_graph(body, [(1, 6, 6, 5)])
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"], minimum_segment_size=2,
                             is_dynamic_op=True)
    converted = conv.convert()
    left = conv.report["left_to_tensorflow"]
    assert left["pad3"]["kind"] == "conversion failed" and "pads at most 2" in left["pad3"]["detail"]
    assert len(conv.report["engines"]) == 2, conv.summary()
    x = random_input((2, 6, 6, 5), seed=8)
    got = run_graph(converted, outs, {"x0:0": x}, converted=True)[0]
    ref = run_graph(gd, outs, {"x0:0": x})[0]
    assert np.linalg.norm(got - ref) <= 1e-5 * np.linalg.norm(ref)
