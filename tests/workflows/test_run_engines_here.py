"""workflows.run_engines_here: the examples run engines, not TensorFlow segments."""
import os

from engine.gpu.device import available
from workflows import run_engines_here


def test_unset_backend_becomes_the_engine_backend_of_this_host(monkeypatch):
    monkeypatch.delenv("CUPYRT_BACKEND", raising=False)
    want = "cupy" if available() else "numpy"
    assert run_engines_here() == want
    assert os.environ["CUPYRT_BACKEND"] == want


def test_auto_is_resolved_and_a_named_backend_is_kept(monkeypatch):
    monkeypatch.setenv("CUPYRT_BACKEND", "auto")
    assert run_engines_here() in ("cupy", "numpy")
    monkeypatch.setenv("CUPYRT_BACKEND", "numpy")
    assert run_engines_here() == "numpy"
