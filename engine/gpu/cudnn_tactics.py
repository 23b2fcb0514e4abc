"""cuDNN as a tactic source (kernels/gpu/cudnn_graphs.py, cudnn_matmul.py): a fused
convolution (conv + bias + residual + activation, ConvCudnn) or linear layer (matmul with a
constant weight + bias + residual + activation, MatMulCudnn) as one cuDNN graph, timed by
the builder beside our own kernels and kept only where it is faster.

On when the cuDNN frontend is installed (``pip install 'cupyrt[cudnn]'``) unless
``CUPYRT_CUDNN=0``. FP16 layers only: cuDNN may run FP32 convolutions on TF32 tensor
cores, which our FP32 layers promise not to do. INT8 convolutions have their own cuDNN
tactic (engine/gpu/cudnn_int8_tactics.py), under the same switches.

The switches are read here, through engine.settings, and handed to the kernels as
arguments: CUPYRT_CUDNN, CUPYRT_CUDNN_MAX_PLANS (plans timed per graph),
CUPYRT_CUDNN_BUILD_BUDGET_S, CUPYRT_CUDNN_PLAN_CACHE (where chosen plans are kept
between processes; default: the build's timing cache file), and CUPYRT_PRECOMPILE_WORKERS
(bounds how many worker processes build plans, at most half the CPUs; 0: all plans are
built in this process, one after another).

Cold-build time: the first time the builder asks these tactics about a layer of a network,
every convolution and linear layer of that network they would accept has its candidate plans queued on the
worker processes (kernels/gpu/cudnn_workers.py), so their compiles overlap the timing of
our own kernels; each layer's first run then finds its plans built.

Chosen plans travel with the engine: the CuPy backend running a build or an engine makes
its ``EnginePlans`` the store these tactics use (``plans_in_use``); the builder writes the
plans its build chose for each graph it ran into the plan file (meta ``cudnn_plans``; also
those of layers that ended on another tactic: ~90 KB a graph), so an engine deserialized in
another process loads its graphs instead of compiling them (seconds per graph) on its first
run. Behind it, the file store of the timing cache keeps them for rebuilds.
"""
import contextlib
import contextvars
import json
import logging
import os
import threading

import numpy as np

from kernels.gpu import cudnn_graphs, cudnn_matmul, cudnn_workers
from kernels.gpu.errors import UnsupportedError

from ..atomic_file import write_bytes
from ..settings import settings
from ..types import DataType, LayerType, MatrixOperation as MO
from .concat import claim
from .base import Tactic, as_nhwc, cupy, nchw_view
from .conv_common import epilogue_state as _epilogue, residual_nhwc as _residual
from .matmul_tactics import constant_operand, linear_reason, linear_weight
from .timing import TimingCache

log = logging.getLogger(__name__)


def enabled():
    return settings().cudnn


class PlanStore:
    """Chosen cuDNN plans kept across processes, in a timing-cache file (TimingCache:
    merged on save, replaced atomically): per graph key the tactic ``cudnn.plan.<index>``
    and every plan's time; the chosen plan serialized beside it, in
    ``<file>.cudnn/<key>.plan`` (written whole or not at all), so a later process
    deserializes it instead of compiling. The kernels call ``get``/``put``."""

    PREFIX = "cudnn.plan."

    def __init__(self, path):
        self.path = path
        self.cache = TimingCache(path)

    def key(self, spec, device_name):
        return plan_key(spec, device_name)

    def _blob_path(self, key):
        return os.path.join(self.path + ".cudnn", key + ".plan")

    def get(self, spec, device_name):
        """(plan index, encoded plan or None) chosen before, or None."""
        key = self.key(spec, device_name)
        entry = self.cache.get(key)
        tactic = (entry or {}).get("tactic") or ""
        if not tactic.startswith(self.PREFIX):
            return None
        try:
            index = int(tactic[len(self.PREFIX):])
        except ValueError:
            log.warning("cuDNN plan cache %s: entry %s names %r; ignored", self.path, key, tactic)
            return None
        blob = None
        try:
            with open(self._blob_path(key)) as f:
                blob = json.load(f)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("cuDNN plan %s unreadable (%s); built again", self._blob_path(key), e)
        return index, blob

    def put(self, spec, device_name, index, times, blob):
        key = self.key(spec, device_name)
        self.cache.put(key, f"{self.PREFIX}{index}", {str(i): ms for i, ms in sorted(times.items())})
        try:
            if blob is not None:
                os.makedirs(os.path.dirname(self._blob_path(key)), exist_ok=True)
                write_bytes(self._blob_path(key), json.dumps(blob))
            self.cache.save()
        except OSError as e:      # a store where this process cannot write: the plan still runs
            log.warning("cuDNN plan cache %s not written (%s: %s)", self.path, type(e).__name__, e)


def plan_key(spec, device_name):
    """The key of ``spec``'s chosen plan on ``device_name`` (with the frontend's version)."""
    kind = getattr(spec, "kind", "conv")           # "cudnn_conv": the keys of earlier caches
    return TimingCache.key(device_name, {f"cudnn_{kind}": spec.to_json(),
                                         "frontend": cudnn_graphs.frontend_version()})


class EnginePlans:
    """The cuDNN plans one engine runs, kept in its plan file (meta ``cudnn_plans``:
    {plan key: {"index", "blob"}}), in front of a file store (``PlanStore`` or None)
    that it reads through and writes to. The kernels' store interface (``get``/``put``);
    only serialized plans are kept (an index alone still means compiling)."""

    def __init__(self, entries=None, file_store=None):
        self.entries = dict(entries or {})
        self.file = file_store
        self._lock = threading.Lock()

    def get(self, spec, device_name):
        """The plan chosen for ``spec`` before (this engine's, else the file's, which the
        engine then carries too), or None: what a graph about to run asks."""
        key = plan_key(spec, device_name)
        known = self.peek(spec, device_name)
        if known is not None and known[1] is not None and key not in self.entries:
            with self._lock:
                self.entries[key] = {"index": known[0], "blob": known[1]}
        return known

    def peek(self, spec, device_name):
        """As ``get``, without the engine keeping what it found (the plan prefetch asks
        about every graph the network might run)."""
        hit = self.entries.get(plan_key(spec, device_name))
        if hit is not None:
            return hit["index"], hit["blob"]
        return self.file.get(spec, device_name) if self.file is not None else None

    def put(self, spec, device_name, index, times, blob):
        if blob is not None:
            with self._lock:
                self.entries[plan_key(spec, device_name)] = {"index": index, "blob": blob}
        if self.file is not None:
            self.file.put(spec, device_name, index, times, blob)


_in_use = contextvars.ContextVar("cupyrt_cudnn_plans", default=None)


@contextlib.contextmanager
def plans_in_use(plans):
    """Within the block (this thread), the cuDNN tactics keep and find plans in ``plans``
    (an ``EnginePlans``: the running engine's) instead of the settings' file store."""
    token = _in_use.set(plans)
    try:
        yield plans
    finally:
        _in_use.reset(token)


_stores = {}


def plan_store(path):
    """One PlanStore per file (None: no file, choices kept in this process only)."""
    if not path:
        return None
    store = _stores.get(path)
    if store is None:
        store = _stores[path] = PlanStore(path)
    return store


def plan_options(current=None):
    """The kernels' arguments, from the settings: plans per graph, the build budget, the
    plan store, and the worker count: CUPYRT_PRECOMPILE_WORKERS, at most half the CPUs,
    the other half left to the builder, which times our own kernels meanwhile (ResNet-50
    FP16 cold build with a cold driver JIT cache, H200, 16 CPUs: 6 workers 24.5 s,
    15 workers 26.5 s; the plans' compiles took 68-73 CPU seconds either way)."""
    s = current or settings()
    workers = min(s.precompile_workers, max(1, (os.cpu_count() or 2) // 2))
    store = _in_use.get()
    if store is None:
        store = plan_store(s.cudnn_plan_cache or s.timing_cache)
    return {"max_plans": max(1, s.cudnn_max_plans), "build_budget_s": s.cudnn_build_budget_s,
            "store": store, "workers": workers}


def _window(layer, shape):
    """(out_hw, pre, post) of a 2-D convolution at ``shape``, memoised on the layer."""
    memo = layer.__dict__.setdefault("_cudnn_window_memo", {})
    hit = memo.get(shape)
    if hit is None:
        out, pre, post = layer.geometry(shape)
        hit = memo[shape] = (tuple(out), tuple(pre), tuple(post))
    return hit


def conv_spec(layer, in_shape, out_dtype, out_ldc=0):
    """The kernels-level description of ``layer`` at input ``in_shape`` (n, c, h, w);
    ``out_ldc``: the channel pitch of a concat buffer the output is a slice of."""
    n, c, h, w = in_shape
    _, pre, post = _window(layer, tuple(in_shape))
    act = layer.post_activation
    alpha, beta = layer.post_params() if act is not None else (0.0, 0.0)
    r, s = layer.kernel_size_nd
    return cudnn_graphs.ConvSpec(n=n, c=c, h=h, w=w, k=layer.num_output_maps, r=r, s=s,
                    stride=tuple(layer.stride_nd), pre_padding=pre, post_padding=post,
                    dilation=tuple(layer.dilation_nd), out_dtype=np.dtype(out_dtype).name,
                    act=None if act is None else act.name, alpha=float(alpha), beta=float(beta),
                    residual=len(layer._inputs) > 1 and layer._inputs[1] is not None, out_ldc=out_ldc)


def _static_reason(layer, in_shape):
    """Why the cuDNN graphs cannot take this convolution, from the layer alone (None: they can)."""
    if len(in_shape) != 4 or len(layer.kernel_size_nd) != 2:
        return "only 2-D convolutions (rank-4 inputs)"
    if layer.num_groups != 1:
        return "grouped convolution"
    if in_shape[1] % 8 or layer.num_output_maps % 8:
        # an RGB stem is ours: cuDNN declined C=3 with an FP32 output outright, and padded
        # it was slower than our small-C kernel (ResNet-50 stem, b256, H200, best plan:
        # C=3 3.16 ms, C=4 1.75, C=8 2.37, against 1.33 for conv.igemmsc incl. its reformat)
        return "channels not multiples of 8 (tensor-core alignment)"
    act = layer.post_activation
    if act is not None and act.name not in cudnn_graphs.ACTIVATIONS:
        return f"activation {act.name} not fused by the cuDNN graphs"
    return None


def takes_statically(layer, in_shapes, precision):
    """Whether the FP16 cuDNN convolution tactic would take ``layer`` at these input shapes,
    judged from the layer, the settings and the frontend alone: no plan is queued (its
    ``supports`` queues the network's plans). Its plans may still fail to build or run."""
    return (layer.layer_type == LayerType.CONVOLUTION and precision == DataType.HALF and enabled()
            and bool(in_shapes) and in_shapes[0] is not None and cudnn_graphs.available()
            and _static_reason(layer, in_shapes[0]) is None)


def _prefetch_spec(layer, batch):
    """The graph spec a cuDNN tactic would run ``layer`` with at batch ``batch`` (the
    network's shapes with a dynamic batch made ``batch``), or None: not a layer for it,
    another dimension unknown, or a spec it declines."""
    if layer.layer_type not in (LayerType.CONVOLUTION, LayerType.MATRIX_MULTIPLY) \
            or not layer._inputs or layer._inputs[0] is None \
            or layer._outputs[0].dtype not in (DataType.FLOAT, DataType.HALF):
        return None
    shape = tuple(layer._inputs[0].shape or ())
    if not shape or shape[0] not in (-1, batch) or (len(shape) > 1 and min(shape[1:]) < 1):
        return None
    shape = (batch,) + shape[1:]
    if layer.layer_type == LayerType.CONVOLUTION:
        if len(shape) != 4 or _static_reason(layer, shape) is not None:
            return None
        return conv_spec(layer, shape, _output_dtype(layer))
    shapes = [shape] + [tuple(t.shape) if t is not None else None for t in layer._inputs[1:]]
    if len(shapes) > 2 and shapes[2] is not None:
        shapes[2] = shape[:-1] + tuple(shapes[2][-1:])      # the residual has the output's batch
    if MatMulCudnn.static_reason(layer, shapes) is not None:
        return None
    return matmul_spec(layer, shape, _output_dtype(layer), residual=len(shapes) > 2 and shapes[2] is not None)


def _runtime_reason(layer, batch, prefetch=None):
    """Why no cuDNN graph runs now (switched off, frontend unusable), else None, having
    queued the plans of ``layer``'s network at ``batch`` on the workers, so they compile
    while the builder times this layer. ``prefetch``: the queueing step (default
    ``prefetch_network``; the INT8 tactic queues its INT8 graphs instead)."""
    if not enabled():
        return "switched off (CUPYRT_CUDNN=0)"
    if not cudnn_graphs.available():
        return cudnn_graphs.unavailable_reason()
    try:
        (prefetch or prefetch_network)(layer, batch)
    except Exception as e:      # noqa: BLE001  (plans are then built on first run)
        log.info("cuDNN plan prefetch failed (%s: %s); plans build on first use", type(e).__name__, e)
    return None


def _output_dtype(layer):
    """How the engine stores this FP16 layer's output (engine/execution.py,
    _storage_dtype): as declared for a network output or a set output type, else half."""
    t = layer._outputs[0]
    if t.is_network_output or layer.output_type_is_set(0):
        return t.dtype.to_numpy()
    return np.float16


_prefetch_scope = contextvars.ContextVar("cupyrt_cudnn_prefetch_scope", default=None)


@contextlib.contextmanager
def prefetch_only(layer_names):
    """Inside, ``prefetch_network`` queues the graphs of these layers only (precision by
    timing: the layers it will time in FP16; an INT8 build's first FP16 question queued every
    convolution's graph, 26 for ResNet-50, of which it timed 18); others queue when asked."""
    token = _prefetch_scope.set(frozenset(layer_names))
    try:
        yield
    finally:
        _prefetch_scope.reset(token)


def prefetch_network(layer, batch, options=None, device_id=None):
    """Queue the plans of every convolution and linear layer of ``layer``'s network that
    the cuDNN tactics would take, at batch ``batch`` (once per network and batch; inside
    ``prefetch_only``, of those layers only, once per such set). Returns the number queued.

    Shapes come from the network's inference with a dynamic batch made ``batch``; a layer
    with another dynamic dimension is left to build on its first run. Layers that run in
    another precision are not known here (the builder's choice): an INT8 build may queue
    a few plans it never uses, compiled in the workers and dropped."""
    net = layer._network
    scope = _prefetch_scope.get()
    layers = net._layers if scope is None else [la for la in net._layers if la.name in scope]
    return queue_network_once(
        net, batch, "fp16" if scope is None else ("fp16", scope),
        lambda: [spec for other in layers for make in PREFETCH_SPECS
                 for spec in (make(other, batch),) if spec is not None],
        options, device_id, "cuDNN")


# what prefetch_network asks of each layer: (layer, batch) -> a graph spec or None. The
# FP16 tactics here; engine/gpu/cudnn_s2d_tactics.py adds its stem's spec on import (it
# imports this module, so this one cannot import it)
PREFETCH_SPECS = [_prefetch_spec]


def queue_network_once(net, batch, tag, make_specs, options=None, device_id=None, what="cuDNN"):
    """Queue on the plan workers the plans of the graph specs ``make_specs()`` lists for
    ``net`` at ``batch``, once per network, batch and ``tag`` (the FP16 and the INT8
    tactics each queue their own); returns the number of plans queued."""
    options = options or plan_options()
    if options["workers"] < 1:
        return 0
    done = net.__dict__.setdefault("_cudnn_prefetched", set())
    if (tag, batch) in done:
        return 0
    done.add((tag, batch))
    specs = make_specs()
    if not specs:
        return 0
    device_id = cupy().cuda.Device().id if device_id is None else device_id
    workers = cudnn_workers.shared(options["workers"])
    device_name = cudnn_graphs._device_name(device_id) if options["store"] is not None else None
    queued = sum(cudnn_graphs.prefetch(spec, device_id, workers, options["max_plans"], options["store"],
                                       device_name) for spec in specs)
    log.info("%s: %d plans of %d graphs of %s queued on %d worker processes", what, queued, len(specs),
             net, options["workers"])
    return queued


class ConvCudnn(Tactic):
    """Convolution + bias + residual + activation as one cuDNN graph (NHWC FP16 in,
    FP32 accumulate), its plans enumerated and timed inside the tactic."""
    name = "conv.cudnn"
    outruns_general_tiles = True    # they yield to it (tiles_where_specialised off)

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.HALF:
            return "the cuDNN graphs run FP16 layers"
        return _static_reason(layer, in_shapes[0]) or _runtime_reason(layer, in_shapes[0][0])

    def prepare(self, layer):
        cp = cupy()
        c = layer._inputs[0].shape[1]
        w = layer.weights(c).transpose(0, 2, 3, 1)          # KCRS -> KRSC (NHWC filter)
        return {"w": cp.asarray(np.ascontiguousarray(w), cp.float16), **_epilogue(layer)}

    writes_into_concat = True      # the output descriptor takes the concat buffer's pitch

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        x = inputs[0]
        (p, q), _, _ = _window(layer, tuple(x.shape))
        k = layer.num_output_maps
        place = claim(into, (x.shape[0], p, q, k), (np.float16, np.float32))
        out, ldc = None, 0
        if place:
            buf, off = place["out"], place["out_channel_offset"]
            out, ldc = buf[..., off:off + k], buf.shape[3]
        out_dtype = out.dtype if out is not None else out_dtypes[0].to_numpy()
        spec = conv_spec(layer, tuple(x.shape), out_dtype, out_ldc=ldc)
        res = _residual(inputs, out_dtype)
        if res is not None and not res.flags.c_contiguous:
            res = cupy().ascontiguousarray(res)
        opts = plan_options()
        opts.pop("workers")
        x16 = as_nhwc(x, np.float16)
        if out is None:
            y = cudnn_graphs.conv2d_fused(x16, state["w"], state["bias"], spec, residual=res, **opts)
            return [nchw_view(y)]
        if place["out_channel_offset"] % 8 or ldc % 8:
            raise UnsupportedError(f"concat slice at channel {place['out_channel_offset']} of {ldc}: "
                                   "cuDNN wants 16-byte aligned rows")
        try:
            y = cudnn_graphs.conv2d_fused(x16, state["w"], state["bias"], spec, residual=res, out=out, **opts)
        except (RuntimeError, ValueError) as e:   # no cuDNN engine for the strided output
            raise UnsupportedError(f"cuDNN graph writing a concat slice: {e}") from e
        return [nchw_view(y)]


def matmul_spec(layer, in_shape, out_dtype, residual=False):
    """The kernels-level description of linear ``layer`` (constant right operand) at left
    operand shape ``in_shape``."""
    w = constant_operand(layer, 1)
    n = w.shape[-1] if layer.op1 == MO.NONE else w.shape[-2]
    act = layer.post_activation
    alpha, beta = layer.post_params() if act is not None else (0.0, 0.0)
    return cudnn_matmul.MatmulSpec(m=max(1, int(np.prod(in_shape[:-1]))), n=int(n), k=int(in_shape[-1]),
                                   out_dtype=np.dtype(out_dtype).name, act=None if act is None else act.name,
                                   alpha=float(alpha), beta=float(beta), residual=residual)


class MatMulCudnn(Tactic):
    """``act(alpha * A @ W + bias + residual)`` with a constant 2-D W (a linear layer's
    weight) as one cuDNN graph (kernels/gpu/cudnn_matmul.py): the GEMMs of a transformer's
    projections and feed-forward block with their epilogue, capturable; plans timed inside.
    alpha is folded into the FP16 weight (one rounding of alpha * W instead of two)."""
    name = "matmul.cudnn"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.HALF:
            return "the cuDNN graphs run FP16 layers"
        if any(d not in ("float32", "float16") for d in in_dtypes[:1]):
            return f"a floating left operand, not {in_dtypes[0]}"
        return self.static_reason(layer, in_shapes) or _runtime_reason(layer, in_shapes[0][0])

    @staticmethod
    def static_reason(layer, in_shapes):
        """Why no cuDNN matmul graph can run ``layer`` at ``in_shapes`` (None: one can)."""
        return linear_reason(layer, in_shapes) or matmul_spec(layer, tuple(in_shapes[0]), np.float16).reason()

    def prepare(self, layer):
        cp = cupy()
        wt, bias = linear_weight(layer)
        wt = np.ascontiguousarray(wt.astype(np.float64) * layer.alpha)
        return {"w": cp.asarray(wt, cp.float16), "bias": cp.asarray(bias)}

    def run(self, state, layer, inputs, precision, out_dtypes):
        cp = cupy()
        a = inputs[0]
        lead, k = tuple(a.shape[:-1]), a.shape[-1]
        m = int(np.prod(lead))
        n = state["w"].shape[0]
        out_dtype = out_dtypes[0].to_numpy()
        x = cp.ascontiguousarray(a.astype(np.float16, copy=False)).reshape(m, k)
        res = inputs[2] if len(inputs) > 2 else None
        if res is not None:
            res = cp.ascontiguousarray(res.astype(out_dtype, copy=False)).reshape(m, n)
        spec = matmul_spec(layer, tuple(a.shape), out_dtype, residual=res is not None)
        opts = plan_options()
        opts.pop("workers")
        y = cudnn_matmul.matmul_fused(x, state["w"], state["bias"], spec, residual=res, **opts)
        return [y.reshape(lead + (n,))]
