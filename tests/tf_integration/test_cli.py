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
    assert "calibrating [" in captured.err and "3/3" in captured.err    # 10 samples, 4 a run
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


def test_cupyrt_convert_int8_errors_name_the_fix(tmp_path):
    import pytest

    from tf_integration.cli import _calibration_feeds
    from tf_integration.errors import ConverterArgumentError

    gd, _, src = _cnn_pb(tmp_path)
    npz = tmp_path / "c.npz"
    np.savez(npz, x0=np.ones((3, 6, 6, 4), np.float32))
    base = ["convert", str(src), "-o", str(tmp_path / "o.pb"), "--outputs", "out0"]
    with pytest.raises(ConverterArgumentError, match="with --precision int8, and only then"):
        main(base + ["--precision", "int8"])
    with pytest.raises(ConverterArgumentError, match="with --precision int8, and only then"):
        main(base + ["--calib-data", str(npz)])
    with pytest.raises(ConverterArgumentError, match="--calib-batch-size"):
        main(base + ["--precision", "INT8", "--calib-data", str(npz), "--calib-batch-size", "0"])
    assert not (tmp_path / "o.pb").exists()                 # nothing half-written
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
