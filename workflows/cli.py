"""The ``cupyrt`` command line.

    cupyrt inspect model.plan          layers, precisions, kernels, I/O, memory
    cupyrt convert frozen.pb -o out.pb --outputs Identity [--precision FP16] ...
"""
import argparse
import json
import logging
import sys


def _inspect(args):
    import engine as rt
    with open(args.plan, "rb") as f:
        eng = rt.Runtime().deserialize_cuda_engine(f.read())
    info = json.loads(eng.create_engine_inspector().get_engine_information())
    if args.json:
        sys.stdout.write(json.dumps(info, indent=1) + "\n")
        return 0
    out = [f"engine: {eng.num_layers} layers, backend {info['backend']}, "
           f"activation memory {info['device_memory_size']} bytes (dynamic dims = 1)"]
    out += [f"  input  {n}: {s}" for n, s in info["inputs"].items()]
    out += [f"  output {n}: {s}" for n, s in info["outputs"].items()]
    out.append(f"  {'layer':32s} {'type':18s} {'precision':9s} kernel")
    out += [f"  {li['name'][:32]:32s} {li['type']:18s} {li['precision']:9s} {li['kernel']}"
            for li in info["layers"]]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _load_batches(path):
    """An .npz file: one array per network input (leading dim = samples)."""
    import numpy as np
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _debug_precision(args):
    """Rank the layers of a network by the error INT8 adds, and optionally keep the
    worst ones in FP16 until an accuracy budget is met."""
    import engine as rt
    from engine.quantization import debug_precision, keep_worst_in_fp16
    with open(args.network, "rb") as f:
        net = rt.deserialize_network(f.read())
    calib = _load_batches(args.calib_data)
    evals = _load_batches(args.eval_data) if args.eval_data else calib
    n = len(next(iter(calib.values())))
    bs = args.batch_size
    batches = [{k: v[i:i + bs] for k, v in calib.items()} for i in range(0, n, bs)]
    algo = {"entropy": rt.EntropyCalibrator2, "minmax": rt.MinMaxCalibrator,
            "percentile": rt.PercentileCalibrator}[args.calibrator]
    report = debug_precision(net, algo(batches), evals, metric=args.metric, fp16=args.fp16)
    sys.stdout.write(report.table() + "\n")
    if args.budget is not None:
        kept, final = keep_worst_in_fp16(net, report, args.budget, fp16=True)
        sys.stdout.write(f"kept in FP16 to meet error <= {args.budget}: {kept or 'none'} "
                         f"(output error {final.max_output_error:.3g})\n")
        if args.output:
            with open(args.output, "wb") as f:
                f.write(rt.serialize_network(net))
            sys.stdout.write(f"network with those precision marks written to {args.output}\n")
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="cupyrt", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="describe a plan file")
    ins.add_argument("plan")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(func=_inspect)
    dbg = sub.add_parser("debug-precision", help="rank layers by the error INT8 adds")
    dbg.add_argument("network", help="a serialised network (engine.serialize_network / "
                                     "cupyrt export-engines)")
    dbg.add_argument("--calib-data", required=True, help=".npz, one array per input")
    dbg.add_argument("--eval-data", help=".npz to measure on (default: the calibration data)")
    dbg.add_argument("--calibrator", choices=["entropy", "minmax", "percentile"], default="entropy")
    dbg.add_argument("--batch-size", type=int, default=32)
    dbg.add_argument("--metric", choices=["rel_l2", "max_abs"], default="rel_l2")
    dbg.add_argument("--fp16", action="store_true", help="compare against FP16 instead of FP32")
    dbg.add_argument("--budget", type=float, help="keep the worst layers in FP16 until the "
                                                  "largest output error is at most this")
    dbg.add_argument("-o", "--output", help="write the network with the precision marks")
    dbg.set_defaults(func=_debug_precision)
    try:
        from tf_integration import cli as tf_cli
    except ImportError:       # TensorFlow side not importable: the engine commands still work
        tf_cli = None
    if tf_cli is not None:
        tf_cli.add_commands(sub)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
