"""Op coverage at least TF-TRT's: the ops TF-TRT converts are registered here, the
converters added for them match TensorFlow, their validators refuse what they
cannot convert, and SUPPORTED_OPS.md is the registry's current table."""
import numpy as np
import pytest
import tensorflow as tf

from tf_integration import TrtGraphConverter, registry, supported_ops, tftrt_ops
from tf_integration.engine_node import ENGINE_OP
from tf_integration.graph_utils import GraphIndex
from tf_integration import ops_doc
from tf_integration.ops_doc import DOC_PATH, render
from tfi_helpers import build_graph, cross_validate, random_input, rel_l2, run_graph


def ints(shape, lo=-2, hi=3, seed=0):
    """Small integer values as float32: comparisons then meet equal operands."""
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(np.float32)


def uniform(shape, lo=0.0, hi=1.0, seed=0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def const(shape, seed=1):
    return tf.constant(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# ---------------------------------------------------------------------------- coverage

def test_every_tftrt_op_is_registered():
    missing = [op for op in tftrt_ops.required_ops() if not registry.is_registered(op)]
    assert not missing, f"TF-TRT converts these and cupyrt does not: {missing}"


def test_exclusions_are_tftrt_ops_with_reasons():
    assert set(tftrt_ops.EXCLUDED) <= set(tftrt_ops.TFTRT_OPS)
    assert all(len(why) > 20 for why in tftrt_ops.EXCLUDED.values())
    assert len(tftrt_ops.required_ops()) == len(tftrt_ops.TFTRT_OPS) - len(tftrt_ops.EXCLUDED)


def test_supported_ops_doc_is_current():
    with open(DOC_PATH) as f:
        committed = f.read()
    assert committed == render(), ("SUPPORTED_OPS.md is stale: regenerate it with "
                                   "`python -m tf_integration.ops_doc`")


def test_readme_tables_are_current_and_list_every_op_once():
    with open(ops_doc.README_PATH) as f:
        readme = f.read()
    assert readme == ops_doc.readme_with_tables(readme), (
        "README's ops or settings table is stale: regenerate them with "
        "`python -m tf_integration.ops_doc`")
    table = readme.split(ops_doc.README_BEGIN, 1)[1].split(ops_doc.README_END, 1)[0]
    listed = [op.strip() for row in table.strip().splitlines()[2:]
              for op in row.split("|")[2].split(",")]
    assert sorted(listed) == sorted(supported_ops())


def test_readme_without_markers_is_refused_and_check_fails_when_stale(tmp_path):
    with pytest.raises(ValueError, match="no ops table markers"):
        ops_doc.readme_with_tables("# no markers here\n")
    with pytest.raises(ValueError, match="no settings table markers"):
        ops_doc.readme_with_tables(f"{ops_doc.README_BEGIN}\n{ops_doc.README_END}\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n{ops_doc.README_BEGIN}\nold\n{ops_doc.README_END}\n"
                      f"{ops_doc.SETTINGS_BEGIN}\nold\n{ops_doc.SETTINGS_END}\n")
    doc = tmp_path / "SUPPORTED_OPS.md"
    doc.write_text(render())
    assert ops_doc.main(["--check", "--path", str(doc), "--readme", str(readme)]) == 1
    assert ops_doc.main(["--path", str(doc), "--readme", str(readme)]) == 0
    assert ops_doc.main(["--check", "--path", str(doc), "--readme", str(readme)]) == 0
    assert "| comparison |" in readme.read_text() and "| `CUPYRT_BACKEND` |" in readme.read_text()


def test_doc_lists_both_sides_with_totals():
    doc = render()
    rows = [line for line in doc.splitlines() if line.startswith("| ") and "---" not in line]
    ops = {r.split("|")[1].strip() for r in rows[1:]}
    assert set(supported_ops()) <= ops and set(tftrt_ops.TFTRT_OPS) <= ops
    assert "| TopKV2 | selection |" in doc and "| ReadVariableOp |" in doc
    assert f"{len(supported_ops())} ops registered" in doc


# ---------------------------------------------------------------------------- comparison

COMPARE = {"Equal": tf.equal, "NotEqual": tf.not_equal, "Greater": tf.greater,
           "GreaterEqual": tf.greater_equal, "Less": tf.less, "LessEqual": tf.less_equal}


@pytest.mark.parametrize("op", sorted(COMPARE))
def test_comparison_matches_tf(op):
    fn = COMPARE[op]
    x, y = ints((3, 4, 5), seed=1), ints((3, 4, 5), seed=2)
    # a float result through Select, a broadcast constant, an int32 pair and a raw bool
    cross_validate(lambda a, b: [tf.where(fn(a, b), a, b * 3.0),
                                 tf.cast(fn(a, tf.constant([0.0, 1, -1, 2, 0])), tf.float32),
                                 fn(tf.cast(a, tf.int32), tf.cast(b, tf.int32)),
                                 fn(a + 0.5, b)], [x, y], expect_engines=4)


@pytest.mark.parametrize("op", ["LogicalAnd", "LogicalOr", "LogicalNot"])
def test_logic_matches_tf(op):
    x, y = random_input((4, 6), seed=3), random_input((4, 6), seed=4)

    def body(a, b):
        p, q = a > 0.0, b < 0.3
        out = {"LogicalAnd": lambda: tf.logical_and(p, q), "LogicalOr": lambda: tf.logical_or(p, q),
               "LogicalNot": lambda: tf.logical_not(p) & q}[op]()
        return [tf.where(out, a, b), out]

    cross_validate(body, [x, y])


@pytest.mark.parametrize("fn", [tf.equal, tf.not_equal], ids=["Equal", "NotEqual"])
def test_equality_of_bools_matches_tf(fn):
    x, y = random_input((4, 6), seed=17), random_input((4, 6), seed=18)
    cross_validate(lambda a, b: tf.where(fn(a > 0.0, b > 0.0), a, b), [x, y])


# ---------------------------------------------------------------------------- array

def test_depth_to_space_and_back_match_tf():
    x = random_input((2, 3, 4, 8), seed=5)
    cross_validate(lambda a: tf.nn.relu(tf.nn.depth_to_space(a, 2)), [x])
    cross_validate(lambda a: tf.nn.space_to_depth(a * 2.0, 2), [random_input((2, 4, 6, 3), 6)])
    # through an NHWC conv (held NCHW in the engine) into the reshape
    cross_validate(lambda a: tf.nn.depth_to_space(tf.nn.conv2d(a, const((1, 1, 8, 12)), 1,
                                                               "SAME"), 2), [x])


@pytest.mark.parametrize("case", ["vector", "spatial", "matrix", "to_nhwc"])
def test_data_format_vec_permute_matches_tf(case):
    shape, kw = {"vector": ((1, 4), {}), "spatial": ((1, 2), {}), "matrix": ((1, 4, 2), {}),
                 "to_nhwc": ((1, 4), dict(src_format="NCHW", dst_format="NHWC"))}[case]
    x = ints(shape, -50, 50, seed=7)

    def body(a):
        v = tf.cast(a[0] * 3.0, tf.int32)
        return tf.cast(tf.raw_ops.DataFormatVecPermute(x=v, **kw), tf.float32) + a[0]

    cross_validate(body, [x])


def test_range_folds_with_tf_values():
    x = random_input((2, 5), seed=8)
    cross_validate(lambda a: [a * tf.cast(tf.range(1, 11, 2), tf.float32),
                              a + tf.range(0.1, 1.1, 0.2)], [x], expect_engines=2)


def test_copy_from_host_to_gpu_is_an_identity_inside_an_engine():
    x = random_input((3, 4), seed=9)
    gd, outs = build_graph(lambda a: tf.tanh(tf.identity(tf.nn.relu(a), name="copy")), [x.shape])
    ref = run_graph(gd, outs, {"x0:0": x})
    for node in gd.node:          # what TF's placer inserts on GPU hosts; no CPU kernel
        if node.name == "copy":
            node.op = "_CopyFromHostToGpu"
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"], minimum_segment_size=1,
                             is_dynamic_op=True)
    converted = conv.convert()
    assert not any(n.op == "_CopyFromHostToGpu" for n in converted.node), conv.summary()
    assert sum(n.op == ENGINE_OP for n in converted.node) == 1
    got = run_graph(converted, outs, {"x0:0": x}, converted=True)
    assert rel_l2(got[0], ref[0]) <= 1e-6


# ---------------------------------------------------------------------------- selection

def test_topk_matches_tf():
    x = random_input((3, 10), seed=10)
    cross_validate(lambda a: list(tf.math.top_k(a, 4)), [x])
    cross_validate(lambda a: list(tf.math.top_k(tf.cast(a * 2.0, tf.int32), 5)), [x])


@pytest.mark.parametrize("fn", [tf.argmax, tf.argmin], ids=["ArgMax", "ArgMin"])
def test_argmax_argmin_match_tf(fn):
    x = random_input((2, 5, 6, 3), seed=11)
    cross_validate(lambda a: [fn(a, 1, output_type=tf.int32), fn(a, -1, output_type=tf.int32)],
                   [x], expect_engines=2)
    # channels of a conv output (the engine holds it NCHW)
    cross_validate(lambda a: fn(tf.nn.conv2d(a, const((3, 3, 3, 4)), 1, "SAME"), 3,
                                output_type=tf.int32), [x])


# ---------------------------------------------------------------------------- conv3d

NDHWC = (2, 5, 6, 4, 3)

CONV3D = {
    "Conv3D_same": lambda a: tf.nn.conv3d(a, const((3, 3, 2, 3, 4)), [1] * 5, "SAME"),
    "Conv3D_valid_stride": lambda a: tf.nn.conv3d(a, const((2, 3, 2, 3, 5)), [1, 2, 1, 2, 1],
                                                  "VALID"),
    "Conv3D_dilated": lambda a: tf.nn.conv3d(a, const((2, 2, 2, 3, 2)), [1] * 5, "SAME",
                                             dilations=[1, 2, 1, 2, 1]),
    "Conv3DBackpropInputV2_same": lambda a: tf.nn.conv3d_transpose(
        a, const((3, 3, 3, 4, 3)), [2, 10, 12, 8, 4], [1, 2, 2, 2, 1], "SAME"),
    "Conv3DBackpropInputV2_valid": lambda a: tf.nn.conv3d_transpose(
        a, const((2, 3, 2, 2, 3)), [2, 6, 8, 5, 2], [1, 1, 1, 1, 1], "VALID"),
    "Conv3DBackpropInputV2_same_odd": lambda a: tf.nn.conv3d_transpose(
        a, const((3, 3, 3, 2, 3)), [2, 9, 11, 7, 2], [1, 2, 2, 2, 1], "SAME"),
    "MaxPool3D_same": lambda a: tf.nn.max_pool3d(a, [1, 2, 3, 2, 1], [1, 2, 2, 1, 1], "SAME"),
    "AvgPool3D_same": lambda a: tf.nn.avg_pool3d(a, [1, 3, 3, 2, 1], [1, 2, 2, 2, 1], "SAME"),
    "AvgPool3D_valid": lambda a: tf.nn.avg_pool3d(a, [1, 2, 2, 2, 1], [1, 1, 2, 1, 1], "VALID"),
}


@pytest.mark.parametrize("case", sorted(CONV3D))
def test_conv3d_family_matches_tf(case):
    cross_validate(CONV3D[case], [random_input(NDHWC, seed=12)], tol=1e-5)


def test_conv3d_fp16_within_fp16_tolerance():
    cross_validate(lambda a: tf.nn.relu(CONV3D["Conv3D_same"](a)), [random_input(NDHWC, seed=13)],
                   tol=2e-2, precision_mode="FP16")


# ---------------------------------------------------------------------------- image

def _boxes(shape, seed):
    """Corner boxes partly outside [0, 1], some with y1 > y2, some overlapping."""
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-0.2, 1.0, shape[:-1] + (2,))
    size = rng.uniform(-0.1, 0.6, shape[:-1] + (2,))
    return np.concatenate([lo, lo + size], -1).astype(np.float32)


@pytest.mark.parametrize("q,pad,clip", [(1, False, True), (3, True, False), (1, True, True)])
def test_combined_nms_matches_tf(q, pad, clip):
    boxes, scores = _boxes((2, 24, q, 4), seed=14), uniform((2, 24, 3), seed=15)

    def body(b, s):
        return list(tf.image.combined_non_max_suppression(
            b, s, max_output_size_per_class=5, max_total_size=12, iou_threshold=0.4,
            score_threshold=0.2, pad_per_class=pad, clip_boxes=clip))

    cross_validate(body, [boxes, scores], tol=0.0)


# ---------------------------------------------------------------------------- refusals

def _refusal(body, shapes, op):
    """The Reason the registry gives for the first ``op`` node of ``body``'s graph."""
    gd, _ = build_graph(body, shapes)
    graph = GraphIndex(gd)
    node = next(n for n in gd.node if n.op == op)
    reason = registry.validate(node, graph)
    assert reason is not None, f"{op} was accepted"
    return str(reason)


def _vec(**kw):
    return lambda a: tf.raw_ops.DataFormatVecPermute(x=tf.cast(a[0], tf.int32), **kw)


def _nms(per_class=2, total=3, iou=0.5):
    return lambda b, s: tf.image.combined_non_max_suppression(b, s, per_class, total, iou)


REFUSALS = [
    ("DepthToSpace", lambda a: tf.nn.depth_to_space(a, 2, data_format="NCHW"), [(2, 8, 3, 4)],
     "data_format NCHW"),
    ("SpaceToDepth", lambda a: tf.nn.space_to_depth(tf.reshape(a, [2, -1, 2, 3]), 2),
     [(2, 24)], "must be static"),
    ("DataFormatVecPermute", _vec(src_format="NHWC", dst_format="NCHX"), [(1, 4)],
     "not one set"),
    ("DataFormatVecPermute", _vec(), [(1, 3)], "input shape (3,)"),
    ("Range", lambda a: a + tf.cast(tf.range(tf.cast(a[0, 0], tf.int32), 5), tf.float32),
     [(1, 5)], "start (input 0) is not a constant"),
    ("Range", lambda a: a + tf.cast(tf.range(0, 5, dtype=tf.int64), tf.float32), [(1, 5)],
     "Tidx=int64"),
    ("TopKV2", lambda a: tf.math.top_k(a, tf.cast(a[0, 0], tf.int32))[0], [(2, 5)],
     "k (input 1) is not a constant"),
    ("TopKV2", lambda a: tf.math.top_k(a, 2, sorted=False)[0], [(2, 5)], "sorted=False"),
    ("TopKV2", lambda a: tf.raw_ops.TopKV2(input=a, k=2, index_type=tf.int64)[0], [(2, 5)],
     "index_type=int64"),
    ("ArgMax", lambda a: tf.argmax(a, 1), [(2, 5)], "output_type=int64"),
    ("ArgMin", lambda a: tf.argmin(a, tf.cast(a[0, 0], tf.int32), output_type=tf.int32),
     [(2, 5)], "dimension (input 1) is not a constant"),
    ("CombinedNonMaxSuppression",
     lambda b, s: tf.image.combined_non_max_suppression(b, s, tf.cast(s[0, 0, 0], tf.int32), 3),
     [(2, 5, 1, 4), (2, 5, 3)], "max_output_size_per_class (input 2) is not a constant"),
    ("CombinedNonMaxSuppression", _nms(per_class=0), [(2, 5, 1, 4), (2, 5, 3)],
     "expected both >= 1"),
    ("CombinedNonMaxSuppression", _nms(iou=1.5), [(2, 5, 1, 4), (2, 5, 3)],
     "iou_threshold 1.5"),
    ("CombinedNonMaxSuppression",
     lambda b, s: tf.image.combined_non_max_suppression(tf.reshape(b, [2, 5, -1, 4]), s, 2, 3),
     [(2, 20), (2, 5, 3)], "must be static"),
    ("Conv3D", lambda a: tf.nn.conv3d(a, const((2, 2, 2, 4, 3)), [1] * 5, "SAME",
                                      data_format="NCDHW"), [(2, 4, 5, 5, 5)],
     "data_format NCDHW"),
    ("Conv3D", lambda a: tf.nn.conv3d(a, const((2, 2, 2, 3, 4)), [2, 1, 1, 1, 1], "SAME"),
     [NDHWC], "strides [2, 1, 1, 1, 1] over batch"),
    ("Conv3D", lambda a: tf.nn.conv3d(a, tf.reshape(a[0, :2, :2, :2], [2, 2, 2, 3, 1]), [1] * 5,
                                      "SAME"),
     [(2, 5, 6, 4, 3)], "filter is not a constant"),
    ("Conv3DBackpropInputV2", lambda a: tf.nn.conv3d_transpose(
        a, const((2, 2, 2, 2, 3)), tf.stack([tf.shape(a)[0], 5, 6, 4, 2]), [1] * 5, "SAME"),
     [NDHWC], "input_sizes is not a constant"),
    ("Conv3DBackpropInputV2", lambda a: tf.nn.conv3d_transpose(
        tf.reshape(a, [2, -1, 6, 4, 3]), const((2, 2, 2, 2, 3)), [2, 5, 6, 4, 2], [1] * 5,
        "SAME"), [(2, 360)], "spatial input dims"),
    ("Conv3DBackpropInputV2", lambda a: tf.raw_ops.Conv3DBackpropInputV2(
        input_sizes=[2, 5, 6, 4, 2], filter=const((2, 2, 2, 2, 3)), out_backprop=a,
        strides=[1] * 5, padding="SAME", dilations=[1, 2, 1, 1, 1]), [NDHWC],
     "dilated transposed"),
    ("MaxPool3D", lambda a: tf.nn.max_pool3d(a, [2, 2, 2, 2, 1], [1] * 5, "SAME"), [NDHWC],
     "ksize [2, 2, 2, 2, 1] over batch"),
]


@pytest.mark.parametrize("op,body,shapes,expect", REFUSALS,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSALS)])
def test_validator_refuses(op, body, shapes, expect):
    assert expect in _refusal(body, shapes, op)


def test_comparison_dtype_outside_the_engine_is_refused():
    reason = _refusal(lambda a: tf.greater(tf.cast(a, tf.int64), 0), [(2, 3)], "Greater")
    assert "dtype int64 not supported by Greater" in reason


def test_refused_op_stays_in_tensorflow_and_the_graph_still_matches():
    # ArgMax with TF's default int64 output stays native; everything around it converts
    x = random_input((3, 7), seed=16)
    conv, converted = cross_validate(lambda a: tf.cast(tf.argmax(tf.nn.relu(a), 1), tf.float32),
                                     [x], expect_engines=1)
    assert any(n.op == "ArgMax" for n in converted.node)
