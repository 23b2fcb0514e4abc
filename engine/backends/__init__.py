"""Backends run an engine's layers. ``numpy`` is the reference and CPU runtime;
the CuPy backend (GPU kernels and tactics) plugs in through the same interface:

    asarray(x) -> backend array          run_layer(layer, inputs, precision, out_dtypes)
    to_output(x, dtype) -> user array     synchronize()
"""
import os

from ..errors import BuildError
from .numpy_backend import NumpyBackend

_BACKENDS = {"numpy": NumpyBackend}


def _cupy_backend(meta):
    from .cupy_backend import CupyBackend
    return CupyBackend(meta)


_BACKENDS["cupy"] = _cupy_backend


def requested():
    """The backend $CUPYRT_BACKEND asks for by name ("numpy", "cupy"), or None when it
    is unset or "auto" (the caller then chooses; engine nodes in TensorFlow run
    their TensorFlow segment on hosts without a CUDA device)."""
    name = os.environ.get("CUPYRT_BACKEND", "auto") or "auto"
    return None if name == "auto" else resolve(name)


def resolve(name=None):
    """The backend name ``name`` or $CUPYRT_BACKEND stands for ("auto": CuPy when a
    CUDA device is present, else NumPy)."""
    name = name or os.environ.get("CUPYRT_BACKEND", "auto")
    if name == "auto":
        from ..gpu.device import available
        name = "cupy" if available() else "numpy"
    if name not in _BACKENDS:
        raise BuildError(f"backend {name!r} is not available; valid: auto, " + ", ".join(_BACKENDS))
    return name


def select_backend(name=None, meta=None):
    name = resolve(name)
    return _BACKENDS[name](meta) if name == "cupy" else _BACKENDS[name]()
