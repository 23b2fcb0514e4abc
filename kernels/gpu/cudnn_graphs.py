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
built; each built plan is timed on the real buffers with CUDA events (median of
``reps``) and the fastest kept; a plan that fails to build or to run scores infinity.

Where the time goes: a runtime-fusion plan compiles CUDA code inside cuDNN (0.3-0.9 s
each; 35 s of a 56 s ResNet-50 FP16 build, H200), and the frontend's binding holds the
GIL throughout, so worker *processes* build them (kernels/gpu/cudnn_workers.py):
``prefetch`` queues a graph's candidates as soon as the engine knows the layer; the first
``conv2d_fused`` of the spec deserializes what they built (no compile) and times it; what
they could not build or serialize is built here, in order, within ``build_budget_s``.
Built graphs live in a per-process registry keyed by spec, device and plan count (an
A/B of ``max_plans`` in one process builds each side's own); a ``store`` (the
engine's, over its timing cache) keeps the chosen plan serialized across processes.

This module is a leaf, like the rest of kernels/: plain parameters and arrays in,
no engine imports, no environment switches read. ``available()`` says whether the
frontend can be used at all.
"""
import base64
import concurrent.futures as futures
import dataclasses
import hashlib
import json
import logging
import math
import threading
import time

import numpy as np

from .compile import offline_cudnn

log = logging.getLogger(__name__)

# fused activations a graph can end with: cupyrt's ActivationType name -> how the
# frontend spells it (a pointwise builder and its scalar attributes from alpha/beta)
ACTIVATIONS = {
    "RELU": ("relu", lambda a, b: {}),
    "LEAKY_RELU": ("relu", lambda a, b: {"negative_slope": float(a)}),
    "CLIP": ("relu", lambda a, b: {"lower_clip": float(a), "upper_clip": float(b)}),
    "SIGMOID": ("sigmoid", lambda a, b: {}),
    "TANH": ("tanh", lambda a, b: {}),
    "GELU_ERF": ("gelu", lambda a, b: {}),                    # cuDNN's GELU is the erf form
    "GELU_TANH": ("gelu_approx_tanh", lambda a, b: {}),
}
_DTYPES = ("float16", "float32")
PLAN_TIMING_REPS = 7
# fixed tensor uids: a plan built and serialized in a worker process executes here
# with a variant pack keyed by uid (the deserialized graph has no tensor objects)
UIDS = {"X": 1, "W": 2, "B": 3, "R": 4, "Y": 5}
# how long the first plan of a prefetched graph may take before it is built here instead
FIRST_PLAN_TIMEOUT_S = 180.0


@dataclasses.dataclass(frozen=True)
class ConvWindow:
    """A 2-D convolution's shapes and window, as every conv graph spec starts: input
    (n, c, h, w) and filter (k, c, r, s) in the engine's logical order."""
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

    def out_hw(self):
        """(P, Q) as cross-correlation with explicit pre/post padding gives them."""
        out = []
        for i, size in enumerate((self.h, self.w)):
            span = self.dilation[i] * ((self.r, self.s)[i] - 1) + 1
            out.append((size + self.pre_padding[i] + self.post_padding[i] - span) // self.stride[i] + 1)
        return tuple(out)


@dataclasses.dataclass(frozen=True)
class ConvSpec(ConvWindow):
    """Everything a conv graph depends on (weights' values excluded); memory is NHWC / KRSC."""
    out_dtype: str = "float16"
    act: str = None
    alpha: float = 0.0
    beta: float = 0.0
    residual: bool = False
    out_ldc: int = 0          # channels between pixels of the output (0: packed, k); a concat's total

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

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc):
        """The spec ``to_json`` gave (JSON turned its tuples into lists)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items() if k != "kind"})


# spec kinds by the "kind" their to_json writes (none: a ConvSpec); other kinds add
# themselves (kernels/gpu/cudnn_matmul.py), each with a ``define(cudnn, handle)``
SPEC_KINDS = {"conv": ConvSpec}


def spec_from_json(doc):
    """A spec of any kind from its ``to_json``; ValueError for an unknown kind."""
    kind = doc.get("kind", "conv")
    if kind not in SPEC_KINDS:
        raise ValueError(f"cuDNN graph spec of kind {kind!r}: expected one of {sorted(SPEC_KINDS)}")
    return SPEC_KINDS[kind].from_json(doc)


# -- the frontend, imported once ---------------------------------------------------------

_frontend_state = {}
_lock = threading.Lock()


def _frontend():
    """The ``cudnn`` module, or None (with the reason kept) when it cannot be used."""
    if "module" not in _frontend_state:
        with _lock:
            if "module" not in _frontend_state:
                try:
                    import cudnn     # the optional frontend: absent, the tactic is off
                    version = cudnn.backend_version()
                    if version < 90000:
                        raise ImportError(f"cuDNN backend {version} (the graphs here need cuDNN 9)")
                    _frontend_state["module"] = cudnn
                except Exception as e:     # noqa: BLE001  (absent or broken: the tactic is off)
                    _frontend_state["module"] = None
                    _frontend_state["reason"] = f"{type(e).__name__}: {e}".splitlines()[0]
    return _frontend_state["module"]


def available():
    """Whether the frontend loads (under ``compile.offline``: whether the device it stands
    for has it)."""
    assumed = offline_cudnn()
    if assumed is not None:
        return assumed
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


# -- serialized plans (built in one process, run in another) ---------------------------------

def encode_blob(data):
    """A serialized plan as JSON-safe text; the frontend returns bytes, a list of byte
    values, or (older versions) a JSON string."""
    if isinstance(data, str):
        return {"str": data}
    return {"b64": base64.b64encode(bytes(data)).decode("ascii")}


def decode_blob(doc):
    return doc["str"] if "str" in doc else base64.b64decode(doc["b64"])


def runtime_compiled(cudnn, graph, index):
    """Whether plan ``index`` is a runtime-compiled (runtime-fusion) engine: only those
    serialize (frontend 1.1 release notes: "Serialization is only supported on Runtime
    compiled engines"); a blob of another engine crashed deserialize on an H200
    (frontend 1.32, cuDNN 9.19), and those build in milliseconds anyway."""
    try:
        notes = graph.get_behavior_notes_for_plan_at_index(index)
    except Exception as e:                  # noqa: BLE001  (unknown: treated as not serializable)
        log.debug("behaviour notes of plan %d unavailable: %s", index, e)
        return False
    want = getattr(getattr(cudnn, "behavior_note", None), "RUNTIME_COMPILATION", None)
    return any((want is not None and n == want) or "RUNTIME_COMPILATION" in str(n) for n in notes)


def serialize_plan(graph):
    """The graph's selected plan, serialized."""
    try:
        return graph.serialize(as_bytes=True)
    except TypeError:                      # frontends before the as_bytes keyword
        return graph.serialize()


# -- one fused convolution graph --------------------------------------------------------------

def _nhwc_stride(c, h, w):
    """Strides of an (N, C, H, W)-ordered descriptor over NHWC memory."""
    return [h * w * c, 1, w * c, c]


def define_graph(cudnn, spec, handle):
    """The operation graph of ``spec`` with the heuristics' ranked plan list (no plan
    built yet: that is the expensive part). Returns (graph, {name: tensor})."""
    if not isinstance(spec, ConvSpec):
        return spec.define(cudnn, handle)
    half, fp32 = cudnn.data_type.HALF, cudnn.data_type.FLOAT
    out_t = half if spec.out_dtype == "float16" else fp32
    p, q = spec.out_hw()
    g = cudnn.pygraph(io_data_type=half, intermediate_data_type=fp32, compute_data_type=fp32,
                      handle=handle)
    t = {}
    t["X"] = g.tensor(name="X", dim=[spec.n, spec.c, spec.h, spec.w],
                      stride=_nhwc_stride(spec.c, spec.h, spec.w), data_type=half)
    t["W"] = g.tensor(name="W", dim=[spec.k, spec.c, spec.r, spec.s],
                      stride=_nhwc_stride(spec.c, spec.r, spec.s), data_type=half)
    y = g.conv_fprop(image=t["X"], weight=t["W"], pre_padding=list(spec.pre_padding),
                     post_padding=list(spec.post_padding), stride=list(spec.stride),
                     dilation=list(spec.dilation), compute_data_type=fp32, name="conv")
    t["B"] = g.tensor(name="B", dim=[1, spec.k, 1, 1], stride=[spec.k, 1, spec.k, spec.k], data_type=fp32)
    y = g.bias(input=y, bias=t["B"], name="bias")
    if spec.residual:
        t["R"] = g.tensor(name="R", dim=[spec.n, spec.k, p, q], stride=_nhwc_stride(spec.k, p, q),
                          data_type=out_t)
        y = g.add(a=y, b=t["R"], name="residual")
    if spec.act is not None:
        op, params = ACTIVATIONS[spec.act]
        y = getattr(g, op)(input=y, name="act", **params(spec.alpha, spec.beta))
    y.set_output(True).set_data_type(out_t)
    # a concat's slice: pixels ``out_ldc`` channels apart (the pointer carries the offset)
    y.set_dim([spec.n, spec.k, p, q]).set_stride(_nhwc_stride(spec.out_ldc or spec.k, p, q))
    t["Y"] = y
    return finish_graph(cudnn, g, t)


def finish_graph(cudnn, g, tensors):
    """Give the graph's tensors their fixed uids, check it and rank its plans (none built)."""
    for name, tensor in tensors.items():
        tensor.set_uid(UIDS[name])
    g.validate()
    g.build_operation_graph()
    g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    g.check_support()
    return g, tensors


def fastest(times):
    """(index, ms) of the smallest finite time in ``{index: ms}``; (None, inf) when none ran."""
    best, best_ms = None, math.inf
    for index in sorted(times):
        if times[index] < best_ms:
            best, best_ms = index, times[index]
    return best, best_ms


def collect(pending, budget_s, first_timeout_s=FIRST_PLAN_TIMEOUT_S, clock=time.monotonic):
    """Worker results of one graph, ``{index: result}``, from ``{index: future}``: waits
    up to ``first_timeout_s`` for the first plan, then at most ``budget_s`` more for the
    rest (the serial loop's rule, "stop once the budget is spent and one plan exists").
    Futures not done by then are cancelled (a running one finishes in its worker and is
    dropped); one that raised counts as not built."""
    results, left = {}, dict(pending)
    deadline = clock() + first_timeout_s
    while left:
        done, _ = futures.wait(left.values(), timeout=max(0.0, deadline - clock()),
                               return_when=futures.FIRST_COMPLETED)
        if not done:
            break
        for index, fut in list(left.items()):
            if fut in done:
                del left[index]
                try:
                    result = fut.result()
                except Exception as e:      # noqa: BLE001  (the worker died: built here instead)
                    result = {"worker_error": f"{type(e).__name__}: {e}"}
                if "worker_error" in result:
                    log.info("cuDNN plan %d: worker failed (%s); built here", index, result["worker_error"])
                else:
                    results[index] = result
        if any("error" not in r for r in results.values()) and deadline > clock() + budget_s:
            deadline = clock() + budget_s   # one plan exists: the budget bounds the rest
    for fut in left.values():
        fut.cancel()
    return results


class ConvGraph:
    """A cuDNN graph for one ConvSpec: its plans (built here, or built elsewhere and
    deserialized), their times, and the chosen one, which ``run`` executes."""

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
        self.plan_build_seconds = {}  # plan index -> seconds compiling it, wherever it ran (CPU)
        self.wait_seconds = 0.0       # this process's wall time to have them (builds + waiting)
        self.deserialized = 0         # plans that arrived built (workers, the store)
        self.index = None             # the chosen plan
        self._plans = {}              # index -> None (built in self.graph) or a deserialized graph
        self._blobs = {}              # index -> encoded blob of a deserialized plan
        self.known_failed = False     # the plan chosen before did not load, build or run here
        self._defined = None          # (graph, tensors, plan count): defined on first need

    # the operation graph and the heuristics' plan list, made on first use: a stored plan
    # that deserializes needs neither (the heuristics query took 43 ms a graph, 1.0 of the 4.2 s
    # of a ResNet-50 INT8 rebuild in a new process; H100, session 15)
    def _definition(self):
        if self._defined is None:
            graph, tensors = define_graph(self.cudnn, self.spec, _handle(self.cudnn, self.device_id))
            self._defined = (graph, tensors, graph.get_execution_plan_count())
        return self._defined

    @property
    def graph(self):
        return self._definition()[0]

    @property
    def tensors(self):
        return self._definition()[1]

    @property
    def plan_count(self):
        return self._definition()[2]

    @property
    def build_seconds(self):
        """Seconds compiling this graph's plans, wherever they ran (CPU seconds)."""
        return sum(self.plan_build_seconds.values())

    def _spent(self, index, seconds):
        self.plan_build_seconds[index] = self.plan_build_seconds.get(index, 0.0) + seconds

    # -- having plans -------------------------------------------------------------------
    def adopt(self, index, blob, name=None, seconds=0.0):
        """Take a plan built elsewhere (an encoded blob); False when it cannot be loaded."""
        handle = _handle(self.cudnn, self.device_id)
        try:
            g = self.cudnn.pygraph(handle=handle)
            data = decode_blob(blob)
            try:
                g.deserialize(handle, data)
            except TypeError:                 # frontends that take a list of byte values
                g.deserialize(handle, list(data))
        except Exception as e:                # noqa: BLE001  (built here instead)
            log.info("cuDNN plan %d of %s did not deserialize (%s: %s)", index, self.spec, type(e).__name__, e)
            return False
        self._plans[index], self._blobs[index] = g, blob
        self.plan_names[index] = name
        self._spent(index, seconds)
        self.deserialized += 1
        return True

    def build_local(self, index):
        """Build plan ``index`` here; False (and an infinite time) when it does not build."""
        t0 = time.perf_counter()
        try:
            self.graph.build_plan_at_index(index)
            self.plan_names[index] = self.graph.get_plan_name_at_index(index)
            self._plans[index] = None
            return True
        except Exception as e:          # noqa: BLE001  (a plan that does not build is skipped)
            log.debug("cuDNN plan %d of %s did not build: %s", index, self.spec, e)
            self.plan_times[index] = math.inf
            return False
        finally:
            self._spent(index, time.perf_counter() - t0)

    def gather(self, results=None, known=None):
        """Have the candidate plans: ``known`` = (index, blob or None) chosen by an earlier
        process (that plan alone); else the workers' ``results`` ({index: result}) first,
        then plans built here in heuristic order until ``max_plans`` exist or the budget is
        spent with one built. Returns the indices to time. The handle's stream must be
        a live one (``choose`` sees to it)."""
        t0 = time.perf_counter()
        if known is not None:
            index, blob = known
            adopted = blob is not None and self.adopt(index, blob, name="(stored)")
            if blob is not None and not adopted:
                self.known_failed = True          # its blob is no good here: the store gets a new one
            got = adopted or (0 <= index < self.plan_count and self.build_local(index))
            self.wait_seconds += time.perf_counter() - t0
            return [index] if got else []
        tried = set()
        for index, r in sorted((results or {}).items()):
            if "error" in r:
                if index < self.plan_count:
                    tried.add(index)
                    self.plan_times[index] = math.inf
                continue
            if r.get("blob") is not None and self.adopt(index, r["blob"], r.get("name"), r.get("seconds", 0.0)):
                tried.add(index)
            # not serializable or not loadable: the loop below builds it here
        window = plan_window(self.spec, self.max_plans)
        # the window's plans first; those before it only while the window has too few
        order = list(range(window.start, self.plan_count)) + list(range(min(window.start, self.plan_count)))
        for index in order:
            if len(self._plans) >= len(window):
                break
            if self._plans and time.perf_counter() - t0 > self.build_budget_s:
                log.info("cuDNN graph %s: build budget %.1f s spent with %d plans", self.spec,
                         self.build_budget_s, len(self._plans))
                break
            if index not in tried and index not in self._plans:
                self.build_local(index)
        self.wait_seconds += time.perf_counter() - t0
        return sorted(self._plans)

    # -- choosing ------------------------------------------------------------------------
    def choose(self, x, w, bias, residual, y, results=None, known=None):
        """Have the plans (``gather``), time them on these buffers and keep the fastest.
        Returns the chosen index; raises RuntimeError when no plan builds and runs."""
        import cupy as cp     # optional: only where a GPU runs the graph
        stream = cp.cuda.get_current_stream()
        handle = _handle(self.cudnn, self.device_id)
        # before anything uses the handle: it may still name a stream that is gone (timing
        # on a private stream set it, then freed it), and deserializing a plan on such a
        # handle crashed the process (H200, frontend 1.32, cuDNN 9.19)
        self.cudnn.set_stream(handle, stream.ptr)
        indices = self.gather(results, known)
        for i in indices:
            self.plan_times[i] = self._time_plan(i, x, w, bias, residual, y, handle, stream)
        best, best_ms = fastest(self.plan_times)
        if best is None and known is not None:
            # the plan chosen before (another process, an engine's plan file) does not load,
            # build or run here (another cuDNN, driver or heuristics): choose again as if new
            log.info("cuDNN graph %s: stored plan %d unusable here; choosing again", self.spec, known[0])
            self.known_failed = True
            for i in self.gather(results, None):
                if i not in self.plan_times:          # the failed one keeps its infinite time
                    self.plan_times[i] = self._time_plan(i, x, w, bias, residual, y, handle, stream)
            best, best_ms = fastest(self.plan_times)
        if best is None:
            raise RuntimeError(f"no cuDNN plan of {self.plan_count} built and ran for {self.spec}")
        if self._plans[best] is None:
            self.graph.build_plan_at_index(best)        # select it (built already: no compile)
        self.index = best
        self.workspace = self._workspace(best)
        log.debug("cuDNN graph %s: plan %d (%s) %.4f ms of %s", self.spec, best,
                  self.plan_names.get(best), best_ms, self.plan_times)
        return best

    def chosen_blob(self):
        """The chosen plan serialized (encoded), or None when it does not serialize."""
        if self.index in self._blobs:
            return self._blobs[self.index]
        if not runtime_compiled(self.cudnn, self.graph, self.index):
            return None
        try:
            return encode_blob(serialize_plan(self.graph))   # self.graph has the chosen plan selected
        except Exception as e:              # noqa: BLE001  (the store keeps the index alone)
            log.debug("cuDNN plan %s of %s does not serialize: %s", self.index, self.spec, e)
            return None

    def _workspace(self, index):
        g = self._plans[index]
        return g.get_workspace_size() if g is not None else self.graph.get_workspace_size_plan_at_index(index)

    def _pack(self, x, w, bias, residual, y):
        if hasattr(self.spec, "variant_pack"):      # a kind with operands of its own (cudnn_int8)
            return self.spec.variant_pack(x, w, bias, residual, y)
        pack = {UIDS["X"]: x.data.ptr, UIDS["W"]: w.data.ptr, UIDS["B"]: bias.data.ptr, UIDS["Y"]: y.data.ptr}
        if self.spec.residual:
            pack[UIDS["R"]] = residual.data.ptr
        return pack

    def _launch(self, index, pack, ws_ptr, handle):
        g = self._plans[index]
        if g is None:
            self.graph.execute_plan_at_index(pack, ws_ptr, index, handle)
        else:
            g.execute(pack, ws_ptr, handle=handle)

    def _time_plan(self, index, x, w, bias, residual, y, handle, stream):
        import cupy as cp     # optional: only where a GPU runs the graph
        try:
            ws = cp.empty(max(self._workspace(index), 1), cp.uint8)
            pack = self._pack(x, w, bias, residual, y)
            self._launch(index, pack, ws.data.ptr, handle)
            stream.synchronize()
            times = []
            for _ in range(PLAN_TIMING_REPS):
                a, b = cp.cuda.Event(), cp.cuda.Event()
                a.record(stream)
                self._launch(index, pack, ws.data.ptr, handle)
                b.record(stream)
                b.synchronize()
                times.append(cp.cuda.get_elapsed_time(a, b))
            return float(np.median(times))
        except Exception as e:              # noqa: BLE001  (a plan that fails to run scores inf)
            log.debug("cuDNN plan %d of %s failed to run: %s", index, self.spec, e)
            return math.inf

    def run(self, x, w, bias, residual, y):
        """Execute the chosen plan on the current CuPy stream (capturable: no sync)."""
        import cupy as cp     # optional: only where a GPU runs the graph
        stream = cp.cuda.get_current_stream()
        handle = _handle(self.cudnn, self.device_id)
        self.cudnn.set_stream(handle, stream.ptr)
        ws = cp.empty(max(self.workspace, 1), cp.uint8)
        pack = self._pack(x, w, bias, residual, y)
        g = self._plans[self.index]
        if g is None:
            self.graph.execute(pack, ws.data.ptr, handle=handle)
        else:
            g.execute(pack, ws.data.ptr, handle=handle)
        return y


# -- the per-process registry: built graphs, and plans being built by workers ----------------

_graphs = {}            # (spec, device_id, max_plans) -> ConvGraph, or the reason it failed
_pending = {}           # (spec, device_id, max_plans) -> {plan index: future of a worker result}
_graphs_lock = threading.Lock()


def _device_name(device_id):
    import cupy as cp     # optional: only where a GPU runs the graph
    props = cp.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def plan_window(spec, max_plans):
    """The heuristics' plan indices a graph of ``spec`` times: from the spec's
    ``first_plan`` (0 unless its kind says otherwise) up to ``max_plans`` (at least one)."""
    first = getattr(spec, "first_plan", 0)
    return range(first, max(first + 1, max_plans))


def prefetch(spec, device_id, workers, max_plans=4, store=None, device_name=None):
    """Queue the candidate plans of ``spec`` on ``workers`` (an object with
    ``submit(spec, device_id, index) -> Future``, kernels/gpu/cudnn_workers.py) so they
    compile while the caller does other work. Nothing is queued for a graph built or
    queued already, or whose chosen plan ``store`` holds serialized. Returns the number
    of plans queued."""
    if spec.reason() is not None:
        return 0
    known = None
    if store is not None:
        # a look only (a store may offer ``peek``: the engine's records the plans it runs)
        look = getattr(store, "peek", None) or store.get
        known = look(spec, device_name or _device_name(device_id))
    if known is not None and known[1] is not None:
        return 0
    indices = [known[0]] if known is not None else plan_window(spec, max_plans)
    key = (spec, device_id, max_plans)
    with _graphs_lock:
        if key in _graphs or key in _pending:
            return 0
        _pending[key] = {i: workers.submit(spec, device_id, i) for i in indices}
    return len(indices)


def conv2d_fused(x_nhwc, w_krsc, bias, spec, residual=None, out=None, max_plans=4,
                 build_budget_s=6.0, store=None):
    """y[n, p, q, k] = act(conv(x) + bias + residual) through a cuDNN graph.

    ``x_nhwc`` (N, H, W, C) float16, ``w_krsc`` (K, R, S, C) float16, ``bias`` (K,)
    float32, ``residual`` (N, P, Q, K) of ``spec.out_dtype``, all C-contiguous device
    arrays; ``out`` (N, P, Q, K) may be a channel slice of a wider NHWC buffer whose pixel
    pitch is ``spec.out_ldc`` channels (concat elision). The first call for a spec (per
    device and process) has its plans (``prefetch``ed ones from the workers, the rest
    built here), times them on these buffers and keeps the fastest; never make that first
    call inside a CUDA-graph capture. ``store``: get/put of chosen plans across processes."""
    import cupy as cp     # optional: only where a GPU runs the graph
    p, q = spec.out_hw()
    want = {"x": ((spec.n, spec.h, spec.w, spec.c), np.float16, x_nhwc),
            "w": ((spec.k, spec.r, spec.s, spec.c), np.float16, w_krsc),
            "bias": ((spec.k,), np.float32, bias)}
    if spec.residual:
        want["residual"] = ((spec.n, p, q, spec.k), np.dtype(spec.out_dtype), residual)
    elif residual is not None:
        raise ValueError("a residual was given to a graph built without one (spec.residual False)")
    check_operands("conv", want)
    if out is not None:
        ldc = spec.out_ldc or spec.k
        item = np.dtype(spec.out_dtype).itemsize
        pitch = (p * q * ldc * item, q * ldc * item, ldc * item, item)
        if tuple(out.shape) != (spec.n, p, q, spec.k) or out.dtype != spec.out_dtype \
                or (out.size and tuple(out.strides) != pitch):
            raise ValueError(f"cuDNN conv out: found {out.dtype} {tuple(out.shape)} strides {out.strides}, "
                             f"expected {spec.out_dtype} {(spec.n, p, q, spec.k)} strides {pitch}")
    y = out if out is not None else cp.empty((spec.n, p, q, spec.k), spec.out_dtype)
    return run_graph(spec, x_nhwc, w_krsc, bias, residual, y, max_plans, build_budget_s, store)


def check_operands(kind, want):
    """ValueError naming the first of ``want`` ({name: (shape, dtype, array)}) that is not a
    C-contiguous array of that shape and dtype."""
    for name, (shape, dtype, arr) in want.items():
        if arr is None or tuple(arr.shape) != shape or arr.dtype != dtype or not arr.flags.c_contiguous:
            found = "None" if arr is None else f"{arr.dtype} {tuple(arr.shape)} contiguous={arr.flags.c_contiguous}"
            raise ValueError(f"cuDNN {kind} {name}: found {found}, expected C-contiguous "
                             f"{np.dtype(dtype).name} {shape}")


def run_graph(spec, x, w, bias, residual, y, max_plans=4, build_budget_s=6.0, store=None):
    """Run ``spec``'s graph on checked operands (roles by uid: x, w, bias, residual, out
    ``y``) with this process's built graph of it; the first call per spec and device has
    its plans, times them on these buffers and keeps the fastest (not inside a capture)."""
    import cupy as cp     # optional: only where a GPU runs the graph
    device_id = cp.cuda.Device().id
    key = (spec, device_id, max_plans)
    graph = _graphs.get(key)
    if isinstance(graph, str):               # failed before: do not compile it again
        raise RuntimeError(graph)
    if graph is None:
        if cp.cuda.get_current_stream().is_capturing():
            raise RuntimeError(f"cuDNN graph for {spec} not built before CUDA-graph capture")
        with _graphs_lock:
            graph = _graphs.get(key)
            pending = _pending.pop(key, None) if graph is None else None
        if graph is None:
            # built outside the lock: waiting on workers must not stall other specs
            try:
                graph = _build(spec, device_id, x, w, bias, residual, y, pending,
                               max_plans, build_budget_s, store)
            except Exception as e:
                with _graphs_lock:
                    _graphs[key] = f"cuDNN graph for {spec} failed: {type(e).__name__}: {e}"
                raise
            with _graphs_lock:
                graph = _graphs.setdefault(key, graph)
        if isinstance(graph, str):
            raise RuntimeError(graph)
    return graph.run(x, w, bias, residual, y)


def _build(spec, device_id, x_nhwc, w_krsc, bias, residual, y, pending, max_plans, build_budget_s, store):
    graph = ConvGraph(spec, device_id, max_plans=max_plans, build_budget_s=build_budget_s)
    name = _device_name(device_id) if store is not None else None
    known = store.get(spec, name) if store is not None else None
    results = None
    if pending:
        t0 = time.perf_counter()
        results = collect(pending, build_budget_s)
        graph.wait_seconds += time.perf_counter() - t0
        if known is not None and known[1] is None and known[0] in results and "blob" in results[known[0]]:
            known = (known[0], results[known[0]]["blob"])
    chosen = graph.choose(x_nhwc, w_krsc, bias, residual, y, results=results, known=known)
    if store is not None and (known is None or known[1] is None or graph.known_failed):
        store.put(spec, name, chosen, {i: t for i, t in graph.plan_times.items()}, graph.chosen_blob())
    return graph


def graph_for(spec, device_id=0):
    """The built graph of ``spec`` in this process (None before its first run; of several
    plan counts, the one built first)."""
    for (s, d, _), graph in list(_graphs.items()):
        if s == spec and d == device_id and isinstance(graph, ConvGraph):
            return graph
    return None


def stats():
    """What this process's cuDNN graphs cost: graphs built and failed, plans timed, the
    seconds spent compiling plans (wherever they ran) and this process's wall seconds
    to have them, and how many arrived built (workers, the store); and which plan won:
    ``chosen`` {spec kind: {plan index (the heuristics' order): graphs}} over the graphs
    that timed more than one plan, the evidence for how many plans a graph needs; and
    ``build_s_by_plan`` {spec kind: {plan index: compile seconds}}, what each index costs."""
    graphs = [g for g in _graphs.values() if isinstance(g, ConvGraph)]
    chosen, by_plan = {}, {}
    for g in graphs:
        if g.index is not None and len(g.plan_times) > 1:
            kind = chosen.setdefault(_spec_kind(g.spec), {})
            kind[g.index] = kind.get(g.index, 0) + 1
        spent = by_plan.setdefault(_spec_kind(g.spec), {})
        for i, sec in g.plan_build_seconds.items():
            spent[i] = spent.get(i, 0.0) + sec
    return {"built": len(graphs), "failed": sum(1 for g in _graphs.values() if isinstance(g, str)),
            "build_s": round(sum(g.build_seconds for g in graphs), 1),
            "wait_s": round(sum(g.wait_seconds for g in graphs), 1),
            "plans_timed": sum(len(g.plan_times) for g in graphs),
            "deserialized": sum(g.deserialized for g in graphs),
            "chosen": {k: dict(sorted(v.items())) for k, v in sorted(chosen.items())},
            "build_s_by_plan": {k: {i: round(t, 1) for i, t in sorted(v.items())}
                                for k, v in sorted(by_plan.items()) if v}}


def _spec_kind(spec):
    """A graph's kind for the chosen-plan counts: its spec class and output type
    (``ConvSpec float16``, ``Int8ConvSpec int8``)."""
    return f"{type(spec).__name__} {getattr(spec, 'out_dtype', '')}".strip()


def clear():
    """Forget built graphs and queued plans (tests; frees their plans)."""
    with _graphs_lock:
        for pending in _pending.values():
            for fut in pending.values():
                fut.cancel()
        _pending.clear()
        _graphs.clear()
