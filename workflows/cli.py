"""cupyrt: convert TensorFlow models to engines, run, benchmark and inspect them.

    cupyrt convert MODEL -o OUT            frozen .pb -> .pb, SavedModel dir -> SavedModel dir
    cupyrt run MODEL --inputs in.npz       any .pb / SavedModel / plan / network: outputs
    cupyrt bench MODEL --inputs in.npz     latency min/median/p90/p99, throughput
    cupyrt inspect FILE                    engines, layers, precisions, kernels, memory
    cupyrt export-engines | debug-precision | tf-demo

Errors are one line on stderr (exit 1; 2 for a usage error); -v shows the
traceback and the libraries' logs.
"""
import argparse
import importlib
import logging
import os
import sys

# The parser is built from this module alone: TensorFlow (seconds to import, and
# log lines before our first word) is imported only by the command that needs it.
_TF = "tf_integration.cli"
_CLI_MODELS = "workflows.cli_models"


class CliError(Exception):
    """A mistake the user can fix: said in one line, no traceback (unless -v).

    ``where`` names the file, option or node; ``found`` what was there;
    ``expected`` what would have worked."""

    def __init__(self, where, found, expected):
        self.where, self.found, self.expected = where, found, expected
        super().__init__(f"{where}: {found}; expected {expected}")


_STATE = {"verbose": 0}


def import_tensorflow():
    """Import TensorFlow, without its start-up lines unless -v.

    TensorFlow 2.21 writes its start-up notices (oneDNN, CUDA drivers, absl's
    "before InitializeLog") from C++ straight to file descriptor 2, whatever
    TF_CPP_MIN_LOG_LEVEL says, so the descriptor itself points at /dev/null while
    the import runs. A failing import still raises its Python exception."""
    if "tensorflow" in sys.modules or _STATE["verbose"]:
        import tensorflow  # only for the commands that need it (seconds; --help stays at 0.04 s)
        return tensorflow
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # as above, with fd 2 pointed away
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


def _lazy(target):
    """A handler "module:function", imported when the command runs."""
    module, func = target.split(":")

    def run(args):
        if module.startswith("tf_integration"):
            import_tensorflow()
        return getattr(importlib.import_module(module), func)(args)
    run.target = target
    return run


def _names(values):
    out = []
    for v in values or ():
        out.extend(s for s in v.split(",") if s)
    return out


def _precision(value):
    v = value.upper()
    if v not in ("FP32", "FP16", "INT8"):
        raise argparse.ArgumentTypeError(f"{value!r}; expected fp32, fp16 or int8")
    return v


def _positive(value):
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}; expected an integer >= 1")
    return n


def _add_convert(sub):
    c = sub.add_parser(
        "convert", help="convert a frozen .pb or a SavedModel directory",
        description="Convert MODEL: a frozen GraphDef (.pb, written as a .pb) or a SavedModel "
                    "directory (written as a SavedModel directory, via TrtGraphConverterV2).")
    c.add_argument("model", help="frozen GraphDef (.pb) or SavedModel directory")
    c.add_argument("-o", "--output", required=True,
                   help="the converted model: a .pb for a .pb, a new directory for a SavedModel")
    c.add_argument("--outputs", action="append",
                   help="output node names (comma-separated or repeated); kept in TensorFlow. "
                        "Required for a .pb; a SavedModel's signatures name theirs")
    c.add_argument("--inputs", action="append",
                   help="input node names, to feed a one-array --calib-data (default: the "
                        "graph's only Placeholder)")
    c.add_argument("--precision", default="FP32", type=_precision,
                   help="fp32, fp16 or int8 (int8 needs --calib-data)")
    c.add_argument("--calib-data", help="int8: .npz of calibration samples, one array per input "
                                        "(named after it), samples first")
    c.add_argument("--calib-batch-size", type=_positive, default=32,
                   help="int8: samples per calibration run (default 32)")
    c.add_argument("--calib-algorithm", default="entropy",
                   choices=["entropy", "minmax", "percentile"], help="int8 calibrator")
    c.add_argument("--minimum-segment-size", type=int, default=3,
                   help="smallest number of nodes worth an engine (default 3; -1: convert "
                        "nothing)")
    c.add_argument("--max-batch-size", type=_positive, default=1,
                   help="largest batch a static engine takes (.pb); for a SavedModel, the "
                        "batch its engines are built ahead for")
    c.add_argument("--denylist", action="append",
                   help="node names to keep in TensorFlow (comma-separated or repeated)")
    c.add_argument("--dynamic", action="store_true",
                   help=".pb: build engines per input shape at run time; SavedModel: one "
                        "engine per segment with dynamic dims (use_dynamic_shape)")
    c.add_argument("--maximum-cached-engines", type=_positive, default=1,
                   help="engines kept per engine node, one per input shape (default 1)")
    c.add_argument("--workspace", type=int, default=1 << 30,
                   help="builder workspace in bytes (default 1 GiB)")
    c.add_argument("--signature", help="SavedModel: convert only this signature (default: all)")
    c.add_argument("--report-json", "--report", dest="report_json", metavar="FILE",
                   help="write the conversion report (converter.report) as JSON")
    c.add_argument("--report-html", metavar="FILE",
                   help="write a self-contained HTML page drawing the conversion")
    c.set_defaults(func=_lazy(f"{_TF}:convert_command"))


def _add_run_and_bench(sub):
    for name, helptext in (("run", "run a model on inputs from an .npz and show its outputs"),
                           ("bench", "time a model: latency percentiles and throughput")):
        r = sub.add_parser(name, help=helptext, description=helptext + ". MODEL: an original or "
                           "converted .pb, a SavedModel directory, a plan or a network file.")
        r.add_argument("model", help=".pb, SavedModel directory, .plan or .network")
        r.add_argument("--inputs", required=True, metavar="NPZ",
                       help=".npz with one array per model input, named after it (one array "
                            "and one input need no name)")
        r.add_argument("--outputs", action="append",
                       help="output names of a .pb (default: the graph's unconsumed nodes)")
        r.add_argument("--signature", help="SavedModel signature (default: serving_default)")
        r.add_argument("--precision", default="FP32", type=_precision,
                       help="a .network's build precision: fp32 or fp16 (default fp32)")
        r.add_argument("--backend", choices=["auto", "cupy", "numpy", "tensorflow"],
                       default="auto", help="where engines run: auto (CUDA if present, else "
                       "the TensorFlow segments of a .pb), cupy, numpy, tensorflow (segments)")
        if name == "run":
            r.add_argument("-o", "--output", metavar="NPZ", help="save every output here")
            r.add_argument("--show", type=int, default=5, help="values shown per output")
            r.set_defaults(func=_lazy("workflows.cli_run:run_command"))
        else:
            r.add_argument("--iterations", type=_positive, default=20,
                           help="timed runs (default 20)")
            r.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
            r.add_argument("--batch", type=_positive,
                           help="batch size: the first N samples of each input (repeated if "
                                "the .npz holds fewer)")
            r.add_argument("--compare", nargs="?", const="original", metavar="ORIGINAL",
                           help="time the original TensorFlow graph beside it: a converted "
                                ".pb's own segments, or the ORIGINAL model given")
            r.add_argument("--profile", action="store_true",
                           help="per-layer time of every engine (the engine profiler)")
            r.add_argument("--json", action="store_true", help="machine-readable output")
            r.set_defaults(func=_lazy("workflows.cli_run:bench_command"))


def _add_inspect(sub):
    i = sub.add_parser(
        "inspect", help="describe a plan, network, converted .pb or SavedModel",
        description="Engines, layers, precisions, chosen kernels and memory of FILE: a plan, "
                    "a network, a converted .pb or a converted SavedModel directory.")
    i.add_argument("file", help=".plan, .network, converted .pb or SavedModel directory")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--built", action="store_true",
                   help="networks (a .network, dynamic engines): show them after the builder's "
                        "passes at --precision instead of as defined")
    i.add_argument("--precision", default="FP32", type=_precision,
                   help="with --built: fp32 or fp16 (default fp32)")
    i.set_defaults(func=_lazy("workflows.cli_inspect:inspect_command"))


def _add_tools(sub):
    e = sub.add_parser("export-engines",
                       help="write each engine node's network of a converted .pb, and a manifest")
    e.add_argument("graph", help="converted GraphDef (.pb from cupyrt convert)")
    e.add_argument("outdir", help="folder for <engine>.network files and manifest.json")
    e.add_argument("--outputs", action="append",
                   help="model output tensors, to map onto engine outputs in the manifest")
    e.set_defaults(func=_lazy(f"{_TF}:export_command"))
    dbg = sub.add_parser("debug-precision", help="rank layers by the error INT8 adds")
    dbg.add_argument("network", help="a serialised network (engine.serialize_network / "
                                     "cupyrt export-engines)")
    dbg.add_argument("--calib-data", required=True, help=".npz, one array per input")
    dbg.add_argument("--eval-data", help=".npz to measure on (default: the calibration data)")
    dbg.add_argument("--calibrator", choices=["entropy", "minmax", "percentile"],
                     default="entropy", help="INT8 calibrator (default entropy)")
    dbg.add_argument("--batch-size", type=_positive, default=32,
                     help="samples per calibration batch (default 32)")
    dbg.add_argument("--metric", choices=["rel_l2", "max_abs"], default="rel_l2",
                     help="how output error is measured (default rel_l2)")
    dbg.add_argument("--fp16", action="store_true", help="compare against FP16 instead of FP32")
    dbg.add_argument("--budget", type=float, help="keep the worst layers in FP16 until the "
                                                  "largest output error is at most this")
    dbg.add_argument("-o", "--output", help="write the network with the precision marks")
    dbg.set_defaults(func=_lazy("workflows.cli_inspect:debug_precision_command"))
    d = sub.add_parser("tf-demo", help="freeze a Keras model, convert, compare with TF")
    d.add_argument("--model", default="ResNet50", choices=["ResNet50", "MobileNetV2"],
                   help="keras.applications model (random weights)")
    d.add_argument("--size", type=_positive, default=224, help="image side (default 224)")
    d.add_argument("--batch", type=_positive, default=4, help="batch size (default 4)")
    d.add_argument("--runs", type=_positive, default=3, help="timed runs (default 3)")
    d.add_argument("--legacy-keras", action="store_true", help="build with tf_keras")
    d.set_defaults(func=_lazy(f"{_TF}:demo_command"))


def build_parser():
    p = argparse.ArgumentParser(prog="cupyrt", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: INFO logs, TensorFlow's logs and tracebacks; -vv: DEBUG")
    p.add_argument("--progress", choices=["auto", "bar", "lines", "off"], default="auto",
                   help="progress display: a bar on a terminal, plain lines otherwise (auto)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(sub)
    _add_run_and_bench(sub)
    _add_inspect(sub)
    _add_tools(sub)
    return p


def _quiet_libraries(verbose):
    """TensorFlow's C++ logging is set from the environment when it loads: set it before
    any command imports it (a user's own setting wins)."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def _one_line(exc):
    """The message of an error, on one line, prefixed with its type unless ours."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, CliError):
        return text
    return f"{type(exc).__name__}: {text}"


def _user_errors():
    """Errors that mean "the input was wrong", reported without a traceback: ours (engine
    and tf_integration share CupyrtError), files that cannot be read, bad .npz files."""
    kinds = [CliError, OSError, EOFError]
    try:
        # only once a command failed: importing engine costs 0.9 s, --help 0.04 s without it
        from engine.errors import CupyrtError
        kinds.append(CupyrtError)
    except ImportError:        # pragma: no cover - engine always importable in this tree
        pass
    return tuple(kinds)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)          # usage errors: argparse exits 2 with one line
    _quiet_libraries(args.verbose)
    _STATE["verbose"] = args.verbose
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # TensorFlow's Python-side warnings (deprecations) are noise for CLI users
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except _user_errors() as exc:
        if args.verbose:
            raise
        sys.stderr.write(f"cupyrt {args.command}: error: {_one_line(exc)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"cupyrt {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":
    # run as ``python -m workflows.cli``: this file is __main__, and its CliError would
    # not be the one the command modules raise (they import workflows.cli)
    from workflows.cli import main as _main
    sys.exit(_main())
