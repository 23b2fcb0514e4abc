"""NumPy references for spatial data movement: padding/cropping, LRN, resize.

Arrays are in TensorRT's logical layout n(p1 p2 ...)c h w; "spatial" means the
trailing dims. Everything here is vectorised: loops run over the handful of
window taps or resized axes, never over pixels or batch elements.

Array-module generic (``kernels.xp``). Resize's coordinate arithmetic depends
only on the sizes, so it runs on the host in float64 and moves to the data's
module as index and weight vectors.
"""
import math

import numpy as np

from .xp import array_module


def pad_to_extent(x, pre, extent, value=0.0):
    """Place ``x``'s trailing ``len(pre)`` dims in a window of ``extent`` that
    starts ``pre[i]`` elements before the data (negative ``pre`` crops).

    ::

        input index:      -pre ... 0 ............ n-1 ... extent-pre-1
        output index:        0 ... pre ........ pre+n-1 ... extent-1
                          [value ][     x data     ][ value or cropped ]

    The one helper behind explicit padding, SAME padding, ROUND_UP tails and
    deconvolution cropping: each only chooses ``pre`` and ``extent``.
    """
    nd = len(pre)
    lead = x.shape[:x.ndim - nd]
    out = array_module(x).full(lead + tuple(int(e) for e in extent), value, dtype=x.dtype)
    src, dst = [Ellipsis], [Ellipsis]
    for p, e, n in zip(pre, extent, x.shape[x.ndim - nd:]):
        start, stop = max(-p, 0), min(n, e - p)   # input range that lands in the window
        if stop <= start:
            return out
        src.append(slice(start, stop))
        dst.append(slice(start + p, stop + p))
    out[tuple(dst)] = x[tuple(src)]
    return out


def pad_nd(x, pre, post, value=0.0):
    """TensorRT's padding layer on the trailing ``len(pre)`` dims; negative values crop."""
    spatial = x.shape[x.ndim - len(pre):]
    return pad_to_extent(x, pre, [n + a + b for n, a, b in zip(spatial, pre, post)], value)


def lrn(x, window, alpha, beta, k):
    """Cross-channel LRN (axis 1), Caffe/ONNX/TensorRT form:

        y = x / (k + alpha / window * sum_{|j - c| <= window // 2} x_j^2) ^ beta

    The channel-window sum is a sum of ``window`` shifted slices (at most 15):
    exact, unlike a difference of cumulative sums in float32.
    """
    xp = array_module(x)
    half = window // 2
    sq = xp.square(x.astype(np.float32 if x.dtype == np.float16 else x.dtype, copy=False))
    padded = pad_to_extent(xp.moveaxis(sq, 1, -1), (half,), (x.shape[1] + 2 * half,))
    acc = padded[..., 0:x.shape[1]].copy()
    for j in range(1, window):
        acc += padded[..., j:j + x.shape[1]]
    acc = xp.moveaxis(acc, -1, 1)
    return (x / xp.power(k + (alpha / window) * acc, beta)).astype(x.dtype)


# -- resize -------------------------------------------------------------------

def source_coords(n_out, n_in, scale, coord):
    """Where output index o samples the input (host float64), per TensorRT's
    ResizeCoordinateTransformation (same as ONNX Resize's modes)::

        ALIGN_CORNERS  x = o * (n_in - 1) / (n_out - 1)   (x = 0 when n_out == 1, as TF)
        ASYMMETRIC     x = o / scale
        HALF_PIXEL     x = (o + 0.5) / scale - 0.5
    """
    o = np.arange(n_out, dtype=np.float64)
    if coord == "ALIGN_CORNERS":
        return o * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    if coord == "ASYMMETRIC":
        return o / scale
    if coord == "HALF_PIXEL":
        return (o + 0.5) / scale - 0.5
    raise ValueError(f"unknown coordinate transformation {coord!r}")


_ROUND = {
    "FLOOR": np.floor,
    "CEIL": np.ceil,
    "HALF_UP": lambda v: np.floor(v + 0.5),
    "HALF_DOWN": lambda v: np.ceil(v - 0.5),
}


def resize(x, out_shape, scales, mode, coord, rounding):
    """Resize ``x`` to ``out_shape``. ``scales[i]`` (out/in) drives the coordinate
    mapping of axis i; axes with the same size and scale 1 are left alone.

    NEAREST picks ``round(x)`` with ``rounding`` (FLOOR, CEIL, HALF_UP, HALF_DOWN),
    clamped into the input. LINEAR is separable: one 1-D lerp per resized axis,
    which is exactly bi/tri-linear interpolation, with the source coordinate
    clamped to [0, n_in - 1] (TF's and ONNX's edge rule).
    """
    xp = array_module(x)
    y = x
    for axis, (n_in, n_out, scale) in enumerate(zip(x.shape, out_shape, scales)):
        if n_in == n_out and scale == 1.0:
            continue
        src = source_coords(n_out, n_in, scale, coord)
        if mode == "NEAREST":
            idx = np.clip(_ROUND[rounding](src), 0, n_in - 1).astype(np.intp)
            y = xp.take(y, xp.asarray(idx), axis=axis)
            continue
        src = np.clip(src, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.intp)
        hi = np.minimum(lo + 1, n_in - 1)
        bshape = [1] * y.ndim
        bshape[axis] = n_out
        frac = xp.asarray((src - lo).astype(np.float32).reshape(bshape))
        a, b = xp.take(y, xp.asarray(lo), axis=axis), xp.take(y, xp.asarray(hi), axis=axis)
        y = (a + (b - a) * frac).astype(x.dtype)
    return y if y is not x else x.copy()


def output_dim(n_in, scale):
    """TensorRT's resize output size for a scale factor: floor(n_in * scale).
    The small epsilon keeps decimal and float32 scales honest (100 * 0.29 is
    28.999999999999996 in binary floating point, 7 * float32(3/7) is 2.9999998;
    the user meant 29 and 3)."""
    return int(math.floor(n_in * scale + 1e-5))
