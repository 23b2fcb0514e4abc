"""NumPy references for convolution and deconvolution, 1-3 spatial dims.

Layouts are TensorRT's: activations N C *spatial; convolution weights
(K, C/groups, *window); deconvolution weights (C, K/groups, *window). The
caller (the engine layer) resolves padding modes into a ``pre`` padding and an
output size; these functions only do the arithmetic.

Convolution is im2col + one batched GEMM (BLAS through ``np.matmul``):

    cols[n, c, t, p] = xpad[n, c, p * stride + t * dilation]      (t: kernel tap)
    y[n, g, k, p]    = sum_{c, t} W[g, k, (c, t)] * cols[n, g, (c, t), p]

Depthwise convolution (one input channel per group) skips the GEMM, whose inner
dimension would be the tap count only: it accumulates tap by tap instead.
Deconvolution is the transpose: one GEMM to get every tap's contribution, then
a strided scatter-add per tap (col2im). The taps of one scatter write disjoint
strided views, so a plain ``+=`` on a view does it (no ``np.add.at``).

Array-module generic (``kernels.xp``): with CuPy arrays the GEMMs are cuBLAS
calls and the tap loops launch one kernel per tap.
"""
import itertools
import math

from . import pointwise
from .spatial import pad_to_extent
from .xp import array_module

# im2col buffers larger than this are built batch chunk by batch chunk, so a
# batch of 64 224x224 images does not need gigabytes of scratch at once.
COLS_BUDGET_BYTES = 256 << 20


def _taps(window, dilation):
    """Offsets of every kernel tap, in the row-major order of the weights' window."""
    return [tuple(i * d for i, d in zip(tap, dilation))
            for tap in itertools.product(*(range(r) for r in window))]


def _strided(offset, count, stride):
    """Slices that take ``count`` elements every ``stride`` starting at ``offset``."""
    return (Ellipsis,) + tuple(slice(o, o + (c - 1) * s + 1, s)
                               for o, c, s in zip(offset, count, stride))


def _chunks(n, bytes_per_item):
    step = max(1, COLS_BUDGET_BYTES // max(1, bytes_per_item))
    return [(b, min(n, b + step)) for b in range(0, n, step)]


def im2col_matmul(x, w, stride, pre, out_spatial, dilation, groups, dtype):
    """Grouped convolution as im2col + one batched matmul per chunk of the batch,
    in ``dtype`` (float32 for the float path; float64 for exact integer sums).
    x (N, C, *S), w (K, C/groups, *window); returns (N, K, *out_spatial)."""
    xp = array_module(x, w)
    x = xp.asarray(x).astype(dtype, copy=False)
    w = xp.asarray(w).astype(dtype, copy=False)
    n, c = x.shape[:2]
    k, window = w.shape[0], w.shape[2:]
    cg, kg = c // groups, k // groups
    extent = [(o - 1) * s + (r - 1) * d + 1
              for o, s, r, d in zip(out_spatial, stride, window, dilation)]
    xpad = pad_to_extent(x, pre, extent)
    taps = _taps(window, dilation)
    t, p = len(taps), math.prod(out_spatial)
    wm = w.reshape(groups, kg, cg * t)
    y = xp.empty((n, k) + tuple(out_spatial), dtype)
    for b0, b1 in _chunks(n, c * t * p * y.itemsize):
        cols = xp.empty((b1 - b0, c, t) + tuple(out_spatial), dtype)
        for i, off in enumerate(taps):
            cols[:, :, i] = xpad[b0:b1][_strided(off, out_spatial, stride)]
        cols = cols.reshape(b1 - b0, groups, cg * t, p)
        y[b0:b1] = xp.matmul(wm, cols).reshape((b1 - b0, k) + tuple(out_spatial))
    return y


def conv_nd(x, w, bias, stride, pre, out_spatial, dilation, groups):
    """Cross-correlation (TensorRT/TF/PyTorch "convolution") of x (N, C, *S).

    ``pre``: padding before the data per spatial dim (zeros); the padding after
    is whatever ``out_spatial`` needs (a ROUND_UP tail reads zeros too).
    """
    xp = array_module(x, w, bias)
    x = xp.asarray(x, dtype=xp.float32)
    w = xp.asarray(w, dtype=xp.float32)
    n, c = x.shape[:2]
    k, window = w.shape[0], w.shape[2:]
    cg, kg = c // groups, k // groups
    extent = [(o - 1) * s + (r - 1) * d + 1
              for o, s, r, d in zip(out_spatial, stride, window, dilation)]
    xpad = pad_to_extent(x, pre, extent)
    taps = _taps(window, dilation)
    t = len(taps)

    if cg == 1:
        # depthwise (channel multiplier kg): y[n, c, m] = sum_t x_t[n, c] * w[c, m, t]
        wt = w.reshape(c, kg, t)
        y = xp.zeros((n, c, kg) + tuple(out_spatial), xp.float32)
        ones = (1,) * len(out_spatial)
        for i, off in enumerate(taps):
            y += xpad[_strided(off, out_spatial, stride)][:, :, None] * wt[:, :, i].reshape((c, kg) + ones)
        y = y.reshape((n, k) + tuple(out_spatial))
    else:
        y = im2col_matmul(x, w, stride, pre, out_spatial, dilation, groups, xp.float32)
    if bias is not None:
        y += xp.asarray(bias, xp.float32).reshape((k,) + (1,) * len(out_spatial))
    return y


def deconv_nd(x, w, bias, stride, pre, out_spatial, dilation, groups):
    """Transposed convolution (TensorRT's deconvolution, TF's conv2d_transpose)
    of x (N, C, *S) with w (C, K/groups, *window).

    The full output has (in - 1) * stride + dilation * (window - 1) + 1 elements
    per dim; the result is its window of ``out_spatial`` starting at ``pre``::

        full[n, k, i * stride + t * dilation] += x[n, c, i] * w[c, k, t]
    """
    xp = array_module(x, w, bias)
    x = xp.asarray(x, dtype=xp.float32)
    w = xp.asarray(w, dtype=xp.float32)
    n, c = x.shape[:2]
    in_spatial = x.shape[2:]
    kg, window = w.shape[1], w.shape[2:]
    cg, k = c // groups, kg * groups
    taps = _taps(window, dilation)
    t, p = len(taps), math.prod(in_spatial)
    full_extent = tuple((i - 1) * s + (r - 1) * d + 1
                        for i, s, r, d in zip(in_spatial, stride, window, dilation))
    # wm[g, (k, t), c] so that wm @ x[n, g] gives every tap's contribution
    wm = w.reshape(groups, cg, kg * t).transpose(0, 2, 1)
    full = xp.zeros((n, k) + full_extent, xp.float32)
    for b0, b1 in _chunks(n, k * t * p * 4):
        xm = x[b0:b1].reshape(b1 - b0, groups, cg, p)
        cols = xp.matmul(wm, xm).reshape((b1 - b0, k, t) + tuple(in_spatial))
        for i, off in enumerate(taps):
            full[b0:b1][_strided(off, in_spatial, stride)] += cols[:, :, i]
    y = pad_to_extent(full, [-q for q in pre], out_spatial)
    if bias is not None:
        y += xp.asarray(bias, xp.float32).reshape((k,) + (1,) * len(out_spatial))
    return y


def epilogue(y, residual=None, activation=None, alpha=0.0, beta=0.0):
    """The fused tail of a convolution: y = act(y + residual), in place where possible.
    ``activation`` is a TensorRT ActivationType member name (or None)."""
    if residual is not None:
        y += residual
    if activation is not None:
        y = pointwise.activation(y, activation, alpha, beta)
    return y
