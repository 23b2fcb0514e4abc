"""Every finding of the differential fuzzer (tf_integration/fuzz.py), as a
fixed-seed regression test: the seed's graph must convert and match TensorFlow
(or be refused with a reason), and the smallest graph showing the finding is
checked directly."""
import numpy as np
import pytest
import tensorflow as tf

from tf_integration import fuzz
from tfi_helpers import cross_validate


@pytest.mark.parametrize("seed", [23, 56])
def test_fuzz_seed_passes(seed):
    res = fuzz.check(seed)
    assert not res.failed, str(res)


def test_static_engine_sized_by_the_largest_leading_dim_inside_the_graph_runs_on_the_engine():
    # seed 23: a pad on dim 0 makes an engine input larger than the fed batch; a static
    # engine then runs only when max_batch_size covers that dim (TF-TRT's rule), which
    # the fuzzer now asks for
    res = fuzz.check(23)
    assert res.status == "converted" and res.engines >= 1, str(res)


def test_batch_matmul_with_unit_batch_dim_matches_tensorflow_where_tensorflow_is_right():
    # seed 56: TF 2.21's oneDNN BatchMatMulV2 is wrong for x (3, 1, 6, 2) @ y (2, 2);
    # the engine is right; with y carrying x's batch dims both agree
    rng = np.random.default_rng(56)
    x = rng.standard_normal((3, 1, 6, 2)).astype(np.float32)
    w = rng.standard_normal((3, 1, 2, 2)).astype(np.float32)
    cross_validate(lambda t: tf.raw_ops.BatchMatMulV2(x=t, y=w, adj_y=True), [x], tol=1e-5)


# Seeds 2529, 3884 and 4287 of the 5,000-graph run drew a Conv2D with one input channel, a
# width of 1-2 and strides (1, 2) (SAME or EXPLICIT). The reference was what is wrong there:
# TensorFlow 2.21's oneDNN convolution (on by default on x86) gives rel. L2 ~1 against its
# own kernel (TF_ENABLE_ONEDNN_OPTS=0) and against a plain loop, which both equal the engine
# (the test below). The fuzzer compares with in-process TensorFlow, so its generator no longer
# draws that configuration (as for oneDNN's BatchMatMulV2), and the seeds must now pass.
@pytest.mark.parametrize("seed", [2529, 3884, 4287])
def test_fuzz_seed_conv_unequal_strides(seed):
    res = fuzz.check(seed)
    assert not res.failed, str(res)


def test_generator_draws_no_strides_1_2_conv_on_one_narrow_channel():
    # the configuration oneDNN gets wrong is not drawn in those seeds' graphs
    for seed in (2529, 3884, 4287):
        steps = fuzz.generate(seed).ops
        convs = [s for s in steps if s.startswith("Conv2D")]
        assert convs and not any("s[1, 2]" in s for s in convs), steps


def _conv_loops(x, w, stride_w, pad_left):
    """NHWC Conv2D, stride 1 in H (SAME: pad bottom), ``stride_w`` in W, by loops."""
    n, h, wd, _ = x.shape
    r, s, _, k = w.shape
    out_w = -(-wd // stride_w)
    xp = np.zeros((n, h + r - 1, (out_w - 1) * stride_w + s, x.shape[3]), np.float64)
    xp[:, :h, pad_left:pad_left + wd] = x
    y = np.zeros((n, h, out_w, k))
    for i in range(h):
        for j in range(out_w):
            patch = xp[:, i:i + r, j * stride_w:j * stride_w + s]
            y[:, i, j] = np.einsum("nrsc,rsck->nk", patch, w)
    return y


_ONEDNN_OFF = """
import sys, numpy as np, tensorflow as tf
x, w = np.load(sys.argv[1]), np.load(sys.argv[2])
np.save(sys.argv[3], tf.nn.conv2d(x, w, [1, 1, 2, 1], "SAME").numpy())
"""


@pytest.mark.parametrize("width", [1, 2])
def test_conv2d_one_channel_narrow_width_strides_1_2_matches_tensorflows_own_kernel(width,
                                                                                    tmp_path):
    import os
    import subprocess
    import sys

    from tf_integration import TrtGraphConverter
    from tfi_helpers import build_graph, rel_l2, run_graph

    rng = np.random.default_rng(4287)
    x = rng.standard_normal((2, 4, width, 1)).astype(np.float32)
    w = rng.standard_normal((2, 3, 1, 3)).astype(np.float32)
    gd, outs = build_graph(lambda t: tf.nn.conv2d(t, w, [1, 1, 2, 1], "SAME"), [x.shape])
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"], minimum_segment_size=1,
                             is_dynamic_op=True)
    got = run_graph(conv.convert(), outs, {"x0:0": x}, converted=True)[0]
    assert rel_l2(got, _conv_loops(x, w, 2, 1 if width == 1 else 0)) <= 1e-6
    # TensorFlow's own kernel agrees; its oneDNN kernel in this process need not
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", _ONEDNN_OFF, str(tmp_path / "x.npy"),
                    str(tmp_path / "w.npy"), str(tmp_path / "ref.npy")], env=env, check=True,
                   timeout=120)
    assert rel_l2(got, np.load(tmp_path / "ref.npy")) <= 1e-6


def test_fuzz_seed_2603_slice_after_loops_runs_on_the_engine():
    res = fuzz.check(2603)
    assert res.status == "converted" and res.engines == 2, str(res)


@pytest.mark.parametrize("op", ["Split", "SplitV", "Unpack"])
def test_split_of_a_reshape_to_a_target_fed_from_outside_the_engine_matches_tensorflow(op):
    # seed 2603's cause: a Reshape to a shape tensor that is an engine input (its Shape
    # op runs elsewhere) is a Reshape to a Placeholder in the segment GraphDef, whose
    # shape inference then lost every dim the whole graph knew; the validator had
    # accepted the Split on the whole graph's shapes, the converter took the split sizes
    # from the engine's -1 and the engine sliced from coordinate -1 at run time
    import warnings

    from tf_integration import TrtGraphConverter
    from tf_integration.engine_node import ENGINE_OP, EngineFallbackWarning
    from tfi_helpers import build_graph, rel_l2, run_graph

    rng = np.random.default_rng(2603)
    x = rng.standard_normal((3, 6, 2, 2)).astype(np.float32)
    y = rng.standard_normal((3, 6, 2, 2)).astype(np.float32)

    def body(a, b):
        r = tf.reshape(a, tf.shape(b, name="target"))
        if op == "Split":
            return tf.split(r, 2, axis=2)
        if op == "SplitV":
            return tf.split(r, [1, -1, 3], axis=1)
        return tf.unstack(r, axis=3)

    gd, outs = build_graph(body, [x.shape, y.shape])
    feeds = {"x0:0": x, "x1:0": y}
    ref = run_graph(gd, outs, feeds)
    conv = TrtGraphConverter(input_graph_def=gd, minimum_segment_size=1, is_dynamic_op=True,
                             nodes_denylist=["target"] + [o.split(":")[0] for o in outs])
    converted = conv.convert()
    (engine,) = conv.report["engines"]
    assert {"Reshape", op} <= set(engine["ops"]), conv.summary()
    assert sum(n.op == ENGINE_OP for n in converted.node) == 1, conv.summary()
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)
        got = run_graph(converted, outs, feeds, converted=True)
    assert len(got) == len(ref)
    for r, o in zip(ref, got):
        assert r.shape == o.shape
        assert rel_l2(o, r) <= 1e-6



def test_a_reshape_that_already_records_output_shapes_keeps_one_entry():
    from tf_integration import segment_to_engine
    from tf_integration.graph_utils import GraphIndex
    from tf_integration.segmenter import Segment

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
        y = tf.reshape(x, tf.shape(x), name="r")
        tf.identity(y * 2.0, name="out")
    gd = g.as_graph_def(add_shapes=True)               # every node carries _output_shapes
    graph = GraphIndex(gd)
    seg = Segment(0, ["r", "mul"], graph)
    seg_gd = segment_to_engine.segment_graph_def(graph, seg)
    node = {n.name: n for n in seg_gd.node}["r"]
    assert len(node.attr[segment_to_engine.RECORDED_SHAPES].list.shape) == 1
    with tf.Graph().as_default():
        tf.compat.v1.import_graph_def(seg_gd, name="")   # TF accepts it
