"""The builder's precompile list (engine/gpu/precompile.py ``network_items``, ``precompile_for``,
``start_for``), checked without a GPU: only the tiles a network's build times, read from
the candidates each layer has at the build shapes in its precision (FP16 convolutions:
mma.sync tiles, the small-C stem tiles only for a C <= 4 convolution, no FP32 or matmul
tile; INT8: the INT8 tiles, the FP16 alternatives precision by timing always times, the
FP32 ones in the background; matmul layers: the matmul tiles; wgmma only on sm_90a); each
tile compiled once per process, by one worker, and counted in the build's metadata."""
import os
import sys
import tempfile

import numpy as np
import pytest

import engine as rt
from engine import builder as B
from engine import kernel_table
from engine.backends import cupy_backend
from engine.gpu import precompile
from engine.types import DataType, LayerType
from kernels.gpu import (conv_igemm, conv_int8, conv_int8_smallc, conv_pw, conv_stem, conv_tf32, conv_wgmma,
                         matmul)
from kernels.gpu.family import KernelFamily
sys.path.insert(0, os.path.dirname(__file__))
from test_tactic_faults import Injected, conv_net, fake_gpu  # noqa: E402,F401  (this folder's stand-in GPU)

SHAPE = (2, 3, 8, 8)


@pytest.fixture(autouse=True)
def every_general_tile(monkeypatch):
    """These tests read the lists of our general convolution tiles: both switches that
    leave some out (default 0) are at 1 here; the tests of the switches set them back."""
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "1")
    monkeypatch.setenv("CUPYRT_MMA_SYNC_WHERE_WGMMA", "1")


def names(*tiles):
    return {t.name for group in tiles for t in group}


def listed(items, family=None):
    return {tile for fam, tile, _ in items if family is None or fam == family.name}


def conv_network(c_in=3, one_by_one=True, fc=True, ranges=False, seed=5):
    """conv 3x3 (c_in -> 16, relu) [-> conv 1x1 16 -> 32] -> conv 3x3 -> [FC 10]."""
    rng = np.random.default_rng(seed)

    def randn(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (2, c_in, 8, 8))
    tensors = [x]
    c1 = net.add_convolution_nd(x, 16, (3, 3), randn(16, c_in, 3, 3), randn(16), padding_nd=(1, 1))
    t = net.add_activation(c1.get_output(0), rt.ActivationType.RELU).get_output(0)
    tensors += [c1.get_output(0), t]
    if one_by_one:
        t = net.add_convolution_nd(t, 32, (1, 1), randn(32, 16, 1, 1), randn(32)).get_output(0)
        tensors.append(t)
    c = t.shape[1]
    t = net.add_convolution_nd(t, 16, (3, 3), randn(16, c, 3, 3), randn(16), padding_nd=(1, 1)).get_output(0)
    tensors.append(t)
    if fc:
        t = net.add_fully_connected(t, 10, randn(10, 16 * 8 * 8), randn(10)).get_output(0)
        tensors.append(t)
    net.mark_output(t)
    if ranges:
        for i, tensor in enumerate(tensors):
            tensor.set_dynamic_range(-4.0 * (i + 1), 4.0 * (i + 1))
    return b, net


def built(b, net, *flags):
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    for f in flags:
        cfg.set_flag(f)
    e = b.build_engine(net, cfg)
    return e, cfg


@pytest.fixture
def no_wgmma(monkeypatch):
    monkeypatch.setattr(conv_wgmma, "available", lambda device=None: False)


@pytest.fixture
def sm90a(monkeypatch):
    """A device that runs wgmma: the tactics and the family say so."""
    monkeypatch.setattr(conv_wgmma, "available", lambda device=None: True)
    fam = KernelFamily("conv_wgmma.cu", tiles=conv_wgmma.TACTICS, int8_tiles=conv_wgmma.INT8_TACTICS,
                       compile=conv_wgmma.FAMILY.compile, available=lambda: True)
    monkeypatch.setattr(precompile, "FAMILIES", tuple(
        fam if f is conv_wgmma.FAMILY else f for f in precompile.FAMILIES))
    monkeypatch.setattr(conv_wgmma, "FAMILY", fam)


FP16_CONV = names(conv_igemm.IGEMM_TACTICS, conv_igemm.IGEMM_TACTICS_LARGE, conv_igemm.SPLITK_TACTICS)


def test_fp16_conv_net_lists_mma_tiles_only_and_the_stem_tiles_for_a_small_c_stem(no_wgmma):
    e, _ = built(*conv_network(c_in=3), rt.BuilderFlag.FP16)
    items = precompile.network_items(e.network, e.meta, {"x": SHAPE})
    assert {fam for fam, _, _ in items} == {"conv_igemm", "conv_stem"}    # no tf32, no matmul tile
    assert listed(items, conv_igemm.FAMILY) == FP16_CONV | names(conv_igemm.SMALLC_TACTICS,
                                                                 conv_igemm.IGEMM_TACTICS_NARROW)
    assert not listed(items) & names(conv_igemm.IGEMM_TACTICS_UNTIMED)   # never timed: never built
    igemm = [(f, t) for f, t, _ in items if f == "conv_igemm"]
    assert len(igemm) == len(set(igemm))                                 # each tile once
    # the stem kernel's tiles for this layer: its 3x3/1 geometry, the network input read as it
    # is (NCHW float32, kind 1: the direct flavour) and through the NHWC reformat (kind 0)
    stem = sorted((t, o["in_kinds"][0], tuple(o["geometry"]), tuple(o["out_dtypes"]))
                  for f, t, o in items if f == "conv_stem")
    assert stem == sorted((t.name, k, (3, 3, 1, 1), ("float16",)) for t in conv_stem.STEM_TILES for k in (0, 1))
    e16, _ = built(*conv_network(c_in=16), rt.BuilderFlag.FP16)
    wide = precompile.network_items(e16.network, e16.meta, {"x": (2, 16, 8, 8)})
    assert listed(wide) == FP16_CONV | names(conv_igemm.IGEMM_TACTICS_NARROW)   # no stem tiles


def test_conv_tiles_compile_only_the_output_dtypes_their_layers_store(no_wgmma):
    """FP16 convolutions store half, the network's output conv float32 (as declared):
    a tile both can run compiles both, the stem and narrow tiles only their layer's."""
    e, _ = built(*conv_network(c_in=3, fc=False), rt.BuilderFlag.FP16)
    items = precompile.network_items(e.network, e.meta, {"x": SHAPE})
    outs = {tile: opts["out_dtypes"] for fam, tile, opts in items}
    assert {tuple(v) for v in outs.values()} == {("float16",), ("float16", "float32")}
    assert {t: outs[t] for t in names(conv_igemm.SMALLC_TACTICS, conv_igemm.IGEMM_TACTICS_NARROW)} == \
        {t: ["float16"] for t in names(conv_igemm.SMALLC_TACTICS, conv_igemm.IGEMM_TACTICS_NARROW)}
    assert all(outs[t] == ["float16", "float32"] for t in names(conv_igemm.IGEMM_TACTICS))
    # what the family's compile then builds: one NVRTC run per (tile, output dtype)
    runs = []
    import kernels.gpu.conv_igemm as CI
    orig = CI._kernel
    try:
        CI._kernel = lambda t, out_f32: runs.append((t.name, out_f32))
        CI.compile_all((conv_igemm.IGEMM_TACTICS[0],), out_dtypes=["float16"])
        CI.compile_all((conv_igemm.IGEMM_TACTICS[0],), out_dtypes=["float16", "float32"])
    finally:
        CI._kernel = orig
    name = conv_igemm.IGEMM_TACTICS[0].name
    assert runs == [(name, False), (name, False), (name, True)]


def test_narrow_tiles_only_with_a_narrow_1x1_convolution(no_wgmma):
    e, _ = built(*conv_network(c_in=16, one_by_one=False), rt.BuilderFlag.FP16)
    assert listed(precompile.network_items(e.network, e.meta, {"x": (2, 16, 8, 8)})) == FP16_CONV


def test_wgmma_tiles_listed_only_where_the_device_runs_them(sm90a):
    e, _ = built(*conv_network(c_in=16, one_by_one=False, fc=False), rt.BuilderFlag.FP16)
    items = precompile.network_items(e.network, e.meta, {"x": (2, 16, 8, 8)})
    wg = [item for item in items if item[0] == "conv_wgmma"]
    assert {t for _, t, _ in wg} == names(conv_wgmma.TACTICS)    # FP16 tiles, no INT8 ones
    assert {o["fast_epilogue"] for _, _, o in wg} == {True}      # the setting's default
    assert {tuple(o["out_dtypes"]) for _, _, o in wg} == {("float16", "float32")}  # half, the output float
    assert listed(items, conv_igemm.FAMILY) == FP16_CONV
    b, net = conv_network(c_in=16, one_by_one=False, fc=False, ranges=True)
    e8, _ = built(b, net, rt.BuilderFlag.INT8, rt.BuilderFlag.FP16)
    i8 = {tuple(o["out_dtypes"]) for f, t, o in precompile.network_items(e8.network, e8.meta, {"x": (2, 16, 8, 8)})
          if f == "conv_wgmma" and t in names(conv_wgmma.INT8_TACTICS)}
    assert i8 == {("float32", "int8")}          # int8 codes between the convs, float32 out of the last


def test_without_mma_sync_where_wgmma_the_plain_mma_sync_tiles_go_where_wgmma_runs(sm90a, monkeypatch):
    """mma_sync_where_wgmma=0: a layer wgmma takes lists no plain mma.sync tile (FP16 igemm,
    INT8 conv_int8) but keeps split-K and small-C; a device without wgmma keeps them all; the
    switch joins the timing-cache key (another candidate set)."""
    from engine.gpu import tactics as T
    from engine.settings import tactic_key
    fp16 = built(*conv_network(c_in=16, one_by_one=False, fc=False), rt.BuilderFlag.FP16)[0]
    b, net = conv_network(c_in=16, one_by_one=False, fc=False, ranges=True)
    int8 = built(b, net, rt.BuilderFlag.INT8, rt.BuilderFlag.FP16)[0]
    shape = {"x": (2, 16, 8, 8)}
    before16 = precompile.network_items(fp16.network, fp16.meta, shape)
    before8 = precompile.network_items(int8.network, int8.meta, shape)
    assert listed(before16, conv_igemm.FAMILY) == FP16_CONV
    assert listed(before8, conv_int8.FAMILY) == names(conv_int8.INT8_TACTICS)
    assert tactic_key()["CUPYRT_MMA_SYNC_WHERE_WGMMA"] is True               # 1: away from the default
    monkeypatch.setenv("CUPYRT_MMA_SYNC_WHERE_WGMMA", "0")
    after16 = precompile.network_items(fp16.network, fp16.meta, shape)
    after8 = precompile.network_items(int8.network, int8.meta, shape)
    assert listed(after16, conv_igemm.FAMILY) == names(conv_igemm.SPLITK_TACTICS)
    assert listed(after16, conv_wgmma.FAMILY) == listed(before16, conv_wgmma.FAMILY) == names(conv_wgmma.TACTICS)
    assert not listed(after8, conv_int8.FAMILY)
    assert listed(after8, conv_wgmma.FAMILY) == listed(before8, conv_wgmma.FAMILY)
    assert "CUPYRT_MMA_SYNC_WHERE_WGMMA" not in tactic_key()                 # 0 is the default
    conv = next(la for la in fp16.network._layers if la.layer_type == LayerType.CONVOLUTION)
    cands = T.supported(conv, [(2, 16, 8, 8)], ["float16"], DataType.HALF)
    assert not [t for t in cands if type(t) in T.DOMINATED]
    monkeypatch.setattr(conv_wgmma, "available", lambda device=None: False)      # no wgmma: all stay
    assert listed(precompile.network_items(fp16.network, fp16.meta, shape), conv_igemm.FAMILY) == FP16_CONV


def test_fp32_conv_net_lists_3xtf32_tiles_and_plain_tf32_only_under_the_tf32_flag(no_wgmma):
    b, net = conv_network(c_in=16, one_by_one=False)
    e, _ = built(b, net)
    items = precompile.network_items(e.network, e.meta, {"x": (2, 16, 8, 8)})
    assert listed(items) == names(conv_tf32.tactics_for(True))
    b, net = conv_network(c_in=16, one_by_one=False)
    e, _ = built(b, net, rt.BuilderFlag.TF32)
    items = precompile.network_items(e.network, e.meta, {"x": (2, 16, 8, 8)})
    assert listed(items) == names(conv_tf32.TACTICS)


def test_int8_net_lists_int8_tiles_then_its_fp16_and_fp32_alternatives(no_wgmma):
    b, net = conv_network(c_in=16, one_by_one=False, ranges=True)
    e, cfg = built(b, net, rt.BuilderFlag.INT8, rt.BuilderFlag.FP16)
    precisions = e.meta["precisions"]
    convs = [layer.name for layer in e.network._layers if layer.layer_type == LayerType.CONVOLUTION]
    assert convs and all(precisions[n] == "INT8" for n in convs)
    shapes = {"x": (2, 16, 8, 8)}
    items = precompile.network_items(e.network, e.meta, shapes)
    assert listed(items, conv_int8.FAMILY) == names(conv_int8.INT8_TACTICS)
    assert not listed(items, conv_tf32.FAMILY)
    later = B._refine_alternatives(e.network, e.meta, cfg)
    # the first round's INT8 -> HALF; a second round's FLOAT compiles only if the first moves
    assert set(later) >= set(convs) and all(later[n] == DataType.HALF for n in convs)
    only_later = precompile.network_items(e.network, e.meta, shapes, later, scheduled=False)
    assert listed(only_later, conv_igemm.FAMILY) >= FP16_CONV      # INT8 -> HALF: always timed
    assert not listed(only_later, conv_tf32.FAMILY)
    assert not listed(only_later, conv_int8.FAMILY)                # the build's own: compiled first
    both = precompile.network_items(e.network, e.meta, shapes, {n: [DataType.HALF, DataType.FLOAT] for n in convs},
                                    scheduled=False)
    assert listed(both, conv_tf32.FAMILY) == names(conv_tf32.tactics_for(True))   # a list: each precision
    with_later = precompile.network_items(e.network, e.meta, shapes, later)
    assert listed(with_later, conv_int8.FAMILY) == names(conv_int8.INT8_TACTICS)
    assert listed(with_later, conv_igemm.FAMILY) == listed(only_later, conv_igemm.FAMILY)
    # one precision is still accepted as it was
    one = {n: DataType.HALF for n in convs}
    assert precompile.network_items(e.network, e.meta, shapes, one, scheduled=False) == \
        precompile.network_items(e.network, e.meta, shapes, {n: [DataType.HALF] for n in convs}, scheduled=False)


def test_fp16_build_times_fp32_only_in_the_background():
    b, net = conv_network()
    e, cfg = built(b, net, rt.BuilderFlag.FP16)
    later = B._refine_alternatives(e.network, e.meta, cfg)
    matrix = {layer.name for layer in e.network._layers
              if layer.layer_type in (LayerType.CONVOLUTION, LayerType.FULLY_CONNECTED)}
    assert later == {n: DataType.FLOAT for n in matrix}


def matmul_network(constant_b):
    rng = np.random.default_rng(2)
    b = rt.Builder()
    net = b.create_network()
    a = net.add_input("a", rt.float32, (2, 16, 32))
    if constant_b:
        rhs = net.add_constant((1, 32, 24), rng.standard_normal((1, 32, 24)).astype(np.float32)).get_output(0)
    else:
        rhs = net.add_input("b", rt.float32, (2, 32, 24))
    mm = net.add_matrix_multiply(a, rt.MatrixOperation.NONE, rhs, rt.MatrixOperation.NONE)
    net.mark_output(mm.get_output(0))
    return b, net


def test_matmul_net_lists_the_matmul_tiles_and_the_conv_backed_ones_for_a_constant_weight(no_wgmma):
    e, _ = built(*matmul_network(constant_b=False), rt.BuilderFlag.FP16)
    items = precompile.network_items(e.network, e.meta, {"a": (2, 16, 32), "b": (2, 32, 24)})
    assert listed(items) == names(matmul.TILES)
    e, _ = built(*matmul_network(constant_b=True), rt.BuilderFlag.FP16)
    items = precompile.network_items(e.network, e.meta, {"a": (2, 16, 32)})
    assert listed(items, matmul.FAMILY) == names(matmul.TILES)
    assert listed(items, conv_igemm.FAMILY) == names(conv_igemm.IGEMM_TACTICS_LARGE,
                                                      conv_igemm.SPLITK_TACTICS)


def test_precompile_for_compiles_each_tile_once_per_process_and_reports_counts(no_wgmma, monkeypatch):
    calls = []
    monkeypatch.setattr(precompile, "_compiled", set())
    monkeypatch.setattr(precompile, "_compile", lambda items, workers: (
        calls.append([tuple(i[:2]) for i in items]), ({f"{i[0]} {i[1]}": 1.5 for i in items}, 2.0))[1])
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "4")
    e, _ = built(*conv_network(c_in=16, one_by_one=False), rt.BuilderFlag.FP16)
    assert precompile.precompile_for(e.network, e.meta, {"x": (2, 16, 8, 8)}) == 2.0
    assert {t for _, t in calls[0]} == FP16_CONV
    r = precompile.last_report
    assert (r["tiles"], r["compiled"], r["of"]) == (len(FP16_CONV), len(FP16_CONV),
                                                   len(precompile.work_items(int8=True)))
    assert r["items"] == {f"conv_igemm {t}": 1.5 for t in FP16_CONV}
    e3, _ = built(*conv_network(c_in=3, one_by_one=False), rt.BuilderFlag.FP16)
    precompile.precompile_for(e3.network, e3.meta, {"x": SHAPE})
    assert {t for _, t in calls[1]} == names(conv_igemm.SMALLC_TACTICS, conv_stem.STEM_TILES)   # only the new
    assert (precompile.last_report["tiles"], precompile.last_report["compiled"]) == \
        (len(FP16_CONV) + 3 + 4, 3 + 4)          # + 4: two stem tiles, direct and through the reformat
    monkeypatch.setenv("CUPYRT_PRECOMPILE", "0")
    assert precompile.precompile_for(e3.network, e3.meta, {"x": SHAPE}) == 0.0
    assert len(calls) == 2 and precompile.last_report == {"seconds": 0.0, "items": {}}


def test_background_compile_joins_the_report_when_waited_for(no_wgmma, monkeypatch):
    started = []

    class Pool:
        def __init__(self, items, workers, nice=0):
            started.append((len(items), workers))
            assert nice == precompile.BACKGROUND_NICE > 0     # behind the build's own work
            self.timed = {f"{i[0]} {i[1]}": 0.5 for i in items}

        def wait(self):
            return 0.25
    monkeypatch.setattr(precompile, "_Pool", Pool)
    monkeypatch.setattr(precompile, "_compiled", set())
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "3")
    b, net = conv_network(c_in=16, one_by_one=False)
    e, cfg = built(b, net, rt.BuilderFlag.FP16)
    later = B._refine_alternatives(e.network, e.meta, cfg)
    precompile.last_report.update(items={"conv_igemm x": 1.0}, later_tiles=0, later_seconds=0.0)
    pending = precompile.start_for(e.network, e.meta, {"x": (2, 16, 8, 8)}, later)
    assert started == [(len(conv_tf32.tactics_for(True)), 3)]
    assert pending.wait() == 0.25 and pending.wait() == 0.0       # joined once
    r = precompile.last_report
    assert r["later_tiles"] == 4 and r["items"]["conv_igemm x"] == 1.0
    assert {k for k in r["items"] if k.startswith("conv_tf32")} == \
        {f"conv_tf32 {t}" for t in names(conv_tf32.tactics_for(True))}
    # nothing new, one worker or precompile off: nothing starts
    assert precompile.start_for(e.network, e.meta, {"x": (2, 16, 8, 8)}, later).wait() == 0.0
    monkeypatch.setattr(precompile, "_compiled", set())
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "1")
    assert precompile.start_for(e.network, e.meta, {"x": (2, 16, 8, 8)}, later).wait() == 0.0
    assert len(started) == 1


def test_workers_sharing_a_claims_folder_compile_each_tile_once(monkeypatch, tmp_path, capsys):
    done = []

    class Tile:
        def __init__(self, name):
            self.name = name
    fam = KernelFamily("fake.cu", compile=lambda tiles: done.append(tiles[0].name),
                       tiles=(Tile("a"), Tile("b"), Tile("c")))
    monkeypatch.setitem(precompile._BY_NAME, "fake", fam)
    items = [["fake", "a", {}], ["fake", "b", {}], ["fake", "c", {}]]
    (tmp_path / "1").touch()                 # another worker took "b"
    precompile._worker(items, str(tmp_path))
    precompile._worker(items, str(tmp_path))  # a second worker finds everything claimed
    assert done == ["a", "c"]
    err = capsys.readouterr().err.splitlines()
    assert sorted(ln.split()[3] for ln in err if ln.startswith("compiled-in")) == ["a", "c"]
    assert [ln.split()[0] for ln in err if not ln.startswith("compiled-in")] == ["worker-niceness"] * 2


def test_pool_reports_a_tile_that_fails_in_its_worker(caplog):
    # real worker processes, on any machine: tiles no family has fail in the worker
    # (KernelFamily.tile), which the pool logs and goes on
    items = [["conv_igemm", "nope_a", {}], ["conv_igemm", "nope_b", {}], ["conv_igemm", "nope_c", {}]]
    with caplog.at_level("WARNING", logger="engine.gpu.precompile"):
        pool = precompile._Pool(items, 2)
        assert pool.wait() >= 0.0
    assert pool.timed == {}
    failed = sorted(r.getMessage().split()[2].rstrip(":") for r in caplog.records
                    if "UnsupportedError: conv_igemm has no tile" in r.getMessage())
    assert failed == ["nope_a", "nope_b", "nope_c"]        # each once, by one of the two workers


def test_pool_workers_lower_their_priority_by_the_niceness_asked():
    """Real worker processes (tiles no family has: nothing compiles) report the niceness
    they run at: the builder's own, or that plus what the pool asked (the background)."""
    own = os.nice(0)
    items = [["conv_igemm", "nope_a", {}], ["conv_igemm", "nope_b", {}]]
    for nice, want in ((0, own), (precompile.BACKGROUND_NICE, min(19, own + precompile.BACKGROUND_NICE))):
        pool = precompile._Pool(items, 2, nice=nice)
        pool.wait()
        assert pool.niceness == {want}
    assert own < precompile.BACKGROUND_NICE


def test_a_tile_of_several_output_types_goes_to_the_pool_as_one_item_per_type():
    """Families compiled per output type (one NVRTC run each) are dealt out one run per
    item, so two workers share one tile's runs; other items stay as they are."""
    items = [["conv_pw", "pwi8_64x128_s3", {"out_dtypes": ["float16", "int8"]}],
             ["conv_wgmma", "wgi8_64x64_s4", {"fast_epilogue": True, "out_dtypes": ["int8"]}],
             ["conv_tf32", "t", {"out_dtypes": ["float32", "float16"]}],      # not compiled per type
             ["conv_igemm", "igemm_x", {}]]
    assert precompile._one_run_each(items) == [
        ["conv_pw", "pwi8_64x128_s3", {"out_dtypes": ["float16"]}],
        ["conv_pw", "pwi8_64x128_s3", {"out_dtypes": ["int8"]}],
        items[1], items[2], items[3]]
    assert items[0][2]["out_dtypes"] == ["float16", "int8"]               # the caller's list untouched
    pool = precompile._Pool([["conv_pw", "nope", {"out_dtypes": ["float16", "int8"]}]], 4)
    pool.wait()                                                           # (no such tile: both fail)
    assert len(pool._procs) == 2 and [it[2]["out_dtypes"] for it in pool.items] == [["float16"], ["int8"]]


def test_the_pool_sums_the_seconds_of_a_tiles_runs():
    import types
    pool = object.__new__(precompile._Pool)
    pool.timed, pool.niceness, pool._t0 = {}, set(), 0.0
    pool._claims = tempfile.mkdtemp()
    err = b"worker-niceness 0\ncompiled-in 1.50 conv_pw t\ncompiled-in 2.25 conv_pw t\ncompiled-in 0.5 conv_pw u\n"
    pool._procs = [types.SimpleNamespace(communicate=lambda: (None, err), returncode=0)]
    pool._collect()
    assert pool.timed == {"conv_pw t": 3.75, "conv_pw u": 0.5} and pool.niceness == {0}


class TileTactic(Injected):
    """A stand-in candidate that launches a precompiled tile."""
    tile = conv_igemm.IGEMM_TACTICS[0]


def test_build_meta_counts_the_tiles_precompiled(fake_gpu, monkeypatch):
    compiled = []
    monkeypatch.setattr(precompile, "_compiled", set())
    monkeypatch.setattr(precompile, "_compile",
                        lambda items, workers: (compiled.extend(items), ({}, 0.5))[1])
    for layer_type in list(kernel_table.TACTICS):
        monkeypatch.setitem(kernel_table.TACTICS, layer_type, [])
    monkeypatch.setitem(kernel_table.TACTICS, LayerType.CONVOLUTION,
                        [TileTactic("inject.tile", 0.2), Injected("inject.plain", 0.3)])
    b, net = conv_net()
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    plan = b.build_serialized_network(net, cfg)
    meta = rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).meta
    assert compiled == [["conv_igemm", conv_igemm.IGEMM_TACTICS[0].name, {"out_dtypes": ["float32"]}]]
    assert meta["precompile_seconds"] == 0.5
    every = len(precompile.work_items(int8=True))
    assert meta["precompile_tiles"] == {"tiles": 1, "compiled": 1, "of": every, "later_tiles": 0,
                                        "later_seconds": 0.0}


@pytest.mark.parametrize("fp16", [False, True])
def test_build_meta_times_the_tactic_stage_part_by_part(fake_gpu, monkeypatch, fp16):
    """build_seconds splits "tactics" into the precompile, the selection and, when precision by
    timing runs (FP16 flag), the wait for the background compile and the timing itself."""
    monkeypatch.setattr(precompile, "_compile", lambda items, workers: ({}, 0.0))
    for layer_type in list(kernel_table.TACTICS):
        monkeypatch.setitem(kernel_table.TACTICS, layer_type, [])
    monkeypatch.setitem(kernel_table.TACTICS, LayerType.CONVOLUTION, [Injected("inject.plain", 0.3)])
    b, net = conv_net()
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
        from engine import precision_timing
        monkeypatch.setattr(precision_timing, "memory_system", lambda device=0: (3.0e12, 50e6))
        monkeypatch.setattr(precision_timing, "half_tensor_flops", lambda device=0: None)
    seconds = rt.Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(net, cfg)) \
        .meta["build_seconds"]
    parts = {k: v for k, v in seconds.items() if k.startswith("tactics.")}
    want = {"tactics.precompile", "tactics.selection"}
    if fp16:
        want |= {"tactics.background_wait", "tactics.precision_timing"}
    assert set(parts) == want and all(v >= 0.0 for v in parts.values())
    assert sum(parts.values()) <= seconds["tactics"] + 1e-6


def test_a_listing_failure_falls_back_to_every_tile_and_never_fails_the_build(no_wgmma, monkeypatch, caplog):
    """A bug in listing a network's tiles must not fail its build: the up-front compile
    takes every tile (the INT8 ones for an INT8 build), the background one nothing."""
    calls = []
    monkeypatch.setattr(precompile, "_compiled", set())
    monkeypatch.setattr(precompile, "_compile", lambda items, workers: (
        calls.append({tuple(i[:2]) for i in items}), ({}, 1.0))[1])
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "4")

    def broken(*a, **k):
        raise KeyError("no such layer")
    monkeypatch.setattr(precompile, "network_items", broken)
    e, _ = built(*conv_network(c_in=16, one_by_one=False), rt.BuilderFlag.FP16)
    with caplog.at_level("WARNING"):
        assert precompile.precompile_for(e.network, e.meta, {"x": (2, 16, 8, 8)}) == 1.0
        assert precompile.start_for(e.network, e.meta, {"x": (2, 16, 8, 8)}, {"conv": "FLOAT"}).wait() == 0.0
    assert calls == [{tuple(i[:2]) for i in precompile.work_items(int8=False)}]
    assert "could not be listed (KeyError" in caplog.text and "compiling every tile" in caplog.text
    monkeypatch.setattr(precompile, "_compiled", set())
    precompile.precompile_for(e.network, {"precisions": {"conv": "DataType.INT8"}}, {"x": (2, 16, 8, 8)})
    assert calls[1] == {tuple(i[:2]) for i in precompile.work_items(int8=True)}


def test_a_rebuild_from_the_timing_cache_compiles_only_the_chosen_tiles(fake_gpu, monkeypatch, tmp_path):
    """First build: every candidate's tile is listed and timed. Rebuild in a fresh
    process (the timing cache file only): the layer is answered by the cache, so only the
    chosen tactic's tile is compiled; a non-capturable choice brings the fastest
    capturable one timed beside it (what a CUDA-graph run of the engine launches)."""
    compiled, how = [], []
    monkeypatch.setattr(precompile, "_compiled", set())
    monkeypatch.setattr(precompile, "_compile",
                        lambda items, workers: (compiled.append({i[1] for i in items}), how.append("pool"),
                                                ({}, 0.5))[2])
    monkeypatch.setattr(precompile, "_compile_cached",
                        lambda items, workers: (compiled.append({i[1] for i in items}), how.append("here"),
                                                ({}, 0.01))[2])
    for layer_type in list(kernel_table.TACTICS):
        monkeypatch.setitem(kernel_table.TACTICS, layer_type, [])
    tiles = conv_igemm.IGEMM_TACTICS[:3]
    cands = [TileTactic(f"inject.t{i}", ms) for i, ms in enumerate((0.4, 0.2, 0.3))]
    for t, tile in zip(cands, tiles):
        t.tile = tile
    cands[1].capturable = False              # the fastest cannot be captured: t2 (0.3) can
    monkeypatch.setitem(kernel_table.TACTICS, LayerType.CONVOLUTION, cands)
    cache = str(tmp_path / "timing.cache")

    def build():
        b, net = conv_net()
        cfg = b.create_builder_config()
        cfg.backend = "cupy"
        cfg.timing_cache_path = cache
        plan = b.build_serialized_network(net, cfg)
        return rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).meta
    first = build()
    assert compiled == [{t.name for t in tiles}]
    conv = next(n for n, k in first["kernels"].items() if k.startswith("inject."))
    assert first["kernels"][conv] == "inject.t1"
    monkeypatch.setattr(precompile, "_compiled", set())     # a fresh process
    monkeypatch.setattr(cupy_backend, "_caches", {})
    again = build()
    assert again["kernels"][conv] == "inject.t1" and again["timing_cache_hits"] >= 1
    assert compiled[1] == {tiles[1].name, tiles[2].name}     # chosen + fastest capturable
    assert again["precompile_tiles"]["tiles"] == 2
    assert how == ["pool", "here"]     # the cold build's tiles in workers; the rebuild's loaded here
    cands[1].capturable = True               # a capturable choice: its tile alone
    monkeypatch.setattr(precompile, "_compiled", set())
    monkeypatch.setattr(cupy_backend, "_caches", {})
    build()
    assert compiled[2] == {tiles[1].name}


def test_network_items_counts_the_selections_the_timing_cache_answers(no_wgmma):
    e, _ = built(*conv_network(c_in=16, one_by_one=False), rt.BuilderFlag.FP16)
    convs = {la.name for la in e.network._layers if la.layer_type == LayerType.CONVOLUTION}
    chosen = conv_igemm.IGEMM_TACTICS[0]
    answered = {}
    items = precompile.network_items(e.network, e.meta, {"x": (2, 16, 8, 8)}, answered=answered,
                                     cached=lambda layer, *a: {f"conv.{chosen.name}"} if layer.name in convs
                                     else set())
    assert answered["selections"] == answered["cached"] == len(list(e.schedule())) > len(convs)
    assert [i[1] for i in items] == [chosen.name]          # only the chosen tile, once
    answered = {}
    precompile.network_items(e.network, e.meta, {"x": (2, 16, 8, 8)}, answered=answered,
                             cached=lambda layer, *a: None if layer.name in convs else set())
    assert answered["cached"] == answered["selections"] - len(convs)


def test_a_layer_with_no_tile_to_compile_needs_no_timing_cache_answer(no_wgmma, monkeypatch):
    """A pooling layer, or a concat the engine elides (the cache never records those): nothing
    of theirs is precompiled, so they do not keep a rebuild off its short list."""
    e, _ = built(*conv_network(c_in=16, one_by_one=False), rt.BuilderFlag.FP16)
    convs = {la.name for la in e.network._layers if la.layer_type == LayerType.CONVOLUTION}
    tiles = precompile.layer_items
    monkeypatch.setattr(precompile, "layer_items", lambda layer, *a: tiles(layer, *a) if layer.name in convs
                        else [])
    answered = {}
    precompile.network_items(e.network, e.meta, {"x": (2, 16, 8, 8)}, answered=answered,
                             cached=lambda layer, *a: None)
    assert answered["cached"] == answered["selections"] - len(convs) == 1


class _Family:
    """A kernel family whose compile records the tile and takes ``seconds[tile]``."""
    def __init__(self, seconds, fail=()):
        self.seconds, self.fail, self.done = seconds, fail, []

    def tile(self, name):
        return name

    def compile(self, tiles, **options):
        (name,) = tiles
        if name in self.fail:
            raise RuntimeError(f"NVRTC error: {name} does not build")
        self.done.append(name)
        precompile_clock[0] += self.seconds.get(name, 0.001)


precompile_clock = [0.0]


def test_a_rebuild_loads_its_tiles_here_until_one_really_compiles(monkeypatch, caplog):
    fam = _Family({"t2": 2.5}, fail=("t1",))
    monkeypatch.setitem(precompile._BY_NAME, "fake", fam)
    monkeypatch.setattr(precompile.time, "perf_counter", lambda: precompile_clock[0])
    pools = []
    monkeypatch.setattr(precompile, "_compile", lambda items, workers: (
        pools.append(([i[1] for i in items], workers)), ({f"fake {i[1]}": 3.0 for i in items}, 3.0))[1])
    items = [["fake", t, {}] for t in ("t0", "t1", "t2", "t3", "t4")]
    timed, _ = precompile._compile_cached(items[:2] + items[3:], 8)   # every one a cache load
    assert fam.done == ["t0", "t3", "t4"] and pools == []             # no worker processes
    assert set(timed) == {"fake t0", "fake t3", "fake t4"}            # t1 failed: first use reports it
    assert "fake t1: RuntimeError: NVRTC error: t1 does not build" in caplog.text
    fam.done.clear()
    timed, _ = precompile._compile_cached(items, 8)                   # t2 is a real compile
    assert fam.done == ["t0", "t2"] and pools == [(["t3", "t4"], 8)]  # the rest go to the pool
    assert timed["fake t2"] == pytest.approx(2.5) and timed["fake t4"] == 3.0


def test_background_compile_starts_no_worker_for_a_rebuild_or_a_single_tile(no_wgmma, monkeypatch):
    started = []
    monkeypatch.setattr(precompile, "_Pool", lambda items, workers, nice=0: started.append(len(items)))
    monkeypatch.setattr(precompile, "_compiled", set())
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "3")
    b, net = conv_network(c_in=16, one_by_one=False)
    e, cfg = built(b, net, rt.BuilderFlag.FP16)
    later = B._refine_alternatives(e.network, e.meta, cfg)
    shapes = {"x": (2, 16, 8, 8)}
    precompile.last_report.update(rebuild=True)          # the build's own selections were cached
    assert precompile.start_for(e.network, e.meta, shapes, later).wait() == 0.0 and started == []
    precompile.last_report.update(rebuild=False)
    one = dict(list(later.items())[:1])
    monkeypatch.setattr(precompile, "network_items", lambda *a, **k: [["conv_tf32", "t", {}]])
    assert precompile.start_for(e.network, e.meta, shapes, one).wait() == 0.0 and started == []
    monkeypatch.setattr(precompile, "network_items", lambda *a, **k: [["conv_tf32", "t1", {}],
                                                                      ["conv_tf32", "t2", {}]])
    precompile.start_for(e.network, e.meta, shapes, later)
    assert started == [2]                                  # two or more: the pool, as before


def test_an_int8_rgb_stem_lists_the_small_c_int8_tiles_for_the_type_it_stores(no_wgmma):
    b, net = conv_network(c_in=3, one_by_one=False, ranges=True)
    e, _ = built(b, net, rt.BuilderFlag.INT8, rt.BuilderFlag.FP16)
    stem = next(la for la in e.network._layers if la.layer_type == LayerType.CONVOLUTION)
    assert e.meta["precisions"][stem.name] == "INT8"
    items = precompile.network_items(e.network, e.meta, {"x": SHAPE})
    smallc = [i for i in items if i[0] == "conv_int8_smallc"]
    assert {i[1] for i in smallc} == names(conv_int8_smallc.SMALLC_TACTICS)
    stored = {np.dtype(d.to_numpy()).name for la, _, dts in e.schedule() if la is stem for d in dts}
    assert all(i[2] == {"out_dtypes": sorted(stored)} for i in smallc), (smallc, stored)
    # the stem kernel's INT8 flavour: its tiles for the codes it writes, for the input kind
    # each flavour reads (the network's float32 NCHW input, or the NHWC half reformat)
    stems = [i for i in items if i[0] == "conv_stem"]
    assert {i[1] for i in stems} == {t.name for t in conv_stem.STEM_TILES}
    assert all(i[2]["out_dtypes"] == sorted(stored) == ["int8"] for i in stems), (stems, stored)
    assert sorted(i[2]["in_kinds"][0] for i in stems) == [0, 0, 1, 1]
    every = precompile.work_items(int8=True)
    assert {t for f, t, _ in every if f == "conv_int8_smallc"} == names(conv_int8_smallc.SMALLC_TACTICS)
    assert not [f for f, _, _ in precompile.work_items(int8=False) if f == "conv_int8_smallc"]


def test_int8_mma_and_persistent_tiles_list_only_the_types_their_layers_store(no_wgmma):
    """conv_int8 and conv_pw compile one NVRTC module per output type: a build lists the
    types its INT8 layers store (int8 codes between the convolutions, float32 out of the
    last), not all three."""
    b, net = conv_network(c_in=16, one_by_one=True, fc=False, ranges=True)
    e, _ = built(b, net, rt.BuilderFlag.INT8, rt.BuilderFlag.FP16)
    items = precompile.network_items(e.network, e.meta, {"x": (2, 16, 8, 8)})
    stored = {}
    for la, prec, dts in e.schedule():
        if la.layer_type == LayerType.CONVOLUTION and prec == rt.DataType.INT8:
            stored.setdefault(la.kernel_size_nd, set()).add(np.dtype(dts[0].to_numpy()).name)
    i8 = {tuple(o["out_dtypes"]) for f, t, o in items if f == "conv_int8"}
    assert i8 == {tuple(sorted(set().union(*stored.values())))} == {("float32", "int8")}
    pw = {t: tuple(o["out_dtypes"]) for f, t, o in items if f == "conv_pw"}
    assert set(pw) == names(conv_pw.PW_TACTICS)                  # pw_persistent: on by default
    assert set(pw.values()) == {tuple(sorted(stored[(1, 1)]))} == {("int8",)}   # the 1x1 stores codes


def test_int8_families_compile_only_the_output_types_asked(monkeypatch):
    built_names = []
    monkeypatch.setattr(conv_int8, "_kernel", lambda t, dt: built_names.append((t.name, np.dtype(dt).name)))
    monkeypatch.setattr(conv_pw, "_kernel", lambda t, dt: built_names.append((t.name, np.dtype(dt).name)))
    t8, tpw, t16 = conv_int8.INT8_TACTICS[0], conv_pw.PW_TACTICS[0], conv_pw.PW16_TACTICS[0]
    conv_int8.FAMILY.compile((t8,), out_dtypes=["int8"])
    conv_int8.FAMILY.compile((t8,))                                    # not told: every type
    conv_pw.FAMILY.compile((tpw, t16), out_dtypes=["int8", "float32"])
    conv_pw.FAMILY.compile((tpw,))
    assert built_names == [(t8.name, "int8"), (t8.name, "int8"), (t8.name, "float32"), (t8.name, "float16"),
                           (tpw.name, "int8"), (tpw.name, "float32"), (t16.name, "float32"),
                           (tpw.name, "int8"), (tpw.name, "float32"), (tpw.name, "float16")]
