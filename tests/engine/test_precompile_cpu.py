"""The parallel precompile's work list (engine/gpu/precompile.py), checked without a GPU:
read from the kernel families' descriptors, INT8 tiles only for INT8 builds, the FP16
wgmma FAST instantiations only under the fast-epilogue setting."""
import pytest

from engine.gpu import precompile
from engine.settings import from_environ
from kernels.gpu import conv_igemm, conv_int8, conv_pw, conv_tf32, conv_wgmma, matmul
from kernels.gpu.family import KernelFamily


def _names(items, family):
    return {tile for fam, tile, _ in items if fam == family.name}


def test_work_items_cover_every_tile_family(monkeypatch):
    monkeypatch.setattr(conv_wgmma, "available", lambda device=None: False)
    monkeypatch.setattr(precompile, "FAMILIES", tuple(
        KernelFamily(f.source, f.launch, f.compile, f.tiles, f.int8_tiles, conv_wgmma.available)
        if f is conv_wgmma.FAMILY else f for f in precompile.FAMILIES))
    plain = precompile.work_items(int8=False)
    # no sm_90a device: the wgmma family lists nothing
    assert {fam for fam, _, _ in plain} == {"conv_igemm", "conv_tf32", "matmul", "conv_pw", "conv_stem"}
    assert _names(plain, conv_igemm.FAMILY) == set(conv_igemm.TACTICS_BY_NAME)
    assert _names(plain, conv_tf32.FAMILY) == set(conv_tf32.TACTICS_BY_NAME)
    assert _names(plain, matmul.FAMILY) == set(matmul.TILES_BY_NAME)
    assert _names(plain, conv_pw.FAMILY) == {t.name for t in conv_pw.PW16_TACTICS}
    every = precompile.work_items(int8=True)
    assert _names(every, conv_int8.FAMILY) == set(conv_int8.TACTICS_BY_NAME)
    assert _names(every, conv_pw.FAMILY) == set(conv_pw.TACTICS_BY_NAME)
    assert all(item in every for item in plain) and len(every) > len(plain)


def test_wgmma_tiles_listed_on_sm90a_fast_unless_switched_off(monkeypatch):
    fam = KernelFamily("conv_wgmma.cu", tiles=conv_wgmma.TACTICS, int8_tiles=conv_wgmma.INT8_TACTICS,
                       compile=conv_wgmma.FAMILY.compile, available=lambda: True)
    monkeypatch.setattr(precompile, "FAMILIES", (fam,))
    monkeypatch.setattr(conv_wgmma, "FAMILY", fam)
    off = precompile.work_items(int8=True, current=from_environ({"CUPYRT_WGMMA_F16_FAST_EPILOGUE": "0"}))
    on = precompile.work_items(int8=True, current=from_environ({}))         # the default
    assert {t for _, t, _ in off} == {t.name for t in conv_wgmma.TACTICS + conv_wgmma.INT8_TACTICS}
    assert {o["fast_epilogue"] for _, _, o in off} == {False}
    assert {o["fast_epilogue"] for _, _, o in on} == {True}


def test_wgmma_compile_builds_fast_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(conv_wgmma, "compile_all",
                        lambda tactics, out_dtypes=None, fast=False: calls.append(
                            (tactics[0].name, tuple(map(str, out_dtypes)), fast)))
    fp16, int8 = conv_wgmma.TACTICS[0], conv_wgmma.INT8_TACTICS[0]
    conv_wgmma.FAMILY.compile((fp16, int8))
    conv_wgmma.FAMILY.compile((fp16,), fast_epilogue=True)
    f16 = ("<class 'numpy.float16'>", "<class 'numpy.float32'>")
    assert calls == [(fp16.name, f16, False),
                     (int8.name, ("<class 'numpy.int8'>", "<class 'numpy.float16'>",
                                  "<class 'numpy.float32'>"), False),
                     (fp16.name, f16, True)]


def test_precompile_is_off_when_asked(monkeypatch):
    monkeypatch.setenv("CUPYRT_PRECOMPILE", "0")
    monkeypatch.setattr(precompile, "_done", set())
    assert precompile.precompile(int8=True) == 0.0


def test_worker_reports_a_failing_tile_and_goes_on(monkeypatch, capsys):
    done = []

    class Tile:
        def __init__(self, name):
            self.name = name

    def fake(tiles, flag=None):
        if tiles[0].name == "bad":
            raise RuntimeError("line 1\nx.cu(3): error: something wrong\nmore")
        done.append((tiles[0].name, flag))
    fam = KernelFamily("fake.cu", compile=fake, tiles=(Tile("bad"), Tile("good")))
    monkeypatch.setitem(precompile._BY_NAME, "fake", fam)
    precompile._worker([["fake", "bad", {}], ["fake", "good", {"flag": 1}]])
    err = capsys.readouterr().err
    assert "fake bad: RuntimeError: x.cu(3): error: something wrong" in err and done == [("good", 1)]
    timed = [ln.split() for ln in err.splitlines() if ln.startswith("compiled-in")]
    assert [t[2:] for t in timed] == [["fake", "good"]] and float(timed[0][1]) >= 0.0


def test_report_sums_compile_seconds_per_family_slowest_first():
    report = {"seconds": 9.0, "items": {"conv_igemm a": 2.0, "conv_igemm b": 3.5, "matmul m": 4.0,
                                        "conv_wgmma w": 6.25}}
    assert precompile.report_lines(report) == ["conv_wgmma: 1 tiles, 6.2 s of compile",
                                               "conv_igemm: 2 tiles, 5.5 s of compile",
                                               "matmul: 1 tiles, 4.0 s of compile"]


def test_a_family_names_its_tiles():
    assert conv_igemm.FAMILY.name == "conv_igemm" and conv_igemm.FAMILY.source == "conv_igemm.cu"
    t = conv_igemm.IGEMM_TACTICS[0]
    assert conv_igemm.FAMILY.tile(t.name) is t
    assert conv_int8.FAMILY.tile(conv_int8.INT8_TACTICS[0].name) is conv_int8.INT8_TACTICS[0]
    from kernels.gpu.errors import UnsupportedError
    with pytest.raises(UnsupportedError, match="conv_igemm has no tile 'nope'; valid: igemm_128x128x32"):
        conv_igemm.FAMILY.tile("nope")
