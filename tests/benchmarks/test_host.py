"""benchmarks/host.py's command line on the CPU: the engine-only soak (no TensorFlow needed)
runs, checks every answer against the NumPy backend and reports its memory samples; bad
counts are refused; the calibration timing runs and agrees with the definition. (The TensorFlow
soak and the ResNet50 comparison take minutes.)"""
import json

import pytest

from benchmarks import host
from kernels.gpu import conv_igemm
from kernels.gpu.compile import nvrtc_library


def test_engine_only_soak_runs_checks_and_samples(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CUPYRT_BACKEND", "numpy")
    out = tmp_path / "soak.json"
    assert host.main(["soak", "--engine-only", "--runs", "24", "--sample-every", "8", "--json", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["runs"], shown["mismatches"], shown["mode"]) == (24, 0, "engine-only")
    assert shown["max_rel_l2"] <= 1e-5 and "samples" not in shown      # NumPy against NumPy
    saved = json.loads(out.read_text())
    assert [n for n, _ in saved["samples"]] == [8, 16, 24]


@pytest.mark.parametrize("flag", ["--runs", "--threads", "--sample-every"])
def test_soak_refuses_counts_below_one(flag, capsys):
    with pytest.raises(SystemExit) as e:
        host.main(["soak", flag, "0"])
    assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err


def test_calibration_times_kl_threshold_against_the_definition(capsys):
    assert host.main(["calibration", "--tensors", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tensors"] == 4 and out["bins"] == 2048
    assert out["definition_s"] > 0 and out["kl_threshold_s"] > 0
    assert 0 <= out["thresholds_equal"] <= 4
    r = host.calibration_main(6, seed=3)
    assert r["thresholds_equal"] >= 3          # only exact ties may differ


def _nvrtc():
    return nvrtc_library() is not None


def test_compiles_lists_the_tiles_a_cold_build_compiles_and_the_switches_cut_them():
    """ResNet-50 FP16 as for an H100 with cuDNN: the stem kernel's tiles, the general tiles
    and the classifier's; with tiles_where_specialised=0 the general conv tiles go (cuDNN and
    the stem kernel take every convolution), the classifier's stay; without cuDNN they stay
    too; the background list is precision by timing's FP32 tiles."""
    from engine.settings import overridden
    with overridden(tiles_where_specialised=1, mma_sync_where_wgmma=1):      # as before session 17
        own, background = host.compile_list("resnet50", "fp16", 8)
    fams = {f for f, _, _ in own}
    assert {"conv_stem", "conv_igemm", "conv_wgmma"} <= fams and {f for f, _, _ in background} == {"conv_tf32"}
    stem = [i for i in own if i[0] == "conv_stem"]
    assert {tuple(o["geometry"]) for _, _, o in stem} == {(7, 7, 2, 2)}       # the 7x7/2 RGB stem
    with overridden(tiles_where_specialised=0, mma_sync_where_wgmma=1):
        held_own, held_bg = host.compile_list("resnet50", "fp16", 8)
        no_cudnn, _ = host.compile_list("resnet50", "fp16", 8, cudnn=False)
    default_own, _ = host.compile_list("resnet50", "fp16", 8)                  # both at 0: fewer still
    assert {(f, t) for f, t, _ in default_own} <= {(f, t) for f, t, _ in held_own}
    assert not [i for i in held_own if i[0] == "conv_wgmma"] and held_bg == background
    assert [i for i in held_own if i[0] == "conv_stem"] == stem
    fc = [i for i in held_own if i[0] == "conv_igemm"]
    assert fc and all(o["out_dtypes"] == ["float32"] for _, _, o in fc)         # the classifier's, float32 out
    # without cuDNN only the stem kernel takes a layer: the small-C tiles (the stem's alone) go
    assert {t for f, t, _ in own if (f, t) not in {(g, u) for g, u, _ in no_cudnn}} == \
        {t.name for t in conv_igemm.SMALLC_TACTICS}
    assert len(held_own) < len(no_cudnn) < len(own)


def test_compiles_int8_lists_int8_tiles_and_fp16_alternatives_in_the_background():
    own, background = host.compile_list("resnet50", "int8", 16)
    assert {"conv_int8", "conv_pw", "conv_stem", "conv_wgmma"} <= {f for f, _, _ in own}
    assert all("int8" in o.get("out_dtypes", ["int8"]) or f == "conv_int8" for f, _, o in own)
    assert {f for f, _, _ in background} >= {"conv_igemm", "conv_stem"}
    keys = [(f, t, json.dumps(o, sort_keys=True)) for f, t, o in own + background]
    assert len(keys) == len(set(keys))                                          # each tile once
    # the cuDNN graphs it queues: ResNet-50's 23 distinct convolutions in FP16 and 24 INT8 ones
    # (the stem is ours: C = 3); 26 and 27 before branch_order gave each stage's first expand
    # layer the residual add its projection had taken (both then match layers met already);
    # plans: 4 a graph, 3 for the 23 INT8 graphs with int8 outputs (their window starts at plan
    # 1), 4 for the last one (float16)
    assert host.cudnn_graphs_listed("resnet50", "int8", 16) == {"int8": 24, "fp16": 23,
                                                                 "plans_at_most": 23 * 4 + 23 * 3 + 4}


@pytest.mark.skipif(not _nvrtc(), reason="no NVRTC library to compile with")
def test_compiles_times_each_nvrtc_run_on_the_cpu(capsys, tmp_path):
    rows = host.time_compiles([["conv_stem", "stem_t8w4", {"geometry": [7, 7, 2, 2], "in_kinds": [1],
                                                          "out_dtypes": ["float16", "int8"]}]])
    assert len(rows) == 1 and rows[0]["runs"] == 2 and rows[0]["seconds"] > 0
    out = tmp_path / "c.json"
    assert host.main(["compiles", "--model", "mobilenet_v2", "--precision", "fp16", "--batch", "4",
                      "--set", "tiles_where_specialised=0", "--set", "mma_sync_where_wgmma=1",
                      "--time", "--json", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert shown["switches"] == {"CUPYRT_MMA_SYNC_WHERE_WGMMA": True}          # away from the defaults only
    assert shown["nvrtc_runs"] == sum(r["runs"] for r in saved["items"]) > 0
    assert shown["seconds"]["own"] == pytest.approx(sum(r["seconds"] for r in saved["items"] if r["list"] == "own"),
                                                    abs=0.1)
    assert {f["family"] for f in shown["families"]} == {r["family"] for r in saved["items"]}
    assert shown["cudnn_graphs"] == {"int8": 0, "fp16": 19, "plans_at_most": 76}   # call 4's build: 19


@pytest.mark.parametrize("argv, words", [(["--set", "tiles_where_specialised"], "NAME=VALUE"),
                                         (["--batch", "0"], "--batch must be >= 1")])
def test_compiles_refuses_bad_arguments(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        host.main(["compiles", *argv])
    assert e.value.code == 2 and words in capsys.readouterr().err


def _suite_file(tmp_path, ms_of, precision="int8"):
    """A suite file whose build recorded ``ms_of(layer name)`` for every layer of the listing
    engine that precision by timing weighs but the last (a layer the file lacks)."""
    from engine import precision_timing as pt
    from engine.types import DataType
    e, cfg = host._listing_engine("resnet50", precision, 16)
    prec = {n: DataType[p] for n, p in e.meta["precisions"].items()}
    names = list(pt.alternatives(e.network, prec, cfg))
    build = {n: {"chosen": "k", "ms": {"k": ms_of(n), "other": 9.0}} for n in names[:-1]}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"card": "stand-in", "builds": [{"tactics": {"build": build}}]}))
    return path, names


def test_precision_timing_replays_which_fp16_alternatives_an_int8_build_times(tmp_path, capsys):
    """Slow INT8 layers: every alternative is timed under each rule; INT8 layers past the FP16
    ceiling (1 ns): none but the one the file lacks, which counts as timed; the ceiling and
    the edges only ever remove layers (traffic >= ceiling >= the build)."""
    slow, names = _suite_file(tmp_path, lambda n: 50.0)
    got = host.main(["precision-timing", "--from", str(slow), "--batch", "16", "--json", str(tmp_path / "o.json")])
    shown = json.loads(capsys.readouterr().out)
    assert got == 0 and shown["alternatives"] == len(names) > 40
    assert shown["missing_from_file"] == [names[-1]]
    assert set(shown["timed"].values()) == {len(names)}
    saved = json.loads((tmp_path / "o.json").read_text())
    assert all(r["timed"] for r in saved["layers"]) and saved["layers"][-1]["current_ms"] is None
    fast, _ = _suite_file(tmp_path, lambda n: 1e-6)
    host.main(["precision-timing", "--from", str(fast), "--batch", "16", "--json", str(tmp_path / "f.json")])
    timed = json.loads(capsys.readouterr().out)["timed"]
    kept = {r["layer"] for r in json.loads((tmp_path / "f.json").read_text())["layers"] if r["timed"]}
    # the missing layer (the classifier), and the pooling before it only as its pair
    assert names[-1] in kept and len(kept) == timed["+ edge casts and pairs (the build)"] <= 2
    assert timed["+ FP16 ceiling"] == 2          # and the pooling, whose FLOPs nothing bounds (all in L2)
    mixed, _ = _suite_file(tmp_path, lambda n: 0.05 if int(n.rsplit("_", 1)[1]) % 2 else 0.002)
    host.main(["precision-timing", "--from", str(mixed), "--batch", "256", "--bandwidth", "4.8e12"])
    t = list(json.loads(capsys.readouterr().out)["timed"].values())
    assert t[0] >= t[1] >= t[2] and t[0] > t[2]


def test_precision_timing_replays_an_fp16_build_against_fp32(tmp_path, capsys):
    """``--precision fp16``: the FP32 alternatives; slow FP16 layers are all timed, layers
    already past the FP32 ceiling (1 ns) none but the one the file lacks and its pair."""
    slow, names = _suite_file(tmp_path, lambda n: 50.0, "fp16")
    host.main(["precision-timing", "--from", str(slow), "--batch", "16", "--precision", "fp16"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["precision"] == "fp16" and set(shown["timed"].values()) == {len(names)} and len(names) > 40
    fast, _ = _suite_file(tmp_path, lambda n: 1e-6, "fp16")
    host.main(["precision-timing", "--from", str(fast), "--batch", "16", "--precision", "fp16"])
    assert 1 <= json.loads(capsys.readouterr().out)["timed"]["+ edge casts and pairs (the build)"] <= 2


@pytest.mark.parametrize("argv, words", [(["--batch", "0"], "must be positive"),
                                         (["--bandwidth", "-1"], "must be positive"),
                                         (["--l2-mib", "-1"], "--l2-mib >= 0")])
def test_precision_timing_refuses_bad_arguments(argv, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        host.main(["precision-timing", "--from", str(tmp_path / "none.json"), *argv])
    assert e.value.code == 2 and words in capsys.readouterr().err
