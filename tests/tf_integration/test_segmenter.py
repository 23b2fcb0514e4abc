"""Segmenter behaviour on small hand-built graphs, with a stand-in validator.

The validator here accepts a fixed set of op types, so these tests exercise the
clustering alone; tests/tf_integration/test_converter_api.py runs the same
shapes of graph end to end through the real registry.
"""
import numpy as np
import pytest
import tensorflow as tf

from tf_integration.errors import GraphError
from tf_integration.graph_utils import GraphIndex
from tf_integration.rewrites import strip_constant_control_edges
from tf_integration.registry import Reason
from tf_integration.segmenter import segment_graph

SUPPORTED = {"Relu", "Sigmoid", "Tanh", "AddV2", "Mul", "Identity", "MatMul", "Exp"}


def accept(node, graph):
    if node.op in SUPPORTED:
        return None
    return Reason(Reason.NOT_SUPPORTED, f"no converter for op {node.op}")


def build(fn):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8], name="x")
        fn(x)
    return GraphIndex(g.as_graph_def())


def seg(index, **kw):
    kw.setdefault("minimum_segment_size", 1)
    return segment_graph(index, accept, **kw)


def test_unsupported_op_mid_chain_gives_two_segments():
    def body(x):
        a = tf.nn.relu(x, name="a")
        b = tf.nn.sigmoid(a, name="b")
        c = tf.math.sin(b, name="c")            # not in SUPPORTED
        d = tf.nn.tanh(c, name="d")
        tf.exp(d, name="e")

    result = seg(build(body))
    assert [s.nodes for s in result.segments] == [["a", "b"], ["d", "e"]]
    assert result.reasons["c"].kind == Reason.NOT_SUPPORTED
    assert result.segments[0].inputs == ["x:0"] and result.segments[0].outputs == ["b:0"]
    assert result.segments[1].inputs == ["c:0"] and result.segments[1].outputs == ["e:0"]


def test_diamond_with_unsupported_branch_never_creates_a_cycle():
    #      x -> a -> b -------> d
    #             '-> s (TF) --^
    def body(x):
        a = tf.nn.relu(x, name="a")
        b = tf.nn.tanh(a, name="b")
        s = tf.math.sin(a, name="s")
        tf.add(b, s, name="d")

    index = build(body)
    result = seg(index, minimum_segment_size=2)
    assert [s.nodes for s in result.segments] == [["a", "b"]]
    for segment in result.segments:
        members = set(segment.nodes)
        # no segment both feeds s and depends on s
        feeds = any(p in members for p in index.producers("s"))
        waits = any(c in members for c in index.successors("s"))
        assert not (feeds and waits), segment.nodes
    assert result.reasons["d"].kind == Reason.CYCLE
    assert "s" in result.reasons["d"].detail
    assert result.reasons["s"].kind == Reason.NOT_SUPPORTED


def test_segments_below_minimum_stay_native_with_reason():
    def body(x):
        a = tf.nn.relu(x, name="a")
        b = tf.math.sin(a, name="s")
        c = tf.nn.tanh(b, name="c")
        d = tf.nn.sigmoid(c, name="d")
        tf.exp(d, name="e")

    result = seg(build(body), minimum_segment_size=3)
    assert [s.nodes for s in result.segments] == [["c", "d", "e"]]
    assert result.reasons["a"].kind == Reason.BELOW_MINIMUM
    assert "1 compute node" in result.reasons["a"].detail


def test_minimum_segment_size_counts_compute_nodes_not_identities():
    def body(x):
        a = tf.nn.relu(x, name="a")
        i1 = tf.identity(a, name="i1")
        i2 = tf.identity(i1, name="i2")
        tf.nn.tanh(i2, name="b")

    result = seg(build(body), minimum_segment_size=3)
    assert result.segments == []
    assert result.reasons["i1"].kind == Reason.BELOW_MINIMUM
    assert "2 compute node" in result.reasons["i1"].detail
    result = seg(build(body), minimum_segment_size=2)
    assert [s.nodes for s in result.segments] == [["a", "i1", "i2", "b"]]


def test_minimum_segment_size_minus_one_disables_conversion():
    result = seg(build(lambda x: tf.nn.relu(tf.nn.tanh(x, name="a"), name="b")),
                 minimum_segment_size=-1)
    assert result.segments == []
    assert result.reasons["a"].kind == Reason.BELOW_MINIMUM
    assert "disabled" in result.reasons["a"].detail


def test_denylisted_outputs_remain_outside_segments():
    def body(x):
        a = tf.nn.relu(x, name="a")
        b = tf.nn.tanh(a, name="b")
        tf.identity(b, name="out")

    result = seg(build(body), nodes_denylist=["out:0"])
    assert [s.nodes for s in result.segments] == [["a", "b"]]
    assert result.reasons["out"].kind == Reason.DENYLISTED
    assert result.segments[0].outputs == ["b:0"]


def test_multiple_outputs_of_one_segment():
    def body(x):
        a = tf.nn.relu(x, name="a")
        b = tf.nn.tanh(a, name="b")
        c = tf.nn.sigmoid(a, name="c")
        tf.math.sin(b, name="s1")
        tf.math.cos(c, name="s2")
        tf.identity(a, name="o3")

    result = seg(build(body), nodes_denylist=["o3"])
    assert len(result.segments) == 1
    assert result.segments[0].nodes == ["a", "b", "c"]
    assert result.segments[0].outputs == ["a:0", "b:0", "c:0"]


def test_nothing_convertible_explains_every_node():
    def body(x):
        tf.math.cos(tf.math.sin(x, name="s"), name="c")

    index = build(body)
    result = seg(index)
    assert result.segments == []
    assert set(result.reasons) == set(index.nodes)
    assert result.reasons["s"].kind == Reason.NOT_SUPPORTED
    assert result.reasons["x"].kind == Reason.NOT_COMPUTE


def test_constants_are_copied_not_members():
    w = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)

    def body(x):
        k = tf.constant(w, name="w")
        kr = tf.identity(k, name="w_read")
        m = tf.matmul(x, kr, name="mm")
        tf.nn.relu(m, name="r")

    result = seg(build(body))
    (s,) = result.segments
    assert s.nodes == ["mm", "r"]
    assert s.const_inputs == ["w_read:0"]
    assert result.reasons["w"].kind == Reason.NOT_COMPUTE


def test_control_edges_are_respected():
    # b waits (control) on s, which reads a: merging a and b would deadlock.
    def body(x):
        a = tf.nn.relu(x, name="a")
        s = tf.math.sin(a, name="s")
        with tf.control_dependencies([s]):
            tf.nn.tanh(a, name="b")

    result = seg(build(body), minimum_segment_size=2)
    assert all(not {"a", "b"} <= set(sg.nodes) for sg in result.segments)
    assert result.reasons["b"].kind == Reason.CYCLE


def test_control_output_recorded():
    def body(x):
        a = tf.nn.relu(x, name="a")
        b = tf.nn.tanh(a, name="b")
        with tf.control_dependencies([b]):
            tf.math.sin(x, name="s")

    (s,) = seg(build(body)).segments
    assert s.control_outputs == ["s"]


def test_segmentation_is_deterministic():
    def body(x):
        ys = [tf.nn.relu(x * float(i + 1), name=f"r{i}") for i in range(6)]
        t = tf.math.sin(ys[0], name="s")
        tf.add_n([t] + ys[1:], name="sum")

    index = build(body)
    first = [s.nodes for s in seg(index).segments]
    for _ in range(3):
        assert [s.nodes for s in seg(GraphIndex(index.graph_def)).segments] == first


def test_keras_noop_control_chain_is_stripped():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        w = tf.identity(tf.constant(np.ones((4, 4), np.float32)), name="read")
        y = tf.nn.relu(tf.matmul(x, w), name="y")
        with tf.control_dependencies([w]):
            noop = tf.no_op(name="NoOp")
        with tf.control_dependencies([noop]):
            tf.identity(y, name="out")
    gd = strip_constant_control_edges(g.as_graph_def())
    names = {n.name: n for n in gd.node}
    assert "NoOp" not in names
    assert list(names["out"].input) == ["y"]


def test_graph_errors_are_typed():
    gd = tf.compat.v1.GraphDef()
    gd.node.add(name="a", op="Relu", input=["missing"])
    with pytest.raises(GraphError, match="missing"):
        GraphIndex(gd)
    gd = tf.compat.v1.GraphDef()
    gd.node.add(name="a", op="NoOp")
    gd.node.add(name="a", op="NoOp")
    with pytest.raises(GraphError, match="two nodes named"):
        GraphIndex(gd)
    gd = tf.compat.v1.GraphDef()
    gd.node.add(name="a", op="Relu", input=["b"])
    gd.node.add(name="b", op="Relu", input=["a"])
    with pytest.raises(GraphError, match="cycle"):
        GraphIndex(gd).topological_order()


def test_segment_waits_on_the_control_inputs_of_constants_it_copies():
    # a constant under a control edge (as under a cond's pivot) is live only after it
    w = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)

    def body(x):
        s = tf.math.sin(x, name="s")
        with tf.control_dependencies([s]):
            k = tf.constant(w, name="w")
        tf.nn.relu(tf.matmul(x, tf.identity(k, name="w_read"), name="mm"), name="r")

    (segment,) = seg(build(body)).segments
    assert segment.nodes == ["mm", "r"]
    assert segment.const_inputs == ["w_read:0"]
    assert segment.control_inputs == ["s"]


def _while_graph():
    from test_control_flow import control_flow_v1

    g = tf.Graph()
    with control_flow_v1(), g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8], name="x")
        h = tf.nn.relu(tf.nn.tanh(x, name="pre_t"), name="pre_r")
        _, h = tf.compat.v1.while_loop(
            lambda i, _: i < 2, lambda i, v: (i + 1, tf.nn.relu(tf.nn.tanh(v) * 2.0)),
            [tf.constant(0), h], name="loop")
        tf.exp(tf.nn.sigmoid(h, name="post_s"), name="post_e")
    return GraphIndex(g.as_graph_def())


def test_loop_frame_members_stay_in_tf_unless_allowed_and_never_mix_frames():
    index = _while_graph()
    (frame,) = index.frames
    result = seg(index, minimum_segment_size=2)
    assert [s.nodes for s in result.segments] == [["pre_t", "pre_r"], ["post_s", "post_e"]]
    body = [n for n in index.nodes if index.frame_of(n) == frame
            and index.nodes[n].op in ("Tanh", "Mul", "Relu")]
    assert len(body) == 3
    for n in body:
        assert result.reasons[n] == Reason(Reason.CONTROL_FLOW,
                                           f"inside while-loop frame {frame!r}")
    merge = next(n for n in index.nodes if index.nodes[n].op == "Merge")
    assert result.reasons[merge] == Reason(Reason.CONTROL_FLOW, f"Merge of loop frame {frame!r}")

    allowed = seg(index, minimum_segment_size=2, allow_loop_frames=True)
    in_frame = [s for s in allowed.segments if index.frame_of(s.nodes[0]) == frame]
    assert in_frame and set(body) <= set(in_frame[0].nodes)
    for s in allowed.segments:
        assert len({index.frame_of(n) for n in s.nodes}) == 1, s.nodes
