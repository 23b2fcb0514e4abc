"""A Keras LSTM classifier becomes one engine with the engine's RNN layer, at any length.

    python -m workflows.rnn_workflow [--epochs 6] [--cell LSTM|GRU] [--steps 4,8,16]

The TensorRT RNN samples, on this project's terms, with a real sequence task:
each of scikit-learn's 8x8 handwritten digits read as a sequence of its rows
(T = 8 steps of 8 pixels). The workflow:

1. trains a small Keras LSTM (or GRU) classifier (input (batch, T, 8) with T
   left open, last state -> dense softmax) on the training digits, resampled
   to every T of --steps (rows linearly interpolated; T = 8 is the digits as
   they are);
2. exports it as a SavedModel and freezes it into a GraphDef;
3. converts the SavedModel with ``TrtGraphConverterV2`` and the frozen graph
   with ``TrtGraphConverter`` (dynamic engines), in FP32 and FP16: the Keras
   recurrent loop becomes one RNNv2 layer of one engine, which the report
   shows (engine layer types, from the engine node's own network);
4. varies T: the held-out digits resampled to each T go through TensorFlow
   and every converted model, saved and reloaded: top-1 accuracy of each, its
   rel. L2 error against TensorFlow, and how often an engine ran (and how
   often TensorFlow had to run a segment instead: never, when all is well).
"""
import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

import engine as rt
from engine.settings import settings
from workflows import run_engines_here
from workflows.fresh_process import engine_counters
from workflows.tensorflow_workflow import digits_split

log = logging.getLogger(__name__)


def resample_rows(images, steps):
    """(n, 8, 8) images -> (n, steps, 8): rows linearly interpolated (T = 8: unchanged)."""
    rows = images.shape[1]
    if steps == rows:
        return images
    pos = np.linspace(0, rows - 1, steps)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, rows - 1)
    frac = (pos - lo).astype(np.float32)[None, :, None]
    return (images[:, lo] * (1 - frac) + images[:, hi] * frac).astype(np.float32)


def train_rnn(x_train, y_train, cell="LSTM", units=32, epochs=6, steps=(8,), seed=0):
    """Each epoch passes over the training digits once per length in ``steps`` (the
    images resampled to T rows), so the classifier reads a digit at any of them."""
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    import keras

    keras.utils.set_random_seed(seed)
    layer = {"LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU}[cell]
    inp = keras.Input((None, 8), name="rows")
    out = keras.layers.Dense(10, activation="softmax", name="probs")(layer(units)(inp))
    model = keras.Model(inp, out, name=f"digits_{cell.lower()}")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    for _ in range(epochs):
        for t in steps:
            model.fit(resample_rows(x_train, t), y_train, epochs=1, batch_size=64, verbose=0)
    return model


def engine_layer_types(graph_def):
    """{engine node: {layer type: count}} of each engine node's network (before the
    builder's passes: what the converters made of the TF ops)."""
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    from tf_integration import engine_storage
    from tf_integration.engine_node import ENGINE_OP

    out = {}
    for node in graph_def.node:
        if node.op != ENGINE_OP:
            continue
        data = engine_storage.stored_network(node)
        if data is None:
            out[node.name] = {}
            continue
        net = rt.deserialize_network(data)
        hist = {}
        for i in range(net.num_layers):
            kind = net.get_layer(i).layer_type.name
            hist[kind] = hist.get(kind, 0) + 1
        out[node.name] = dict(sorted(hist.items()))
    return out


def _frozen_predictor(graph_def, x_name, y_name):
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    import tensorflow as tf
    from tf_integration import import_graph_def

    g = tf.Graph()
    with g.as_default():
        import_graph_def(graph_def, name="")
    sess = tf.compat.v1.Session(graph=g)
    return lambda x: sess.run(y_name, {x_name: x})


def _saved_predictor(path):
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    import tensorflow as tf
    from tf_integration import load_saved_model

    fn = load_saved_model(path).signatures["serving_default"]
    return lambda x: next(iter(fn(rows=tf.constant(x)).values())).numpy()


def run(epochs=6, cell="LSTM", steps=(4, 8, 16), precisions=("FP32", "FP16"), workdir=None,
        seed=0):
    """Train, export, freeze, convert (both ways, each precision), save, reload, compare at
    every T. Returns a dict of the figures."""
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    import tensorflow as tf
    from tf_integration import TrtGraphConverter, TrtGraphConverterV2, freeze_keras_model

    workdir = workdir or tempfile.mkdtemp(prefix="cupyrt-rnn-")
    x_train, y_train, x_test, y_test = digits_split(seed)
    t0 = time.perf_counter()
    model = train_rnn(x_train, y_train, cell, epochs=epochs, steps=steps, seed=seed)
    train_s = time.perf_counter() - t0
    src = os.path.join(workdir, "saved_model")
    model.export(src, verbose=False)
    gd, ins, outs = freeze_keras_model(model)

    predictors, conversions = {}, {}
    for precision in precisions:
        conv2 = TrtGraphConverterV2(input_saved_model_dir=src, precision_mode=precision)
        conv2.convert()
        saved = conv2.save(os.path.join(workdir, f"saved_model_{precision.lower()}"))
        rep = conv2.report["serving_default"]
        conversions[f"SavedModel {precision}"] = {
            "engines": len(rep["engines"]), "share": rep["converted_share"],
            "ops": [e["ops"] for e in rep["engines"]]}
        predictors[f"SavedModel {precision}"] = _saved_predictor(saved)

        conv1 = TrtGraphConverter(input_graph_def=gd,
                                  nodes_denylist=[o.split(":")[0] for o in outs],
                                  precision_mode=precision, is_dynamic_op=True)
        converted = conv1.convert()
        path = conv1.save(os.path.join(workdir, f"frozen_{precision.lower()}.pb"))
        reloaded = tf.compat.v1.GraphDef.FromString(open(path, "rb").read())
        conversions[f"frozen {precision}"] = {
            "engines": len(conv1.report["engines"]), "share": conv1.report["converted_share"],
            "ops": [e["ops"] for e in conv1.report["engines"]],
            "layers": engine_layer_types(converted)}
        predictors[f"frozen {precision}"] = _frozen_predictor(reloaded, ins[0], outs[0])

    reference = tf.saved_model.load(src).signatures["serving_default"]
    before = engine_counters()
    per_t = {}
    for t in steps:
        x = resample_rows(x_test, t)
        ref = next(iter(reference(rows=tf.constant(x)).values())).numpy()
        row = {"TensorFlow": {"accuracy": float((ref.argmax(1) == y_test).mean()),
                              "rel_l2": 0.0}}
        for name, predict in predictors.items():
            got = np.asarray(predict(x))
            row[name] = {"accuracy": float((got.argmax(1) == y_test).mean()),
                         "rel_l2": float(np.linalg.norm(got - ref) / np.linalg.norm(ref))}
        per_t[t] = row
    after = engine_counters()
    return {"engine_runs": after["engine_runs"] - before["engine_runs"],
            "native_runs": after["native_runs"] - before["native_runs"], "cell": cell,
            "train_seconds": train_s, "n_test": len(y_test), "conversions": conversions,
            "steps": per_t, "workdir": workdir}


def report(r, out=None):
    out = out or sys.stdout        # looked up per call: tests capture it
    out.write(f"digits as sequences of rows: {r['cell']} classifier trained in "
              f"{r['train_seconds']:.1f} s (backend {settings().backend})\n")
    for name, c in r["conversions"].items():
        line = (f"  {name}: {c['engines']} engine(s), {100 * c['share']:.0f}% of compute nodes; "
                f"TF ops in the engine: {c['ops'][0] if c['ops'] else {}}")
        if "layers" in c:
            line += "; engine layers: " + "; ".join(
                ", ".join(f"{k} {v}" for k, v in h.items()) for h in c["layers"].values())
        out.write(line + "\n")
    names = list(next(iter(r["steps"].values())))
    out.write(f"top-1 on {r['n_test']} held-out digits resampled to T rows (rel L2 vs TF):\n")
    out.write("  " + f"{'T':>3s}  " + "  ".join(f"{n:>22s}" for n in names) + "\n")
    for t, row in r["steps"].items():
        cells = [f"{100 * row[n]['accuracy']:5.1f}%" + ("" if n == "TensorFlow" else
                                                         f" ({row[n]['rel_l2']:.1e})")
                 for n in names]
        out.write("  " + f"{t:3d}  " + "  ".join(f"{c:>22s}" for c in cells) + "\n")
    out.write(f"engine runs {r['engine_runs']}, TensorFlow fallbacks {r['native_runs']}\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6,
                   help="training epochs (each one pass per sequence length)")
    p.add_argument("--cell", default="LSTM", choices=["LSTM", "GRU"])
    p.add_argument("--steps", default="4,8,16", help="sequence lengths T to run at")
    p.add_argument("--precisions", default="FP32,FP16", help="comma-separated: FP32, FP16")
    p.add_argument("--workdir", default=None, help="where the models are written")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_engines_here()
    r = run(args.epochs, args.cell, tuple(int(t) for t in args.steps.split(",")),
            tuple(args.precisions.split(",")), args.workdir)
    report(r)
    return r


if __name__ == "__main__":
    main()
