"""Batch tiling (settings batch_tiles / batch_tile_layers, engine/execution.py): which
leading layers run in batch chunks, and that an engine run that way gives the outputs of
the untiled run (NumPy backend: FP32 to rounding, INT8 codes exactly), with the profiler
and INT8 calibration unaffected."""
import numpy as np
import pytest

import engine as rt
from engine import settings as S
from engine.execution import batch_tiling
from engine.types import LayerType

RNG = np.random.default_rng(11)


def randn(*s):
    return RNG.standard_normal(s).astype(np.float32)


def resnetish(n=7, c=8, hw=12, concat=False):
    """conv+ReLU, max pool, conv + residual add, ReLU, then (not batch-local) a flatten and an
    FC; ``concat``: the second conv's output also feeds a concatenation."""
    net = rt.Network()
    x = net.add_input("x", rt.float32, (n, 3, hw, hw))
    c1 = net.add_convolution_nd(x, c, (3, 3), kernel=randn(c, 3, 3, 3) * 0.3, bias=randn(c))
    c1.padding_nd = (1, 1)
    r1 = net.add_activation(c1.get_output(0), rt.ActivationType.RELU)
    p1 = net.add_pooling_nd(r1.get_output(0), rt.PoolingType.MAX, (2, 2))
    p1.stride_nd = (2, 2)
    c2 = net.add_convolution_nd(p1.get_output(0), c, (3, 3), kernel=randn(c, c, 3, 3) * 0.2, bias=randn(c))
    c2.padding_nd = (1, 1)
    add = net.add_elementwise(c2.get_output(0), p1.get_output(0), rt.ElementWiseOperation.SUM)
    y = net.add_activation(add.get_output(0), rt.ActivationType.RELU).get_output(0)
    if concat:
        y = net.add_concatenation([y, c2.get_output(0)]).get_output(0)
    flat = net.add_shuffle(y)
    flat.reshape_dims = (n, -1)
    fc = net.add_fully_connected(flat.get_output(0), 5, kernel=randn(5, (2 if concat else 1) * c * (hw // 2) ** 2))
    fc.get_output(0).name = "y"
    net.mark_output(fc.get_output(0))
    return net


def _shapes(net, n=7):
    eng = rt.Runtime(backend="numpy").deserialize_cuda_engine(_plan(net))
    return eng, eng.infer_shapes({"x": (n, 3, 12, 12)})


def _plan(net, int8_batches=None):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    cfg.disable_pass("pointwise_fusion")
    if int8_batches is not None:
        cfg.set_flag(rt.BuilderFlag.INT8)
        cfg.int8_calibrator = rt.MinMaxCalibrator(int8_batches)
    return b.build_serialized_network(net, cfg)


def _kinds(eng, steps):
    return [layer.layer_type for layer in eng.network._layers[:steps]]


def test_the_prefix_is_the_leading_batch_local_layers_and_the_boundary_what_follows_reads():
    eng, shapes = _shapes(resnetish())
    sizes, steps, boundary = batch_tiling(eng.network, shapes, 3)
    assert sizes == [3, 2, 2]                                     # 7 images, the first chunks one larger
    kinds = _kinds(eng, steps)
    assert LayerType.SHUFFLE not in kinds and LayerType.FULLY_CONNECTED not in kinds
    assert eng.network._layers[steps].layer_type == LayerType.SHUFFLE
    last = eng.network._layers[steps - 1]
    assert boundary == [id(last.get_output(0))]                   # only the shuffle reads the prefix
    # at most batch_tile_layers
    sizes2, steps2, boundary2 = batch_tiling(eng.network, shapes, 2, max_steps=2)
    assert sizes2 == [4, 3] and steps2 == 2
    assert boundary2 == [id(eng.network._layers[1].get_output(0))]


def test_no_tiling_when_off_too_few_images_or_nothing_batch_local():
    eng, shapes = _shapes(resnetish())
    assert batch_tiling(eng.network, shapes, 0) is None
    assert batch_tiling(eng.network, shapes, 1) is None
    assert batch_tiling(eng.network, shapes, 8) is None           # 7 images
    net = rt.Network()
    x = net.add_input("x", rt.float32, (4, 6))
    fc = net.add_fully_connected(x, 3, kernel=randn(3, 6))
    net.mark_output(fc.get_output(0))
    e2 = rt.Runtime(backend="numpy").deserialize_cuda_engine(_plan(net))
    assert batch_tiling(e2.network, e2.infer_shapes({"x": (4, 6)}), 2) is None


def test_the_prefix_stops_before_a_layer_whose_output_a_concatenation_reads():
    eng, shapes = _shapes(resnetish(concat=True))
    _, steps, _ = batch_tiling(eng.network, shapes, 2)
    readers = {id(t) for layer in eng.network._layers if layer.layer_type == LayerType.CONCATENATION
               for t in layer._inputs}
    assert all(id(t) not in readers for layer in eng.network._layers[:steps] for t in layer._outputs)
    stop = eng.network._layers[steps]                  # batch-local, but a concatenation reads it
    assert stop.layer_type == LayerType.CONVOLUTION
    assert any(id(t) in readers for t in stop._outputs)


def _run(plan, feeds, tiles, monkeypatch, profiler=False, layers=0):
    monkeypatch.setenv("CUPYRT_BATCH_TILES", str(tiles))
    monkeypatch.setenv("CUPYRT_BATCH_TILE_LAYERS", str(layers))
    eng = rt.Runtime(backend="numpy").deserialize_cuda_engine(plan)
    ctx = eng.create_execution_context()                          # reads the settings
    if profiler:
        ctx.profiler = rt.Profiler()
    out = ctx.execute(feeds)
    tiling = ctx._schedule(feeds)["tiling"]
    return out, tiling, ctx, eng


@pytest.mark.parametrize("tiles, layers", [(2, 0), (3, 0), (7, 0), (3, 2)])
def test_a_tiled_fp32_engine_gives_the_untiled_outputs(monkeypatch, tiles, layers):
    plan = _plan(resnetish())
    feeds = {"x": randn(7, 3, 12, 12)}
    ref, none, _, _ = _run(plan, feeds, 0, monkeypatch)
    got, tiling, _, _ = _run(plan, feeds, tiles, monkeypatch, layers=layers)
    assert none is None and tiling is not None and len(tiling[0]) == tiles
    np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-5, atol=1e-5)
    assert np.abs(ref["y"]).max() > 0.1


def test_a_tiled_int8_engine_gives_the_untiled_codes_and_calibration_sees_whole_tensors(monkeypatch):
    data = [randn(7, 3, 12, 12) for _ in range(2)]
    net = resnetish()
    monkeypatch.setenv("CUPYRT_BATCH_TILES", "3")                 # on while calibrating too
    tiled_build = _plan(net, int8_batches=data)
    monkeypatch.delenv("CUPYRT_BATCH_TILES")
    plan = _plan(net, int8_batches=data)
    # the same scales: calibration saw whole tensors
    assert _ranges(tiled_build) == _ranges(plan) and len(_ranges(plan)) > 3
    feeds = {"x": randn(7, 3, 12, 12)}
    ref, _, _, eng = _run(plan, feeds, 0, monkeypatch)
    got, tiling, _, _ = _run(plan, feeds, 3, monkeypatch)
    assert tiling is not None
    assert "INT8" in set(eng.meta["precisions"].values())
    np.testing.assert_array_equal(got["y"], ref["y"])


def _ranges(plan):
    eng = rt.Runtime(backend="numpy").deserialize_cuda_engine(plan)
    return {t.name: t.dynamic_range for layer in eng.network._layers for t in layer._outputs if t.dynamic_range}


def test_the_profiler_reports_every_layer_once_per_call_with_tiling(monkeypatch):
    plan = _plan(resnetish())
    feeds = {"x": randn(7, 3, 12, 12)}
    _, tiling, ctx, eng = _run(plan, feeds, 3, monkeypatch, profiler=True)
    assert set(ctx.profiler.times) == {info.name for info in eng.layers}
    assert all(ms >= 0 for ms in ctx.profiler.times.values())


def test_settings_read_and_checked(monkeypatch):
    monkeypatch.setenv("CUPYRT_BATCH_TILES", "4")
    assert S.reload().batch_tiles == 4
    monkeypatch.setenv("CUPYRT_BATCH_TILES", "four")
    with pytest.raises(Exception, match="BATCH_TILES"):
        S.reload()
    monkeypatch.delenv("CUPYRT_BATCH_TILES")
    assert S.reload().batch_tiles == 0 and S.settings().batch_tile_layers == 0


def test_the_gpu_join_keeps_nhwc_storage_nhwc():
    """CupyBackend.join_batch (NumPy standing in for CuPy): chunks that are NCHW views of
    NHWC storage join as NHWC storage (the next layer reads it without a reformat); plain
    chunks join as they are."""
    import types
    from engine.backends.cupy_backend import CupyBackend
    backend = CupyBackend.__new__(CupyBackend)
    backend.cp = types.SimpleNamespace(concatenate=np.concatenate)
    nhwc = randn(5, 4, 3, 6)
    views = [nhwc.transpose(0, 3, 1, 2)[a:b] for a, b in ((0, 2), (2, 5))]
    joined = backend.join_batch(views)
    np.testing.assert_array_equal(joined, nhwc.transpose(0, 3, 1, 2))
    assert joined.transpose(0, 2, 3, 1).flags.c_contiguous and not joined.flags.c_contiguous
    plain = randn(5, 6, 4, 3)
    joined = backend.join_batch([plain[:1], plain[1:]])
    np.testing.assert_array_equal(joined, plain)
    assert joined.flags.c_contiguous
