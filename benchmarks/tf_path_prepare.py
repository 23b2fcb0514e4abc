"""The TensorFlow path to the GPU, part 1 (CPU machine, with TensorFlow).

Builds Keras 3 MobileNetV2 (weights=None, fixed seed, 224x224x3; outputs: the
logits and their softmax, as random weights make the softmax alone uniform;
batch-norm statistics set from a calibration batch so activations keep unit
scale, in FP16 range), freezes it,
converts it (FP32, default minimum_segment_size, dynamic engines), and writes
to --out (default benchmarks/tf_path/, git-ignored; carry it to the GPU machine):

    <engine>.network    each engine node's network (engine.serialize_network)
    manifest.json       engines, their inputs/outputs, the TF tensors they replace
    inputs.npz          fixed random inputs (batch 8), keyed by TF input tensor name
    tf_outputs.npz      TensorFlow's outputs for them, from the ORIGINAL graph
    engine_inputs.npz   only when an engine is fed by something other than a model
    engine_outputs.npz  input / returns something other than a model output: the
                        values TF computes for those tensors, keyed "<engine>/<name>"
    tf_path.json        what was prepared (model, versions, converted share, shapes)

    python benchmarks/tf_path_prepare.py [--out benchmarks/tf_path] [--batch 8]

Part 2, benchmarks/tf_path_run.py, builds and runs the networks without TensorFlow.
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def prepare(model, out_dir, batch=8, seed=0, precision="FP32", name=None):
    """Freeze, convert and export ``model`` (a Keras model with one input) into
    ``out_dir``; returns the tf_path.json dict."""
    import tensorflow as tf

    from tf_integration import TrtGraphConverter, export_engines, freeze_keras_model

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

    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
    inputs = {}
    for t in ins:
        shape = [batch if d is None else d for d in graph.get_tensor_by_name(t).shape.as_list()]
        inputs[t] = rng.standard_normal(shape).astype(np.float32)
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
            "files": sorted(os.listdir(out_dir) + [INFO])}
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
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "tf_path"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import keras

    keras.utils.set_random_seed(args.seed)
    # With random weights the softmax is 1/1000 everywhere (float32 cannot tell the
    # classes apart), which any engine matches: compare the logits too.
    base = keras.applications.MobileNetV2(weights=None, input_shape=(args.size, args.size, 3),
                                          classifier_activation=None)
    logits = base.output
    model = keras.Model(base.input, [logits, keras.layers.Softmax(name="probabilities")(logits)],
                        name="MobileNetV2")
    calib = np.random.default_rng(args.seed + 1).standard_normal(
        (args.batch, args.size, args.size, 3)).astype(np.float32)
    normalise_batch_norms(model, calib)        # not the test inputs: those come from --seed
    info = prepare(model, args.out, batch=args.batch, seed=args.seed, name="MobileNetV2")
    size = folder_bytes(args.out)
    sys.stdout.write(
        f"{info['model']}: {info['engines']} engine(s), "
        f"{100 * info['converted_share']:.1f}% of compute nodes converted, "
        f"converted in {info['convert_seconds']} s\n"
        f"wrote {args.out}: {', '.join(info['files'])} ({size} bytes, {size / 2**20:.1f} MiB)\n")
    return 0 if info["engines"] >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
