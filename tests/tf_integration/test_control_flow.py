"""Control flow is never an error (issue 10, point 2).

Lowered v1 loops (Enter/Merge/Switch/NextIteration/Exit/LoopCond) are ordered
without their NextIteration back edges, every loop frame is found, frame members
stay in TensorFlow with the frame named, and everything around the loop converts;
functional While/If/Case nodes stay native with a "control flow: ..." reason.
"""
import contextlib

import numpy as np
import pytest
import tensorflow as tf

from tf_integration import TrtGraphConverter, freeze_keras_model
from tf_integration.errors import GraphError
from tf_integration.graph_utils import ROOT_FRAME, GraphIndex
from tf_integration import registry
from tf_integration.registry import Reason
from tf_integration.segmenter import segment_graph
from tfi_helpers import rel_l2, run_graph


@contextlib.contextmanager
def control_flow_v1():
    """Build graphs with TF1 control flow (lowered primitives), then restore the default."""
    from tensorflow.python.ops import control_flow_util

    was_v2 = control_flow_util.ENABLE_CONTROL_FLOW_V2
    tf.compat.v1.disable_control_flow_v2()
    try:
        yield
    finally:
        if was_v2:
            tf.compat.v1.enable_control_flow_v2()


def convert(gd, outs, **kw):
    kw.setdefault("is_dynamic_op", True)
    kw.setdefault("minimum_segment_size", 2)
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[o.split(":")[0] for o in outs],
                             **kw)
    return conv, conv.convert()


def check_report_complete(conv, graph_def):
    """Every node is in an engine, left to TF with a reason, or folded away; no
    engine member is inside a loop frame."""
    index = GraphIndex(graph_def, infer_shapes=False)
    members = {m for e in conv.report["engines"] for m in e["members"]}
    left = conv.report["left_to_tensorflow"]
    folded = {n.name for n in graph_def.node} - set(left) - members
    # nodes missing from both are only those folding replaced by constants
    assert all(index.frame_of(n) == ROOT_FRAME for n in folded), folded
    assert not any(index.frame_of(m) != ROOT_FRAME for m in members)


# ---------------------------------------------------------------- lowered v1 loops
def nested_while_graph():
    """x -> dense+relu -> while i < 3: (while j < 2: h = tanh(h) * 0.5) ; h += 1 -> dense."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 8)).astype(np.float32)
    w2 = rng.standard_normal((8, 4)).astype(np.float32)
    g = tf.Graph()
    with control_flow_v1(), g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
        h = tf.nn.relu(tf.matmul(x, w1) + 0.5, name="pre")

        def inner(j, v):
            return j + 1, tf.tanh(v) * 0.5

        def outer(i, v):
            _, v = tf.compat.v1.while_loop(lambda j, _: j < 2, inner, [tf.constant(0), v],
                                           name="inner")
            return i + 1, v + 1.0

        _, h = tf.compat.v1.while_loop(lambda i, _: i < 3, outer, [tf.constant(0), h],
                                       name="outer")
        y = tf.nn.sigmoid(tf.matmul(h, w2) - 0.25, name="post")
        out = tf.identity(y, name="out")
    return g.as_graph_def(), [out.name]


def test_frames_are_found_with_their_parents():
    gd, _ = nested_while_graph()
    index = GraphIndex(gd, infer_shapes=False)
    frames = index.frames
    assert len(frames) == 2, frames
    (outer,) = [f for f in frames.values() if f.parent == ROOT_FRAME]
    (inner,) = [f for f in frames.values() if f.parent == outer.name]
    assert outer.name.startswith("outer") and inner.name.startswith("outer/inner")
    # Enter nodes belong to the frame they start, Exit nodes to the frame they leave
    for f in (outer, inner):
        assert f.enters and f.exits
        for n in f.enters + f.exits:
            assert index.frame_of(n) == f.name
    assert index.frame_of("pre") == ROOT_FRAME and index.frame_of("post") == ROOT_FRAME
    tanh = [n.name for n in gd.node if n.op == "Tanh"]
    assert tanh and all(index.frame_of(n) == inner.name for n in tanh)
    # the outer body's add (after the inner loop's Exit) is in the outer frame
    adds = [n.name for n in gd.node if n.op == "AddV2" and "outer" in n.name
            and "inner" not in n.name and index.frame_of(n.name) == outer.name]
    assert adds
    assert set(inner.members) <= set(n.name for n in gd.node)
    order = index.topological_order()
    assert len(order) == len(gd.node)


def test_v1_while_loop_graph_converts_around_the_loop():
    gd, outs = nested_while_graph()
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    ref = run_graph(gd, outs, {"x:0": x})
    conv, converted = convert(gd, outs)
    members = {m for e in conv.report["engines"] for m in e["members"]}
    assert {"pre", "post"} <= members, conv.summary()
    left = conv.report["left_to_tensorflow"]
    tanh = [n.name for n in gd.node if n.op == "Tanh"]
    for n in tanh:
        assert left[n]["kind"] == Reason.CONTROL_FLOW
        assert "outer/inner" in left[n]["detail"], left[n]
    assert "control flow (" in conv.summary()
    check_report_complete(conv, gd)
    got = run_graph(converted, outs, {"x:0": x}, converted=True)
    assert rel_l2(got[0], ref[0]) <= 1e-5


@pytest.mark.parametrize("layer", ["LSTM", "GRU"])
def test_keras_rnn_frozen_with_lowered_loop_converts_around_it(layer):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((5, 3))
    h = keras.layers.Dense(4, activation="relu", name="pre")(inp)
    h = getattr(keras.layers, layer)(6, name="rnn")(h)
    out = keras.layers.Dense(2, activation="tanh", name="post")(h)
    gd, ins, outs = freeze_keras_model(keras.Model(inp, out))
    assert any(n.op == "NextIteration" for n in gd.node)      # the loop is lowered
    x = np.random.default_rng(2).standard_normal((2, 5, 3)).astype(np.float32)
    ref = run_graph(gd, outs, {ins[0]: x})
    conv, converted = convert(gd, outs)
    index = GraphIndex(gd)
    (frame,) = index.frames
    members = {m for e in conv.report["engines"] for m in e["members"]}
    post = [n.name for n in gd.node if "/post" in n.name
            and n.op in ("MatMul", "BiasAdd", "Tanh")]
    assert len(post) == 3 and set(post) <= members, conv.summary()
    # (members a rewrite created, e.g. a recognised RNN loop, are not in the original)
    assert not any(index.frame_of(m) != ROOT_FRAME for m in members if m in index.nodes)
    # the segmenter alone (the converter's Keras RNN recogniser may take the loop):
    # every frame member stays in TF, naming the frame
    result = segment_graph(index, lambda node, graph: None, outs, 1)
    in_frame = index.frames[frame].members
    assert len(in_frame) > 20 and not any(
        index.frame_of(n) == frame for s in result.segments for n in s.nodes)
    for n in in_frame:
        assert result.reasons[n].kind in (Reason.CONTROL_FLOW, Reason.NOT_COMPUTE), n
        assert result.reasons[n].kind == Reason.NOT_COMPUTE or frame in result.reasons[n].detail
    got = run_graph(converted, outs, {ins[0]: x}, converted=True)
    assert rel_l2(got[0], ref[0]) <= 1e-4


# ---------------------------------------------------------------- functional control flow
def functional_graph():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        k = tf.compat.v1.placeholder(tf.int32, [], name="k")
        h = tf.nn.relu(x * 1.5 + 0.25, name="pre")
        h = tf.cond(tf.reduce_sum(h) > 0.0, lambda: tf.tanh(h), lambda: h * 2.0)
        _, h = tf.while_loop(lambda i, _: i < 2, lambda i, v: (i + 1, tf.sigmoid(v) + v),
                             [tf.constant(0), h])
        h = tf.switch_case(k, [lambda: h + 1.0, lambda: h - 1.0])
        y = tf.nn.relu(tf.exp(h * 0.1) - 0.5, name="post")
        tf.identity(y, name="out")
    return g.as_graph_def(), ["out:0"]


def test_functional_control_flow_stays_native_with_reason():
    gd, outs = functional_graph()
    ops = {n.name: n.op for n in gd.node}
    flow = {n: op for n, op in ops.items()
            if op in ("If", "StatelessIf", "While", "StatelessWhile", "Case", "StatelessCase")}
    assert {op.replace("Stateless", "") for op in flow.values()} == {"If", "While", "Case"}
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    feeds = {"x:0": x, "k:0": 1}
    ref = run_graph(gd, outs, feeds)
    conv, converted = convert(gd, outs)
    left = conv.report["left_to_tensorflow"]
    summary = conv.summary()
    for name, op in flow.items():
        assert left[name]["kind"] == Reason.CONTROL_FLOW, left[name]
        assert f"{name} ({op}) - {left[name]['detail']}" in summary
        assert str(Reason(left[name]["kind"], left[name]["detail"])).startswith("control flow: ")
    # the segmenter's own reason (the converter's loop recogniser may refine a While's)
    index = GraphIndex(gd)
    result = segment_graph(index, registry.validate, ["out"], 2)
    for name, op in flow.items():
        assert result.reasons[name] == Reason(
            Reason.CONTROL_FLOW, f"functional {op}: its branches/body run in TensorFlow")
    members = {m for e in conv.report["engines"] for m in e["members"]}
    assert {"pre", "post"} <= members, summary
    got = run_graph(converted, outs, feeds, converted=True)
    assert rel_l2(got[0], ref[0]) <= 1e-5


# ---------------------------------------------------------------- malformed frames
def _enter(gd, name, src, frame):
    node = gd.node.add(name=name, op="Enter", input=[src])
    node.attr["T"].type = tf.float32.as_datatype_enum
    if frame:
        node.attr["frame_name"].s = frame.encode()
    return node


def _const(gd, name):
    node = gd.node.add(name=name, op="Const")
    node.attr["dtype"].type = tf.float32.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.float32(1.0)))


def test_enter_without_frame_name_is_a_graph_error():
    gd = tf.compat.v1.GraphDef()
    _const(gd, "c")
    _enter(gd, "e", "c", "")
    with pytest.raises(GraphError, match="'e' has no frame_name"):
        GraphIndex(gd, infer_shapes=False).frame_of("e")


def test_one_frame_entered_from_two_parents_is_a_graph_error():
    gd = tf.compat.v1.GraphDef()
    _const(gd, "c")
    _enter(gd, "outer_enter", "c", "outer")
    _enter(gd, "f_from_outer", "outer_enter", "f")
    _enter(gd, "f_from_root", "c", "f")
    with pytest.raises(GraphError, match="frame 'f' is entered from frame"):
        GraphIndex(gd, infer_shapes=False).frames


def test_a_cycle_without_next_iteration_is_still_an_error():
    gd = tf.compat.v1.GraphDef()
    gd.node.add(name="m", op="Merge", input=["a", "b"])
    gd.node.add(name="a", op="Relu", input=["m"])
    gd.node.add(name="b", op="Relu", input=["a"])
    with pytest.raises(GraphError, match="apart from NextIteration back edges"):
        GraphIndex(gd, infer_shapes=False).topological_order()
