"""Backends run an engine's layers. ``numpy`` is the reference and CPU runtime;
the CuPy backend (GPU kernels and tactics) plugs in through the same interface:

    asarray(x) -> backend array          run_layer(layer, inputs, precision, out_dtypes)
    to_output(x, dtype) -> user array     synchronize()
    execute(context, feeds, sched, stream=None) -> {output name: backend array}

The builder reaches the GPU's tactic selection through a backend object too, never
through the runtime: ``select_backend("cupy", meta).select_tactics(network, feeds)``
times every layer's candidates, and ``backend.measure(layer, inputs, ...)`` times one
layer in a given precision.

Which backend: the name given, else $CUPYRT_BACKEND (engine/settings.py), where
"auto" means CuPy when a CUDA device is present, else NumPy.
"""
from ..errors import BuildError
from ..gpu.device import available
from ..settings import settings
from .cupy_backend import CupyBackend
from .numpy_backend import NumpyBackend

_BACKENDS = {"numpy": NumpyBackend, "cupy": CupyBackend}


def requested():
    """The backend $CUPYRT_BACKEND asks for by name ("numpy", "cupy"), or None when it
    is unset or "auto" (the caller then chooses; engine nodes in TensorFlow run
    their TensorFlow segment on hosts without a CUDA device)."""
    name = settings().backend
    return None if name == "auto" else resolve(name)


def resolve(name=None):
    """The backend name ``name`` or $CUPYRT_BACKEND stands for ("auto": CuPy when a
    CUDA device is present, else NumPy)."""
    name = name or settings().backend
    if name == "auto":
        name = "cupy" if available() else "numpy"
    if name not in _BACKENDS:
        raise BuildError(f"backend {name!r} is not available; valid: auto, " + ", ".join(_BACKENDS))
    return name


def select_backend(name=None, meta=None):
    name = resolve(name)
    return _BACKENDS[name](meta) if name == "cupy" else _BACKENDS[name]()
