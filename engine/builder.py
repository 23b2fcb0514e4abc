"""IBuilder and IBuilderConfig: network -> optimised network -> plan bytes.

The build is a few small stages, each a function (Polygraphy's lazy loaders are
the model): copy the network (through the plan codec, which keeps
serialisation symmetric and leaves the user's network untouched), run the
passes, assign precisions, pick kernels, serialise.
"""
import logging
import time

import numpy as np

from .backends import resolve, select_backend
from .errors import BuildError
from .gpu import cudnn_int8_tactics, cudnn_tactics
from .gpu import precompile as kernel_precompile
from .kernel_table import numpy_kernel
from .layers import classes  # noqa: F401  (registers the layer classes and kernels)
from .logger import Logger
from .network import Network
from .passes import PASS_NAMES, optimize
from .plan import ArrayTable, decode_network, dumps, encode_network
from .precision_range import check as check_fp16_range
from .precision_timing import (alternatives as precision_alternatives, enabled as precision_timing_enabled,
                               refine_precisions)
from .quantization import all_tensors, assign_int8, prepare as prepare_int8
from .runtime import Runtime
from .settings import settings
from .types import DATA_MOVEMENT, BuilderFlag, DataType, LayerType, MemoryPoolType, ProfilingVerbosity

log = logging.getLogger(__name__)

# Progress listeners, process-wide: fn(event, **info) with event one of
#   "build_start" (layers), "stage" (name: passes | precision | int8 | tactics),
#   "layer" (index, total, name: one layer's tactics timed), "build_end" (layers, seconds).
# A front end (the CLI's progress bars) listens without threading a callback through
# every caller that builds (converters, calibration, engine nodes). config.progress, when
# set, hears the same events for one build only.
PROGRESS_LISTENERS = []


def _emit(config, event, **info):
    for fn in list(PROGRESS_LISTENERS) + ([config.progress] if config.progress else []):
        try:
            fn(event, **info)
        except Exception:        # noqa: BLE001 - a broken progress display never fails a build
            log.debug("progress listener %r failed on %s", fn, event, exc_info=True)


class _TacticProgress:
    """IProfiler stand-in for the tactic-timing run: each layer that finishes (its
    candidates timed) is one "layer" event."""

    def __init__(self, config, total):
        self.config, self.total, self.done = config, total, 0

    def report_layer_time(self, layer_name, ms):
        self.done += 1
        _emit(self.config, "layer", index=self.done, total=self.total, name=layer_name)


class BuilderConfig:
    def __init__(self):
        self._flags = set()
        self._pools = {MemoryPoolType.WORKSPACE: 1 << 30}
        self.int8_calibrator = None
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self.disabled_passes = set()
        self.timing_cache_path = None
        self.backend = None          # "numpy" | "cupy" | None (the best available)
        # cupyrt option: with FP16/INT8, time each layer one precision down and move it
        # there where that is faster (engine/precision_timing.py); TensorRT always does
        self.precision_by_timing = True
        self.profiles = []
        # cupyrt option (TensorRT's implicit-batch max_batch_size, kept for TF-TRT's static
        # engines): recorded in the plan; execute() refuses a larger first dim
        self.max_batch_size = None
        self.progress = None         # cupyrt option: fn(event, **info), see PROGRESS_LISTENERS
        # cupyrt options (engine/precision_range.py): sample inputs (dicts input -> array) on
        # which an FP16 build runs the network in FP32 and names the layers out of FP16's
        # range; with fp16_range_fallback those layers compute in FP32
        self.range_check_inputs = None
        self.fp16_range_fallback = False
        self._max_aux_streams = -1

    @property
    def max_aux_streams(self):
        """TensorRT's: how many auxiliary streams the engine may run side branches on
        (engine/aux_streams.py). -1 (default): the aux_streams switch decides at run time;
        0: none; 1 or more: on (cupyrt uses one)."""
        return self._max_aux_streams

    @max_aux_streams.setter
    def max_aux_streams(self, n):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < -1:
            raise BuildError(f"max_aux_streams {n!r}; expected an integer >= -1 (-1: the aux_streams "
                             "switch decides, 0: none)")
        self._max_aux_streams = int(n)

    def add_optimization_profile(self, profile):
        if not isinstance(profile, OptimizationProfile):
            raise BuildError(f"add_optimization_profile takes an OptimizationProfile; got "
                             f"{type(profile).__name__}")
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_flag(self, flag):
        self._flags.add(self._check(flag))

    def clear_flag(self, flag):
        self._flags.discard(self._check(flag))

    def get_flag(self, flag):
        return self._check(flag) in self._flags

    @staticmethod
    def _check(flag):
        if not isinstance(flag, BuilderFlag):
            raise BuildError(f"builder flag {flag!r} is not a BuilderFlag; valid: "
                             + ", ".join(BuilderFlag.__members__))
        return flag

    def set_memory_pool_limit(self, pool, size):
        if not isinstance(pool, MemoryPoolType):
            raise BuildError(f"memory pool {pool!r}; valid: {', '.join(MemoryPoolType.__members__)}")
        if int(size) < 0:
            raise BuildError(f"memory pool limit {size}; expected a size in bytes >= 0")
        self._pools[pool] = int(size)

    def get_memory_pool_limit(self, pool):
        return self._pools[pool]

    @property
    def max_workspace_size(self):
        return self._pools[MemoryPoolType.WORKSPACE]

    @max_workspace_size.setter
    def max_workspace_size(self, size):
        self.set_memory_pool_limit(MemoryPoolType.WORKSPACE, size)

    def disable_pass(self, name):
        if name not in PASS_NAMES:
            raise BuildError(f"unknown builder pass {name!r}; valid: {', '.join(PASS_NAMES)}")
        self.disabled_passes.add(name)


class OptimizationProfile:
    """Shapes for dynamic inputs: (min, opt, max) per input. The builder times
    tactics at ``opt``; other shapes get theirs on first use."""

    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, min, opt, max):  # noqa: A002  (TensorRT's parameter names)
        dims = [tuple(int(d) for d in s) for s in (min, opt, max)]
        if len({len(d) for d in dims}) != 1 or any(
                not lo <= o <= hi for lo, o, hi in zip(*dims)):
            raise BuildError(f"profile shapes for '{name}': min {dims[0]}, opt {dims[1]}, max "
                             f"{dims[2]}; expected equal ranks and min <= opt <= max per dim")
        self.shapes[name] = tuple(dims)

    def get_shape(self, name):
        return self.shapes.get(name)


class Builder:
    def __init__(self, logger=None):
        self.logger = logger or Logger()
        self.max_batch_size = 1    # TensorRT's implicit-batch knob, kept for TF-TRT users

    def create_network(self, flags=0):
        return Network(flags)

    def create_builder_config(self):
        return BuilderConfig()

    def create_optimization_profile(self):
        return OptimizationProfile()

    @property
    def platform_has_fast_fp16(self):
        return True

    @property
    def platform_has_fast_int8(self):
        return True

    def build_serialized_network(self, network, config):
        """Optimise ``network`` under ``config`` and return the plan as bytes."""
        if not isinstance(network, Network):
            raise BuildError(f"build_serialized_network takes a Network; got {type(network).__name__}")
        if not isinstance(config, BuilderConfig):
            raise BuildError(f"build_serialized_network takes a BuilderConfig; got {type(config).__name__}")
        if not network._outputs:
            raise BuildError("the network has no outputs: call network.mark_output(tensor) "
                             "on at least one tensor")
        t0 = time.perf_counter()
        _emit(config, "build_start", layers=network.num_layers)
        network._ensure_inferred()
        for layer in network._layers:
            layer.check_complete()
        arrays = ArrayTable()
        doc = encode_network(network, arrays)
        work = decode_network(doc, ArrayTable(arrays.getbytes()))
        _unique_layer_names(work)
        t1 = time.perf_counter()
        _emit(config, "stage", name="passes")
        stats = optimize(work, config.disabled_passes)
        t2 = time.perf_counter()
        _emit(config, "stage", name="precision")
        precisions = assign_precisions(work, config)
        fp16_range = None
        if config.range_check_inputs is not None and config.get_flag(BuilderFlag.FP16):
            fp16_range = check_fp16_range(work, precisions, config)
        # -- INT8 (engine/quantization.py): calibrate the optimised network, pick INT8 layers
        int8_meta, early = {}, None
        if config.get_flag(BuilderFlag.INT8):
            _emit(config, "stage", name="int8")
            if resolve(config.backend) != "numpy":
                early = precompile_before_calibration(work, config, precisions)
            int8_meta = prepare_int8(work, config, precisions)
        # -- end INT8
        for layer in work._layers:
            numpy_kernel(layer)       # a layer with no implementation fails the build now
        t3 = time.perf_counter()
        meta = {
            "precisions": {name: p.name for name, p in precisions.items()},
            "flags": sorted(f.name for f in config._flags),
            "pass_stats": stats,
            "source_layers": network.num_layers,
            "build_seconds": {"copy": t1 - t0, "passes": t2 - t1, "precision": t3 - t2},
            **int8_meta,
        }
        if fp16_range is not None:
            meta["fp16_range"] = fp16_range
        # the shapes execute() accepts (runtime.ExecutionContext checks them)
        if config.profiles:
            meta["profiles"] = [{n: [list(d) for d in dims] for n, dims in p.shapes.items()}
                                for p in config.profiles]
        if config.max_batch_size:
            meta["max_batch_size"] = int(config.max_batch_size)
        if config.max_aux_streams >= 0:
            meta["max_aux_streams"] = config.max_aux_streams
        if config.timing_cache_path:
            meta["timing_cache"] = str(config.timing_cache_path)
        if resolve(config.backend) == "numpy":
            meta["kernels"] = {layer.name: "numpy.reference" for layer in work._layers}
        else:
            t4 = time.perf_counter()
            _emit(config, "stage", name="tactics")
            meta.update(select_gpu_tactics(work, meta, config, early))
            meta["build_seconds"]["tactics"] = time.perf_counter() - t4
        out = ArrayTable()
        data = dumps({"network": encode_network(work, out), "engine": meta}, out)
        log.info("build phases (s): %s", ", ".join(f"{k} {v:.3f}" for k, v in meta["build_seconds"].items()))
        self.logger.log(Logger.INFO, f"built engine: {network.num_layers} layers -> "
                        f"{work.num_layers}, {len(data)} bytes, {time.perf_counter() - t0:.3f} s")
        _emit(config, "build_end", layers=work.num_layers, seconds=time.perf_counter() - t0)
        return data

    def build_engine(self, network, config):
        return Runtime(self.logger).deserialize_cuda_engine(
            self.build_serialized_network(network, config))


def _unique_layer_names(network):
    """Per-layer decisions are keyed by name: make names unique (a suffix on repeats)."""
    seen = set()
    for layer in network._layers:
        name, i = layer.name, 1
        while name in seen:
            name, i = f"{layer.name}_{i}", i + 1
        layer.name = name
        seen.add(name)


def assign_precisions(network, config):
    """Per layer, the type it computes in.

    FP16 flag: floating compute layers run in HALF; data-movement layers run in
    whatever reaches them. A layer's own ``precision`` wins when
    OBEY_PRECISION_CONSTRAINTS/STRICT_TYPES is set (PREFER: also wins here, as
    the NumPy backend can always honour it).
    """
    obey = any(config.get_flag(f) for f in (BuilderFlag.OBEY_PRECISION_CONSTRAINTS,
                                            BuilderFlag.STRICT_TYPES,
                                            BuilderFlag.PREFER_PRECISION_CONSTRAINTS))
    fp16 = config.get_flag(BuilderFlag.FP16)
    out = {}
    for layer in network._layers:
        floating = any(t is not None and t.dtype in (DataType.FLOAT, DataType.HALF)
                       for t in list(layer._inputs) + list(layer._outputs))
        if obey and layer.precision_is_set:
            p = layer.precision
        elif fp16 and floating and layer.layer_type not in DATA_MOVEMENT:
            p = DataType.HALF
        else:
            p = DataType.FLOAT
        out[layer.name] = p
    return out


def build_shapes(network, config):
    """Concrete input shapes to time tactics at: static shapes as declared, dynamic
    ones from the first optimisation profile's ``opt``; None if some input has
    neither (its tactics are then chosen on first use)."""
    shapes = {}
    for t in network._inputs:
        if -1 not in t._declared_shape:
            shapes[t.name] = t._declared_shape
            continue
        prof = next((p.get_shape(t.name) for p in config.profiles if p.get_shape(t.name)), None)
        if prof is None:
            return None
        shapes[t.name] = prof[1]
    return shapes


def precompile_before_calibration(network, config, precisions):
    """Start compiling the tiles this INT8 build will time while calibration runs (CPU work
    beside the calibration passes' GPU work): listed with the precisions and int8 tensors
    calibration is expected to leave, every float tensor given a stand-in range for the
    listing (``quantization.assign_int8``, ranges put back after). A wrong guess costs a few
    tiles compiled for nothing or compiled later by ``precompile_for``, never a wrong plan.
    Returns what ``select_gpu_tactics`` joins (precompile.finish_early), or None."""
    if not settings().precompile_during_calibration:
        return None
    shapes = build_shapes(network, config)
    if shapes is None:
        return None
    tensors = list(all_tensors(network))
    saved = [t.dynamic_range for t in tensors]
    quiet = logging.getLogger("engine.quantization")
    level = quiet.level
    try:
        for t in tensors:
            if t.dynamic_range is None and t.dtype in (DataType.FLOAT, DataType.HALF):
                t.dynamic_range = (-1.0, 1.0)
        guess = dict(precisions)
        quiet.setLevel(logging.ERROR)            # the real assignment says it all after calibration
        chosen = assign_int8(network, config, guess)
        meta = {"precisions": {n: p.name for n, p in guess.items()}, "int8_layers": sorted(chosen),
                "flags": sorted(f.name for f in config._flags),
                **({"timing_cache": str(config.timing_cache_path)} if config.timing_cache_path else {})}
        backend = select_backend("cupy", dict(meta, kernels={}))
        early = kernel_precompile.start_early(network, meta, shapes, cached=backend.cached_tactics)
        if early.pool is not None:      # a cold build: cuDNN's INT8 plans compile meanwhile too
            _prefetch_int8_plans(network, config, chosen, shapes)
        return early
    except Exception as e:     # noqa: BLE001  (the build's own precompile lists and compiles them)
        log.info("precompile before calibration skipped (%s: %s)", type(e).__name__, e)
        return None
    finally:
        quiet.setLevel(level)
        for t, r in zip(tensors, saved):
            t.dynamic_range = r


def _prefetch_int8_plans(network, config, int8_layers, shapes):
    """Queue the cuDNN INT8 graphs' plans of ``network`` on the plan workers now (they are
    otherwise queued when the selection first asks the cuDNN INT8 tactic; the selection then
    waited for them: 9.1 s of an H100 INT8 cold build, session 15), with the stand-in ranges
    in place. Once per network and batch: the selection's own request then queues nothing.
    Skipped where the cuDNN INT8 tactic is off or the frontend missing."""
    s = settings()
    if not (s.cudnn and s.cudnn_int8 and cudnn_tactics.enabled()) or not cudnn_tactics.cudnn_graphs.available():
        return 0
    layer = next((la for la in network._layers if la.name in int8_layers
                  and la.layer_type == LayerType.CONVOLUTION), None)
    if layer is None or not network._inputs:
        return 0
    batch = shapes[network._inputs[0].name][0]
    return cudnn_int8_tactics.prefetch_int8_network(layer, batch, fp16=config.get_flag(BuilderFlag.FP16))


def select_gpu_tactics(network, meta, config, early=None):
    """Time every layer's candidate kernels on the device at the build shapes and
    record the winners in the plan (and the timing cache). The CuPy backend does
    the timing (``select_tactics``: one eager run of the network that chooses each
    layer's tactic on the storage types the engine will feed it)."""
    shapes = build_shapes(network, config)
    if shapes is None:
        log.info("dynamic input shapes without an optimisation profile: tactics are chosen "
                 "on first use of each shape")
        return {}
    # the tiles this build times, compiled in parallel first; the alternatives of precision
    # by timing (timed after the selection) compile meanwhile in the background (what the
    # timing cache already chose is the only tile of its layer compiled)
    refine = precision_timing_enabled(config)
    later = _refine_alternatives(network, meta, config) if refine else {}
    backend = select_backend("cupy", dict(meta, kernels={}))
    parts, t0 = {}, time.perf_counter()      # the tactic stage's wall seconds, part by part
    compile_s = kernel_precompile.precompile_for(network, meta, shapes, cached=backend.cached_tactics)
    if early is not None:      # the compile started before calibration (precompile_before_calibration)
        compile_s += kernel_precompile.finish_early(early)
    background = kernel_precompile.start_for(network, meta, shapes, later, cached=backend.cached_tactics)
    parts["precompile"], t0 = time.perf_counter() - t0, time.perf_counter()
    feeds = {t.name: timing_feed(t.dtype.to_numpy(), shapes[t.name]) for t in network._inputs}
    # one progress event per layer timed
    engine = backend.select_tactics(network, feeds, _TacticProgress(config, network.num_layers))
    parts["selection"], t0 = time.perf_counter() - t0, time.perf_counter()
    out = {}
    if refine:
        background.wait()
        parts["background_wait"], t0 = time.perf_counter() - t0, time.perf_counter()
        engine, out = refine_precisions(
            network, meta, config, engine, feeds,
            compile_round=lambda alts: kernel_precompile.start_for(
                network, meta, shapes, alts, cached=engine.backend.cached_tactics).wait())
        parts["precision_timing"] = time.perf_counter() - t0
    # in the plan's build_seconds beside "tactics", which they add up to (less saving the caches)
    meta.setdefault("build_seconds", {}).update({f"tactics.{k}": v for k, v in parts.items()})
    engine.backend.save_timing_cache()
    cache = engine.backend.cache
    plans = engine.backend.cudnn_plans.entries     # serialized: a deserialized engine loads, not compiles
    return {**out, **({"cudnn_plans": dict(plans)} if plans else {}),
            "kernels": dict(engine.backend.selected), "tactic_ms": engine.backend.timings,
            "timing_cache_hits": cache.hits, "timing_cache_misses": cache.misses,
            "build_shapes": {k: list(v) for k, v in shapes.items()}, "precompile_seconds": compile_s,
            "precompile_tiles": _precompile_counts()}


def timing_feed(dtype, shape, seed=0):
    """An input for the tactic selection: uniform in [-1, 1) for a float type, zeros
    otherwise. Drawn in float32 (a ResNet-50 input at batch 256 took 1.4 s through
    float64 on a 2-core host, 0.1 s this way: a rebuild pays it too)."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return np.zeros(shape, dtype)
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    x *= 2
    x -= 1
    return x.astype(dtype, copy=False)


def _precompile_counts():
    """How many tiles precompile listed for this build (and how many of them it compiled:
    not compiled in this process before), of how many the kernel families have, and how
    many of other precisions it compiled in the background, from its last report."""
    r = kernel_precompile.last_report
    return {k: r[k] for k in ("tiles", "compiled", "of", "later_tiles", "later_seconds", "early_tiles",
                              "early_wait_seconds") if k in r}


def _refine_alternatives(network, meta, config):
    """The precisions the first round of precision by timing (engine/precision_timing.py)
    times layers in besides their own, {layer name: precision} (INT8 -> HALF, HALF ->
    FLOAT). They are timed after the build's own selection, so they compile in the
    background while it runs: in a ResNet-50 INT8 build the HALF alternatives' tiles were
    72 of the 160 CPU seconds of compiles the build waited for before timing anything
    (H100, session 15). A second round (the FLOAT of a layer the first moved INT8 ->
    HALF) compiles its tiles when it comes (``refine_precisions``' ``compile_round``):
    listed up front, its FP32 tiles were compiled for every INT8 layer of every build,
    and no ResNet-50 INT8 build has moved a layer yet."""
    precisions = {name: DataType[p] for name, p in meta["precisions"].items()}
    return precision_alternatives(network, precisions, config)
