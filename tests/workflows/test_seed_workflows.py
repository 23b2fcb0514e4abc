"""The seed's five workflows, each run end to end on the CPU through its main(argv)
with small settings, their figures checked against TensorFlow or the NumPy reference.

No packages beyond the test extra: scikit-learn (the digits) is in it, and
TensorFlow and Keras; each is skipped cleanly when missing. The engine parts on
CuPy (the plugin's CuPy code, the LeNet): tests/gpu/test_seed_workflows_gpu.py.
"""
import json
import os

import numpy as np
import pytest

pytest.importorskip("sklearn")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras")

import engine as rt  # noqa: E402
from tf_integration import registry  # noqa: E402
from workflows import (custom_layer_workflow, fresh_process, int8_workflow,  # noqa: E402
                       network_api_workflow, rnn_workflow, tensorflow_workflow)

NAMES = ["tensorflow_workflow", "network_api_workflow", "custom_layer_workflow",
         "int8_workflow", "rnn_workflow"]


@pytest.fixture(autouse=True)
def numpy_engines(monkeypatch):
    monkeypatch.setenv("CUPYRT_BACKEND", "numpy")


@pytest.mark.parametrize("name", NAMES)
def test_every_workflow_answers_help(name, capsys):
    mod = globals()[name]
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


# ---------------------------------------------------------------------------- tensorflow

def test_tensorflow_workflow_reloaded_in_a_fresh_process_matches_tensorflow(tmp_path, capsys):
    r = tensorflow_workflow.main(["--epochs", "3", "--precision", "FP32", "--repeats", "1",
                                  "--workdir", str(tmp_path)])
    assert r["share_saved_model"] == 1.0 and r["share_frozen"] == 1.0
    models = r["models"]
    assert set(models) == {"tf_saved_model", "cupyrt_saved_model", "tf_frozen", "cupyrt_frozen"}
    assert models["tf_saved_model"]["accuracy"] > 0.8          # it did learn the digits
    for name in ("cupyrt_saved_model", "cupyrt_frozen"):
        m = models[name]
        # the engines ran in the fresh process (warm-up + 1 timed run), TF never stood in
        assert m["engine_runs"] == 2 and m["native_runs"] == 0, (name, m)
        assert m["rel_l2"] <= 1e-5 and m["agreement"] == 1.0, (name, m)
        assert m["median_s"] > 0
    assert models["tf_frozen"]["engine_runs"] == 0 and models["tf_frozen"]["rel_l2"] <= 1e-5
    # the saved files are the ones the fresh process read
    assert os.path.isfile(tmp_path / "frozen_cupyrt.pb")
    assert os.path.isdir(tmp_path / "saved_model_cupyrt")
    out = capsys.readouterr().out
    assert "cupyrt_frozen" in out and "fresh process" in out


def test_fresh_process_failure_is_a_typed_error_with_its_stderr(tmp_path):
    manifest = {"models": [{"name": "m", "kind": "onnx", "path": "x"}]}
    with pytest.raises(fresh_process.FreshProcessError, match="kind 'onnx'; expected one of"):
        fresh_process.run_in_fresh_process(manifest, {"x": np.ones((1, 2), np.float32)},
                                           str(tmp_path))


def test_fresh_process_module_help(capsys):
    assert fresh_process.main(["--help"]) == 0
    assert "MANIFEST.json" in capsys.readouterr().out
    assert fresh_process.main([]) == 2


# ---------------------------------------------------------------------------- network API

def _tf_forward(params, x):
    """The LeNet forward pass in TensorFlow: an independent check of the NumPy one."""
    def conv(t, i):
        w = np.transpose(params[f"conv{i}.weight"], (2, 3, 1, 0))         # OIHW -> HWIO
        return tf.nn.relu(tf.nn.conv2d(t, w, 1, "SAME") + params[f"conv{i}.bias"])
    t = tf.constant(np.transpose(x, (0, 2, 3, 1)))
    for i in (1, 2):
        t = tf.nn.avg_pool2d(conv(t, i), 2, 2, "VALID")
    flat = tf.reshape(tf.transpose(t, (0, 3, 1, 2)), (len(x), -1))          # (c, h, w) order
    h = tf.nn.relu(flat @ params["fc1.weight"].T + params["fc1.bias"])
    return tf.nn.softmax(h @ params["fc2.weight"].T + params["fc2.bias"]).numpy()


def test_network_api_workflow_plan_matches_numpy_and_tensorflow(tmp_path, capsys):
    weights, plan = str(tmp_path / "lenet.npz"), str(tmp_path / "lenet.plan")
    r = network_api_workflow.main(["--epochs", "6", "--weights", weights, "--plan", plan])
    assert r["train_seconds"] is not None and os.path.isfile(weights) and os.path.isfile(plan)
    assert r["rel_l2"] <= 1e-5 and r["agreement"] == 1.0
    assert r["accuracy_engine"] == r["accuracy_numpy"] > 0.85
    # ReLUs fused into the convolutions and the first FC layer by the builder
    assert r["network_layers"] == 11 and "ACTIVATION" not in r["engine_layers"]
    params = network_api_workflow.read_weights(weights)
    _, _, x_test, _ = network_api_workflow.digits_nchw()
    np.testing.assert_allclose(r["reference"], _tf_forward(params, x_test), rtol=1e-4, atol=1e-6)
    # the plan file alone reproduces the outputs
    with open(plan, "rb") as f:
        eng = rt.Runtime().deserialize_cuda_engine(f.read())
    got = eng.create_execution_context().execute({"image": x_test})["probs"]
    np.testing.assert_allclose(got, r["probs"], rtol=1e-6, atol=1e-7)
    # an existing .npz is read, not retrained; FP16 stays within FP16 error
    r16 = network_api_workflow.main(["--weights", weights, "--precision", "FP16"])
    assert r16["train_seconds"] is None and r16["rel_l2"] <= 1e-2
    assert "weights read from" in capsys.readouterr().out


def test_network_api_numpy_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 1, 8, 8))
    y = rng.integers(0, 10, 4)
    params = {k: rng.standard_normal(s) * 0.3 for k, s in network_api_workflow.SHAPES.items()}
    grads = network_api_workflow._grads(params, x, y)

    def loss(p):
        probs = network_api_workflow.forward(p, x)
        return -np.log(probs[np.arange(4), y]).mean()
    for name in ("conv1.weight", "conv2.weight", "fc1.bias", "fc2.weight"):
        idx = tuple(rng.integers(0, d) for d in params[name].shape)
        p_hi = {k: v.copy() for k, v in params.items()}
        p_lo = {k: v.copy() for k, v in params.items()}
        p_hi[name][idx] += 1e-5
        p_lo[name][idx] -= 1e-5
        numeric = (loss(p_hi) - loss(p_lo)) / 2e-5
        assert abs(numeric - grads[name][idx]) <= 1e-5 + 1e-4 * abs(numeric), name


def test_network_api_weights_file_errors(tmp_path):
    shapes = network_api_workflow.SHAPES
    full = {k: np.ones(s, np.float32) for k, s in shapes.items()}
    path = str(tmp_path / "w.npz")
    np.savez(path, **{k: v for k, v in full.items() if k != "fc2.bias"})
    with pytest.raises(network_api_workflow.WeightsFileError,
                       match=r"lacks weights \['fc2.bias'\]"):
        network_api_workflow.read_weights(path)
    np.savez(path, **dict(full, **{"conv1.weight": np.ones((6, 1, 5, 5), np.float32)}))
    with pytest.raises(network_api_workflow.WeightsFileError,
                       match=r"conv1.weight has shape \(6, 1, 5, 5\); expected \(6, 1, 3, 3\)"):
        network_api_workflow.read_weights(path)


# ---------------------------------------------------------------------------- custom layer

@pytest.fixture
def clean_registries():
    """Whatever a test leaves registered is removed at its end."""
    yield
    custom_layer_workflow.unregister()
    if registry.is_registered("Cumsum"):
        registry.unregister("Cumsum")


def _cumsum_registered():
    plugin = rt.get_plugin_registry().get_creator(custom_layer_workflow.CumSumPlugin.plugin_type)
    return plugin is not None, registry.is_registered("Cumsum")


def test_custom_layer_workflow_one_engine_in_a_fresh_process(tmp_path, capsys, clean_registries):
    assert _cumsum_registered() == (False, False)        # the op really is unsupported
    r = custom_layer_workflow.main(["--batch", "16", "--workdir", str(tmp_path)])
    assert r["before"]["engines"] >= 1 and r["before"]["share"] < 1.0
    assert sum("Cumsum: op not supported" in v for v in r["before"]["left"].values()) == 2
    assert r["after"] == {"engines": 1, "share": 1.0, "left": {}}
    assert r["stats"]["engine_runs"] == 4 and r["stats"]["native_runs"] == 0
    assert r["rel_l2"] <= 1e-5 and r["output"].shape == (16, 10)
    assert _cumsum_registered() == (False, False)        # main leaves the process as it was
    assert "1 engine(s), 100%" in capsys.readouterr().out


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumsum_plugin_code_matches_tensorflow(exclusive, reverse, axis):
    x = np.random.default_rng(5).standard_normal((3, 4, 5)).astype(np.float32)
    want = tf.math.cumsum(x, axis=axis, exclusive=exclusive, reverse=reverse).numpy()
    got = custom_layer_workflow.CumSumPlugin(axis, exclusive, reverse).enqueue_numpy([x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cumsum_plugin_shape_rule_refuses_bad_axis_and_type(clean_registries):
    custom_layer_workflow.register()
    for plugin, dtype, match in [(custom_layer_workflow.CumSumPlugin(3), rt.float32,
                                  r"axis 3 for an input of rank 2"),
                                 (custom_layer_workflow.CumSumPlugin(0), rt.int32,
                                  "CumSum input of type")]:
        net = rt.Builder().create_network()
        x = net.add_input("x", dtype, (2, 4))
        with pytest.raises(rt.PluginError, match=match):
            net.add_plugin_v2([x], plugin)


def test_cumsum_converter_refuses_a_computed_axis(clean_registries):
    from tf_integration import TrtGraphConverter
    custom_layer_workflow.register()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
        axis = tf.compat.v1.placeholder(tf.int32, [], name="axis")
        y = tf.identity(tf.math.cumsum(tf.nn.relu(x) * 2.0, axis=axis), name="y")
    conv = TrtGraphConverter(input_graph_def=g.as_graph_def(), nodes_denylist=["y"],
                             minimum_segment_size=1)
    conv.convert()
    (why,) = [r for r in conv.report["left_to_tensorflow"].values() if r["op"] == "Cumsum"]
    assert why["kind"] == "unsupported attribute value or dtype"
    assert why["detail"] == f"Cumsum axis {axis.op.name} is computed; expected a constant"
    assert y.op.name == "y"


def test_custom_layer_workflow_refuses_a_foreign_cumsum_converter(clean_registries):
    def other(ctx, node):
        raise AssertionError("never called")
    registry.converter("Cumsum")(other)
    with pytest.raises(registry.RegistryError, match="already has a converter"):
        custom_layer_workflow.run()
    custom_layer_workflow.unregister()                   # leaves a converter not its own
    assert registry.lookup("Cumsum").fn is other


# ---------------------------------------------------------------------------- INT8

def test_int8_workflow_accuracy_and_per_layer_report(tmp_path, capsys):
    r = int8_workflow.main(["--epochs", "3", "--calib-images", "256", "--eval-images", "64",
                            "--budget", "1e-3", "--workdir", str(tmp_path)])
    assert r["accuracy_tf"] > 0.8
    assert r["accuracy_fp32"] == r["accuracy_tf"] and r["rel_l2_fp32"] <= 1e-5
    assert r["int8_layers"] >= 2 and 0 < r["rel_l2_int8"] <= 0.2     # INT8 did run: it differs
    assert r["accuracy_int8"] >= r["accuracy_tf"] - 0.03 and r["agreement_int8"] >= 0.95
    errors = [e for _, _, e in r["layers"]]
    assert len(errors) == r["int8_layers"] and errors == sorted(errors, reverse=True)
    assert errors[0] > 0
    # the budget is tight: the worst layers leave INT8 until it is met (or none are left)
    assert r["kept_fp16"] and r["kept_fp16"][0] == r["layers"][0][0]
    assert (r["error_after_keeping"] <= 1e-3 or len(r["kept_fp16"]) == len(r["layers"]))
    assert r["error_after_keeping"] < r["output_error"]
    manifest = json.load(open(tmp_path / "engines" / "manifest.json"))
    assert manifest["engines"][0]["calibration_cache"]
    out = capsys.readouterr().out
    assert "per-layer error" in out and r["layers"][0][0] in out


def test_int8_workflow_unknown_calibrator():
    with pytest.raises(ValueError, match="calibrator 'kl'; expected one of entropy, minmax"):
        int8_workflow.run(algorithm="kl")


# ---------------------------------------------------------------------------- RNN

def test_rnn_rows_resampling_is_linear_interpolation():
    img = np.random.default_rng(2).standard_normal((2, 8, 8)).astype(np.float32)
    assert rnn_workflow.resample_rows(img, 8) is img
    got = rnn_workflow.resample_rows(img, 5)
    pos = np.linspace(0, 7, 5)
    want = np.stack([[np.interp(pos, np.arange(8), img[n, :, c]) for c in range(8)]
                     for n in range(2)]).transpose(0, 2, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_rnn_workflow_lstm_is_one_rnn_layer_matching_tf_at_each_length(tmp_path, capsys):
    r = rnn_workflow.main(["--epochs", "2", "--steps", "3,8", "--workdir", str(tmp_path)])
    for name, c in r["conversions"].items():
        assert c["engines"] == 1 and c["share"] == 1.0, (name, c)
        assert c["ops"][0].get("PartitionedCall") == 1           # the Keras LSTM region
        if "layers" in c:
            (layers,) = c["layers"].values()
            assert layers.get("RNN_V2") == 1, layers
    assert set(r["steps"]) == {3, 8}
    for t, row in r["steps"].items():
        assert len(row) == 5
        for name, m in row.items():
            tol = 1e-5 if "FP32" in name or name == "TensorFlow" else 1e-2
            assert m["rel_l2"] <= tol, (t, name, m)
            assert abs(m["accuracy"] - row["TensorFlow"]["accuracy"]) <= 0.01, (t, name)
    assert r["steps"][8]["TensorFlow"]["accuracy"] > 0.5
    # 4 converted models x 2 lengths, every one on its engine
    assert r["engine_runs"] == 8 and r["native_runs"] == 0
    assert "RNN_V2 1" in capsys.readouterr().out
