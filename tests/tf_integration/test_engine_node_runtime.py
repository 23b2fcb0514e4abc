"""Engine nodes at run time: EagerPyFunc nodes fed through DLPack, TensorFlow
segments inlined where there is no CUDA device, fallbacks said once and
counted, and weights stored once in a saved graph."""
import logging
import warnings

import numpy as np
import pytest
import tensorflow as tf

import engine as rt
from engine import plan as planfile
from tf_integration import (EngineFallbackWarning, TrtGraphConverter, engine_node,
                            engine_storage, import_graph_def, integrity, wrap_frozen_graph)
from tf_integration.engine_node import ENGINE_OP, EngineRunner, runtime_stats
from tfi_helpers import build_graph, random_input, rel_l2, run_graph

W = np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32) * 0.3


def conv_block(x, name):
    y = tf.nn.conv2d(x, tf.constant(W), 1, "SAME", name=f"{name}_conv")
    y = tf.nn.bias_add(y, tf.constant(np.linspace(-1, 1, 4, dtype=np.float32)))
    return tf.nn.relu(y, name=f"{name}_relu")


def two_outputs(x):
    """One segment with two outputs (ports 0 and 1 of its engine node), the second
    read after an op left to TensorFlow."""
    y = conv_block(x, "a")
    z = tf.nn.conv2d(y, tf.constant(W[:, :, :, ::-1].copy()), 1, "SAME", name="b_conv")
    return [tf.math.cumsum(y, axis=1, name="unsupported"), tf.nn.tanh(z, name="b_tanh")]


def convert(body, shape=(2, 5, 6, 4), **kw):
    gd, outs = build_graph(body, [shape])
    kw.setdefault("is_dynamic_op", True)
    kw.setdefault("max_batch_size", 8)
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[o.split(":")[0] for o in outs],
                             minimum_segment_size=1, **kw)
    return gd, outs, conv, conv.convert()


@pytest.fixture
def no_cuda(monkeypatch):
    """A host without a CUDA device and without CUPYRT_BACKEND (the default)."""
    monkeypatch.delenv("CUPYRT_BACKEND", raising=False)
    monkeypatch.setattr(engine_node, "cuda_available", lambda: False)
    monkeypatch.setattr(engine_node, "_ANNOUNCED", [])


# ---------------------------------------------------------------------------- DLPack path

def test_engine_nodes_become_eager_py_funcs_fed_tf_tensors_without_copies(monkeypatch):
    x = random_input((2, 5, 6, 4), seed=1)
    gd, outs, _, converted = convert(lambda t: conv_block(t, "a"))
    seen = []
    real = engine_node.exchange.to_engine

    def spy(value, backend):
        array = real(value, backend)
        seen.append((type(value).__name__, array.ctypes.data, np.from_dlpack(value).ctypes.data))
        return array

    monkeypatch.setattr(engine_node.exchange, "to_engine", spy)
    g = tf.Graph()
    with g.as_default():
        import_graph_def(converted, name="")
        assert [op.type for op in g.get_operations() if op.name.startswith("CupyrtEngine")] \
            == ["EagerPyFunc"]
        with tf.compat.v1.Session(graph=g) as sess:
            got = sess.run(outs, {"x0:0": x})[0]
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-5
    # the runner was handed TensorFlow's eager tensor and read its buffer in place
    assert seen and seen[0][0] == "EagerTensor" and seen[0][1] == seen[0][2]


def test_converted_graph_runs_in_tf_function_and_wrap_frozen_graph():
    x = random_input((3, 5, 6, 4), seed=2)
    gd, outs, _, converted = convert(two_outputs)
    ref = run_graph(gd, outs, {"x0:0": x})
    before = len(engine_node.engine_runners())
    fn = wrap_frozen_graph(converted, "x0:0", outs)
    got = tf.function(lambda t: fn(t))(tf.constant(x))
    for g, r in zip(got, ref):
        assert rel_l2(g.numpy(), r) <= 1e-5

    @tf.function
    def imported(t):
        return import_graph_def(converted, input_map={"x0:0": t}, return_elements=outs, name="m")

    for g, r in zip(imported(tf.constant(x)), ref):
        assert rel_l2(g.numpy(), r) <= 1e-5
    runners = engine_node.engine_runners()[before:]
    assert runners and all(r.stats["engine_runs"] >= 1 and r.stats["native_runs"] == 0
                           for r in runners)


# ---------------------------------------------------------------------------- CPU hosts

def test_without_cuda_segments_are_inlined_and_said_once(no_cuda, caplog):
    x = random_input((2, 5, 6, 4), seed=3)
    gd, outs, conv, converted = convert(two_outputs)
    ref = run_graph(gd, outs, {"x0:0": x})
    before = len(engine_node.engine_runners())
    # the statistics are per engine node over the process: an identical conversion earlier in
    # the run (the same model, plan bytes equal) already counts there; this test adds to them
    start = runtime_stats(converted)["CupyrtEngine_0"]
    with caplog.at_level(logging.WARNING, logger="tf_integration.engine_node"):
        for _ in range(2):
            g = tf.Graph()
            with g.as_default():
                import_graph_def(converted, name="")
                ops = {op.type for op in g.get_operations()}
                assert "EagerPyFunc" not in ops and ENGINE_OP not in ops
                assert g.get_operation_by_name("CupyrtEngine_0").type == "IdentityN"
                with tf.compat.v1.Session(graph=g) as sess:
                    got = sess.run(outs, {"x0:0": x})
            for a, b in zip(got, ref):            # the same TF ops: the same numbers
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert caplog.text.count("no CUDA device") == 1
    assert len(engine_node.engine_runners()) == before        # no runner, no Python call
    stats = runtime_stats(converted)["CupyrtEngine_0"]
    assert stats["inlined"] - start["inlined"] == 2 and stats["imports"] - start["imports"] == 0
    assert f"inlined as its TensorFlow ops in {stats['inlined']} import(s)" in conv.summary()


def test_inlined_segment_keeps_control_inputs_and_runs_under_tf_function(no_cuda):
    x = random_input((2, 5, 6, 4), seed=4)
    gd, outs, _, converted = convert(lambda t: conv_block(t, "a"))
    (node,) = [n for n in converted.node if n.op == ENGINE_OP]
    node.input.append("^x0")                  # a control input moves onto the IdentityN
    fn = wrap_frozen_graph(converted, "x0:0", outs[0])
    assert "^x0" in fn.graph.get_operation_by_name("CupyrtEngine_0").node_def.input
    got = tf.function(lambda t: fn(t))(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, run_graph(gd, outs, {"x0:0": x})[0], rtol=1e-6)


def test_numpy_backend_is_asked_for_and_a_wrong_name_is_refused(monkeypatch):
    monkeypatch.setattr(engine_node, "cuda_available", lambda: False)
    monkeypatch.setenv("CUPYRT_BACKEND", "numpy")
    assert engine_node.runtime_mode() == "numpy"
    monkeypatch.setenv("CUPYRT_BACKEND", "tensorrt")
    with pytest.raises(rt.BuildError, match="backend 'tensorrt' is not available"):
        engine_node.runtime_mode()


def test_calibration_records_through_runners_even_without_cuda(no_cuda):
    x = random_input((4, 5, 6, 4), seed=5)
    gd, outs, conv, _ = convert(lambda t: conv_block(t, "a"), precision_mode="INT8",
                                use_calibration=True, is_dynamic_op=False, max_batch_size=4)
    before = len(engine_node.engine_runners())
    int8 = conv.calibrate(outs, num_runs=2, feed_dict_fn=lambda: {"x0:0": x})
    (node,) = [n for n in int8.node if n.op == ENGINE_OP]
    assert node.attr["calibration_table"].s.count(b"\n") >= 2
    (runner,) = engine_node.engine_runners()[before:]
    assert runner.mode == "tensorflow" and runner.stats["native_runs"] == 2
    assert planfile.is_stripped(node.attr["serialized_plan"].s)
    assert rt.DataType.INT8 in [li.precision for li in rt.Runtime().deserialize_cuda_engine(
        engine_storage.stored_plan(node)).layers]


# ---------------------------------------------------------------------------- fallbacks

def test_static_engine_says_once_that_a_batch_is_too_large_and_counts_it():
    x = random_input((3, 5, 6, 4), seed=6)
    gd, outs, conv, converted = convert(lambda t: conv_block(t, "a"), is_dynamic_op=False,
                                        max_batch_size=2)
    ref = run_graph(gd, outs, {"x0:0": x})[0]
    g = tf.Graph()
    with g.as_default():
        import_graph_def(converted, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            with pytest.warns(EngineFallbackWarning, match="batch 3 exceeds max_batch_size 2"):
                first = sess.run(outs, {"x0:0": x})[0]
            with warnings.catch_warnings():
                warnings.simplefilter("error", EngineFallbackWarning)
                for _ in range(2):
                    again = sess.run(outs, {"x0:0": x})[0]
                small = sess.run(outs, {"x0:0": x[:2]})[0]
    for got in (first, again):
        assert rel_l2(got, ref) <= 1e-6
    assert rel_l2(small, ref[:2]) <= 1e-5
    stats = runtime_stats(converted)["CupyrtEngine_0"]
    assert stats["fallbacks"] == {engine_node.BATCH_TOO_LARGE: 3}
    assert stats["native_runs"] == 3 and stats["engine_runs"] == 1
    text = conv.summary()
    assert "1 engine run(s), 3 TensorFlow run(s)" in text
    assert "fallback: batch exceeds max_batch_size: 3 call(s)" in text


def test_runtime_stats_keep_conversions_apart():
    _, _, _, first = convert(lambda t: conv_block(t, "a"))
    _, _, _, other = convert(lambda t: conv_block(t, "b"))
    EngineRunner([n for n in first.node if n.op == ENGINE_OP][0])(random_input((1, 5, 6, 4)))
    assert runtime_stats(other)["CupyrtEngine_0"]["engine_runs"] == 0
    assert runtime_stats(first)["CupyrtEngine_0"]["engine_runs"] >= 1


# ---------------------------------------------------------------------------- storage

def size_net(x):
    rng = np.random.default_rng(7)
    for i in range(3):
        w = rng.standard_normal((3, 3, 16, 16)).astype(np.float32) * 0.1
        x = tf.nn.relu(tf.nn.conv2d(x, tf.constant(w), 1, "SAME"), name=f"relu{i}")
    return x


@pytest.mark.parametrize("precision,dynamic", [("FP32", False), ("FP16", False),
                                               ("FP32", True)])
def test_saved_graph_holds_each_weight_once(precision, dynamic):
    x = random_input((2, 8, 8, 16), seed=8)
    gd, outs, _, converted = convert(size_net, shape=x.shape, precision_mode=precision,
                                     is_dynamic_op=dynamic)
    original, saved = gd.ByteSize(), converted.ByteSize()
    assert original > 3 * 9 * 16 * 16 * 4          # the weights dominate the model
    assert saved <= 1.5 * original, (saved, original)
    (node,) = [n for n in converted.node if n.op == ENGINE_OP]
    got = run_graph(converted, outs, {"x0:0": x}, converted=True)[0]
    tol = 1e-4 if precision == "FP32" else 2e-2
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) <= tol
    if not dynamic:
        stored = node.attr["serialized_plan"].s
        full = engine_storage.stored_plan(node)
        # the builder's decisions come from the stored header, the weights from the segment
        assert planfile.loads(full)[0]["engine"] == planfile.loads(stored)[0]["engine"]
        assert len(full) - len(stored) > 3 * 9 * 16 * 16 * (2 if precision == "FP16" else 4) // 2


def test_engine_nodes_that_store_weights_twice_still_load():
    x = random_input((2, 5, 6, 4), seed=9)
    for dynamic in (False, True):
        gd, outs, _, converted = convert(two_outputs, is_dynamic_op=dynamic)
        for node in converted.node:
            if node.op == ENGINE_OP:          # as nodes were written before weights were shared
                node.attr["serialized_plan"].s = engine_storage.stored_plan(node) or b""
                node.attr["serialized_network"].s = engine_storage.stored_network(node) or b""
                del node.attr[engine_storage.WEIGHTS_ATTR]
                del node.attr[integrity.DIGESTS_ATTR]       # nor had they digests
                assert not planfile.is_stripped(node.attr["serialized_plan"].s or
                                                node.attr["serialized_network"].s)
        ref = run_graph(gd, outs, {"x0:0": x})
        for a, b in zip(run_graph(converted, outs, {"x0:0": x}, converted=True), ref):
            assert rel_l2(a, b) <= 1e-5


def test_a_segment_that_no_longer_matches_its_plan_is_built_again(caplog):
    x = random_input((2, 5, 6, 4), seed=10)
    gd, outs, _, converted = convert(lambda t: conv_block(t, "a"), is_dynamic_op=False)
    (node,) = [n for n in converted.node if n.op == ENGINE_OP]
    other = convert(lambda t: tf.nn.relu(conv_block(t, "a")), is_dynamic_op=False)[3]
    (node2,) = [n for n in other.node if n.op == ENGINE_OP]
    node.attr["serialized_plan"].s = node2.attr["serialized_plan"].s    # a stale header
    integrity.seal(node)        # as written by an older converter: its digests match
    with caplog.at_level(logging.WARNING, logger="tf_integration.engine_storage"):
        got = run_graph(converted, outs, {"x0:0": x}, converted=True)[0]
    assert "building the engine again" in caplog.text
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-5


def test_a_dynamic_node_whose_stored_network_is_stale_uses_the_one_converted_now(caplog):
    x = random_input((2, 5, 6, 4), seed=11)
    gd, outs, _, converted = convert(lambda t: conv_block(t, "a"))
    (node,) = [n for n in converted.node if n.op == ENGINE_OP]
    other = convert(lambda t: tf.nn.relu(conv_block(t, "a")))[3]
    (node2,) = [n for n in other.node if n.op == ENGINE_OP]
    node.attr["serialized_network"].s = node2.attr["serialized_network"].s
    integrity.seal(node)
    with caplog.at_level(logging.WARNING, logger="tf_integration.engine_storage"):
        got = run_graph(converted, outs, {"x0:0": x}, converted=True)[0]
    assert "using the network converted now" in caplog.text
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-5


def test_a_static_engine_that_cannot_load_runs_tensorflow_and_says_so_once(monkeypatch):
    def broken(node, segment_gd=None):
        raise rt.PlanFormatError("forced load failure")

    monkeypatch.setattr(engine_node, "stored_plan", broken)     # as engine_node calls it
    x = random_input((2, 5, 6, 4), seed=12)
    gd, outs, _, converted = convert(lambda t: conv_block(t, "a"), is_dynamic_op=False)
    (node,) = [n for n in converted.node if n.op == ENGINE_OP]
    runner = EngineRunner(node, mode="numpy")
    with pytest.warns(EngineFallbackWarning, match="forced load failure"):
        (first,) = runner(x)
    (second,) = runner(x)
    assert runner.fallbacks == {engine_node.BUILD_FAILED: 2} and runner.stats["native_runs"] == 2
    for got in (first, second):
        assert rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-6


def test_inputs_that_cannot_reach_the_backend_run_tensorflow(monkeypatch):
    def unreachable(value, backend):
        raise rt.ExecutionError("no device")

    x = random_input((2, 5, 6, 4), seed=13)
    gd, outs, _, converted = convert(lambda t: conv_block(t, "a"))
    runner = EngineRunner([n for n in converted.node if n.op == ENGINE_OP][0], mode="cupy")
    monkeypatch.setattr(engine_node.exchange, "to_engine", unreachable)
    with pytest.warns(EngineFallbackWarning, match="could not reach the cupy backend: no device"):
        got = runner.eager_call(tf.constant(x))[0]
    assert rel_l2(got.numpy(), run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-6
    assert runner.fallbacks == {engine_node.RUN_FAILED: 1}


def test_a_static_engine_that_fails_at_a_shape_is_not_retried_there(monkeypatch):
    calls = []

    def failing(ctx, inputs):
        calls.append(1)
        raise rt.ExecutionError("forced execution failure")

    x = random_input((2, 5, 6, 4), seed=14)
    gd, outs, _, converted = convert(lambda t: conv_block(t, "a"), is_dynamic_op=False)
    runner = EngineRunner([n for n in converted.node if n.op == ENGINE_OP][0], mode="numpy")
    monkeypatch.setattr(engine_node.exchange, "execute", failing)
    with pytest.warns(EngineFallbackWarning, match="forced execution failure"):
        runner(x)
    (got,) = runner(x)
    assert len(calls) == 1 and runner.fallbacks == {engine_node.RUN_FAILED: 2}
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-6
