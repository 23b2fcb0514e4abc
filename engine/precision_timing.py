"""Per-layer precision by measurement: TensorRT's "FP16 (or INT8) where it is faster".

The FP16 flag first puts every floating compute layer in HALF, the INT8 flag
every calibrated layer that has an INT8 kernel in INT8 (``assign_precisions``,
``quantization.assign_int8``). Those are permissions, not orders: after the
first tactic selection the builder times each such layer once more in the next
precision down the ladder

    INT8 -> HALF (FP16 flag) or FLOAT;    HALF -> FLOAT

on the same build shapes, and moves it there when that is faster even after
paying for the type changes at its edges:

    alt_ms + boundary_ms < MARGIN * cur_ms

``boundary_ms`` is the measured time of one cast (a memory pass) of every
tensor at the layer's edges whose stored type the move would change: its input
(the producer's storage stays as it is) and its output when a consumer keeps
the current precision. Counting both sides in full overestimates what a fused
epilogue pays, which errs toward the permission given: a layer moves only when
it clearly wins. ``MARGIN`` keeps timing noise from flipping layers.

Decisions are made layer by layer against the neighbours' current precisions
(greedy), then for pairs (a layer and its only consumer, e.g. an INT8 stem and
its max pooling) that pay only when both move, as the cast between them goes
away (``decide_pairs``); a second round, on the engine rebuilt with the first round's moves,
catches the neighbours that a move made cheaper to move too. Layers whose
precision the user constrained (``layer.precision`` with
OBEY_PRECISION_CONSTRAINTS / STRICT_TYPES / PREFER_PRECISION_CONSTRAINTS) are
never moved.

The decision is a pure function of measured numbers (``decide``), tested on the
CPU; ``measure`` takes the numbers on the device.
"""
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .backends import select_backend
from .execution import moved_storage
from .gpu.cudnn_tactics import prefetch_only
from .gpu.device import cupy, half_tensor_flops, memory_system
from .gpu.timing import time_ms
from .int8_exec import TRANSPARENT, consumers as tensor_consumers
from .types import BuilderFlag, DataType, LayerType

log = logging.getLogger(__name__)

MARGIN = 0.9
ROUNDS = 2
# No FP32 tactic of ours computes faster than this (H100 FP32 FMA peak ~67 TFLOP/s;
# 3xTF32 on tensor cores stays below ~150): a HALF layer already faster than its
# FLOPs at this rate is not timed in FLOAT (saves the build most of the FP32 timing)
FP32_CEILING_FLOPS = 2.0e14

# layers whose speed depends on precision enough to be worth a measurement: the
# matrix layers (tensor cores in FP16 / INT8) and INT8 max pooling (codes)
_FLOAT_TIMED = (LayerType.CONVOLUTION, LayerType.DECONVOLUTION, LayerType.FULLY_CONNECTED,
                LayerType.MATRIX_MULTIPLY)
_INT8_TIMED = (LayerType.CONVOLUTION, LayerType.FULLY_CONNECTED, LayerType.POOLING)

_OBEY = (BuilderFlag.OBEY_PRECISION_CONSTRAINTS, BuilderFlag.STRICT_TYPES,
         BuilderFlag.PREFER_PRECISION_CONSTRAINTS)


@dataclass
class Move:
    """One layer's measurement: where it is, where it could go, and what each costs."""
    layer: str
    current: DataType
    alternative: DataType
    current_ms: float = math.nan
    alternative_ms: float = math.nan
    boundary_ms: float = 0.0
    moved: bool = False
    pair: str = ""                                    # moved only together with this layer
    in_edges: dict = field(default_factory=dict)     # tensor name -> cast ms (part of boundary_ms)
    out_edges: dict = field(default_factory=dict)
    current_s: float = 0.0                            # the build's wall seconds measuring each side
    alternative_s: float = 0.0                        # (a timing-cache answer takes microseconds)

    def as_dict(self):
        def ms(v):
            return None if not math.isfinite(v) else round(v, 5)
        return {"layer": self.layer, "from": self.current.name, "to": self.alternative.name,
                "ms": ms(self.current_ms), "alt_ms": ms(self.alternative_ms),
                "boundary_ms": ms(self.boundary_ms), "moved": bool(self.moved),
                "s": round(self.current_s, 4), "alt_s": round(self.alternative_s, 4),
                **({"pair": self.pair} if self.pair else {})}


def enabled(config):
    """On unless the config says ``precision_by_timing = False`` (a cupyrt option;
    TensorRT always does this and has no switch)."""
    return bool(getattr(config, "precision_by_timing", True)) and (
        config.get_flag(BuilderFlag.FP16) or config.get_flag(BuilderFlag.INT8))


def alternatives(network, precisions, config):
    """{layer name: the precision to try} for every layer that may move."""
    obey = any(config.get_flag(f) for f in _OBEY)
    fp16 = config.get_flag(BuilderFlag.FP16)
    out = {}
    for layer in network._layers:
        if obey and layer.precision_is_set:
            continue
        p = precisions.get(layer.name)
        if p == DataType.INT8 and layer.layer_type in _INT8_TIMED:
            out[layer.name] = DataType.HALF if fp16 else DataType.FLOAT
        elif p == DataType.HALF and layer.layer_type in _FLOAT_TIMED:
            out[layer.name] = DataType.FLOAT
    return out


def decide(moves, margin=MARGIN):
    """Mark the moves that pay (in place) and return the names of the moved layers.
    A side that failed to measure (inf/nan) never wins."""
    if not 0 < margin <= 1:
        raise ValueError(f"margin {margin}; expected 0 < margin <= 1")
    moved = []
    for m in moves:
        ok = all(math.isfinite(v) for v in (m.current_ms, m.alternative_ms, m.boundary_ms))
        m.moved = bool(ok and m.alternative_ms + m.boundary_ms < margin * m.current_ms)
        if m.moved:
            moved.append(m.layer)
    return moved


def _pairs(network, moves):
    """(lm, cm, t): each layer with a Move whose one output ``t`` (not a network output)
    has one consumer, that consumer's Move going to the same precision: the pairs
    ``decide_pairs`` weighs."""
    by_name = {m.layer: m for m in moves}
    consumers = tensor_consumers(network)
    for layer in network._layers:
        lm = by_name.get(layer.name)
        if lm is None or len(layer._outputs) != 1:
            continue
        t = layer._outputs[0]
        users = consumers.get(id(t), [])
        if len(users) != 1 or t.is_network_output:
            continue
        cm = by_name.get(users[0].name)
        if cm is None or cm.alternative != lm.alternative:
            continue
        yield lm, cm, t.name


def _pair_costs(lm, cm, between):
    """(current ms, moved ms) of a pair: moved together the tensor ``between`` them needs
    no cast, every other edge of either one still does."""
    cur = lm.current_ms + cm.current_ms
    alt = (lm.alternative_ms + cm.alternative_ms
           + sum(lm.in_edges.values()) + sum(cm.out_edges.values())
           + sum(v for k, v in lm.out_edges.items() if k != between)
           + sum(v for k, v in cm.in_edges.items() if k != between))
    return cur, alt


def decide_pairs(network, moves, margin=MARGIN):
    """Moves that pay only together (in place; returns the newly moved names): a
    layer whose one consumer may move to the same precision, e.g. an INT8 stem
    convolution and the max pooling after it. Alone, each pays the cast of the
    tensor between them; together that edge disappears:

        alt(L) + alt(C) + edges(L, C) - 2 x edge(L -> C) < margin x (cur(L) + cur(C))
    """
    moved = []
    for lm, cm, between in _pairs(network, moves):
        if lm.moved or cm.moved:
            continue
        cur, alt = _pair_costs(lm, cm, between)
        if all(math.isfinite(v) for v in (cur, alt)) and alt < margin * cur:
            lm.moved = cm.moved = True
            lm.pair, cm.pair = cm.layer, lm.layer
            moved += [lm.layer, cm.layer]
    return moved


def worth_timing(network, bounds, margin=MARGIN):
    """The names of the layers whose alternative could still win, judged from ``bounds``:
    Moves whose ``current_ms`` is measured and whose alternative and edge milliseconds are
    lower bounds (``cannot_win_floor_ms``, ``cast_floor_ms``). A layer is worth timing in its
    alternative when, at those bounds, it would move alone (``decide``) or in some pair
    (``decide_pairs``' condition, whether or not either member would also move alone). Every
    bound is at most what ``measure`` would find, so no layer left out could have moved."""
    live = [m for m in bounds if math.isfinite(m.current_ms)]
    out = {m.layer for m in live if m.alternative_ms + m.boundary_ms < margin * m.current_ms}
    for lm, cm, between in _pairs(network, live):
        cur, alt = _pair_costs(lm, cm, between)
        if alt < margin * cur:
            out |= {lm.layer, cm.layer}
    return out


def apply(network, precisions, moves):
    """Set the moved layers' precisions (in place). An INT8 data-movement layer
    left between a moved layer and the rest loses INT8 too (int8 codes flow only
    between INT8 layers): the same rule as quantization.assign_int8."""
    for m in moves:
        if m.moved:
            precisions[m.layer] = m.alternative
    fallback = {m.layer: m.alternative for m in moves if m.current == DataType.INT8}
    if not fallback:
        return precisions
    down = next(iter(fallback.values()))
    users_of = tensor_consumers(network)
    for layer in reversed(network._layers):
        if precisions.get(layer.name) == DataType.INT8 and layer.layer_type in TRANSPARENT:
            src = layer._inputs[0]
            users = users_of.get(id(layer._outputs[0]), [])
            if (any(precisions.get(u.name) != DataType.INT8 for u in users)
                    or src.producer is None or precisions.get(src.producer.name) != DataType.INT8):
                precisions[layer.name] = down
    return precisions


# -- measurement on the device ------------------------------------------------------

def _storage(engine, t):
    if t.producer is None:
        return t.dtype
    return engine._storage_dtype(t.producer, t)


def _random(xp, shape, dtype, rng):
    """Timing inputs made where they are used (host RNG of ResNet-sized batches took
    most of a build); ``rng`` is ``xp.random.RandomState``. INT8 codes are uniform floats
    cast (truncated): CuPy's randint compiled ten kernels on first use, 0.8 s of a ResNet-50
    INT8 build (H100)."""
    if dtype == DataType.INT8:
        return rng.uniform(-127.99, 127.99, size=shape).astype(np.int8)
    if dtype.to_numpy().kind != "f":
        return xp.zeros(shape, dtype.to_numpy())
    return rng.uniform(-1, 1, size=shape).astype(dtype.to_numpy())


def matmul_flops(layer, in_shape, out_shape):
    """2 x multiply-adds of a conv / FC / matmul at these shapes (None: unknown)."""
    lt = layer.layer_type
    if lt in (LayerType.CONVOLUTION, LayerType.DECONVOLUTION) and layer.kernel is not None:
        big = out_shape if lt == LayerType.CONVOLUTION else in_shape
        return 2.0 * int(np.prod(big)) * layer.kernel.size / max(layer.num_output_maps, 1) * (
            1 if lt == LayerType.CONVOLUTION else layer.num_output_maps / max(in_shape[1], 1))
    if lt == LayerType.FULLY_CONNECTED and layer.kernel is not None:
        return 2.0 * in_shape[0] * layer.kernel.size
    return None


def cannot_win_floor_ms(layer, alt, shapes, dtypes, memory, half_flops=None):
    """The least milliseconds ``layer`` could take in ``alt`` whatever its kernel, from the
    ``shapes`` of its inputs then outputs stored as ``dtypes`` there: its bytes' time
    (``traffic_floor_ms``) and its FLOPs at the fastest rate of that precision: in FLOAT
    FP32_CEILING_FLOPS, in HALF ``half_flops`` (the device's tensor-core ceiling,
    ``device.half_tensor_flops``; None: not bounded). At or past MARGIN x its time in the
    current precision, the move cannot be taken: not timed. An INT8 convolution that already
    runs faster than its FLOPs could at the FP16 peak cannot win in FP16."""
    floor = traffic_floor_ms(shapes, dtypes, memory)
    n_in = len(layer._inputs)
    flops = matmul_flops(layer, shapes[0], shapes[n_in]) if shapes and shapes[0] is not None else None
    if alt == DataType.FLOAT and flops:
        floor = max(floor, flops / FP32_CEILING_FLOPS * 1e3)
    if alt == DataType.HALF and flops and half_flops:
        floor = max(floor, flops / half_flops * 1e3)
    return floor


def traffic_floor_ms(shapes, dtypes, memory):
    """The least milliseconds a layer could take that reads and writes tensors of these
    ``shapes`` stored as ``dtypes`` (DataType), whatever its kernel: their bytes beyond what
    the L2 cache could hold, at the peak DRAM rate. ``memory``: (bytes/s, L2 bytes), as
    ``memory_system`` gives them. A memory-bound HALF layer (depthwise, 1x1, pooling) that
    already runs near its own bytes' rate cannot win in FLOAT, which moves twice as many."""
    bandwidth, l2 = memory
    total = sum(int(np.prod(s)) * np.dtype(d.to_numpy()).itemsize
                for s, d in zip(shapes, dtypes) if s is not None and d is not None)
    return max(0.0, total - l2) / bandwidth * 1e3


def cast_floor_ms(shape, src, dst, memory):
    """The least milliseconds one cast of a tensor of ``shape`` from ``src`` to ``dst``
    storage could take (it reads one and writes the other): a lower bound of what
    ``measure`` times for that edge."""
    return traffic_floor_ms([shape, shape], [src, dst], memory)


def _input(xp, t, shape, dtype, rng):
    """A timing input laid out as the engine hands it over: a rank-4 tensor some
    layer wrote is an NHWC buffer seen as NCHW (the tensor-core and pooling tactics
    write NHWC); a network input is the user's contiguous NCHW array. Timing on
    NCHW-contiguous inputs instead made every candidate pay a reformat."""
    if t.producer is not None and len(shape) == 4:
        n, c, h, w = shape
        return _random(xp, (n, h, w, c), dtype, rng).transpose(0, 3, 1, 2)
    return _random(xp, shape, dtype, rng)


def measure(engine, input_shapes, alts, seed=0, xp=None, timer=None, memory=None, half_flops=None,
            bounds=None):
    """Time every layer of ``alts`` in its current and its alternative precision on
    the engine's backend (``backend.measure``; the CuPy backend's timing cache
    serves repeats) and return the list of ``Move``s, undecided. A layer whose
    alternative cannot win even at lower bounds of its own time (``cannot_win_floor_ms``) and
    of the casts at its edges (``cast_floor_ms``), alone or in a pair (``worth_timing``), is
    not timed in it (alternative_ms = inf). Every current time comes first, so the
    alternatives' cuDNN plans are queued for the layers timed in them only
    (``cudnn_tactics.prefetch_only``: a ResNet-50 INT8 build queued 26 FP16 graphs for
    precision by timing and used 18, H100, session 15). ``xp``/``timer``/
    ``memory``/``half_flops`` default to CuPy, CUDA-event timing, the device's memory system
    and its FP16 tensor ceiling (tests pass stand-ins; with NumPy, no FP16 ceiling). ``bounds``:
    a list that receives the lower-bound Moves ``worth_timing`` judged (benchmarks/host.py)."""
    if xp is None:
        xp = cupy()
    if timer is None:
        timer = time_ms
    if memory is None:
        memory = memory_system(xp.cuda.Device().id)
    if half_flops is None and hasattr(xp, "cuda"):      # NumPy stand-ins: no FP16 ceiling
        half_flops = half_tensor_flops(xp.cuda.Device().id)
    cp = xp
    backend = engine.backend
    shapes = engine.infer_shapes(input_shapes)
    rng = xp.random.RandomState(seed)
    consumers = tensor_consumers(engine.network)
    cast_ms = {}

    def cast(shape, src, dst):
        """One memory pass over a tensor of ``shape`` changing its stored type."""
        key = (shape, src, dst)
        if key not in cast_ms:
            x = _random(cp, shape, src, rng)
            to = dst.to_numpy()
            cast_ms[key] = timer(lambda: x.astype(to), reps=5)
        return cast_ms[key]

    sched = {layer.name: (p, outs) for layer, p, outs in engine.schedule()}
    # first every layer in its own precision (the selection's timing cache answers) with lower
    # bounds of its alternative and of the casts at its edges; then the alternatives that
    # could win at those bounds, alone or in a pair (``worth_timing``), with the cuDNN plans
    # queued for those layers only (cudnn_tactics.prefetch_only)
    moves, pending = [], {}
    bounds = [] if bounds is None else bounds
    for layer in engine.network._layers:
        alt = alts.get(layer.name)
        if alt is None:
            continue
        cur, cur_out = sched[layer.name]
        ins = [t for t in layer._inputs]
        cur_in = [None if t is None else _storage(engine, t) for t in ins]
        alt_in, alt_out = moved_storage(layer, cur_in, cur_out, alt)
        m = Move(layer.name, cur, alt)
        moves.append(m)
        try:
            xs = [None if t is None else _input(cp, t, shapes[id(t)], d, rng) for t, d in zip(ins, cur_in)]
            t0 = time.perf_counter()
            m.current_ms = backend.measure(layer, xs, cur, cur_out)[1]
            m.current_s = time.perf_counter() - t0
            tensors = ins + list(layer._outputs)
            floor_ms = cannot_win_floor_ms(layer, alt, [None if t is None else shapes[id(t)] for t in tensors],
                                           list(alt_in) + list(alt_out), memory, half_flops)
        except Exception as e:     # noqa: BLE001  (a layer that cannot be measured stays put)
            log.info("%s: precision not measured (%s: %s)", layer.name, type(e).__name__, e)
            continue
        b = Move(layer.name, cur, alt, m.current_ms, floor_ms)
        edges = (layer, cur_in, alt_in, cur_out, alt_out)
        _price_edges(b, *edges, shapes, consumers, sched, lambda shape, src, dst: cast_floor_ms(shape, src, dst, memory))
        bounds.append(b)
        pending[layer.name] = (m, ins, edges)
    timed = worth_timing(engine.network, bounds)
    todo = []
    for name, item in pending.items():
        if name in timed:
            todo.append(item)
        else:
            item[0].alternative_ms = math.inf          # cannot win: not worth timing
    with prefetch_only(m.layer for m, *_ in todo):
        for m, ins, edges in todo:
            layer, _, alt_in, _, alt_out = edges
            try:
                xs = [None if t is None else _input(cp, t, shapes[id(t)], d, rng) for t, d in zip(ins, alt_in)]
                # a candidate far slower than the layer's own time cannot make the move pay: it
                # stops timing early (CupyBackend.measure's bound)
                t0 = time.perf_counter()
                m.alternative_ms = backend.measure(layer, xs, m.alternative, alt_out, bound_ms=m.current_ms)[1]
                m.alternative_s = time.perf_counter() - t0
                _price_edges(m, *edges, shapes, consumers, sched, cast)
            except Exception as e:     # noqa: BLE001  (a layer that cannot be measured stays put)
                log.info("%s: precision not measured (%s: %s)", layer.name, type(e).__name__, e)
    return moves


def _price_edges(move, layer, cur_in, alt_in, cur_out, alt_out, shapes, consumers, sched, cost):
    """Fill ``move``'s ``in_edges``, ``out_edges`` and ``boundary_ms`` with ``cost(shape, src,
    dst)`` of each cast the move adds: an input whose stored type changes, and an output
    whose type changes where some consumer keeps the current precision (``sched``: layer
    name -> (precision, output types))."""
    for t, a, c in zip(layer._inputs, alt_in, cur_in):
        if t is not None and a != c:
            move.in_edges[t.name] = move.in_edges.get(t.name, 0.0) + cost(shapes[id(t)], c, a)
    for t, a, c in zip(layer._outputs, alt_out, cur_out):
        if a != c and any(sched[u.name][0] == move.current for u in consumers.get(id(t), [])):
            move.out_edges[t.name] = cost(shapes[id(t)], a, c)
    move.boundary_ms = sum(move.in_edges.values()) + sum(move.out_edges.values())


# -- the builder's stage ------------------------------------------------------------

def device_limits():
    """What bounds precision by timing's floors on this device, for the plan's record:
    {"dram_bytes_per_s", "l2_bytes", "half_flops"} (``memory_system``, ``half_tensor_flops``),
    or None without a device."""
    try:
        dev = cupy().cuda.Device().id
        bandwidth, l2 = memory_system(dev)
        return {"dram_bytes_per_s": bandwidth if math.isfinite(bandwidth) else None, "l2_bytes": l2,
                "half_flops": half_tensor_flops(dev)}
    except Exception as e:     # noqa: BLE001  (a record, never a reason to fail a build)
        log.debug("device limits not read: %s: %s", type(e).__name__, e)
        return None


def refine_precisions(network, meta, config, engine, feeds, compile_round=None):
    """The builder's precision-by-timing stage: up to ROUNDS rounds of measure ->
    decide -> select the tactics again with the moved layers (on a fresh CuPy
    backend sharing the timing cache). ``engine``: the EngineSchedule the first
    selection ran (``backend.select_tactics``); ``meta`` is updated in place.
    ``compile_round(alts)``: called before each round after the first with the layers
    that round times in other precisions ({layer name: precision}; the builder compiles
    their tiles then: only a first round that moved layers has a second).
    Returns (the last EngineSchedule, the plan metadata of the moves)."""
    shapes = {n: a.shape for n, a in feeds.items()}
    precisions = {name: DataType[p] for name, p in meta["precisions"].items()}
    report, measured = [], []
    for round_no in range(ROUNDS):
        alts = alternatives(network, precisions, config)
        if not alts:
            break
        if round_no and compile_round is not None:
            compile_round(alts)
        moves = measure(engine, shapes, alts)
        moved = decide(moves)
        moved += decide_pairs(network, moves)
        report += [m.as_dict() for m in moves if m.moved]
        measured += [m.as_dict() for m in moves]
        if not moved:
            break
        apply(network, precisions, moves)
        log.info("precision by timing: %d layers moved (%s)", len(moved), ", ".join(moved[:8]))
        meta["precisions"] = {name: p.name for name, p in precisions.items()}
        if "int8_layers" in meta:
            meta["int8_layers"] = sorted(n for n, p in precisions.items() if p == DataType.INT8)
        backend = select_backend("cupy", dict(meta, kernels={}))
        backend.cache = engine.backend.cache   # one cache: the second round's hits are free
        backend.cudnn_plans = engine.backend.cudnn_plans    # and one set of cuDNN plans
        engine = backend.select_tactics(network, feeds)
    return engine, {"precisions": meta["precisions"], "precision_moves": report,
                    "precision_timing": measured, "precision_timing_limits": device_limits() if measured else None,
                    **({"int8_layers": meta["int8_layers"]} if "int8_layers" in meta else {})}
