"""benchmarks/tf_path.py (prepare, run) with several models: one folder
per model, carried inputs with labels, top-1 agreement and accuracy in the report.
(tests/tf_integration/test_tf_path.py covers one model in a flat folder.)"""
import argparse
import json
import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from benchmarks import tf_path  # noqa: E402  (after the skip: it needs TensorFlow to prepare)

prepare_mod = run_mod = tf_path


def classifier(seed=0, classes=4):
    import keras

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    base = keras.Model(inp, keras.layers.Dense(classes, name="logits")(x))
    return prepare_mod.with_probabilities(base, f"clf{seed}")


def test_digits_data_is_a_stratified_split_of_32x32_grey_images_in_0_1():
    x_train, x_test, y_train, y_test = prepare_mod.digits_data(seed=0)
    assert x_train.shape[1:] == x_test.shape[1:] == (32, 32, 3)
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 360
    assert x_test.dtype == np.float32 and x_test.min() == 0.0 and x_test.max() == 1.0
    assert np.array_equal(x_test[..., 0], x_test[..., 2])          # grey in all channels
    assert np.array_equal(x_test[:, ::4, ::4], x_test[:, 3::4, 3::4])   # 4x4 blocks
    # stratified: each class's share of the held-out split is its share of the data
    share = np.bincount(y_test, minlength=10) / len(y_test)
    assert np.abs(share - np.bincount(y_train, minlength=10) / len(y_train)).max() < 0.01
    assert np.array_equal(prepare_mod.digits_data(seed=0)[3], y_test)


def test_run_goes_through_every_model_folder_and_scores_against_labels(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 1.0, (6, 8, 8, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 0, 1])
    info = prepare_mod.prepare(classifier(0), str(tmp_path / "trained"), inputs=x,
                               labels=labels, extra={"tf_heldout_accuracy": 0.5})
    assert info["batch"] == 6 and info["tf_heldout_accuracy"] == 0.5
    assert sorted(info["output_names"].values()) == ["logits", "probabilities"]
    assert 0.0 <= info["tf_batch_accuracy"] <= 1.0
    prepare_mod.prepare(classifier(1), str(tmp_path / "random"), batch=3, seed=1)
    with np.load(tmp_path / "trained" / "inputs.npz") as data:
        assert np.array_equal(data[data.files[0]], x)

    out = tmp_path / "results.json"
    assert run_mod.main(["run", "--dir", str(tmp_path), "--backend", "numpy", "--reps", "1",
                         "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "trained: clf0, TF accuracy 0.5000" in text and "probabilities" in text
    result = json.loads(out.read_text())
    assert set(result["prepared"]) == {"trained", "random"}
    rows = result["rows"]
    assert {(r["model"], r["precision"]) for r in rows} == {
        (m, p) for m in ("trained", "random") for p in ("FP32", "FP16")}
    assert {r["name"] for r in rows} == {"logits", "probabilities"}
    for r in rows:
        assert r["ok"] and r["top1_agree"] == 1.0, r
        if r["model"] == "trained":     # same argmax as TF: TF's accuracy on the batch
            assert r["accuracy"] == pytest.approx(info["tf_batch_accuracy"])
        else:
            assert r["accuracy"] is None


def test_classes_scores_only_batch_by_class_outputs():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    got = np.array([[0.2, 0.8], [0.4, 0.6], [0.1, 0.9]])
    assert run_mod.classes(got, ref, np.array([1, 0, 0])) == (pytest.approx(2 / 3),
                                                              pytest.approx(1 / 3))
    assert run_mod.classes(got, ref, None) == (pytest.approx(2 / 3), None)
    assert run_mod.classes(got[:, :1], ref[:, :1], None) == (None, None)
    assert run_mod.classes(got.reshape(-1), ref.reshape(-1), None) == (None, None)


def test_run_names_the_folder_that_holds_no_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        run_mod.main(["run", "--dir", str(tmp_path), "--backend", "numpy"])


def test_prepare_rejects_labels_that_do_not_match_the_batch(tmp_path):
    x = np.ones((4, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        prepare_mod.prepare(classifier(), str(tmp_path), inputs=x, labels=[0, 1])


def test_prepare_takes_inputs_only_for_a_one_input_model(tmp_path):
    import keras

    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Add()([a, b])))
    with pytest.raises(ValueError, match="one-input model"):
        prepare_mod.prepare(model, str(tmp_path), inputs=np.ones((2, 4), np.float32))


def test_main_writes_each_model_into_its_folder_and_drops_a_flat_layout(tmp_path, monkeypatch,
                                                                       capsys):
    for f in ("manifest.json", "CupyrtEngine_0.network", "inputs.npz"):   # an older layout
        (tmp_path / f).write_text("old")
    monkeypatch.setattr(prepare_mod, "MODELS", {
        "tiny": lambda args: dict(model=classifier(args.seed), batch=2, seed=args.seed)})
    assert prepare_mod.main(["prepare", "--out", str(tmp_path), "--models", "tiny"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["tiny"]
    assert "manifest.json" in os.listdir(tmp_path / "tiny")
    assert "MiB) in all" in capsys.readouterr().out


def test_main_lists_the_valid_models(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare_mod.main(["prepare", "--out", str(tmp_path), "--models", "random224,mnist"])
    assert "unknown ['mnist']; valid: random224, digits" in capsys.readouterr().err


def test_the_digits_model_is_mobilenet_v2_with_logits_and_probabilities(monkeypatch):
    # Not trained here (that takes minutes): the architecture and outputs only.
    import keras

    fit = []
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: fit.append(k["epochs"]))
    model, seconds, accuracy, x_test, y_test = prepare_mod.train_digits(epochs=1)
    assert fit == [1] and 0.0 <= accuracy <= 1.0 and len(x_test) == len(y_test) == 360
    assert model.output_names == ["predictions", "probabilities"]
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape[0] == (None, 10)
    assert any(l.name.startswith("block_16") for l in model.layers)   # the whole network
    norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert norms and all(l.momentum == 0.9 for l in norms)
    spec = prepare_mod.digits(argparse.Namespace(seed=0, digits_epochs=1, digits_batch=16))
    assert spec["inputs"].shape == (16, 32, 32, 3) and spec["labels"].shape == (16,)
