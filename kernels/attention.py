"""NumPy reference for scaled dot-product attention (array-module generic).

    out = softmax(scale * q @ k^T, last axis) @ v

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); the leading (batch) dims
broadcast as np.matmul's do. The softmax is kernels.reduce.softmax itself, so
the fused layer keeps the unfused network's semantics exactly: a NaN or +Inf
score makes its whole row NaN (TensorFlow's), -Inf scores weigh 0.
"""
import numpy as np

from .reduce import softmax
from .xp import array_module


def attention(q, k, v, scale=1.0):
    """softmax(scale * q @ k^T) @ v in float32."""
    xp = array_module(q, k, v)
    q, k, v = (a.astype(np.float32, copy=False) for a in (q, k, v))
    scores = xp.matmul(q, xp.swapaxes(k, -1, -2))
    if scale != 1.0:
        # the unfused network multiplies the float32 scores by a float32 scale
        scores = scores * np.float32(scale)
    return xp.matmul(softmax(scores, scores.ndim - 1), v)
