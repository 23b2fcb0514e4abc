"""Layer norm over the trailing axes (kernels/cuda/layernorm.cu), FP32 statistics.

    y = (x - mean) / sqrt(var + eps) * scale + bias

with mean and biased variance over the last ``norm_ndim`` axes of x (the
layer norm of a transformer: the hidden axis). One warp per row for rows up
to WARP_MAX_L elements, one block per row beyond. scale and bias are
broadcast to the normalised shape once by the caller (``row_vector``).
"""
from __future__ import annotations

import math

import numpy as np

from ._launch import templated
from .compile import f32, i32
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "layernorm.cu"
WARP_MAX_L = 4096
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32))


def row_vector(v, norm_shape, what="scale"):
    """``v`` (any array broadcasting into ``norm_shape``, leading size-1 dims
    allowed) as a contiguous float32 vector of prod(norm_shape) values."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    shape, norm_shape = tuple(v.shape), tuple(norm_shape)
    lead = shape[:max(0, len(shape) - len(norm_shape))]
    if any(d != 1 for d in lead):
        raise UnsupportedError(f"{what} of shape {shape} varies outside the normalised axes "
                               f"{norm_shape}; expected size-1 leading dims")
    core = shape[len(lead):]
    try:
        fits = np.broadcast_shapes(core, norm_shape) == norm_shape
    except ValueError:
        fits = False
    if not fits:
        raise UnsupportedError(f"{what} of shape {shape} does not broadcast to the normalised "
                               f"axes {norm_shape}")
    v = cp.broadcast_to(cp.asarray(v).reshape(core), norm_shape)
    return cp.ascontiguousarray(v.astype(cp.float32, copy=False)).reshape(-1)


def layernorm(x, scale, bias, *, norm_ndim=1, eps=1e-5, out_dtype=None, stream=None):
    """Normalise x (float16/float32, made contiguous) over its last ``norm_ndim``
    axes. scale, bias: float32 vectors of prod(normalised dims) values
    (``row_vector``). Returns a new array of x's shape in ``out_dtype``
    (default x's dtype)."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    if x.dtype not in _FLOATS:
        raise UnsupportedError(f"layernorm: dtype {x.dtype}; valid: float16, float32")
    if not 1 <= norm_ndim <= x.ndim:
        raise UnsupportedError(f"layernorm over the last {norm_ndim} axes of a rank-{x.ndim} "
                               f"input; expected 1 <= norm_ndim <= rank")
    out_dtype = np.dtype(out_dtype or x.dtype)
    if out_dtype not in _FLOATS:
        raise UnsupportedError(f"layernorm: out dtype {out_dtype}; valid: float16, float32")
    if not eps > 0:
        raise UnsupportedError(f"layernorm: epsilon {eps}; expected > 0")
    L = math.prod(x.shape[x.ndim - norm_ndim:])
    rows = math.prod(x.shape[:x.ndim - norm_ndim])
    for v, what in ((scale, "scale"), (bias, "bias")):
        if v.dtype != np.float32 or v.shape != (L,) or not v.flags.c_contiguous:
            raise UnsupportedError(f"layernorm {what} {v.shape} {v.dtype}; expected contiguous "
                                   f"float32 ({L},) (row_vector)")
    if L >= 2**31:
        raise UnsupportedError(f"layernorm rows of {L} elements; expected < 2**31")
    x = cp.ascontiguousarray(x)
    y = cp.empty(x.shape, out_dtype)
    if y.size == 0:
        return y
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        if L <= WARP_MAX_L:
            kern = templated(SOURCE, "layernorm_warp", (x.dtype, out_dtype), "layernorm")
            kern((-(-rows // 8),), (256,), (x, y, scale, bias, np.int64(rows), i32(L), f32(eps)))
        else:
            kern = templated(SOURCE, "layernorm_block", (x.dtype, out_dtype), "layernorm")
            kern((rows,), (256,), (x, y, scale, bias, np.int64(rows), i32(L), f32(eps)))
    return y


FAMILY = KernelFamily(SOURCE, launch=(layernorm,))
