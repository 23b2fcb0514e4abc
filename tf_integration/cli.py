"""``cupyrt convert``, ``export-engines`` and ``tf-demo``: the TensorFlow commands of the CLI.

    cupyrt convert frozen.pb -o model_opt.pb --outputs Identity [--precision FP16]
                   [--minimum-segment-size 3] [--max-batch-size 8] [--dynamic]
                   [--maximum-cached-engines 1] [--report report.json]
    cupyrt convert frozen.pb -o model_int8.pb --outputs Identity --precision int8
                   --calib-data samples.npz [--calib-batch-size 32] [--calib-algorithm entropy]
    cupyrt export-engines model_opt.pb OUTDIR [--outputs Identity]
    cupyrt tf-demo [--model ResNet50] [--size 224] [--batch 4] [--legacy-keras]

workflows/cli.py calls ``add_commands`` on its subparsers.
"""
import logging
import sys
import time

logger = logging.getLogger(__name__)


def _names(values):
    out = []
    for v in values or ():
        out.extend(s for s in v.split(",") if s)
    return out


def _calibration_feeds(path, graph_def, inputs):
    """An .npz of calibration samples -> {feed tensor name: array (samples first)}.

    Keys name the graph's inputs (node 'x' or tensor 'x:0'); an .npz holding one
    array under another key (np.savez's 'arr_0') goes to the one input named by
    --inputs or, failing that, to the graph's only Placeholder."""
    import numpy as np

    from .errors import ConverterArgumentError

    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    if not arrays:
        raise ConverterArgumentError("--calib-data", path, "an .npz holding at least one array")
    placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
    feeds = {}
    for key, value in arrays.items():
        node = key.split(":")[0]
        if node in placeholders:
            feeds[key if ":" in key else f"{key}:0"] = value
    if len(feeds) != len(arrays):
        targets = [n.split(":")[0] for n in inputs] or placeholders
        if len(arrays) != 1 or len(targets) != 1:
            raise ConverterArgumentError(
                "--calib-data", f"{path} with arrays {sorted(arrays)}",
                f"arrays named after the graph's inputs {placeholders} (or one array and "
                "one input)")
        feeds = {f"{targets[0]}:0": next(iter(arrays.values()))}
    sizes = {len(v) for v in feeds.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ConverterArgumentError("--calib-data", {k: v.shape for k, v in feeds.items()},
                                     "non-empty arrays with the same number of samples")
    return feeds


def _progress(done, total, what, stream=None, width=30):
    """One text progress line, redrawn in place (carriage return); a newline when done."""
    stream = stream or sys.stderr
    filled = width * done // max(total, 1)
    stream.write(f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        stream.write("\n")
    stream.flush()


def calibrate_from_npz(conv, path, batch_size, outputs, inputs=(), stream=None):
    """Calibrate a converted INT8 ``conv`` on the samples of an .npz, in batches of
    ``batch_size``, drawing a progress line on ``stream``. Returns the INT8 GraphDef."""
    from .errors import ConverterArgumentError

    if batch_size < 1:
        raise ConverterArgumentError("--calib-batch-size", batch_size, "an int >= 1")
    feeds = _calibration_feeds(path, conv.input_graph_def, inputs)
    n = len(next(iter(feeds.values())))
    runs = -(-n // batch_size)
    state = {"run": 0}

    def feed_dict_fn():
        i = state["run"]
        _progress(i, runs, "calibrating", stream)
        state["run"] += 1
        return {k: v[i * batch_size:(i + 1) * batch_size] for k, v in feeds.items()}

    fetches = [o if ":" in o else f"{o}:0" for o in outputs]
    out = conv.calibrate(fetches, runs, feed_dict_fn=feed_dict_fn)
    _progress(runs, runs, "calibrating", stream)
    return out


def _convert(args):
    import tensorflow as tf

    from .converter import TrtGraphConverter
    from .errors import ConverterArgumentError

    int8 = args.precision == "INT8"
    if int8 != (args.calib_data is not None):
        raise ConverterArgumentError("--calib-data", args.calib_data,
                                     "a .npz of samples with --precision int8, and only then")
    gd = tf.compat.v1.GraphDef()
    with open(args.graph, "rb") as f:
        gd.ParseFromString(f.read())
    outputs = _names(args.outputs)
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=outputs,
                             precision_mode=args.precision,
                             calibration_algorithm=args.calib_algorithm,
                             minimum_segment_size=args.minimum_segment_size,
                             max_batch_size=args.max_batch_size,
                             is_dynamic_op=args.dynamic,
                             maximum_cached_engines=args.maximum_cached_engines,
                             max_workspace_size_bytes=args.workspace,
                             report_path=args.report)
    conv.convert()
    if int8:
        calibrate_from_npz(conv, args.calib_data, args.calib_batch_size, outputs,
                           _names(args.inputs))
    path = conv.save(args.output)
    sys.stdout.write(conv.summary() + f"\nwrote {path}\n")
    return 0


def _export(args):
    import tensorflow as tf

    from .export import export_engines

    gd = tf.compat.v1.GraphDef()
    with open(args.graph, "rb") as f:
        gd.ParseFromString(f.read())
    outputs = [o if ":" in o else f"{o}:0" for o in _names(args.outputs)]
    paths = export_engines(gd, args.outdir, model_outputs=outputs or None)
    sys.stdout.write("".join(f"wrote {p}\n" for p in paths))
    return 0


def run_demo(model="ResNet50", size=224, batch=4, legacy_keras=False, runs=3, out=sys.stdout):
    """The main job: freeze a bundled Keras model, convert it, run both graphs in TF
    sessions; report converted share, max error and both timings. Returns the report."""
    import numpy as np
    import tensorflow as tf


    from .converter import TrtGraphConverter
    from .engine_node import import_graph_def
    from .graph_utils import freeze_keras_model

    if legacy_keras:
        import tf_keras as keras
    else:
        import keras
    keras.utils.set_random_seed(0)
    net = getattr(keras.applications, model)(weights=None, input_shape=(size, size, 3))
    gd, ins, outs = freeze_keras_model(net)
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[o.split(":")[0] for o in outs],
                             max_batch_size=batch, is_dynamic_op=False)
    t0 = time.perf_counter()
    converted = conv.convert()
    t_convert = time.perf_counter() - t0
    backend = _backend_name()
    x = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32)

    def timed(graph_def, importer):
        g = tf.Graph()
        with g.as_default():
            importer(graph_def, name="")
            with tf.compat.v1.Session(graph=g) as sess:
                y = sess.run(outs[0], {ins[0]: x})          # warm-up (engine load)
                t = time.perf_counter()
                for _ in range(runs):
                    y = sess.run(outs[0], {ins[0]: x})
                return y, (time.perf_counter() - t) / runs

    ref, t_tf = timed(gd, tf.compat.v1.import_graph_def)
    got, t_rt = timed(converted, import_graph_def)
    err = float(np.abs(ref - got).max())
    rel = float(np.linalg.norm((ref - got).astype(np.float64)) / max(np.linalg.norm(ref), 1e-30))
    rep = conv.report
    lines = []
    if backend == "numpy":
        lines.append("no CUDA device: engines on the NumPy reference backend (reference speed, "
                     "not GPU speed)")
    elif backend == "tensorflow":
        lines.append("no CUDA device: engine nodes run their TensorFlow segments "
                     "(CUPYRT_BACKEND=numpy runs the engines on the NumPy reference backend)")
    lines += [f"model {model} ({'tf_keras' if legacy_keras else 'Keras 3'}), input "
              f"{batch}x{size}x{size}x3, backend {backend}",
              f"converted {rep['converted_compute_nodes']}/{rep['compute_nodes']} compute nodes "
              f"({100 * rep['converted_share']:.1f}%) into {len(rep['engines'])} engine(s) "
              f"in {t_convert:.1f} s",
              f"error vs TensorFlow: max abs {err:.3g}, relative L2 {rel:.3g}",
              f"TensorFlow: {1e3 * t_tf:.1f} ms/batch   cupyrt: {1e3 * t_rt:.1f} ms/batch   "
              f"(speed-up {t_tf / t_rt:.2f}x)"]
    out.write("\n".join(lines) + "\n")
    return dict(share=rep["converted_share"], max_error=err, rel_l2=rel, tf_seconds=t_tf,
                cupyrt_seconds=t_rt, backend=backend, convert_seconds=t_convert)


def _backend_name():
    """Where the converted graph's engine nodes run: "cupy", "numpy" or "tensorflow"."""
    from .engine_node import runtime_mode

    return runtime_mode()


def _demo(args):
    run_demo(args.model, args.size, args.batch, args.legacy_keras, args.runs)
    return 0


def add_commands(sub):
    c = sub.add_parser("convert", help="convert a frozen TensorFlow graph (.pb)")
    c.add_argument("graph", help="frozen GraphDef (.pb)")
    c.add_argument("-o", "--output", required=True, help="where to write the converted .pb")
    c.add_argument("--outputs", action="append", required=True,
                   help="output node names (comma-separated or repeated); kept in TF")
    c.add_argument("--inputs", action="append", help="input names (informational)")
    c.add_argument("--precision", default="FP32", type=str.upper,
                   choices=["FP32", "FP16", "INT8"], help="fp32, fp16 or int8 (any case)")
    c.add_argument("--minimum-segment-size", type=int, default=3)
    c.add_argument("--max-batch-size", type=int, default=1)
    c.add_argument("--dynamic", action="store_true", help="build engines per input shape")
    c.add_argument("--maximum-cached-engines", type=int, default=1)
    c.add_argument("--workspace", type=int, default=1 << 30, help="bytes")
    c.add_argument("--report", help="write the conversion report as JSON here")
    c.add_argument("--calib-data", help="INT8: .npz of calibration samples, one array per "
                                        "input (named after it), samples first")
    c.add_argument("--calib-batch-size", type=int, default=32,
                   help="INT8: samples per calibration run")
    c.add_argument("--calib-algorithm", default="entropy",
                   choices=["entropy", "minmax", "percentile"], help="INT8 calibrator")
    c.set_defaults(func=_convert)
    e = sub.add_parser("export-engines",
                       help="write each engine node's network of a converted .pb, and a manifest")
    e.add_argument("graph", help="converted GraphDef (.pb from cupyrt convert)")
    e.add_argument("outdir", help="folder for <engine>.network files and manifest.json")
    e.add_argument("--outputs", action="append",
                   help="model output tensors, to map onto engine outputs in the manifest")
    e.set_defaults(func=_export)
    d = sub.add_parser("tf-demo", help="freeze a Keras model, convert, compare with TF")
    d.add_argument("--model", default="ResNet50", choices=["ResNet50", "MobileNetV2"])
    d.add_argument("--size", type=int, default=224)
    d.add_argument("--batch", type=int, default=4)
    d.add_argument("--runs", type=int, default=3)
    d.add_argument("--legacy-keras", action="store_true", help="build with tf_keras")
    d.set_defaults(func=_demo)
