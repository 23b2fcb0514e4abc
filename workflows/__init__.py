"""Runnable end-to-end examples and the ``cupyrt`` command line."""
import os


def run_engines_here():
    """Make this process run engine nodes on an engine backend, and say which.

    On a host without a CUDA device a converted graph runs its TensorFlow
    segments by default (never slower than the original, but then no engine
    runs). The examples exist to show what the engines compute, so there they
    ask for the NumPy reference backend instead, unless $CUPYRT_BACKEND already
    names one. Returns the backend the engines run on: "cupy" or "numpy".
    """
    from engine.gpu.device import available

    if os.environ.get("CUPYRT_BACKEND", "auto") in ("", "auto"):
        os.environ["CUPYRT_BACKEND"] = "cupy" if available() else "numpy"
    return os.environ["CUPYRT_BACKEND"]
