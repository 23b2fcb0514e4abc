"""NumPy references for reductions and softmax (array-module generic)."""
import numpy as np

from .xp import array_module

_REDUCERS = {"SUM": "sum", "PROD": "prod", "MAX": "max", "MIN": "min", "AVG": "mean"}


def reduce(x, op, axes, keep_dims):
    """TensorRT's IReduceLayer: ``op`` is a ReduceOperation member name,
    ``axes`` a tuple of axes. Float sums go through NumPy's pairwise summation,
    which keeps long FP32 reductions within 1e-6 or so of the float64 result."""
    try:
        name = _REDUCERS[op]
    except KeyError:
        raise ValueError(f"unknown reduce operation {op!r}; valid: {', '.join(_REDUCERS)}") from None
    xp = array_module(x)
    return xp.asarray(getattr(xp, name)(x, axis=tuple(axes), keepdims=bool(keep_dims))
                      ).astype(x.dtype, copy=False)


def softmax(x, axis):
    """Numerically stable softmax: exp(x - max) / sum(exp(x - max)) along ``axis``."""
    xp = array_module(x)
    x = x.astype(np.float32, copy=False)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)
