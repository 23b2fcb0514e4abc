"""What an engine runs, layer by layer, below the runtime's API: each layer's
precision, how every tensor is stored between layers, concrete shapes for given
inputs, and the layer loop every backend drives.

``EngineSchedule`` (the base of runtime.CudaEngine) holds the fixed part of an
engine: network, backend, per-layer precision and output storage types.
``LayerRunner`` (the base of runtime.ExecutionContext) holds what one caller
keeps between calls: the per-input-shape plan of when each buffer can be freed,
and a profiler. The builder's tactic selection runs the same two objects through
a backend (``CupyBackend.select_tactics``) without the runtime, so a tactic is
timed on exactly the storage types the built engine will feed it.
"""

from .aux_streams import plan as aux_plan
from .errors import ExecutionError
from .int8_exec import int8_tensors
from .settings import settings
from .types import DATA_MOVEMENT, DataType, LayerType

# layers whose output image i depends on input image i alone (the batch axis is never
# reduced, reshaped or concatenated): what a batch-tiled prefix may hold
BATCH_LOCAL = frozenset({LayerType.CONVOLUTION, LayerType.DECONVOLUTION, LayerType.POOLING,
                         LayerType.ACTIVATION, LayerType.ELEMENTWISE, LayerType.SCALE,
                         LayerType.POINTWISE, LayerType.UNARY})


class EngineSchedule:
    def __init__(self, network, meta, backend):
        self.network = network
        self.meta = meta
        self.backend = backend
        precisions = meta.get("precisions", {})
        self._precision = {layer.name: DataType[precisions.get(layer.name, "FLOAT")]
                           for layer in network._layers}
        # INT8 storage (engine/int8_exec.py): tensors kept as int8 codes between INT8 layers
        self._int8_tensors = set()
        # an INT8 layer's float outputs are stored half under the FP16 flag (the INT8
        # epilogue writes half directly), float32 otherwise
        self._int8_float = DataType.HALF if "FP16" in meta.get("flags", ()) else DataType.FLOAT
        if DataType.INT8 in self._precision.values():
            self._int8_tensors = int8_tensors(network, self._precision)
        self._schedule = None
        self._frees = None

    def frees(self):
        """(per step, the tensors no later step reads; the same with each side branch's
        inputs held to its join and the AuxPlan, or None: engine/aux_streams.py). From the
        layer order alone, so computed once per engine, not per input shape."""
        if self._frees is None:
            layers, outputs = self.network._layers, self.network._outputs
            last_use = {}
            for step, layer in enumerate(layers):
                for t in layer._inputs:
                    if t is not None:
                        last_use[id(t)] = step
            keep = {id(t) for t in outputs}
            free_after = [[] for _ in layers]
            for tid, step in last_use.items():
                if tid not in keep:
                    free_after[step].append(tid)
            self._frees = (free_after, aux_plan(layers, outputs, free_after))
        return self._frees

    def schedule(self):
        """(layer, precision, output storage dtypes) per step: fixed for the engine,
        computed once (the per-call loop should do nothing it can skip)."""
        if self._schedule is None:
            self._schedule = [(layer, self._precision[layer.name],
                               [self._storage_dtype(layer, t) for t in layer._outputs])
                              for layer in self.network._layers]
        return self._schedule

    def _storage_dtype(self, layer, t):
        """How tensor ``t`` (an output of ``layer``) is stored between layers:
        int8 codes between INT8 layers; half where an FP16 layer wrote it, and where
        a layer that only moves data (concat, shuffle, slice...) read nothing but
        half (it changes no value, and a float32 copy would cost a cast on each side);
        float outputs of INT8 layers half under the FP16 flag;
        network outputs and explicit output types as declared."""
        if t.name in self._int8_tensors:
            return DataType.INT8
        if t.dtype != DataType.FLOAT or t.is_network_output or layer.output_type_is_set(t.index):
            return t.dtype
        p = self._precision.get(layer.name)
        if p == DataType.HALF:
            return DataType.HALF
        if p == DataType.INT8 and layer.layer_type not in DATA_MOVEMENT:
            return self._int8_float
        floats = [i for i in layer._inputs if i is not None and i.dtype == DataType.FLOAT]
        if layer.layer_type in DATA_MOVEMENT and floats and all(
                i.producer is not None and self._storage_dtype(i.producer, i) == DataType.HALF
                for i in floats):
            return DataType.HALF
        return t.dtype

    def infer_shapes(self, input_shapes):
        """Concrete shape of every tensor (keyed by id) for these input shapes."""
        shapes = {}
        for t in self.network._inputs:
            shapes[id(t)] = tuple(input_shapes[t.name])
        for layer in self.network._layers:
            ins = [None if t is None else shapes[id(t)] for t in layer._inputs]
            dts = [None if t is None else t.dtype for t in layer._inputs]
            try:
                results = self.network._infer_layer(layer, ins, dts)
            except Exception as e:     # noqa: BLE001  (re-raised with the call's context)
                raise ExecutionError(f"input shapes {dict(input_shapes)} are not valid for "
                                     f"{layer.describe()}: {e}") from e
            for t, (shape, _) in zip(layer._outputs, results):
                shapes[id(t)] = shape
        return shapes

    def __repr__(self):
        return f"<{type(self).__name__} {len(self.network._layers)} layers, backend={self.backend.name}>"


def moved_storage(layer, in_dtypes, out_dtypes, precision):
    """(input, output) storage types of ``layer`` timed in ``precision`` instead of its
    own (precision by timing; engine/precision_timing.py), from the ones the engine
    feeds it now. Float storage out of INT8 or HALF is half, else float32: int8 codes
    flow only between INT8 layers, so a producer that keeps INT8 writes that float type
    for this layer instead; float outputs take it too, except network outputs and
    outputs whose type is declared."""
    flt = DataType.HALF if precision in (DataType.HALF, DataType.INT8) else DataType.FLOAT
    ins = [flt if d == DataType.INT8 else d for d in in_dtypes]
    outs = [d if t.is_network_output or layer.output_type_is_set(t.index) or t.dtype != DataType.FLOAT
            else flt for t, d in zip(layer._outputs, out_dtypes)]
    return ins, outs


def batch_tiling(network, shapes, tiles, max_steps=0):
    """How to run the leading layers in ``tiles`` batch chunks (settings batch_tiles /
    batch_tile_layers): (chunk sizes, steps, boundary tensor ids), or None.

    The prefix is the longest run of leading layers (at most ``max_steps``; 0: no limit)
    that are BATCH_LOCAL, read only network inputs and the prefix's own outputs, keep the
    batch size N of every input, and write no tensor a concatenation reads (its elided
    buffer is claimed at the full batch). The boundary: prefix outputs read after it or
    marked as network outputs, joined along the batch axis once every chunk has run.
    Why: at batch 256 a stage-1 activation of ResNet-50 is 205 MB of int8 and streams
    through DRAM between layers; at 32 it is 26 MB and stays in a 50 MB L2."""
    ins = network._inputs
    if tiles < 2 or not ins:
        return None
    n = shapes[id(ins[0])][0] if shapes[id(ins[0])] else 0
    if n < tiles or any(not shapes[id(t)] or shapes[id(t)][0] != n for t in ins):
        return None
    concat_read = {id(t) for layer in network._layers if layer.layer_type == LayerType.CONCATENATION
                   for t in layer._inputs if t is not None}
    made = {id(t) for t in ins}
    layers = network._layers
    steps = 0
    for layer in layers[:max_steps or len(layers)]:
        outs = [id(t) for t in layer._outputs]
        if (layer.layer_type not in BATCH_LOCAL
                or any(t is not None and id(t) not in made for t in layer._inputs)
                or any(t is not None and shapes[id(t)][0] != n for t in layer._inputs)
                or any(not shapes[o] or shapes[o][0] != n or o in concat_read for o in outs)):
            break
        made.update(outs)
        steps += 1
    if steps == 0:
        return None
    later = {id(t) for layer in layers[steps:] for t in layer._inputs if t is not None}
    later |= {id(t) for t in network._outputs}
    boundary = [t for t in made - {id(t) for t in ins} if t in later]
    sizes = [n // tiles + (i < n % tiles) for i in range(tiles)]
    return sizes, steps, boundary


class LayerRunner:
    def __init__(self, engine):
        self.engine = engine
        self.profiler = None
        # the last profiled run's device hold expired before every layer was issued (a layer
        # synchronised the host): the times after that point include launch gaps
        self.launch_gaps = False
        # tactic selection times candidates with a host sync inside each layer: it must not
        # issue behind a hold (engine/backends/cupy_backend.py select_tactics)
        self.hold_when_profiled = True
        self._plans = {}      # input-shape signature -> per-call schedule
        # read once per context (run_layers is the per-call path)
        s = settings()
        self._tiles = (s.batch_tiles, s.batch_tile_layers)

    def _schedule(self, feeds):
        """Per input shapes (cached): every tensor's shape and, per step, the
        tensors no later step reads (freed after it)."""
        key = tuple(tuple(a.shape) for a in feeds.values())
        sched = self._plans.get(key)
        if sched is None:
            e = self.engine
            shapes = e.infer_shapes({n: a.shape for n, a in feeds.items()})
            free_after, aux = e.frees()
            sched = {"shapes": shapes, "free_after": free_after,
                     "tiling": batch_tiling(e.network, shapes, *self._tiles),
                     # used where the backend offers an auxiliary stream (engine/aux_streams.py)
                     "aux": aux}
            self._plans[key] = sched
        return sched

    def run_layers(self, feeds, sched, visit=None):
        """The layer loop, shared by every backend: backend arrays in and out.
        ``visit(tensor, value)``, when given, sees every layer output as it is made
        (INT8 calibration's statistics, engine/calibration.py)."""
        backend = self.engine.backend
        marks = []                    # (layer name, start mark, end mark): read after the loop
        # profiled: the device waits until every layer is issued, so the marks time its work
        # and not the launch path (kernels/gpu/device_hold.py)
        hold = backend.hold() if self.profiler and self.hold_when_profiled else None
        try:
            outs = self._layer_loop(feeds, sched, visit, marks)
        finally:
            if hold is not None:
                hold.release()
        for name, t0, t1 in marks:
            self.profiler.report_layer_time(name, backend.elapsed_ms(t0, t1))
        # read once the marks are: the stream has passed the hold by then
        self.launch_gaps = bool(hold is not None and marks and hold.expired)
        return outs

    def _layer_loop(self, feeds, sched, visit, marks):
        e = self.engine
        backend = e.backend
        values = {id(t): feeds[t.name] for t in e.network._inputs}
        schedule = e.schedule()
        first = 0
        tiling = sched.get("tiling") if visit is None else None    # calibration sees whole tensors
        if tiling is not None:
            sizes, first, boundary = tiling
            parts = {tid: [] for tid in boundary}
            keep = set(boundary)
            start = 0
            for size in sizes:                        # the prefix, one batch chunk at a time
                chunk = {tid: v[start:start + size] for tid, v in values.items()}   # views
                self._steps(schedule, 0, first, chunk, sched, marks, None, keep)
                for tid in boundary:
                    parts[tid].append(chunk[tid])
                start += size
            for tid in boundary:
                values[tid] = backend.join_batch(parts[tid])
            for step in range(first):                 # what the prefix would have freed
                for tid in sched["free_after"][step]:
                    if tid not in keep:
                        values.pop(tid, None)
        self._steps(schedule, first, len(schedule), values, sched, marks, visit)
        return {t.name: values[id(t)] for t in e.network._outputs}

    def _steps(self, schedule, begin, end, values, sched, marks, visit, keep=()):
        """Steps [begin, end) of the layer loop over ``values`` (tensor id -> array, updated
        in place); tensors in ``keep`` outlive their last reader (a tiled prefix's boundary)."""
        backend = self.engine.backend
        profiler = self.profiler
        free_after = sched["free_after"]
        # an auxiliary stream only where the backend offers one for this run (a CUDA-graph
        # capture): never while profiled, visited or selecting tactics
        aux = sched.get("aux") if profiler is None and visit is None else None
        stream = backend.aux_stream() if aux is not None else None
        placed, pending = (), {}           # auxiliary steps of this range; step -> its join token
        if stream is not None:
            placed = aux.within(begin, end)
            free_after = aux.free_after

        def run(step):
            layer, precision, out_dtypes = schedule[step]
            ins = [None if t is None else values[id(t)] for t in layer._inputs]
            t0 = backend.mark() if profiler else None
            outs = backend.run_layer(layer, ins, precision, out_dtypes)
            if profiler:
                marks.append((layer.name, t0, backend.mark()))
            for t, v in zip(layer._outputs, outs):
                values[id(t)] = v
                if visit is not None:
                    visit(t, v)

        for step in range(begin, end):
            if placed:
                for a in aux.join_before.get(step, ()):
                    if a in pending:
                        stream.join(pending.pop(a))
                for a in aux.issue_before.get(step, ()):
                    if a in placed:
                        pending[a] = stream.issue(lambda a=a: run(a), schedule[a][0].name)
            if step not in placed:
                run(step)
            for tid in free_after[step]:     # lets the allocator reuse the bytes
                if tid not in keep:
                    values.pop(tid, None)
        for token in pending.values():     # none: every join falls in the range
            stream.join(token)

    def run(self, feeds, stream=None):
        """Backend arrays in (already checked), backend arrays out, through the
        backend's ``execute`` (which may replay a CUDA graph)."""
        return self.engine.backend.execute(self, feeds, self._schedule(feeds), stream=stream)
