"""The TF main job's accuracy run: a small CNN trained on sklearn's digits, converted."""
import io

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("sklearn")


def test_digits_accuracy_of_converted_graph_matches_tensorflow():
    from workflows.tf_main_job import run_digits

    out = io.StringIO()
    rep = run_digits(out=out)
    assert rep["share"] == 1.0
    assert rep["accuracy_tf"] > 0.8                      # it learned something real
    assert abs(rep["accuracy_cupyrt"] - rep["accuracy_tf"]) <= 0.01
    assert rep["agreement"] >= 0.99
    assert rep["int8_layers"] >= 3                       # INT8 line: the convolutions run INT8
    assert abs(rep["accuracy_int8"] - rep["accuracy_tf"]) <= 0.01
    assert "cupyrt INT8" in out.getvalue()
    assert "held-out digits" in out.getvalue()
