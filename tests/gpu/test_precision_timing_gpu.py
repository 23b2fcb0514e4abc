"""Precision by timing on the device: the builder measures, records its moves in
the plan, rebuilds with them, and the engine still computes the network."""
import os
import sys

import numpy as np
import pytest

import engine as rt
from engine import precision_timing as pt
from engine.testing import rel_l2
from engine.types import DataType

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from test_precision_timing import network  # noqa: E402

cp = pytest.importorskip("cupy")
X = np.random.default_rng(3).uniform(-3, 3, (2, 3, 8, 8)).astype(np.float32)


def build(flags, backend="cupy", by_timing=True, calib=None):
    b = rt.Builder()
    net = network(b)
    cfg = b.create_builder_config()
    cfg.backend = backend
    cfg.precision_by_timing = by_timing
    for f in flags:
        cfg.set_flag(f)
    plan = b.build_serialized_network(net, cfg)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(plan)


def run(e):
    return e.create_execution_context().execute({"x": X})


REF = None


def reference():
    global REF
    if REF is None:
        REF = next(iter(run(build((), "numpy")).values()))
    return REF


@pytest.mark.parametrize("flags", [(rt.BuilderFlag.FP16,),
                                   (rt.BuilderFlag.INT8, rt.BuilderFlag.FP16)])
def test_measured_build_records_its_moves_and_stays_correct(flags):
    e = build(flags)
    moves = e.meta["precision_moves"]
    assert isinstance(moves, list)
    last = {}
    pairs = {m["layer"]: m for m in moves if m.get("pair")}
    for m in moves:                                   # only winners are recorded
        if m.get("pair"):                             # paid only with its partner (decide_pairs)
            partner = pairs[m["pair"]]
            assert m["moved"] and partner["pair"] == m["layer"] and partner["to"] == m["to"]
        else:
            assert m["moved"] and m["alt_ms"] + m["boundary_ms"] < pt.MARGIN * m["ms"]
        last[m["layer"]] = m["to"]                    # a layer may move twice: INT8, HALF, FLOAT
    for name, to in last.items():
        assert e.meta["precisions"][name] == to
    tol = 0.05 if rt.BuilderFlag.INT8 in flags else 1e-2
    err = rel_l2(next(iter(run(e).values())), reference())
    assert err < tol, (err, e.meta["kernels"], moves)
    # the floors' limits, read from this device: an FP16 ceiling between an A100's dense peak
    # and three times an H100's (session 17's first H100 build applied none)
    limits = e.meta["precision_timing_limits"]
    assert limits["dram_bytes_per_s"] > 1e12 and limits["l2_bytes"] > 2**20
    assert 3e14 < limits["half_flops"] < 3.3e15, limits


@pytest.mark.parametrize("flags, moved_to", [((rt.BuilderFlag.FP16,), "FLOAT"),
                                             ((rt.BuilderFlag.INT8, rt.BuilderFlag.FP16), "HALF")])
def test_forced_moves_rebuild_the_engine_with_the_new_precisions(monkeypatch, flags, moved_to):
    def move_all(moves, margin=pt.MARGIN):
        for m in moves:
            m.moved = np.isfinite(m.alternative_ms)
        return [m.layer for m in moves if m.moved]
    monkeypatch.setattr(pt, "decide", move_all)
    e = build(flags)
    last = {m["layer"]: m["to"] for m in e.meta["precision_moves"]}
    moved = set(last)
    assert moved
    assert {m["to"] for m in e.meta["precision_moves"]} >= {moved_to}
    for name, to in last.items():                      # INT8 -> HALF, then HALF -> FLOAT
        assert e._precision[name] == DataType[to]
    kernels = e.meta["kernels"]
    for name in moved:                                 # the rebuilt engine chose tactics for them
        assert name in kernels
    # the plan carries the moved precisions: a reloaded engine agrees and computes
    err = rel_l2(next(iter(run(e).values())), reference())
    assert err < (0.05 if moved_to == "HALF" else 1e-2), (err, kernels, e.meta["precision_moves"])
    if moved_to == "FLOAT":                            # everything timed moved to FP32
        assert all(e._precision[layer.name] == DataType.FLOAT for layer in e.network._layers
                   if layer.layer_type in (rt.LayerType.CONVOLUTION, rt.LayerType.FULLY_CONNECTED))


def test_disabled_option_keeps_the_flag_precisions():
    e = build((rt.BuilderFlag.FP16,), by_timing=False)
    assert "precision_moves" not in e.meta
    assert all(e._precision[layer.name] == DataType.HALF for layer in e.network._layers
               if layer.layer_type == rt.LayerType.CONVOLUTION)
