"""workflows/saved_model_example.py runs end to end: export, convert, build ahead,
save, reload; every signature matches TensorFlow on every batch size built."""
import pytest

from workflows.saved_model_example import main


@pytest.mark.parametrize("precision,tol", [("FP32", 1e-4), ("FP16", 2e-2)])
def test_saved_model_example_matches_tensorflow(precision, tol, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CUPYRT_BACKEND", "numpy")
    result = main(["--precision", precision, "--batches", "1,3", "--workdir", str(tmp_path)])
    assert len(result["signatures"]) == 4            # serve + serving_default, 2 batch sizes
    for key, r in result["signatures"].items():
        assert 0 <= r["rel_l2"] <= tol, (key, r)
    assert "100.0%" in result["summary"]
    assert "rel L2" in capsys.readouterr().out
