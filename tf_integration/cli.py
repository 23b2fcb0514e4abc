"""``cupyrt convert``, ``export-engines`` and ``tf-demo``: the TensorFlow commands of the CLI.

    cupyrt convert frozen.pb -o model_opt.pb --outputs Identity [--precision FP16]
                   [--minimum-segment-size 3] [--max-batch-size 8] [--dynamic]
                   [--maximum-cached-engines 1] [--denylist a,b] [--report-json r.json]
                   [--report-html r.html]
    cupyrt convert saved_model_dir -o converted_dir [--precision fp16] [--signature KEY]
    cupyrt convert frozen.pb -o model_int8.pb --outputs Identity --precision int8
                   --calib-data samples.npz [--calib-batch-size 32] [--calib-algorithm entropy]
    cupyrt export-engines model_opt.pb OUTDIR [--outputs Identity]
    cupyrt tf-demo [--model ResNet50] [--size 224] [--batch 4] [--legacy-keras]

workflows/cli.py defines the options (without importing TensorFlow) and calls
``convert_command``, ``export_command`` and ``demo_command`` here.
"""
import json
import logging
import os
import sys
import time

import numpy as np
import tensorflow as tf

from workflows.cli import CliError
from workflows.cli_models import detect_kind, match_feeds, read_npz
from workflows.progress import Progress, build_progress

from .cli_models import check_node_names, read_graph_def
from .engine_node import import_graph_def, runtime_mode
from .errors import ConverterArgumentError, TFIntegrationError
from .export import export_engines
from .graph_converter import TrtGraphConverter
from .graph_utils import freeze_keras_model
from .report_html import write_converter_report_html
from .saved_model import TrtGraphConverterV2

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


def calibrate_from_npz(conv, path, batch_size, outputs, inputs=(), stream=None,
                       progress="auto"):
    """Calibrate a converted INT8 ``conv`` on the samples of an .npz, in batches of
    ``batch_size``, showing progress on ``stream`` (a bar on a terminal, lines
    otherwise; ``progress`` as workflows.progress.Progress's mode). Returns the INT8
    GraphDef."""

    if batch_size < 1:
        raise ConverterArgumentError("--calib-batch-size", batch_size, "an int >= 1")
    feeds = _calibration_feeds(path, conv.input_graph_def, inputs)
    n = len(next(iter(feeds.values())))
    runs = -(-n // batch_size)
    state = {"run": 0}
    with Progress("calibrating", runs, stream, progress) as bar:
        def feed_dict_fn():
            i = state["run"]
            state["run"] += 1
            if i:
                bar.update()        # the previous run finished
            return {k: v[i * batch_size:(i + 1) * batch_size] for k, v in feeds.items()}

        fetches = [o if ":" in o else f"{o}:0" for o in outputs]
        out = conv.calibrate(fetches, runs, feed_dict_fn=feed_dict_fn)
        bar.update()
    return out


def _check_convert_options(args, kind):
    if (args.precision == "INT8") != (args.calib_data is not None):
        raise CliError("--calib-data", "missing" if args.calib_data is None else
                       f"given with --precision {args.precision.lower()}",
                       "an .npz of calibration samples with --precision int8, and only then")
    if kind == "graphdef" and not args.outputs:
        raise CliError("--outputs", "missing for a frozen .pb",
                       "the graph's output node names (they stay in TensorFlow)")
    if kind == "graphdef" and args.signature:
        raise CliError("--signature", f"{args.signature!r} for a frozen .pb",
                       "no --signature (a frozen graph has none; SavedModels do)")
    if args.minimum_segment_size == 0 or args.minimum_segment_size < -1:
        raise CliError("--minimum-segment-size", args.minimum_segment_size,
                       "an integer >= 1, or -1 to convert nothing")
    if args.workspace < 0:
        raise CliError("--workspace", args.workspace, "a size in bytes >= 0")
    if kind == "savedmodel" and args.output.endswith(".pb"):
        raise CliError("-o", f"{args.output!r} (a .pb) for a SavedModel",
                       "a directory: a SavedModel converts to a SavedModel")
    parent = os.path.dirname(os.path.abspath(args.output))
    if kind == "graphdef" and not os.path.isdir(parent):    # fail before converting
        raise CliError(f"-o {args.output!r}", f"folder {parent} does not exist",
                       "a .pb path in an existing folder")
    if kind == "graphdef" and os.path.isdir(args.output):
        raise CliError("-o", f"{args.output!r} is a directory for a frozen .pb",
                       "a .pb file path: a frozen graph converts to a frozen graph")


def _write_reports(args, report, converter):
    """--report-json: converter.report as JSON; --report-html: the page drawing the
    conversion (tf_integration/report_html.py)."""
    if args.report_json:
        with open(args.report_json, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True, default=str)
    if args.report_html:
        write_converter_report_html(converter, args.report_html)


def _convert_graph_def(args):
    gd = read_graph_def(args.model)
    outputs, denylist = _names(args.outputs), _names(args.denylist)
    check_node_names(gd, outputs, "--outputs", args.model)
    check_node_names(gd, denylist, "--denylist", args.model)
    check_node_names(gd, _names(args.inputs), "--inputs", args.model)
    conv = TrtGraphConverter(input_graph_def=gd,
                             nodes_denylist=list(dict.fromkeys(outputs + denylist)),
                             precision_mode=args.precision,
                             calibration_algorithm=args.calib_algorithm,
                             minimum_segment_size=args.minimum_segment_size,
                             max_batch_size=args.max_batch_size,
                             is_dynamic_op=args.dynamic,
                             maximum_cached_engines=args.maximum_cached_engines,
                             max_workspace_size_bytes=args.workspace)
    conv.convert()
    if args.precision == "INT8":
        calibrate_from_npz(conv, args.calib_data, args.calib_batch_size, outputs,
                           _names(args.inputs), progress=args.progress)
    if not conv.report["engines"]:
        logger.warning("no engine was made: the converted graph is the original")
    path = conv.save(args.output)          # an OSError is said in one line by main()
    _write_reports(args, conv.report, conv)
    return conv.summary(), path


def _signature_batches(conv, path, batch_size, inputs_by_sig):
    """INT8 calibration input for TrtGraphConverterV2: the .npz arrays by signature input."""
    arrays = read_npz(path, "--calib-data")
    feeds = {key: match_feeds(arrays, specs, path, "--calib-data")
             for key, specs in inputs_by_sig.items()}
    n = min(len(v) for f in feeds.values() for v in f.values())

    def per_signature(key):
        def gen():
            for i in range(0, n, batch_size):
                yield {k: v[i:i + batch_size] for k, v in feeds[key].items()}
        return gen
    return {key: per_signature(key) for key in feeds}


def _sig_inputs(path, signature):
    loaded = tf.saved_model.load(path)
    keys = [signature] if signature else sorted(loaded.signatures)
    out = {}
    for key in keys:
        specs = loaded.signatures[key].structured_input_signature[1]
        out[key] = {k: (np.dtype(s.dtype.as_numpy_dtype), None) for k, s in specs.items()}
    return out


def _convert_saved_model(args):
    if args.denylist or args.inputs or args.outputs:
        raise CliError("--denylist/--inputs/--outputs", "given for a SavedModel",
                       "none of them: a SavedModel's signatures name its inputs and outputs "
                       "(--signature picks one)")
    try:
        conv = TrtGraphConverterV2(input_saved_model_dir=args.model,
                                   input_saved_model_signature_key=args.signature,
                                   use_dynamic_shape=args.dynamic,
                                   precision_mode=args.precision,
                                   minimum_segment_size=args.minimum_segment_size,
                                   maximum_cached_engines=args.maximum_cached_engines,
                                   max_workspace_size_bytes=args.workspace,
                                   calibration_algorithm=args.calib_algorithm)
    except ConverterArgumentError as exc:
        option = {"input_saved_model_signature_key": "--signature"}.get(exc.argument,
                                                                        exc.argument)
        raise CliError(option, repr(exc.given), exc.expected) from exc
    if os.path.exists(args.output) and (not os.path.isdir(args.output)
                                        or os.listdir(args.output)):
        raise CliError(f"-o {args.output!r}", "exists and is not an empty directory",
                       "a new or empty directory (nothing is overwritten)")
    calib = None
    if args.precision == "INT8":
        calib = _signature_batches(conv, args.calib_data, args.calib_batch_size,
                                   _sig_inputs(args.model, args.signature))
    conv.convert(calibration_input_fn=calib)
    if args.max_batch_size > 1 and not args.dynamic:
        conv.build(input_fn=_build_inputs(conv, args.max_batch_size))
    path = conv.save(args.output)
    _write_reports(args, conv.report, conv)
    return conv.summary(), path


def _build_inputs(conv, batch):
    """Engines built ahead at batch ``batch``: random inputs of the signatures' shapes."""

    fns = {}
    for key, sig in conv._signatures.items():      # noqa: SLF001 - specs of converted sigs
        if sig.converter is None or sig.key != key:
            continue
        arrays = {}
        for name, spec in sig.input_specs:
            dims = spec.shape.as_list() if spec.shape.rank is not None else None
            if dims is None or any(d is None for d in dims[1:]):
                raise CliError("--max-batch-size", f"signature {key!r} input {name!r} has "
                               f"shape {dims}", "inputs whose dims past the batch are known, "
                               "to build engines ahead (or --dynamic)")
            rng = np.random.default_rng(0)
            arrays[name] = rng.standard_normal([batch] + dims[1:]).astype(
                spec.dtype.as_numpy_dtype) if spec.dtype.is_floating else np.zeros(
                [batch] + dims[1:], spec.dtype.as_numpy_dtype)
        fns[key] = (lambda a=arrays: iter([a]))
    return fns


def convert_command(args):
    """``cupyrt convert``: a .pb to a .pb, a SavedModel directory to a SavedModel directory."""

    kind = detect_kind(args.model)
    if kind not in ("graphdef", "savedmodel"):
        raise CliError(f"MODEL {args.model!r}", f"a {kind} (already an engine)",
                       "a frozen .pb or a SavedModel directory")
    _check_convert_options(args, kind)
    with build_progress(mode=args.progress):
        summary, path = (_convert_graph_def if kind == "graphdef" else
                         _convert_saved_model)(args)
    sys.stdout.write(summary + f"\nwrote {path}\n")
    return 0


def export_command(args):
    gd = read_graph_def(args.graph, "GRAPH")
    outputs = [o if ":" in o else f"{o}:0" for o in _names(args.outputs)]
    paths = export_engines(gd, args.outdir, model_outputs=outputs or None)
    sys.stdout.write("".join(f"wrote {p}\n" for p in paths))
    return 0


def run_demo(model="ResNet50", size=224, batch=4, legacy_keras=False, runs=3, out=sys.stdout):
    """The main job: freeze a bundled Keras model, convert it, run both graphs in TF
    sessions; report converted share, max error and both timings. Returns the report."""

    if legacy_keras:
        try:
            import tf_keras as keras  # optional dependency (--legacy-keras)
        except ImportError as exc:
            raise TFIntegrationError(
                f"--legacy-keras: tf_keras is not installed ({exc}); expected it beside TensorFlow: "
                "`pip install --no-deps \"tf_keras==<TensorFlow's major.minor>.*\"` (its metadata "
                "asks for the `tensorflow` package, which must not land beside tensorflow-cpu)") from exc
    else:
        import keras  # Keras 3, TensorFlow's own front end (the default)
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
    return runtime_mode()


def demo_command(args):
    run_demo(args.model, args.size, args.batch, args.legacy_keras, args.runs)
    return 0
