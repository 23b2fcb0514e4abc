"""One body, two backends: the array module (NumPy or CuPy) of some arrays.

NumPy references are written against ``xp`` so the CuPy backend can run every
layer on the device with the same code (cupyx's ``get_array_module`` idiom);
hand-written CUDA kernels then replace the hot ones.
"""
import contextlib

import numpy as np

try:                                  # CuPy imports without a GPU; it may be absent
    import cupy as _cupy
except ImportError:                   # pragma: no cover - depends on the install
    _cupy = None


def array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def to_device(a, xp):
    """``a`` (NumPy array, scalar or None) as an array of module ``xp``."""
    return None if a is None else xp.asarray(a)


def errstate(xp, **kw):
    """``np.errstate(**kw)`` on NumPy; a no-op on CuPy, whose kernels never warn
    about floating-point exceptions (inf and NaN simply come out)."""
    return np.errstate(**kw) if xp is np else contextlib.nullcontext()


def to_host(a):
    """``a`` as a NumPy array: the one sanctioned device -> host transfer (it
    synchronises the stream, so kernels call it only where a host decision is
    part of the layer's contract, e.g. a typed error for bad indices)."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    get = getattr(a, "get", None)      # other device arrays (the tests' fake one) follow CuPy
    return get() if get is not None else np.asarray(a)
