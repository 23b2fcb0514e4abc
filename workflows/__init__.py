"""Runnable end-to-end examples and the ``cupyrt`` command line.

Nothing here imports the engine at module level: ``cupyrt --help`` imports this
package and answers in 0.04 s; importing ``engine`` (any of its modules) costs 0.9 s.
"""


def run_engines_here():
    """Make this process run engine nodes on an engine backend, and say which.

    On a host without a CUDA device a converted graph runs its TensorFlow
    segments by default (never slower than the original, but then no engine
    runs). The examples exist to show what the engines compute, so there they
    ask for the NumPy reference backend instead, unless $CUPYRT_BACKEND already
    names one. Returns the backend the engines run on: "cupy" or "numpy".
    """
    # the engine is imported here, not at the top (see the module docstring)
    from engine.gpu.device import available
    from engine.settings import configure, settings

    if settings().backend == "auto":
        configure(backend="cupy" if available() else "numpy")
    return settings().backend
