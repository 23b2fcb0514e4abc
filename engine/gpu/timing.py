"""Tactic timing and the timing cache.

Timing (tinygrad's loop): warm up, then time with CUDA events and take the
median; stop early once a candidate is clearly slower than the best so far; a
candidate that raises scores infinity and is skipped, never fatal.

Host time out of the measurement: before each timed call a one-thread kernel holds the
stream for SPIN_MS, so the start event, the candidate's launch and the end event are all
queued before the GPU reaches them; the events then bracket GPU work only. Without it a
candidate's Python launch path landed between the two events: one unchanged FP16 kernel
measured 0.18 and 0.32 ms in two builds of one session, and the per-layer times of an INT8
ResNet-50 build summed to 11.5 ms for an engine that ran in 7.7 ms (with the spin: 7.2 ms
for an engine of 7.4 ms; H100, session 3).

The cache maps a key of (kernel version, GPU name, compute capability,
precision, layer signature, input shapes and dtypes, and the tactic switches set away
from their default: engine.settings.tactic_key()) to the chosen tactic, in
a JSON file shared safely between threads (a lock) and processes (merge on
save, atomic replace), as Polygraphy does with TensorRT's timing cache.
"""
import hashlib
import json
import logging
import math
import os
import tempfile
import threading

import numpy as np

log = logging.getLogger(__name__)

KERNEL_VERSION = 5        # bump when any tactic's code changes what it computes or how fast
# below this eager median a kernel hides behind its launch (CuPy's Python launch path
# costs ~10-20 us): a capturable candidate is re-timed inside a CUDA graph, as an
# engine replayed as a graph runs it
GRAPH_TIMING_BELOW_MS = 0.25
# ... and only when it is a contender: eager within this factor of the best score so far.
# The spin below keeps host launch time out of the eager figure, so eager and in-graph
# times differ by the GPU's per-launch gaps (microseconds), not by 2x; a candidate twice
# as slow as the best cannot win by replay. Re-timing every short candidate in a graph
# (10 rehearsal calls, a capture, 50 replays each) was most of the timing a b1 or b32
# first use paid, and of the short layers of a b256 build.
GRAPH_CONTENDER = 2.0
# ... plus this much: at small batch a kernel of a few microseconds can lose that much to
# per-launch gaps in eager timing, so tiny candidates stay contenders as before
GRAPH_CONTENDER_SLACK_MS = 0.02
SPIN_MS = 0.5             # how long the stream is held before each eager timed call

_SPIN_SOURCE = r"""
extern "C" __global__ void cupyrt_spin(long long cycles) {
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) { }
}
"""
_spin_kernels = {}


def _spin(stream):
    """Hold ``stream`` for about SPIN_MS (False when the kernel is not available)."""
    import cupy as cp  # optional dependency: timing needs a GPU
    dev = cp.cuda.Device().id
    entry = _spin_kernels.get(dev)
    if entry is None:
        try:
            kern = cp.RawKernel(_SPIN_SOURCE, "cupyrt_spin")
            khz = cp.cuda.Device(dev).attributes.get("ClockRate") or 2_000_000   # kHz
            entry = (kern, int(khz * SPIN_MS))
        except Exception as e:   # noqa: BLE001  (no compiler: time as before)
            log.debug("spin kernel unavailable: %s: %s", type(e).__name__, e)
            entry = (None, 0)
        _spin_kernels[dev] = entry
    kern, cycles = entry
    if kern is None:
        return False
    kern((1,), (1,), (np.int64(cycles),), stream=stream)
    return True


def time_ms(fn, best_so_far=math.inf, warmup=2, reps=9, graph=False):
    """Median milliseconds of ``fn()`` on the current stream; inf if it raises.
    ``graph``: ``fn`` is CUDA-graph safe; when it is short and within GRAPH_CONTENDER
    (+ GRAPH_CONTENDER_SLACK_MS) of ``best_so_far``, its time per call inside a captured
    graph is returned instead (``graph_time_ms``)."""
    eager = _eager_ms(fn, best_so_far, warmup, reps)
    if (graph and eager < GRAPH_TIMING_BELOW_MS
            and eager <= GRAPH_CONTENDER * best_so_far + GRAPH_CONTENDER_SLACK_MS):
        replayed = graph_time_ms(fn)
        if replayed is not None:
            return replayed
    return eager


def graph_time_ms(fn, inner=10, reps=5):
    """Median milliseconds per call of ``fn`` captured ``inner`` times into one CUDA
    graph and replayed (launch overhead out); None when ``fn`` cannot be captured.
    Allocations come from a private pool, rehearsed first so capture allocates
    nothing new (as the engine's own capture does)."""
    import cupy as cp  # optional dependency: timing needs a GPU
    pool = cp.cuda.MemoryPool()
    stream = cp.cuda.Stream(non_blocking=True)
    try:
        with cp.cuda.using_allocator(pool.malloc), stream:
            for _ in range(inner):
                fn()
            stream.synchronize()
            stream.begin_capture()
            try:
                for _ in range(inner):
                    fn()
            finally:
                graph = stream.end_capture()
            graph.upload(stream)
            graph.launch(stream)
            times = []
            for _ in range(reps):
                start, end = cp.cuda.Event(), cp.cuda.Event()
                start.record(stream)
                graph.launch(stream)
                end.record(stream)
                end.synchronize()
                times.append(cp.cuda.get_elapsed_time(start, end) / inner)
        return float(np.median(times))
    except Exception as e:       # noqa: BLE001  (cuBLAS or a host sync inside: eager timing)
        log.debug("graph timing not possible: %s: %s", type(e).__name__, e)
        return None
    finally:
        stream.synchronize()
        pool.free_all_blocks()


def _eager_ms(fn, best_so_far, warmup, reps):
    import cupy as cp  # optional dependency: timing needs a GPU
    try:
        for _ in range(warmup):
            fn()
        stream = cp.cuda.get_current_stream()
        times = []
        for _ in range(reps):
            start, end = cp.cuda.Event(), cp.cuda.Event()
            _spin(stream)                  # the host queues the rest while this runs
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end))
            if len(times) >= 3 and min(times) > 1.5 * best_so_far:
                break            # clearly slower than the best: stop paying for it
        return float(np.median(times))
    except Exception as e:       # noqa: BLE001  (a failing candidate is skipped)
        log.debug("tactic failed while timing: %s: %s", type(e).__name__, e)
        return math.inf


def is_out_of_memory(exc):
    """Whether ``exc`` is CuPy's (or the driver's) out-of-memory error, checked by name
    so that no CuPy import is needed to ask."""
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA_ERROR_OUT_OF_MEMORY" in str(exc)


def free_device_cache():
    """Return the cached blocks of CuPy's default memory pools to the device (after a
    candidate ran out of memory, the next one gets what the failed one held)."""
    try:
        import cupy as cp  # optional dependency: timing needs a GPU
        cp.get_default_memory_pool().free_all_blocks()
        cp.get_default_pinned_memory_pool().free_all_blocks()
    except Exception as e:       # noqa: BLE001  (nothing to free without CuPy)
        log.debug("memory pools not freed: %s: %s", type(e).__name__, e)


def layer_signature(layer, in_shapes, in_dtypes, precision, out_dtypes):
    """Everything a tactic's speed depends on, weights' values excluded."""
    attrs = {}
    for key, value in sorted(layer._attrs.items()):
        if isinstance(value, list) and value and hasattr(value[0], "layer"):   # a fused chain
            value = [layer_signature(op.layer, [], [], precision, [])["attrs"] | {
                "type": op.layer.layer_type.name, "side": op.side, "input": op.input_index,
                "const": None if op.const is None else list(op.const.shape)} for op in value]
        elif isinstance(value, np.ndarray):
            value = ["array", list(value.shape), value.dtype.name]
        elif isinstance(value, dict):
            value = sorted((k, list(v.shape)) if isinstance(v, np.ndarray) else (k, str(v))
                           for k, v in value.items())
        elif hasattr(value, "name"):
            value = value.name
        attrs[key] = value if isinstance(value, (int, float, str, list, tuple, type(None))) else str(value)
    return {"type": layer.layer_type.name, "attrs": attrs,
            "inputs": [None if s is None else list(s) for s in in_shapes],
            "dtypes": [None if d is None else str(d) for d in in_dtypes],
            "precision": precision.name, "outputs": [d.name for d in out_dtypes],
            "residual": len(layer._inputs) > 1 and layer._inputs[1] is not None}


class TimingCache:
    def __init__(self, path=None):
        self.path = path
        self.entries = {}
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        if path and os.path.exists(path):
            self.entries.update(self._read(path))

    @staticmethod
    def _read(path):
        try:
            with open(path) as f:
                doc = json.load(f)
            return doc.get("entries", {}) if doc.get("version") == KERNEL_VERSION else {}
        except (OSError, ValueError) as e:
            log.warning("timing cache %s unreadable (%s); starting empty", path, e)
            return {}

    @staticmethod
    def key(gpu, signature):
        text = json.dumps([KERNEL_VERSION, gpu, signature], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def get(self, key):
        with self._lock:
            entry = self.entries.get(key)
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
            return entry

    def peek(self, key):
        """The entry of ``key`` or None, not counted as a hit or miss (for planning)."""
        with self._lock:
            return self.entries.get(key)

    def put(self, key, tactic, times):
        with self._lock:
            self.entries[key] = {"tactic": tactic,
                                 "ms": {k: (None if math.isinf(v) else round(v, 5)) for k, v in times.items()}}

    def save(self):
        """Merge with what is on disk now (another process may have written) and
        replace the file atomically."""
        if not self.path:
            return
        with self._lock:
            merged = self._read(self.path) if os.path.exists(self.path) else {}
            merged.update(self.entries)
            folder = os.path.dirname(os.path.abspath(self.path))
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump({"version": KERNEL_VERSION, "entries": merged}, f, indent=0, sort_keys=True)
            os.replace(tmp, self.path)
