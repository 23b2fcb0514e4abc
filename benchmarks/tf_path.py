"""The TensorFlow path to the GPU, in two steps on two machines:

    python benchmarks/tf_path.py prepare [--out benchmarks/tf_path] [--models random224,digits]
    python benchmarks/tf_path.py run [--dir benchmarks/tf_path] [--out tf_path_results.json]
                                     [--backend cupy|numpy] [--precisions FP32 FP16]

``prepare`` (CPU machine, with TensorFlow) builds Keras 3 models, freezes them, converts
them (FP32, default minimum_segment_size, dynamic engines) and writes each into its own
folder under --out (default benchmarks/tf_path/, git-ignored; carry it to the GPU machine):

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

``run`` (GPU machine: numpy + cupy + the engine, no TensorFlow) reads --dir (one
model's folder, or a folder of them, each run in turn), builds every exported engine
network with the chosen backend in FP32 and FP16 at the input shapes of inputs.npz, runs
it, and compares with TensorFlow's values for the same inputs (tf_outputs.npz for model
outputs, engine_outputs.npz for the rest): FP32 rel. L2 <= 1e-5 (the builder's FP32
kernels, no TF32: the TF32 flag is not set), FP16 <= 1e-2. For (batch, classes) outputs
also the top-1 agreement with TF and, where labels.npz came along, the accuracy against
the labels (TF's own on the same batch is in the model's tf_path.json). Prints a short
table; writes JSON to --out ("prepared": {model: its tf_path.json}, "rows": one per
model, engine output and precision). Exit status 1 when an output is out of tolerance
(the accuracy is reported, not judged). Times are wall-clock per execute() with NumPy
arrays in and out (host copies included), median of --reps; a sanity figure, not a
benchmark. The ``tf_path`` suite (benchmarks/suites.py) runs the same on the GPU.
"""
import argparse
import datetime
import json
import logging
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import engine as rt  # noqa: E402  (after the repo root joins the path; never TensorFlow)


# ---- prepare: Keras models converted and exported (TensorFlow) -------------------------
INFO = "tf_path.json"


def _tf_values(graph_def, fetches, feeds, converted=False):
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
    tf_outputs = dict(zip(outs, _tf_values(gd, outs, inputs)))
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
            values = _tf_values(gd, names, inputs)
        else:                                 # renamed by the converter's rewrites
            values = _tf_values(converted, names, inputs, converted=True)
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
# What an earlier version wrote straight into --out: removed, or ``run``
# would take the folder for a single model and miss the subfolders.
FLAT_FILES = (".network", ".npz", ".calib")


def prepare_main(p, args):
    """``prepare`` (CPU, TensorFlow): every model of --models into --out/<model>/."""
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


# ---- run: the networks built and compared without TensorFlow ---------------------------
TOLERANCE = {"FP32": 1e-5, "FP16": 1e-2}


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _load(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return {}
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def load(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    return (manifest, _load(folder, "inputs.npz"), _load(folder, "tf_outputs.npz"),
            _load(folder, "engine_inputs.npz"), _load(folder, "engine_outputs.npz"))


def model_folders(folder):
    """[(model name, folder)]: ``folder`` itself when it holds a manifest (the
    layout of one model), else each subfolder that does, by name."""
    if os.path.exists(os.path.join(folder, "manifest.json")):
        return [(os.path.basename(os.path.normpath(folder)), folder)]
    found = [(d, os.path.join(folder, d)) for d in sorted(os.listdir(folder))
             if os.path.exists(os.path.join(folder, d, "manifest.json"))]
    if not found:
        raise FileNotFoundError(f"{folder} holds no manifest.json, nor any subfolder with one; "
                                "write it with python benchmarks/tf_path.py prepare --out")
    return found


def classes(value, ref, labels):
    """Top-1 agreement with TF and accuracy against ``labels`` of a (batch, classes)
    output; None where the output is no such thing or there are no labels."""
    if value.ndim != 2 or value.shape[1] < 2 or value.shape != ref.shape:
        return None, None
    top1 = np.argmax(value, axis=1)
    agree = float(np.mean(top1 == np.argmax(ref, axis=1)))
    if labels is None or labels.shape != (len(value),):
        return agree, None
    return agree, float(np.mean(top1 == labels))


def engine_feeds(entry, inputs, engine_inputs):
    feeds = {}
    for i in entry["inputs"]:
        key = f"{entry['name']}/{i['name']}"
        if i["replaces"] in inputs:
            feeds[i["name"]] = inputs[i["replaces"]]
        elif key in engine_inputs:
            feeds[i["name"]] = engine_inputs[key]
        else:
            raise KeyError(f"no value for engine input {key} (TF tensor {i['replaces']}) in "
                           "inputs.npz or engine_inputs.npz; run tf_path.py prepare again")
    return feeds


def expected_outputs(manifest, entry, tf_outputs, engine_outputs):
    """{engine output name: (TF's value, where it came from)}."""
    want = {}
    for tf_name, m in manifest.get("model_outputs", {}).items():
        if m and m["engine"] == entry["name"] and tf_name in tf_outputs:
            want[m["output"]] = (tf_outputs[tf_name], tf_name)
    for o in entry["outputs"]:
        key = f"{entry['name']}/{o['name']}"
        if o["name"] not in want and key in engine_outputs:
            want[o["name"]] = (engine_outputs[key], o["replaces"])
    return want


def build(path, shapes, precision, backend):
    with open(path, "rb") as f:
        network = rt.deserialize_network(f.read())
    for name, shape in shapes.items():
        network.get_tensor(name).shape = tuple(shape)   # -1 dims -> this run's shape
    builder = rt.Builder()
    config = builder.create_builder_config()
    config.backend = backend
    if precision == "FP16":
        config.set_flag(rt.BuilderFlag.FP16)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    engine = rt.Runtime(backend=backend).deserialize_cuda_engine(plan)
    return engine.create_execution_context(), seconds


def run(folder, backend="cupy", precisions=("FP32", "FP16"), reps=5, model=None):
    manifest, inputs, tf_outputs, engine_inputs, engine_outputs = load(folder)
    labels = _load(folder, "labels.npz").get("labels")
    model = model or os.path.basename(os.path.normpath(folder))
    rows = []
    for entry in manifest["engines"]:
        feeds = engine_feeds(entry, inputs, engine_inputs)
        want = expected_outputs(manifest, entry, tf_outputs, engine_outputs)
        for precision in precisions:
            ctx, build_s = build(os.path.join(folder, entry["file"]),
                                 {k: v.shape for k, v in feeds.items()}, precision, backend)
            got = ctx.execute(feeds)                      # first run: warm-up
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                got = ctx.execute(feeds)
                times.append(time.perf_counter() - t0)
            for out_name, (ref, tf_name) in sorted(want.items()):
                value = np.asarray(got[out_name] if not hasattr(got[out_name], "get")
                                   else got[out_name].get())
                err = rel_l2(value, ref)
                agree, accuracy = classes(value, ref, labels)
                rows.append({"model": model, "engine": entry["name"], "output": out_name,
                             "tf_tensor": tf_name,
                             "precision": precision, "backend": backend,
                             "shape": list(value.shape), "rel_l2": err,
                             "tolerance": TOLERANCE[precision],
                             "ok": bool(value.shape == ref.shape and err <= TOLERANCE[precision]),
                             "top1_agree": agree, "accuracy": accuracy,
                             "build_seconds": round(build_s, 3),
                             "execute_ms": round(1e3 * statistics.median(times), 3)})
    return rows


def _device():
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:          # noqa: BLE001 - no GPU / no CuPy: say so, don't fail
        return "cpu"


def _fraction(x):
    return f"{'-':>6s}" if x is None else f"{x:6.3f}"


def table(rows):
    head = (f"{'model':10s} {'engine':16s} {'output':13s} {'prec':5s} {'backend':7s} "
            f"{'rel L2':>10s} {'tol':>7s} {'ok':3s} {'top-1':>6s} {'acc':>6s} "
            f"{'build s':>8s} {'exec ms':>9s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model'][:10]:10s} {r['engine'][:16]:16s} "
                     f"{r.get('name', r['output'])[:13]:13s} "
                     f"{r['precision']:5s} {r['backend']:7s} {r['rel_l2']:10.3e} "
                     f"{r['tolerance']:7.0e} {'yes' if r['ok'] else 'NO':3s} "
                     f"{_fraction(r['top1_agree'])} {_fraction(r['accuracy'])} "
                     f"{r['build_seconds']:8.2f} {r['execute_ms']:9.2f}")
    return "\n".join(lines)


def _summary(name, info):
    """One line per model: what it is and, for a trained one, TF's accuracy."""
    line = f"{name}: {info.get('model', '?')}"
    if "tf_heldout_accuracy" in info:
        line += (f", TF accuracy {info['tf_heldout_accuracy']:.4f} on the held-out split "
                 f"({info.get('heldout_images', '?')} images), "
                 f"{info.get('tf_batch_accuracy', float('nan')):.4f} on the carried batch")
    return line


def run_main(args):
    """``run`` (no TensorFlow): every model folder of --dir, built and compared."""
    rows, prepared = [], {}
    for name, folder in model_folders(args.dir):
        info = os.path.join(folder, "tf_path.json")
        if os.path.exists(info):
            with open(info) as f:
                prepared[name] = json.load(f)
        named = prepared.get(name, {}).get("output_names", {})
        for row in run(folder, args.backend, args.precisions, args.reps, model=name):
            row["name"] = named.get(row["tf_tensor"], row["output"])
            rows.append(row)
    if not rows:
        sys.stderr.write("no engine output could be compared with TensorFlow's values\n")
        return 1
    device = _device() if args.backend == "cupy" else "cpu (NumPy backend)"
    sys.stdout.write(f"from TensorFlow, on {device}\n"
                     + "".join(_summary(n, i) + "\n" for n, i in prepared.items())
                     + table(rows) + "\n")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": device, "date": datetime.date.today().isoformat(),
                       "command": " ".join(sys.argv), "prepared": prepared, "rows": rows},
                      f, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)
    prep = sub.add_parser("prepare", help="CPU, TensorFlow: models converted and exported")
    prep.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "tf_path"))
    prep.add_argument("--models", default=",".join(MODELS),
                      help=f"comma-separated, from {', '.join(MODELS)}; each goes to --out/<model>/")
    prep.add_argument("--batch", type=int, default=8, help="random224: batch of random inputs")
    prep.add_argument("--size", type=int, default=224, help="random224: input height and width")
    prep.add_argument("--digits-batch", type=int, default=64, help="digits: held-out images carried")
    prep.add_argument("--digits-epochs", type=int, default=24)
    prep.add_argument("--seed", type=int, default=0)
    run_p = sub.add_parser("run", help="no TensorFlow: the exported networks built, run and compared")
    run_p.add_argument("--dir", default=os.path.join(ROOT, "benchmarks", "tf_path"))
    run_p.add_argument("--out", default=None, help="write the results as JSON here")
    run_p.add_argument("--backend", default="cupy", choices=["cupy", "numpy"])
    run_p.add_argument("--precisions", nargs="+", default=["FP32", "FP16"], choices=["FP32", "FP16"])
    run_p.add_argument("--reps", type=int, default=5)
    return p, prep


def main(argv=None):
    p, prep = parser()
    args = p.parse_args(argv)
    return prepare_main(prep, args) if args.step == "prepare" else run_main(args)


if __name__ == "__main__":
    sys.exit(main())
