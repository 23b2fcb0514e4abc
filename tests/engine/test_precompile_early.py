"""The INT8 build's compile before calibration (engine/builder.py
``precompile_before_calibration``, engine/gpu/precompile.py ``start_early`` and
``finish_early``), without a GPU: the tiles are listed with the precisions calibration is
expected to leave and are exactly those listed after it; the network's ranges come back
as they were; a rebuild, one tile, the switch off or unknown shapes start nothing; the
builder joins the compile before timing and counts it in the plan."""
import os
import sys
import tempfile
import types

import numpy as np
import pytest

import engine as rt
from engine import builder as B
from engine import kernel_table
from engine.gpu import precompile
from engine.passes import optimize
from engine.plan import ArrayTable, decode_network, encode_network
from engine.quantization import prepare as prepare_int8
from engine.types import LayerType
from kernels.gpu.family import KernelFamily
sys.path.insert(0, os.path.dirname(__file__))
from test_precompile_network_cpu import conv_network, no_wgmma  # noqa: E402,F401
from test_tactic_faults import Injected, conv_net, fake_gpu  # noqa: E402,F401

SHAPE = {"x": (2, 16, 8, 8)}


def int8_work(user_range=False):
    """(optimised copy of an INT8 + FP16 conv network, config, precisions) as the builder has
    them before calibration; a calibrator over random batches; ``user_range``: one tensor's
    range set by the user beforehand."""
    b, net = conv_network(c_in=16, one_by_one=True, fc=True)
    if user_range:
        net.get_input(0).set_dynamic_range(-3.0, 3.0)
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    cfg.set_flag(rt.BuilderFlag.FP16)
    cfg.set_flag(rt.BuilderFlag.INT8)
    data = np.random.default_rng(3)
    cfg.int8_calibrator = rt.EntropyCalibrator2(
        [data.standard_normal((2, 16, 8, 8)).astype(np.float32) for _ in range(2)],
        cache_file=os.path.join(tempfile.mkdtemp(), "calibration"))
    net._ensure_inferred()
    arrays = ArrayTable()
    work = decode_network(encode_network(net, arrays), ArrayTable(arrays.getbytes()))
    B._unique_layer_names(work)
    optimize(work, cfg.disabled_passes)
    return work, cfg, B.assign_precisions(work, cfg)


@pytest.fixture
def no_device_backend(monkeypatch):
    """select_backend("cupy") needs a device: a stand-in whose timing cache knows nothing."""
    monkeypatch.setattr(B, "select_backend", lambda name, meta: types.SimpleNamespace(cached_tactics=None))


def test_the_tiles_listed_before_calibration_are_those_listed_after(no_wgmma, no_device_backend, monkeypatch):
    work, cfg, precisions = int8_work(user_range=True)
    ranges = [t.dynamic_range for t in B.all_tensors(work)]
    assert sum(r is not None for r in ranges) == 1                        # the user's alone
    got = []
    started = types.SimpleNamespace(pool=None)
    monkeypatch.setattr(precompile, "start_early", lambda network, meta, shapes, cached=None: got.append(
        (meta, precompile.network_items(network, meta, shapes))) or started)
    assert B.precompile_before_calibration(work, cfg, precisions) is started
    assert [t.dynamic_range for t in B.all_tensors(work)] == ranges        # put back as they were
    assert all(p.name != "INT8" for p in precisions.values())             # the builder's own: untouched
    meta8 = prepare_int8(work, cfg, precisions)
    meta = {"precisions": {n: p.name for n, p in precisions.items()}, "flags": sorted(f.name for f in cfg._flags),
            **meta8}
    guess_meta, guess_items = got[0]
    assert guess_meta["precisions"] == meta["precisions"] and guess_meta["int8_layers"] == meta["int8_layers"]
    assert guess_items == precompile.network_items(work, meta, SHAPE) and guess_items
    assert any(f == "conv_int8" for f, _, _ in guess_items)


def test_a_cold_build_queues_the_cudnn_int8_plans_before_calibration_too(no_wgmma, no_device_backend, monkeypatch):
    """With tiles compiling (a cold build), the cuDNN INT8 graphs' plans are queued too, from
    the network with its stand-in ranges (the INT8 layers calibration will leave); not with
    the cuDNN INT8 tactic off, without the frontend, or when nothing compiles (a rebuild)."""
    from engine.gpu import cudnn_int8_tactics, cudnn_tactics
    queued = []

    def prefetch(layer, batch, options=None, device_id=None, fp16=True):
        queued.append((layer.name, batch, fp16, sorted(cudnn_int8_tactics.expected_int8_layers(layer._network))))
        return 4
    monkeypatch.setattr(cudnn_int8_tactics, "prefetch_int8_network", prefetch)
    monkeypatch.setattr(cudnn_tactics.cudnn_graphs, "available", lambda: True)
    cold = types.SimpleNamespace(pool="compiling")
    monkeypatch.setattr(precompile, "start_early", lambda *a, **k: cold)
    work, cfg, precisions = int8_work()
    assert B.precompile_before_calibration(work, cfg, precisions) is cold
    convs = [la.name for la in work._layers if la.layer_type == LayerType.CONVOLUTION]
    assert len(queued) == 1 and queued[0][:3] == (convs[0], 2, True)
    assert set(convs) <= set(queued[0][3])                      # the INT8 layers as calibration will leave them
    assert cudnn_int8_tactics.expected_int8_layers(work) == set() # and the ranges put back after
    for env in ("CUPYRT_CUDNN_INT8", "CUPYRT_CUDNN"):
        monkeypatch.setenv(env, "0")
        B.precompile_before_calibration(work, cfg, precisions)
        monkeypatch.delenv(env)
    monkeypatch.setattr(cudnn_tactics.cudnn_graphs, "available", lambda: False)
    B.precompile_before_calibration(work, cfg, precisions)
    monkeypatch.setattr(cudnn_tactics.cudnn_graphs, "available", lambda: True)
    monkeypatch.setattr(precompile, "start_early", lambda *a, **k: types.SimpleNamespace(pool=None))
    B.precompile_before_calibration(work, cfg, precisions)     # a rebuild: nothing compiles, nothing queued
    assert len(queued) == 1


def test_nothing_starts_with_the_switch_off_without_shapes_or_when_listing_fails(no_wgmma, no_device_backend,
                                                                                 monkeypatch, caplog):
    started = []
    monkeypatch.setattr(precompile, "start_early", lambda *a, **k: started.append(a))
    work, cfg, precisions = int8_work()
    monkeypatch.setenv("CUPYRT_PRECOMPILE_DURING_CALIBRATION", "0")
    assert B.precompile_before_calibration(work, cfg, precisions) is None
    monkeypatch.delenv("CUPYRT_PRECOMPILE_DURING_CALIBRATION")
    monkeypatch.setattr(B, "build_shapes", lambda network, config: None)   # dynamic, no profile
    assert B.precompile_before_calibration(work, cfg, precisions) is None
    assert started == []
    monkeypatch.undo()
    monkeypatch.setattr(B, "select_backend", lambda name, meta: (_ for _ in ()).throw(RuntimeError("no device")))
    ranges = [t.dynamic_range for t in B.all_tensors(work)]
    with caplog.at_level("INFO", logger="engine.builder"):
        assert B.precompile_before_calibration(work, cfg, precisions) is None
    assert "skipped (RuntimeError: no device)" in caplog.text
    assert [t.dynamic_range for t in B.all_tensors(work)] == ranges


class _Tile:
    def __init__(self, name):
        self.name = name


@pytest.fixture
def fake_family(monkeypatch):
    fam = KernelFamily("fake.cu", compile=lambda tiles: None, tiles=(_Tile("a"), _Tile("b")))
    monkeypatch.setitem(precompile._BY_NAME, "fake", fam)
    monkeypatch.setattr(precompile, "_compiled", set())
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "3")
    return fam


def test_start_early_compiles_in_the_background_and_finish_early_joins_the_report(fake_family, monkeypatch):
    pools = []

    class Pool:
        def __init__(self, items, workers, nice=0):
            pools.append((items, workers, nice))
            self.timed = {f"{i[0]} {i[1]}": 1.5 for i in items}

        def wait(self):
            return 0.75
    monkeypatch.setattr(precompile, "_Pool", Pool)
    two = [["fake", "a", {}], ["fake", "b", {}]]
    monkeypatch.setattr(precompile, "network_items", lambda *a, **k: two)
    early = precompile.start_early(None, {}, SHAPE)
    assert pools == [(two, 3, 0)]                                  # the build's own: not niced
    assert {precompile._item_key(i) for i in two} <= precompile._compiled   # precompile_for skips them
    precompile.last_report.clear()
    precompile.last_report.update(items={"conv_x t": 2.0}, compiled=1)
    monkeypatch.setattr(precompile, "_listed_keys", {precompile._item_key(two[0]), ("other", "x", "{}")})
    assert precompile.finish_early(early) == 0.75 and precompile.finish_early(early) == 0.0   # joined once
    assert precompile.last_report["compiled"] == 2         # the listed one it compiled counts, once
    assert precompile.last_report["items"] == {"conv_x t": 2.0, "fake a": 1.5, "fake b": 1.5}
    assert precompile.last_report["early_tiles"] == 2 and precompile.last_report["early_wait_seconds"] == 0.75


def test_start_early_starts_nothing_for_a_rebuild_one_tile_or_a_listing_failure(fake_family, monkeypatch):
    monkeypatch.setattr(precompile, "_Pool", lambda *a, **k: pytest.fail("no pool expected"))

    def cached_listing(*a, answered=None, **k):
        answered.update(selections=2, cached=2)                 # the timing cache answers everything
        return [["fake", "a", {}], ["fake", "b", {}]]
    monkeypatch.setattr(precompile, "network_items", cached_listing)
    assert precompile.finish_early(precompile.start_early(None, {}, SHAPE)) == 0.0
    monkeypatch.setattr(precompile, "network_items", lambda *a, **k: [["fake", "a", {}]])
    assert precompile.start_early(None, {}, SHAPE).pool is None
    assert precompile._compiled == set()                        # the one tile compiles later, as before
    monkeypatch.setattr(precompile, "network_items", lambda *a, **k: (_ for _ in ()).throw(ValueError("x")))
    assert precompile.start_early(None, {}, SHAPE).pool is None
    monkeypatch.setenv("CUPYRT_PRECOMPILE", "0")
    monkeypatch.setattr(precompile, "network_items", lambda *a, **k: pytest.fail("not listed when off"))
    assert precompile.start_early(None, {}, SHAPE).pool is None


def test_the_builder_joins_the_early_compile_before_timing_and_counts_it(fake_gpu, monkeypatch):
    """An INT8 build on the stand-in device: the compile started before calibration is
    joined in the tactic stage (its wait in the precompile seconds) and counted in the plan."""
    order = []

    class Early:
        pool, count = "pool", 3
    monkeypatch.setattr(B, "precompile_before_calibration", lambda work, config, precisions: (
        order.append(("early", config.get_flag(rt.BuilderFlag.INT8))), Early())[1])
    monkeypatch.setattr(precompile, "precompile_for", lambda *a, **k: (order.append("precompile_for"), 0.5)[1])

    def finish(early):
        assert isinstance(early, Early)
        order.append("finish_early")
        precompile.last_report.update(early_tiles=3, early_wait_seconds=0.25)
        return 0.25
    monkeypatch.setattr(precompile, "finish_early", finish)
    monkeypatch.setattr(B, "refine_precisions", lambda network, meta, config, engine, feeds, compile_round: (
        engine, {}))
    for layer_type in list(kernel_table.TACTICS):
        monkeypatch.setitem(kernel_table.TACTICS, layer_type, [])
    monkeypatch.setitem(kernel_table.TACTICS, LayerType.CONVOLUTION, [Injected("inject.plain", 0.3)])
    b, net = conv_net()
    for t in [net.get_input(0)] + [net.get_layer(i).get_output(0) for i in range(net.num_layers)]:
        t.set_dynamic_range(-4.0, 4.0)
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    cfg.set_flag(rt.BuilderFlag.INT8)
    meta = rt.Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(net, cfg)).meta
    assert order == [("early", True), "precompile_for", "finish_early"]
    assert meta["precompile_seconds"] == 0.75
    assert meta["precompile_tiles"]["early_tiles"] == 3 and meta["precompile_tiles"]["early_wait_seconds"] == 0.25
