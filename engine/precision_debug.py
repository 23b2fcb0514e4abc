"""Per-layer INT8 precision debugging (Polygraphy's layerwise comparison): build a
network's INT8 engine on the NumPy backend, rank its INT8 layers by the error each
adds, and keep the worst ones out of INT8 until an accuracy budget is met.

A tool above the builder and the runtime (it builds and runs engines); nothing in
the engine imports it.
"""
import logging

from kernels import quantize as Q

from .builder import Builder
from .calibration import CalibrationAlgoType, Calibrator, forward, write_cache
from .errors import BuildError
from .int8_exec import run_int8_layer
from .metrics import max_abs, rel_l2
from .quantization import all_tensors
from .runtime import Runtime
from .types import BuilderFlag, DataType

log = logging.getLogger(__name__)


class PrecisionReport:
    """What ``debug_precision`` found: per INT8 layer, the error it adds given
    exact FP32 inputs; the end-to-end error of the outputs; the ranges used."""

    def __init__(self, rows, output_error, ranges, feeds, metric):
        self.rows = rows                  # [(layer name, type, error)], worst first
        self.output_error = output_error  # {output name: error of the INT8 engine}
        self.ranges = ranges              # {tensor name: amax}
        self.feeds, self.metric = feeds, metric

    @property
    def max_output_error(self):
        return max(self.output_error.values()) if self.output_error else 0.0

    def worst(self, n=None):
        return [r[0] for r in self.rows[:n]]

    def table(self):
        w = max([len("layer")] + [len(r[0]) for r in self.rows])
        lines = [f"{'layer':{w}s}  {'type':16s}  {self.metric:>10s}"]
        lines += [f"{name:{w}s}  {lt:16s}  {err:10.3e}" for name, lt, err in self.rows]
        lines.append("outputs: " + ", ".join(f"{k} {v:.3e}" for k, v in self.output_error.items()))
        return "\n".join(lines)

    __str__ = table


def _metric(name):
    metrics = {"rel_l2": rel_l2, "max_abs": max_abs}
    if name not in metrics:
        raise BuildError(f"metric {name!r}; valid: {', '.join(metrics)}")
    return metrics[name]


def _build_int8(network, calibrator, fp16=False):
    b = Builder()
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    cfg.set_flag(BuilderFlag.INT8)
    cfg.set_flag(BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if fp16:
        cfg.set_flag(BuilderFlag.FP16)
    cfg.int8_calibrator = calibrator
    return Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(network, cfg))


def _ranges_calibrator(ranges):
    """Fixed ranges {tensor: amax} as a calibrator holding only a cache, so the
    builder skips calibration."""
    cache = write_cache({n: float(Q.scale_from_amax(a)) for n, a in ranges.items()},
                        CalibrationAlgoType.MINMAX_CALIBRATION)
    cal = Calibrator()
    cal.algorithm = CalibrationAlgoType.MINMAX_CALIBRATION
    cal.read_calibration_cache = lambda: cache
    return cal


def debug_precision(network, calibrator, feeds, metric="rel_l2", fp16=False):
    """Run ``network`` in FP32 and INT8 side by side on ``feeds`` and rank the
    INT8 layers by the error each adds (Polygraphy's layerwise comparison).

    ``calibrator``: an engine Calibrator, or a dict {tensor name: amax or (lo, hi)}.
    Each INT8 layer runs on the FP32 run's inputs, so its error is its own.
    """
    fn = _metric(metric)
    if isinstance(calibrator, dict):
        calibrator = _ranges_calibrator({n: max(abs(v[0]), abs(v[1])) if isinstance(v, (tuple, list))
                                        else abs(float(v)) for n, v in calibrator.items()})
    elif not isinstance(calibrator, Calibrator):
        raise BuildError(f"debug_precision takes a Calibrator or a dict of ranges; got "
                         f"{type(calibrator).__name__}")
    engine = _build_int8(network, calibrator, fp16)
    net = engine.network
    ref = {}
    forward(net, feeds, lambda t, v: ref.__setitem__(t.name, v))
    rows = []
    for layer in net._layers:
        if engine._precision[layer.name] != DataType.INT8:
            continue
        ins = [None if t is None else ref[t.name] for t in layer._inputs]
        got = run_int8_layer(layer, ins, [DataType.FLOAT] * len(layer._outputs))
        err = max(fn(g, ref[t.name]) for g, t in zip(got, layer._outputs))
        rows.append((layer.name, layer.layer_type.name, err))
    rows.sort(key=lambda r: -r[2])
    outs = engine.create_execution_context().execute(feeds)
    out_err = {n: fn(v, ref[n]) for n, v in outs.items()}
    ranges = {t.name: max(abs(t.dynamic_range[0]), abs(t.dynamic_range[1]))
              for t in all_tensors(net) if t.dynamic_range is not None}
    return PrecisionReport(rows, out_err, ranges, feeds, metric)


def precision_table(report):
    """The printable per-layer table of a PrecisionReport (for the CLI)."""
    return report.table()


def keep_worst_in_fp16(network, report, budget, fp16=True):
    """Mark the worst INT8 layers of ``network`` HALF (FLOAT with ``fp16=False``)
    one at a time, worst first, until the INT8 engine's largest output error is
    at most ``budget``. Build with OBEY_PRECISION_CONSTRAINTS for the marks to
    hold. Returns (names kept out of INT8, the final report)."""
    if not budget > 0:
        raise BuildError(f"accuracy budget {budget}; expected a positive error bound")
    kept = []
    by_name = {layer.name: layer for layer in network._layers}
    while report.max_output_error > budget:
        todo = [n for n in report.worst() if n not in kept]
        if not todo:
            log.warning("accuracy budget %g not met with every layer out of INT8 (error %g)",
                        budget, report.max_output_error)
            break
        name = todo[0]
        kept.append(name)
        layer = by_name.get(name)
        if layer is None:
            log.info("layer '%s' of the optimised network has no namesake in the network; "
                     "it cannot be constrained", name)
            continue
        layer.precision = DataType.HALF if fp16 else DataType.FLOAT
        report = debug_precision(network, report.ranges, report.feeds, report.metric, fp16)
    return kept, report
