"""The README's main job for TensorFlow users, end to end on one machine.

    pip install -e .[test] && python -m workflows.tf_main_job [--model ResNet50] [--size 224]

Freezes a bundled Keras application (weights=None: no download), converts it
with TrtGraphConverter, runs the original and the converted graph in
tf.compat.v1.Session, and prints the converted share, the max error and both
timings. Without a GPU it says it runs the NumPy backend.

Random weights say nothing about accuracy, so the job also trains a small CNN
on real data (scikit-learn's 8x8 handwritten digits, a few seconds, fixed
seed), freezes and converts it, and prints the top-1 accuracy of TensorFlow
and of the converted graph on held-out digits (--no-digits skips it).
"""
import argparse
import logging
import sys
import time

import numpy as np

from tf_integration.cli import run_demo


def run_digits(epochs=8, seed=0, precision="FP32", out=sys.stdout):
    """Train a small Keras CNN on load_digits, convert it, compare top-1 accuracy of
    TensorFlow and of the converted graph on the held-out quarter. Returns a dict."""
    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from tf_integration import TrtGraphConverter, freeze_keras_model, import_graph_def

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]          # (n, 8, 8, 1) in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
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
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[o.split(":")[0] for o in outs],
                             precision_mode=precision, max_batch_size=len(x_test),
                             is_dynamic_op=False)
    converted = conv.convert()

    def predict(graph_def, importer):
        g = tf.Graph()
        with g.as_default():
            importer(graph_def, name="")
            with tf.compat.v1.Session(graph=g) as sess:
                return sess.run(outs[0], {ins[0]: x_test})

    p_tf = predict(gd, tf.compat.v1.import_graph_def)
    p_rt = predict(converted, import_graph_def)
    acc_tf = float((p_tf.argmax(1) == y_test).mean())
    acc_rt = float((p_rt.argmax(1) == y_test).mean())
    agree = float((p_tf.argmax(1) == p_rt.argmax(1)).mean())
    out.write(f"digits (sklearn load_digits, 8x8): small CNN trained {epochs} epochs in "
              f"{t_train:.1f} s; {len(conv.report['engines'])} engine(s), "
              f"{100 * conv.report['converted_share']:.0f}% of compute nodes converted\n"
              f"top-1 on {len(y_test)} held-out digits: TensorFlow {100 * acc_tf:.1f}%   "
              f"cupyrt {precision} {100 * acc_rt:.1f}%   (same prediction on "
              f"{100 * agree:.1f}%)\n")
    return dict(accuracy_tf=acc_tf, accuracy_cupyrt=acc_rt, agreement=agree,
                share=conv.report["converted_share"], train_seconds=t_train)


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
    rep = run_demo(args.model, args.size, args.batch, args.legacy_keras, args.runs)
    ok = rep["share"] > 0 and rep["max_error"] < 1e-3
    if not args.no_digits:
        acc = run_digits()
        ok = ok and acc["accuracy_cupyrt"] >= acc["accuracy_tf"] - 0.01
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
