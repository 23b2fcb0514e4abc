"""Backends run an engine's layers. ``numpy`` is the reference and CPU runtime;
the CuPy backend (GPU kernels and tactics) plugs in through the same interface:

    asarray(x) -> backend array          run_layer(layer, inputs, precision, out_dtypes)
    to_output(x, dtype) -> user array     synchronize()
"""
import os

from ..errors import BuildError
from .numpy_backend import NumpyBackend

_BACKENDS = {"numpy": NumpyBackend}


def select_backend(name=None):
    """``name`` or $CUPYRT_BACKEND: "numpy", or "auto" (the default: the best available)."""
    name = name or os.environ.get("CUPYRT_BACKEND", "auto")
    if name == "auto":
        name = "numpy"
    try:
        return _BACKENDS[name]()
    except KeyError:
        raise BuildError(f"backend {name!r} is not available; valid: auto, "
                         + ", ".join(_BACKENDS)) from None
