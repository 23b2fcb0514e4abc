"""The CuPy backend: the product. Layers run on tactics chosen by measuring;
the whole engine is captured into a CUDA graph per input shape and replayed.

Selection happens once per (layer, input shapes): a choice recorded in the
plan (made by the builder at the optimisation-profile shape) or in the timing
cache is taken as is; otherwise every supported candidate is timed on the real
inputs and the fastest kept. A CUDA graph is captured on the second call with
a shape (the first call selects tactics, compiles and uploads weights); if any
chosen tactic cannot be captured (cuBLAS through CuPy refuses capture) the
engine keeps running eagerly for that shape, which the builder's timing
already accounted for per layer.

Inputs bound with execute_async_v3 are captured as they are: the graph reads the
caller's arrays in place, and a replay on the same memory copies nothing (TensorRT
reads bound addresses too). Other feeds are copied into the graph's private input
buffers on each replay. When a later call feeds another array where the graph
reads in place, the graph is captured again on private buffers and copies from
then on: the caller's earlier array is never written.
"""
import logging
import math
import threading
import time

from kernels.gpu.device_hold import hold_stream

from ..errors import BuildError
from ..execution import EngineSchedule, LayerRunner
from ..gpu import cudnn_tactics
from ..gpu import tactics as T
from ..gpu.concat import ConcatElision
from ..gpu.device import available, cupy, gpu_info
from ..gpu.timing import (TimingCache, free_device_cache, is_out_of_memory,
                          layer_signature, time_ms)
from ..settings import settings, tactic_key

log = logging.getLogger(__name__)
# the longest the profiler's device hold waits for the layer loop to be issued (an eager
# ResNet-50 INT8 b256 call took 11.3 ms on an H100); a loop that synchronises inside (a
# first call at a new shape choosing tactics) costs at most this once
PROFILE_HOLD_MS = 250.0
_caches = {}
_caches_lock = threading.Lock()


def timing_cache(path):
    with _caches_lock:
        if path not in _caches:
            _caches[path] = TimingCache(path)
        return _caches[path]


class _Graph:
    """One captured engine run: static inputs, static outputs, private memory.
    ``in_place``: the inputs the graph reads from the caller's bound arrays (held in
    ``inputs`` so their memory stays valid); the others are private buffers."""

    def __init__(self, graph, inputs, outputs, pool, stream, in_place=(), aux=None):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs
        self.pool, self.stream = pool, stream
        self.aux = aux          # the auxiliary stream captured beside ``stream`` (or None)
        self.in_place = frozenset(in_place)


class CupyBackend:
    name = "cupy"
    aux_streams = False          # the switch (on by default), read per backend in __init__

    def __init__(self, meta=None):
        if not available():
            raise BuildError("the CuPy backend needs a CUDA device and none is available; "
                             "use the NumPy backend (CUPYRT_BACKEND=numpy)")
        switches = settings()         # read once per backend, not per layer
        self.cp = cupy()
        self.meta = meta or {}
        self.forced = dict(self.meta.get("kernels", {}))       # layer name -> tactic name
        self.gpu = "%s %s" % gpu_info(self.cp.cuda.Device().id)
        self.cache = timing_cache(self.meta.get("timing_cache") or switches.timing_cache)
        # the cuDNN plans this engine runs: those its plan file carries, then the file store
        # beside its timing cache (engine/gpu/cudnn_tactics.py EnginePlans)
        self.cudnn_plans = cudnn_tactics.EnginePlans(
            self.meta.get("cudnn_plans"), cudnn_tactics.plan_store(
                switches.cudnn_plan_cache or self.meta.get("timing_cache") or switches.timing_cache))
        self.use_graphs = switches.cuda_graphs
        # side branches on a second stream inside the captured graph (engine/aux_streams.py):
        # the plan's max_aux_streams (BuilderConfig) where the build set one, else the switch
        self.aux_streams = aux_streams_on(self.meta, switches)
        # short candidates timed inside a CUDA graph (engine/gpu/timing.py); the
        # builder turns use_graphs off while it selects, not this
        self.graph_timing = self.use_graphs
        # TF32 tactics (plain TF32 tensor-core math for FLOAT layers) only under the TF32 flag
        self.tf32 = "TF32" in self.meta.get("flags", ())
        self.autotune = True         # False: each layer on the first tactic that runs, untimed
        self._choice = {}            # (layer name, shapes, dtypes) -> tactic
        self._capturable = {}        # same key -> fastest CUDA-graph-safe tactic (or None)
        self._trace = None           # when a list: the keys of the layers that run
        self._build_shapes = {k: tuple(v) for k, v in self.meta.get("build_shapes", {}).items()}
        self._at_build_shapes = False  # plan choices hold only at the shapes they were timed at
        self._state = {}             # (layer name, tactic name) -> prepared state
        self._lock = threading.Lock()
        self.selected = {}           # layer name -> last tactic name chosen (for inspection)
        self.timings = {}            # layer name -> {tactic: ms} of the last selection
        self.tactic_failures = {}    # layer name -> {tactic: why it failed while timed}
        self.graph_notes = []        # why each shape runs eagerly or replays a graph
        # concat elision (engine/gpu/concat.py): the per-engine plan, made on the first
        # run; each run of the layer loop gets a fresh placement (its concat buffers),
        # per thread since execution contexts of one engine may run concurrently
        self.concat_elision = switches.concat_elision
        self.elision = None
        self._runs = threading.local()

    # -- the backend interface -----------------------------------------------------
    def asarray(self, x):
        return self.cp.asarray(x)

    def synchronize(self):
        self.cp.cuda.get_current_stream().synchronize()

    def join_batch(self, parts):
        """Batch chunks back into one array, in order. Chunks that are NCHW views of NHWC
        storage (what the NHWC kernels return) are joined as that storage and viewed again,
        so the next layer reads NHWC without a reformat."""
        cp = self.cp
        if all(p.ndim == 4 and not p.flags.c_contiguous and p.transpose(0, 2, 3, 1).flags.c_contiguous
               for p in parts):
            return cp.concatenate([p.transpose(0, 2, 3, 1) for p in parts], axis=0).transpose(0, 3, 1, 2)
        return cp.concatenate(parts, axis=0)

    def mark(self):
        """An event recorded on the current stream: the profiler times each layer on the
        device between two, with nothing synchronised inside the layer loop (a host clock
        around each layer counted its Python launch path, about as long as a small layer)."""
        ev = self.cp.cuda.Event()
        ev.record()
        return ev

    def hold(self):
        """Hold the current stream until the returned hold's ``release()`` (at most
        PROFILE_HOLD_MS): the profiler issues every layer and its events behind it, so the
        events time the device's work and not the Python launch path."""
        return hold_stream(PROFILE_HOLD_MS)

    def aux_stream(self):
        """The auxiliary stream this run's layer loop may issue layers on (engine/aux_streams.py):
        set while a CUDA graph is captured with the aux_streams switch on, otherwise None."""
        return getattr(self._runs, "aux", None)

    def elapsed_ms(self, start, end):
        end.synchronize()
        return self.cp.cuda.get_elapsed_time(start, end)

    def to_output(self, x, dtype):
        return self.cp.asnumpy(x).astype(dtype.to_numpy(), copy=False)

    def copy_into(self, dst, src, stream=None):
        with (stream or self.cp.cuda.get_current_stream()):
            self.cp.copyto(dst, src)

    def run_layer(self, layer, inputs, precision, out_dtypes):
        tactic = self._tactic(layer, inputs, precision, out_dtypes)
        state = self._prepared(layer, tactic)
        placement = getattr(self._runs, "placement", None)
        if placement is not None:            # concat elision: producers and their concat
            outs = placement.run_layer(tactic, state, layer, inputs, precision, out_dtypes)
            if outs is not None:
                return outs
        return tactic.run(state, layer, inputs, precision, out_dtypes)

    def _run_layers(self, context, feeds, sched):
        """The engine's layer loop with a fresh concat placement for this run, the cuDNN
        tactics keeping and finding plans in this engine's (a graph replay runs no tactic
        and skips all of this)."""
        self._concat_plan(context)
        self._runs.placement = self.elision.placement() if self.concat_elision else None
        try:
            with cudnn_tactics.plans_in_use(self.cudnn_plans):
                return context.run_layers(feeds, sched)
        finally:
            self._runs.placement = None

    def _note_shapes(self, feeds):
        """Whether this run is at the build shapes (where the plan's forced tactics apply)."""
        self._at_build_shapes = bool(self._build_shapes) and all(
            self._build_shapes.get(n) == tuple(a.shape) for n, a in feeds.items())

    def _concat_plan(self, context):
        """This engine's concat elision plan, made once per engine (when elision is on)."""
        if self.concat_elision and getattr(self.elision, "engine", None) is not context.engine:
            self.elision = ConcatElision(context.engine)

    def run_visiting(self, context, feeds, sched, visit):
        """The layers eagerly on the current stream, ``visit(tensor, value)`` after each
        (ExecutionContext.layer_outputs): no CUDA graph and no concat placement, so every
        layer writes a tensor of its own; the cuDNN plans of this engine as in a run."""
        self._note_shapes(feeds)
        # the concat plan exists as for a run (a tactic chosen now is kept for later runs, and
        # must be the elided one where the plan elides), but no placement: own outputs each
        self._concat_plan(context)
        self._runs.placement = None
        with cudnn_tactics.plans_in_use(self.cudnn_plans):
            return context.run_layers(feeds, sched, visit)

    # -- the builder's interface ---------------------------------------------------
    def select_tactics(self, network, feeds, profiler=None):
        """Choose every layer's tactic by timing: one eager run (no CUDA graph) of
        ``network`` on ``feeds`` (host arrays, the build shapes) with this backend's
        plan metadata (precisions, flags). The choices land in ``selected``,
        ``timings`` and the timing cache; ``profiler.report_layer_time`` hears each
        layer as it finishes. Returns the EngineSchedule that ran (the builder's
        precision-by-timing stage measures layers on it)."""
        engine = EngineSchedule(network, self.meta, self)
        runner = LayerRunner(engine)
        runner.profiler = profiler       # the builder's progress, not a timing
        runner.hold_when_profiled = False
        self.use_graphs = False      # selection only: replay is the built engine's business
        runner.run({name: self.asarray(a) for name, a in feeds.items()})
        self.synchronize()
        return engine

    # -- tactics -------------------------------------------------------------------
    def _prepared(self, layer, tactic):
        key = (layer.name, tactic.name)
        state = self._state.get(key)
        if state is None and key not in self._state:
            with self._lock:
                state = self._state[key] = tactic.prepare(layer)
        return state

    def _tactic(self, layer, inputs, precision, out_dtypes):
        shapes = tuple(None if x is None else tuple(x.shape) for x in inputs)
        dtypes = tuple(None if x is None else x.dtype.name for x in inputs)
        key = (layer.name, shapes, dtypes)
        if self._trace is not None:
            self._trace.append(key)
        tactic = self._choice.get(key)
        if tactic is None:
            tactic = self._select(layer, inputs, shapes, dtypes, precision, out_dtypes, key)
            self._choice[key] = tactic
            self.selected[layer.name] = tactic.name
        return tactic

    def _candidates(self, layer, shapes, dtypes, precision):
        return T.supported(layer, shapes, dtypes, precision, self.tf32)

    def _signature_key(self, layer, shapes, dtypes, precision, out_dtypes):
        sig = layer_signature(layer, shapes, dtypes, precision, out_dtypes)
        if self.tf32:                 # another candidate set: another cache entry
            sig["tf32"] = True
        switches = tactic_key()       # likewise kernels switched away from their default
        if switches:
            sig["switches"] = switches
        return TimingCache.key(self.gpu, sig)

    def cached_tactics(self, layer, shapes, dtypes, precision, out_dtypes):
        """The names of the tactics a selection of ``layer`` at these input shapes and
        dtype names would run when the timing cache answers it: the chosen one and, when
        that one cannot be captured in a CUDA graph, the fastest capturable one timed with
        it (``_select``'s two picks); None when the cache has no entry (it will be timed).
        Asks no tactic's ``supports`` (the cuDNN tactic's would queue plan builds)."""
        hit = self.cache.peek(self._signature_key(layer, shapes, dtypes, precision, out_dtypes))
        if not hit:
            return None
        names = {hit["tactic"]}
        ms = hit.get("ms", {})
        by_name = {t.name: t for t in T.candidates(layer, precision)}
        chosen = by_name.get(hit["tactic"])
        if chosen is None or not chosen.capturable_for(layer):
            capt = [t for name, t in by_name.items() if ms.get(name) is not None and t.capturable_for(layer)]
            if capt:
                names.add(min(capt, key=lambda t: ms[t.name]).name)
        return names

    def measure(self, layer, inputs, precision, out_dtypes, bound_ms=math.inf):
        """(best tactic name, its ms) for ``layer`` on these device inputs, without
        choosing it for execution (the builder's precision-by-timing stage asks
        "how fast would this layer be in that precision"); the timing cache serves
        a signature it has timed before. (None, inf) when nothing runs. ``bound_ms``:
        a time the answer only matters below (the layer's time in its own precision):
        a candidate clearly slower stops timing early, as one clearly slower than the best
        candidate does (``time_ms``'s ``best_so_far``)."""
        shapes = tuple(None if x is None else tuple(x.shape) for x in inputs)
        dtypes = tuple(None if x is None else x.dtype.name for x in inputs)
        ckey = self._signature_key(layer, shapes, dtypes, precision, out_dtypes)
        hit = self.cache.get(ckey)
        if hit:
            ms = hit.get("ms", {}).get(hit["tactic"])
            if ms:                    # 0.0 / None: an untimed single-tactic entry
                return hit["tactic"], ms
        cands = [t for t in self._candidates(layer, shapes, dtypes, precision) if t is not T.HOST]
        with cudnn_tactics.plans_in_use(self.cudnn_plans):
            timed, best, best_ms, _ = self._time_or_held_back(layer, cands, inputs, precision, out_dtypes,
                                                              bound_ms)
        if best is None:
            return None, math.inf
        self.cache.put(ckey, best.name, timed)
        return best.name, best_ms

    def _time(self, layer, cands, inputs, precision, out_dtypes, best_ms=math.inf, bound_ms=math.inf):
        """({tactic name: ms}, fastest tactic or None, its ms) over ``cands``; a
        candidate that fails scores infinity, one clearly slower (than ``best_ms`` too,
        the best of an earlier round, or than ``bound_ms``) stops early."""
        timed, best = {}, None
        for t in cands:
            failed = []

            def run(t=t):
                try:           # compiling (prepare) and launching both happen in here
                    return t.run(self._prepared(layer, t), layer, inputs, precision, out_dtypes)
                except Exception as e:     # noqa: BLE001  (kept to say why, then re-raised)
                    failed.append(e)
                    raise
            try:
                ms = time_ms(run, min(best_ms, bound_ms), graph=self.graph_timing and t.capturable_for(layer))
            except Exception as e:     # noqa: BLE001  (the timer itself failed: skip)
                failed.append(e)
                ms = math.inf
            if failed and math.isinf(ms):
                self._tactic_failed(layer, t, failed[-1])
            timed[t.name] = ms
            if ms < best_ms:
                best, best_ms = t, ms
        return timed, best, best_ms

    def _time_or_held_back(self, layer, cands, inputs, precision, out_dtypes, bound_ms=math.inf):
        """``_time`` over ``cands``; then, where our general FP16 tiles were held back for
        kernels that outrun them (tiles_where_specialised off: ``T.held_back``) but none of
        those ran (every cuDNN plan failed, say), over those tiles too (they compile here:
        precompile did not list them). Returns ({tactic name: ms}, fastest or None, its ms,
        the tactics timed)."""
        timed, best, best_ms = self._time(layer, cands, inputs, precision, out_dtypes, bound_ms=bound_ms)
        if any(getattr(t, "outruns_general_tiles", False) and timed.get(t.name, math.inf) < math.inf
               for t in cands):
            return timed, best, best_ms, list(cands)
        shapes = tuple(None if x is None else tuple(x.shape) for x in inputs)
        dtypes = tuple(None if x is None else x.dtype.name for x in inputs)
        held = [t for t in T.held_back(layer, shapes, dtypes, precision, self.tf32) if t.name not in timed]
        if held:
            log.info("%s: no kernel the general tiles were held back for ran it; timing those %d tiles",
                     layer.name, len(held))
            more, other, other_ms = self._time(layer, held, inputs, precision, out_dtypes, best_ms, bound_ms)
            timed.update(more)
            if other_ms < best_ms:
                best, best_ms = other, other_ms
        return timed, best, best_ms, list(cands) + held

    def _time_with_fallbacks(self, layer, cands, inputs, precision, out_dtypes):
        """``_time`` over the specialised candidates first; the fallbacks (``fallback``
        tactics: the generic one, NumPy adapter code on CuPy arrays; the INT8 emulation;
        im2col + cuBLAS for convolutions) only when none of those ran, or none a CUDA
        graph can capture did while a fallback could. They never won where a specialised
        kernel ran (ResNet-50 b256, BERT b1/b32 records, H200: a generic convolution 7-17
        ms against 0.1-1.3 ms), and timing them cost a cold build their runs and the CuPy
        kernels they compile. Returns ({tactic: ms}, fastest or None, the tactics timed)."""
        fallbacks = [t for t in cands if t.fallback]
        special = [t for t in cands if t not in fallbacks]
        timed, best, best_ms, special = self._time_or_held_back(layer, special, inputs, precision, out_dtypes)
        ran_capturable = any(t.capturable_for(layer) and timed[t.name] < math.inf for t in special)
        if best is None or (not ran_capturable and any(t.capturable_for(layer) for t in fallbacks)):
            more, other, other_ms = self._time(layer, fallbacks, inputs, precision, out_dtypes, best_ms)
            timed.update(more)
            if other_ms < best_ms:
                best = other
        return timed, best, special + fallbacks

    def _with_held_back(self, layer, cands, shapes, dtypes, precision, *chosen):
        """``cands`` and, when a ``chosen`` name (the plan's, the timing cache's) is none of
        them, the general tiles held back (``T.held_back``): a layer whose cuDNN plans all
        failed chose among those."""
        names = {t.name for t in cands}
        if all(not n or n in names for n in chosen):
            return cands
        return cands + [t for t in T.held_back(layer, shapes, dtypes, precision, self.tf32) if t.name not in names]

    def _first_that_runs(self, layer, cands, inputs, precision, out_dtypes):
        """The first of ``cands`` (specialised tactics before the fallbacks) that runs on
        these inputs, untimed and not cached; the host tactic when none does."""
        for t in sorted(cands, key=lambda t: bool(t.fallback)):
            try:
                t.run(self._prepared(layer, t), layer, inputs, precision, out_dtypes)
                return t
            except Exception as e:     # noqa: BLE001  (said by _tactic_failed; the next one runs)
                self._tactic_failed(layer, t, e)
        log.warning("%s: every GPU tactic failed; running it on the host", layer.describe())
        return T.HOST

    def _tactic_failed(self, layer, tactic, exc):
        """A candidate that failed to compile, launch or allocate scores infinity: say
        why, and give back what it held (after an out-of-memory error the next
        candidate must not start from a pool full of the failed one's blocks)."""
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.tactic_failures.setdefault(layer.name, {})[tactic.name] = reason
        log.info("%s: tactic %s skipped (%s)", layer.name, tactic.name, reason)
        if is_out_of_memory(exc):
            self._state.pop((layer.name, tactic.name), None)
            free_device_cache()

    def _select(self, layer, inputs, shapes, dtypes, precision, out_dtypes, key):
        cands = self._candidates(layer, shapes, dtypes, precision)
        self._capturable[key] = next((t for t in cands if t.capturable_for(layer)), None)
        elided = self.elision.choose(layer, cands) if self.concat_elision and self.elision else None
        if elided is not None:               # a planned concat: the elided tactic, untimed
            self._capturable[key] = elided
            return elided
        forced = self.forced.get(layer.name) if self._at_build_shapes else None
        if forced:
            named = self._with_held_back(layer, cands, shapes, dtypes, precision, forced)
            ms = self.meta.get("tactic_ms", {}).get(layer.name, {})
            capt = [t for t in named if t.capturable_for(layer) and ms.get(t.name) is not None]
            if capt:
                self._capturable[key] = min(capt, key=lambda t: ms[t.name])
            for t in named:
                if t.name == forced:
                    return t
        ckey = self._signature_key(layer, shapes, dtypes, precision, out_dtypes)
        hit = self.cache.get(ckey)
        if hit:
            named = self._with_held_back(layer, cands, shapes, dtypes, precision, hit["tactic"])
            ms = hit.get("ms", {})
            capt = [t for t in named if t.capturable_for(layer) and ms.get(t.name) is not None]
            if capt:
                self._capturable[key] = min(capt, key=lambda t: ms[t.name])
            for t in named:
                if t.name == hit["tactic"]:
                    # the cached measurements stand for this layer's too (a repeated block's
                    # layers, a rebuild from the timing cache): reports read them per layer
                    self.timings[layer.name] = {k: (None if v is None or math.isinf(v) else v)
                                                for k, v in ms.items()}
                    return t
        fast = [t for t in cands if t is not T.HOST]
        if not self.autotune:                 # values wanted, not speed (INT8 calibration)
            self._capturable[key] = None
            return self._first_that_runs(layer, fast, inputs, precision, out_dtypes)
        if len(fast) == 1 and fast[0] in (T.GENERIC, T.INT8_EMULATION):
            # nothing to choose between: no timing, but it must run (a layer whose
            # reference code is NumPy-only raises on device arrays: host tactic)
            only = fast[0]
            try:
                only.run(self._prepared(layer, only), layer, inputs, precision, out_dtypes)
                timed, best = {only.name: 0.0}, only
                if not only.capturable_for(layer):
                    self._capturable[key] = None
            except Exception as e:     # noqa: BLE001
                self._tactic_failed(layer, only, e)
                log.info("%s: host tactic", layer.name)
                timed, best = {only.name: math.inf}, T.HOST
        else:
            timed, best, fast = self._time_with_fallbacks(layer, fast, inputs, precision, out_dtypes)
            if best is None:
                log.warning("%s: every GPU tactic failed; running it on the host", layer.describe())
                best = T.HOST
            capt = [t for t in fast if t.capturable_for(layer) and timed.get(t.name, math.inf) < math.inf]
            self._capturable[key] = min(capt, key=lambda t: timed[t.name]) if capt else None
        self.cache.put(ckey, best.name, timed)
        self.timings[layer.name] = {k: (None if math.isinf(v) else v) for k, v in timed.items()}
        log.debug("%s: chose %s from %s", layer.name, best.name, timed)
        return best

    # -- whole-engine execution with CUDA graphs -------------------------------------
    def execute(self, context, feeds, sched, stream=None):
        cp = self.cp
        self._note_shapes(feeds)
        key = tuple((n, tuple(a.shape), a.dtype.name) for n, a in feeds.items())
        graphs = context.__dict__.setdefault("_cuda_graphs", {})
        entry = graphs.get(key)
        if not self.use_graphs or context.profiler is not None or entry == "eager":
            with (stream or cp.cuda.get_current_stream()):
                return self._run_layers(context, feeds, sched)
        if entry is None:                        # first call: select, compile, upload
            with (stream or cp.cuda.get_current_stream()):
                outs = self._run_layers(context, feeds, sched)
            graphs[key] = "warm"
            return outs
        if entry == "warm":
            in_place, copied = self._in_place(context, feeds)
            entry = graphs[key] = self._graph_or_eager(context, feeds, sched, in_place)
            if entry != "eager":
                self._note_inputs(key, entry, copied)
        else:
            moved = [n for n in sorted(entry.in_place) if not _same_memory(feeds[n], entry.inputs[n])]
            if moved:
                del entry            # the old graph's last reference is _recapture's to drop
                entry = self._recapture(context, feeds, sched, graphs, key, moved)
        if entry == "eager":
            return self.execute(context, feeds, sched, stream)
        run_stream = stream or entry.stream
        # the feeds were uploaded on the caller's stream; the graph's own stream is
        # non-blocking, so without this wait its input copies (or its first layers, on
        # inputs read in place) could read a feed whose upload has not landed (seen on
        # an H200 under load: the previous call's inputs)
        _after_current_stream(cp, run_stream)
        with run_stream:
            for name, a in feeds.items():
                if name not in entry.in_place:   # read in place: the same memory (checked above)
                    cp.copyto(entry.inputs[name], a)
            entry.graph.launch(run_stream)
        if stream is None:
            run_stream.synchronize()
        return entry.outputs

    def _graph_or_eager(self, context, feeds, sched, in_place=None):
        """Decide, by measuring, between eager execution with the fastest tactic per
        layer and CUDA-graph replay with the fastest *capturable* tactic per layer
        (cuBLAS through CuPy cannot be captured). At large batches the kernels
        dominate and eager cuBLAS may win; at small ones launch overhead dominates
        and the graph wins. The graph reads ``in_place`` ({name: feed}) as it is."""
        cp = self.cp
        self._trace = []
        try:
            self._run_layers(context, feeds, sched)
        finally:
            layer_keys, self._trace = self._trace, None
        layers = {l.name: l for l in context.engine.network._layers}
        swaps = {k: self._capturable.get(k) for k in layer_keys
                 if not self._choice[k].capturable_for(layers[k[0]])}
        if any(v is None for v in swaps.values()):
            names = [k[0] for k, v in swaps.items() if v is None]
            self.graph_notes.append(f"eager: no graph-safe tactic for {names[:5]}")
            return "eager"

        def wall(fn, reps=5):
            fn()
            cp.cuda.get_current_stream().synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            cp.cuda.get_current_stream().synchronize()
            return (time.perf_counter() - t0) / reps
        eager_s = wall(lambda: self._run_layers(context, feeds, sched)) if swaps else None
        saved = {k: self._choice[k] for k in swaps}
        self._choice.update(swaps)
        graph = self._capture(context, feeds, sched, in_place)
        if graph == "eager":
            self._choice.update(saved)
            return "eager"
        if swaps:
            def replay():
                graph.graph.launch(graph.stream)
                graph.stream.synchronize()
            graph_s = wall(replay)
            log.info("%s: eager %.3f ms vs graph %.3f ms", context.engine, 1e3 * eager_s, 1e3 * graph_s)
            self.graph_notes.append(f"eager {1e3 * eager_s:.3f} ms vs graph {1e3 * graph_s:.3f} ms")
            if graph_s >= eager_s:
                self._choice.update(saved)
                return "eager"
        for k in swaps:
            self.selected[k[0]] = self._choice[k].name
        return graph

    def _capture(self, context, feeds, sched, in_place=None):
        """The engine captured on ``feeds``: ``in_place`` ({name: feed}) read as it is,
        the other feeds copied into private buffers, all under a private memory pool."""
        cp = self.cp
        in_place = in_place or {}
        pool = cp.cuda.MemoryPool()
        stream = cp.cuda.Stream(non_blocking=True)
        # rehearsal and capture share one auxiliary stream: its blocks in the private pool
        # are cached per stream, like the main stream's
        aux = AuxStream(cp) if self.aux_streams else None
        _after_current_stream(cp, stream)       # the feeds' uploads first (see execute)
        self._runs.aux = aux
        try:
            with cp.cuda.using_allocator(pool.malloc), stream:
                static = {n: in_place[n] if n in in_place else cp.empty_like(a)
                          for n, a in feeds.items()}
                for n, a in feeds.items():
                    if n not in in_place:
                        cp.copyto(static[n], a)
                # a rehearsal under the private pool caches exactly the blocks the
                # captured run will ask for, so capture allocates nothing new
                self._run_layers(context, static, sched)
                stream.synchronize()
                if aux is not None:
                    aux.issued.clear()       # the captured run's, not the rehearsal's
                stream.begin_capture()
                try:
                    outs = self._run_layers(context, static, sched)
                finally:
                    graph = stream.end_capture()
                graph.upload(stream)
                if aux is not None and aux.issued:
                    names = ", ".join(aux.issued[:4]) + (", ..." if len(aux.issued) > 4 else "")
                    key = tuple((n, tuple(a.shape), a.dtype.name) for n, a in feeds.items())
                    self.graph_notes.append(f"{_shapes(key)}: {len(aux.issued)} layers on an auxiliary "
                                            f"stream ({names})")
        except Exception as e:     # noqa: BLE001  (cuBLAS or a host sync inside: stay eager)
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.info("engine not captured into a CUDA graph (%s); running eagerly", why)
            self.graph_notes.append(f"eager: capture failed ({why})")
            return "eager"
        finally:
            self._runs.aux = None
        return _Graph(graph, static, outs, pool, stream, in_place, aux)

    def _in_place(self, context, feeds):
        """({name: feed} a graph may read in place, {name: why not} for the rest): a feed
        that is the caller's bound array itself (execute_async_v3; not a copy
        ``_check_inputs`` converted), C-contiguous (what a private buffer would be), on
        this device."""
        bound = getattr(context, "bound_feeds", None) or {}
        device = self.cp.cuda.Device().id
        take, why = {}, {}
        for n, a in feeds.items():
            if n not in bound:
                why[n] = "not a bound array"
            elif bound[n] is not a:
                why[n] = "converted from the bound array"
            elif not a.flags.c_contiguous:
                why[n] = "not C-contiguous"
            elif a.data.device_id != device:
                why[n] = f"on device {a.data.device_id}, not {device}"
            else:
                take[n] = a
        return take, why

    def _recapture(self, context, feeds, sched, graphs, key, moved):
        """The graph of ``key`` read ``moved`` in place and this call feeds other memory
        there. The caller's earlier arrays are never written, so the graph is dropped
        and captured again on private buffers, copied into on every replay from now on
        (once per shape). Returns the new graph, or "eager" when capture fails."""
        old = graphs.pop(key)
        # the old graph may still run on an earlier call's stream: wait for it before
        # its pool is freed and the caller's arrays it held are let go
        self.cp.cuda.Device().synchronize()
        pool = old.pool
        del old
        pool.free_all_blocks()
        self.graph_notes.append(f"{_shapes(key)}: {', '.join(moved)} fed from another array than "
                                "the bound one read in place; graph captured again, copies "
                                "every input from now on")
        graphs[key] = self._capture(context, feeds, sched)
        return graphs[key]

    def _note_inputs(self, key, graph, copied):
        """graph_notes: which inputs this shape's graph reads in place, which it copies and why."""
        parts = []
        if graph.in_place:
            parts.append(f"reads {', '.join(sorted(graph.in_place))} in place (zero-copy)")
        parts += [f"copies {n} ({copied[n]})" for n in sorted(set(graph.inputs) - graph.in_place)]
        self.graph_notes.append(f"{_shapes(key)}: graph " + "; ".join(parts))

    def save_timing_cache(self):
        self.cache.save()


def _shapes(key):
    """A graph key ((name, shape, dtype name), ...) as 'x (2, 3) float32, ...'."""
    return ", ".join(f"{n} {shape} {dtype}" for n, shape, dtype in key)


def _same_memory(a, b):
    """Whether ``a`` is the memory ``b`` is: the array objects may differ (a view)."""
    return (a.data.ptr == b.data.ptr and a.shape == b.shape and a.dtype == b.dtype
            and a.strides == b.strides)


def aux_streams_on(meta, switches):
    """Whether an engine of plan metadata ``meta`` captures side branches on an auxiliary
    stream: its max_aux_streams (BuilderConfig) where the build set one, else the switch."""
    limit = meta.get("max_aux_streams", -1)
    return switches.aux_streams if limit < 0 else limit > 0


class AuxStream:
    """A second stream the layer loop issues side branches on: ``issue(fn)`` runs ``fn``
    with the auxiliary stream current, after the work queued so far on the current
    stream (the fork), and returns the event the main stream later ``join``s."""

    def __init__(self, cp):
        self.cp = cp
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.issued = []        # the names of the layers issued here (graph notes)

    def _event(self):
        return self.cp.cuda.Event(disable_timing=True)

    def issue(self, fn, name=""):
        self.issued.append(name)
        main = self.cp.cuda.get_current_stream()
        self.stream.wait_event(main.record(self._event()))
        with self.stream:
            fn()
        return self.stream.record(self._event())

    def join(self, done):
        self.cp.cuda.get_current_stream().wait_event(done)


def _after_current_stream(cp, stream):
    """Make ``stream`` wait for the work queued so far on the current stream (a no-op
    when they are the same stream)."""
    current = cp.cuda.get_current_stream()
    if current.ptr != stream.ptr:
        stream.wait_event(current.record())
