"""Fused convolutions as cuDNN graphs, through the cuDNN frontend's Python graph API
(the optional extra ``cupyrt[cudnn]``: ``nvidia-cudnn-frontend`` over cuDNN 9).

TensorRT treats cuDNN as one more tactic source; so do we. One graph per layer
shape computes, in one launch where cuDNN has a fused engine for it::

    X (NHWC fp16) --conv_fprop--> . --+bias (fp32)--> . --+R (optional)--> act --> Y (NHWC)

which is exactly the engine's fused convolution, y = act(conv(x) + bias + residual).
Unlike cuBLAS through CuPy, a cuDNN execution launches on the handle's stream with
no host synchronisation, so it can be captured into the engine's CUDA graph.

How a graph is chosen (tinygrad's honest loop, inside the one tactic): the frontend's
heuristics (mode A) rank the engine configurations; up to ``max_plans`` of them are
built (runtime-fusion engines compile here, seconds each, so building stops once
``build_budget_s`` is spent and one plan exists); each built plan is timed on the real
buffers with CUDA events (median of ``reps``) and the fastest kept; a plan that fails
to build or to run scores infinity. Built graphs live in a per-process cache keyed by
the shape signature and the device, so every layer of one shape, and the next build
in the same process, reuse them. Optionally (``CUPYRT_CUDNN_PLAN_CACHE=file.json``) the
chosen plan index is remembered across processes, so a later build compiles one plan
instead of several.

This module is a leaf, like the rest of kernels/: plain parameters and arrays in,
no engine imports. ``available()`` says whether the frontend can be used at all.
"""
import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import time

import numpy as np

log = logging.getLogger(__name__)

# fused activations a graph can end with: cupyrt's ActivationType name -> how the
# frontend spells it (a pointwise builder and its scalar attributes from alpha/beta)
ACTIVATIONS = {
    "RELU": ("relu", lambda a, b: {}),
    "LEAKY_RELU": ("relu", lambda a, b: {"negative_slope": float(a)}),
    "CLIP": ("relu", lambda a, b: {"lower_clip": float(a), "upper_clip": float(b)}),
    "SIGMOID": ("sigmoid", lambda a, b: {}),
    "TANH": ("tanh", lambda a, b: {}),
}
_DTYPES = ("float16", "float32")
PLAN_TIMING_REPS = 7


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """Everything a conv graph depends on (weights' values excluded). Shapes in the
    engine's logical order: input (n, c, h, w), filter (k, c, r, s); memory is NHWC / KRSC."""
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: tuple = (1, 1)
    pre_padding: tuple = (0, 0)
    post_padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    out_dtype: str = "float16"
    act: str = None
    alpha: float = 0.0
    beta: float = 0.0
    residual: bool = False
    out_ldc: int = 0          # channels between pixels of the output (0: packed, k); a concat's total

    def out_hw(self):
        """(P, Q) as cross-correlation with explicit pre/post padding gives them."""
        out = []
        for i, size in enumerate((self.h, self.w)):
            span = self.dilation[i] * ((self.r, self.s)[i] - 1) + 1
            out.append((size + self.pre_padding[i] + self.post_padding[i] - span) // self.stride[i] + 1)
        return tuple(out)

    def reason(self):
        """None when a cuDNN graph can express this convolution, else why not."""
        if self.act is not None and self.act not in ACTIVATIONS:
            return f"activation {self.act} not fused by the cuDNN graphs (they fuse {sorted(ACTIVATIONS)})"
        if self.out_dtype not in _DTYPES:
            return f"output dtype {self.out_dtype} (expected one of {_DTYPES})"
        if min(self.out_hw()) < 1:
            return f"empty output {self.out_hw()}"
        if self.out_ldc and self.out_ldc < self.k:
            return f"output row pitch {self.out_ldc} channels (expected 0 or at least k={self.k})"
        return None

    def key(self, device_name):
        text = json.dumps([dataclasses.astuple(self), device_name, frontend_version()], default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


# -- the frontend, imported once ---------------------------------------------------------

_frontend_state = {}
_lock = threading.Lock()


def _frontend():
    """The ``cudnn`` module, or None (with the reason kept) when it cannot be used."""
    if "module" not in _frontend_state:
        with _lock:
            if "module" not in _frontend_state:
                try:
                    import cudnn
                    version = cudnn.backend_version()
                    if version < 90000:
                        raise ImportError(f"cuDNN backend {version} (the graphs here need cuDNN 9)")
                    _frontend_state["module"] = cudnn
                except Exception as e:     # noqa: BLE001  (absent or broken: the tactic is off)
                    _frontend_state["module"] = None
                    _frontend_state["reason"] = f"{type(e).__name__}: {e}".splitlines()[0]
    return _frontend_state["module"]


def available():
    return _frontend() is not None


def unavailable_reason():
    """Why the cuDNN tactics are off (None when they are on)."""
    if _frontend() is not None:
        return None
    return ("the cuDNN frontend is not usable (pip install 'cupyrt[cudnn]'; "
            f"{_frontend_state.get('reason', 'not imported')})")


def frontend_version():
    cudnn = _frontend()
    return None if cudnn is None else f"{cudnn.__version__}/{cudnn.backend_version()}"


_handles = threading.local()


def _handle(cudnn, device_id):
    """One cuDNN handle per (thread, device): cuDNN forbids sharing one across threads."""
    per = getattr(_handles, "by_device", None)
    if per is None:
        per = _handles.by_device = {}
    h = per.get(device_id)
    if h is None:
        h = per[device_id] = cudnn.create_handle()
    return h


# -- choosing a plan ------------------------------------------------------------------------

def fastest(times):
    """(index, ms) of the smallest finite time in ``{index: ms}``; (None, inf) when none ran."""
    best, best_ms = None, math.inf
    for index in sorted(times):
        if times[index] < best_ms:
            best, best_ms = index, times[index]
    return best, best_ms


class PlanChoices:
    """The chosen plan index per graph key, optionally kept in a JSON file (merged on
    save and replaced atomically, as the timing cache is), so that a later process
    builds only the plan that won."""

    def __init__(self, path=None):
        self.path = path
        self.entries = {}
        self._lock = threading.Lock()
        if path and os.path.exists(path):
            self.entries.update(self._read(path))

    @staticmethod
    def _read(path):
        try:
            with open(path) as f:
                doc = json.load(f)
            return {k: int(v) for k, v in doc.get("plans", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warning("cuDNN plan cache %s unreadable (%s); starting empty", path, e)
            return {}

    def get(self, key):
        with self._lock:
            return self.entries.get(key)

    def put(self, key, index):
        with self._lock:
            self.entries[key] = int(index)
        self.save()

    def save(self):
        if not self.path:
            return
        with self._lock:
            merged = self._read(self.path) if os.path.exists(self.path) else {}
            merged.update(self.entries)
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump({"plans": merged}, f, indent=0, sort_keys=True)
            os.replace(tmp, self.path)


_choices = {}


def plan_choices():
    path = os.environ.get("CUPYRT_CUDNN_PLAN_CACHE") or None
    with _lock:
        if path not in _choices:
            _choices[path] = PlanChoices(path)
        return _choices[path]


# -- one fused convolution graph --------------------------------------------------------------

def _nhwc_stride(c, h, w):
    """Strides of an (N, C, H, W)-ordered descriptor over NHWC memory."""
    return [h * w * c, 1, w * c, c]


class ConvGraph:
    """A built cuDNN graph for one ConvSpec; ``run`` executes the chosen plan."""

    def __init__(self, spec, device_id=0, max_plans=4, build_budget_s=6.0):
        reason = spec.reason()
        if reason:
            raise ValueError(f"cuDNN conv graph for {spec}: {reason}")
        cudnn = _frontend()
        if cudnn is None:
            raise RuntimeError(unavailable_reason())
        self.spec, self.device_id, self.cudnn = spec, device_id, cudnn
        self.build_budget_s, self.max_plans = build_budget_s, max_plans
        self.plan_times = {}          # plan index -> ms (inf: failed)
        self.plan_names = {}
        self.build_seconds = 0.0
        self.index = None             # the chosen plan
        self._build_graph()

    def _build_graph(self):
        cudnn, sp = self.cudnn, self.spec
        half, fp32 = cudnn.data_type.HALF, cudnn.data_type.FLOAT
        out_t = half if sp.out_dtype == "float16" else fp32
        p, q = sp.out_hw()
        g = cudnn.pygraph(io_data_type=half, intermediate_data_type=fp32, compute_data_type=fp32,
                          handle=_handle(cudnn, self.device_id))
        self.X = g.tensor(name="X", dim=[sp.n, sp.c, sp.h, sp.w], stride=_nhwc_stride(sp.c, sp.h, sp.w),
                          data_type=half)
        self.W = g.tensor(name="W", dim=[sp.k, sp.c, sp.r, sp.s], stride=_nhwc_stride(sp.c, sp.r, sp.s),
                          data_type=half)
        y = g.conv_fprop(image=self.X, weight=self.W, pre_padding=list(sp.pre_padding),
                         post_padding=list(sp.post_padding), stride=list(sp.stride),
                         dilation=list(sp.dilation), compute_data_type=fp32, name="conv")
        self.B = g.tensor(name="B", dim=[1, sp.k, 1, 1], stride=[sp.k, 1, sp.k, sp.k], data_type=fp32)
        y = g.bias(input=y, bias=self.B, name="bias")
        self.R = None
        if sp.residual:
            self.R = g.tensor(name="R", dim=[sp.n, sp.k, p, q], stride=_nhwc_stride(sp.k, p, q),
                              data_type=out_t)
            y = g.add(a=y, b=self.R, name="residual")
        if sp.act is not None:
            op, params = ACTIVATIONS[sp.act]
            y = getattr(g, op)(input=y, name="act", **params(sp.alpha, sp.beta))
        y.set_output(True).set_data_type(out_t)
        # a concat's slice: pixels ``out_ldc`` channels apart (the pointer carries the offset)
        y.set_dim([sp.n, sp.k, p, q]).set_stride(_nhwc_stride(sp.out_ldc or sp.k, p, q))
        self.Y = y
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        g.check_support()
        self.graph = g
        self.plan_count = g.get_execution_plan_count()

    def _pack(self, x, w, bias, residual, y):
        pack = {self.X: x.data.ptr, self.W: w.data.ptr, self.B: bias.data.ptr, self.Y: y.data.ptr}
        if self.R is not None:
            pack[self.R] = residual.data.ptr
        return pack

    def choose(self, x, w, bias, residual, y, known_index=None):
        """Build plans and keep the fastest on these buffers (``known_index``: a plan
        chosen earlier, built alone). Returns the chosen index; raises RuntimeError
        when no plan builds and runs."""
        import cupy as cp
        g, cudnn = self.graph, self.cudnn
        indices = [known_index] if known_index is not None else range(self.plan_count)
        built, t0 = [], time.perf_counter()
        for i in indices:
            if len(built) >= self.max_plans:
                break
            if built and time.perf_counter() - t0 > self.build_budget_s:
                log.info("cuDNN graph %s: build budget %.1f s spent after %d plans", self.spec,
                         self.build_budget_s, len(built))
                break
            try:
                g.build_plan_at_index(i)
                self.plan_names[i] = g.get_plan_name_at_index(i)
                built.append(i)
            except Exception as e:          # noqa: BLE001  (a plan that does not build is skipped)
                log.debug("cuDNN plan %d of %s did not build: %s", i, self.spec, e)
                self.plan_times[i] = math.inf
        self.build_seconds += time.perf_counter() - t0
        pack = self._pack(x, w, bias, residual, y)
        stream = cp.cuda.get_current_stream()
        handle = _handle(cudnn, self.device_id)
        cudnn.set_stream(handle, stream.ptr)
        for i in built:
            self.plan_times[i] = self._time_plan(i, pack, handle, stream)
        best, best_ms = fastest(self.plan_times)
        if best is None:
            raise RuntimeError(f"no cuDNN plan of {self.plan_count} built and ran for {self.spec}")
        g.build_plan_at_index(best)        # select it (built already: no compile)
        self.index = best
        self.workspace = g.get_workspace_size_plan_at_index(best)
        log.debug("cuDNN graph %s: plan %d (%s) %.4f ms of %s", self.spec, best,
                  self.plan_names.get(best), best_ms, self.plan_times)
        return best

    def _time_plan(self, index, pack, handle, stream):
        import cupy as cp
        try:
            ws_bytes = self.graph.get_workspace_size_plan_at_index(index)
            ws = cp.empty(max(ws_bytes, 1), cp.uint8)
            run = lambda: self.graph.execute_plan_at_index(pack, ws.data.ptr, index, handle)  # noqa: E731
            run()
            stream.synchronize()
            times = []
            for _ in range(PLAN_TIMING_REPS):
                a, b = cp.cuda.Event(), cp.cuda.Event()
                a.record(stream)
                run()
                b.record(stream)
                b.synchronize()
                times.append(cp.cuda.get_elapsed_time(a, b))
            return float(np.median(times))
        except Exception as e:              # noqa: BLE001  (a plan that fails to run scores inf)
            log.debug("cuDNN plan %d of %s failed to run: %s", index, self.spec, e)
            return math.inf

    def run(self, x, w, bias, residual, y):
        """Execute the chosen plan on the current CuPy stream (capturable: no sync)."""
        import cupy as cp
        stream = cp.cuda.get_current_stream()
        handle = _handle(self.cudnn, self.device_id)
        self.cudnn.set_stream(handle, stream.ptr)
        ws = cp.empty(max(self.workspace, 1), cp.uint8)
        self.graph.execute(self._pack(x, w, bias, residual, y), ws.data.ptr, handle=handle)
        return y


_graphs = {}
_graphs_lock = threading.Lock()


def _device_name(device_id):
    import cupy as cp
    props = cp.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def conv2d_fused(x_nhwc, w_krsc, bias, spec, residual=None, out=None, max_plans=None,
                 build_budget_s=None):
    """y[n, p, q, k] = act(conv(x) + bias + residual) through a cuDNN graph.

    ``x_nhwc`` (N, H, W, C) float16, ``w_krsc`` (K, R, S, C) float16, ``bias`` (K,)
    float32, ``residual`` (N, P, Q, K) of ``spec.out_dtype``, all C-contiguous device
    arrays; ``out`` (N, P, Q, K) may be a channel slice of a wider NHWC buffer whose pixel
    pitch is ``spec.out_ldc`` channels (concat elision). The first call for a spec (per device and process) builds and times the
    plans on these buffers; never call that first one inside a CUDA-graph capture."""
    import cupy as cp
    device_id = cp.cuda.Device().id
    p, q = spec.out_hw()
    want = {"x": ((spec.n, spec.h, spec.w, spec.c), np.float16, x_nhwc),
            "w": ((spec.k, spec.r, spec.s, spec.c), np.float16, w_krsc),
            "bias": ((spec.k,), np.float32, bias)}
    if spec.residual:
        want["residual"] = ((spec.n, p, q, spec.k), np.dtype(spec.out_dtype), residual)
    elif residual is not None:
        raise ValueError("a residual was given to a graph built without one (spec.residual False)")
    for name, (shape, dtype, arr) in want.items():
        if arr is None or tuple(arr.shape) != shape or arr.dtype != dtype or not arr.flags.c_contiguous:
            found = "None" if arr is None else f"{arr.dtype} {tuple(arr.shape)} contiguous={arr.flags.c_contiguous}"
            raise ValueError(f"cuDNN conv {name}: found {found}, expected C-contiguous "
                             f"{np.dtype(dtype).name} {shape}")
    if out is not None:
        ldc = spec.out_ldc or spec.k
        item = np.dtype(spec.out_dtype).itemsize
        pitch = (p * q * ldc * item, q * ldc * item, ldc * item, item)
        if tuple(out.shape) != (spec.n, p, q, spec.k) or out.dtype != spec.out_dtype \
                or (out.size and tuple(out.strides) != pitch):
            raise ValueError(f"cuDNN conv out: found {out.dtype} {tuple(out.shape)} strides {out.strides}, "
                             f"expected {spec.out_dtype} {(spec.n, p, q, spec.k)} strides {pitch}")
    y = out if out is not None else cp.empty((spec.n, p, q, spec.k), spec.out_dtype)
    key = (spec, device_id)
    graph = _graphs.get(key)
    if isinstance(graph, str):               # failed before: do not compile it again
        raise RuntimeError(graph)
    if graph is None:
        if cp.cuda.get_current_stream().is_capturing():
            raise RuntimeError(f"cuDNN graph for {spec} not built before CUDA-graph capture")
        with _graphs_lock:
            graph = _graphs.get(key)
            if graph is None:
                try:
                    graph = _build(spec, device_id, x_nhwc, w_krsc, bias, residual, y,
                                   max_plans, build_budget_s)
                except Exception as e:
                    _graphs[key] = f"cuDNN graph for {spec} failed: {type(e).__name__}: {e}"
                    raise
                _graphs[key] = graph
            elif isinstance(graph, str):
                raise RuntimeError(graph)
    return graph.run(x_nhwc, w_krsc, bias, residual, y)


def _build(spec, device_id, x_nhwc, w_krsc, bias, residual, y, max_plans, build_budget_s):
    graph = ConvGraph(spec, device_id,
                      max_plans=max_plans or int(os.environ.get("CUPYRT_CUDNN_MAX_PLANS", "4")),
                      build_budget_s=build_budget_s or float(os.environ.get("CUPYRT_CUDNN_BUILD_BUDGET_S", "6")))
    choices, ckey = plan_choices(), spec.key(_device_name(device_id))
    known = choices.get(ckey)
    if known is not None and not 0 <= known < graph.plan_count:
        known = None
    chosen = graph.choose(x_nhwc, w_krsc, bias, residual, y, known_index=known)
    if known is None:
        choices.put(ckey, chosen)
    return graph


def graph_for(spec, device_id=0):
    """The built graph of ``spec`` in this process (None before its first run)."""
    graph = _graphs.get((spec, device_id))
    return graph if isinstance(graph, ConvGraph) else None


def clear():
    """Forget built graphs (tests; frees their plans)."""
    with _graphs_lock:
        _graphs.clear()
