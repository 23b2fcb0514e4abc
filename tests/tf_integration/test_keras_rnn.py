"""Keras LSTM/GRU loops become the engine's RNN layer (issue 10, point 3).

Keras 3 and tf_keras models, frozen both ways (lowered Enter/Exit frames and
functional While), converted whole into one engine and compared with
TensorFlow at several sequence lengths from one converted graph; loops that
are something else stay in TensorFlow with the reason. A model whose Input
fixes the length (``Input((6, 4))``) or the batch (``batch_size=2``) traces a
different region (constant trip counts, list sizes and zero states): it
converts too, compared at the one length its input admits.
"""
import warnings

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tf_integration import EngineFallbackWarning, TrtGraphConverter
from tf_integration.converters.rnn import _validate_rnn_call
from tf_integration.engine_node import ENGINE_OP, EngineRunner, engine_runners
from tf_integration.rnn_loops import RNN_ATTR, rewrite_rnn_loops
from tfi_helpers import rel_l2, run_graph

keras = pytest.importorskip("keras")
STEPS = (3, 7, 20)
E = 4
FIXED_T = 6         # Keras Input((FIXED_T, E)): the length is part of the graph


def freeze(keras_mod, build, lower, seed=0, steps=None, batch=None):
    """Input((steps, E), batch_size=batch) -> build(layers) -> Dense; frozen
    lowered or functional."""
    keras_mod.utils.set_random_seed(seed)
    inp = keras_mod.Input((steps, E), batch_size=batch)
    out = keras_mod.layers.Dense(3)(build(keras_mod.layers, inp))
    model = keras_mod.Model(inp, out)
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([batch, steps, E], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=lower)
    return frozen.graph.as_graph_def(), frozen.inputs[0].name, frozen.outputs[0].name


def convert_and_compare(gd, x_name, y_name, precision="FP32", tol=1e-4, engines=1,
                        steps=None, batch=None):
    """Convert, check the loops are gone, compare with TF on random sequences:
    several lengths and batches, or the fixed ones the input placeholder has."""
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[y_name.split(":")[0]],
                             is_dynamic_op=True, minimum_segment_size=1,
                             precision_mode=precision)
    converted = conv.convert()
    assert sum(n.op == ENGINE_OP for n in converted.node) == engines, conv.summary()
    assert not any(n.op in ("While", "StatelessWhile", "Enter", "PartitionedCall")
                   for n in converted.node), conv.summary()
    before = len(engine_runners())
    for i, t in enumerate(STEPS if steps is None else (steps,) * 2):
        x = np.random.default_rng(10 * i + t).standard_normal(
            (batch or 2 + i, t, E)).astype(np.float32)
        ref = run_graph(gd, y_name, {x_name: x})
        with warnings.catch_warnings():
            warnings.simplefilter("error", EngineFallbackWarning)
            got = run_graph(converted, y_name, {x_name: x}, converted=True)
        assert got.shape == ref.shape
        assert rel_l2(got, ref) <= tol, (t, rel_l2(got, ref))
    assert all(r.stats["native_runs"] == 0 for r in engine_runners()[before:])
    return conv, converted


MODELS = {
    "lstm_sequences": lambda L, x: L.LSTM(8, return_sequences=True)(x),
    "gru_last": lambda L, x: L.GRU(8)(x),
    "bidirectional_lstm": lambda L, x: L.Bidirectional(L.LSTM(8, return_sequences=True))(x),
    "stacked_gru": lambda L, x: L.GRU(12)(L.GRU(8, return_sequences=True)(x)),
    "lstm_go_backwards": lambda L, x: L.LSTM(8, go_backwards=True, return_sequences=True)(x),
    "lstm_states": lambda L, x: L.concatenate(L.LSTM(8, return_state=True)(x)),
}


@pytest.mark.parametrize("steps", [None, FIXED_T], ids=["any_T", "fixed_T"])
@pytest.mark.parametrize("lower", [True, False], ids=["lowered", "functional"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_keras3_rnn_classifier_is_one_engine_matching_tf_at_several_lengths(name, lower, steps):
    gd, x, y = freeze(keras, MODELS[name], lower, steps=steps)
    conv, _ = convert_and_compare(gd, x, y, steps=steps)
    assert conv.report["converted_share"] == 1.0
    layers = conv.report["engines"][0]["ops"]
    # a Bidirectional is one bidirectional layer (fuse_bidirectional)
    assert layers.get("PartitionedCall") == (2 if "stacked" in name else 1)


@pytest.mark.parametrize("steps", [None, FIXED_T], ids=["any_T", "fixed_T"])
def test_tf_keras_lstm_both_forms(steps):
    tf_keras = pytest.importorskip("tf_keras")
    for lower in (True, False):
        gd, x, y = freeze(tf_keras, lambda L, x: L.LSTM(8, return_sequences=True)(x), lower,
                          steps=steps)
        convert_and_compare(gd, x, y, steps=steps)
        gd, x, y = freeze(tf_keras, lambda L, x: L.GRU(8)(x), lower, seed=1, steps=steps)
        convert_and_compare(gd, x, y, steps=steps)


@pytest.mark.parametrize("keras_name", ["keras", "tf_keras"])
@pytest.mark.parametrize("steps, batch", [(None, 2), (FIXED_T, 2), (FIXED_T, 1)],
                         ids=["any_T_batch_2", "fixed_T_batch_2", "fixed_T_batch_1"])
@pytest.mark.parametrize("lower", [True, False], ids=["lowered", "functional"])
def test_fixed_batch_size_converts(lower, steps, batch, keras_name):
    """batch_size=... folds Keras' zero states into constants of that batch: they
    start the loop but change every step, so they are no weights; the region is
    verified at that batch. At batch 1 Keras 3 adds h R to x W as a squeezed
    BiasAdd operand, which must still read as one sum, not as a bias."""
    mod = pytest.importorskip(keras_name)
    gd, x, y = freeze(mod, MODELS["bidirectional_lstm"], lower, steps=steps, batch=batch)
    assert any(n.op == "Const" and n.attr["value"].tensor.tensor_shape.dim
               and n.attr["value"].tensor.tensor_shape.dim[0].size == batch for n in gd.node)
    convert_and_compare(gd, x, y, steps=steps, batch=batch)


def test_fp16_bidirectional_lstm_within_fp16_tolerance():
    gd, x, y = freeze(keras, MODELS["bidirectional_lstm"], lower=True)
    convert_and_compare(gd, x, y, precision="FP16", tol=2e-2)


def test_tf_fallback_of_an_rnn_engine_runs_the_original_region():
    """The engine node's segment carries the region's functions: TF can run it."""
    gd, x_name, y_name = freeze(keras, MODELS["stacked_gru"], lower=True)
    _, converted = convert_and_compare(gd, x_name, y_name)
    node = next(n for n in converted.node if n.op == ENGINE_OP)
    runner = EngineRunner(node)
    assert len(runner.segment_gd.library.function) >= 3      # region, body, cond (x2 here)
    x = np.random.default_rng(1).standard_normal((2, 5, E)).astype(np.float32)
    native = runner.run_native([x])[0]
    ref = run_graph(gd, y_name, {x_name: x})
    np.testing.assert_allclose(native, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("steps", [None, FIXED_T], ids=["any_T", "fixed_T"])
def test_rewrite_tags_the_region_with_its_description(steps):
    """Also on a graph nothing folded: with a fixed T the trip count is Max(Range)
    of constants, which the region takes in."""
    gd, _, y = freeze(keras, MODELS["lstm_go_backwards"], lower=False, steps=steps)
    if steps:
        assert {"Range", "Max"} <= {n.op for n in gd.node}
    out, refused = rewrite_rnn_loops(gd, [y])
    assert refused == {}
    calls = [n for n in out.node if RNN_ATTR in n.attr]
    assert len(calls) == 1 and _validate_rnn_call(calls[0], None) is None
    import json
    spec = json.loads(calls[0].attr[RNN_ATTR].s)
    assert (spec["kind"], spec["units"], spec["input_size"]) == ("LSTM", 8, E)
    assert spec["reverse_input"] and spec["return_sequences"] and spec["input_perm"] == [1, 0, 2]


# ---------------------------------------------------------------------------- refusals

def _custom_loop_graph():
    """A tf.while_loop that is no RNN: a running product over the time steps."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, E], name="x")
        steps = tf.shape(x)[1]

        def body(t, acc):
            return t + 1, acc * tf.nn.relu(x[:, t]) + 1.0

        _, acc = tf.while_loop(lambda t, acc: t < steps, body,
                               [tf.constant(0), tf.ones_like(x[:, 0])])
        y = tf.identity(tf.matmul(acc, tf.ones((E, 3))) * 2.0, name="y")
    return g.as_graph_def(), "x:0", y.name


def test_custom_while_loop_stays_native_with_its_reason():
    gd, x_name, y_name = _custom_loop_graph()
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["y"], is_dynamic_op=True,
                             minimum_segment_size=1)
    converted = conv.convert()
    left = conv.report["left_to_tensorflow"]
    reasons = {r["detail"] for r in left.values()}
    assert any("is not a Keras LSTM/GRU" in d and "Relu" in d for d in reasons), reasons
    assert "is not a Keras LSTM/GRU" in conv.summary()
    x = np.random.default_rng(0).standard_normal((2, 5, E)).astype(np.float32)
    np.testing.assert_allclose(run_graph(converted, y_name, {x_name: x}, converted=True),
                               run_graph(gd, y_name, {x_name: x}), rtol=1e-5)


def test_loop_without_list_reads_is_refused():
    g = tf.Graph()
    with g.as_default():
        n = tf.compat.v1.placeholder(tf.int32, [], name="n")
        _, acc = tf.while_loop(lambda i, a: i < n, lambda i, a: (i + 1, a * 2.0),
                               [tf.constant(0), tf.ones([3])])
        tf.identity(acc, name="y")
    _, refused = rewrite_rnn_loops(g.as_graph_def(), ["y"])
    assert refused and all("reads 0 and writes 0 list elements" in r for r in refused.values())


def _gru_body_with(gd, op_type, value):
    """Copy of a functional Keras GRU graph whose body has its ``op_type`` scalar
    constant (the 1 of 1 - z) replaced by ``value``: the weights stay what they
    were, but the loop no longer computes a GRU."""
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(gd)
    for f in out.library.function:
        subs = {n.input[0].split(":")[0] for n in f.node_def if n.op == op_type}
        for n in f.node_def:
            if n.op == "Const" and n.name in subs:
                n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.float32(value)))
    return out


@pytest.mark.parametrize("steps", [None, FIXED_T], ids=["any_T", "fixed_T"])
def test_tampered_body_constant_is_refused_by_verification(steps):
    gd, x_name, y_name = freeze(keras, MODELS["gru_last"], lower=False, steps=steps)
    bad = _gru_body_with(gd, "Sub", 0.5)
    out, refused = rewrite_rnn_loops(bad, [y_name])
    assert not any(RNN_ATTR in n.attr for n in out.node)
    assert any("differs from a GRU" in r and "rel. L2" in r for r in refused.values()), refused
    conv = TrtGraphConverter(input_graph_def=bad, nodes_denylist=[y_name.split(":")[0]],
                             is_dynamic_op=True, minimum_segment_size=1)
    converted = conv.convert()
    assert "differs from a GRU" in conv.summary()
    x = np.random.default_rng(2).standard_normal((2, 6, E)).astype(np.float32)
    np.testing.assert_allclose(run_graph(converted, y_name, {x_name: x}, converted=True),
                               run_graph(bad, y_name, {x_name: x}), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build, words", [
    (lambda L, x: L.LSTM(8, activation="relu")(x), "Relu"),
    (lambda L, x: L.GRU(8, reset_after=False)(x), "reset_after=False"),
])
def test_cells_the_engine_cannot_run_stay_native(build, words):
    gd, _, y = freeze(keras, build, lower=True)
    out, refused = rewrite_rnn_loops(gd, [y])
    assert refused and all(words in r for r in refused.values()), refused
    assert not any(RNN_ATTR in n.attr for n in out.node)


def test_untagged_function_calls_are_not_candidates():
    node = tf.compat.v1.NodeDef(name="call", op="PartitionedCall")
    node.attr["f"].func.name = "some_fn"
    assert "not a recognised Keras LSTM/GRU" in _validate_rnn_call(node, None).detail
    node.attr[RNN_ATTR].s = b'{"kind": "SimpleRNN"}'
    assert "SimpleRNN" in _validate_rnn_call(node, None).detail


@pytest.mark.parametrize("steps", [None, FIXED_T], ids=["any_T", "fixed_T"])
def test_keras3_lstm_saved_model_through_converter_v2(tmp_path, monkeypatch, steps):
    """A SavedModel keeps its loops functional: TrtGraphConverterV2 converts the LSTM
    classifier into one engine; the saved model loads and runs on it at any T
    (or at the T its Input fixes)."""
    from tf_integration import TrtGraphConverterV2, load_saved_model

    monkeypatch.setenv("CUPYRT_BACKEND", "numpy")
    keras.utils.set_random_seed(3)
    inp = keras.Input((steps, E), name="seq")
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.LSTM(8)(inp)))
    src = str(tmp_path / "src")
    model.export(src, verbose=False)
    conv = TrtGraphConverterV2(input_saved_model_dir=src, minimum_segment_size=1)
    conv.convert()
    rep = conv.report["serving_default"]
    assert len(rep["engines"]) == 1 and rep["converted_share"] == 1.0, conv.summary()
    loaded = load_saved_model(conv.save(str(tmp_path / "out")))
    ref_fn = tf.saved_model.load(src).signatures["serving_default"]
    for t in (3, 20) if steps is None else (steps,):
        x = np.random.default_rng(t).standard_normal((2, t, E)).astype(np.float32)
        ref = list(ref_fn(seq=tf.constant(x)).values())[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error", EngineFallbackWarning)
            got = list(loaded.signatures["serving_default"](seq=tf.constant(x)).values())[0]
        assert rel_l2(got, ref) <= 1e-4


def test_lstm_with_initial_state_inputs_stays_native():
    """Initial states from outside the region: more than one sequence goes in."""
    keras.utils.set_random_seed(4)
    x, h0, c0 = keras.Input((None, E)), keras.Input((8,)), keras.Input((8,))
    y = keras.layers.LSTM(8)(x, initial_state=[h0, c0])
    model = keras.Model([x, h0, c0], y)
    specs = [tf.TensorSpec([None, None, E]), tf.TensorSpec([None, 8]), tf.TensorSpec([None, 8])]
    concrete = tf.function(lambda *a: model(list(a))).get_concrete_function(*specs)
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
    _, refused = rewrite_rnn_loops(frozen.graph.as_graph_def(), [frozen.outputs[0].name])
    assert refused and all("reads 3 tensors from outside" in r for r in refused.values()), refused


def _const_bytes(gd):
    """Bytes of every constant tensor in ``gd``: nodes, library functions, and the
    GraphDefs engine nodes carry (their segments)."""
    total = 0
    for node in list(gd.node) + [n for f in gd.library.function for n in f.node_def]:
        if node.op == "Const":
            total += node.attr["value"].tensor.ByteSize()
        if "segment_graph" in node.attr:
            total += _const_bytes(tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s))
    return total


@pytest.mark.parametrize("lower", [True, False], ids=["lowered", "functional"])
def test_converted_graph_holds_each_rnn_weight_once(lower):
    """The engine reads the weights back out of the region function, the one copy
    the converted graph keeps (for TensorFlow's fallback)."""
    gd, x, y = freeze(keras, MODELS["stacked_gru"], lower)
    _, converted = convert_and_compare(gd, x, y)
    weights = [n.attr["value"].tensor.tensor_content for n in gd.node
               if n.op == "Const" and n.attr["value"].tensor.ByteSize() >= 256]
    assert len(weights) >= 4                   # kernel and recurrent kernel of both GRUs
    blob = converted.SerializeToString()       # segments are nested in it byte for byte
    assert [blob.count(w) for w in weights] == [1] * len(weights)
    before = _const_bytes(gd)
    assert before - 512 <= _const_bytes(converted) <= before + 512, (before,
                                                                     _const_bytes(converted))


def _rnn_layers(converted):
    """The RNNv2 layers of the converted graph's engines (networks as converted)."""
    from tf_integration import segment_to_engine
    out = []
    for node in (n for n in converted.node if n.op == ENGINE_OP):
        _, network = segment_to_engine.build_network(EngineRunner(node).segment_gd)
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        out.extend(layer for layer in layers if hasattr(layer, "num_directions"))
    return out


@pytest.mark.parametrize("lower", [True, False], ids=["lowered", "functional"])
def test_bidirectional_is_one_bidirectional_engine_layer(lower):
    gd, x, y = freeze(keras, MODELS["bidirectional_lstm"], lower)
    out, _ = rewrite_rnn_loops(gd, [y])
    import json
    specs = [json.loads(n.attr[RNN_ATTR].s) for n in out.node if RNN_ATTR in n.attr]
    assert len(specs) == 1 and specs[0]["bidirectional"] and len(specs[0]["halves"]) == 2
    _, converted = convert_and_compare(gd, x, y)
    assert [layer.num_directions for layer in _rnn_layers(converted)] == [2]


@pytest.mark.parametrize("keras_name, build, directions", [
    # Keras' other merge modes and the last-step form: two layers, still exact
    ("keras", lambda L, x: L.Bidirectional(L.GRU(8, return_sequences=True),
                                           merge_mode="sum")(x), [1, 1]),
    ("keras", lambda L, x: L.Bidirectional(L.GRU(8))(x), [1, 1]),
    ("tf_keras", lambda L, x: L.Bidirectional(L.GRU(8, return_sequences=True))(x), [2]),
])
def test_bidirectional_forms_convert_exactly(keras_name, build, directions):
    mod = pytest.importorskip(keras_name)
    gd, x, y = freeze(mod, build, lower=True, seed=5)
    _, converted = convert_and_compare(gd, x, y)
    assert [layer.num_directions for layer in _rnn_layers(converted)] == directions
