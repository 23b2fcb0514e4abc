"""The parallel precompile's work list (engine/gpu/precompile.py), checked without a GPU:
every tile family the builder may time is listed, INT8 only for INT8 builds."""
from engine.gpu import precompile


def test_work_items_cover_every_tile_family():
    from kernels.gpu import conv_int8, conv_tc, conv_tf32
    plain = precompile.work_items(int8=False)
    kinds = {k for k, _ in plain}
    # no device here: the wgmma (sm_90a) kinds list nothing
    assert kinds == set(precompile.KINDS) - {"int8", "wgmma_int8", "wgmma"}
    assert {n for k, n in plain if k == "fp16"} == set(conv_tc.TACTICS_BY_NAME)
    assert {n for k, n in plain if k == "tf32"} == set(conv_tf32.TACTICS_BY_NAME)
    every = precompile.work_items(int8=True)
    assert {n for k, n in every if k == "int8"} == set(conv_int8.TACTICS_BY_NAME)
    assert set(plain) < set(every)


def test_precompile_is_off_when_asked(monkeypatch):
    monkeypatch.setenv("CUPYRT_PRECOMPILE", "0")
    monkeypatch.setattr(precompile, "_done", set())
    assert precompile.precompile(int8=True) == 0.0
