"""A converted model on a host without a CUDA device: as fast as TensorFlow, and
no larger than 1.5x on disk (issue 10, points 6 and 8).

Keras ResNet50 (weights=None, fixed seed, 128x128x3) is frozen, converted with
default settings (TrtGraphConverter: FP32 and FP16, static engines) and saved;
the original and the converted graph are then timed in one process, each in its
own tf.compat.v1.Session, runs interleaved, median of --reps runs per batch size.
With no CUDA device and no CUPYRT_BACKEND, engine nodes run their TensorFlow
segments (inlined at import): the converted graph must run at >= 0.9x TF.

    unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE CUPYRT_BACKEND
    python benchmarks/tf/cpu_host_resnet50.py [--batches 1,8] [--reps 5] [--json out.json]
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

from tf_integration import TrtGraphConverter, freeze_keras_model, import_graph_def  # noqa: E402
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
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
