"""INT8: calibrate on real images, compare accuracy with FP32, and see which layers lose it.

    python -m workflows.int8_workflow [--epochs 8] [--calibrator entropy|minmax|percentile]
                                      [--calib-images 512] [--budget 0.05]

The TensorRT sample "int8_caffe_mnist", on this project's terms, with
scikit-learn's 8x8 handwritten digits (they ship with scikit-learn: no
download):

1. trains a small Keras CNN on the training digits and freezes it;
2. converts it twice with ``TrtGraphConverter``: FP32, and INT8 calibrated on
   ``--calib-images`` training digits (TF-TRT's ``calibrate()``, with the
   chosen calibrator);
3. runs TensorFlow, the FP32 graph and the INT8 graph on the held-out digits:
   top-1 accuracy of each, and how often INT8 predicts what TensorFlow does;
4. the per-layer report: the INT8 engine's network and its calibration table
   (``export_engines``) go through ``engine.debug_precision``, which runs each
   INT8 layer on the FP32 run's inputs and ranks the layers by the error each
   adds on its own (what ``cupyrt debug-precision`` prints); with --budget,
   ``keep_worst_in_fp16`` then keeps the worst layers out of INT8 until the
   output's error is within it.
"""
import argparse
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

import engine as rt
from engine.precision_debug import debug_precision, keep_worst_in_fp16
from engine.settings import settings
from workflows import run_engines_here
from workflows.tensorflow_workflow import digits_split, train_cnn

log = logging.getLogger(__name__)

CALIBRATORS = ("entropy", "minmax", "percentile")


def convert(gd, outs, precision, max_batch, x_calib=None, algorithm="entropy", batch=128):
    """Static engines for up to ``max_batch`` rows; INT8 calibrated on ``x_calib`` in
    batches of ``batch``. Returns (converter, converted GraphDef)."""
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    from tf_integration import TrtGraphConverter

    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[o.split(":")[0] for o in outs],
                             precision_mode=precision, max_batch_size=max_batch,
                             is_dynamic_op=False, calibration_algorithm=algorithm)
    converted = conv.convert()
    if precision == "INT8":
        batches = [x_calib[i:i + batch] for i in range(0, len(x_calib), batch)]
        feeds = iter(batches)
        converted = conv.calibrate(outs[:1], len(batches),
                                   feed_dict_fn=lambda: {conv_input(gd): next(feeds)})
    return conv, converted


def conv_input(gd):
    (name,) = [n.name + ":0" for n in gd.node if n.op == "Placeholder"]
    return name


def predict(graph_def, x, output, converted=True):
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    import tensorflow as tf
    from tf_integration import import_graph_def

    g = tf.Graph()
    with g.as_default():
        (import_graph_def if converted else tf.compat.v1.import_graph_def)(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run(output, {conv_input(graph_def): x})


def layer_report(int8_gd, x_eval, workdir, budget=None):
    """Per INT8 layer, the error it adds (engine.debug_precision on the exported
    network with the converted engine's own calibration table). Returns
    (PrecisionReport, kept-in-FP16 names or None, final output error or None)."""
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    from tf_integration import export_engines

    paths = export_engines(int8_gd, os.path.join(workdir, "engines"))
    with open(paths[-1]) as f:
        manifest = json.load(f)
    (entry,) = manifest["engines"]
    folder = os.path.dirname(paths[-1])
    with open(os.path.join(folder, entry["file"]), "rb") as f:
        network = rt.deserialize_network(f.read())
    # the table the converted engine was calibrated with: the same ranges, no recalibration
    calibrator = rt.EntropyCalibrator2([], cache_file=os.path.join(folder,
                                                                   entry["calibration_cache"]))
    feeds = {entry["inputs"][0]["name"]: x_eval}
    rep = debug_precision(network, calibrator, feeds)
    if budget is None:
        return rep, None, None
    kept, final = keep_worst_in_fp16(network, rep, budget, fp16=True)
    return rep, kept, final.max_output_error


def run(epochs=8, algorithm="entropy", calib_images=512, budget=None, eval_images=128,
        workdir=None, seed=0):
    """Train, convert FP32 and INT8, compare accuracy, per-layer report. Returns a dict."""
    # TensorFlow here, not at import: main() sets TF_CPP_MIN_LOG_LEVEL first
    from tf_integration import freeze_keras_model

    if algorithm not in CALIBRATORS:
        raise ValueError(f"calibrator {algorithm!r}; expected one of {', '.join(CALIBRATORS)}")
    workdir = workdir or tempfile.mkdtemp(prefix="cupyrt-int8-")
    x_train, y_train, x_test, y_test = digits_split(seed)
    x_train, x_test = x_train[..., None], x_test[..., None]
    t0 = time.perf_counter()
    model = train_cnn(x_train, y_train, epochs, seed)
    train_s = time.perf_counter() - t0
    gd, _, outs = freeze_keras_model(model)

    _, fp32_gd = convert(gd, outs, "FP32", len(x_test))
    t0 = time.perf_counter()
    conv8, int8_gd = convert(gd, outs, "INT8", len(x_test), x_train[:calib_images], algorithm)
    calib_s = time.perf_counter() - t0
    p_tf = predict(gd, x_test, outs[0], converted=False)
    p32 = predict(fp32_gd, x_test, outs[0])
    p8 = predict(int8_gd, x_test, outs[0])
    rep, kept, final = layer_report(int8_gd, x_test[:eval_images], workdir, budget)
    n8 = sum(e.get("layer_precisions", {}).get("INT8", 0) for e in conv8.report["engines"])

    def acc(p):
        return float((p.argmax(1) == y_test).mean())
    return {"train_seconds": train_s, "calibration_seconds": calib_s, "algorithm": algorithm,
            "calib_images": min(calib_images, len(x_train)), "n_test": len(y_test),
            "accuracy_tf": acc(p_tf), "accuracy_fp32": acc(p32), "accuracy_int8": acc(p8),
            "agreement_int8": float((p8.argmax(1) == p_tf.argmax(1)).mean()),
            "rel_l2_fp32": float(np.linalg.norm(p32 - p_tf) / np.linalg.norm(p_tf)),
            "rel_l2_int8": float(np.linalg.norm(p8 - p_tf) / np.linalg.norm(p_tf)),
            "int8_layers": n8, "layers": rep.rows, "output_error": rep.max_output_error,
            "table": rep.table(), "budget": budget, "kept_fp16": kept,
            "error_after_keeping": final, "eval_images": min(eval_images, len(x_test))}


def report(r, out=None):
    out = out or sys.stdout        # looked up per call: tests capture it
    out.write(f"digits CNN trained in {r['train_seconds']:.1f} s; INT8 calibrated "
              f"({r['algorithm']}) on {r['calib_images']} training digits in "
              f"{r['calibration_seconds']:.1f} s: {r['int8_layers']} layers run INT8 (backend "
              f"{settings().backend})\n"
              f"top-1 on {r['n_test']} held-out digits: TensorFlow {100 * r['accuracy_tf']:.1f}%"
              f"   cupyrt FP32 {100 * r['accuracy_fp32']:.1f}% (rel L2 {r['rel_l2_fp32']:.1e})"
              f"   cupyrt INT8 {100 * r['accuracy_int8']:.1f}% (rel L2 {r['rel_l2_int8']:.1e}, "
              f"same prediction as TF on {100 * r['agreement_int8']:.1f}%)\n"
              f"per-layer error INT8 adds (each layer on exact FP32 inputs, "
              f"{r['eval_images']} held-out digits), worst first:\n")
    out.write("  " + r["table"].replace("\n", "\n  ") + "\n")
    if r["budget"] is not None:
        out.write(f"kept in FP16 to bring the output error within {r['budget']}: "
                  f"{r['kept_fp16'] or 'none'} (output error {r['error_after_keeping']:.3g})\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8, help="training epochs on the digits")
    p.add_argument("--calibrator", default="entropy", choices=CALIBRATORS)
    p.add_argument("--calib-images", type=int, default=512, help="training digits to calibrate on")
    p.add_argument("--eval-images", type=int, default=128,
                   help="held-out digits the per-layer report is measured on")
    p.add_argument("--budget", type=float, default=None,
                   help="keep the worst layers in FP16 until the output's rel. L2 error is "
                        "at most this")
    p.add_argument("--workdir", default=None, help="where the exported engines are written")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_engines_here()
    r = run(args.epochs, args.calibrator, args.calib_images, args.budget, args.eval_images,
            args.workdir)
    report(r)
    return r


if __name__ == "__main__":
    main()
