"""``cupyrt convert`` and the TensorFlow main job, through the CLI entry points."""
import io
import json

import numpy as np
import pytest
import tensorflow as tf

from tf_integration.cli import run_demo
from tf_integration.engine_node import ENGINE_OP
from tfi_helpers import build_graph, random_input, rel_l2, run_graph
from workflows.cli import main


def test_cupyrt_convert_writes_a_runnable_pb_and_report(tmp_path, capsys):
    w = np.random.default_rng(0).standard_normal((3, 3, 4, 8)).astype(np.float32)
    gd, outs = build_graph(lambda x: tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME")) * 2.0,
                           [(1, 6, 6, 4)])
    src, dst, rep = tmp_path / "in.pb", tmp_path / "out.pb", tmp_path / "r.json"
    src.write_bytes(gd.SerializeToString())
    assert main(["convert", str(src), "-o", str(dst), "--outputs", "out0",
                 "--minimum-segment-size", "1", "--dynamic", "--report", str(rep)]) == 0
    assert "compute nodes converted: 3 of 3" in capsys.readouterr().out
    converted = tf.compat.v1.GraphDef.FromString(dst.read_bytes())
    assert sum(n.op == ENGINE_OP for n in converted.node) == 1
    assert json.loads(rep.read_text())["converted_share"] == 1.0
    x = random_input((2, 6, 6, 4))
    got = run_graph(converted, outs, {"x0:0": x}, converted=True)[0]
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-5


def test_main_job_reports_share_error_timings_and_backend():
    out = io.StringIO()
    rep = run_demo("MobileNetV2", size=32, batch=1, runs=1, out=out)
    text = out.getvalue()
    assert rep["share"] == 1.0 and rep["max_error"] < 1e-4 and rep["rel_l2"] < 1e-4
    assert "converted" in text and "max abs" in text and "relative L2" in text
    assert "ms/batch" in text and "speed-up" in text
    if rep["backend"] == "numpy":
        assert "NumPy reference backend" in text


def test_main_job_on_a_host_without_cuda_says_the_segments_run(monkeypatch):
    from engine.gpu.device import available

    if available():
        pytest.skip("a CUDA device runs the engines on CuPy")
    monkeypatch.delenv("CUPYRT_BACKEND", raising=False)
    out = io.StringIO()
    rep = run_demo("MobileNetV2", size=32, batch=1, runs=1, out=out)
    assert rep["backend"] == "tensorflow"
    assert "engine nodes run their TensorFlow segments" in out.getvalue()
    assert rep["max_error"] == 0.0           # the original ops, bit for bit


# -- INT8 from the command line ----------------------------------------------------------

def _cnn_pb(tmp_path, two_inputs=False):
    rng = np.random.default_rng(3)
    w = (0.3 * rng.standard_normal((3, 3, 4, 8))).astype(np.float32)
    if two_inputs:
        def body(x, y):
            return tf.nn.relu(tf.nn.conv2d(x + y, w, 1, "SAME"))
        gd, outs = build_graph(body, [(1, 6, 6, 4), (1, 6, 6, 4)])
    else:
        gd, outs = build_graph(lambda x: tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME")) * 2.0,
                               [(1, 6, 6, 4)])
    src = tmp_path / "in.pb"
    src.write_bytes(gd.SerializeToString())
    return gd, outs, src


def test_cupyrt_convert_int8_calibrates_from_npz_with_progress(tmp_path, capsys):
    gd, outs, src = _cnn_pb(tmp_path)
    samples = random_input((10, 6, 6, 4), seed=4)
    np.savez(tmp_path / "calib.npz", x0=samples)
    dst = tmp_path / "int8.pb"
    assert main(["convert", str(src), "-o", str(dst), "--outputs", "out0", "--precision",
                 "int8", "--calib-data", str(tmp_path / "calib.npz"), "--calib-batch-size",
                 "4", "--calib-algorithm", "minmax", "--minimum-segment-size", "1",
                 "--max-batch-size", "4"]) == 0
    captured = capsys.readouterr()
    assert "precision INT8" in captured.out
    # not a terminal: plain lines, the first and the last of 3 runs (10 samples, 4 a run)
    assert "calibrating: 0/3\n" in captured.err and "calibrating: 3/3 done" in captured.err
    converted = tf.compat.v1.GraphDef.FromString(dst.read_bytes())
    (node,) = [n for n in converted.node if n.op == ENGINE_OP]
    assert node.attr["calibration_table"].s.startswith(b"TRT-8601-MinMaxCalibration\n")
    x = samples[:4]
    got = run_graph(converted, outs, {"x0:0": x}, converted=True)[0]
    assert 1e-6 < rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) < 0.03


def test_calibration_npz_with_one_unnamed_array_feeds_the_only_input(tmp_path):
    from tf_integration.cli import _calibration_feeds

    gd, _, _ = _cnn_pb(tmp_path)
    np.savez(tmp_path / "c.npz", np.ones((3, 6, 6, 4), np.float32))
    assert list(_calibration_feeds(tmp_path / "c.npz", gd, [])) == ["x0:0"]
    assert list(_calibration_feeds(tmp_path / "c.npz", gd, ["x0"])) == ["x0:0"]


def test_cupyrt_convert_int8_errors_name_the_fix(tmp_path, capsys):
    import pytest

    from tf_integration.cli import _calibration_feeds
    from tf_integration.errors import ConverterArgumentError

    gd, _, src = _cnn_pb(tmp_path)
    npz = tmp_path / "c.npz"
    np.savez(npz, x0=np.ones((3, 6, 6, 4), np.float32))
    base = ["convert", str(src), "-o", str(tmp_path / "o.pb"), "--outputs", "out0"]
    assert main(base + ["--precision", "int8"]) == 1
    assert "--calib-data: missing; expected an .npz" in capsys.readouterr().err
    assert main(base + ["--calib-data", str(npz)]) == 1
    assert "given with --precision fp32" in capsys.readouterr().err
    with pytest.raises(SystemExit):          # argparse: a usage error
        main(base + ["--precision", "INT8", "--calib-data", str(npz), "--calib-batch-size", "0"])
    assert "--calib-batch-size" in capsys.readouterr().err
    assert not (tmp_path / "o.pb").exists()                 # nothing half-written
    from tf_integration.cli import calibrate_from_npz
    with pytest.raises(ConverterArgumentError, match="--calib-batch-size"):
        calibrate_from_npz(None, npz, 0, ["out0"])
    gd2, _, _ = _cnn_pb(tmp_path, two_inputs=True)
    np.savez(npz, a=np.ones((3, 6, 6, 4), np.float32))
    with pytest.raises(ConverterArgumentError, match=r"graph's inputs \['x0', 'x1'\]"):
        _calibration_feeds(npz, gd2, [])
    np.savez(npz, x0=np.ones((3, 6, 6, 4), np.float32), x1=np.ones((2, 6, 6, 4), np.float32))
    with pytest.raises(ConverterArgumentError, match="same number of samples"):
        _calibration_feeds(npz, gd2, [])
    np.savez(npz)
    with pytest.raises(ConverterArgumentError, match="at least one array"):
        _calibration_feeds(npz, gd, [])


# -- convert, run, bench, inspect: .pb and SavedModel ------------------------------------

def _conv_pb(tmp_path, *extra):
    gd, outs, src = _cnn_pb(tmp_path)
    dst = tmp_path / "out.pb"
    assert main(["convert", str(src), "-o", str(dst), "--outputs", "out0",
                 "--minimum-segment-size", "1", "--max-batch-size", "4", *extra]) == 0
    return gd, outs, src, dst


def test_convert_denylist_and_reports(tmp_path, capsys):
    gd, outs, src, dst = _conv_pb(tmp_path, "--denylist", "mul", "--report-json",
                                  str(tmp_path / "r.json"), "--report-html",
                                  str(tmp_path / "r.html"))
    capsys.readouterr()
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["left_to_tensorflow"]["mul"]["kind"] == "denylisted"
    assert rep["parameters"]["nodes_denylist"] == ["out0", "mul"]
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") or "<html" in html[:200]
    assert "CupyrtEngine_0" in html and "mul" in html
    converted = tf.compat.v1.GraphDef.FromString(dst.read_bytes())
    assert [n.op for n in converted.node if n.name == "mul"] == ["Mul"]
    x = random_input((3, 6, 6, 4), seed=5)
    got = run_graph(converted, outs, {"x0:0": x}, converted=True)[0]
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-5


def test_run_a_converted_pb_matches_tensorflow_and_saves(tmp_path, capsys):
    gd, outs, _, dst = _conv_pb(tmp_path)
    x = random_input((3, 6, 6, 4), seed=6)
    np.savez(tmp_path / "x.npz", x0=x)
    capsys.readouterr()
    assert main(["run", str(dst), "--inputs", str(tmp_path / "x.npz"), "-o",
                 str(tmp_path / "y.npz")]) == 0
    out = capsys.readouterr().out
    assert "out0:0: shape [3, 6, 6, 8] float32" in out and "engines on numpy" in out
    with np.load(tmp_path / "y.npz") as y:
        assert rel_l2(y["out0"], run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-5


def test_bench_a_converted_pb_with_compare_and_profile(tmp_path, capsys):
    _, _, _, dst = _conv_pb(tmp_path)
    np.savez(tmp_path / "x.npz", random_input((2, 6, 6, 4), seed=7))
    capsys.readouterr()
    assert main(["bench", str(dst), "--inputs", str(tmp_path / "x.npz"), "--iterations", "3",
                 "--warmup", "1", "--compare", "--profile", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "segment inlined" in res["original"]["description"]
    assert res["original"]["latency"]["iterations"] == 3 and res["speedup_median"] > 0
    assert {"CupyrtEngine_0"} == {r["engine"] for r in res["profile"]}
    assert "Conv2D" in {r["layer"] for r in res["profile"]}
    assert sum(r["percent"] for r in res["profile"]) == pytest.approx(100)
    # engines running their TensorFlow segments have no engine profile
    assert main(["bench", str(dst), "--inputs", str(tmp_path / "x.npz"), "--iterations", "1",
                 "--backend", "tensorflow", "--profile"]) == 1
    assert "no engine ran on an engine backend" in capsys.readouterr().err


def test_bench_compare_needs_a_converted_graph(tmp_path, capsys):
    _, _, src = _cnn_pb(tmp_path)
    np.savez(tmp_path / "x.npz", random_input((2, 6, 6, 4)))
    assert main(["bench", str(src), "--inputs", str(tmp_path / "x.npz"), "--compare"]) == 1
    assert "has no engine nodes (it is the original graph)" in capsys.readouterr().err


def test_inspect_a_converted_pb_static_and_dynamic(tmp_path, capsys):
    _, _, _, dst = _conv_pb(tmp_path)
    capsys.readouterr()
    assert main(["inspect", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "engine node CupyrtEngine_0: precision FP32, static plan" in out
    assert "after the builder's passes" in out and "CONVOLUTION" in out
    assert main(["inspect", "--json", str(dst)]) == 0
    info = json.loads(capsys.readouterr().out)
    (node,) = info["engine_nodes"]
    assert info["kind"] == "graphdef" and node["static"] and node["engines"][0]["layers"]
    dyn = tmp_path / "dyn.pb"
    _, _, src = _cnn_pb(tmp_path)
    assert main(["convert", str(src), "-o", str(dyn), "--outputs", "out0", "--dynamic",
                 "--minimum-segment-size", "1", "--precision", "fp16"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(dyn)]) == 0
    out = capsys.readouterr().out
    assert "network as converted (before the builder's passes" in out
    assert main(["inspect", "--built", str(dyn)]) == 0
    out = capsys.readouterr().out
    assert "network after the builder's passes (FP16)" in out and "HALF" in out


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("sm")
    w = tf.constant((0.3 * np.random.default_rng(8).standard_normal((3, 3, 4, 8))).astype("f4"))

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 6, 6, 4], tf.float32, name="image")])
        def __call__(self, image):
            y = tf.nn.relu(tf.nn.conv2d(image, w, 1, "SAME")) * 2.0
            return {"probs": tf.nn.softmax(tf.reduce_mean(y, axis=[1, 2]))}

    m = M()
    tf.saved_model.save(m, str(path / "sm"), signatures={"serving_default": m.__call__})
    x = random_input((3, 6, 6, 4), seed=9)
    np.savez(path / "img.npz", image=x)
    return path, m(tf.constant(x))["probs"].numpy()


def test_convert_run_bench_inspect_a_saved_model(saved_model, tmp_path, capsys):
    path, ref = saved_model
    out_dir = tmp_path / "converted"
    assert main(["convert", str(path / "sm"), "-o", str(out_dir), "--minimum-segment-size", "1",
                 "--max-batch-size", "3", "--report-json", str(tmp_path / "r.json"),
                 "--report-html", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "signature 'serving_default'" in out and "built ahead for input shapes" in out
    assert (out_dir / "saved_model.pb").exists()
    assert json.loads((tmp_path / "r.json").read_text())["serving_default"]["engines"]
    assert "CupyrtEngine_0" in (tmp_path / "r.html").read_text()
    npz = str(path / "img.npz")
    assert main(["run", str(out_dir), "--inputs", npz, "-o", str(tmp_path / "y.npz")]) == 0
    assert "probs: shape [3, 8] float32" in capsys.readouterr().out
    with np.load(tmp_path / "y.npz") as y:
        assert rel_l2(y["probs"], ref) <= 1e-5
    assert main(["bench", str(out_dir), "--inputs", npz, "--iterations", "2", "--compare",
                 str(path / "sm"), "--profile"]) == 0
    out = capsys.readouterr().out
    assert "TensorFlow: min" in out and "speed-up (median)" in out and "Conv2D" in out
    assert main(["inspect", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SavedModel") and "engine node CupyrtEngine_0" in out
    assert "CONVOLUTION" in out


def test_convert_a_saved_model_int8_from_npz(saved_model, tmp_path, capsys):
    path, ref = saved_model
    out_dir = tmp_path / "int8"
    assert main(["convert", str(path / "sm"), "-o", str(out_dir), "--precision", "int8",
                 "--calib-data", str(path / "img.npz"), "--calib-batch-size", "2",
                 "--minimum-segment-size", "1"]) == 0
    assert "precision INT8" in capsys.readouterr().out
    assert main(["run", str(out_dir), "--inputs", str(path / "img.npz"), "-o",
                 str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as y:
        assert 0 < rel_l2(y["probs"], ref) < 0.05


@pytest.mark.parametrize("argv, message", [
    (["convert", "{t}/missing.pb", "-o", "{t}/o.pb", "--outputs", "out0"],
     "MODEL '{t}/missing.pb': no such file or directory"),
    (["convert", "{t}/trunc.pb", "-o", "{t}/o.pb", "--outputs", "out0"],
     "not a GraphDef (40 bytes; protobuf: Error parsing message"),
    (["convert", "{t}/in.pb", "-o", "{t}/o.pb", "--outputs", "probs"],
     "--outputs: node 'probs' is not in {t}/in.pb; expected a node of the graph (nodes "
     "nothing consumes: ['out0'])"),
    (["convert", "{t}/in.pb", "-o", "{t}/o.pb", "--outputs", "out0", "--denylist", "Relux"],
     "--denylist: node 'Relux' is not in"),
    (["convert", "{t}/in.pb", "-o", "{t}/o.pb", "--outputs", "out0", "--inputs", "y"],
     "--inputs: node 'y' is not in"),
    (["convert", "{t}/in.pb", "-o", "{t}/o.pb"], "--outputs: missing for a frozen .pb"),
    (["convert", "{t}/in.pb", "-o", "{t}/o.pb", "--outputs", "out0", "--signature", "s"],
     "a frozen graph has none"),
    (["convert", "{t}/in.pb", "-o", "{t}", "--outputs", "out0"], "is a directory"),
    (["convert", "{t}/in.pb", "-o", "{t}/o.pb", "--outputs", "out0",
      "--minimum-segment-size", "0"], "--minimum-segment-size: 0; expected an integer >= 1"),
    (["convert", "{t}/in.pb", "-o", "{t}/o.pb", "--outputs", "out0", "--workspace", "-1"],
     "--workspace: -1"),
    (["convert", "{t}/m.plan", "-o", "{t}/o.pb", "--outputs", "out0"],
     "a plan (already an engine)"),
    (["convert", "{sm}", "-o", "{t}/o.pb"], "a directory: a SavedModel converts to a SavedModel"),
    (["convert", "{sm}", "-o", "{t}"], "exists and is not an empty directory"),
    (["convert", "{sm}", "-o", "{t}/c", "--denylist", "a"], "given for a SavedModel"),
    (["convert", "{sm}", "-o", "{t}/c", "--signature", "nope"],
     "--signature: 'nope'; expected None (every signature) or one of the model's signatures"),
    (["run", "{sm}", "--inputs", "{t}/x.npz", "--signature", "nope"],
     "--signature: 'nope' is not a signature"),
    (["run", "{sm}", "--inputs", "{t}/x.npz", "--outputs", "logits"],
     "--outputs: ['logits'] not outputs of signature 'serving_default'"),
    (["run", "{t}/in.pb", "--inputs", "{t}/x.npz", "--outputs", "nope"],
     "--outputs: node 'nope' is not in"),
])
def test_convert_and_run_mistakes_are_one_line(saved_model, tmp_path, capsys, argv, message):
    path, _ = saved_model
    _, _, src = _cnn_pb(tmp_path)
    (tmp_path / "trunc.pb").write_bytes(src.read_bytes()[:40])
    (tmp_path / "m.plan").write_bytes(_tiny_plan())
    np.savez(tmp_path / "x.npz", x0=random_input((2, 6, 6, 4)))
    fill = {"t": tmp_path, "sm": path / "sm"}
    rc = main([a.format(**fill) for a in argv])
    err = capsys.readouterr().err
    assert rc == 1 and message.format(**fill) in err and err.count("\n") == 1, err


def _tiny_plan():
    import engine as rt

    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 4))
    net.mark_output(net.add_activation(x, rt.ActivationType.TANH).get_output(0))
    config = b.create_builder_config()
    config.backend = "numpy"
    return b.build_serialized_network(net, config)


def test_a_truncated_pb_is_one_line_on_stderr_without_tensorflow_logs(tmp_path):
    import subprocess
    import sys

    _, _, src = _cnn_pb(tmp_path)
    (tmp_path / "trunc.pb").write_bytes(src.read_bytes()[:40])
    proc = subprocess.run([sys.executable, "-m", "workflows.cli", "convert",
                           str(tmp_path / "trunc.pb"), "-o", str(tmp_path / "o.pb"),
                           "--outputs", "out0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("cupyrt convert: error: MODEL ") and \
        proc.stderr.count("\n") == 1, proc.stderr


def _odd_models(tmp_path):
    (tmp_path / "empty.pb").write_bytes(b"")
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.placeholder(tf.float32, (None, 4), name="only")
    (tmp_path / "only_input.pb").write_bytes(g.as_graph_def().SerializeToString())
    (tmp_path / "bad_sm").mkdir()
    (tmp_path / "bad_sm" / "saved_model.pb").write_bytes(b"\x08\x99garbage")


@pytest.mark.parametrize("argv, message", [
    (["run", "{t}/empty.pb", "--inputs", "{t}/x.npz"], "a GraphDef without nodes"),
    (["run", "{t}/only_input.pb", "--inputs", "{t}/x.npz"], "pass --outputs"),
    (["run", "{t}/bad_sm", "--inputs", "{t}/x.npz"], "not a loadable SavedModel"),
    (["inspect", "{t}/bad_sm"], "not a readable SavedModel"),
    (["bench", "{sm}", "--inputs", "{t}/x.npz", "--compare"], "--compare ORIGINAL_SAVEDMODEL_DIR"),
    (["convert", "{t}/in.pb", "-o", "{t}/no/such/dir/o.pb", "--outputs", "out0",
      "--minimum-segment-size", "1"], "-o '{t}/no/such/dir/o.pb': folder {t}/no/such/dir does not exist"),
])
def test_more_mistakes_are_one_line(saved_model, tmp_path, capsys, argv, message):
    path, _ = saved_model
    _cnn_pb(tmp_path)
    _odd_models(tmp_path)
    np.savez(tmp_path / "x.npz", image=random_input((2, 6, 6, 4)))
    fill = {"t": tmp_path, "sm": path / "sm"}
    rc = main([a.format(**fill) for a in argv])
    err = capsys.readouterr().err
    assert rc == 1 and message.format(**fill) in err and err.count("\n") == 1, err


def test_tensorflow_refusing_inputs_is_a_cli_error(saved_model, tmp_path):
    from tf_integration.cli_models import GraphModel, SavedModelModel
    from workflows.cli import CliError

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, None, name="x")       # unknown shape
        tf.identity(tf.reshape(x, [2, 3]), name="y")
    with pytest.raises(CliError, match="TensorFlow refused them"):
        GraphModel("g.pb", graph_def=g.as_graph_def()).run({"x:0": np.ones((2, 2), "f4")})
    path, _ = saved_model
    with pytest.raises(CliError, match="signature 'serving_default' refused them"):
        SavedModelModel(str(path / "sm")).run({"image": np.ones((2, 6, 6, 4), np.int32)})


def test_building_ahead_needs_known_dims_past_the_batch():
    from types import SimpleNamespace

    from tf_integration.cli import _build_inputs
    from workflows.cli import CliError

    sig = SimpleNamespace(converter=object(), key="s",
                          input_specs=[("x", tf.TensorSpec([None, None, 3], tf.float32))])
    with pytest.raises(CliError, match=r"--max-batch-size: signature 's' input 'x' has shape "
                                       r"\[None, None, 3\]"):
        _build_inputs(SimpleNamespace(_signatures={"s": sig}), 4)
    sig.input_specs = [("x", tf.TensorSpec([None, 2], tf.float32)),
                       ("n", tf.TensorSpec([None], tf.int32))]
    (item,) = list(_build_inputs(SimpleNamespace(_signatures={"s": sig}), 4)["s"]())
    assert item["x"].shape == (4, 2) and np.abs(item["x"]).min() > 0 and item["n"].shape == (4,)


def test_tf_demo_legacy_keras_without_tf_keras_is_one_line(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tf_keras(name, *args, **kwargs):
        if name == "tf_keras":
            raise ImportError("No module named 'tf_keras'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tf_keras)
    assert main(["tf-demo", "--legacy-keras", "--model", "MobileNetV2", "--size", "32"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--legacy-keras: tf_keras is not installed" in err[0]
