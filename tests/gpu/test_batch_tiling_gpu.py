"""Batch tiling on the GPU (settings batch_tiles / batch_tile_layers): an FP16 and an INT8
engine run with the prefix in chunks give the untiled outputs (within the rounding of the
tactics each chunk shape picks), through eager execution and CUDA-graph replay."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from gpu_helpers import fixed_precision_plan, rel_l2, stem_net  # noqa: E402


def _outputs(plan, feeds, tiles, monkeypatch, layers=0):
    import engine as rt
    monkeypatch.setenv("CUPYRT_BATCH_TILES", str(tiles))
    monkeypatch.setenv("CUPYRT_BATCH_TILE_LAYERS", str(layers))
    eng = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    ctx = eng.create_execution_context()
    outs = [ctx.execute(feeds) for _ in range(3)]          # eager, capture, replay
    tiling = ctx._schedule({k: cp.asarray(v) for k, v in feeds.items()})["tiling"]
    return outs, tiling


@pytest.mark.parametrize("flag", ["FP16", "INT8"])
@pytest.mark.parametrize("tiles, layers", [(4, 0), (3, 1)])
def test_tiled_engine_matches_the_untiled_one(monkeypatch, flag, tiles, layers):
    import engine as rt
    net, randn = stem_net(8, 48, 48, tail_k=32)
    data = [randn(8, 3, 48, 48) for _ in range(2)] if flag == "INT8" else None
    plan = fixed_precision_plan(net, getattr(rt.BuilderFlag, flag), data)
    feeds = {"x": randn(8, 3, 48, 48)}
    ref, none = _outputs(plan, feeds, 0, monkeypatch)
    got, tiling = _outputs(plan, feeds, tiles, monkeypatch, layers)
    assert none is None and tiling is not None and sum(tiling[0]) == 8
    for r, g in zip(ref, got):
        for k in r:
            assert np.isfinite(g[k]).all()
            assert rel_l2(g[k], r[k]) < (2e-2 if flag == "INT8" else 2e-3), (k, tiling)
