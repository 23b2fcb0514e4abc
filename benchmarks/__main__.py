"""python -m benchmarks run SUITE [--out DIR] | ab MODEL [NAME=VALUE ...] [--disable-pass NAME]
[--also NAME=VALUE[,...]] [--peer] [--layerwise N] [--profile] [--trace] | list
| report | layers NAME [...]

``run`` times one suite (benchmarks/suites.py) and writes
``<out>/<date>_<card>_<suite>.json`` (default out: benchmarks/results) with the card, date,
commit, command, versions, rows and builds, then prints a short table. ``report`` prints
(``--write``: puts into RESULTS.md, and draws results/plot.svg) the tables generated from
every results file. ``ab`` builds one model twice in one process, as the settings are and
with ``NAME=VALUE`` settings (engine/settings.py fields) applied and/or builder passes left
out (``--disable-pass``), and times the two engines in alternating rounds (by default no
peer: the question is which variant is faster; ``--peer`` adds PyTorch eager and torch.compile, timed
after the engines in the same process), each engine's output checked against A's and against
the model in FP32, e.g. ``ab bert --disable-pass qkv_merge --batches 1,32``;
``--also`` adds engines C, D, ... to the same rounds (one A for all), e.g. ``ab resnet50
cudnn_s2d=1 --also stem_kernel=1``.
``layers`` runs one per-layer kernel measurement (benchmarks/layers.py; ``layers --help``).
"""
import argparse
import datetime
import json
import logging
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def card_slug(name):
    """'NVIDIA H200' -> 'h200', 'NVIDIA H100 80GB HBM3' -> 'h100'."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w and w.upper() != "NVIDIA"]
    return words[0].lower() if words else "gpu"


def commit():
    env = os.environ.get("BENCH_COMMIT")
    if env:
        return env
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                             text=True, check=True).stdout.strip()
        # a copied tree (the device machine's) can sit on an older HEAD than its files: say so
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (set BENCH_COMMIT)"
    return f"{sha}+changes (set BENCH_COMMIT)" if changed else sha


def result_path(out, date, card, suite):
    return os.path.join(out, f"{date}_{card_slug(card)}_{suite}.json")


def short_table(rows):
    """One line per (model, precision, batch): cupyrt and each peer, and the ratios."""
    lines = [f"{'model':24s} {'prec':5s} {'batch':>5s} {'cupyrt':>9s} {'eager':>9s} {'compile':>9s} "
             f"{'c.r-o':>9s} {'x eager':>7s} {'x comp':>7s} {'x best':>7s}"]
    from .report import peer_for, ratios
    for r in rows:
        if r["system"] != "cupyrt":
            continue
        peers = {s: peer_for(rows, r, s) for s in ("torch.eager", "torch.compile", "torch.compile.reduce-overhead")}
        rat = ratios(r, peers)

        def f(v):
            return f"{v:9.3f}" if v is not None else f"{'-':>9s}"

        def x(v):
            return f"{v:7.2f}" if v is not None else f"{'-':>7s}"
        lines.append(f"{r['model'][:24]:24s} {r['precision']:5s} {r['batch']:5d} {f(r.get('ms'))} "
                     f"{f(peers['torch.eager'])} {f(peers['torch.compile'])} "
                     f"{f(peers['torch.compile.reduce-overhead'])} {x(rat['eager'])} {x(rat['compile'])} "
                     f"{x(rat['best_compile'])}")
    return "\n".join(lines)


def cmd_run(args):
    from .models import use_empty_kernel_cache
    from .suites import SUITES
    use_empty_kernel_cache()
    suite = SUITES[args.suite]
    args.batches = [int(b) for b in args.batches.split(",")] if args.batches else list(suite.batches)
    os.makedirs(args.out, exist_ok=True)
    import cupy
    import torch
    card = torch.cuda.get_device_name()
    started = datetime.datetime.now()
    rows, builds = suite.run(args)
    try:
        from kernels.gpu import cudnn_graphs
        cudnn = cudnn_graphs.frontend_version()
    except Exception:            # noqa: BLE001
        cudnn = None
    doc = {"suite": suite.name, "what": suite.what, "card": card, "date": started.isoformat(timespec="seconds"),
           "commit": commit(), "command": command_line(sys.argv[1:], args.out),
           "versions": {"torch": torch.__version__, "cupy": cupy.__version__, "cudnn_frontend": cudnn},
           "env": {k: v for k, v in os.environ.items() if k.startswith("CUPYRT_")},
           "seconds": round((datetime.datetime.now() - started).total_seconds(), 1),
           "rows": rows, "builds": builds}
    path = result_path(args.out, started.date().isoformat(), card, suite.name)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    logging.getLogger("benchmarks").info("wrote %s", path)
    print(f"\n{suite.name}: {card}, {doc['date']}, commit {doc['commit']} -> {path}")
    print(short_table(rows))
    return 0


def command_line(argv, out):
    """The command as recorded: the output folder named ``$OUT`` when it lies outside
    the repository (a machine's scratch path says nothing to a reader)."""
    inside = os.path.abspath(out).startswith(os.path.dirname(HERE) + os.sep)
    return "python -m benchmarks " + " ".join(
        a if inside or os.path.abspath(a) != os.path.abspath(out) else "$OUT" for a in argv)


def parse_settings(items):
    """["NAME=VALUE", ...] -> {engine.settings field: value text}; NAME is a field of
    engine/settings.py, with or without the CUPYRT_ prefix, in either case."""
    from engine.settings import SETTINGS
    fields = {s.field for s in SETTINGS}
    setting = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.lower().removeprefix("cupyrt_")
        if not sep or key not in fields:
            raise SystemExit(f"ab: {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(fields))}")
        setting[key] = value
    return setting


def check_passes(names):
    """SystemExit naming the first of ``names`` that is no builder pass."""
    from engine.passes import PASS_NAMES
    for name in names:
        if name not in PASS_NAMES:
            raise SystemExit(f"ab: --disable-pass {name!r}: expected one of {', '.join(PASS_NAMES)}")


def cmd_ab(args):
    from . import models
    models.use_empty_kernel_cache()
    setting = parse_settings(args.settings)
    check_passes(args.disable_pass)
    if not setting and not args.disable_pass:
        raise SystemExit("ab: nothing to compare: give NAME=VALUE settings and/or --disable-pass NAME for B")
    more = [parse_settings(group.split(",")) for group in args.also]
    import torch
    os.makedirs(args.out, exist_ok=True)
    card = torch.cuda.get_device_name()
    started = datetime.datetime.now()
    rows = models.ab_rows(args.model, args.precision, [int(b) for b in args.batches.split(",")],
                          args.reps, setting, disabled_passes=args.disable_pass, more=more, peer=args.peer,
                          layerwise=args.layerwise, profile_dir=args.out if args.profile else None,
                          trace_dir=args.out if args.trace else None)
    doc = {"ab": setting, "also": more, "disabled_passes": args.disable_pass, "card": card,
           "date": started.isoformat(timespec="seconds"), "commit": commit(),
           "command": command_line(sys.argv[1:], args.out), "rows": rows,
           "env": {k: v for k, v in os.environ.items() if k.startswith("CUPYRT_")}}
    tag = "_".join([f"{k}-{v}" for k, v in setting.items()] + [f"no-{p}" for p in args.disable_pass])
    name = f"{started.date().isoformat()}_{card_slug(card)}_ab_{args.model}_{args.precision}_{tag}.json"
    path = os.path.join(args.out, name)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    print(f"\nab {args.model} {args.precision}: A = settings as they are, B = {setting}"
          f"{' without ' + ', '.join(args.disable_pass) if args.disable_pass else ''}; {card}, "
          f"{doc['date']}, commit {doc['commit']} -> {path}")
    for i, values in enumerate(more):
        print(f"{chr(ord('C') + i)} = {values}")
    print(ab_table(rows))
    for label, t in (rows[0].get("layerwise") or {}).items() if rows else ():
        first = t["first_over_1e-3"]
        print(f"layerwise {label} vs A ({t['compared']} tensors): first over 1e-3: "
              + (f"{first['tensor']} {first['rel_l2']:.2e}" if first else "none")
              + "; worst: " + ", ".join(f"{r['tensor']} {r['rel_l2']:.2e}" for r in t["worst"][:4])
              + f"; {len(t.get('kernels') or {})} layers ran other kernels than A's")
    return 0


def ab_table(rows):
    """The A/B summary, one line per batch and engine: ms, ratio to A, rel L2 against A
    and against FP32, top-1 agreement with FP32 where the model classifies, and, when the
    run timed PyTorch (``--peer``), torch.compile's ms over ours (> 1: we are faster)."""
    peer_cols = any(r.get("peers") for r in rows)
    lines = [f"{'batch':>5s} {'engine':>6s} {'ms':>9s} {'x A':>6s} {'L2 vs A':>9s} {'L2 vs FP32':>10s}"
             f" {'top-1':>6s}" + (f" {'compile ms':>10s} {'x compile':>9s}" if peer_cols else "")]
    for r in rows:
        engines = {"A": (r["A_ms"], 0.0), "B": (r["B_ms"], r["rel_l2_B_vs_A"])}
        engines.update({k: (v["ms"], v["rel_l2_vs_A"]) for k, v in (r.get("variants") or {}).items()})
        compiled = (r.get("peers") or {}).get("torch.compile")
        for label, (ms, vs_a) in engines.items():
            acc = (r.get("vs_fp32") or {}).get(label) or {}
            top1 = acc.get("top1_agreement")
            line = (f"{r['batch']:5d} {label:>6s} {ms:9.3f} {ms / r['A_ms']:6.3f} {vs_a:9.2e}"
                    f" {acc['rel_l2'] if 'rel_l2' in acc else float('nan'):10.2e}"
                    f" {'-' if top1 is None else format(top1, '.3f'):>6s}")
            if peer_cols:
                line += (f" {compiled:10.3f} {compiled / ms:9.2f}" if compiled else f" {'-':>10s} {'-':>9s}")
            lines.append(line)
    return "\n".join(lines)


def cmd_report(args):
    from .report import PLOT_NAME, load_results, render, render_layers, render_plot, write_into
    if args.layers:
        with open(args.layers) as f:
            print(render_layers(json.load(f)))
        return 0
    docs = load_results(args.results)
    text = render(docs)
    if args.write:
        write_into(os.path.join(HERE, "RESULTS.md"), text)
        with open(os.path.join(args.results, PLOT_NAME), "w") as f:
            f.write(render_plot(docs))
    else:
        print(text)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["layers"]:
        # its own parser (``layers --help``), and the kernel cache as it is: no suite's cold build here
        from . import layers
        return layers.main(argv[1:])
    from .suites import SUITES
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one suite")
    r.add_argument("suite", choices=sorted(SUITES))
    r.add_argument("--out", default=os.path.join(HERE, "results"))
    r.add_argument("--batches", help="comma-separated (default: the suite's)")
    r.add_argument("--precisions", help="comma-separated fp16,fp32,int8 (default: the suite's)")
    r.add_argument("--reps", type=int, default=30)
    r.add_argument("--profile", action="store_true",
                   help="profile files under --out: per layer at run time, and the cold build and the "
                        "new-process rebuild under cProfile")
    r.add_argument("--layers", help="kernels suite: comma-separated layer names, or all")
    r.add_argument("--tf-dir", help="tf_path suite: the prepared folder (default benchmarks/tf_path)")
    ab = sub.add_parser("ab", help="one model, two settings, one process")
    ab.add_argument("model", choices=("resnet50", "mobilenet_v2", "bert"))
    ab.add_argument("settings", nargs="*", help="NAME=VALUE for B (CUPYRT_ prefix optional)")
    ab.add_argument("--disable-pass", action="append", default=[], metavar="NAME",
                    help="a builder pass B is built without (engine.passes.PASS_NAMES)")
    ab.add_argument("--precision", default="fp16", choices=("fp16", "fp32", "int8"))
    ab.add_argument("--batches", default="256", help="comma-separated")
    ab.add_argument("--reps", type=int, default=20)
    ab.add_argument("--also", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
                    help="one more engine (C, D, ...) with these settings, compared in the same rounds")
    ab.add_argument("--peer", action="store_true",
                    help="time PyTorch eager and torch.compile too, in the same process (INT8 against FP16)")
    ab.add_argument("--layerwise", type=int, default=0, metavar="N",
                    help="compare every layer output of B, C, ... with A's on N images (where they part)")
    ab.add_argument("--profile", action="store_true",
                    help="every engine's per-layer device times at every batch, files under --out")
    ab.add_argument("--trace", action="store_true",
                    help="every engine's GPU kernels (torch.profiler, CUDA-graph replay) at every batch, "
                         "files under --out")
    ab.add_argument("--out", default=os.path.join(HERE, "results", "ab"))
    sub.add_parser("list", help="the suites")
    sub.add_parser("layers", help="one per-layer kernel measurement (layers --help)")
    rep = sub.add_parser("report", help="RESULTS.md tables from the results files")
    rep.add_argument("--results", default=os.path.join(HERE, "results"))
    rep.add_argument("--write", action="store_true", help="replace the generated part of RESULTS.md")
    rep.add_argument("--layers", metavar="FILE",
                     help="per-layer times of a `run --profile` file: each batch against the largest")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for s in SUITES.values():
            print(f"{s.name:13s} {s.what}; batches {list(s.batches)}, precisions {list(s.precisions)}")
        return 0
    return {"run": cmd_run, "ab": cmd_ab, "report": cmd_report}[args.cmd](args)


def configure_logging():
    """The runner's own lines at INFO, the libraries' at WARNING: for the command line
    only (set process-wide, so never from main(), which tests call in-process)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("engine", "kernels", "torch", "cudnn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    configure_logging()
    sys.exit(main())
