"""Differential fuzzing of the converter against TensorFlow.

    CUPYRT_BACKEND=numpy python -m tf_integration.fuzz --graphs 200 --seed 0
    CUPYRT_BACKEND=numpy python -m tf_integration.fuzz --long          # 5,000 graphs
    CUPYRT_BACKEND=numpy python -m tf_integration.fuzz --only 1234     # one graph, shown

Graph ``seed`` is built by ``generate(seed)`` from the ops the registry converts
(fuzz_ops.py: one small builder per op family, attributes drawn across their valid
ranges, shapes with size-1 and broadcast dims, constants on either side, branches
and joins), plus ops no converter takes and loops. ``check(seed)`` converts it
with a random precision, dynamic/static engines and minimum segment size, runs
both graphs in TensorFlow sessions and classifies the outcome:

- ``converted``: at least one engine, every output within tolerance (FP32 rel. L2
  <= 1e-4, FP16 <= 2e-2; integer outputs exact), every node left to TensorFlow
  listed with its reason;
- ``refused``: no engine, every compute node listed with its reason;
- ``tf_rejects``: TensorFlow cannot run the graph itself (no oracle; not counted);
- ``mismatch`` / ``crash`` / ``fallback`` (an engine that ran its TF segment
  instead) / ``no_reason`` (a node left to TF without a reason): failures; the
  result carries the seed and the graph's listing.

FP16 is only asked of graphs whose every intermediate value FP16 can hold
(|x| <= 1e4): a graph that leaves that range is converted in FP32 instead.
"""
import argparse
import collections
import contextlib
import dataclasses
import logging
import sys
import time
import traceback
import warnings

import numpy as np
import tensorflow as tf

from .fuzz_ops import Builder, control_flow_version
from .graph_converter import TrtGraphConverter
from .engine_node import ENGINE_OP, EngineFallbackWarning, import_graph_def
from .graph_utils import NON_COMPUTE_OPS

logger = logging.getLogger(__name__)

TOLERANCE = {"FP32": 1e-4, "FP16": 2e-2}
FP16_SAFE_MAX = 1e4          # |x| above this in any intermediate: FP16 not asked
LONG_GRAPHS = 5000
FAILURES = ("mismatch", "crash", "fallback", "no_reason")


@dataclasses.dataclass
class FuzzGraph:
    """A generated graph: the GraphDef, its feeds and fetches, and its settings."""
    seed: int
    graph_def: object
    feeds: dict
    outputs: list
    deny: list
    precision: str
    dynamic: bool
    minimum_segment_size: int
    max_batch_size: int
    ops: list                 # the generator's steps, for the listing

    def listing(self):
        lines = [f"seed {self.seed}: precision {self.precision}, dynamic {self.dynamic}, "
                 f"minimum_segment_size {self.minimum_segment_size}, max_batch_size "
                 f"{self.max_batch_size}, outputs {self.outputs}, "
                 f"denylist {self.deny}",
                 "feeds: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.feeds.items()),
                 "steps: " + "; ".join(self.ops)]
        for node in self.graph_def.node:
            if node.op == "Const":
                continue
            attrs = {k: _attr_text(v) for k, v in sorted(node.attr.items())
                     if k not in ("T", "_output_shapes", "dtype") and _attr_text(v)}
            lines.append(f"  {node.name} = {node.op}({', '.join(node.input)})"
                         + (f" {attrs}" if attrs else ""))
        return "\n".join(lines)


@dataclasses.dataclass
class FuzzResult:
    seed: int
    status: str
    precision: str = ""
    engines: int = 0
    converted_nodes: int = 0
    refused_nodes: int = 0
    error: float = 0.0
    detail: str = ""
    listing: str = ""

    @property
    def failed(self):
        return self.status in FAILURES

    def __str__(self):
        text = (f"seed {self.seed}: {self.status} ({self.precision}, {self.engines} engine(s), "
                f"{self.converted_nodes} node(s) converted, {self.refused_nodes} refused, "
                f"error {self.error:.3g})")
        if self.failed:
            text += f"\n{self.detail}\n{self.listing}"
        return text


def _attr_text(value):
    kind = value.WhichOneof("value")
    if kind in ("i", "f", "b", "s"):
        v = getattr(value, kind)
        return v.decode() if isinstance(v, bytes) else v
    if kind == "list" and (value.list.i or value.list.f):
        return list(value.list.i) or list(value.list.f)
    return None


def rel_l2(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))


# ------------------------------------------------------------------ generation
def generate(seed, max_ops=8):
    """Graph number ``seed``: the same seed always gives the same graph and settings."""
    rng = np.random.default_rng(seed)
    precision = "FP16" if rng.random() < 0.35 else "FP32"
    dynamic = bool(rng.random() < 0.6)
    min_seg = int(rng.choice([1, 1, 2, 3]))
    g = tf.Graph()
    with g.as_default(), control_flow_version(rng):
        builder = Builder(rng, exact=precision == "FP32", dynamic=dynamic)
        builder.add_inputs()
        for _ in range(int(rng.integers(2, max_ops + 1))):
            builder.step()
        outs = builder.pick_outputs()
        outputs, deny = [], []
        for i, t in enumerate(outs):
            out = tf.identity(t, name=f"out{i}")
            outputs.append(out.name)
            if rng.random() < 0.5:
                deny.append(out.op.name)
    # static engines are built for batches up to max_batch_size: the fed batch, or more
    # (and the leading dim of tensors inside: a pad or tile on dim 0 makes it larger;
    # TF-TRT's static engines treat dim 0 as the batch too)
    max_batch = max(s[0] for _, s in builder.pool if s) * int(rng.choice([1, 1, 2]))
    return FuzzGraph(seed, g.as_graph_def(), builder.feeds, outputs, deny, precision, dynamic,
                     min_seg, max_batch, builder.steps)


def _run(graph_def, fetches, feeds, converted):
    g = tf.Graph()
    with g.as_default():
        (import_graph_def if converted else tf.compat.v1.import_graph_def)(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run(fetches, feeds)


def _intermediate_max(graph_def, feeds):
    """Largest |value| of any float tensor in the graph (for the FP16 range rule)."""
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
        fetches = [t for op in g.get_operations() if op.type not in ("Const",)
                   and not op.type.startswith(("Enter", "Exit", "Merge", "Switch", "Next",
                                               "LoopCond", "While"))
                   for t in op.outputs[:1] if t.dtype in (tf.float32, tf.float16)]
        with tf.compat.v1.Session(graph=g) as sess:
            try:
                values = sess.run(fetches, feeds)
            except tf.errors.OpError:      # e.g. an output Grappler removed: ask FP32 only
                return float("inf")
    return max((float(np.max(np.abs(v))) for v in values if np.size(v)), default=0.0)


# ------------------------------------------------------------------ checking
def check(seed, max_ops=8):
    """Generate, convert, run and compare graph ``seed``; never raises."""
    try:
        fg = generate(seed, max_ops)
    except Exception:          # noqa: BLE001 - a builder bug: reported with its seed
        return FuzzResult(seed, "crash", detail="generator: " + traceback.format_exc(limit=4))
    result = FuzzResult(seed, "crash", fg.precision)
    try:
        ref = _run(fg.graph_def, fg.outputs, fg.feeds, converted=False)
    except tf.errors.OpError as exc:
        # TensorFlow cannot run the graph itself (e.g. Softmax above rank 5): no oracle
        result.status, result.detail = "tf_rejects", str(exc).splitlines()[0]
        return result
    try:
        if fg.precision == "FP16" and _intermediate_max(fg.graph_def, fg.feeds) > FP16_SAFE_MAX:
            fg.precision = result.precision = "FP32"
        conv = TrtGraphConverter(input_graph_def=fg.graph_def, nodes_denylist=fg.deny,
                                 precision_mode=fg.precision, is_dynamic_op=fg.dynamic,
                                 minimum_segment_size=fg.minimum_segment_size,
                                 max_batch_size=fg.max_batch_size)
        converted = conv.convert()
        report = conv.report
        result.engines = len(report["engines"])
        result.converted_nodes = report["converted_compute_nodes"]
        left = report["left_to_tensorflow"]
        result.refused_nodes = sum(1 for r in left.values() if r["kind"] != "not a compute node")
        unexplained = [n.name for n in converted.node
                       if n.op not in NON_COMPUTE_OPS and n.op != ENGINE_OP
                       and not (n.name in left and left[n.name]["kind"] and left[n.name]["detail"])
                       and n.name not in fg.deny]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EngineFallbackWarning)
            got = _run(converted, fg.outputs, fg.feeds, converted=True)
        fallbacks = [str(w.message) for w in caught if w.category is EngineFallbackWarning]
        fallbacks = [f for f in fallbacks if "exceeds max_batch_size" not in f] or fallbacks
        if fallbacks and all("exceeds max_batch_size" in f for f in fallbacks):
            # TF-TRT's documented behaviour for a static engine: dim 0 above
            # max_batch_size runs the TF segment, said and counted in summary()
            result.detail = "\n".join(fallbacks)
        elif fallbacks:
            result.status, result.detail = "fallback", "\n".join(fallbacks)
            return _with_listing(result, fg)
        for name, r, o in zip(fg.outputs, ref, got):
            r, o = np.asarray(r), np.asarray(o)
            if r.shape != o.shape or r.dtype != o.dtype:
                result.status = "mismatch"
                result.detail = (f"output {name}: shape/dtype {o.shape} {o.dtype}, TensorFlow "
                                 f"gives {r.shape} {r.dtype}")
                return _with_listing(result, fg)
            if r.dtype.kind == "f":
                err = rel_l2(o, r)
                result.error = max(result.error, err)
                if not err <= TOLERANCE[fg.precision]:
                    result.status = "mismatch"
                    result.detail = (f"output {name}: rel. L2 error {err:.3g} > "
                                     f"{TOLERANCE[fg.precision]} ({fg.precision})")
                    return _with_listing(result, fg)
            elif not np.array_equal(o, r):
                result.status = "mismatch"
                result.detail = (f"output {name}: {int(np.sum(o != r))} of {r.size} values "
                                 "differ from TensorFlow's")
                return _with_listing(result, fg)
        if unexplained:
            result.status = "no_reason"
            result.detail = f"left to TensorFlow without a reason: {unexplained}"
            return _with_listing(result, fg)
        result.status = "converted" if result.engines else "refused"
        return result
    except Exception:          # noqa: BLE001 - a crash is a finding, reported with its seed
        result.status, result.detail = "crash", traceback.format_exc(limit=8)
        return _with_listing(result, fg)


def _with_listing(result, fg):
    result.listing = fg.listing()
    return result


def run(graphs, seed=0, max_ops=8, progress=None):
    """Check graphs ``seed .. seed+graphs-1``; returns (counts, failures)."""
    counts, failures = collections.Counter(), []
    for i in range(graphs):
        res = check(seed + i, max_ops)
        counts[res.status] += 1
        counts["engines"] += res.engines
        counts["converted_nodes"] += res.converted_nodes
        counts["refused_nodes"] += res.refused_nodes
        if res.failed:
            failures.append(res)
            logger.error("%s", res)
        if progress and (i + 1) % progress == 0:
            logger.info("%d/%d graphs: %s", i + 1, graphs, dict(counts))
    return counts, failures


@contextlib.contextmanager
def _quiet_tensorflow():
    """Engine fallbacks and converter warnings are findings, not log noise here."""
    loggers = [logging.getLogger(n) for n in ("tf_integration", "engine", "tensorflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tf_integration.fuzz",
                                     description="differential fuzzing against TensorFlow")
    parser.add_argument("--graphs", type=int, default=None,
                        help="how many graphs (default 100, or 5000 with --long)")
    parser.add_argument("--seed", type=int, default=0, help="the first graph's seed")
    parser.add_argument("--long", action="store_true", help=f"{LONG_GRAPHS} graphs")
    parser.add_argument("--max-ops", type=int, default=8, help="generator steps per graph")
    parser.add_argument("--only", type=int, default=None,
                        help="check one graph and print its listing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with _quiet_tensorflow():
        if args.only is not None:
            res = check(args.only, args.max_ops)
            print(res)
            print(generate(args.only, args.max_ops).listing())
            return 1 if res.failed else 0
        graphs = args.graphs or (LONG_GRAPHS if args.long else 100)
        t0 = time.perf_counter()
        counts, failures = run(graphs, args.seed, args.max_ops, progress=100)
    seconds = time.perf_counter() - t0
    print(f"{graphs} graphs (seeds {args.seed}..{args.seed + graphs - 1}) in {seconds:.0f} s: "
          + ", ".join(f"{k} {counts[k]}" for k in ("converted", "refused", "tf_rejects")
                      + FAILURES)
          + f"; nodes converted {counts['converted_nodes']}, refused with a reason "
          f"{counts['refused_nodes']}, engines {counts['engines']}")
    for res in failures:
        print(res)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
