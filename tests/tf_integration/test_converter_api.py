"""TrtGraphConverter end to end: parameters, engines in sessions and tf.function,
fallback to TensorFlow, the per-shape engine cache, reports and errors."""
import json
import warnings

import numpy as np
import pytest
import tensorflow as tf

import engine as rt

from tf_integration import (EngineFallbackWarning, GraphConverter, TrtGraphConverter,
                            import_graph_def, wrap_frozen_graph)
from tf_integration import engine_node, engine_storage, graph_converter, registry, segment_to_engine
from tf_integration.engine_node import ENGINE_OP, EngineRunner
from tf_integration.errors import (ConverterArgumentError, EngineNodeError, RegistryError,
                                   TFIntegrationError)
from tfi_helpers import build_graph, cross_validate, random_input, rel_l2, run_graph

W = np.random.default_rng(11).standard_normal((3, 3, 4, 4)).astype(np.float32)


def conv_block(x, name):
    y = tf.nn.conv2d(x, tf.constant(W), 1, "SAME", name=f"{name}_conv")
    y = tf.nn.bias_add(y, tf.constant(np.linspace(-1, 1, 4, dtype=np.float32)))
    return tf.nn.relu(y, name=f"{name}_relu")


def two_regions(x):
    y = conv_block(x, "a")
    y = tf.math.cumsum(y, axis=1, name="unsupported")     # no converter: stays in TF
    return conv_block(y, "b")


def test_unsupported_op_between_regions_gives_two_engines():
    x = random_input((2, 5, 6, 4), seed=1)
    conv, converted = cross_validate(two_regions, [x], minimum_segment_size=3, expect_engines=2)
    left = conv.report["left_to_tensorflow"]
    assert left["unsupported"]["kind"] == registry.Reason.NOT_SUPPORTED
    assert "Cumsum" in left["unsupported"]["detail"]
    text = conv.summary()
    assert "op not supported" in text and "unsupported (Cumsum)" in text
    assert "CupyrtEngine_0" in text and "CupyrtEngine_1" in text


def test_graph_converter_is_the_same_class():
    assert GraphConverter is TrtGraphConverter


def test_nothing_convertible_returns_graph_unchanged_with_explanation():
    gd, outs = build_graph(lambda x: tf.math.cumsum(tf.math.cumprod(x, 1), 1), [(2, 5)])
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"])
    converted = conv.convert()
    assert sorted(n.name for n in converted.node) == sorted(n.name for n in gd.node)
    text = conv.summary()
    assert "nothing was converted" in text and "Cumprod" in text and "Cumsum" in text
    x = random_input((2, 5))
    np.testing.assert_allclose(run_graph(converted, outs, {"x0:0": x}, converted=True)[0],
                               run_graph(gd, outs, {"x0:0": x})[0])


def test_minimum_segment_size_minus_one_disables_conversion():
    gd, _ = build_graph(lambda x: conv_block(x, "a"), [(1, 4, 4, 4)])
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"], minimum_segment_size=-1)
    assert not any(n.op == ENGINE_OP for n in conv.convert().node)
    assert "disabled" in conv.summary()


def test_denylisted_nodes_stay_fetchable():
    def body(x):
        a = conv_block(x, "a")
        tf.identity(a, name="probe")
        return conv_block(a, "b")

    x = random_input((2, 5, 6, 4), seed=2)
    gd, outs = build_graph(body, [x.shape])
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0", "probe"],
                             minimum_segment_size=1, is_dynamic_op=True)
    converted = conv.convert()
    assert conv.report["left_to_tensorflow"]["probe"]["kind"] == "denylisted"
    ref = run_graph(gd, ["probe:0", outs[0]], {"x0:0": x})
    got = run_graph(converted, ["probe:0", outs[0]], {"x0:0": x}, converted=True)
    for r, g in zip(ref, got):
        assert rel_l2(g, r) <= 1e-5


def test_engine_nodes_run_under_tf_function():
    x = random_input((2, 5, 6, 4), seed=3)
    gd, outs = build_graph(lambda t: conv_block(t, "a"), [x.shape])
    converted = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"],
                                  minimum_segment_size=1, is_dynamic_op=True).convert()
    fn = wrap_frozen_graph(converted, "x0:0", outs[0])
    got = tf.function(lambda t: fn(t))(tf.constant(x)).numpy()
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-5


def test_forced_engine_failure_falls_back_to_tensorflow(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("forced build failure")

    monkeypatch.setattr(engine_node, "build_engine", broken)
    x = random_input((2, 5, 6, 4), seed=4)
    gd, outs = build_graph(lambda t: conv_block(t, "a"), [x.shape])
    converted = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"],
                                  minimum_segment_size=1, is_dynamic_op=True).convert()
    with pytest.warns(EngineFallbackWarning, match="forced build failure"):
        got = run_graph(converted, outs, {"x0:0": x}, converted=True)[0]
    np.testing.assert_allclose(got, run_graph(gd, outs, {"x0:0": x})[0], rtol=1e-6)


def _runner(max_cached, dynamic=True, max_batch=8):
    x = random_input((2, 5, 6, 4), seed=5)
    gd, _ = build_graph(lambda t: conv_block(t, "a"), [x.shape])
    converted = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"],
                                  minimum_segment_size=1, is_dynamic_op=dynamic,
                                  max_batch_size=max_batch,
                                  maximum_cached_engines=max_cached).convert()
    (node,) = [n for n in converted.node if n.op == ENGINE_OP]
    return EngineRunner(node), gd


def test_engine_cache_is_lru_bounded_by_maximum_cached_engines():
    runner, gd = _runner(max_cached=2)
    shapes = [(1, 5, 6, 4), (2, 5, 6, 4), (1, 5, 6, 4), (3, 5, 6, 4)]
    for i, s in enumerate(shapes):
        x = random_input(s, seed=i)
        (got,) = runner(x)
        assert rel_l2(got, run_graph(gd, ["out0:0"], {"x0:0": x})[0]) <= 1e-5
    assert runner.stats["engines_built"] == 3       # the repeat of (1, ...) hit the cache
    assert runner.stats["cache_hits"] == 1
    assert runner.stats["evictions"] == 1            # (2, ...) was least recently used
    assert list(runner.cache) == [((1, 5, 6, 4),), ((3, 5, 6, 4),)]
    assert runner.stats["native_runs"] == 0


def test_dynamic_engines_build_from_the_stored_network(monkeypatch):
    runner, gd = _runner(max_cached=2)
    assert runner.network and runner.static_plan is None
    net = rt.deserialize_network(runner.network)
    assert net.get_input(0).name == "input_0" and net.get_input(0).shape[0] == -1

    def no_conversion(*args, **kwargs):
        raise AssertionError("the segment was converted again")

    monkeypatch.setattr(engine_storage, "build_network", no_conversion)   # the runner's builds
    for batch in (1, 3):
        x = random_input((batch, 5, 6, 4), seed=batch)
        (got,) = runner(x)
        assert rel_l2(got, run_graph(gd, ["out0:0"], {"x0:0": x})[0]) <= 1e-5
    assert runner.stats["engines_built"] == 2 and runner.stats["native_runs"] == 0


def test_segment_that_needs_concrete_shapes_is_converted_per_shape(monkeypatch):
    real = segment_to_engine.build_network

    def concrete_only(segment_gd, input_shapes=None, graph=None):
        if input_shapes is None:      # as a layer that cannot take a -1 dim would
            raise rt.NetworkDefinitionError("layer", "input", "-1", "concrete dims")
        return real(segment_gd, input_shapes, graph)

    for module in (graph_converter, engine_storage):     # at convert() and at run time
        monkeypatch.setattr(module, "build_network", concrete_only)
    runner, gd = _runner(max_cached=1)
    assert runner.network is None          # a network valid only at one shape is not stored
    x = random_input((3, 5, 6, 4), seed=1)
    (got,) = runner(x)
    assert rel_l2(got, run_graph(gd, ["out0:0"], {"x0:0": x})[0]) <= 1e-5
    assert runner.stats["engines_built"] == 1 and runner.stats["native_runs"] == 0


def test_static_engine_beyond_max_batch_size_runs_natively():
    runner, gd = _runner(max_cached=1, dynamic=False, max_batch=2)
    assert runner.static_plan
    x = random_input((3, 5, 6, 4), seed=9)
    with pytest.warns(EngineFallbackWarning, match="max_batch_size 2"):
        (got,) = runner(x)
    assert rel_l2(got, run_graph(gd, ["out0:0"], {"x0:0": x})[0]) <= 1e-6
    (small,) = runner(x[:2])
    assert runner.stats["engine_runs"] == 1


def test_json_report_written_via_env(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    monkeypatch.setenv("CUPYRT_REPORT_JSON", str(path))
    gd, _ = build_graph(two_regions, [(1, 5, 6, 4)])
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"])
    conv.convert()
    data = json.loads(path.read_text())
    assert len(data["engines"]) == 2
    assert data["left_to_tensorflow"]["unsupported"]["kind"] == "op not supported"
    assert data["engines"][0]["ops"] == {"BiasAdd": 1, "Conv2D": 1, "Relu": 1}
    assert data["engines"][0]["inputs"][0]["shape"] == [-1, 5, 6, 4]
    assert 0 < data["converted_share"] < 1


@pytest.mark.parametrize("kw,match", [
    (dict(precision_mode="FP64"), "FP32, FP16, INT8"),
    (dict(calibration_algorithm="KL"), "'entropy', 'minmax', 'percentile'"),
    (dict(minimum_segment_size=0), "-1 to disable"),
    (dict(minimum_segment_size=-2), "int >= -1"),
    (dict(maximum_cached_engines=0), "int >= 1"),
    (dict(max_batch_size=1.5), "int >= 1"),
    (dict(nodes_denylist="out0"), "list of node or tensor names"),
    (dict(input_saved_model_dir="/tmp/x"), "use TrtGraphConverterV2"),
    (dict(input_graph_def="not a graph"), "tf.compat.v1.GraphDef"),
])
def test_bad_arguments_name_the_valid_values(kw, match):
    gd, _ = build_graph(tf.nn.relu, [(1, 3)])
    kw = dict(dict(input_graph_def=gd), **kw)
    with pytest.raises(ConverterArgumentError, match=match):
        TrtGraphConverter(**kw)


def test_unknown_denylisted_node_is_an_error():
    gd, _ = build_graph(tf.nn.relu, [(1, 3)])
    with pytest.raises(ConverterArgumentError, match="names of nodes"):
        TrtGraphConverter(input_graph_def=gd, nodes_denylist=["nope"]).convert()


def test_methods_before_convert_and_calibrate_raise(tmp_path):
    gd, _ = build_graph(tf.nn.relu, [(1, 3)])
    conv = TrtGraphConverter(input_graph_def=gd)
    for call in (conv.summary, lambda: conv.save(str(tmp_path / "m.pb")),
                 lambda: conv.write_report(str(tmp_path / "r.json"))):
        with pytest.raises(TFIntegrationError, match="before convert"):
            call()
    with pytest.raises(TFIntegrationError, match="calibrate\\(\\) before convert"):
        conv.calibrate(["out0:0"], 1, feed_dict_fn=lambda: {})


def test_import_graph_def_rejects_non_graphdefs():
    with pytest.raises(EngineNodeError, match="tf.compat.v1.GraphDef"):
        import_graph_def(b"bytes")


def test_registry_rejects_double_registration_and_unknown_lookups():
    with pytest.raises(RegistryError, match="already has a converter"):
        registry.converter("Relu")(lambda ctx, node: [])
    with pytest.raises(RegistryError, match="no converter for TF op 'Cumsum'"):
        registry.lookup("Cumsum")
    with pytest.raises(RegistryError, match="at least one TF op"):
        registry.converter()
    with pytest.raises(RegistryError, match="no converter to unregister"):
        registry.unregister("Cumsum")
    with pytest.raises(RegistryError, match="reason kind"):
        registry.Reason("bogus")
    registry.converter("CupyrtTestOp")(lambda ctx, node: [])
    registry.unregister("CupyrtTestOp")
    assert not registry.is_registered("CupyrtTestOp")


def test_supported_ops_table_comes_from_the_registry():
    table = registry.supported_ops_markdown()
    rows = [line for line in table.splitlines()[2:] if line.endswith("| yes |")]
    assert len(rows) == len(registry.supported_ops())
    assert any(r.startswith("| Conv2D | nn |") and "constant filter" in r for r in rows)


def test_fp16_precision_within_fp16_tolerance():
    x = random_input((2, 5, 6, 4), seed=6)
    with warnings.catch_warnings():
        cross_validate(lambda t: conv_block(t, "a"), [x], tol=1e-2, precision_mode="FP16")


def test_supported_ops_doc_is_generated_from_the_registry():
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(registry.__file__)), "SUPPORTED_OPS.md")
    with open(path) as f:
        assert registry.supported_ops_markdown() in f.read()
