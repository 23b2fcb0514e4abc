"""NumPy references for reductions and softmax (array-module generic)."""
import numpy as np

from .xp import array_module, errstate

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
    # NaN or +Inf in a row makes the whole row NaN (+Inf - +Inf), as TensorFlow's
    # reference (Eigen) and GPU kernels do; -Inf gives 0 where it was
    with errstate(xp, invalid="ignore"):
        e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
        return e / xp.sum(e, axis=axis, keepdims=True)


def normalize(x, scale, bias, axes, epsilon, groups=1):
    """(x - mean) / sqrt(var + eps) * scale + bias over ``axes``; with ``groups`` > 1
    the channel axis 1 is split into groups normalised on their own (group norm:
    the statistics then also run over the group's channels)."""
    xp = array_module(x, scale, bias)
    y = x.astype(np.float32, copy=False)
    shape = y.shape
    if groups > 1:
        n, c = shape[:2]
        y = y.reshape((n, groups, c // groups) + shape[2:])
        axes = tuple(sorted({a + 1 if a >= 2 else a for a in axes if a != 1} | {2}))
    mean = xp.mean(y, axis=axes, keepdims=True)
    d = y - mean
    var = xp.mean(d * d, axis=axes, keepdims=True)
    y = (d / xp.sqrt(var + np.float32(epsilon))).reshape(shape)
    return y * scale.astype(np.float32, copy=False) + bias.astype(np.float32, copy=False)
