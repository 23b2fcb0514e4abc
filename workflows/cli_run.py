"""``cupyrt run`` and ``cupyrt bench``: any model kind, inputs from an .npz.

    cupyrt run model_opt.pb --inputs x.npz [-o out.npz] [--outputs probs]
    cupyrt bench model_opt.pb --inputs x.npz [--iterations 50] [--warmup 5] [--batch 8]
                 [--compare [ORIGINAL]] [--profile] [--json]

Latency is wall time per call as the user would see it (inputs on the host,
outputs back on the host), so the figures compare with the original TensorFlow
model timed the same way (--compare).
"""
import json
import sys
import time

import numpy as np

from engine.runtime import Profiler

from .cli import CliError, _names
from .cli_models import match_feeds, open_model, read_npz


def _feeds(model, args, arrays):
    return match_feeds(arrays, model.inputs, args.inputs)


def _select(outputs, wanted, model):
    if not wanted or model.kind != "plan":       # TF models fetch only what was asked
        return outputs
    bad = [w for w in wanted if w not in outputs]
    if bad:
        raise CliError("--outputs", f"{bad} not outputs of {model.path}",
                       f"some of {sorted(outputs)}")
    return {w: outputs[w] for w in wanted}


def run_command(args, out=None):
    out = out or sys.stdout
    arrays = read_npz(args.inputs)          # a wrong --inputs fails before any model loads
    model = open_model(args.model, args)
    outputs = _select(model.run(_feeds(model, args, arrays)), _names(args.outputs), model)
    lines = [f"{model.describe()}: {len(outputs)} output(s)"]
    for name, value in outputs.items():
        value = np.asarray(value)
        flat = value.reshape(-1)[:max(args.show, 0)]
        more = " ..." if value.size > len(flat) else ""
        lines.append(f"  {name}: shape {list(value.shape)} {value.dtype}: "
                     f"{np.array2string(flat, precision=5, separator=', ')}{more}")
    if args.output:
        # np.savez keys cannot hold ':' portably on every platform's zip tools; keep
        # TF's tensor names readable by dropping a ':0' port only
        np.savez(args.output, **{k[:-2] if k.endswith(":0") else k: np.asarray(v)
                                 for k, v in outputs.items()})
        lines.append(f"wrote {args.output}")
    out.write("\n".join(lines) + "\n")
    return 0


def batch_of(feeds, batch):
    """The first ``batch`` samples of every input, repeated when fewer are given."""
    if batch is None:
        return feeds
    out = {}
    for k, v in feeds.items():
        if v.ndim == 0:
            raise CliError("--batch", f"input {k!r} is a scalar", "inputs with a batch dim")
        reps = -(-batch // len(v))
        out[k] = np.concatenate([v] * reps)[:batch] if reps > 1 else v[:batch]
    return out


def latency_stats(seconds, batch):
    """min / median / p90 / p99 / mean in ms, and throughput in samples/s at the median."""
    ms = np.sort(np.asarray(seconds, np.float64)) * 1e3
    med = float(np.median(ms))
    return {"iterations": len(ms), "min_ms": float(ms[0]), "median_ms": med,
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "max_ms": float(ms[-1]), "batch": batch,
            "throughput_per_s": batch * 1e3 / med if med > 0 else float("inf")}


def time_model(model, feeds, iterations, warmup):
    for _ in range(warmup):
        model.run(feeds)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        model.run(feeds)
        times.append(time.perf_counter() - t0)
    return times


def _stats_line(label, st):
    return (f"{label}: min {st['min_ms']:.3f} ms, median {st['median_ms']:.3f} ms, "
            f"p90 {st['p90_ms']:.3f} ms, p99 {st['p99_ms']:.3f} ms; "
            f"{st['throughput_per_s']:.1f} samples/s (batch {st['batch']}, "
            f"{st['iterations']} runs)")


def profile_table(times_by_layer, runs):
    """Rows: engine, layer (full name), ms per run, share of the engine's time."""
    rows = []
    for engine, layers in times_by_layer.items():
        total = sum(layers.values()) or 1.0
        for layer, ms in sorted(layers.items(), key=lambda kv: -kv[1]):
            rows.append({"engine": engine, "layer": layer, "ms": ms / runs,
                         "percent": 100 * ms / total})
    return rows


def _format_profile(rows):
    if not rows:
        return []
    width = max(len(r["layer"]) for r in rows)
    ew = max(len(r["engine"]) for r in rows)
    lines = [f"  {'engine':{ew}s}  {'layer':{width}s}  {'ms/run':>10s}  {'%':>6s}"]
    lines += [f"  {r['engine']:{ew}s}  {r['layer']:{width}s}  {r['ms']:10.4f}  "
              f"{r['percent']:6.1f}" for r in rows]
    return lines


def _profile(model, feeds, runs):
    """Per-layer times of every engine this model ran: the engines' own profiler."""
    contexts = model.profiled_contexts()
    if not contexts:
        raise CliError("--profile", f"no engine ran on an engine backend for {model.path} "
                       f"(engines on {getattr(model, 'mode', 'tensorflow')})",
                       "a converted model with engines on cupy or numpy (--backend numpy, or "
                       "a CUDA host)")
    profilers = [(name, ctx, Profiler()) for name, ctx in contexts]
    for _, ctx, prof in profilers:
        ctx.profiler = prof
    try:
        for _ in range(runs):
            model.run(feeds)
    finally:
        for _, ctx, _ in profilers:
            ctx.profiler = None
    merged = {}
    for name, _, prof in profilers:
        layers = merged.setdefault(name, {})
        for layer, ms in prof.times.items():
            layers[layer] = layers.get(layer, 0.0) + ms
    return profile_table(merged, runs)


def bench_command(args, out=None):
    out = out or sys.stdout
    if args.warmup < 0:
        raise CliError("--warmup", args.warmup, "an integer >= 0")
    arrays = read_npz(args.inputs)
    model = open_model(args.model, args)
    feeds = batch_of(_feeds(model, args, arrays), args.batch)
    batch = len(next(iter(feeds.values()))) if feeds and next(iter(feeds.values())).ndim else 1
    result = {"model": args.model, "description": model.describe(),
              "latency": latency_stats(time_model(model, feeds, args.iterations,
                                                  max(args.warmup, 1)), batch)}
    if args.compare:
        if model.kind in ("plan", "network"):
            raise CliError("--compare", f"{args.model} is a {model.kind} (no TensorFlow graph)",
                           "a converted .pb or SavedModel (or --compare ORIGINAL with one)")
        if args.compare == "original":
            if model.kind == "savedmodel":
                raise CliError("--compare", "no ORIGINAL given for a SavedModel",
                               "--compare ORIGINAL_SAVEDMODEL_DIR (the model before conversion)")
            original = model.original()
        else:
            class _As:                 # the original runs as TensorFlow built it
                backend, precision, signature = "tensorflow", "FP32", args.signature
                outputs = args.outputs
            original = open_model(args.compare, _As, option="--compare")
        ref = time_model(original, feeds, args.iterations, max(args.warmup, 1))
        result["original"] = {"description": original.describe(),
                              "latency": latency_stats(ref, batch)}
        result["speedup_median"] = (result["original"]["latency"]["median_ms"]
                                    / result["latency"]["median_ms"])
    if args.profile:
        result["profile"] = _profile(model, feeds, args.iterations)
    if args.json:
        out.write(json.dumps(result, indent=1) + "\n")
        return 0
    lines = [result["description"], _stats_line("cupyrt", result["latency"])]
    if "original" in result:
        lines += [result["original"]["description"],
                  _stats_line("TensorFlow", result["original"]["latency"]),
                  f"speed-up (median): {result['speedup_median']:.2f}x"]
    if "profile" in result:
        lines.append(f"per-layer profile ({args.iterations} runs):")
        lines += _format_profile(result["profile"])
    out.write("\n".join(lines) + "\n")
    return 0
