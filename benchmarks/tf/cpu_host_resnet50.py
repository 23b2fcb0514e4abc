"""A converted model on a host without a CUDA device: as fast as TensorFlow, and
no larger than 1.5x on disk (issue 10, points 6 and 8).

Keras ResNet50 (weights=None, fixed seed, 128x128x3) is frozen, converted with
default settings (TrtGraphConverter: FP32 and FP16, static engines) and saved;
the original and the converted graph are then timed in one process, each in its
own tf.compat.v1.Session, runs interleaved, median of --reps runs per batch size.
With no CUDA device and no CUPYRT_BACKEND, engine nodes run their TensorFlow
segments (inlined at import): the converted graph must run at >= 0.9x TF.

With --saved-model the same holds for the TF2 path: the model is exported with
``model.export``, converted with TrtGraphConverterV2 (FP32 and FP16, each
without and with build() at every batch size given), saved, and the directory
sizes compared with the original's; the original SavedModel is then timed
against the converted FP32 one loaded through ``load_saved_model`` (engine
nodes inlined as their TF ops) and through plain ``tf.saved_model.load`` after
``import tf_integration`` (engine nodes called through EagerPyFunc, running
their TF segment), runs interleaved, median of --reps.

    unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE CUPYRT_BACKEND
    python benchmarks/tf/cpu_host_resnet50.py [--saved-model] [--batches 1,8] [--reps 5]
                                              [--json out.json]
"""
import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import tensorflow as tf  # noqa: E402

from tf_integration import (  # noqa: E402
    TrtGraphConverter, TrtGraphConverterV2, freeze_keras_model, import_graph_def,
    load_saved_model)
from tf_integration.engine_node import runtime_mode  # noqa: E402

log = logging.getLogger("cpu_host_resnet50")


def model_graph(size):
    import keras
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    return freeze_keras_model(model)


def session(graph_def, converted):
    g = tf.Graph()
    with g.as_default():
        (import_graph_def if converted else tf.compat.v1.import_graph_def)(graph_def, name="")
    return tf.compat.v1.Session(graph=g)


def interleaved_ms(sessions, fetch, feeds, reps):
    """Median run time (ms) of each session, runs interleaved (ABBA...) so that the
    load of a shared host falls on both alike."""
    for sess in sessions:
        sess.run(fetch, feeds)                  # warm-up: graph optimisation, allocation
    times = [[] for _ in sessions]
    for i in range(reps):
        order = list(enumerate(sessions))
        for k, sess in (order if i % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            sess.run(fetch, feeds)
            times[k].append(1e3 * (time.perf_counter() - t0))
    return [statistics.median(t) for t in times]


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def interleaved_calls_ms(fns, reps):
    """As interleaved_ms, for callables (one SavedModel signature call each)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for i in range(reps):
        order = list(enumerate(fns))
        for k, fn in (order if i % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            fn()
            times[k].append(1e3 * (time.perf_counter() - t0))
    return [statistics.median(t) for t in times]


def saved_model_main(args, batches):
    """The --saved-model mode (module docstring): sizes and speeds, as a dict."""
    import keras

    tmp = tempfile.mkdtemp(prefix="cpu_host_resnet50_")
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
    src = os.path.join(tmp, "src")
    model.export(src, verbose=False)
    del model
    result = {"model": f"ResNet50 weights=None {args.size}x{args.size}, model.export",
              "tensorflow": tf.__version__, "mode": runtime_mode(),
              "original_dir_bytes": dir_bytes(src), "sizes": {}, "speed": {}}
    rng = np.random.default_rng(0)
    inputs = {b: rng.uniform(-1, 1, (b, args.size, args.size, 3)).astype(np.float32)
              for b in batches}
    for precision in ("FP32", "FP16"):
        for build in (False, True):
            t0 = time.perf_counter()
            conv = TrtGraphConverterV2(input_saved_model_dir=src, precision_mode=precision,
                                       maximum_cached_engines=max(1, len(batches)))
            conv.convert()
            if build:
                conv.build(lambda: iter([inputs[b] for b in batches]))
            out = conv.save(os.path.join(tmp, f"{precision}{'_built' if build else ''}"))
            size = dir_bytes(out)
            label = f"{precision}" + (f" built b{'+'.join(map(str, batches))}" if build else "")
            report = conv.report["serving_default"]
            result["sizes"][label] = {"dir_bytes": size,
                                      "ratio": size / result["original_dir_bytes"],
                                      "engines": len(report["engines"]),
                                      "seconds": round(time.perf_counter() - t0, 1)}
            log.warning("%s: %s", label, result["sizes"][label])
    key = "serving_default"
    ref = tf.saved_model.load(src).signatures[key]
    conv_dir = os.path.join(tmp, "FP32")
    inlined = load_saved_model(conv_dir).signatures[key]
    plain = tf.saved_model.load(conv_dir).signatures[key]
    for batch in batches:
        x = tf.constant(inputs[batch])
        (name,) = ref.structured_input_signature[1]
        fns = [lambda f=f: f(**{name: x}) for f in (ref, inlined, plain)]
        t, c_inl, c_plain = interleaved_calls_ms(fns, args.reps)
        want = tf.nest.flatten(fns[0]())[0].numpy()
        errs = [float(np.linalg.norm(tf.nest.flatten(fn())[0].numpy() - want)
                      / np.linalg.norm(want)) for fn in fns[1:]]
        result["speed"][batch] = {
            "tf_ms": t, "load_saved_model_ms": c_inl, "tf_saved_model_load_ms": c_plain,
            "speed_vs_tf": {"load_saved_model": t / c_inl, "tf_saved_model_load": t / c_plain},
            "rel_l2": {"load_saved_model": errs[0], "tf_saved_model_load": errs[1]}}
        log.warning("batch %d: %s", batch, result["speed"][batch])
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--saved-model", action="store_true",
                    help="the TF2 SavedModel path (module docstring) instead of frozen graphs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.saved_model:
        result = saved_model_main(args, [int(b) for b in args.batches.split(",")])
        text = json.dumps(result, indent=1)
        print(text)
        if args.json:
            with open(args.json, "w") as f:
                f.write(text)
        return
    gd, ins, outs = model_graph(args.size)
    result = {"model": f"ResNet50 weights=None {args.size}x{args.size}",
              "tensorflow": tf.__version__, "mode": runtime_mode(),
              "original_pb_bytes": len(gd.SerializeToString()), "sizes": {}, "speed": {}}
    converted = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("FP32", "FP16"):
            conv = TrtGraphConverter(input_graph_def=gd, precision_mode=precision)
            converted[precision] = conv.convert()
            path = conv.save(os.path.join(tmp, f"{precision}.pb"))
            size = os.path.getsize(path)
            result["sizes"][precision] = {"pb_bytes": size,
                                          "ratio": size / result["original_pb_bytes"],
                                          "engines": len(conv.report["engines"])}
    rng = np.random.default_rng(0)
    ref_sess, conv_sess = session(gd, False), session(converted["FP32"], True)
    for batch in [int(b) for b in args.batches.split(",")]:
        x = rng.uniform(-1, 1, (batch, args.size, args.size, 3)).astype(np.float32)
        feeds = {ins[0]: x}
        t, c = interleaved_ms([ref_sess, conv_sess], outs[0], feeds, args.reps)
        ref, got = ref_sess.run(outs[0], feeds), conv_sess.run(outs[0], feeds)
        err = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        result["speed"][batch] = {"tf_ms": t, "converted_ms": c, "speed_vs_tf": t / c,
                                  "rel_l2": err}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
