"""NumPy reference for pooling (max, average, TensorRT's max-average blend), 1-3 spatial dims.

A loop over the window's taps, each a strided view of the padded input, reduces
with max or sum; no loop touches pixels or batch elements.

Max pooling has TensorFlow's NaN semantics (MaxPool on CPU and GPU, where
TF_ENABLE_MAXPOOL_NANPROP is off by default): a NaN tap is skipped (fmax, not
maximum), and the running max starts at the dtype's lowest finite value, so a
window of only NaN or -inf taps gives -FLT_MAX (-65504 in FP16), not NaN or
-inf. kernels/cuda/pooling.cu does the same (fmaxf from -FLT_MAX).

Padding follows TensorRT's IPoolingLayer: -inf for max, 0 for average. The
average's denominator is the overlap of the window with the unpadded input
(``exclude_padding``, TF's and TensorRT's default) or with the padded input;
either way the ROUND_UP tail beyond the padded input never counts.

Array-module generic (``kernels.xp``): the same taps run on CuPy arrays.
"""
import itertools

import numpy as np

from .spatial import pad_to_extent
from .xp import array_module


def _window_reduce(xpad, window, stride, out_spatial, op):
    acc = None
    for tap in itertools.product(*(range(f) for f in window)):
        view = xpad[(Ellipsis,) + tuple(slice(t, t + (o - 1) * s + 1, s)
                                        for t, o, s in zip(tap, out_spatial, stride))]
        if acc is None:
            acc = view.copy()
        else:
            op(acc, view, out=acc)
    return acc


def pool_nd(x, kind, window, stride, pre, post, out_spatial, exclude_padding=True, blend=0.0):
    """Pool the trailing ``len(window)`` dims of x.

    ``kind``: "MAX", "AVERAGE" or "MAX_AVERAGE_BLEND" (TensorRT's
    (1 - blend) * max + blend * average). ``pre``/``post``: the padding the
    layer resolved; the output extent may read past ``post`` (ROUND_UP).
    """
    xp = array_module(x)
    x = xp.asarray(x)
    nd = len(window)
    in_spatial = x.shape[x.ndim - nd:]
    extent = [(o - 1) * s + f for o, s, f in zip(out_spatial, stride, window)]
    result_max = result_avg = None
    if kind in ("MAX", "MAX_AVERAGE_BLEND"):
        xpad = pad_to_extent(x, pre, extent, -np.inf)
        result_max = _window_reduce(xpad, window, stride, out_spatial, xp.fmax)
        lowest = np.finfo(x.dtype).min if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        # NaN left only where every tap was NaN; -inf only where every tap was -inf
        result_max = xp.where(xp.isnan(result_max) | (result_max < lowest), lowest, result_max)
    if kind in ("AVERAGE", "MAX_AVERAGE_BLEND"):
        xpad = pad_to_extent(x, pre, extent, 0.0)
        total = _window_reduce(xpad, window, stride, out_spatial, xp.add)
        if exclude_padding:
            mask = pad_to_extent(xp.ones(in_spatial, xp.float32), pre, extent)
        else:
            padded = [n + a + b for n, a, b in zip(in_spatial, pre, post)]
            mask = pad_to_extent(xp.ones(padded, xp.float32), [0] * nd, extent)
        count = _window_reduce(mask, window, stride, out_spatial, xp.add)
        result_avg = total / xp.maximum(count, 1.0)
    if kind == "MAX":
        out = result_max
    elif kind == "AVERAGE":
        out = result_avg
    elif kind == "MAX_AVERAGE_BLEND":
        out = (1.0 - blend) * result_max + blend * result_avg
    else:
        raise ValueError(f"unknown pooling type {kind!r}")
    return out.astype(x.dtype, copy=False)
