"""The tiles_where_specialised switch, without a GPU: at 0 our general FP16 convolution
tiles (``general_tile``: conv.igemm*, conv.wg_*) are no candidates where a kernel that
outran them takes the layer (``outruns_general``: the cuDNN FP16 graphs, judged statically
with no plan queued; our stem kernel), precompile lists none of them there, and the builder
times them after all when none of those kernels runs the layer (every cuDNN plan failed), a
choice the plan and the timing cache then resolve. At 1 they are timed everywhere, as before
session 17; 0 is the default."""
import os
import sys

import numpy as np
import pytest

import engine as rt
from engine.gpu import cudnn_tactics as CT
from engine.gpu import precompile
from engine.gpu import tactics as T
from engine.settings import tactic_key
from engine.types import DataType, LayerType
from kernels.gpu import conv_igemm, conv_int8_smallc, conv_stem, conv_wgmma
from kernels.gpu import cudnn_graphs as G
sys.path.insert(0, os.path.dirname(__file__))
from test_precompile_network_cpu import built, conv_network, listed, names, sm90a  # noqa: E402,F401
from test_tactic_faults import Injected, build, conv_name, fake_gpu, reference  # noqa: E402,F401

SHAPE16 = {"x": (2, 16, 8, 8)}


@pytest.fixture
def cudnn_here(monkeypatch):
    """A frontend that loads, and plan queueing that must not happen (a static judgement)."""
    monkeypatch.setattr(G, "available", lambda: True)

    def no_queue(*a, **k):
        raise AssertionError("takes_statically queued plans")
    monkeypatch.setattr(CT, "queue_network_once", no_queue)
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "0")


def conv(c_in=16, k=16, groups=1, act=rt.ActivationType.RELU):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, c_in, 8, 8))
    w = np.random.default_rng(1).standard_normal((k, c_in // groups, 3, 3)).astype(np.float32)
    layer = net.add_convolution_nd(x, k, (3, 3), kernel=w, padding_nd=(1, 1))
    layer.num_groups = groups
    layer.post_activation = act
    net.mark_output(layer.get_output(0))
    return layer


def yielding(tactics):
    return {t.name for t in tactics if getattr(t, "general_tile", False)}


NOT_CUDNN = lambda t: t.name != CT.ConvCudnn.name      # noqa: E731  (its supports queues plans)


def test_takes_statically_follows_precision_shape_switch_and_frontend(cudnn_here, monkeypatch):
    half = DataType.HALF
    assert CT.takes_statically(conv(), [(2, 16, 8, 8)], half)
    assert not CT.takes_statically(conv(), [(2, 16, 8, 8)], DataType.FLOAT)
    assert not CT.takes_statically(conv(), [(2, 16, 8, 8)], DataType.INT8)
    assert not CT.takes_statically(conv(c_in=3), [(2, 3, 8, 8)], half)           # an RGB stem is ours
    assert not CT.takes_statically(conv(groups=2), [(2, 16, 8, 8)], half)
    assert not CT.takes_statically(conv(act=rt.ActivationType.SELU), [(2, 16, 8, 8)], half)
    assert not CT.takes_statically(conv(), [None], half)
    fc = rt.Network()
    x = fc.add_input("x", rt.float32, (2, 16))
    dense = fc.add_fully_connected(x, 8, np.ones((8, 16), np.float32), np.zeros(8, np.float32))
    assert dense.layer_type == LayerType.FULLY_CONNECTED
    assert not CT.takes_statically(dense, [(2, 16)], half)                     # convolutions only
    monkeypatch.setenv("CUPYRT_CUDNN", "0")
    assert not CT.takes_statically(conv(), [(2, 16, 8, 8)], half)
    monkeypatch.delenv("CUPYRT_CUDNN")
    monkeypatch.setattr(G, "available", lambda: False)                        # no usable frontend
    assert not CT.takes_statically(conv(), [(2, 16, 8, 8)], half)


def test_what_the_general_tiles_yield_to(cudnn_here, monkeypatch):
    half = DataType.HALF
    assert T.outruns_general(conv(), [(2, 16, 8, 8)], ["float16"], half) == [CT.ConvCudnn.name]
    stem = T.outruns_general(conv(c_in=3), [(2, 3, 8, 8)], ["float32"], half)
    assert stem and all(n.startswith("conv.stem_") for n in stem)             # both flavours of each tile
    assert len(stem) == 2 * len(conv_stem.STEM_TILES)
    assert T.outruns_general(conv(c_in=3, k=12), [(2, 3, 8, 8)], ["float32"], half) == []   # K % 8: no stem
    assert T.outruns_general(conv(), [(2, 16, 8, 8)], ["float32"], DataType.FLOAT) == []
    assert T.outruns_general(conv(), [None], ["float16"], half) == []
    monkeypatch.setenv("CUPYRT_STEM_KERNEL", "0")                              # the stem kernel off
    assert T.outruns_general(conv(c_in=3), [(2, 3, 8, 8)], ["float32"], half) == []


def test_the_general_tiles_are_held_back_where_cudnn_takes_the_layer(sm90a, cudnn_here, monkeypatch):
    layer, shapes, dtypes = conv(), [(2, 16, 8, 8)], ["float16"]
    assert T.held_back(layer, shapes, dtypes, DataType.HALF)                # the default (0): held back
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "1")
    monkeypatch.setenv("CUPYRT_MMA_SYNC_WHERE_WGMMA", "1")
    every = T.supported(layer, shapes, dtypes, DataType.HALF, where=NOT_CUDNN)
    general = yielding(every)
    # the mma.sync tiles, split-K and the FP16 wgmma tiles; not the depthwise or cuBLAS ones
    assert {"conv." + n for n in names(conv_igemm.IGEMM_TACTICS, conv_igemm.SPLITK_TACTICS,
                                       conv_wgmma.TACTICS)} <= general
    assert {t.name for t in every} - general                                  # others exist
    assert T.held_back(layer, shapes, dtypes, DataType.HALF) == []          # at 1: none held
    assert tactic_key() == {"CUPYRT_TILES_WHERE_SPECIALISED": True, "CUPYRT_MMA_SYNC_WHERE_WGMMA": True}
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "0")
    kept = T.supported(layer, shapes, dtypes, DataType.HALF, where=NOT_CUDNN)
    assert not yielding(kept)
    assert {t.name for t in kept} == {t.name for t in every} - general      # the rest stays as it was
    held = T.held_back(layer, shapes, dtypes, DataType.HALF)
    assert {t.name for t in held} == general
    assert tactic_key() == {"CUPYRT_MMA_SYNC_WHERE_WGMMA": True}             # another candidate set
    # with mma_sync_where_wgmma off too, the held-back list drops the plain tiles wgmma dominates
    monkeypatch.setenv("CUPYRT_MMA_SYNC_WHERE_WGMMA", "0")
    held2 = {t.name for t in T.held_back(layer, shapes, dtypes, DataType.HALF)}
    assert held2 == general - {t.name for t in held if type(t) in T.DOMINATED}
    assert held2 and held2 < general


def test_the_general_tiles_yield_to_the_stem_kernel_and_stay_where_nothing_outruns_them(
        sm90a, cudnn_here, monkeypatch):
    stem, shapes = conv(c_in=3), [(2, 3, 8, 8)]
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "1")
    monkeypatch.setenv("CUPYRT_MMA_SYNC_WHERE_WGMMA", "1")
    before = T.supported(stem, shapes, ["float32"], DataType.HALF)
    smallc = {"conv." + t.name for t in conv_igemm.SMALLC_TACTICS}
    assert smallc <= yielding(before)                                         # small-C tiles are general
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "0")
    after = T.supported(stem, shapes, ["float32"], DataType.HALF)
    assert not yielding(after) and {t.name for t in after} == {t.name for t in before} - yielding(before)
    assert {t.name for t in T.held_back(stem, shapes, ["float32"], DataType.HALF)} == yielding(before)
    # INT8: the INT8 stem kernel outruns the INT8 tiles on the stem (cuDNN's INT8 graphs outrun nothing)
    int8_before = T.supported(stem, shapes, ["float32"], DataType.INT8)
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "1")
    int8_all = T.supported(stem, shapes, ["float32"], DataType.INT8)
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "0")
    assert [n for n in T.outruns_general(stem, shapes, ["float32"], DataType.INT8)] and \
        all(n.endswith("_i8") for n in T.outruns_general(stem, shapes, ["float32"], DataType.INT8))
    assert {"conv." + t.name for t in conv_int8_smallc.SMALLC_TACTICS} <= yielding(int8_all)
    assert not yielding(int8_before) and {t.name for t in int8_before} == {t.name for t in int8_all} - yielding(int8_all)
    assert T.outruns_general(conv(), [(2, 16, 8, 8)], ["int8"], DataType.INT8) == []
    monkeypatch.setenv("CUPYRT_STEM_INT8", "0")                               # bit-exact INT8: tiles stay
    assert yielding(T.supported(stem, shapes, ["float32"], DataType.INT8))
    monkeypatch.delenv("CUPYRT_STEM_INT8")
    odd = conv(c_in=3, k=12)                                                  # neither stem nor cuDNN
    assert yielding(T.supported(odd, shapes, ["float32"], DataType.HALF))
    assert T.held_back(odd, shapes, ["float32"], DataType.HALF) == []
    layer = conv()
    for p in (DataType.FLOAT, DataType.INT8):                # other precisions, layers: as before
        with_switch = {t.name for t in T.supported(layer, [(2, 16, 8, 8)], ["float32"], p)}
        monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "1")
        assert with_switch == {t.name for t in T.supported(layer, [(2, 16, 8, 8)], ["float32"], p)}
        monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "0")
    monkeypatch.setattr(G, "available", lambda: False)                      # cuDNN not installed
    assert yielding(T.supported(layer, [(2, 16, 8, 8)], ["float16"], DataType.HALF))


def test_precompile_lists_no_general_fp16_tile_where_a_faster_kernel_takes_the_layer(sm90a, cudnn_here, monkeypatch):
    """An FP16 build lists only the stem kernel's tiles (cuDNN takes the rest); an INT8
    build's FP16 alternatives likewise; its own INT8 list loses the stem's small-C tiles."""
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "1")
    monkeypatch.setenv("CUPYRT_MMA_SYNC_WHERE_WGMMA", "1")
    fp16 = built(*conv_network(c_in=3, one_by_one=False, fc=False), rt.BuilderFlag.FP16)[0]
    b, net = conv_network(c_in=3, one_by_one=False, fc=False, ranges=True)
    int8 = built(b, net, rt.BuilderFlag.INT8, rt.BuilderFlag.FP16)[0]
    alts = {layer.name: DataType.HALF for layer in int8.network._layers
            if layer.layer_type == LayerType.CONVOLUTION}
    shape = {"x": (2, 3, 8, 8)}
    before16 = precompile.network_items(fp16.network, fp16.meta, shape)
    before8 = precompile.network_items(int8.network, int8.meta, shape, alts, scheduled=False)
    own8 = precompile.network_items(int8.network, int8.meta, shape)
    for items in (before16, before8):
        assert listed(items, conv_igemm.FAMILY) and listed(items, conv_wgmma.FAMILY)
        assert listed(items, conv_stem.FAMILY)
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "0")
    after16 = precompile.network_items(fp16.network, fp16.meta, shape)
    after8 = precompile.network_items(int8.network, int8.meta, shape, alts, scheduled=False)
    for items, before in ((after16, before16), (after8, before8)):
        assert {f for f, _, _ in items} == {"conv_stem"}
        assert [it for it in items if it[0] == "conv_stem"] == [it for it in before if it[0] == "conv_stem"]
    # INT8's own list: the small-C INT8 tiles (the stem's alone) go; the INT8 stem kernel takes it
    pairs = lambda items: {(f, t) for f, t, _ in items}                       # noqa: E731
    after_own8 = precompile.network_items(int8.network, int8.meta, shape)
    assert pairs(own8) - pairs(after_own8) == {("conv_int8_smallc", t.name) for t in conv_int8_smallc.SMALLC_TACTICS}
    assert pairs(after_own8) < pairs(own8) and ("conv_stem", "stem_t8w4") in pairs(after_own8)


class Yielding(Injected):
    """A stand-in general FP16 tile."""
    general_tile = True


class Outruns(Injected):
    """A stand-in for the cuDNN tactic: general tiles yield to it."""
    outruns_general_tiles = True


@pytest.fixture
def cudnn_takes_conv(monkeypatch):
    monkeypatch.setattr(T, "outruns_general", lambda layer, shapes, dtypes, precision:
                        [CT.ConvCudnn.name] if layer.layer_type == LayerType.CONVOLUTION else [])


def test_held_back_tiles_are_not_timed_while_cudnn_runs(fake_gpu, cudnn_takes_conv, monkeypatch):
    cands = [Outruns(CT.ConvCudnn.name, 0.2), Yielding("inject.tile", 0.1), Injected("inject.other", 0.3)]
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "1")
    meta, _ = build(monkeypatch, cands)
    assert meta["kernels"][conv_name(meta)] == "inject.tile"                # at 1: timed, and wins
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "0")
    meta, _ = build(monkeypatch, cands)
    layer = conv_name(meta)
    assert meta["kernels"][layer] == CT.ConvCudnn.name
    assert set(meta["tactic_ms"][layer]) == {CT.ConvCudnn.name, "inject.other"}


@pytest.mark.parametrize("fault", ["compile", "launch"])
def test_held_back_tiles_are_timed_when_cudnn_fails_and_the_plan_runs_their_choice(
        fake_gpu, cudnn_takes_conv, monkeypatch, tmp_path, caplog, fault):
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "0")
    monkeypatch.setenv("CUPYRT_TIMING_CACHE", str(tmp_path / "timing.cache"))
    tile = Yielding("inject.tile", 0.1)
    cands = [Outruns(CT.ConvCudnn.name, 0.05, fault), tile, Injected("inject.other", 0.3)]
    caplog.set_level("INFO", logger="engine.backends.cupy_backend")
    meta, plan = build(monkeypatch, cands)
    layer = conv_name(meta)
    assert meta["kernels"][layer] == "inject.tile"
    assert meta["tactic_ms"][layer][CT.ConvCudnn.name] is None
    assert meta["tactic_ms"][layer]["inject.tile"] == pytest.approx(0.1)
    assert any("held back" in r.getMessage() and layer in r.getMessage() for r in caplog.records)
    # the plan names a tile that is no candidate now: the runtime finds it among the held back
    x = np.random.default_rng(4).standard_normal((2, 3, 9, 9)).astype(np.float32)
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    got = engine.create_execution_context().execute({"x": x})
    assert engine.backend.selected[layer] == "inject.tile"
    ref = reference(plan, x)
    assert all(np.allclose(got[n], ref[n], rtol=1e-6, atol=1e-6) for n in ref)
    # a rebuild from the timing cache resolves the cached choice the same way, timing nothing
    runs, cudnn_runs = tile.prepared, cands[0].prepared
    meta2, _ = build(monkeypatch, cands)
    assert meta2["kernels"][conv_name(meta2)] == "inject.tile"
    assert meta2["timing_cache_hits"] >= 1
    assert cands[0].prepared == cudnn_runs        # the failed cuDNN stand-in is not tried again
    assert tile.prepared == runs + 1              # prepared for the engine, not re-timed


def test_with_every_cudnn_plan_and_held_tile_failing_the_generic_tactic_runs(fake_gpu, cudnn_takes_conv,
                                                                            monkeypatch):
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "0")
    meta, _ = build(monkeypatch, [Outruns(CT.ConvCudnn.name, 0.05, "launch"), Yielding("inject.tile", 0.1, "oom")])
    layer = conv_name(meta)
    assert meta["kernels"][layer] == "cupy.generic"
    assert meta["tactic_ms"][layer]["inject.tile"] is None
