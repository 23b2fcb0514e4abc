"""TrtGraphConverterV2: SavedModels in (Keras 3 export and tf.saved_model.save,
tf.Module with two signatures, tf_keras), converted FP32/FP16/INT8, built ahead,
saved self-contained and loaded again (here, in a fresh process, and with plain
tf.saved_model.load), functional While left to TensorFlow, every argument error."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

from engine import plan as planfile
from tf_integration import EngineFallbackWarning, TrtGraphConverterV2, load_saved_model
from tf_integration import saved_model_runtime as runtime
from tf_integration.errors import ConverterArgumentError, TFIntegrationError
from tf_integration.graph_utils import make_const_node
from tfi_helpers import rel_l2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = (8, 8, 3)


@pytest.fixture(autouse=True)
def _numpy_backend(monkeypatch):
    monkeypatch.setenv("CUPYRT_BACKEND", "numpy")


def _x(batch=2, seed=0, shape=SHAPE):
    return np.random.default_rng(seed).standard_normal((batch,) + shape).astype(np.float32)


def _keras3_model():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(SHAPE, name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(5)(x))


@pytest.fixture(scope="module")
def keras_dirs(tmp_path_factory):
    """{"export": model.export dir, "tf_save": tf.saved_model.save dir} of one Keras 3 model."""
    root = tmp_path_factory.mktemp("keras3")
    model = _keras3_model()
    model.export(str(root / "export"), verbose=False)
    tf.saved_model.save(model, str(root / "tf_save"))
    return {"export": str(root / "export"), "tf_save": str(root / "tf_save")}


class TwoSignatures(tf.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(1)
        self.w = tf.Variable(rng.standard_normal((4, 6)).astype(np.float32))
        self.b = tf.Variable(rng.standard_normal(6).astype(np.float32))
        self.v = tf.Variable(rng.standard_normal((6, 3)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def embed(self, x):
        return {"h": tf.nn.relu(tf.matmul(x, self.w) + self.b)}

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32),
                                  tf.TensorSpec([None, 6], tf.float32)])
    def score(self, zeta, alpha):
        h = tf.tanh(zeta * alpha + self.b)
        return {"logits": tf.matmul(h, self.v), "gate": tf.sigmoid(alpha)}


class WithLoop(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.random.default_rng(2).standard_normal((4, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def __call__(self, x):
        h = tf.nn.relu(tf.matmul(x, self.w) + 0.5)
        _, h = tf.while_loop(lambda i, h: i < 3,
                             lambda i, h: (i + 1, tf.tanh(tf.matmul(h, self.w))), [0, h])
        return {"y": tf.sigmoid(tf.matmul(h, self.w) * 2.0 - 0.1)}


@pytest.fixture(scope="module")
def module_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("modules")
    two = TwoSignatures()
    tf.saved_model.save(two, str(root / "two"), signatures={"embed": two.embed,
                                                            "score": two.score})
    loop = WithLoop()
    tf.saved_model.save(loop, str(root / "loop"), signatures={"serving_default": loop.__call__})
    tf.saved_model.save(tf.Module(), str(root / "empty"))
    return {k: str(root / k) for k in ("two", "loop", "empty")}


def _compare(src_dir, loaded, feeds_by_sig, tol):
    """Every signature of ``loaded`` against the source model, eagerly and in a tf.function."""
    src = tf.saved_model.load(src_dir)
    assert sorted(loaded.signatures.keys()) == sorted(src.signatures.keys())
    for key, feeds in feeds_by_sig.items():
        ref = src.signatures[key](**feeds)
        got = loaded.signatures[key](**feeds)
        sig = loaded.signatures[key]
        in_fn = tf.function(lambda kw: sig(**kw))({k: tf.constant(v) for k, v in feeds.items()})
        assert sorted(got) == sorted(ref)
        for name in ref:
            assert got[name].shape == ref[name].shape
            assert rel_l2(got[name], ref[name]) <= tol, (key, name, rel_l2(got[name], ref[name]))
            np.testing.assert_array_equal(in_fn[name].numpy(), got[name].numpy())


def _bound(export_dir):
    """The SavedEngines bound for the engines saved in ``export_dir``."""
    keys = set(runtime.engine_blobs(str(export_dir)))
    return [e for e in runtime.saved_engines() if e.key in keys]


def _engines_ran(export_dir):
    """The engines saved in ``export_dir``, checked to have run (none fell back to TF)."""
    new = _bound(export_dir)
    assert new, "no engine was bound"
    for eng in new:
        assert eng.stats["native_runs"] == 0 and eng.runner.stats["native_runs"] == 0, eng.stats
    return new


# ---------------------------------------------------------------------------- conversions

@pytest.mark.parametrize("kind", ["export", "tf_save"])
@pytest.mark.parametrize("precision,tol", [("FP32", 1e-4), ("FP16", 2e-2)])
def test_keras3_saved_model_converts_saves_and_loads(keras_dirs, kind, precision, tol, tmp_path):
    conv = TrtGraphConverterV2(input_saved_model_dir=keras_dirs[kind], precision_mode=precision)
    fn = conv.convert()
    for rep in conv.report.values():
        assert rep["converted_compute_nodes"] == rep["compute_nodes"] > 0, conv.summary()
        assert len(rep["engines"]) == 1 and rep["engines"][0]["precision"] == precision
    name = "image" if kind == "export" else "inputs"
    x = _x()
    ref = tf.saved_model.load(keras_dirs[kind]).signatures["serving_default"](
        **{name: tf.constant(x)})["output_0"]
    assert rel_l2(fn(**{name: x})["output_0"], ref) <= tol      # keywords, as a signature
    out = conv.save(str(tmp_path / "converted"))
    assert json.load(open(os.path.join(out, "assets.extra", "cupyrt_report.json")))
    if kind == "export":                 # 'serve' is 'serving_default': one engine, saved once
        assert conv.report["serve"]["same_function_as"] == "serving_default"
        assert "the same function as 'serving_default'" in conv.summary()
    assert len(runtime.engine_blobs(out)) == 1
    loaded = load_saved_model(out)
    feeds = {name: x}
    _compare(keras_dirs[kind], loaded, {k: feeds for k in loaded.signatures.keys()}, tol)
    _engines_ran(out)


def test_two_signatures_each_converted_with_their_own_inputs(module_dirs, tmp_path):
    conv = TrtGraphConverterV2(input_saved_model_dir=module_dirs["two"], minimum_segment_size=1)
    conv.convert()
    assert sorted(conv.report) == ["embed", "score"]
    assert all(len(r["engines"]) >= 1 for r in conv.report.values()), conv.summary()
    rng = np.random.default_rng(5)
    feeds = {"embed": {"x": rng.standard_normal((3, 4)).astype(np.float32)},
             "score": {"zeta": rng.standard_normal((2, 6)).astype(np.float32),
                       "alpha": rng.standard_normal((2, 6)).astype(np.float32)}}
    conv.build({"embed": lambda: iter([feeds["embed"]]),
                "score": lambda: iter([(feeds["score"]["alpha"], feeds["score"]["zeta"])])})
    out = conv.save(str(tmp_path / "two"))
    loaded = load_saved_model(out)
    _compare(module_dirs["two"], loaded, feeds, 1e-4)
    assert sum(e.stats["prebuilt_runs"] for e in _engines_ran(out)) >= 2


def test_signature_key_converts_one_and_keeps_the_others(module_dirs, tmp_path):
    conv = TrtGraphConverterV2(input_saved_model_dir=module_dirs["two"],
                               input_saved_model_signature_key="score", minimum_segment_size=1)
    conv.convert()
    assert conv.report["embed"] is None and conv.report["score"]["engines"]
    assert "'embed'" in conv.summary() and "not converted" in conv.summary()
    loaded = load_saved_model(conv.save(str(tmp_path / "one")))
    rng = np.random.default_rng(6)
    _compare(module_dirs["two"], loaded,
             {"embed": {"x": rng.standard_normal((2, 4)).astype(np.float32)},
              "score": {"zeta": rng.standard_normal((2, 6)).astype(np.float32),
                        "alpha": rng.standard_normal((2, 6)).astype(np.float32)}}, 1e-4)


def test_tf_keras_model(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.layers.Conv2D(4, 3, activation="relu",
                                                        input_shape=SHAPE),
                                 tf_keras.layers.GlobalAveragePooling2D(),
                                 tf_keras.layers.Dense(3, activation="softmax")])
    src = str(tmp_path / "src")
    tf.saved_model.save(model, src)
    conv = TrtGraphConverterV2(input_saved_model_dir=src)
    conv.convert()
    rep = conv.report["serving_default"]
    assert rep["converted_compute_nodes"] == rep["compute_nodes"], conv.summary()
    loaded = load_saved_model(conv.save(str(tmp_path / "out")))
    (name,) = loaded.signatures["serving_default"].structured_input_signature[1]
    _compare(src, loaded, {"serving_default": {name: _x(3, seed=4)}}, 1e-4)


@pytest.mark.parametrize("dynamic_shape", [False, True])
def test_int8_calibration_on_a_conv_net(keras_dirs, tmp_path, dynamic_shape):
    calib = [_x(8, seed=10 + i) for i in range(3)]
    conv = TrtGraphConverterV2(input_saved_model_dir=keras_dirs["export"],
                               input_saved_model_signature_key="serving_default",
                               precision_mode="int8", use_dynamic_shape=dynamic_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)    # calibration ran on engines
        conv.convert(calibration_input_fn=lambda: iter(calib))
    (eng,) = conv.report["serving_default"]["engines"]
    assert eng["calibration_batches"] == 3
    if dynamic_shape:                    # one plan, built now: its layers say INT8
        assert eng["layer_precisions"].get("INT8", 0) >= 2, eng["layer_precisions"]
    out = conv.save(str(tmp_path / "int8"))
    loaded = load_saved_model(out)
    x = _x(16, seed=99)
    ref = tf.saved_model.load(keras_dirs["export"]).signatures["serving_default"](
        image=tf.constant(x))["output_0"].numpy()
    got = loaded.signatures["serving_default"](image=tf.constant(x))["output_0"].numpy()
    err = rel_l2(got, ref)
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    assert 1e-4 < err <= 0.05 and agree >= 0.9, (err, agree)   # INT8 indeed, same model
    _engines_ran(out)


# ---------------------------------------------------------------------------- build, shapes

def test_build_ahead_then_no_engine_is_built_at_run_time(keras_dirs, tmp_path):
    conv = TrtGraphConverterV2(input_saved_model_dir=keras_dirs["export"],
                               input_saved_model_signature_key="serving_default",
                               maximum_cached_engines=2, allow_build_at_runtime=False)
    conv.convert()
    conv.build(lambda: iter([_x(2), _x(2, seed=1), _x(1), [_x(3)]]))   # 3 shapes, room for 2
    built = conv.report["serving_default"]["built_ahead"]
    assert sorted(built["CupyrtEngine_0"]) == [[[1, 8, 8, 3]], [[2, 8, 8, 3]]]
    assert "built ahead" in conv.summary()
    out = conv.save(str(tmp_path / "built"))
    sig = load_saved_model(out).signatures["serving_default"]
    src = tf.saved_model.load(keras_dirs["export"]).signatures["serving_default"]
    for x in (_x(2, seed=7), _x(1, seed=8)):
        assert rel_l2(sig(image=x)["output_0"], src(image=x)["output_0"]) <= 1e-4
    (eng,) = _bound(out)
    assert eng.stats["prebuilt_runs"] == 2 and eng.engines_built == 0
    x3 = _x(3, seed=9)
    with pytest.warns(EngineFallbackWarning, match="allow_build_at_runtime=False"):
        got = sig(image=x3)["output_0"]          # not built ahead: TF's segment runs
    assert rel_l2(got, src(image=x3)["output_0"]) <= 1e-6
    assert eng.stats["native_runs"] == 1 and eng.engines_built == 0


def test_dynamic_shape_engines_take_every_batch(keras_dirs, tmp_path):
    conv = TrtGraphConverterV2(input_saved_model_dir=keras_dirs["export"],
                               use_dynamic_shape=True, dynamic_shape_profile_strategy="Range")
    conv.convert()
    assert all(e["static"] for r in conv.report.values() for e in r["engines"])
    conv.build(lambda: iter([_x(1)]))
    out = conv.save(str(tmp_path / "dyn"))
    loaded = load_saved_model(out)
    src = tf.saved_model.load(keras_dirs["export"]).signatures["serving_default"]
    for batch in (1, 5):
        x = _x(batch, seed=batch)
        assert rel_l2(loaded.signatures["serving_default"](image=x)["output_0"],
                      src(image=x)["output_0"]) <= 1e-4
    engines = _bound(out)
    assert engines and sum(e.stats["runtime_runs"] for e in engines) >= 2
    assert all(e.engines_built == 0 and e.runner.stats["native_runs"] == 0 for e in engines)


def test_functional_while_stays_native_with_its_reason(module_dirs, tmp_path):
    conv = TrtGraphConverterV2(input_saved_model_dir=module_dirs["loop"], minimum_segment_size=1)
    conv.convert()
    rep = conv.report["serving_default"]
    loops = {n: r for n, r in rep["left_to_tensorflow"].items() if r["op"] == "While"}
    assert len(loops) == 1 and list(loops.values())[0]["detail"], rep["left_to_tensorflow"]
    assert "(While)" in conv.summary()
    assert len(rep["engines"]) >= 2           # before and after the loop
    loaded = load_saved_model(conv.save(str(tmp_path / "loop")))
    ops = {n.op for f in [loaded.signatures["serving_default"].graph.as_graph_def()]
           for g in f.library.function for n in g.node_def}
    assert "While" in ops and "EagerPyFunc" in ops
    _compare(module_dirs["loop"], loaded, {"serving_default": {"x": _x(3, shape=(4,))}}, 1e-4)


# ---------------------------------------------------------------------------- fresh process

FRESH = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
out, data = sys.argv[1], np.load(sys.argv[2])
plain = tf.saved_model.load(out)                # TensorFlow alone: engines are not known yet
try:
    plain.signatures["serving_default"](image=data["x"])
    sys.exit("ran without tf_integration")
except Exception as exc:                        # the token names the missing import
    assert "import tf_integration" in str(exc), exc
import tf_integration
from tf_integration.saved_model_runtime import saved_engines
got_plain = plain.signatures["serving_default"](image=data["x"])["output_0"].numpy()
loaded = tf_integration.load_saved_model(out)
sig = loaded.signatures["serving_default"]
got = tf.function(lambda x: sig(image=x))(tf.constant(data["x"]))["output_0"].numpy()
stats = [dict(e.stats, built=e.engines_built) for e in saved_engines()]
print(json.dumps({"plain": float(abs(got_plain - data["ref"]).max()),
                  "rel": float(np.linalg.norm(got - data["ref"]) / np.linalg.norm(data["ref"])),
                  "stats": stats}))
"""


def test_fresh_process_loads_without_the_source_and_without_building(keras_dirs, tmp_path):
    src = str(tmp_path / "src")
    shutil.copytree(keras_dirs["export"], src)
    conv = TrtGraphConverterV2(input_saved_model_dir=src)
    conv.convert()
    x = _x(2, seed=21)
    conv.build(lambda: iter([x]))
    out = conv.save(str(tmp_path / "converted"))
    ref = tf.saved_model.load(src).signatures["serving_default"](image=x)["output_0"].numpy()
    shutil.rmtree(src)
    np.savez(tmp_path / "data.npz", x=x, ref=ref)
    env = dict(os.environ, CUPYRT_BACKEND="numpy", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", FRESH, out, str(tmp_path / "data.npz")],
                          capture_output=True, text=True, timeout=400, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["plain"] <= 1e-4 * max(1.0, float(np.abs(ref).max()))
    assert result["rel"] <= 1e-4
    assert sum(s.get("prebuilt_runs", 0) for s in result["stats"]) >= 2, result
    assert all(s["built"] == 0 and s.get("native_runs", 0) == 0 for s in result["stats"]), result


# ---------------------------------------------------------------------------- weights once

def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory):
    """A Keras 3 export whose weights (~0.4 MB) outweigh the SavedModel's overhead."""
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    root = tmp_path_factory.mktemp("wide")
    keras.Model(inp, keras.layers.Dense(10)(x)).export(str(root / "src"), verbose=False)
    return str(root / "src")


@pytest.mark.parametrize("precision,tol", [("FP32", 1e-4), ("FP16", 2e-2)])
def test_engines_built_ahead_store_every_weight_once(wide_dir, precision, tol, tmp_path):
    conv = TrtGraphConverterV2(input_saved_model_dir=wide_dir, precision_mode=precision,
                               maximum_cached_engines=2)
    conv.convert()
    xs = [_x(1, seed=31, shape=(16, 16, 3)), _x(4, seed=32, shape=(16, 16, 3))]
    conv.build(lambda: iter(xs))
    assert len(conv.report["serving_default"]["built_ahead"]["CupyrtEngine_0"]) == 2
    out = conv.save(str(tmp_path / "built"))
    original, converted = _dir_bytes(wide_dir), _dir_bytes(out)
    assert converted <= 1.5 * original, (converted, original)
    for blob in runtime.engine_blobs(out).values():       # plans built ahead: no weights
        node = tf.compat.v1.NodeDef.FromString(blob)
        plans = node.attr[runtime.PREBUILT_PLANS].list.s
        assert len(plans) == 2 and all(planfile.is_stripped(p) for p in plans)
    sig = load_saved_model(out).signatures["serving_default"]
    src = tf.saved_model.load(wide_dir).signatures["serving_default"]
    for x in xs:
        assert rel_l2(sig(image=x)["output_0"], src(image=x)["output_0"]) <= tol
    (eng,) = _engines_ran(out)
    # one runner per engine, serving both shapes from the plans built ahead
    assert eng.stats["prebuilt_runs"] == 2 and eng.runner.stats["ahead_runs"] == 2
    assert eng.engines_built == 0 and len(eng.prebuilt) == 2


def test_an_engine_built_ahead_that_cannot_load_is_served_like_other_shapes(keras_dirs,
                                                                             caplog, tmp_path):
    conv = TrtGraphConverterV2(input_saved_model_dir=keras_dirs["export"],
                               input_saved_model_signature_key="serving_default")
    conv.convert()
    x = _x(2, seed=33)
    conv.build(lambda: iter([x]))
    out = conv.save(str(tmp_path / "damaged"))
    ((key, blob),) = runtime.engine_blobs(out).items()
    runner = runtime.bind_engine(blob, key).runner
    (shapes,) = list(runner.ahead)
    runner.add_engine(shapes, b"not a plan")        # as if its bytes were damaged
    ref = tf.saved_model.load(keras_dirs["export"]).signatures["serving_default"](image=x)
    with caplog.at_level("WARNING"):
        got = load_saved_model(out).signatures["serving_default"](image=x)
    assert "built ahead for input shapes" in caplog.text and "cannot load" in caplog.text
    assert rel_l2(got["output_0"], ref["output_0"]) <= 1e-4
    assert shapes not in runner.ahead and runner.stats["engines_built"] == 1


# ---------------------------------------------------------------------------- CPU hosts

def test_without_cuda_load_saved_model_inlines_the_segments(keras_dirs, module_dirs, tmp_path,
                                                             monkeypatch):
    """No CUDA and no CUPYRT_BACKEND: load_saved_model runs each engine node as its
    segment's TF ops (no EagerPyFunc left); plain tf.saved_model.load still runs."""
    from tf_integration import engine_node

    conv = TrtGraphConverterV2(input_saved_model_dir=keras_dirs["export"])
    conv.convert()
    out = conv.save(str(tmp_path / "cpu"))
    monkeypatch.delenv("CUPYRT_BACKEND")
    monkeypatch.setattr(engine_node, "cuda_available", lambda: False)
    loaded = load_saved_model(out)
    for key in ("serve", "serving_default"):
        ops = _ops(loaded.signatures[key])
        assert "EagerPyFunc" not in ops and "Conv2D" in ops, ops
    x = _x(3, seed=34)
    _compare(keras_dirs["export"], loaded, {"serving_default": {"image": x},
                                            "serve": {"image": x}}, 1e-6)
    plain = tf.saved_model.load(out).signatures["serving_default"](image=x)
    ref = tf.saved_model.load(keras_dirs["export"]).signatures["serving_default"](image=x)
    assert rel_l2(plain["output_0"], ref["output_0"]) <= 1e-6
    # a functional While beside the engines (its body stays a library function)
    looped = TrtGraphConverterV2(input_saved_model_dir=module_dirs["loop"],
                                 minimum_segment_size=1)
    looped.convert()
    loop_out = looped.save(str(tmp_path / "loop"))
    xl = _x(2, seed=35, shape=(4,))
    loop_loaded = load_saved_model(loop_out)
    assert looped.report["serving_default"]["engines"]
    assert "EagerPyFunc" not in _ops(loop_loaded.signatures["serving_default"])
    _compare(module_dirs["loop"], loop_loaded, {"serving_default": {"x": xl}}, 1e-6)
    forced = load_saved_model(out, inline=False).signatures["serving_default"]
    assert "EagerPyFunc" in _ops(forced)


def _ops(fn):
    """Op types of a ConcreteFunction's graph and of every function it holds."""
    graph_def = fn.graph.as_graph_def()
    return [n.op for n in graph_def.node] + [
        n.op for f in graph_def.library.function for n in f.node_def]


def test_inlining_refuses_engine_data_that_is_not_an_engine():
    graph_def = tf.compat.v1.GraphDef()
    blob = tf.compat.v1.NodeDef(name="e", op="AddV2").SerializeToString()
    for suffix, value in ((runtime.KEY_SUFFIX, b"k"), (runtime.BLOB_SUFFIX, blob)):
        graph_def.node.append(make_const_node("e" + suffix, np.array(value, dtype=object)))
    call = graph_def.node.add(name="e", op="EagerPyFunc")
    call.input.extend(["e" + runtime.KEY_SUFFIX, "e" + runtime.BLOB_SUFFIX])
    call.attr["token"].s = runtime.TOKEN.encode()
    with pytest.raises(runtime.SavedModelError, match="holds a 'AddV2' node"):
        runtime.inline_engine_calls(graph_def)


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs,argument", [
    (dict(input_saved_model_dir=None), "input_saved_model_dir"),
    (dict(input_saved_model_dir="/nonexistent/model"), "input_saved_model_dir"),
    (dict(input_saved_model_tags="serve"), "input_saved_model_tags"),
    (dict(input_saved_model_tags=["train"]), "input_saved_model_tags"),
    (dict(input_saved_model_signature_key="nope"), "input_saved_model_signature_key"),
    (dict(use_dynamic_shape="yes"), "use_dynamic_shape"),
    (dict(dynamic_shape_profile_strategy="Fastest"), "dynamic_shape_profile_strategy"),
    (dict(precision_mode="FP8"), "precision_mode"),
    (dict(precision_mode=16), "precision_mode"),
    (dict(minimum_segment_size=0), "minimum_segment_size"),
    (dict(maximum_cached_engines=0), "maximum_cached_engines"),
    (dict(max_workspace_size_bytes=-1), "max_workspace_size_bytes"),
    (dict(use_calibration=1), "use_calibration"),
    (dict(allow_build_at_runtime=None), "allow_build_at_runtime"),
    (dict(conversion_params={"precision": "FP16"}), "conversion_params"),
    (dict(conversion_params="FP16"), "conversion_params"),
    (dict(conversion_params={"rewriter_config_template": object()}),
     "conversion_params.rewriter_config_template"),
    (dict(calibration_algorithm="kl"), "calibration_algorithm"),
])
def test_constructor_argument_errors(keras_dirs, kwargs, argument):
    kwargs.setdefault("input_saved_model_dir", keras_dirs["export"])
    with pytest.raises(ConverterArgumentError) as info:
        TrtGraphConverterV2(**kwargs)
    assert info.value.argument == argument


def test_saved_model_without_signatures_is_refused(module_dirs):
    with pytest.raises(ConverterArgumentError, match="at least one signature"):
        TrtGraphConverterV2(input_saved_model_dir=module_dirs["empty"])


def test_conversion_params_namedtuple_is_read(keras_dirs):
    import collections

    params = collections.namedtuple("TrtConversionParams", ["precision_mode",
                                                            "maximum_cached_engines"])
    conv = TrtGraphConverterV2(input_saved_model_dir=keras_dirs["export"],
                               conversion_params=params("fp16", 4))
    assert conv.params["precision_mode"] == "FP16" and conv.params["maximum_cached_engines"] == 4


def test_methods_before_convert_raise(keras_dirs, tmp_path):
    conv = TrtGraphConverterV2(input_saved_model_dir=keras_dirs["export"])
    for call in (conv.summary, lambda: conv.build(lambda: iter([_x()])),
                 lambda: conv.save(str(tmp_path / "x")), lambda: conv.signatures):
        with pytest.raises(TFIntegrationError, match="before convert"):
            call()


def test_calibration_input_fn_errors(keras_dirs):
    int8 = TrtGraphConverterV2(input_saved_model_dir=keras_dirs["export"], precision_mode="INT8")
    with pytest.raises(ConverterArgumentError, match="calibration_input_fn"):
        int8.convert()
    with pytest.raises(ConverterArgumentError, match="yielding at least one input"):
        int8.convert(calibration_input_fn=lambda: iter([]))
    with pytest.raises(ConverterArgumentError, match="for the converted signatures"):
        int8.convert(calibration_input_fn={"serving_default": lambda: iter([_x()]),
                                           "nope": lambda: iter([_x()])})
    with pytest.raises(ConverterArgumentError, match="a generator function"):
        int8.convert(calibration_input_fn=[_x()])
    fp32 = TrtGraphConverterV2(input_saved_model_dir=keras_dirs["export"])
    with pytest.raises(ConverterArgumentError, match="use_calibration=True only"):
        fp32.convert(calibration_input_fn=lambda: iter([_x()]))


def test_input_fn_structure_errors(module_dirs):
    conv = TrtGraphConverterV2(input_saved_model_dir=module_dirs["two"],
                               input_saved_model_signature_key="score", minimum_segment_size=1)
    conv.convert()
    a = np.ones((2, 6), np.float32)
    for bad, match in ((lambda: iter([{"zeta": a}]), "a dict with keys"),
                       (lambda: iter([(a, a, a)]), "2 inputs in the order"),
                       (lambda: iter([a]), "a list/tuple or dict of 2 inputs")):
        with pytest.raises(ConverterArgumentError, match=match):
            conv.build(bad)


def test_save_refuses_existing_content_and_bad_paths(keras_dirs, tmp_path):
    conv = TrtGraphConverterV2(input_saved_model_dir=keras_dirs["export"])
    conv.convert()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    with pytest.raises(ConverterArgumentError, match="new or empty directory"):
        conv.save(str(tmp_path / "full"))
    assert os.listdir(tmp_path / "full") == ["keep.txt"]
    with pytest.raises(ConverterArgumentError, match="directory path"):
        conv.save(42)
    (tmp_path / "empty").mkdir()
    assert os.path.isfile(os.path.join(conv.save(tmp_path / "empty"), "saved_model.pb"))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".cupyrt-save-")]


def test_runtime_errors(tmp_path):
    with pytest.raises(runtime.SavedModelError, match="not a directory"):
        load_saved_model(str(tmp_path / "missing"))
    with pytest.raises(runtime.SavedModelError, match="not a NodeDef"):
        runtime.bind_engine(b"\xff\xff not a proto")
    other = tf.compat.v1.NodeDef(name="n", op="AddV2").SerializeToString()
    with pytest.raises(runtime.SavedModelError, match="holds a 'AddV2' node"):
        runtime.bind_engine(other)
    with runtime.record_shapes():
        with pytest.raises(TFIntegrationError, match="already active"):
            with runtime.record_shapes():
                pass


def test_an_inlined_signature_outlives_its_loaded_model(module_dirs, tmp_path, monkeypatch):
    import gc

    monkeypatch.delenv("CUPYRT_BACKEND", raising=False)
    monkeypatch.setattr(runtime, "cuda_available", lambda: False, raising=False)
    looped = TrtGraphConverterV2(input_saved_model_dir=module_dirs["loop"], minimum_segment_size=1)
    looped.convert()
    out = looped.save(str(tmp_path / "loop"))
    xl = _x(2, seed=36, shape=(4,))
    ref = tf.saved_model.load(module_dirs["loop"]).signatures["serving_default"](x=xl)
    sig = load_saved_model(out, inline=True).signatures["serving_default"]
    gc.collect()                     # the loaded object and its original signatures are gone
    got = sig(x=xl)
    for name in ref:
        assert rel_l2(got[name], ref[name]) <= 1e-6
