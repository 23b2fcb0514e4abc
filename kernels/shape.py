"""NumPy references for layers that move data without arithmetic: shuffle
(transpose/reshape/transpose), slice with TensorRT's sample modes, gather,
concatenation, flatten, squeeze, unsqueeze.

Plain functions of arrays and plain parameters; shapes given here are already
resolved (no 0 placeholders, no -1): resolving them is the layer's shape rule.
Array-module generic (``kernels.xp``): CuPy arrays in, CuPy arrays out. Index
arithmetic that depends only on parameters (slice coordinates) runs on the
host and moves to the data's module once.
"""
import math

import numpy as np

from .xp import array_module


def shuffle(x, first_transpose, reshape_dims, second_transpose):
    """TensorRT's IShuffleLayer: second_transpose(reshape(first_transpose(x))).
    Each step may be None (skipped)."""
    xp = array_module(x)
    if first_transpose is not None:
        x = x.transpose(first_transpose)
    if reshape_dims is not None:
        x = x.reshape(reshape_dims)
    if second_transpose is not None:
        x = x.transpose(second_transpose)
    return xp.array(x, order="C")


def flatten(x, axis):
    """(prod(dims[:axis]), prod(dims[axis:])): n x (c*h*w) for axis 1."""
    lead = math.prod(x.shape[:axis])
    return x.reshape(lead, -1) if lead else x.reshape(0, math.prod(x.shape[axis:]))


def squeeze(x, axes):
    return array_module(x).squeeze(x, axis=tuple(axes)).copy()


def unsqueeze(x, axes):
    return array_module(x).expand_dims(x, tuple(axes)).copy()


def concatenate(xs, axis):
    return array_module(*xs).concatenate(xs, axis=axis)


def gather(data, indices, axis):
    """TensorRT's default-mode gather (TF's tf.gather): output shape
    data.shape[:axis] + indices.shape + data.shape[axis+1:]; negative indices
    count from the end. Indices must already be in [-d, d)."""
    xp = array_module(data, indices)
    idx = xp.where(indices < 0, indices + data.shape[axis], indices)
    return xp.take(data, idx, axis=axis)


# ----------------------------------------------------------------------------
# slice
#
# For output coordinate y along a dim of input size d, the source coordinate is
# x = start + y * stride, then (TensorRT's SampleMode):
#
#   STRICT_BOUNDS  x must lie in [0, d)
#   WRAP           x mod d
#   CLAMP          min(max(x, 0), d - 1)
#   FILL           x if in [0, d) else the fill value
#   REFLECT        c = |x| mod (2d - 2); c if c < d else 2d - 2 - c  (d == 1: 0)
#
#     d = 4:  x = -3 -2 -1  0  1  2  3  4  5  6
#   REFLECT:       3  2  1  0  1  2  3  2  1  0

def source_indices(start, size, stride, d, mode):
    """Source coordinates along one dim, and a bool mask of in-bounds
    positions (only FILL has any False). Host (NumPy) arrays: they depend on
    the parameters only."""
    x = start + stride * np.arange(size, dtype=np.int64)
    inside = (x >= 0) & (x < d)
    if mode == "STRICT_BOUNDS":
        if not inside.all():
            raise IndexError(f"slice reads coordinate {int(x[~inside][0])} of a dim of size {d}")
    elif mode == "WRAP":
        x = np.mod(x, d)
    elif mode == "CLAMP":
        x = np.clip(x, 0, d - 1)
    elif mode == "FILL":
        x = np.where(inside, x, 0)
        return x, inside
    elif mode == "REFLECT":
        if d == 1:
            x = np.zeros_like(x)
        else:
            c = np.mod(np.abs(x), 2 * d - 2)
            x = np.where(c < d, c, 2 * d - 2 - c)
    else:
        raise ValueError(f"unknown sample mode {mode!r}")
    return x, np.ones(size, dtype=bool)


def slice_nd(x, start, size, stride, mode="STRICT_BOUNDS", fill=0.0):
    """TensorRT's ISliceLayer: out[y] = x[start + y * stride] per dim, with
    out-of-bounds coordinates handled per ``mode`` (see the table above)."""
    xp = array_module(x)
    if mode == "STRICT_BOUNDS":
        # plain strided view: the common case, no index arrays
        for s, n, st, d in zip(start, size, stride, x.shape):
            source_indices(s, n, st, d, mode)        # bounds check only
        sl = tuple(_basic_slice(s, n, st) for s, n, st in zip(start, size, stride))
        out = x[sl]
        if out.shape != tuple(size):                  # stride 0 repeats one element
            out = xp.broadcast_to(out, tuple(size))
        return xp.array(out, order="C")
    out, valid = x, None
    for axis, (s, n, st, d) in enumerate(zip(start, size, stride, x.shape)):
        idx, inside = source_indices(s, n, st, d, mode)
        if n and d:
            out = xp.take(out, xp.asarray(idx), axis=axis)
        else:
            out = xp.zeros(out.shape[:axis] + (n,) + out.shape[axis + 1:], dtype=x.dtype)
        if not inside.all():
            shape = [1] * x.ndim
            shape[axis] = n
            m = inside.reshape(shape)
            valid = m if valid is None else valid & m
    if valid is not None:
        out = xp.where(xp.asarray(valid), out, xp.asarray(np.asarray(fill).astype(x.dtype)))
    return xp.array(out, order="C")


def _basic_slice(start, size, stride):
    if size == 0:
        return slice(0, 0)
    if stride == 0:
        return slice(start, start + 1)
    stop = start + (size - 1) * stride + (1 if stride > 0 else -1)
    return slice(start, None if stop < 0 else stop, stride)
