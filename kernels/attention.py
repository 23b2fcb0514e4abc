"""NumPy reference for scaled dot-product attention (array-module generic).

    out = softmax(scale * q @ k^T, last axis) @ v

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); the leading (batch) dims
broadcast as np.matmul's do. The softmax is kernels.reduce.softmax itself, so
the fused layer keeps the unfused network's semantics exactly: a NaN or +Inf
score makes its whole row NaN (TensorFlow's), -Inf scores weigh 0.

With ``heads`` the operands arrive packed, (..., S, heads * D) as the linear
projections make them, and the result leaves packed: the heads split and merge
(two shuffles each way in the unfused network) are part of the layer.

``attention_packed`` takes self-attention's q, k and v as one (..., S, 3 * E)
array, the column blocks [q | k | v] one merged projection GEMM writes.
"""
import numpy as np

from .reduce import softmax
from .xp import array_module


def split_heads(x, heads):
    """(..., S, heads * D) -> (..., heads, S, D): the heads shuffle, as a view where it can be."""
    x = x.reshape(x.shape[:-1] + (heads, x.shape[-1] // heads))
    return x.swapaxes(-2, -3)


def merge_heads(x):
    """(..., heads, S, D) -> (..., S, heads * D): the inverse of ``split_heads``."""
    x = x.swapaxes(-2, -3)
    return x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))


def attention(q, k, v, scale=1.0, heads=0):
    """softmax(scale * q @ k^T) @ v in float32. With ``heads`` > 0 the operands are
    packed (..., S, heads * D) and so is the result: each head attends on its own."""
    xp = array_module(q, k, v)
    q, k, v = (a.astype(np.float32, copy=False) for a in (q, k, v))
    if heads:
        return merge_heads(attention(*(split_heads(a, heads) for a in (q, k, v)), scale))
    scores = xp.matmul(q, xp.swapaxes(k, -1, -2))
    if scale != 1.0:
        # the unfused network multiplies the float32 scores by a float32 scale
        scores = scores * np.float32(scale)
    return xp.matmul(softmax(scores, scores.ndim - 1), v)


def unpack_qkv(qkv):
    """(..., S, 3 * E) -> the views q, k, v (..., S, E) of its three column blocks (no copy)."""
    e = qkv.shape[-1] // 3
    return qkv[..., :e], qkv[..., e:2 * e], qkv[..., 2 * e:]


def attention_packed(qkv, scale=1.0, heads=1):
    """``attention`` on the q | k | v column blocks of one packed (..., S, 3 * heads * D)
    array; the result is (..., S, heads * D)."""
    return attention(*unpack_qkv(qkv), scale, heads)
