"""``cupyrt inspect`` (plans, networks, converted .pb and SavedModels) and
``cupyrt debug-precision``.

Every view says what it shows: a plan is the optimised network as built (after
the builder's passes, with each layer's precision and chosen kernel); a
network is the layer list as defined or converted, before any pass, unless
--built asks for it after the passes. Names are never cut.
"""
import json
import sys

import numpy as np

import engine as rt
from engine.atomic_file import write_bytes
from engine.precision_debug import debug_precision, keep_worst_in_fp16

from .cli import CliError
from .cli_models import detect_kind, read_npz


def _array_bytes(attributes):
    total = 0
    for value in attributes.values():
        if isinstance(value, dict) and "array" in value and "dtype" in value:
            count = int(np.prod(value["array"], dtype=np.int64))
            total += count * np.dtype(value["dtype"]).itemsize
    return total


def describe_plan(data, view="plan: the optimised network as built (after the builder's passes)"):
    eng = rt.Runtime(backend="numpy").deserialize_cuda_engine(data)
    info = json.loads(eng.create_engine_inspector().get_engine_information())
    meta = eng.meta
    layers = [dict(li, weight_bytes=_array_bytes(li["attributes"])) for li in info["layers"]]
    for li in layers:
        del li["attributes"]
    return {"view": view, "layers": layers, "inputs": info["inputs"], "outputs": info["outputs"],
            "flags": meta.get("flags", []), "source_layers": meta.get("source_layers"),
            "pass_stats": meta.get("pass_stats", {}),
            "int8_layers": meta.get("int8_layers", []),
            # where a CUDA-graph replay on the CuPy backend may run layers beside the main stream
            "side_branches": {"layers": info["side_branches"],
                              "max_aux_streams": meta.get("max_aux_streams", "-1 (the aux_streams switch)")},
            "memory": {"activation_bytes_dynamic_dims_1": info["device_memory_size"],
                       "weight_bytes": sum(li["weight_bytes"] for li in layers),
                       "plan_bytes": len(data)},
            "kernels_chosen_on": "a CUDA device at build time" if meta.get("tactic_ms") or any(
                not k.startswith("numpy") for k in meta.get("kernels", {}).values())
            else "first use on the device (built without one: NumPy reference here)"}


def describe_network(data, view="network as defined (before the builder's passes; --built "
                                "shows it after them)"):

    net = rt.deserialize_network(data)
    layers = []
    for layer in net:
        attrs = {}
        for key, value in layer.attr_values().items():
            if isinstance(value, np.ndarray):
                attrs[key] = {"array": list(value.shape), "dtype": value.dtype.name}
        layers.append({"name": layer.name, "type": layer.layer_type.name,
                       "precision": layer.precision.name if layer.precision_is_set else "(builder)",
                       "kernel": "(chosen by the builder)",
                       "inputs": [None if t is None else t.name for t in layer._inputs],
                       "outputs": [t.name for t in layer._outputs],
                       "weight_bytes": _array_bytes(attrs)})
    io = {kind: {t.name: list(t.shape) for t in ts} for kind, ts in
          (("inputs", [net.get_input(i) for i in range(net.num_inputs)]),
           ("outputs", [net.get_output(i) for i in range(net.num_outputs)]))}
    return {"view": view, "layers": layers, **io,
            "memory": {"weight_bytes": sum(li["weight_bytes"] for li in layers),
                       "network_bytes": len(data)}}


def _built_network(data, precision):
    if precision == "INT8":
        raise CliError("--precision with --built", "int8",
                       "fp32 or fp16 (an INT8 build needs calibration data: cupyrt "
                       "debug-precision)")
    builder = rt.Builder()
    config = builder.create_builder_config()
    config.backend = "numpy"            # the passes and precisions, no device timing
    if precision == "FP16":
        config.set_flag(rt.BuilderFlag.FP16)
    plan = builder.build_serialized_network(rt.deserialize_network(data), config)
    return describe_plan(plan, f"network after the builder's passes at {precision} (built "
                               "here; kernels are chosen on the device)")


def _engine_text(desc, indent="  "):
    lines = [f"{indent}view: {desc['view']}"]
    mem = desc["memory"]
    lines.append(indent + "memory: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                 for k, v in mem.items()))
    if desc.get("flags") is not None and "flags" in desc:
        lines.append(f"{indent}flags: {', '.join(desc['flags']) or 'none (FP32)'}; "
                     f"{desc.get('source_layers')} source layers -> {len(desc['layers'])}; "
                     f"kernels chosen on {desc['kernels_chosen_on']}")
    side = desc.get("side_branches")
    if side and side["layers"]:
        lines.append(f"{indent}side branches (an auxiliary stream in CUDA-graph replays; max_aux_streams "
                     f"{side['max_aux_streams']}): {', '.join(side['layers'])}")
    lines += [f"{indent}input  {n}: {s}" for n, s in desc["inputs"].items()]
    lines += [f"{indent}output {n}: {s}" for n, s in desc["outputs"].items()]
    rows = [(li["name"], li["type"], li["precision"], li["kernel"]) for li in desc["layers"]]
    widths = [max([len(h)] + [len(str(r[i])) for r in rows])
              for i, h in enumerate(("layer", "type", "precision", "kernel"))]
    fmt = indent + "  ".join(f"{{:{w}s}}" for w in widths)
    lines.append(fmt.format("layer", "type", "precision", "kernel").rstrip())
    lines += [fmt.format(*map(str, r)).rstrip() for r in rows]
    return lines


def inspect_file(path, built=False, precision="FP32"):
    """The inspect report of ``path`` as a dict (what --json prints)."""
    kind = detect_kind(path, "FILE")
    with_build = built
    if kind in ("plan", "network"):
        with open(path, "rb") as f:
            data = f.read()
        if kind == "plan":
            desc = describe_plan(data)
        elif with_build:
            desc = _built_network(data, precision)
        else:
            desc = describe_network(data)
        return {"file": path, "kind": kind, "engines": [dict(desc, name=path)]}
    # TensorFlow only for a .pb or a SavedModel: plan files run on hosts without it
    from .cli import import_tensorflow
    import_tensorflow()
    from tf_integration import cli_models  # (TensorFlow: as above)
    entries, totals = cli_models.engine_entries(path, kind, built=built)
    engines = []
    for e in entries:
        described = []
        for what, view, data in e.pop("engines"):
            described.append(describe_plan(data, view) if what == "plan"
                             else describe_network(data, view))
        engines.append(dict(e, engines=described))
    return {"file": path, "kind": kind, **totals, "engine_nodes": engines}


def inspect_command(args, out=None):
    out = out or sys.stdout
    report = inspect_file(args.file, args.built, args.precision)
    if args.json:
        out.write(json.dumps(report, indent=1) + "\n")
        return 0
    if report["kind"] in ("plan", "network"):
        desc = report["engines"][0]
        lines = [f"{report['kind']} {args.file}: {len(desc['layers'])} layers"]
        lines += _engine_text(desc)
    else:
        what = "converted .pb" if report["kind"] == "graphdef" else "SavedModel"
        lines = [f"{what} {args.file}: {len(report['engine_nodes'])} engine node(s)"
                 + (f", {report['tensorflow_nodes']} TensorFlow node(s)"
                    if "tensorflow_nodes" in report else "")]
        if not report["engine_nodes"]:
            lines.append("  no engine nodes: not converted by cupyrt (cupyrt convert makes them)")
        for e in report["engine_nodes"]:
            lines.append(f"engine node {e['name']}: precision {e['precision']}"
                         + (" (calibrated)" if e["calibrated"] else "")
                         + f", {'static plan' if e['static'] else 'built per input shape'}, "
                         f"{e['segment_nodes']} TensorFlow nodes in its segment")
            if e.get("note"):
                lines.append(f"  {e['note']}")
            for desc in e["engines"]:
                lines += _engine_text(desc, "  ")
    out.write("\n".join(lines) + "\n")
    return 0


def debug_precision_command(args, out=None):
    """Rank the layers of a network by the error INT8 adds, and optionally keep the
    worst ones in FP16 until an accuracy budget is met."""
    out = out or sys.stdout
    if detect_kind(args.network, "NETWORK") != "network":
        raise CliError(f"NETWORK {args.network!r}", "a plan (already built)",
                       "a network (engine.serialize_network, cupyrt export-engines)")
    with open(args.network, "rb") as f:
        net = rt.deserialize_network(f.read())
    calib = read_npz(args.calib_data, "--calib-data")
    evals = read_npz(args.eval_data, "--eval-data") if args.eval_data else calib
    n = len(next(iter(calib.values())))
    bs = args.batch_size
    batches = [{k: v[i:i + bs] for k, v in calib.items()} for i in range(0, n, bs)]
    algo = {"entropy": rt.EntropyCalibrator2, "minmax": rt.MinMaxCalibrator,
            "percentile": rt.PercentileCalibrator}[args.calibrator]
    report = debug_precision(net, algo(batches), evals, metric=args.metric, fp16=args.fp16)
    out.write(report.table() + "\n")
    if args.budget is not None:
        kept, final = keep_worst_in_fp16(net, report, args.budget, fp16=True)
        out.write(f"kept in FP16 to meet error <= {args.budget}: {kept or 'none'} "
                  f"(output error {final.max_output_error:.3g})\n")
        if args.output:
            write_bytes(args.output, rt.serialize_network(net))
            out.write(f"network with those precision marks written to {args.output}\n")
    return 0
