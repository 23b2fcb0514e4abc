"""TensorFlow in, cupyrt out: train, export and freeze, convert both ways, reload elsewhere.

    python -m workflows.tensorflow_workflow [--epochs 8] [--precision FP16] [--workdir DIR]

The TensorRT sample "end_to_end_tensorflow_mnist", on this project's terms:

1. trains a small Keras CNN on real data (scikit-learn's 8x8 handwritten
   digits, a few seconds, fixed seed);
2. exports it as a TF2 SavedModel (``model.export``) and freezes it into a
   GraphDef (``tf_integration.freeze_keras_model``);
3. converts the SavedModel with ``TrtGraphConverterV2`` and the frozen graph
   with ``TrtGraphConverter`` and saves both;
4. loads all four models (two originals, two converted) in a FRESH Python
   process, which has seen none of the conversion, runs the held-out digits
   through each and times them;
5. prints top-1 accuracy, agreement with TensorFlow and the time per batch.

Without a GPU the engines run on the NumPy reference backend (the fresh
process inherits $CUPYRT_BACKEND), so the times there show what the
reference backend costs, not what a GPU gains.
"""
import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

from engine.settings import settings
from workflows import run_engines_here
from workflows.fresh_process import run_in_fresh_process

log = logging.getLogger(__name__)


def digits_split(seed=0):
    """sklearn's load_digits as (x_train, y_train, x_test, y_test): images
    (n, 8, 8) float32, standardised per pixel with the training set's mean and
    std (raw digits take only 17 values, which also hurts INT8 calibration), a
    stratified held-out quarter."""
    # optional dependency: scikit-learn (the digits data set; the [tf] extras)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        d.images.astype(np.float32), d.target, test_size=0.25, random_state=seed,
        stratify=d.target)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def train_cnn(x_train, y_train, epochs=8, seed=0):
    """A small Keras CNN (conv-BN-ReLU, pooling, dense softmax) on (n, 8, 8, 1) images."""
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax", name="probs")], name="digits_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def run(epochs=8, precision="FP16", workdir=None, repeats=5, seed=0):
    """Train, export, freeze, convert, save, evaluate in a fresh process. Returns a dict:
    accuracy and agreement per model, times, engine counters, conversion shares."""
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    import tensorflow as tf
    from tf_integration import TrtGraphConverter, TrtGraphConverterV2, freeze_keras_model

    workdir = workdir or tempfile.mkdtemp(prefix="cupyrt-tf-workflow-")
    x_train, y_train, x_test, y_test = digits_split(seed)
    t0 = time.perf_counter()
    model = train_cnn(x_train[..., None], y_train, epochs, seed)
    train_s = time.perf_counter() - t0

    saved = os.path.join(workdir, "saved_model")
    model.export(saved, verbose=False)
    gd, ins, outs = freeze_keras_model(model)
    frozen = os.path.join(workdir, "frozen.pb")
    with open(frozen, "wb") as f:
        f.write(gd.SerializeToString())

    t0 = time.perf_counter()
    conv2 = TrtGraphConverterV2(input_saved_model_dir=saved, precision_mode=precision)
    conv2.convert()
    saved_rt = conv2.save(os.path.join(workdir, "saved_model_cupyrt"))
    # is_dynamic_op: engines built per input shape on first use (a static engine
    # would be limited to max_batch_size, TF-TRT's default 1, and run TF beyond it)
    conv1 = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[o.split(":")[0] for o in outs],
                              precision_mode=precision, is_dynamic_op=True)
    conv1.convert()
    frozen_rt = conv1.save(os.path.join(workdir, "frozen_cupyrt.pb"))
    convert_s = time.perf_counter() - t0

    sig = tf.saved_model.load(saved).signatures["serving_default"]
    (arg,) = sig.structured_input_signature[1]
    models = [
        {"name": "tf_saved_model", "kind": "saved_model", "path": saved, "input": arg},
        {"name": "cupyrt_saved_model", "kind": "saved_model", "path": saved_rt, "input": arg},
        {"name": "tf_frozen", "kind": "frozen", "path": frozen, "input": ins[0],
         "output": outs[0]},
        {"name": "cupyrt_frozen", "kind": "frozen", "path": frozen_rt, "input": ins[0],
         "output": outs[0]}]
    t0 = time.perf_counter()
    outputs, stats = run_in_fresh_process({"models": models, "repeats": repeats},
                                          {"x": x_test[..., None]},
                                          os.path.join(workdir, "fresh"))
    fresh_s = time.perf_counter() - t0
    ref = outputs["tf_saved_model"]
    result = {"precision": precision, "train_seconds": train_s, "convert_seconds": convert_s,
              "fresh_process_seconds": fresh_s, "n_test": len(y_test), "workdir": workdir,
              "share_saved_model": conv2.report["serving_default"]["converted_share"],
              "share_frozen": conv1.report["converted_share"], "models": {}}
    for name, p in outputs.items():
        result["models"][name] = {
            "accuracy": float((p.argmax(1) == y_test).mean()),
            "agreement": float((p.argmax(1) == ref.argmax(1)).mean()),
            "rel_l2": float(np.linalg.norm(p - ref) / np.linalg.norm(ref)), **stats[name]}
    return result


def report(result, out=None):
    out = out or sys.stdout        # looked up per call: tests capture it
    out.write(f"digits CNN trained in {result['train_seconds']:.1f} s; converted "
              f"({result['precision']}) both ways in {result['convert_seconds']:.1f} s: "
              f"{100 * result['share_saved_model']:.0f}% of the SavedModel's compute nodes, "
              f"{100 * result['share_frozen']:.0f}% of the frozen graph's\n"
              f"loaded and run in a fresh process ({result['fresh_process_seconds']:.1f} s), "
              f"{result['n_test']} held-out digits, backend "
              f"{settings().backend}:\n")
    out.write(f"  {'model':20s} {'top-1':>7s} {'agrees':>7s} {'rel L2':>9s} {'ms/batch':>9s}"
              f" {'engine/TF runs':>15s}\n")
    for name, m in result["models"].items():
        out.write(f"  {name:20s} {100 * m['accuracy']:6.1f}% {100 * m['agreement']:6.1f}% "
                  f"{m['rel_l2']:9.2e} {1e3 * m['median_s']:9.2f} "
                  f"{m['engine_runs']:8d}/{m['native_runs']:<6d}\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8, help="training epochs on the digits")
    p.add_argument("--precision", default="FP16", choices=["FP32", "FP16"])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per model")
    p.add_argument("--workdir", default=None, help="where the models are written")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")      # before TensorFlow is imported
    run_engines_here()
    result = run(args.epochs, args.precision, args.workdir, args.repeats)
    report(result)
    return result


if __name__ == "__main__":
    main()
