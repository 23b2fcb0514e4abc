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


def test_worker_reports_a_failing_tile_and_goes_on(monkeypatch, capsys):
    done = []

    def fake(name):
        if name == "bad":
            raise RuntimeError("line 1\nx.cu(3): error: something wrong\nmore")
        done.append(name)
    monkeypatch.setitem(precompile.KINDS, "fp16", (lambda: ["bad", "good"], fake))
    precompile._worker([["fp16", "bad"], ["fp16", "good"]])
    err = capsys.readouterr().err
    assert "fp16 bad: RuntimeError: x.cu(3): error: something wrong" in err and done == ["good"]
