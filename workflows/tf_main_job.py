"""The README's main job for TensorFlow users, end to end on one machine.

    pip install -e .[test] && python -m workflows.tf_main_job [--model ResNet50] [--size 224]

Freezes a bundled Keras application (weights=None: no download), converts it
with TrtGraphConverter, runs the original and the converted graph in
tf.compat.v1.Session, and prints the converted share, the max error and both
timings. Without a GPU the engines run on the NumPy reference backend (a
converted graph on such a host runs its TensorFlow segments by default; the
job asks for the engines so that its figures are the engines').

Random weights say nothing about accuracy, so the job also trains a small CNN
on real data (scikit-learn's 8x8 handwritten digits, a few seconds, fixed
seed), freezes and converts it, and prints the top-1 accuracy of TensorFlow,
of the converted FP32 graph and of the INT8 graph (entropy calibration on
training digits) on held-out digits (--no-digits skips it).
"""
import argparse
import logging
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tf_integration import TrtGraphConverter, freeze_keras_model, import_graph_def
from tf_integration.cli import run_demo
from workflows import run_engines_here


def train_digits(epochs=8, seed=0):
    """A small Keras CNN trained on sklearn's load_digits (fixed seed, a few seconds),
    frozen. Returns a dict: graph_def, inputs, outputs, x_train, y_train, x_test,
    y_test (the held-out quarter), train_seconds."""
    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None]                  # (n, 8, 8, 1), 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    # per-pixel standardisation (StandardScaler, fitted on the training set). It also
    # matters for INT8: raw digits take only 17 values, and KL (entropy) calibration
    # of a tensor whose |x| histogram is a few isolated spikes picks the first
    # threshold that holds one spike (divergence 0), clipping the image to 1/16 of
    # its range. Standardised pixels spread over many values.
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax")], name="digits_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy")
    t0 = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    t_train = time.perf_counter() - t0
    gd, ins, outs = freeze_keras_model(model)
    return dict(graph_def=gd, inputs=ins, outputs=outs, x_train=x_train, y_train=y_train,
                x_test=x_test, y_test=y_test, train_seconds=t_train)


def convert_digits(data, precision="FP32", algorithm="entropy", calib_batch=128,
                   calib_runs=4):
    """Convert the digits graph (static engines); INT8 is calibrated on the first
    ``calib_runs * calib_batch`` training images. Returns (converter, converted GraphDef)."""
    outs = data["outputs"]
    conv = TrtGraphConverter(input_graph_def=data["graph_def"],
                             nodes_denylist=[o.split(":")[0] for o in outs],
                             precision_mode=precision, max_batch_size=len(data["x_test"]),
                             is_dynamic_op=False, calibration_algorithm=algorithm)
    converted = conv.convert()
    if precision == "INT8":
        batches = iter(data["x_train"][i * calib_batch:(i + 1) * calib_batch]
                       for i in range(calib_runs))
        converted = conv.calibrate(outs[:1], calib_runs,
                                   feed_dict_fn=lambda: {data["inputs"][0]: next(batches)})
    return conv, converted


def predict(data, graph_def, converted=True):
    """Class probabilities of the held-out digits through ``graph_def`` in a TF session."""
    g = tf.Graph()
    with g.as_default():
        (import_graph_def if converted else tf.compat.v1.import_graph_def)(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run(data["outputs"][0], {data["inputs"][0]: data["x_test"]})


def run_digits(epochs=8, seed=0, precision="FP32", int8=True, out=sys.stdout):
    """Train a small Keras CNN on load_digits, convert it, compare top-1 accuracy of
    TensorFlow and of the converted graph on the held-out quarter; with ``int8``,
    also of the INT8 graph (entropy calibration on training images). Returns a dict."""
    data = train_digits(epochs, seed)
    y_test = data["y_test"]
    conv, converted = convert_digits(data, precision)
    p_tf = predict(data, data["graph_def"], converted=False)
    p_rt = predict(data, converted)
    acc_tf = float((p_tf.argmax(1) == y_test).mean())
    acc_rt = float((p_rt.argmax(1) == y_test).mean())
    agree = float((p_tf.argmax(1) == p_rt.argmax(1)).mean())
    out.write(f"digits (sklearn load_digits, 8x8): small CNN trained {epochs} epochs in "
              f"{data['train_seconds']:.1f} s; {len(conv.report['engines'])} engine(s), "
              f"{100 * conv.report['converted_share']:.0f}% of compute nodes converted\n"
              f"top-1 on {len(y_test)} held-out digits: TensorFlow {100 * acc_tf:.1f}%   "
              f"cupyrt {precision} {100 * acc_rt:.1f}%   (same prediction on "
              f"{100 * agree:.1f}%)\n")
    rep = dict(accuracy_tf=acc_tf, accuracy_cupyrt=acc_rt, agreement=agree,
               share=conv.report["converted_share"], train_seconds=data["train_seconds"])
    if int8:
        t0 = time.perf_counter()
        conv8, int8_gd = convert_digits(data, "INT8", "entropy")
        p8 = predict(data, int8_gd)
        acc8 = float((p8.argmax(1) == y_test).mean())
        n8 = sum(e.get("layer_precisions", {}).get("INT8", 0) for e in conv8.report["engines"])
        out.write(f"top-1 INT8 (entropy calibration on 512 training digits, {n8} INT8 layers): "
                  f"cupyrt INT8 {100 * acc8:.1f}%   vs TensorFlow FP32 {100 * acc_tf:.1f}%   "
                  f"(same prediction as TF on {100 * (p8.argmax(1) == p_tf.argmax(1)).mean():.1f}%; "
                  f"{time.perf_counter() - t0:.1f} s)\n")
        rep.update(accuracy_int8=acc8, int8_layers=n8)
    return rep


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ResNet50", choices=["ResNet50", "MobileNetV2"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--legacy-keras", action="store_true")
    p.add_argument("--no-digits", action="store_true", help="skip the accuracy run on digits")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_engines_here()
    rep = run_demo(args.model, args.size, args.batch, args.legacy_keras, args.runs)
    ok = rep["share"] > 0 and rep["max_error"] < 1e-3
    if not args.no_digits:
        acc = run_digits()
        ok = ok and acc["accuracy_cupyrt"] >= acc["accuracy_tf"] - 0.01
        ok = ok and acc["accuracy_int8"] >= acc["accuracy_tf"] - 0.01
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
