"""The TensorFlow path to the GPU, part 1 (CPU machine, with TensorFlow).

Builds Keras 3 models, freezes them, converts them (FP32, default
minimum_segment_size, dynamic engines) and writes each into its own folder under
--out (default benchmarks/tf_path/, git-ignored; carry it to the GPU machine):

    random224   MobileNetV2 (weights=None, fixed seed, 224x224x3; batch-norm
                statistics set from a calibration batch so activations keep unit
                scale, in FP16 range); fixed random inputs (batch --batch).
                Its logits are ill-conditioned: no accuracy claim rests on it.
    digits      MobileNetV2 (alpha 0.5, 32x32x3, 10 classes) trained here on
                scikit-learn's load_digits (8x8 upscaled to 32x32, grey in three
                channels, [0, 1]); inputs: --digits-batch held-out images, with
                their labels. A model whose logits mean something.

Both return the logits and their softmax. Each folder holds:

    <engine>.network    each engine node's network (engine.serialize_network)
    manifest.json       engines, their inputs/outputs, the TF tensors they replace
    inputs.npz          the inputs, keyed by TF input tensor name
    tf_outputs.npz      TensorFlow's outputs for them, from the ORIGINAL graph
    labels.npz          the true classes of the inputs, when they have any ("labels")
    engine_inputs.npz   only when an engine is fed by something other than a model
    engine_outputs.npz  input / returns something other than a model output: the
                        values TF computes for those tensors, keyed "<engine>/<name>"
    tf_path.json        what was prepared (model, versions, converted share, shapes,
                        for digits the training time and held-out accuracy)

    python benchmarks/tf/tf_path_prepare.py [--out benchmarks/tf_path] [--models random224,digits]

Part 2, benchmarks/tf/tf_path_run.py, builds and runs the networks without TensorFlow.
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

logger = logging.getLogger("tf_path_prepare")
INFO = "tf_path.json"


def _run(graph_def, fetches, feeds, converted=False):
    import tensorflow as tf

    from tf_integration import import_graph_def

    g = tf.Graph()
    with g.as_default():
        (import_graph_def if converted else tf.compat.v1.import_graph_def)(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run(list(fetches), feeds)


def _has_tensors(graph_def, names):
    nodes = {n.name for n in graph_def.node}
    return all(n.rsplit(":", 1)[0] in nodes for n in names)


def prepare(model, out_dir, batch=8, seed=0, precision="FP32", name=None, inputs=None,
            labels=None, extra=None):
    """Freeze, convert and export ``model`` (a Keras model with one input) into
    ``out_dir``; returns the tf_path.json dict.

    ``inputs``: the batch to check with (default: standard normal, ``batch`` of
    them, from ``seed``); ``labels``: its true classes, written to labels.npz;
    ``extra``: more entries for tf_path.json."""
    import tensorflow as tf

    from tf_integration import TrtGraphConverter, export_engines, freeze_keras_model

    if inputs is not None:
        batch = len(inputs)         # the engine's max batch too
    t0 = time.perf_counter()
    gd, ins, outs = freeze_keras_model(model)
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[o.split(":")[0] for o in outs],
                             precision_mode=precision, is_dynamic_op=True,
                             max_batch_size=batch)
    converted = conv.convert()
    t_convert = time.perf_counter() - t0
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):            # files of an earlier run must not travel along
        if f.endswith((".network", ".npz")) or f in ("manifest.json", INFO):
            os.remove(os.path.join(out_dir, f))
    export_engines(converted, out_dir, model_outputs=outs)
    manifest = json.load(open(os.path.join(out_dir, "manifest.json")))

    if inputs is None:
        rng = np.random.default_rng(seed)
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(gd, name="")
        inputs = {}
        for t in ins:
            shape = [batch if d is None else d
                     for d in graph.get_tensor_by_name(t).shape.as_list()]
            inputs[t] = rng.standard_normal(shape).astype(np.float32)
    else:
        if len(ins) != 1:
            raise ValueError(f"inputs= takes the batch of a one-input model; {model.name} has "
                             f"{len(ins)} inputs: {ins}")
        inputs = {ins[0]: np.ascontiguousarray(inputs, np.float32)}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (batch,):
            raise ValueError(f"labels have shape {labels.shape}; expected ({batch},), one "
                             "class per input")
        np.savez(os.path.join(out_dir, "labels.npz"), labels=labels)
    tf_outputs = dict(zip(outs, _run(gd, outs, inputs)))
    np.savez(os.path.join(out_dir, "inputs.npz"), **inputs)
    np.savez(os.path.join(out_dir, "tf_outputs.npz"), **tf_outputs)

    # Engines fed by (or returning) intermediate tensors: what TF computes there.
    covered_out = {(m["engine"], m["output"]) for m in manifest["model_outputs"].values() if m}
    want_in, want_out = {}, {}
    for e in manifest["engines"]:
        for i in e["inputs"]:
            if i["replaces"] not in inputs:
                want_in[f"{e['name']}/{i['name']}"] = i["replaces"]
        for o in e["outputs"]:
            if (e["name"], o["name"]) not in covered_out:
                want_out[f"{e['name']}/{o['name']}"] = o["replaces"]
    for fname, want in (("engine_inputs.npz", want_in), ("engine_outputs.npz", want_out)):
        if not want:
            continue
        names = list(want.values())
        if _has_tensors(gd, names):          # TF's own values, from the original graph
            values = _run(gd, names, inputs)
        else:                                 # renamed by the converter's rewrites
            values = _run(converted, names, inputs, converted=True)
        np.savez(os.path.join(out_dir, fname), **dict(zip(want, values)))

    rep = conv.report
    info = {"model": name or model.name, "batch": batch, "seed": seed, "precision": precision,
            "tensorflow": tf.__version__, "keras": _keras_version(),
            "inputs": {k: list(v.shape) for k, v in inputs.items()},
            "outputs": {k: list(v.shape) for k, v in tf_outputs.items()},
            "engines": len(manifest["engines"]),
            "converted_share": rep["converted_share"],
            "nodes_left_to_tensorflow": len(rep["left_to_tensorflow"]),
            "convert_seconds": round(t_convert, 2),
            "files": sorted(set(os.listdir(out_dir)) | {INFO})}
    # Frozen outputs are named Identity*: keep Keras's names so the report can say
    # "logits" (freeze_keras_model returns them in model.outputs order).
    names = list(getattr(model, "output_names", None) or [])
    if len(names) == len(outs):
        info["output_names"] = dict(zip(outs, names))
    if labels is not None:       # what the engine's accuracy on this batch compares with
        scores = next(v for v in tf_outputs.values() if v.ndim == 2)
        info["tf_batch_accuracy"] = float(np.mean(np.argmax(scores, axis=1) == labels))
    info.update(extra or {})
    with open(os.path.join(out_dir, INFO), "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    return info


def _keras_version():
    try:
        import keras
        return keras.__version__
    except ImportError:          # a tf_keras-only install
        return None


def normalise_batch_norms(model, x):
    """Set each BatchNormalization's moving statistics to those of its input on ``x``,
    in order (a data-dependent init). Random weights otherwise shrink MobileNetV2's
    activations to ~1e-11 at the logits, below FP16's range: the FP16 check would
    compare underflowed zeros, not the engine."""
    import keras

    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        probe = keras.Model(model.input, layer.input)
        h = np.asarray(probe(x, training=False), np.float64)
        axes = tuple(range(h.ndim - 1))
        layer.moving_mean.assign(h.mean(axes).astype(np.float32))
        layer.moving_variance.assign(h.var(axes).astype(np.float32))


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def with_probabilities(base, name):
    """``base``'s logits and their softmax as two outputs. With random weights the
    softmax is ~1/classes everywhere (float32 cannot tell the classes apart), which
    any engine matches: the logits are the output that shows the error."""
    import keras

    logits = base.output
    return keras.Model(base.input, [logits, keras.layers.Softmax(name="probabilities")(logits)],
                       name=name)


def random224(args):
    import keras

    keras.utils.set_random_seed(args.seed)
    base = keras.applications.MobileNetV2(weights=None, input_shape=(args.size, args.size, 3),
                                          classifier_activation=None)
    model = with_probabilities(base, "MobileNetV2")
    calib = np.random.default_rng(args.seed + 1).standard_normal(
        (args.batch, args.size, args.size, 3)).astype(np.float32)
    normalise_batch_norms(model, calib)        # not the test inputs: those come from --seed
    return dict(model=model, batch=args.batch, seed=args.seed, name="MobileNetV2")


DIGITS_SIZE = 32       # MobileNetV2's five stride-2 stages take 32x32 down to 1x1


def digits_data(seed=0, test_size=0.2):
    """scikit-learn's load_digits (1797 8x8 images, shipped with the package: no
    download) as MobileNetV2 inputs: grey levels 0..16 scaled to [0, 1], each pixel
    repeated 4x4 (nearest neighbour, 8x8 -> 32x32) and in all three channels; a
    held-out split stratified by class. Returns x_train, x_test, y_train, y_test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    scale = DIGITS_SIZE // d.images.shape[1]
    x = (d.images / 16.0).astype(np.float32)
    x = np.repeat(np.repeat(x, scale, axis=1), scale, axis=2)
    x = np.repeat(x[..., None], 3, axis=-1)
    return train_test_split(x, d.target.astype(np.int64), test_size=test_size,
                            stratify=d.target, random_state=seed)


def train_digits(epochs=24, alpha=0.5, batch_size=64, learning_rate=5e-3, seed=0):
    """MobileNetV2 trained from scratch on digits_data; returns (the two-output
    model, seconds, held-out accuracy, x_test, y_test).

    Measured on 2 CPU cores (Keras 3.15, TF 2.21): alpha 0.5, 24 epochs of batch
    64 -> 96.7% held-out in 90-130 s. alpha 0.35 or batch 32 reached only 89-92%
    in the same time; random 2-pixel shifts did not beat plain training."""
    import keras

    keras.utils.set_random_seed(seed)
    x_train, x_test, y_train, y_test = digits_data(seed)
    base = keras.applications.MobileNetV2(weights=None, alpha=alpha, classes=10,
                                          input_shape=(DIGITS_SIZE, DIGITS_SIZE, 3),
                                          classifier_activation=None)
    # Keras builds MobileNetV2's batch norms with momentum 0.999, a ~1000-step memory:
    # 23 steps x 24 epochs would leave ~60% of the initial (0, 1) statistics in the
    # moving averages, and inference would not see the statistics training learnt.
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    steps = epochs * -(-len(x_train) // batch_size)
    base.compile(optimizer=keras.optimizers.Adam(
                     keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    t0 = time.perf_counter()
    base.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    seconds = time.perf_counter() - t0
    logits = base.predict(x_test, batch_size=256, verbose=0)      # inference mode
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y_test))
    return with_probabilities(base, f"MobileNetV2_digits_a{alpha}"), seconds, accuracy, \
        x_test, y_test


def digits(args):
    model, seconds, accuracy, x_test, y_test = train_digits(epochs=args.digits_epochs,
                                                            seed=args.seed)
    n = min(args.digits_batch, len(x_test))
    return dict(model=model, seed=args.seed, name=model.name, inputs=x_test[:n],
                labels=y_test[:n],
                extra={"train_seconds": round(seconds, 1), "train_epochs": args.digits_epochs,
                       "train_images": 1797 - len(x_test), "heldout_images": len(x_test),
                       "tf_heldout_accuracy": accuracy})


MODELS = {"random224": random224, "digits": digits}
# What an earlier version wrote straight into --out: removed, or tf_path_run.py
# would take the folder for a single model and miss the subfolders.
FLAT_FILES = (".network", ".npz", ".calib")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "tf_path"))
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated, from {', '.join(MODELS)}; each goes to --out/<model>/")
    p.add_argument("--batch", type=int, default=8, help="random224: batch of random inputs")
    p.add_argument("--size", type=int, default=224, help="random224: input height and width")
    p.add_argument("--digits-batch", type=int, default=64, help="digits: held-out images carried")
    p.add_argument("--digits-epochs", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = [m for m in args.models.split(",") if m]
    unknown = sorted(set(names) - set(MODELS))
    if unknown or not names:
        p.error(f"--models {args.models!r}: unknown {unknown}; valid: {', '.join(MODELS)}")

    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):
        if f.endswith(FLAT_FILES) or f in ("manifest.json", INFO):
            os.remove(os.path.join(args.out, f))
    ok = True
    for name in names:
        spec = MODELS[name](args)
        out = os.path.join(args.out, name)
        info = prepare(spec.pop("model"), out, **spec)
        ok &= info["engines"] >= 1
        size = folder_bytes(out)
        trained = (f", trained in {info['train_seconds']} s, held-out accuracy "
                   f"{info['tf_heldout_accuracy']:.4f}" if "train_seconds" in info else "")
        sys.stdout.write(
            f"{name} ({info['model']}): {info['engines']} engine(s), "
            f"{100 * info['converted_share']:.1f}% of compute nodes converted, "
            f"converted in {info['convert_seconds']} s{trained}\n"
            f"  wrote {out}: {', '.join(info['files'])} ({size / 2**20:.1f} MiB)\n")
    size = folder_bytes(args.out)
    sys.stdout.write(f"{args.out}: {size} bytes ({size / 2**20:.1f} MiB) in all\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
