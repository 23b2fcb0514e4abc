"""Precision by timing (engine/precision_timing.py): which layers may move, the
decision from measured numbers, the rewrite of the precision map, and what the
measurement feeds each side (with a stand-in backend: no GPU here)."""
import math
import types

import numpy as np
import pytest

import engine as rt
from engine import precision_timing as pt
from engine.types import DataType

def network(builder, seed=11):
    """conv(relu) -> max pool -> conv -> flattening shuffle -> FC, ranges on every tensor;
    the same weights on every call (engines built from it are compared)."""
    rng = np.random.default_rng(seed)

    def randn(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    net = builder.create_network()
    x = net.add_input("x", rt.float32, (2, 3, 8, 8))
    c1 = net.add_convolution_nd(x, 8, (3, 3), randn(8, 3, 3, 3), randn(8), padding_nd=(1, 1))
    r1 = net.add_activation(c1.get_output(0), rt.ActivationType.RELU)
    pool = net.add_pooling_nd(r1.get_output(0), rt.PoolingType.MAX, (2, 2), stride_nd=(2, 2))
    c2 = net.add_convolution_nd(pool.get_output(0), 8, (3, 3), randn(8, 8, 3, 3), randn(8),
                                padding_nd=(1, 1))
    sh = net.add_shuffle(c2.get_output(0))
    sh.reshape_dims = (2, 8 * 4 * 4)
    fc = net.add_fully_connected(sh.get_output(0), 5, randn(5, 8 * 4 * 4), randn(5))
    net.mark_output(fc.get_output(0))
    # ranges a little above what the FP32 network reaches on the tests' inputs (|x| <= 3)
    for t, r in [(x, 3), (c1.get_output(0), 32), (r1.get_output(0), 24), (pool.get_output(0), 24),
                 (c2.get_output(0), 200), (sh.get_output(0), 200), (fc.get_output(0), 1500)]:
        t.set_dynamic_range(-r, r)
    return net


def config(builder, *flags):
    cfg = builder.create_builder_config()
    cfg.backend = "numpy"
    for f in flags:
        cfg.set_flag(f)
    return cfg


def built(flags):
    b = rt.Builder()
    net = network(b)
    e = b.build_engine(net, config(b, *flags))
    return e, {layer.name: DataType[p] for layer, p in
               ((lay, e.meta["precisions"][lay.name]) for lay in e.network._layers)}


def by_type(engine, layer_type):
    return [layer for layer in engine.network._layers if layer.layer_type == layer_type]


def test_enabled_needs_a_reduced_precision_flag_and_the_option():
    b = rt.Builder()
    assert not pt.enabled(config(b))
    cfg = config(b, rt.BuilderFlag.FP16)
    assert pt.enabled(cfg)
    cfg.precision_by_timing = False
    assert not pt.enabled(cfg)
    assert pt.enabled(config(b, rt.BuilderFlag.INT8))


def test_fp16_alternatives_are_the_matrix_layers_going_to_fp32():
    e, prec = built((rt.BuilderFlag.FP16,))
    b = rt.Builder()
    alts = pt.alternatives(e.network, prec, config(b, rt.BuilderFlag.FP16))
    convs = by_type(e, rt.LayerType.CONVOLUTION)
    fcs = by_type(e, rt.LayerType.FULLY_CONNECTED)
    assert set(alts) == {layer.name for layer in convs + fcs}
    assert set(alts.values()) == {DataType.FLOAT}


def test_int8_alternatives_go_to_fp16_or_fp32_and_constraints_are_never_moved():
    e, prec = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    b = rt.Builder()
    assert prec[by_type(e, rt.LayerType.POOLING)[0].name] == DataType.INT8
    alts = pt.alternatives(e.network, prec, config(b, rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    int8 = {n for n, p in prec.items() if p == DataType.INT8}
    timed = {layer.name for layer in e.network._layers if layer.layer_type in
             (rt.LayerType.CONVOLUTION, rt.LayerType.FULLY_CONNECTED, rt.LayerType.POOLING)}
    assert set(alts) == int8 & timed and set(alts.values()) == {DataType.HALF}
    alts32 = pt.alternatives(e.network, prec, config(b, rt.BuilderFlag.INT8))
    assert set(alts32.values()) == {DataType.FLOAT}
    first = by_type(e, rt.LayerType.CONVOLUTION)[0]
    first.precision = DataType.INT8
    obey = config(b, rt.BuilderFlag.INT8, rt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    assert first.name not in pt.alternatives(e.network, prec, obey)
    assert first.name in pt.alternatives(e.network, prec, config(b, rt.BuilderFlag.INT8))


@pytest.mark.parametrize("cur, alt, boundary, moved", [
    (1.0, 0.5, 0.3, True),       # 0.8 < 0.9
    (1.0, 0.5, 0.45, False),     # 0.95: within the margin
    (1.0, 0.95, 0.0, False),     # faster, but by less than the margin
    (1.0, math.inf, 0.0, False),  # the alternative failed to run
    (math.inf, 0.1, 0.0, False),  # the current one failed to measure: nothing to compare
    (1.0, math.nan, 0.0, False)])
def test_decide_moves_a_layer_only_when_it_clearly_wins(cur, alt, boundary, moved):
    m = pt.Move("L", DataType.HALF, DataType.FLOAT, cur, alt, boundary)
    assert pt.decide([m]) == (["L"] if moved else []) and m.moved is moved
    d = m.as_dict()
    assert d["from"] == "HALF" and d["to"] == "FLOAT" and d["moved"] is moved
    if not math.isfinite(alt):
        assert d["alt_ms"] is None


@pytest.mark.parametrize("margin", [0, -0.5, 1.5])
def test_decide_rejects_a_margin_outside_0_1(margin):
    with pytest.raises(ValueError, match="expected 0 < margin <= 1"):
        pt.decide([], margin)


@pytest.mark.parametrize("which", ["producer", "consumer"])
def test_apply_drops_int8_from_a_shuffle_left_without_int8_neighbours(which):
    e, prec = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    shuffle = by_type(e, rt.LayerType.SHUFFLE)
    assert shuffle and prec[shuffle[0].name] == DataType.INT8
    layer = by_type(e, rt.LayerType.CONVOLUTION)[1] if which == "producer" else \
        by_type(e, rt.LayerType.FULLY_CONNECTED)[0]
    moves = [pt.Move(layer.name, DataType.INT8, DataType.HALF, 1.0, 0.1, 0.0, moved=True),
             pt.Move("other", DataType.INT8, DataType.HALF, 1.0, 2.0, 0.0, moved=False)]
    pt.apply(e.network, prec, moves)
    assert prec[layer.name] == DataType.HALF and prec[shuffle[0].name] == DataType.HALF
    assert prec[by_type(e, rt.LayerType.POOLING)[0].name] == DataType.INT8
    assert "other" not in prec


def test_apply_without_int8_moves_touches_only_the_moved_layers():
    e, prec = built((rt.BuilderFlag.FP16,))
    before = dict(prec)
    conv = by_type(e, rt.LayerType.CONVOLUTION)[0]
    pt.apply(e.network, prec, [pt.Move(conv.name, DataType.HALF, DataType.FLOAT, moved=True)])
    assert prec[conv.name] == DataType.FLOAT
    assert {k: v for k, v in prec.items() if k != conv.name} == \
        {k: v for k, v in before.items() if k != conv.name}


class FakeBackend:
    """Plays CupyBackend.measure: preset milliseconds per (layer, precision); records
    the dtypes each side was fed and the bound each measure was given."""

    def __init__(self, ms):
        self.ms, self.fed, self.bounds = ms, {}, {}

    def measure(self, layer, inputs, precision, out_dtypes, bound_ms=math.inf):
        self.fed[(layer.name, precision)] = ([None if x is None else x.dtype for x in inputs],
                                             list(out_dtypes))
        self.bounds[(layer.name, precision)] = bound_ms
        ms = self.ms[(layer.name, precision)]
        if ms is None:
            raise RuntimeError("no tactic runs")
        return "fake", ms


NO_FLOOR = (math.inf, 0)        # measure's memory system stand-in: no traffic floor


def test_measure_feeds_each_side_its_storage_and_counts_the_edges(monkeypatch):
    ticks = iter(range(0, 10_000, 2))                # each measure "takes" 2 s of the stand-in clock
    monkeypatch.setattr(pt, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    e, prec = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    conv1, conv2 = by_type(e, rt.LayerType.CONVOLUTION)[:2]
    pool = by_type(e, rt.LayerType.POOLING)[0]
    b = rt.Builder()
    alts = pt.alternatives(e.network, prec, config(b, rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    ms = {}
    for name in alts:
        ms[(name, DataType.INT8)], ms[(name, DataType.HALF)] = 2.0, 1.0
    ms[(pool.name, DataType.HALF)] = None                      # its FP16 side cannot run
    fake = FakeBackend(ms)
    e.backend = fake
    casts = []

    def timer(fn, reps):
        casts.append(fn().dtype)                                 # the cast runs (numpy stands in)
        return 0.25

    moves = {m.layer: m for m in pt.measure(e, {"x": (2, 3, 8, 8)}, alts, xp=np, timer=timer,
                                                       memory=NO_FLOOR)}
    assert set(moves) == set(alts)
    # the first conv reads the network input (float32 either way); INT8 writes codes
    # for the INT8 pool, FP16 would write half that the pool must quantize: one cast
    ins, outs = fake.fed[(conv1.name, DataType.INT8)]
    assert ins[0] == np.float32 and outs == [DataType.INT8]
    ins, outs = fake.fed[(conv1.name, DataType.HALF)]
    assert ins[0] == np.float32 and outs == [DataType.HALF]
    assert moves[conv1.name].boundary_ms == 0.25
    # the second conv reads codes; moved, its producer writes half instead: one cast in;
    # its consumer (the shuffle, INT8) stays: one cast out
    ins, _ = fake.fed[(conv2.name, DataType.INT8)]
    assert ins[0] == np.int8
    ins, _ = fake.fed[(conv2.name, DataType.HALF)]
    assert ins[0] == np.float16
    assert moves[conv2.name].boundary_ms == 0.5
    assert math.isnan(moves[pool.name].alternative_ms)         # not measured: stays put
    moved = pt.decide(list(moves.values()))
    assert conv1.name in moved and pool.name not in moved      # 1.0 + 0.25 < 1.8
    assert moves[conv1.name].current_ms == 2.0 and moves[conv1.name].alternative_ms == 1.0
    assert set(casts) <= {np.dtype(np.int8), np.dtype(np.float16)} and casts
    # each alternative is timed bounded by the layer's own time; its own precision is not
    assert fake.bounds[(conv1.name, DataType.HALF)] == 2.0
    assert fake.bounds[(conv1.name, DataType.INT8)] == math.inf
    # the wall seconds of each side: every layer's own measure, the alternatives timed
    assert all(m.current_s == 2 for m in moves.values())
    assert moves[conv1.name].alternative_s == 2 and moves[conv1.name].as_dict()["alt_s"] == 2


def test_alternatives_are_timed_after_every_current_time_with_plans_queued_for_those_layers_only():
    """measure times every layer in its own precision first; then, with the cuDNN prefetch
    scoped to the layers whose alternative could win (``cudnn_tactics.prefetch_only``), those
    alternatives: a layer the floor rules out is neither timed nor in the scope."""
    from engine.gpu import cudnn_tactics
    e, prec = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    alts = pt.alternatives(e.network, prec, config(rt.Builder(), rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    conv1, conv2 = by_type(e, rt.LayerType.CONVOLUTION)[:2]
    del alts[by_type(e, rt.LayerType.POOLING)[0].name]        # no pair could rescue conv2
    ms = {}
    for name in alts:
        ms[(name, prec[name])], ms[(name, alts[name])] = 1.0, 0.5
    ms[(conv2.name, prec[conv2.name])] = 1e-9                 # already faster than its bytes: ruled out
    order, scopes = [], {}

    class Recording(FakeBackend):
        def measure(self, layer, inputs, precision, out_dtypes, bound_ms=math.inf):
            order.append((layer.name, precision == prec[layer.name]))
            if precision != prec[layer.name]:
                scopes[layer.name] = cudnn_tactics._prefetch_scope.get()
            return super().measure(layer, inputs, precision, out_dtypes, bound_ms)
    e.backend = Recording(ms)
    moves = {m.layer: m for m in pt.measure(e, {"x": (2, 3, 8, 8)}, alts, xp=np,
                                           timer=lambda fn, reps: 0.0, memory=(1e9, 0))}
    first_alt = next(i for i, (_, own) in enumerate(order) if not own)
    assert all(own for _, own in order[:first_alt]) and not any(own for _, own in order[first_alt:])
    assert {n for n, own in order if own} == set(alts)         # every layer in its own precision
    timed = {n for n, own in order if not own}
    assert conv2.name not in timed and moves[conv2.name].alternative_ms == math.inf
    assert conv1.name in timed and set(scopes) == timed
    assert all(scope == frozenset(timed) for scope in scopes.values())
    assert cudnn_tactics._prefetch_scope.get() is None         # reset after


def test_matmul_flops_counts_multiply_adds():
    e, _ = built((rt.BuilderFlag.FP16,))
    conv = by_type(e, rt.LayerType.CONVOLUTION)[0]
    fc = by_type(e, rt.LayerType.FULLY_CONNECTED)[0]
    # conv 3->8, 3x3, output (2, 8, 8, 8): 2 * 2*8*8*8 outputs * 27 MACs each
    assert pt.matmul_flops(conv, (2, 3, 8, 8), (2, 8, 8, 8)) == 2 * 2 * 8 * 8 * 8 * 27
    assert pt.matmul_flops(fc, (2, 128), (2, 5)) == 2 * 2 * 5 * 128
    relu = next(layer for layer in e.network._layers
                if layer.layer_type not in (rt.LayerType.CONVOLUTION, rt.LayerType.FULLY_CONNECTED))
    assert pt.matmul_flops(relu, (2, 8, 8, 8), (2, 8, 8, 8)) is None


def test_a_half_layer_faster_than_any_fp32_kernel_could_be_is_not_timed_in_fp32():
    e, prec = built((rt.BuilderFlag.FP16,))
    b = rt.Builder()
    alts = pt.alternatives(e.network, prec, config(b, rt.BuilderFlag.FP16))
    conv = by_type(e, rt.LayerType.CONVOLUTION)[0]
    flops = pt.matmul_flops(conv, (2, 3, 8, 8), (2, 8, 8, 8))
    ms = {}
    for name in alts:
        ms[(name, DataType.HALF)], ms[(name, DataType.FLOAT)] = 1.0, 0.1   # slow enough: timed
    ms[(conv.name, DataType.HALF)] = 0.5 * flops / pt.FP32_CEILING_FLOPS * 1e3
    fake = FakeBackend(ms)
    e.backend = fake
    moves = {m.layer: m for m in pt.measure(e, {"x": (2, 3, 8, 8)}, alts, xp=np,
                                           timer=lambda fn, reps: 0.0, memory=NO_FLOOR)}
    assert moves[conv.name].alternative_ms == math.inf
    assert (conv.name, DataType.FLOAT) not in fake.fed
    others = [n for n in alts if n != conv.name]
    assert others and all(moves[n].alternative_ms == 0.1 for n in others)
    assert set(pt.decide(list(moves.values()))) == set(others)


@pytest.mark.parametrize("flags, alt, widths, casts", [((rt.BuilderFlag.FP16,), DataType.FLOAT, (2, 4), 0),
                                                       ((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16), DataType.HALF,
                                                        (2, 2), 2)])
def test_a_layer_faster_than_its_alternative_could_move_its_bytes_is_not_timed_there(flags, alt, widths, casts):
    """The traffic floor: a layer already faster than its inputs and outputs, stored as the
    alternative stores them, could stream through DRAM (beyond what the L2 holds), plus the
    casts the move adds at its edges at their own floors, keeps its precision untimed; the same
    layer slower than that floor / MARGIN is timed. The floor counts each tensor as the move
    would store it (``widths``: bytes of an input and an output element; a FLOAT layer reads
    its HALF producer's storage and writes float32, which its consumer, a shuffle, takes as
    it is; an FP16 layer between INT8 neighbours needs ``casts`` = 2: int8 codes to half in,
    half to codes out, each reading one byte and writing two per element or the reverse)."""
    e, prec = built(flags)
    b = rt.Builder()
    alts = pt.alternatives(e.network, prec, config(b, *flags))
    alts.pop(by_type(e, rt.LayerType.POOLING)[0].name, None)     # the conv alone: no pair
    conv = by_type(e, rt.LayerType.CONVOLUTION)[1]
    assert alts[conv.name] == alt
    cur = prec[conv.name]
    shape = (2, 8, 4, 4)                                  # the conv's input and output (pooled)
    l2, bandwidth = 100, 1e9                              # bytes, bytes/s
    floor_ms = (int(np.prod(shape)) * sum(widths) - l2) / bandwidth * 1e3
    floor_ms += casts * (int(np.prod(shape)) * (1 + 2) - l2) / bandwidth * 1e3
    for cur_ms, timed in ((0.99 * floor_ms / pt.MARGIN, False), (1.01 * floor_ms / pt.MARGIN, True)):
        ms = {}
        for name in alts:
            ms[(name, prec[name])], ms[(name, alts[name])] = 1e3, 1.0       # the others: timed
        ms[(conv.name, cur)], ms[(conv.name, alt)] = cur_ms, 1e-6
        fake = FakeBackend(ms)
        e.backend = fake
        moves = {m.layer: m for m in pt.measure(e, {"x": (2, 3, 8, 8)}, alts, xp=np,
                                               timer=lambda fn, reps: 0.0, memory=(bandwidth, l2))}
        assert ((conv.name, alt) in fake.fed) == timed
        assert (moves[conv.name].alternative_ms == math.inf) != timed
    assert pt.traffic_floor_ms([(10,), None], [DataType.HALF, None], (1e9, 100)) == 0.0   # all in L2
    assert pt.traffic_floor_ms([(1000,)], [DataType.INT8], (1e6, 0)) == 1.0


def test_timing_inputs_are_laid_out_as_the_engine_hands_them_over():
    e, prec = built((rt.BuilderFlag.FP16,))
    b = rt.Builder()
    alts = pt.alternatives(e.network, prec, config(b, rt.BuilderFlag.FP16))
    seen = {}

    class Recorder(FakeBackend):
        def measure(self, layer, inputs, precision, out_dtypes, bound_ms=math.inf):
            seen[layer.name] = inputs[0]
            return "fake", 1.0
    e.backend = Recorder({})
    pt.measure(e, {"x": (2, 3, 8, 8)}, alts, xp=np, timer=lambda fn, reps: 0.0, memory=NO_FLOOR)
    conv1, conv2 = by_type(e, rt.LayerType.CONVOLUTION)[:2]
    assert seen[conv1.name].flags.c_contiguous                 # the network input: NCHW
    x2 = seen[conv2.name]                                       # a pooling output: NHWC underneath
    assert x2.shape == (2, 8, 4, 4) and x2.transpose(0, 2, 3, 1).flags.c_contiguous


def _stem_and_pool(e):
    conv1 = by_type(e, rt.LayerType.CONVOLUTION)[0]
    pool = by_type(e, rt.LayerType.POOLING)[0]
    return conv1, pool, conv1._outputs[0].name, pool._outputs[0].name


def test_a_pair_that_pays_only_together_moves_together():
    e, _ = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    conv1, pool, between, after = _stem_and_pool(e)
    assert [u.name for u in e.network._layers if conv1._outputs[0] in u._inputs] == [pool.name]
    lm = pt.Move(conv1.name, DataType.INT8, DataType.HALF, 2.0, 1.3, 1.0, out_edges={between: 1.0})
    cm = pt.Move(pool.name, DataType.INT8, DataType.HALF, 2.2, 1.4, 1.2,
                 in_edges={between: 1.0}, out_edges={after: 0.2})
    assert pt.decide([lm, cm]) == []                       # alone neither pays: 2.3 > 1.8, 2.6 > 1.98
    assert pt.decide_pairs(e.network, [lm, cm]) == [conv1.name, pool.name]   # 2.9 < 3.78
    assert lm.moved and cm.moved
    # the plan's record says each paid only with the other (alone, 2.3 is not < 0.9 x 2.0)
    assert lm.as_dict()["pair"] == pool.name and cm.as_dict()["pair"] == conv1.name


@pytest.mark.parametrize("case", ["other_target", "too_slow", "already_moved", "not_measured"])
def test_pairs_that_do_not_pay_or_do_not_match_stay(case):
    e, _ = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    conv1, pool, between, after = _stem_and_pool(e)
    lm = pt.Move(conv1.name, DataType.INT8, DataType.HALF, 2.0, 1.3, 1.0, out_edges={between: 1.0})
    cm = pt.Move(pool.name, DataType.INT8, DataType.HALF, 2.2, 1.4, 1.2,
                 in_edges={between: 1.0}, out_edges={after: 0.2})
    if case == "other_target":
        cm.alternative = DataType.FLOAT
    elif case == "too_slow":
        cm.alternative_ms = 3.0                              # 1.3 + 3.0 + 0.2 > 3.78
    elif case == "already_moved":
        lm.moved = True
    else:
        cm.alternative_ms = math.nan
    assert pt.decide_pairs(e.network, [lm, cm]) == []
    assert cm.moved is False


def test_memory_system_from_the_device_attributes(monkeypatch):
    """Two transfers a memory clock over the bus (kHz, bits -> bytes/s) and the L2 size; a
    driver that does not report the clock bounds nothing (infinite rate, no L2)."""
    import types
    from engine.gpu import device

    def fake(attrs):
        dev = types.SimpleNamespace(attributes=attrs)
        return types.SimpleNamespace(cuda=types.SimpleNamespace(Device=lambda i: dev))
    monkeypatch.setattr(device, "cupy", lambda: fake({"MemoryClockRate": 2_619_000, "GlobalMemoryBusWidth": 5120,
                                                      "L2CacheSize": 50 * 2**20}))
    assert device.memory_system.__wrapped__(0) == (2 * 2.619e9 * 640, 50 * 2**20)
    monkeypatch.setattr(device, "cupy", lambda: fake({"GlobalMemoryBusWidth": 5120}))
    assert device.memory_system.__wrapped__(0) == (math.inf, 0)
    assert pt.traffic_floor_ms([(10**6,)], [DataType.FLOAT], (math.inf, 0)) == 0.0


def test_half_tensor_flops_from_the_device_attributes(monkeypatch):
    """SMs x peak clock (kHz) x the architecture's FP16 FLOPs per SM per clock: an H100 SXM's
    attributes give 1.07e15 (its published dense peak, 989 TFLOP/s, is below); an attribute
    CuPy's dict lacks comes from the runtime; a clock nobody reports is the fallback (3 GHz,
    still a ceiling); an unknown architecture or SM count bounds nothing."""
    import types
    from engine.gpu import device
    h100 = {"MultiProcessorCount": 132, "ClockRate": 1_980_000, "ComputeCapabilityMajor": 9}
    assert device.half_flops_from(h100) == 132 * 1.98e9 * 4096
    assert 989e12 < device.half_flops_from(h100) < 1.1e15
    a100 = dict(h100, MultiProcessorCount=108, ClockRate=1_410_000, ComputeCapabilityMajor=8)
    assert device.half_flops_from(a100) > 0.999 * 312e12            # A100's dense FP16 peak (rounded up)
    assert device.half_flops_from(dict(h100, ComputeCapabilityMajor=6)) is None
    assert device.half_flops_from({"ClockRate": 1_980_000, "ComputeCapabilityMajor": 9}) is None
    no_clock = {"MultiProcessorCount": 132, "ComputeCapabilityMajor": 9}
    assert device.half_flops_from(no_clock) == 132 * 3e9 * 4096 > device.half_flops_from(h100)
    asked = []

    def runtime_attr(enum, dev):
        asked.append(enum)
        if enum == 13:
            return 1_980_000
        raise RuntimeError("cudaErrorInvalidValue")

    def fake(attrs):
        d = types.SimpleNamespace(attributes=attrs)
        return types.SimpleNamespace(cuda=types.SimpleNamespace(
            Device=lambda i: d, runtime=types.SimpleNamespace(deviceGetAttribute=runtime_attr)))
    monkeypatch.setattr(device, "cupy", lambda: fake(h100))
    assert device.half_tensor_flops.__wrapped__(0) == device.half_flops_from(h100) and asked == []
    monkeypatch.setattr(device, "cupy", lambda: fake(no_clock))           # CuPy's dict lacks the clock
    assert device.half_tensor_flops.__wrapped__(0) == device.half_flops_from(h100) and asked == [13]
    monkeypatch.setattr(device, "cupy", lambda: fake({"ComputeCapabilityMajor": 9}))   # no SM count anywhere
    assert device.half_tensor_flops.__wrapped__(0) is None


@pytest.mark.parametrize("half_flops, timed", [(None, True), (1e15, False)])
def test_an_int8_conv_faster_than_its_flops_at_the_fp16_ceiling_is_not_timed_in_fp16(half_flops, timed):
    """INT8 -> HALF: the FP16 alternative can run no faster than the layer's FLOPs at the
    device's FP16 tensor ceiling; an INT8 conv already past 0.9 x that is not timed (the
    memory system bounds nothing here, so without a ceiling it is)."""
    e, prec = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    alts = pt.alternatives(e.network, prec, config(rt.Builder(), rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    del alts[by_type(e, rt.LayerType.POOLING)[0].name]        # no pair could rescue conv2
    conv2 = by_type(e, rt.LayerType.CONVOLUTION)[1]
    flops = pt.matmul_flops(conv2, (2, 8, 4, 4), (2, 8, 4, 4))
    assert flops == 2 * 2 * 8 * 4 * 4 * 72
    ms = {}
    for name in alts:
        ms[(name, prec[name])], ms[(name, alts[name])] = 1.0, 0.5
    ms[(conv2.name, DataType.INT8)] = 0.99 * MARGIN_OF(flops / 1e15 * 1e3)
    fake = FakeBackend(ms)
    e.backend = fake
    moves = {m.layer: m for m in pt.measure(e, {"x": (2, 3, 8, 8)}, alts, xp=np, timer=lambda fn, reps: 0.0,
                                           memory=NO_FLOOR, half_flops=half_flops)}
    assert ((conv2.name, DataType.HALF) in fake.fed) == timed
    assert (moves[conv2.name].alternative_ms == math.inf) != timed
    assert len(conv2._inputs) == 1
    assert pt.cannot_win_floor_ms(conv2, DataType.HALF, [(2, 8, 4, 4), (2, 8, 4, 4)],
                                  [DataType.HALF, DataType.HALF], NO_FLOOR, 1e15) == flops / 1e15 * 1e3
    assert pt.cannot_win_floor_ms(conv2, DataType.FLOAT, [(2, 8, 4, 4), (2, 8, 4, 4)],      # FP32's own
                                  [DataType.FLOAT, DataType.FLOAT], NO_FLOOR, 1e15) == \
        flops / pt.FP32_CEILING_FLOPS * 1e3


def MARGIN_OF(ms):
    """The current time at which an alternative with floor ``ms`` is just ruled out."""
    return ms / pt.MARGIN


def test_int8_timing_inputs_span_the_code_range():
    x = pt._random(np, (4000,), DataType.INT8, np.random.RandomState(3))
    assert x.dtype == np.int8 and x.min() == -127 and x.max() == 127 and len(np.unique(x)) == 255


@pytest.mark.parametrize("first_round_moves", [True, False])
def test_a_second_round_compiles_its_alternatives_only_when_the_first_moved_layers(monkeypatch, first_round_moves):
    """refine_precisions calls ``compile_round`` before every round after the first, with
    that round's alternatives (the moved INT8 layer is timed in FLOAT then); a first round
    that moves nothing ends the stage and compiles nothing more."""
    import types
    e, prec = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    b = rt.Builder()
    cfg = config(b, rt.BuilderFlag.INT8, rt.BuilderFlag.FP16)
    conv1 = by_type(e, rt.LayerType.CONVOLUTION)[0]
    rounds = []

    def fake_measure(engine, shapes, alts):
        rounds.append(dict(alts))
        fast = first_round_moves and len(rounds) == 1
        return [pt.Move(name, prec.get(name, DataType.INT8), alt, current_ms=1.0,
                        alternative_ms=0.1 if fast and name == conv1.name else 5.0) for name, alt in alts.items()]
    monkeypatch.setattr(pt, "measure", fake_measure)
    selected = types.SimpleNamespace(backend=types.SimpleNamespace(cache=None, cudnn_plans=None))
    backend = types.SimpleNamespace(select_tactics=lambda network, feeds: selected)
    monkeypatch.setattr(pt, "select_backend", lambda name, meta: backend)
    compiled = []
    meta = dict(e.meta)
    engine = types.SimpleNamespace(backend=types.SimpleNamespace(cache=None, cudnn_plans=None))
    pt.refine_precisions(e.network, meta, cfg, engine, {"x": np.zeros((2, 3, 8, 8), np.float32)},
                         compile_round=compiled.append)
    assert rounds[0][conv1.name] == DataType.HALF
    if first_round_moves:
        assert len(rounds) == 2 and compiled == [rounds[1]]
        assert rounds[1][conv1.name] == DataType.FLOAT and meta["precisions"][conv1.name] == "HALF"
    else:
        assert len(rounds) == 1 and compiled == []


def _bounds(lm_cur, lm_alt, cm_cur, cm_alt, between_ms, in_ms=0.0, after_ms=0.0):
    e, _ = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    conv1, pool, between, after = _stem_and_pool(e)
    lm = pt.Move(conv1.name, DataType.INT8, DataType.HALF, lm_cur, lm_alt, in_ms + between_ms,
                 in_edges={"x": in_ms}, out_edges={between: between_ms})
    cm = pt.Move(pool.name, DataType.INT8, DataType.HALF, cm_cur, cm_alt, between_ms + after_ms,
                 in_edges={between: between_ms}, out_edges={after: after_ms})
    return e.network, lm, cm


def test_worth_timing_keeps_a_layer_that_could_win_only_in_a_pair():
    # alone neither could (0.5 + 0.5 >= 0.9 x 1.0); together the edge goes: 1.0 < 1.8
    net, lm, cm = _bounds(1.0, 0.5, 1.0, 0.5, 0.5)
    assert pt.worth_timing(net, [lm, cm]) == {lm.layer, cm.layer}
    # the pair cannot win either: 0.5 + 1.5 >= 1.8
    net, lm, cm = _bounds(1.0, 0.5, 1.0, 1.5, 0.5)
    assert pt.worth_timing(net, [lm, cm]) == set()
    # one could win alone; its partner, which alone could not, is kept for the pair too
    net, lm, cm = _bounds(1.0, 0.1, 1.0, 0.5, 0.5)
    assert pt.decide([lm, cm]) == [lm.layer]
    assert pt.worth_timing(net, [lm, cm]) == {lm.layer, cm.layer}
    # edges that no pair removes count in full: the stem's input cast rules it out alone
    net, lm, cm = _bounds(1.0, 0.1, 10.0, 20.0, 0.0, in_ms=0.85)
    assert pt.worth_timing(net, [lm, cm]) == set()
    # a layer whose own time was not measured is never kept, nor is its partner through it
    net, lm, cm = _bounds(math.nan, 0.0, 1.0, 0.5, 0.5)
    assert pt.worth_timing(net, [lm, cm]) == set()


def test_worth_timing_never_leaves_out_a_layer_the_decisions_would_move():
    """Random lower bounds on the INT8 test network (two pairs share the pooling layer) and
    measured values at or above them: every layer ``decide`` or ``decide_pairs`` moves on the
    measured values is among those ``worth_timing`` keeps from the bounds."""
    e, prec = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    alts = pt.alternatives(e.network, prec, config(rt.Builder(), rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    seen = []
    orig = pt.worth_timing
    e.backend = FakeBackend({(n, p): 1.0 for n in alts for p in (prec[n], alts[n])})
    try:
        pt.worth_timing = lambda net, bounds, margin=pt.MARGIN: seen.extend(bounds) or set()
        pt.measure(e, {"x": (2, 3, 8, 8)}, alts, xp=np, timer=lambda fn, reps: 0.0, memory=(1e9, 0))
    finally:
        pt.worth_timing = orig
    assert len(seen) == 4 and sum(len(b.in_edges) + len(b.out_edges) for b in seen) >= 5
    rng = np.random.default_rng(3)
    kept_some = left_some = 0
    for _ in range(400):
        bounds, true = [], []
        for s in seen:
            cur = float(rng.uniform(0.5, 2.0))
            b = pt.Move(s.layer, s.current, s.alternative, cur, float(rng.uniform(0, 1.5)),
                        in_edges={k: float(rng.uniform(0, 0.6)) for k in s.in_edges},
                        out_edges={k: float(rng.uniform(0, 0.6)) for k in s.out_edges})
            b.boundary_ms = sum(b.in_edges.values()) + sum(b.out_edges.values())
            t = pt.Move(s.layer, s.current, s.alternative, cur, b.alternative_ms * float(rng.uniform(1, 1.5)),
                        in_edges={k: v * float(rng.uniform(1, 1.5)) for k, v in b.in_edges.items()},
                        out_edges={k: v * float(rng.uniform(1, 1.5)) for k, v in b.out_edges.items()})
            t.boundary_ms = sum(t.in_edges.values()) + sum(t.out_edges.values())
            bounds.append(b)
            true.append(t)
        kept = pt.worth_timing(e.network, bounds)
        moved = set(pt.decide(true)) | set(pt.decide_pairs(e.network, true))
        assert moved <= kept
        kept_some += bool(kept)
        left_some += len(kept) < len(bounds)
    assert kept_some > 50 and left_some > 50          # both outcomes were exercised


@pytest.mark.parametrize("pool_ms, conv_timed", [(1e3, True), (1e-9, False)])
def test_measure_times_a_layer_that_only_a_pair_could_move(pool_ms, conv_timed):
    """The second conv is faster than its own FP16 floor plus its edges' casts: alone it
    cannot move. With the pooling before it slow enough, the two together could (the cast
    between them goes away), so both are timed; with the pooling fast too, neither is."""
    e, prec = built((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    alts = pt.alternatives(e.network, prec, config(rt.Builder(), rt.BuilderFlag.INT8, rt.BuilderFlag.FP16))
    conv2 = by_type(e, rt.LayerType.CONVOLUTION)[1]
    pool = by_type(e, rt.LayerType.POOLING)[0]
    ms = {}
    for name in alts:
        ms[(name, prec[name])], ms[(name, alts[name])] = 1e-9, 1e-9     # the rest: ruled out
    ms[(conv2.name, DataType.INT8)] = 1e-9
    ms[(pool.name, DataType.INT8)] = pool_ms
    fake = FakeBackend(ms)
    e.backend = fake
    moves = {m.layer: m for m in pt.measure(e, {"x": (2, 3, 8, 8)}, alts, xp=np,
                                           timer=lambda fn, reps: 0.0, memory=(1e9, 100))}
    assert ((conv2.name, DataType.HALF) in fake.fed) == conv_timed
    assert ((pool.name, DataType.HALF) in fake.fed) == conv_timed
    assert (moves[conv2.name].alternative_ms == math.inf) != conv_timed
    if conv_timed:                                    # measured: the pair pays, both move
        moved = pt.decide(list(moves.values())) + pt.decide_pairs(e.network, list(moves.values()))
        assert pool.name in moved


def test_the_plan_records_the_limits_the_floors_used(monkeypatch):
    """``device_limits``: the memory system and the FP16 ceiling, as the plan's
    ``precision_timing_limits`` (an infinite rate, which bounds nothing, recorded as None);
    without a device, None."""
    import types
    from engine.gpu import device
    monkeypatch.setattr(pt, "cupy", lambda: types.SimpleNamespace(cuda=types.SimpleNamespace(
        Device=lambda: types.SimpleNamespace(id=0))))
    monkeypatch.setattr(pt, "memory_system", lambda dev: (3.35e12, 50 * 2**20))
    monkeypatch.setattr(pt, "half_tensor_flops", lambda dev: 1.07e15)
    assert pt.device_limits() == {"dram_bytes_per_s": 3.35e12, "l2_bytes": 50 * 2**20, "half_flops": 1.07e15}
    monkeypatch.setattr(pt, "memory_system", lambda dev: (math.inf, 0))
    assert pt.device_limits()["dram_bytes_per_s"] is None

    def no_device():
        raise RuntimeError("no CUDA device")
    monkeypatch.setattr(pt, "cupy", no_device)
    assert pt.device_limits() is None
    assert device.FALLBACK_CLOCK_KHZ >= 2_500_000                  # past every GPU's boost clock
