"""benchmarks/host.py's command line on the CPU: the engine-only soak (no TensorFlow needed)
runs, checks every answer against the NumPy backend and reports its memory samples; bad
counts are refused; the calibration timing runs and agrees with the definition. (The TensorFlow
soak and the ResNet50 comparison take minutes.)"""
import json

import pytest

from benchmarks import host


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
