"""Softmax along any axis (kernels/cuda/softmax.cu), FP32 arithmetic.

Last axis: one warp per row. Any other axis: the array is viewed as
[outer, L, inner] and one thread walks each (outer, inner) column, so
neighbouring threads read neighbouring addresses; no transposes.
"""
from __future__ import annotations

import math

import numpy as np

from ._launch import BLOCK, grid_1d, templated
from .compile import i32
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "softmax.cu"


def softmax(x, axis=-1, out=None):
    """softmax(x) along ``axis``; x float16/float32 (made contiguous); returns same shape/dtype."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    if x.dtype not in (np.float16, np.float32):
        raise UnsupportedError(f"softmax: dtype {x.dtype}; valid: float16, float32")
    if x.ndim == 0:
        raise UnsupportedError("softmax of a scalar; expected rank >= 1")
    if not -x.ndim <= axis < x.ndim:
        raise UnsupportedError(f"softmax axis {axis} for rank {x.ndim}")
    axis %= x.ndim
    x = cp.ascontiguousarray(x)
    if out is None:
        out = cp.empty_like(x)
    elif out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise UnsupportedError(f"softmax out {out.shape} {out.dtype}; expected contiguous {x.shape} {x.dtype}")
    L = x.shape[axis]
    inner = math.prod(x.shape[axis + 1:])
    outer = math.prod(x.shape[:axis])
    if x.size == 0:
        return out
    if inner == 1:
        kern = templated(SOURCE, "softmax_rows", (x.dtype,), "softmax")
        rows = outer
        kern((-(-rows * 32 // BLOCK),), (BLOCK,), (x, out, np.int64(rows), i32(L)))
    else:
        kern = templated(SOURCE, "softmax_strided", (x.dtype,), "softmax")
        kern(grid_1d(outer * inner), (BLOCK,), (x, out, np.int64(outer), i32(L), i32(inner)))
    return out


FAMILY = KernelFamily(SOURCE, launch=(softmax,))
