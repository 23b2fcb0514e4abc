"""NumPy references for reductions and softmax."""
import numpy as np

_REDUCERS = {"SUM": np.sum, "PROD": np.prod, "MAX": np.max, "MIN": np.min, "AVG": np.mean}


def reduce(x, op, axes, keep_dims):
    """TensorRT's IReduceLayer: ``op`` is a ReduceOperation member name,
    ``axes`` a tuple of axes. Float sums go through NumPy's pairwise summation,
    which keeps long FP32 reductions within 1e-6 or so of the float64 result."""
    try:
        fn = _REDUCERS[op]
    except KeyError:
        raise ValueError(f"unknown reduce operation {op!r}; valid: {', '.join(_REDUCERS)}") from None
    return np.asarray(fn(x, axis=tuple(axes), keepdims=bool(keep_dims))).astype(x.dtype, copy=False)


def softmax(x, axis):
    """Numerically stable softmax: exp(x - max) / sum(exp(x - max)) along ``axis``."""
    x = x.astype(np.float32, copy=False)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)
