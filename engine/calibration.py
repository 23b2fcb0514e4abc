"""INT8 calibration: TensorRT's calibrator interface, the ready-made calibrators,
calibration caches in TensorRT's text format, and the run that collects
statistics of every tensor of the optimised network.

A calibrator (``IInt8Calibrator``) hands the builder batches through
``get_batch(names)`` until it returns None, and may short-cut the whole run
with ``read_calibration_cache()``. ``get_algorithm()`` names how a tensor's
statistics become its threshold t (dynamic range (-t, t), scale t / 127):

    ENTROPY_CALIBRATION_2   KL divergence over a 2048-bin histogram of |x|
    MINMAX_CALIBRATION      max |x|
    PERCENTILE_CALIBRATION  the ``percentile`` of |x| (cupyrt's; default 99.99)

Histograms over several batches: the builder keeps the input batches, runs
them once for every tensor's max |x| and once more to fill 2048 bins over
[0, max] (exact histograms, never rebinned; the cost is holding the
calibration inputs in memory and a second forward pass). MinMax needs the
first pass only. The thresholds are kernels/quantize.py.

Where the passes run: when the build runs on the GPU (the CuPy backend) the network
runs there too, every layer in FP32 on the first of its GPU tactics that runs
(untimed: calibration needs values, not speed), and the maxima and histograms are
taken on the device, only 2048 counts per tensor coming back. TensorRT calibrates on
the GPU as well; on the host, NumPy's ResNet-50 took seconds for 8 images, so a
calibration set of the size TensorRT recommends (hundreds of images) would have taken
minutes. If the GPU run fails for any reason other than the data, the host run
takes over (a warning says why); ``CUPYRT_CALIBRATE_ON_GPU=0`` keeps it on the host.

Cache format (what TensorRT writes; ours is read by TensorRT and vice versa)::

    TRT-8601-EntropyCalibration2
    data: 3c008912
    conv1: 3c88edfc

the hex being the IEEE-754 bits of the float32 scale, most significant byte
first (3c92aa10 -> 0.0179033577). A TensorRT cache's version field is not
checked; its algorithm must match the calibrator's.
"""
import enum
import logging
import math
import os
import re
import struct

import numpy as np

from kernels import quantize as Q

from .errors import CalibrationError
from .execution import EngineSchedule, LayerRunner
from .kernel_table import numpy_kernel
from .types import FLOATING

log = logging.getLogger(__name__)

CACHE_TAG = "TRT-8601"      # TensorRT 8.6.1's tag, so TensorRT tools take our caches as theirs


class CalibrationAlgoType(enum.Enum):
    LEGACY_CALIBRATION = 0
    ENTROPY_CALIBRATION = 1
    ENTROPY_CALIBRATION_2 = 2
    MINMAX_CALIBRATION = 3
    PERCENTILE_CALIBRATION = 4      # cupyrt's (TensorRT's legacy calibrator took a quantile)


_CACHE_NAMES = {
    CalibrationAlgoType.LEGACY_CALIBRATION: "LegacyCalibration",
    CalibrationAlgoType.ENTROPY_CALIBRATION: "EntropyCalibration",
    CalibrationAlgoType.ENTROPY_CALIBRATION_2: "EntropyCalibration2",
    CalibrationAlgoType.MINMAX_CALIBRATION: "MinMaxCalibration",
    CalibrationAlgoType.PERCENTILE_CALIBRATION: "PercentileCalibration",
}
_SUPPORTED = (CalibrationAlgoType.ENTROPY_CALIBRATION_2, CalibrationAlgoType.MINMAX_CALIBRATION,
              CalibrationAlgoType.PERCENTILE_CALIBRATION)

CAUSES_EMPTY = """\
calibration received no batches. Likely causes:
  1. the iterable was already exhausted (a generator can be consumed only once:
     pass a list, or a fresh generator per build)
  2. get_batch() returned None on the first call (check its end-of-data logic)
  3. the data source itself is empty (an empty list, file or directory)"""

CAUSES_NONFINITE = """\
calibration data for '{name}' holds NaN or inf ({where}). Likely causes:
  1. preprocessing produced NaN/inf (division by a zero std, log of 0, bad casts)
  2. uninitialised buffers (np.empty) were fed instead of data
  3. the network overflows on this data in float32 (check the input scale)"""


class Calibrator:
    """TensorRT's IInt8Calibrator. Subclass it and implement ``get_batch``
    (return one array per name, in ``names`` order, or None at the end), or use
    one of the ready-made calibrators below."""

    algorithm = CalibrationAlgoType.ENTROPY_CALIBRATION_2
    percentile = 99.99

    def get_batch_size(self):
        return 1

    def get_batch(self, names):
        raise NotImplementedError("Calibrator.get_batch(names)")

    def get_algorithm(self):
        return self.algorithm

    def read_calibration_cache(self):
        return None

    def write_calibration_cache(self, cache):
        return None


IInt8Calibrator = Calibrator


class DataCalibrator(Calibrator):
    """A calibrator over any iterable of NumPy batches: a dict name -> array per
    batch, or a bare array for single-input networks. ``cache_file``: a path the
    cache is read from (if it exists) and written to; without one the cache of
    the last calibration is kept in memory, so a rebuild with the same calibrator
    object skips calibration."""

    def __init__(self, data, cache_file=None, batch_size=None, ignore_bad_cache=False):
        self._data = data
        self.ignore_bad_cache = bool(ignore_bad_cache)   # else a bad cache raises
        self._it = None
        self.cache_file = None if cache_file is None else os.fspath(cache_file)
        self._cache = None
        self._batch_size = batch_size

    def get_batch_size(self):
        return self._batch_size or 1

    def get_batch(self, names):
        if self._it is None:
            self._it = iter(self._data)
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = None           # a list can be walked again by the next build
            return None
        if isinstance(batch, dict):
            missing = [n for n in names if n not in batch]
            if missing:
                raise CalibrationError(
                    f"calibration batch has no array for input(s) {missing}; it holds "
                    f"{sorted(batch)}, the network takes {list(names)}. Likely causes:\n"
                    "  1. wrong input names (the TF node name vs the tensor name 'x:0')\n"
                    "  2. the batches belong to another network")
            return [np.asarray(batch[n]) for n in names]
        if len(names) != 1:
            raise CalibrationError(f"a bare array was given as a calibration batch, but the "
                                   f"network takes {len(names)} inputs {list(names)}: give a "
                                   "dict name -> array per batch")
        return [np.asarray(batch)]

    def read_calibration_cache(self):
        if self.cache_file and os.path.exists(self.cache_file):
            with open(self.cache_file, "rb") as f:
                return f.read()
        return self._cache

    def write_calibration_cache(self, cache):
        self._cache = bytes(cache)
        if self.cache_file:
            tmp = self.cache_file + ".tmp"
            with open(tmp, "wb") as f:
                f.write(self._cache)
            os.replace(tmp, self.cache_file)   # never a half-written cache


class EntropyCalibrator2(DataCalibrator):
    algorithm = CalibrationAlgoType.ENTROPY_CALIBRATION_2


IInt8EntropyCalibrator2 = EntropyCalibrator2


class MinMaxCalibrator(DataCalibrator):
    algorithm = CalibrationAlgoType.MINMAX_CALIBRATION


IInt8MinMaxCalibrator = MinMaxCalibrator


class PercentileCalibrator(DataCalibrator):
    algorithm = CalibrationAlgoType.PERCENTILE_CALIBRATION

    def __init__(self, data, percentile=99.99, cache_file=None, batch_size=None,
                 ignore_bad_cache=False):
        super().__init__(data, cache_file, batch_size, ignore_bad_cache)
        if not 0 < float(percentile) <= 100:
            raise CalibrationError(f"percentile {percentile}; expected a number in (0, 100]")
        self.percentile = float(percentile)


# ----------------------------------------------------------------------------
# caches

def write_cache(scales, algorithm):
    """{tensor name: float scale} -> cache bytes in TensorRT's format."""
    lines = [f"{CACHE_TAG}-{_CACHE_NAMES[algorithm]}"]
    for name, s in scales.items():
        lines.append(f"{name}: {struct.pack('>f', float(s)).hex()}")
    return ("\n".join(lines) + "\n").encode()


_LINE = re.compile(r"^(.*): ([0-9a-fA-F]{8})$")


def read_cache(data, algorithm=None):
    """Cache bytes -> {tensor name: float scale}. With ``algorithm``, a cache
    written by another algorithm raises CalibrationError."""
    try:
        text = bytes(data).decode("utf-8")
    except (TypeError, UnicodeDecodeError) as e:
        raise CalibrationError(f"calibration cache is not UTF-8 text ({e}); expected "
                               "TensorRT's format: a header line, then 'name: 8 hex digits'") from e
    lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
    if not lines:
        raise CalibrationError("calibration cache is empty; expected a header line such as "
                               f"'{CACHE_TAG}-EntropyCalibration2'")
    head = lines[0].strip()
    algo = next((a for a, n in _CACHE_NAMES.items() if head.endswith("-" + n)), None)
    if algo is None or head.count("-") < 2:
        raise CalibrationError(f"calibration cache header {head!r}; expected '<tag>-<version>-"
                               f"<algorithm>' with algorithm one of: {', '.join(_CACHE_NAMES.values())}")
    if algorithm is not None and algo != algorithm:
        raise CalibrationError(f"calibration cache was written by {_CACHE_NAMES[algo]}; this "
                               f"calibrator uses {_CACHE_NAMES[algorithm]} (delete the cache "
                               "or use the matching calibrator)")
    scales = {}
    for n, ln in enumerate(lines[1:], start=2):
        m = _LINE.match(ln)
        if not m:
            raise CalibrationError(f"calibration cache line {n} is {ln!r}; expected "
                                   "'tensor_name: <8 hex digits>'")
        s = struct.unpack(">f", bytes.fromhex(m.group(2)))[0]
        if not (math.isfinite(s) and s > 0):
            raise CalibrationError(f"calibration cache line {n}: scale {s} for '{m.group(1)}'; "
                                   "expected a finite scale > 0")
        scales[m.group(1)] = s
    return scales


CAUSES_CONSTANT = """\
calibration data is constant: {detail}. Likely causes:
  1. placeholder data (np.zeros, np.ones, np.full) was fed instead of real samples
  2. preprocessing collapsed the samples (scaled by 0, clipped, cast to integers first)
  3. the same element was repeated (e.g. a loader that always returns its first item)"""


def _check_not_constant(network, batches):
    """Ranges from constant inputs say nothing about real data. When every float
    input is one repeated value the data is certainly not what was meant: raise.
    When only some are (a mask, a fixed scale input), say which and go on."""
    constant, floats = {}, 0
    for t in network._inputs:
        if t.dtype not in FLOATING:
            continue
        floats += 1
        arrays = [b[t.name] for b in batches if b[t.name].size]
        if sum(a.size for a in arrays) < 2:
            continue
        lo = min(float(a.min()) for a in arrays)
        if lo == max(float(a.max()) for a in arrays):
            constant[t.name] = lo
    if not constant:
        return
    detail = ", ".join(f"input '{n}' is {v!r} in every element of all {len(batches)} batches"
                       for n, v in constant.items())
    if len(constant) == floats:
        raise CalibrationError(CAUSES_CONSTANT.format(detail=detail))
    log.warning("calibration: %s (other inputs vary; if that is not meant, check the data)",
                detail)


# ----------------------------------------------------------------------------
# the calibration run

def _collect_batches(network, calibrator):
    names = [t.name for t in network._inputs]
    batches = []
    while True:
        got = calibrator.get_batch(names)
        if got is None or (isinstance(got, (list, tuple)) and len(got) == 0):
            break
        if isinstance(got, dict):
            got = [got.get(n) for n in names]
        if len(got) != len(names):
            raise CalibrationError(f"get_batch returned {len(got)} arrays; the network takes "
                                   f"{len(names)} inputs {names}")
        feeds = {}
        for t, a in zip(network._inputs, got):
            a = np.asarray(a)
            if t.dtype in FLOATING:
                a = a.astype(t.dtype.to_numpy(), copy=False)
                if not np.isfinite(a).all():
                    raise CalibrationError(CAUSES_NONFINITE.format(
                        name=t.name, where=f"input of batch {len(batches)}"))
            decl = t._declared_shape
            if a.ndim != len(decl) or any(w >= 0 and d != w for d, w in zip(a.shape, decl)):
                raise CalibrationError(f"calibration batch {len(batches)}: input '{t.name}' has "
                                       f"shape {a.shape}; the network declares {decl} (-1 = any)")
            feeds[t.name] = a
        batches.append(feeds)
    if not batches:
        raise CalibrationError(CAUSES_EMPTY)
    return batches


def device_runner(network):
    """A LayerRunner computing every layer of ``network`` in FP32 on the GPU backend,
    each layer on the first of its tactics that runs (``CupyBackend.autotune`` off: no
    timing, nothing written to a timing cache). Raises BuildError without a CUDA device."""
    # the GPU path only (the backend imports CuPy)
    from .backends.cupy_backend import CupyBackend
    from .gpu.timing import TimingCache
    backend = CupyBackend({"precisions": {layer.name: "FLOAT" for layer in network._layers}})
    backend.cache = TimingCache()     # its lookups stay out of the build's cache statistics
    backend.autotune = False
    backend.use_graphs = backend.graph_timing = False
    return LayerRunner(EngineSchedule(network, backend.meta, backend))


def forward(network, feeds, visit, runner=None):
    """Run ``network`` in FP32 on the NumPy kernels, or through ``runner`` (a
    LayerRunner, e.g. ``device_runner``'s: values are then its backend's arrays),
    calling ``visit(tensor, value)`` for every network input and layer output;
    values are dropped after their last use."""
    if runner is not None:
        backend = runner.engine.backend
        dev = {t.name: backend.asarray(feeds[t.name]) for t in network._inputs}
        for t in network._inputs:
            visit(t, dev[t.name])
        runner.run_layers(dev, runner._schedule(dev), visit=visit)
        return
    last = {}
    for step, layer in enumerate(network._layers):
        for t in layer._inputs:
            if t is not None:
                last[id(t)] = step
    values = {}
    for t in network._inputs:
        values[id(t)] = feeds[t.name]
        visit(t, feeds[t.name])
    for step, layer in enumerate(network._layers):
        ins = [None if t is None else values[id(t)] for t in layer._inputs]
        ins = [x.astype(np.float32) if x is not None and x.dtype == np.float16 else x for x in ins]
        outs = numpy_kernel(layer)(layer, ins)
        for t, v in zip(layer._outputs, outs):
            v = np.asarray(v).astype(t.dtype.to_numpy(), copy=False)
            values[id(t)] = v
            visit(t, v)
        for t in layer._inputs:
            if t is not None and last.get(id(t)) == step and not t.is_network_output:
                values.pop(id(t), None)


def collect_thresholds(network, batches, algorithm, percentile=99.99, runner=None):
    """{tensor name: threshold t} of every float tensor over ``batches``; ``runner``:
    run the network through it (``forward``) instead of on the NumPy kernels."""
    if algorithm not in _SUPPORTED:
        raise CalibrationError(f"calibration algorithm {algorithm.name} is not implemented; valid: "
                               + ", ".join(a.name for a in _SUPPORTED))
    amax = {}

    def see_max(t, v):
        if t.dtype in FLOATING:
            m = Q.abs_max(v)
            if not math.isfinite(m):
                raise CalibrationError(CAUSES_NONFINITE.format(
                    name=t.name, where="a tensor computed from finite inputs"))
            amax[t.name] = max(amax.get(t.name, 0.0), m)
    for feeds in batches:
        forward(network, feeds, see_max, runner)
    if algorithm == CalibrationAlgoType.MINMAX_CALIBRATION:
        return amax
    hists = {}

    def see_hist(t, v):
        if t.name in amax:
            h = Q.abs_histogram(v, amax[t.name],
                                drop_zeros=algorithm == CalibrationAlgoType.ENTROPY_CALIBRATION_2)
            hists[t.name] = h if t.name not in hists else hists[t.name] + h
    for feeds in batches:
        forward(network, feeds, see_hist, runner)
    out = {}
    for name, h in hists.items():
        width = amax[name] / Q.NUM_BINS
        if amax[name] == 0:
            out[name] = 0.0
        elif algorithm == CalibrationAlgoType.PERCENTILE_CALIBRATION:
            out[name] = Q.percentile_threshold(h, width, percentile)
        else:
            out[name] = Q.kl_threshold(h, width)
        out[name] = min(out[name], amax[name])   # (m + 0.5) bins may pass the max: never clip wider
    return out


def calibrate(network, calibrator, on_gpu=False):
    """Set ``dynamic_range`` on the float tensors of ``network`` from the
    calibrator's cache or by running its batches (``on_gpu``: on the GPU backend,
    the host if that fails). A range the user already set (tensor.set_dynamic_range)
    wins. Returns {tensor name: scale} used."""
    if not isinstance(calibrator, Calibrator):
        raise CalibrationError(f"int8_calibrator is a {type(calibrator).__name__}; expected an "
                               "engine.Calibrator (EntropyCalibrator2, MinMaxCalibrator, "
                               "PercentileCalibrator or a subclass)")
    algo = calibrator.get_algorithm()
    cached = calibrator.read_calibration_cache()
    scales = None
    if cached:
        try:
            scales = read_cache(cached, algo)
            log.info("calibration cache read: %d tensors; calibration skipped", len(scales))
        except CalibrationError as e:
            if not getattr(calibrator, "ignore_bad_cache", False):
                raise
            log.warning("calibration cache ignored (%s); calibrating", e)
    if scales is None:
        batches = _collect_batches(network, calibrator)
        percentile = float(getattr(calibrator, "percentile", 99.99))
        thresholds, where = None, "host"
        if on_gpu:
            try:
                thresholds = collect_thresholds(network, batches, algo, percentile,
                                                runner=device_runner(network))
                where = "GPU"
            except Exception as e:          # noqa: BLE001  (any failure, even "non-finite": the host
                # run decides; bad data fails there too, with the same message)
                log.warning("calibration on the GPU failed (%s: %s); calibrating on the host",
                            type(e).__name__, e)
        if thresholds is None:
            thresholds = collect_thresholds(network, batches, algo, percentile)
        _check_not_constant(network, batches)
        # a tensor that is all zeros gets the smallest normal scale (range 127 * tiny)
        scales = {n: max(float(Q.scale_from_amax(t)), float(np.finfo(np.float32).tiny))
                  for n, t in thresholds.items()}
        calibrator.write_calibration_cache(write_cache(scales, algo))
        log.info("calibrated %d tensors over %d batches (%s, on the %s)", len(scales), len(batches),
                 algo.name, where)
    apply_scales(network, scales)
    return scales


def apply_scales(network, scales):
    known = {t.name: t for t in _float_tensors(network)}
    unknown = [n for n in scales if n not in known]
    if unknown:
        log.info("calibration cache names %d tensor(s) not in the optimised network (ignored): %s",
                 len(unknown), ", ".join(unknown[:10]))
    for name, s in scales.items():
        t = known.get(name)
        if t is not None and t.dynamic_range is None:
            amax = float(np.float32(s) * np.float32(127.0))
            t.dynamic_range = (-amax, amax)


def _float_tensors(network):
    for t in network._inputs:
        yield t
    for layer in network._layers:
        yield from layer._outputs
