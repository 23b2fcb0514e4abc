"""INT8 in the engine: which layers run INT8, how INT8 tensors are stored, the
exact NumPy INT8 execution, and a per-layer precision debugger. (Not named
int8.py: ``engine.int8`` is the data type, as ``trt.int8`` is.)

Precision assignment (after the passes and calibration, ``assign_int8``):

* compute layers with an INT8 kernel -- CONVOLUTION and FULLY_CONNECTED (with
  their fused epilogue) and MAX pooling -- run INT8 when the ranges of their
  float inputs and outputs are known and no precision constraint (with
  OBEY/PREFER_PRECISION_CONSTRAINTS) asks for FLOAT/HALF;
* single-input data-movement layers (shuffle, flatten, squeeze, unsqueeze,
  identity) run INT8 between an INT8 producer and INT8 consumers, their
  output range set to their input's (the values are the same);
* max pooling's output range is set to its input's, so it is a pure max of
  int8 codes (TensorRT propagates scales through pooling the same way);
* everything else keeps what ``builder.assign_precisions`` gave (FP16 with the
  FP16 flag, else FP32).

Storage contract (``int8_tensors``): a FLOAT tensor is stored as int8 codes q
with its scale s = float32(max(|lo|, |hi|)) / 127 (kernels/quantize.py) iff
its producer runs INT8, every consumer runs INT8, it is not a network output
and its producer did not ``set_output_type`` it to another type. Any other
tensor is float. So: an INT8 layer takes float or int8 inputs (quantizing the
float ones at the input tensor's scale) and writes int8 or float outputs as
``out_dtypes`` say; non-INT8 layers never see int8 codes.

Explicit quantization: a graph that carries Q/DQ nodes (TF's
QuantizeAndDequantizeV2/V3, FakeQuantWithMinMaxVars) maps each to
``tensor.set_dynamic_range(lo, hi)`` on the tensor it quantizes; with the INT8
flag and no calibrator, the builder uses exactly those ranges.
"""
import logging

import numpy as np

from kernels import quantize as Q

from .errors import BuildError
from .kernel_table import numpy_kernel
from .types import BuilderFlag, DataType, LayerType, PoolingType

log = logging.getLogger(__name__)

COMPUTE = (LayerType.CONVOLUTION, LayerType.FULLY_CONNECTED, LayerType.POOLING)
TRANSPARENT = (LayerType.SHUFFLE, LayerType.FLATTEN, LayerType.SQUEEZE, LayerType.UNSQUEEZE,
               LayerType.IDENTITY)


def tensor_scale(t):
    lo, hi = t.dynamic_range
    return Q.scale_from_amax(max(abs(lo), abs(hi)))


def _float(t):
    return t is not None and t.dtype == DataType.FLOAT


def _constrained_out(layer, obey):
    return obey and layer.precision_is_set and layer.precision != DataType.INT8


def _has_ranges(layer):
    ts = [t for t in list(layer._inputs) + list(layer._outputs) if t is not None]
    return all(t.dynamic_range is not None for t in ts)


def can_run_int8(layer):
    """True when the layer has an INT8 kernel and every range it needs."""
    lt = layer.layer_type
    if lt == LayerType.POOLING and layer.pooling_type != PoolingType.MAX:
        return False
    if lt in COMPUTE:
        return (_float(layer._inputs[0]) and all(_float(t) for t in layer._outputs)
                and all(t is None or _float(t) for t in layer._inputs) and _has_ranges(layer))
    if lt in TRANSPARENT:
        return (len(layer._inputs) == 1 and _float(layer._inputs[0])
                and all(_float(t) for t in layer._outputs)
                and layer._inputs[0].dynamic_range is not None)
    return False


def _consumers(network):
    out = {}
    for layer in network._layers:
        for t in layer._inputs:
            if t is not None:
                out.setdefault(id(t), []).append(layer)
    return out


def assign_int8(network, config, precisions):
    """Mark the layers that run INT8 in ``precisions`` (name -> DataType), in
    place; layers a user constrained to INT8 but that cannot run it fall back.
    Returns the names of the INT8 layers."""
    obey = any(config.get_flag(f) for f in (BuilderFlag.OBEY_PRECISION_CONSTRAINTS,
                                            BuilderFlag.STRICT_TYPES,
                                            BuilderFlag.PREFER_PRECISION_CONSTRAINTS))
    fp16 = config.get_flag(BuilderFlag.FP16)
    chosen = set()
    for layer in network._layers:
        lt = layer.layer_type
        if lt in COMPUTE and not _constrained_out(layer, obey):
            if lt == LayerType.POOLING and layer._inputs[0].dynamic_range is not None:
                layer._outputs[0].dynamic_range = layer._inputs[0].dynamic_range
            if can_run_int8(layer):
                chosen.add(layer.name)
        elif lt in TRANSPARENT and not _constrained_out(layer, obey):
            src = layer._inputs[0]
            if (src is not None and src.producer is not None and src.producer.name in chosen
                    and src.dynamic_range is not None):
                layer._outputs[0].dynamic_range = src.dynamic_range
                if can_run_int8(layer):
                    chosen.add(layer.name)
    # a data-movement layer stays INT8 only if all its consumers do (reverse order: chains)
    consumers = _consumers(network)
    for layer in reversed(network._layers):
        if layer.name in chosen and layer.layer_type in TRANSPARENT:
            t = layer._outputs[0]
            users = consumers.get(id(t), [])
            if t.is_network_output or not users or any(u.name not in chosen for u in users):
                chosen.discard(layer.name)
    for layer in network._layers:
        if layer.name in chosen:
            precisions[layer.name] = DataType.INT8
        elif precisions.get(layer.name) == DataType.INT8:
            log.warning("%s asks for INT8 but has no INT8 kernel or no dynamic range; it runs %s",
                        layer.describe(), "FP16" if fp16 else "FP32")
            precisions[layer.name] = DataType.HALF if fp16 else DataType.FLOAT
    log.info("INT8: %d of %d layers", len(chosen), network.num_layers)
    return chosen


def int8_tensors(network, precisions):
    """Names of the tensors stored as int8 codes (see the module docstring)."""
    consumers = _consumers(network)
    out = set()
    for layer in network._layers:
        if precisions.get(layer.name) != DataType.INT8 or not can_run_int8(layer):
            continue
        for t in layer._outputs:
            users = consumers.get(id(t), [])
            set_type = layer.output_type_is_set(t.index) and \
                layer.get_output_type(t.index) != DataType.INT8
            if (t.dtype == DataType.FLOAT and not t.is_network_output and users and not set_type
                    and all(precisions.get(u.name) == DataType.INT8 and can_run_int8(u)
                            for u in users)):
                out.add(t.name)
    return out


def prepare(network, config, precisions):
    """The builder's INT8 stage: calibrate (or take the user's ranges), then
    assign INT8 precisions. Returns the plan metadata for INT8."""
    from .calibration import calibrate
    calib = config.int8_calibrator
    if calib is not None:
        calibrate(network, calib)
    elif not any(t.dynamic_range is not None for t in _tensors(network)):
        raise BuildError("the INT8 flag is set but there is neither config.int8_calibrator nor "
                         "any tensor dynamic range: set a calibrator (EntropyCalibrator2, "
                         "MinMaxCalibrator, PercentileCalibrator) or call "
                         "tensor.set_dynamic_range(lo, hi)")
    chosen = assign_int8(network, config, precisions)
    return {"int8_layers": sorted(chosen)}


def _tensors(network):
    yield from network._inputs
    for layer in network._layers:
        yield from layer._outputs


# ----------------------------------------------------------------------------
# execution (NumPy backend; array-module generic through kernels.quantize)

def _weights(layer):
    """Per-channel int8 weights of a conv/FC layer, made once per layer object."""
    cached = getattr(layer, "_int8_weights", None)
    if cached is None or cached[0] is not layer.kernel:
        if layer.layer_type == LayerType.CONVOLUTION:
            w = layer.weights(layer._inputs[0].shape[1])
        else:
            w = layer.kernel.reshape(layer.num_output_channels, -1)
        q, s = Q.quantize_weights(w)
        cached = (layer.kernel, q, s)
        layer._int8_weights = cached
    return cached[1], cached[2]


def _codes(x, t):
    """The int8 codes of input tensor ``t`` (quantized here if it arrived as float)."""
    return x if x.dtype == np.int8 else Q.quantize(x, tensor_scale(t))


def run_int8_layer(layer, inputs, out_dtypes):
    """One INT8 layer: ``inputs`` are int8 codes or floats (per the storage
    contract), outputs int8 codes where ``out_dtypes`` says INT8, else float32."""
    lt = layer.layer_type
    t_in, t_out = layer._inputs[0], layer._outputs[0]
    s_out = tensor_scale(t_out) if out_dtypes[0] == DataType.INT8 else None
    xq = _codes(inputs[0], t_in)
    if lt in TRANSPARENT:
        y = numpy_kernel(layer)(layer, [xq])[0]
        return [y if s_out is not None else Q.dequantize(y, tensor_scale(t_out))]
    if lt == LayerType.POOLING:
        y = numpy_kernel(layer)(layer, [xq.astype(np.float32)])[0]      # max of exact integers
        y = Q.dequantize(y.astype(np.int8), tensor_scale(t_in))
        return [y if s_out is None else Q.quantize(y, s_out)]
    wq, sw = _weights(layer)
    s_in = tensor_scale(t_in)
    res = inputs[1] if len(inputs) > 1 else None
    if res is not None and res.dtype == np.int8:
        res = (res, tensor_scale(layer._inputs[1]))
    act = None if layer.post_activation is None else layer.post_activation.name
    alpha, beta = layer.post_params()
    if lt == LayerType.CONVOLUTION:
        out, pre, _ = layer.geometry(xq.shape)
        acc = Q.conv_int8(xq, wq, layer.stride_nd, pre, out, layer.dilation_nd, layer.num_groups)
        return [Q.epilogue_int8(acc, s_in, sw, layer.bias, res, act, alpha, beta, s_out)]
    lead = xq.shape[:1] if xq.ndim == 2 else xq.shape[:-3]
    k = layer.num_output_channels
    shape = (*lead, k) if xq.ndim == 2 else (*lead, k, 1, 1)
    acc = Q.gemm_int8(xq.reshape(int(np.prod(lead)), -1), wq)
    if res is not None:
        if isinstance(res, tuple):
            res = (np.broadcast_to(res[0], shape).reshape(-1, k), res[1])
        else:
            res = np.broadcast_to(res, shape).reshape(-1, k)
    y = Q.epilogue_int8(acc, s_in, sw, layer.bias, res, act, alpha, beta, s_out)
    return [y.reshape(shape)]


# ----------------------------------------------------------------------------
# per-layer precision debugging

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
    from .testing import rel_l2

    def max_abs(got, ref):
        return float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))))
    metrics = {"rel_l2": rel_l2, "max_abs": max_abs}
    if name not in metrics:
        raise BuildError(f"metric {name!r}; valid: {', '.join(metrics)}")
    return metrics[name]


def _build_int8(network, calibrator, fp16=False):
    from .builder import Builder
    from .runtime import Runtime
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
    from .calibration import CalibrationAlgoType, Calibrator, write_cache
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
    from .calibration import Calibrator, forward
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
              for t in _tensors(net) if t.dynamic_range is not None}
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
