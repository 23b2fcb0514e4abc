"""benchmarks/tf_path.py (prepare, run) on the CPU: prepare a tiny Keras
model, then build and run the exported networks on the NumPy backend (the GPU
machine runs the same script with --backend cupy)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import tf_path

prepare_mod = run_mod = tf_path


def tiny_model(split=False):
    import keras

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    if split:       # an op with no converter: two engines, the second fed by TF
        x = keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=1))(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, activation="softmax")(x)
    return keras.Model(inp, out, name="tiny")


@pytest.mark.parametrize("split", [False, True], ids=["one_engine", "two_engines"])
def test_prepare_then_run_on_the_numpy_backend(tmp_path, split, capsys):
    info = prepare_mod.prepare(tiny_model(split), str(tmp_path), batch=3, seed=1)
    assert info["engines"] == (2 if split else 1)
    files = set(os.listdir(tmp_path))
    assert {"manifest.json", "inputs.npz", "tf_outputs.npz", "tf_path.json"} <= files
    assert ("engine_inputs.npz" in files) == split
    with np.load(tmp_path / "inputs.npz") as data:
        (x,) = [data[k] for k in data.files]
    assert x.shape == (3, 16, 16, 3) and np.abs(x).min() > 0

    out = tmp_path / "results.json"
    assert run_mod.main(["run", "--dir", str(tmp_path), "--backend", "numpy", "--reps", "1",
                         "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rel L2" in text and "NumPy backend" in text
    rows = json.loads(out.read_text())["rows"]
    assert {r["precision"] for r in rows} == {"FP32", "FP16"}
    assert all(r["ok"] for r in rows), rows
    # the model output is compared with TF's own output for it
    assert any(r["tf_tensor"] in info["outputs"] for r in rows)
    fp32 = [r for r in rows if r["precision"] == "FP32"]
    assert max(r["rel_l2"] for r in fp32) <= 1e-5


def test_run_reports_a_missing_engine_input(tmp_path):
    prepare_mod.prepare(tiny_model(True), str(tmp_path), batch=2, seed=1)
    os.remove(tmp_path / "engine_inputs.npz")
    with pytest.raises(KeyError, match="no value for engine input"):
        run_mod.main(["run", "--dir", str(tmp_path), "--backend", "numpy", "--reps", "1"])
