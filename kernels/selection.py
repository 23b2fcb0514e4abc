"""NumPy reference for TensorRT's ITopKLayer (array-module generic).

TF's TopKV2, ArgMax and ArgMin all come here: the ``k`` largest (or smallest)
values along one axis, sorted, and their indices. Equal values keep their
input order, lower index first, as TF's TopKV2 documents ("if two elements are
equal, the lower-index element appears first").
"""
import numpy as np

from .xp import array_module


def topk(x, k, axis, largest=True):
    """(values, int32 indices) of the ``k`` largest (``largest``) or smallest
    entries of ``x`` along ``axis``, best first."""
    xp = array_module(x)
    key = x.astype(np.int64) if x.dtype.kind in "iu" else x   # -INT32_MIN would overflow
    # a stable sort of the negated key keeps equal values in index order
    order = xp.argsort(-key if largest else key, axis=axis, kind="stable")
    head = [slice(None)] * x.ndim
    head[axis] = slice(0, k)
    idx = order[tuple(head)]
    return xp.take_along_axis(x, idx, axis=axis), idx.astype(np.int32)
