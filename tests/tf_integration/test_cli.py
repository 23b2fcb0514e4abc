"""``cupyrt convert`` and the TensorFlow main job, through the CLI entry points."""
import io
import json

import numpy as np
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
    assert rep["share"] == 1.0 and rep["max_error"] < 1e-4
    assert "converted" in text and "max abs error" in text and "ms/batch" in text
    if rep["backend"] == "numpy":
        assert "NumPy backend" in text
