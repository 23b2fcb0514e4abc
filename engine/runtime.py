"""IRuntime, ICudaEngine, IExecutionContext and IProfiler.

An engine is an optimised network plus the builder's decisions, read back from
a plan. Execution contexts hold all per-call state (shape cache, profiler), so
one engine serves many contexts, one per thread.
"""
import enum
import json
import logging
import threading

import numpy as np

from .backends import select_backend
from .errors import ExecutionError
from .execution import EngineSchedule, LayerRunner
from .logger import Logger
from .memory import lifetimes, plan as plan_memory
from .plan import decode_network, loads
from .types import DataType

log = logging.getLogger(__name__)


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class Runtime:
    def __init__(self, logger=None, backend=None):
        self.logger = logger or Logger()
        self.backend = backend        # "numpy" | "cupy" | None: $CUPYRT_BACKEND or the best available

    def deserialize_cuda_engine(self, plan_bytes):
        doc, arrays = loads(plan_bytes)
        network = decode_network(doc.get("network", {}), arrays)
        return CudaEngine(network, doc.get("engine", {}), self.logger, self.backend)


class LayerInfo:
    """What the builder decided for one layer of the optimised network."""

    def __init__(self, layer, precision, kernel):
        self.name, self.type = layer.name, layer.layer_type
        self.precision, self.kernel = precision, kernel
        self.inputs = [None if t is None else t.name for t in layer._inputs]
        self.outputs = [t.name for t in layer._outputs]
        self.attributes = {}
        for key, value in layer.attr_values().items():
            if isinstance(value, np.ndarray):
                value = {"array": list(value.shape), "dtype": value.dtype.name}
            elif isinstance(value, dict):
                value = {k: list(getattr(v, "shape", ())) for k, v in value.items()}
            elif isinstance(value, enum.Enum):
                value = value.name
            elif isinstance(value, tuple):
                value = list(value)
            self.attributes[key] = value

    def as_dict(self):
        return {"name": self.name, "type": self.type.name, "precision": self.precision.name,
                "kernel": self.kernel, "inputs": self.inputs, "outputs": self.outputs,
                "attributes": self.attributes}

    def __repr__(self):
        return f"<LayerInfo {self.name} {self.type.name} {self.precision.name} {self.kernel}>"


class CudaEngine(EngineSchedule):
    """ICudaEngine: the optimised network, its backend, and what the builder decided
    per layer (the schedule itself is engine/execution.py's)."""

    def __init__(self, network, meta, logger=None, backend=None):
        super().__init__(network, meta, select_backend(backend, meta))
        self.logger = logger or Logger()
        kernels = meta.get("kernels", {})
        default_kernel = "numpy.reference" if self.backend.name == "numpy" else "chosen on first use"
        self.layers = [LayerInfo(layer, self._precision[layer.name],
                                 kernels.get(layer.name, default_kernel))
                       for layer in network._layers]
        self._io = [t.name for t in network._inputs] + [t.name for t in network._outputs]
        # shapes execute() accepts beyond the declared ones: optimization profiles
        # ({input: (min, opt, max)} each) and the implicit-batch limit, as built
        self.profiles = [{n: tuple(tuple(int(d) for d in s) for s in dims)
                          for n, dims in p.items()} for p in meta.get("profiles", [])]
        self.max_batch_size = meta.get("max_batch_size")

    # -- inspection (ICudaEngine) ---------------------------------------------
    @property
    def num_layers(self):
        return len(self.layers)

    @property
    def num_aux_streams(self):
        """TensorRT's: the auxiliary streams a replay of this engine runs layers on, 0 or 1:
        1 where the backend captures side branches on one (CUDA graphs on, max_aux_streams
        or the aux_streams switch) and the network has one (engine/aux_streams.py)."""
        if not (getattr(self.backend, "aux_streams", False) and getattr(self.backend, "use_graphs", False)):
            return 0
        return int(bool(self.side_branches()))

    def side_branches(self):
        """The layers a CUDA-graph replay runs on an auxiliary stream where aux streams are on
        (engine/aux_streams.py), in layer order: the network's side branches, whatever
        this engine's backend."""
        plan = self.frees()[1]
        return [] if plan is None else [self.network._layers[a].name for a, _, _ in plan.by_step]

    @property
    def num_io_tensors(self):
        return len(self._io)

    def get_tensor_name(self, i):
        return self._io[i]

    def _io_tensor(self, name):
        t = self.network.get_tensor(name)
        if t is None or name not in self._io:
            raise ExecutionError(f"'{name}' is not an input or output of this engine; "
                                 f"valid: {', '.join(self._io)}")
        return t

    def get_tensor_mode(self, name):
        t = self._io_tensor(name)
        return TensorIOMode.INPUT if t.is_network_input else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        t = self._io_tensor(name)
        return t._declared_shape if t.is_network_input else t.shape

    def get_tensor_dtype(self, name):
        return self._io_tensor(name).dtype

    @property
    def num_optimization_profiles(self):
        return len(self.profiles)

    def get_tensor_profile_shape(self, name, profile_index):
        """(min, opt, max) of input ``name`` in profile ``profile_index`` (TensorRT's call)."""
        self._io_tensor(name)
        if not 0 <= profile_index < len(self.profiles):
            raise ExecutionError(f"optimization profile {profile_index}; this engine has "
                                 f"{len(self.profiles)} (valid: 0..{len(self.profiles) - 1})"
                                 if self.profiles else
                                 f"optimization profile {profile_index}; this engine was "
                                 "built without optimization profiles")
        shapes = self.profiles[profile_index].get(name)
        if shapes is None:
            raise ExecutionError(f"optimization profile {profile_index} sets no shapes for "
                                 f"'{name}'; it sets {sorted(self.profiles[profile_index])}")
        return shapes

    @property
    def input_names(self):
        return [t.name for t in self.network._inputs]

    @property
    def output_names(self):
        return [t.name for t in self.network._outputs]

    def activation_memory(self, input_shapes):
        """Bytes of activation memory (the planned arena) for these input shapes."""
        shapes = self.infer_shapes(input_shapes)
        return self._memory_plan(shapes)[1]

    @property
    def device_memory_size(self):
        """Activation memory for the declared input shapes, dynamic dims taken as 1."""
        return self.activation_memory({t.name: tuple(1 if d < 0 else d for d in t._declared_shape)
                                       for t in self.network._inputs})

    def _memory_plan(self, shapes):
        keep = set(id(t) for t in self.network._inputs) | set(id(t) for t in self.network._outputs)
        spans = lifetimes(
            self.network._layers,
            lambda layer: [id(t) for t in layer._inputs if t is not None],
            lambda layer: [id(t) for t in layer._outputs], keep)
        sizes = {}
        for layer in self.network._layers:
            for t in layer._outputs:
                if id(t) in spans:
                    dtype = self._storage_dtype(layer, t)
                    sizes[id(t)] = int(np.prod(shapes[id(t)])) * dtype.itemsize
        return plan_memory(sizes, spans)

    def create_execution_context(self):
        return ExecutionContext(self)

    def create_engine_inspector(self):
        return EngineInspector(self)

    def __repr__(self):
        return f"<CudaEngine {self.num_layers} layers, backend={self.backend.name}>"


class EngineInspector:
    def __init__(self, engine):
        self.engine = engine

    def get_layer_information(self, index):
        return json.dumps(self.engine.layers[index].as_dict())

    def get_engine_information(self):
        e = self.engine
        return json.dumps({"layers": [info.as_dict() for info in e.layers],
                           "inputs": {n: list(e.get_tensor_shape(n)) for n in e.input_names},
                           "outputs": {n: list(e.get_tensor_shape(n)) for n in e.output_names},
                           "device_memory_size": e.device_memory_size,
                           "backend": e.backend.name, "build": e.meta.get("pass_stats", {}),
                           "side_branches": e.side_branches(), "num_aux_streams": e.num_aux_streams},
                          indent=1)


class Profiler:
    """IProfiler: ``report_layer_time`` is called once per layer per execution.
    This default one accumulates, and ``table()`` prints the slowest first."""

    def __init__(self):
        self.times = {}
        self.calls = 0
        self._lock = threading.Lock()

    def report_layer_time(self, layer_name, ms):
        with self._lock:
            self.times[layer_name] = self.times.get(layer_name, 0.0) + ms

    def table(self):
        total = sum(self.times.values()) or 1.0
        rows = [f"{'layer':40s} {'ms':>10s} {'%':>6s}"]
        for name, ms in sorted(self.times.items(), key=lambda kv: -kv[1]):
            rows.append(f"{name[:40]:40s} {ms:10.3f} {100 * ms / total:6.1f}")
        return "\n".join(rows)


class ExecutionContext(LayerRunner):
    """IExecutionContext: per-caller state (the per-shape schedules and the profiler
    of engine/execution.py's LayerRunner, the active profile, bound tensors)."""

    def __init__(self, engine):
        super().__init__(engine)
        self.name = ""
        self.active_optimization_profile = 0
        # during execute_async_v3: the bound input arrays, by name; the CuPy backend may
        # capture its CUDA graph reading them in place (engine/backends/cupy_backend.py)
        self.bound_feeds = {}

    def set_optimization_profile_async(self, profile_index, stream=None):
        """Select the profile whose (min, max) shapes execute() accepts (TensorRT's call;
        there is nothing to wait for here, so ``stream`` is unused)."""
        n = len(self.engine.profiles)
        if not (isinstance(profile_index, int) and 0 <= profile_index < max(n, 1)):
            raise ExecutionError(f"optimization profile {profile_index!r}; valid: "
                                 f"{list(range(max(n, 1)))}")
        self.active_optimization_profile = profile_index
        return True

    def _check_shape(self, t, shape):
        """Raise unless ``shape`` fits input ``t``'s implicit-batch limit and the active
        optimization profile (declared dims and rank are checked by the callers)."""
        e = self.engine
        if e.max_batch_size and shape and shape[0] > e.max_batch_size:
            raise ExecutionError(f"input '{t.name}' has batch {shape[0]} (shape {tuple(shape)}); "
                                 f"this engine takes batches up to its max_batch_size "
                                 f"{e.max_batch_size}: split the batch, or build with a larger "
                                 "max_batch_size")
        if not e.profiles:
            return
        dims = e.profiles[self.active_optimization_profile].get(t.name)
        if dims is None:
            return
        lo, _, hi = dims
        bad = [i for i, (d, a, b) in enumerate(zip(shape, lo, hi)) if not a <= d <= b]
        if len(shape) != len(lo) or bad:
            raise ExecutionError(
                f"input '{t.name}' has shape {tuple(shape)}; optimization profile "
                f"{self.active_optimization_profile} allows min {lo} to max {hi}"
                + (f" (dims {bad} outside)" if bad else f" (rank {len(lo)})")
                + (f"; select another with set_optimization_profile_async (valid: "
                   f"{list(range(len(e.profiles)))})" if len(e.profiles) > 1 else ""))

    def _check_inputs(self, inputs):
        net = self.engine.network
        if not isinstance(inputs, dict):
            raise ExecutionError(f"execute takes a dict name -> array; got {type(inputs).__name__}")
        expected = [t.name for t in net._inputs]
        missing = [n for n in expected if n not in inputs]
        if missing:
            raise ExecutionError(f"missing input(s) {missing}; this engine takes {expected}")
        extra = [n for n in inputs if n not in expected]
        if extra:
            raise ExecutionError(f"unknown input(s) {extra}; this engine takes {expected}")
        feeds = {}
        for t in net._inputs:
            a = self.engine.backend.asarray(inputs[t.name])
            want = t.dtype.to_numpy()
            if a.dtype != want:
                raise ExecutionError(f"input '{t.name}' has dtype {a.dtype}; expected {want} "
                                     f"(convert with .astype('{want}'))")
            decl = t._declared_shape
            if a.ndim != len(decl):
                raise ExecutionError(f"input '{t.name}' has rank {a.ndim} (shape {tuple(a.shape)}); "
                                     f"expected rank {len(decl)} ({decl}, -1 = any)")
            bad = [i for i, (d, w) in enumerate(zip(a.shape, decl)) if w >= 0 and d != w]
            if bad:
                raise ExecutionError(f"input '{t.name}' has shape {tuple(a.shape)}; dims {bad} must "
                                     f"match the declared {decl} (-1 = any)")
            self._check_shape(t, tuple(a.shape))
            feeds[t.name] = a
        return feeds

    def set_input_shape(self, name, shape):
        """TensorRT's shape-binding call; shapes are taken from the arrays here, so
        this only validates."""
        t = self.engine._io_tensor(name)
        decl = t._declared_shape
        if len(shape) != len(decl) or any(w >= 0 and d != w for d, w in zip(shape, decl)):
            raise ExecutionError(f"shape {tuple(shape)} for '{name}' does not fit {decl}")
        self._check_shape(t, tuple(int(d) for d in shape))
        return True

    def execute(self, inputs):
        """Run the engine. ``inputs``: dict name -> array (NumPy, or CuPy on the GPU
        backend). Returns dict name -> NumPy array."""
        feeds = self._check_inputs(inputs)
        outs = self.run(feeds)
        return {t.name: self.engine.backend.to_output(outs[t.name], t.dtype)
                for t in self.engine.network._outputs}

    def layer_outputs(self, inputs):
        """Every tensor the engine's layers make on ``inputs``, {tensor name: float64 NumPy
        array} in layer order: the layers run eagerly one by one (no CUDA graph, no concat
        elision), each output copied to the host as it is made, the int8 codes of tensors
        stored so between INT8 layers dequantized at their scale (a tensor whose own type is
        INT8 keeps its integers). For comparing two engines, or an engine and its reference,
        tensor by tensor (Polygraphy's layerwise comparison, without marking every tensor
        an output and rebuilding); ``engine.metrics.compare_tensors`` ranks the differences."""
        from .int8_exec import tensor_scale      # the INT8 helpers load with this debugging call only
        feeds = self._check_inputs(inputs)
        backend = self.engine.backend
        codes = self.engine._int8_tensors       # stored as int8 codes between INT8 layers
        values = {}

        def visit(t, v):
            try:                                 # the host copy in the value's own type (int32 exact)
                kind = DataType.from_numpy(v.dtype)
            except TypeError:
                kind = DataType.FLOAT
            host = np.asarray(backend.to_output(v, kind), np.float64)
            values[t.name] = host * float(tensor_scale(t)) if t.name in codes else host
        backend.run_visiting(self, feeds, self._schedule(feeds), visit)
        return values

    # -- TensorRT's enqueue style: bound device buffers, a stream -----------------
    def set_tensor_address(self, name, array):
        """Bind an input or output to an array (a CuPy array on the GPU backend;
        TensorRT takes a raw pointer, we take the array so shape and dtype travel)."""
        self.engine._io_tensor(name)
        if not hasattr(array, "shape") or not hasattr(array, "dtype"):
            raise ExecutionError(f"set_tensor_address('{name}', ...) takes an array; got "
                                 f"{type(array).__name__}")
        if not hasattr(self, "_bound"):
            self._bound = {}
        self._bound[name] = array
        return True

    def get_tensor_address(self, name):
        return getattr(self, "_bound", {}).get(name)

    def execute_async_v3(self, stream=None):
        """Run with the bound tensors on ``stream`` (a CuPy stream; None = current).
        Outputs are written into the bound output arrays; nothing is copied to the
        host and the call does not wait for the GPU. A CUDA graph may read the bound
        inputs in place: change them on ``stream``, or once it has passed this call."""
        bound = getattr(self, "_bound", {})
        e = self.engine
        missing = [n for n in e.input_names + e.output_names if n not in bound]
        if missing:
            raise ExecutionError(f"execute_async_v3: no array bound for {missing}; bind each input "
                                 f"and output with set_tensor_address(name, array)")
        inputs = {n: bound[n] for n in e.input_names}
        feeds = self._check_inputs(inputs)
        self.bound_feeds = inputs
        try:
            outs = self.run(feeds, stream)
        finally:
            self.bound_feeds = {}
        for t in e.network._outputs:
            dst, src = bound[t.name], outs[t.name]
            if tuple(dst.shape) != tuple(src.shape) or dst.dtype != src.dtype:
                raise ExecutionError(f"output '{t.name}' is {tuple(src.shape)} {src.dtype}; the bound "
                                     f"array is {tuple(dst.shape)} {dst.dtype}")
            e.backend.copy_into(dst, src, stream)
        return True

    # TensorRT's names for the same call
    def execute_v2(self, inputs):
        return self.execute(inputs)
