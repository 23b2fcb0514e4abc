"""GPU tactics for the Attention layer (engine/layers/attention.py), all
CUDA-graph safe (no cuBLAS), so a transformer engine is captured whole:

    attention.flash.<tile>  HALF layers: one flash-style kernel (kernels/gpu/attention.py),
                            the scores never written; head dims 32, 64, 128
    attention.unfused       HALF or FLOAT, any head dim: our GEMM (scale in its
                            alpha), our softmax kernel, our GEMM again, i.e. what
                            the unfused network ran, scores rounded as it rounded them

A layer with ``heads`` (the pass took the heads shuffles in) gets packed
(N, S, H * D) operands: the flash kernel reads them and writes the merged
(N, Sq, H * Dv) result through (n, h, s) strides, with no copy either side.
A layer with ``packed_qkv`` (engine/passes/merge_qkv.py) has one input, the
merged projection (N, S, 3 * H * D); q, k and v are its column blocks, taken
as views (strides again), so the merge costs the kernels nothing:

    row stride 3 * H * D:  [ q: h0 .. h(H-1) | k: h0 .. | v: h0 .. ]

The generic tactic (the reference through CuPy, cuBLAS inside: not capturable)
and the host tactic stay behind them as the fallback.
"""
import math

import numpy as np

from kernels.attention import merge_heads, split_heads, unpack_qkv
from kernels.gpu import attention as fa
from kernels.gpu import matmul as mm
from kernels.gpu.errors import UnsupportedError
from kernels.gpu.softmax import softmax

from ..types import DataType, LayerType
from .base import Tactic, cupy, register

_FLOAT_NAMES = ("float32", "float16")
_COMPUTE = {DataType.FLOAT: np.float32, DataType.HALF: np.float16}


def _float_reason(in_dtypes):
    if any(str(d) not in _FLOAT_NAMES for d in in_dtypes):
        return f"floating inputs only, not {list(in_dtypes)}"
    return None


def _per_head_shapes(layer, in_shapes):
    """The (N, H, S, D) shapes the kernels see: packed shapes split by ``heads``.
    None when a packed shape does not split (the layer's own rule refuses those)."""
    h = layer.heads
    shapes = [tuple(s) for s in in_shapes[:3]]
    if layer.packed_qkv:
        s = shapes[0]
        if not h or len(s) != 3 or s[2] % (3 * h):
            return None
        shapes = [s[:2] + (s[2] // 3,)] * 3
    if not h:
        return shapes
    if any(len(s) != 3 or s[2] % h for s in shapes):
        return None
    return [(s[0], h, s[1], s[2] // h) for s in shapes]


def _operands(layer, inputs, dtype):
    """q, k, v in ``dtype``: the packed input's three column blocks as views, else the inputs."""
    if layer.packed_qkv:
        # one cast of the whole packed array (a no-op when it is already ``dtype``), then views
        return unpack_qkv(inputs[0].astype(dtype, copy=False))
    return [x.astype(dtype, copy=False) for x in inputs[:3]]


def _packed_reason(layer, in_shapes):
    return (f"packed shapes {[tuple(s) for s in in_shapes]} do not split into "
            f"{'3 x ' if layer.packed_qkv else ''}{layer.heads} heads")


def _out_dtype(out_dtypes):
    """The storage type asked for when a kernel can write it directly, else None."""
    dt = out_dtypes[0].to_numpy()
    return dt if np.dtype(dt) in (np.dtype(np.float16), np.dtype(np.float32)) else None


class FlashAttention(Tactic):
    """The fused kernel with one query tile height."""

    def __init__(self, tile):
        self.tile = tile
        self.name = f"attention.flash.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.HALF:
            return "the fused attention kernel runs HALF layers"
        shapes = _per_head_shapes(layer, in_shapes)
        if shapes is None:
            return _packed_reason(layer, in_shapes)
        return _float_reason(in_dtypes) or fa.check_shapes(*shapes)

    def run(self, state, layer, inputs, precision, out_dtypes):
        cp = cupy()
        # a HALF layer's reference sees its inputs rounded to half: so does the kernel
        q, k, v = _operands(layer, inputs, np.float16)
        want = _out_dtype(out_dtypes) or np.float16
        if layer.heads:
            q, k, v = (split_heads(x, layer.heads) for x in (q, k, v))     # views: strides only
            n, h, sq, dv = q.shape[0], q.shape[1], q.shape[2], v.shape[3]
            y = cp.empty((n, sq, h * dv), want)
            fa.attention(q, k, v, layer.scale, out=split_heads(y, h), tile=self.tile)
        else:
            y = fa.attention(q, k, v, layer.scale, out_dtype=want, tile=self.tile)
        return [y if _out_dtype(out_dtypes) is not None else y.astype(out_dtypes[0].to_numpy())]


class UnfusedAttention(Tactic):
    """scale * q k^T, softmax, @ v through the engine's own GEMM and softmax kernels."""
    name = "attention.unfused"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision not in _COMPUTE:
            return f"runs FLOAT or HALF layers, not {getattr(precision, 'name', precision)}"
        reason = _float_reason(in_dtypes)
        if reason:
            return reason
        shapes = _per_head_shapes(layer, in_shapes)
        if shapes is None:
            return _packed_reason(layer, in_shapes)
        q, k, v = shapes
        try:
            batch, m, n, _ = mm.plan(q, k, "NONE", "TRANSPOSE")
            mm.plan(batch + (m, n), v, "NONE", "NONE")
        except UnsupportedError as e:
            return str(e)
        nb = math.prod(batch)
        if nb > mm.MAX_BATCH:
            return f"{nb} batched matrices (at most {mm.MAX_BATCH})"
        return None

    def run(self, state, layer, inputs, precision, out_dtypes):
        dt = _COMPUTE[precision]
        q, k, v = _operands(layer, inputs, dt)
        if layer.heads:
            q, k, v = (split_heads(x, layer.heads) for x in (q, k, v))
        # the scores and probabilities in the compute type, as the unfused layers stored them
        scores = mm.matmul(q, k, op_b="TRANSPOSE", alpha=layer.scale, out_dtype=dt)
        probs = softmax(scores, -1)
        want = _out_dtype(out_dtypes)
        y = mm.matmul(probs, v, out_dtype=want or dt)
        if layer.heads:
            y = cupy().ascontiguousarray(merge_heads(y))
        return [y if want is not None else y.astype(out_dtypes[0].to_numpy())]


_registered = []


def register_all():
    """Register the Attention tactics (once; later calls do nothing)."""
    if _registered:
        return
    register(LayerType.ATTENTION, *[FlashAttention(t) for t in fa.TILES], UnfusedAttention())
    _registered.append(True)


register_all()
