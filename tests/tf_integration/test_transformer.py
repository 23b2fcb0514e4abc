"""Transformer graphs: Einsum, shape tensors (Shape -> Pack/StridedSlice -> Reshape),
layer norms, the missing pointwise ops, and a Keras encoder (Keras 3 and tf_keras)
converted once and run at several batch sizes and sequence lengths."""
import warnings

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from tfi_helpers import build_graph, cross_validate, random_input, rel_l2, run_graph
from tf_integration import EngineFallbackWarning, TrtGraphConverter
from tf_integration.converters.einsum import parse
from tf_integration.engine_node import ENGINE_OP, engine_runners
from tf_integration.errors import ConversionError
from tf_integration.graph_utils import GraphIndex, freeze_keras_model
from tf_integration import registry

SHAPES = [(1, 5), (3, 12), (3, 5), (1, 12)]        # (batch, sequence) through one graph


def _convert(gd, outs, **kw):
    kw.setdefault("max_batch_size", 8)      # static plans serve batches up to this
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[o.split(":")[0] for o in outs],
                             **kw)
    return conv, conv.convert()


def _reference(gd, outs, feeds):
    """TF's result for the graph as written. Grappler's remapper is off: on oneDNN CPU
    builds it fuses tf_keras' layer-norm pattern into a kernel that uses epsilon 1e-3
    whatever the graph says (1e-6 here), a 5e-4 relative error against the graph."""
    cfg = tf.compat.v1.ConfigProto()
    cfg.graph_options.rewrite_options.remapping = rewriter_config_pb2.RewriterConfig.OFF
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
        with tf.compat.v1.Session(graph=g, config=cfg) as sess:
            return sess.run(outs, feeds)


def _run_all(gd, converted, outs, feeds_list):
    """Reference and converted outputs for each feed dict, engines only (no fallback)."""
    before = len(engine_runners())
    pairs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)
        for feeds in feeds_list:
            pairs.append((_reference(gd, outs, feeds), run_graph(converted, outs, feeds,
                                                                  converted=True)))
    for runner in engine_runners()[before:]:
        assert runner.stats["native_runs"] == 0, runner.stats
    return pairs


# ---------------------------------------------------------------------------- einsum

EQUATIONS = [  # (equation, lhs shape, rhs shape): Keras 3 and tf_keras MHA, EinsumDense, matmuls
    ("abc,cde->abde", (2, 5, 8), (8, 2, 3)), ("BTNH,BSNH->BNTS", (2, 5, 2, 3), (2, 4, 2, 3)),
    ("BNTS,BSNH->BTNH", (2, 2, 5, 4), (2, 4, 2, 3)), ("abcd,cde->abe", (2, 5, 2, 3), (2, 3, 6)),
    ("aecd,abcd->acbe", (2, 4, 2, 3), (2, 5, 2, 3)), ("acbe,aecd->abcd", (2, 2, 5, 4), (2, 4, 2, 3)),
    ("ab,bc->ac", (3, 4), (4, 5)), ("abc,cd->abd", (2, 3, 4), (4, 5)),
    ("...b,bc->...c", (2, 3, 4), (4, 5)), ("bij,bkj->bik", (2, 3, 4), (2, 5, 4)),
    ("ab,ab->a", (3, 4), (3, 4)), ("i,j->ij", (3,), (4,)), ("abc,d->abcd", (2, 3, 4), (5,)),
]


@pytest.mark.parametrize("eq,sa,sb", EQUATIONS, ids=[e[0] for e in EQUATIONS])
def test_einsum_with_constant_and_computed_rhs_matches_tf(eq, sa, sb):
    x, w = random_input(sa, 1), random_input(sb, 2)
    conv, _ = cross_validate(lambda a: tf.einsum(eq, a, tf.constant(w)), [x], tol=1e-5)
    assert conv.report["engines"][0]["ops"]["Einsum"] == 1
    cross_validate(lambda a, b: tf.einsum(eq, a, b), [x, random_input(sb, 3)], tol=1e-5)


@pytest.mark.parametrize("eq", ["ij->ji", "ijk->ki", "ij->i"])
def test_single_operand_einsum_transposes_and_sums(eq):
    rank = len(eq.split("->")[0])
    cross_validate(lambda a: tf.einsum(eq, a) * 2.0, [random_input((3, 4, 2)[:rank], 4)],
                   tol=1e-6)


def test_einsum_validator_refuses_a_diagonal_with_its_reason():
    gd, outs = build_graph(lambda a: tf.einsum("ii->i", a) + 1.0, [(3, 3)])
    gd.node[0].attr["shape"].shape.dim[0].size = 3           # static square input
    graph = GraphIndex(gd)
    node = next(n for n in gd.node if n.op == "Einsum")
    reason = registry.validate(node, graph)
    assert reason is not None and "diagonal" in reason.detail


@pytest.mark.parametrize("equation,ranks,match", [
    ("ab,bc", [2, 2], "no '->'"), ("ab,bc->ac", [2], "names 2 operands"),
    ("ab,bc->ac", [3, 2], "does not index a rank-3"), ("aa,ab->b", [2, 2], "repeats an index"),
    ("ab,bc->ad", [2, 2], "only indices of the operands"),
])
def test_einsum_parse_errors_name_the_term(equation, ranks, match):
    with pytest.raises(ConversionError, match=match):
        parse(equation, ranks)


def test_einsum_ellipsis_expands_right_aligned():
    assert parse("...ij,...jk->...ik", [4, 3]) == (["abij", "bjk"], "abik")


# ---------------------------------------------------------------------------- shape tensors

def _split_heads(x, heads=4):
    """The TF tutorial's split_heads: reshape to [batch, seq, heads, depth] from tf.shape."""
    s = tf.shape(x)
    y = tf.reshape(x, tf.stack([s[0], s[1], heads, x.shape[-1] // heads]))
    y = tf.transpose(y, [0, 2, 1, 3])
    return tf.reshape(tf.transpose(y * 2.0, [0, 2, 1, 3]), tf.stack([s[0], -1, x.shape[-1]]))


def _seq_graph(body, d=8):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, d], name="x0")
        out = tf.identity(body(x), name="out0")
    return g.as_graph_def(), [out.name]


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic_op", "static_plan"])
def test_dynamic_reshape_from_shape_serves_several_shapes_from_one_graph(dynamic):
    gd, outs = _seq_graph(lambda x: _split_heads(tf.nn.relu(x) + 1.0))
    conv, converted = _convert(gd, outs, is_dynamic_op=dynamic, minimum_segment_size=1)
    assert sum(n.op == ENGINE_OP for n in converted.node) == 1, conv.summary()
    assert conv.report["converted_share"] == 1.0, conv.summary()
    feeds = [{"x0:0": random_input((b, s, 8), b + s)} for b, s in SHAPES]
    for ref, got in _run_all(gd, converted, outs, feeds):
        assert ref[0].shape == got[0].shape
        assert rel_l2(got[0], ref[0]) <= 1e-6


def test_shape_with_int64_out_type_of_dynamic_dims_stays_native_with_reason():
    gd, outs = _seq_graph(lambda x: tf.cast(tf.shape(x, out_type=tf.int64), tf.float32)[0] * x)
    conv, _ = _convert(gd, outs, minimum_segment_size=1)
    left = conv.report["left_to_tensorflow"]
    shape_node = next(n for n, r in left.items() if r["op"] == "Shape")
    assert "int32" in left[shape_node]["detail"]


def test_reshape_with_int64_computed_target_stays_native_with_reason():
    gd, outs = _seq_graph(lambda x: tf.reshape(x, tf.shape(x, out_type=tf.int64)[:2] * 0 +
                                               tf.constant([-1, 8], tf.int64)) * 2.0)
    conv, _ = _convert(gd, outs, minimum_segment_size=1)
    left = conv.report["left_to_tensorflow"]
    node = next(n for n, r in left.items() if r["op"] == "Reshape")
    assert "expected int32" in left[node]["detail"]


# ---------------------------------------------------------------------------- fills and pointwise

def test_fill_zeros_like_ones_like_follow_dynamic_shapes():
    def body(x):
        s = tf.shape(x)
        return (x + tf.fill(s, 0.5) + tf.ones_like(x) * 2.0 - tf.zeros_like(x)
                + tf.fill(tf.stack([s[0], s[1], 1]), tf.reduce_max(x)))
    gd, outs = _seq_graph(body)
    conv, converted = _convert(gd, outs, is_dynamic_op=False, minimum_segment_size=1)
    assert conv.report["converted_share"] == 1.0, conv.summary()
    feeds = [{"x0:0": random_input((b, s, 8), 7 + b)} for b, s in SHAPES[:2]]
    for ref, got in _run_all(gd, converted, outs, feeds):
        assert rel_l2(got[0], ref[0]) <= 1e-6


def test_fill_with_constant_dims_and_computed_value():
    cross_validate(lambda x: x + tf.fill([1, 4], tf.reduce_sum(x)), [random_input((2, 4), 3)],
                   tol=1e-6)


def test_fill_with_int64_computed_dims_stays_native_with_reason():
    gd, outs = _seq_graph(lambda x: x + tf.fill(tf.shape(x, out_type=tf.int64), 2.0))
    conv, _ = _convert(gd, outs, minimum_segment_size=1)
    left = conv.report["left_to_tensorflow"]
    node = next(n for n, r in left.items() if r["op"] == "Fill")
    assert "expected int32" in left[node]["detail"]


@pytest.mark.parametrize("fn,positive", [(tf.math.erfc, False), (tf.math.erf, False),
                                         (tf.math.expm1, False), (tf.math.log1p, True)],
                         ids=["erfc", "erf", "expm1", "log1p"])
def test_pointwise_ops_match_tf(fn, positive):
    x = random_input((4, 64), 9) * 3.0
    if positive:
        x = np.abs(x) - 0.9     # log1p's domain (-1, inf), both branches of the converter
    x[0, :6] = [1e-6, -1e-6, 1e-3, -1e-3, 0.49, -0.51]          # near zero: no cancellation
    cross_validate(lambda a: fn(a) * 1.5, [x], tol=1e-6)


def test_log1p_and_expm1_keep_relative_accuracy_near_zero():
    x = np.array([[1e-7, -3e-7, 2e-5, -4e-5]], np.float32)
    for fn, ref in ((tf.math.log1p, np.log1p), (tf.math.expm1, np.expm1)):
        _, converted = cross_validate(lambda a: fn(a) * 1.0, [x], tol=1e-6)
        got = run_graph(converted, ["out0:0"], {"x0:0": x}, converted=True)[0]
        np.testing.assert_allclose(got, ref(x.astype(np.float64)), rtol=1e-6)


# ---------------------------------------------------------------------------- Keras encoder

def _encoder(keras, d=32, heads=4, ff=64, blocks=2):
    L = keras.layers
    inp = keras.Input((None, d))
    x = inp
    for i in range(blocks):
        a = L.MultiHeadAttention(heads, d // heads, name=f"mha{i}")(x, x)
        x = L.LayerNormalization(epsilon=1e-6, name=f"ln{i}a")(x + a)
        f = L.Dense(ff, activation="gelu", name=f"ffn{i}a")(x)
        f = L.Dense(d, name=f"ffn{i}b")(f)
        x = L.LayerNormalization(epsilon=1e-6, name=f"ln{i}b")(x + f)
    return keras.Model(inp, x)


def _keras(flavour):
    if flavour == "keras":
        import keras
    else:
        tf_keras = pytest.importorskip("tf_keras")
        keras = tf_keras
    keras.utils.set_random_seed(0)
    return keras


@pytest.fixture(scope="module", params=["keras", "tf_keras"])
def encoder_graph(request):
    keras = _keras(request.param)
    model = _encoder(keras)
    gd, ins, outs = freeze_keras_model(model)
    return request.param, gd, ins, outs


def _block_of(name):
    for part in name.split("/"):
        if part.startswith("mha"):
            return part.split("_")[0]
    return None


@pytest.mark.parametrize("precision,tol", [("FP32", 1e-4), ("FP16", 2e-2)])
def test_keras_transformer_encoder_converts_and_matches(encoder_graph, precision, tol):
    flavour, gd, ins, outs = encoder_graph
    conv, converted = _convert(gd, outs, precision_mode=precision, is_dynamic_op=True)
    rep = conv.report
    assert rep["converted_share"] >= 0.9, conv.summary()
    # each attention block in one engine, wholly
    blocks = {}
    for eng in rep["engines"]:
        for m in eng["members"]:
            if _block_of(m):
                blocks.setdefault(_block_of(m), set()).add(eng["name"])
    assert sorted(blocks) == ["mha0", "mha1"], blocks
    assert all(len(e) == 1 for e in blocks.values()), blocks
    left = [n for n, r in rep["left_to_tensorflow"].items()
            if _block_of(n) and r["kind"] != registry.Reason.NOT_COMPUTE]
    assert not left, left
    # layer norms become Normalization layers (built per shape: check one network)
    feeds = [{ins[0]: random_input((b, s, 32), 100 + 10 * b + s)} for b, s in SHAPES]
    for ref, got in _run_all(gd, converted, outs, feeds):
        assert ref[0].shape == got[0].shape
        assert rel_l2(got[0], ref[0]) <= tol, (flavour, precision, rel_l2(got[0], ref[0]))


def test_keras_encoder_layer_norms_become_normalization_layers(encoder_graph):
    flavour, gd, ins, outs = encoder_graph
    conv, _ = _convert(gd, outs, is_dynamic_op=False)
    layers = {}
    for eng in conv.report["engines"]:
        for k, v in eng["layers"].items():
            layers[k] = layers.get(k, 0) + v
    assert layers.get("NORMALIZATION") == 4, (flavour, layers)
    assert "REDUCE" not in layers, (flavour, layers)
    assert conv.report["converted_share"] >= 0.9
