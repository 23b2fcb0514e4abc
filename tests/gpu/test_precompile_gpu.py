"""The builder's precompile list on the device: every tile tactic the build timed was
compiled by precompile_for (up front) or start_for (the background FP32 alternatives),
and the build's metadata counts them."""
import os
import sys

import pytest

import engine as rt
from engine import kernel_table
from engine.gpu import precompile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from test_precompile_network_cpu import conv_network  # noqa: E402

pytest.importorskip("cupy")


@pytest.mark.parametrize("flags", [(rt.BuilderFlag.FP16,), (rt.BuilderFlag.INT8, rt.BuilderFlag.FP16)])
def test_every_tile_the_build_timed_was_precompiled(monkeypatch, tmp_path, flags):
    # a timing cache of its own: the process's in-memory one would answer the INT8 build's FP16
    # alternatives from the FP16 case (listing only the cached choice, while the build's
    # tactic_ms reports every cached timing)
    monkeypatch.setenv("CUPYRT_TIMING_CACHE", str(tmp_path / "timing.cache"))
    listed = []
    real_compile, real_pool = precompile._compile, precompile._Pool

    def compile_(items, workers):
        listed.extend(items)
        return real_compile(items, workers)

    def pool(items, workers, nice=0):
        listed.extend(items)
        return real_pool(items, workers, nice=nice)
    monkeypatch.setenv("CUPYRT_PRECOMPILE", "1")    # device.sh runs the GPU tests with it off
    monkeypatch.setattr(precompile, "_compiled", set())
    monkeypatch.setattr(precompile, "_compile", compile_)
    monkeypatch.setattr(precompile, "_Pool", pool)
    b, net = conv_network(c_in=3, ranges=rt.BuilderFlag.INT8 in flags)
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    for f in flags:
        cfg.set_flag(f)
    plan = b.build_serialized_network(net, cfg)
    meta = rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).meta
    tactics = {t.name: t for ts in kernel_table.TACTICS.values() for t in ts}
    index = precompile._tile_index()
    timed = {name for ms in meta["tactic_ms"].values() for name, v in ms.items() if v is not None}
    tiles = {(f.name, tile.name) for f, tile in
             filter(None, (precompile.tactic_tile(tactics[n], index) for n in timed if n in tactics))}
    assert tiles, "the build timed no tile tactic"
    assert tiles <= {(fam, tile) for fam, tile, _ in listed}
    counts = meta["precompile_tiles"]
    assert counts["tiles"] >= counts["compiled"] > 0 and counts["of"] > counts["tiles"]
