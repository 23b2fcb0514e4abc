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


def build_parser():
    p = argparse.ArgumentParser(prog="cupyrt", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="describe a plan file")
    ins.add_argument("plan")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(func=_inspect)
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
