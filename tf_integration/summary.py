"""Text rendering of a conversion report (the JSON report is the same dict)."""
import collections


def _shape(s):
    return "?" if s is None else "(" + ", ".join(str(d) for d in s) + ")"


def format_summary(report, runtime=None):
    """The conversion report as text; ``runtime`` (engine_node.runtime_stats of the
    converted graph) adds what the engines did at run time so far."""
    p = report["parameters"]
    lines = ["cupyrt conversion summary",
             f"  precision {p['precision_mode']}, "
             f"{'dynamic' if p['is_dynamic_op'] else 'static'} engines, "
             f"minimum_segment_size {p['minimum_segment_size']}, "
             f"maximum_cached_engines {p['maximum_cached_engines']}",
             f"  compute nodes converted: {report['converted_compute_nodes']} of "
             f"{report['compute_nodes']} ({100 * report['converted_share']:.1f}%) "
             f"in {len(report['engines'])} engine(s); "
             f"{report['constants_folded']} constant expressions folded; "
             f"{report['conversion_seconds']:.2f} s"]
    for e in report["engines"]:
        lines.append(f"  engine {e['name']}: {e['nodes']} nodes ({e['compute_nodes']} compute), "
                     f"precision {e['precision']}, {'static plan' if e['static'] else 'built per input shape'}")
        for kind in ("inputs", "outputs"):
            for t in e[kind]:
                lines.append(f"    {kind[:-1]:6} {t['name']} {t['dtype']} {_shape(t['shape'])}")
        lines.append("    ops: " + ", ".join(f"{op} {n}" for op, n in e["ops"].items()))
        if "layers" in e:
            lines.append("    engine layers: " + ", ".join(f"{k} {v}" for k, v in e["layers"].items()))
        if e.get("fp16_range"):
            lines.append(fp16_range_line(e["fp16_range"], e["static"]))
    left = report["left_to_tensorflow"]
    interesting = {n: r for n, r in left.items() if r["kind"] != "not a compute node"}
    lines.append(f"  nodes left to TensorFlow: {len(interesting)} "
                 f"(+{len(left) - len(interesting)} constants/inputs/NoOps)")
    lines.extend(_left_lines(interesting))
    if not report["engines"]:
        lines.append("  nothing was converted: see the reasons above")
    if runtime and any(st["imports"] or st["inlined"] for st in runtime.values()):
        lines.extend(format_runtime(runtime))
    return "\n".join(lines)


def fp16_range_line(findings, static=True):
    """One line: the layers of an engine out of FP16's range on the sample inputs, why,
    and whether they were kept in FP32 (engine/precision_range.py makes the findings)."""
    why = []
    for f in findings:
        if "producer" in f:
            why.append(f"{f['layer']} (reads {f['producer']})")
        else:
            why.append(f"{f['layer']} ({f['kind']}, max |x| {f['max_abs']:.3g}, "
                       f"{100 * f['share_below_2^-24']:.0f}% below 2^-24)")
    if all(f.get("kept_fp32") for f in findings):
        # a dynamic engine's per-shape builds at run time have no samples to check
        action = ("kept in FP32" if static else "kept in FP32 in the engines built with "
                  "samples (per-shape builds at run time are not checked)")
    else:
        action = "still FP16 (fp16_range_fallback=True keeps them in FP32)"
    return f"    FP16 range: {len(findings)} layer(s) out of range on the samples: " + (
        ", ".join(why) + f"; {action}")


def _left_lines(left):
    """Lines for the nodes left to TensorFlow (``left``: report entries by name).

    A loop frame left to TensorFlow is one line (frame, node count, ops, reasons):
    a single Keras LSTM loop is ~90 nodes, listed one by one they would bury the
    rest. Control-flow nodes outside loops are grouped by reason. Other nodes
    get a line each, grouped by kind. The JSON report still has every node."""
    frames = collections.defaultdict(list)
    by_kind = collections.defaultdict(list)
    for n, r in left.items():
        if r.get("frame"):
            frames[r["frame"]].append((n, r))
        else:
            by_kind[r["kind"]].append((n, r))
    lines = []
    if frames:
        total = sum(len(items) for items in frames.values())
        lines.append(f"    control flow (lowered loops: {total} nodes in {len(frames)} "
                     "frame(s), one line each):")
        for frame, items in frames.items():
            ops = collections.Counter(r["op"] for _, r in items)
            reasons = collections.Counter(_loop_reason(r, frame) for _, r in items)
            lines.append(f"      frame {frame!r}: {len(items)} nodes ("
                         + ", ".join(f"{op} {k}" for op, k in ops.most_common(4))
                         + (", ..." if len(ops) > 4 else "") + ") - "
                         + "; ".join(why + (f" ({k} node{'s' * (k > 1)})"
                                            if len(reasons) > 1 else "")
                                     for why, k in reasons.most_common()))
    for kind, items in by_kind.items():
        lines.append(f"    {kind} ({len(items)}):")
        if kind == "control flow":
            grouped = collections.defaultdict(list)
            for n, r in items:
                grouped[r["detail"]].append(f"{n} ({r['op']})")
            for detail, names in grouped.items():
                if len(names) == 1:
                    lines.append(f"      {names[0]} - {detail}")
                    continue
                shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more"
                                                if len(names) > 3 else "")
                lines.append(f"      {len(names)} nodes - {detail}: {shown}")
            continue
        for n, r in items:
            detail = f" - {r['detail']}" if r["detail"] else ""
            lines.append(f"      {n} ({r['op']}){detail}")
    return lines


def _loop_reason(entry, frame):
    """A node's reason as said for its whole frame: the segmenter's per-op control
    flow details ("Enter of loop frame 'f'", "inside while-loop frame 'f'") become
    one phrase; any other reason is kept as it is."""
    detail = entry["detail"]
    if entry["kind"] == "control flow" and detail.endswith(f"frame {frame!r}"):
        return "a lowered while loop: stays in TensorFlow, no segment crosses its frame"
    return f"{entry['kind']}: {detail}" if detail else entry["kind"]


def format_runtime(runtime):
    """Lines for engine_node.runtime_stats: per engine node, where it ran and how
    often, and every fallback to TensorFlow with its reason."""
    lines = ["  at run time (this process):"]
    for name, st in runtime.items():
        if not st["imports"]:
            where = (f"inlined as its TensorFlow ops in {st['inlined']} import(s) (no CUDA "
                     "device; CUPYRT_BACKEND=numpy runs the engine)" if st["inlined"]
                     else "not imported yet")
            lines.append(f"    {name}: {where}")
            continue
        lines.append(f"    {name}: {st['engine_runs']} engine run(s), {st['native_runs']} "
                     f"TensorFlow run(s), {st['engines_built']} engine(s) built per shape; "
                     f"backend {', '.join(st['modes'])}")
        if st["inlined"]:        # other imports of the same node found no CUDA device
            lines.append(f"      also inlined as its TensorFlow ops in {st['inlined']} import(s) "
                         "(no CUDA device)")
        for reason, n in sorted(st["fallbacks"].items()):
            lines.append(f"      fallback: {reason}: {n} call(s)")
    return lines
