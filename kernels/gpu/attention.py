"""Fused scaled dot-product attention (kernels/cuda/attention.cu), flash-style:

    out = softmax(scale * q @ k^T, last axis) @ v

q (..., Sq, D), k (..., Sk, D), v (..., Sk, D) float16 with equal leading dims,
head dim D in HEAD_DIMS; the output is float16 or float32. One CTA per
(leading index, BM query rows); the tiles (``AttentionTile``) differ in BM.

Rank-4 operands (N, heads, S, D) are read through their strides, so a view
(the heads transpose of an (N, S, heads * D) buffer) costs no copy, provided
the head dim is contiguous and rows start on 16 bytes; anything else is made
contiguous first. The NumPy reference is kernels/attention.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .compile import ctype, f32, get_function, i32
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "attention.cu"
HEAD_DIMS = (32, 64, 128)
BLOCK_N = 64                  # keys per shared-memory tile
MAX_GRID_Y = 65535
_OUT = (np.dtype(np.float16), np.dtype(np.float32))


@dataclass(frozen=True)
class AttentionTile:
    """One launch shape: ``warps`` warps of 16 query rows each."""
    warps: int

    @property
    def name(self):
        return f"fa_m{self.block_m}"

    @property
    def block_m(self):
        return 16 * self.warps

    @property
    def threads(self):
        return 32 * self.warps

    def smem_bytes(self, head_dim):
        # Q tile + two stages of K and V tiles, rows padded by 8 halves
        return (self.block_m + 4 * BLOCK_N) * (head_dim + 8) * 2

    def expression(self, head_dim, out_dtype):
        return f"attention_f16<{head_dim},{self.warps},{BLOCK_N},{ctype(out_dtype, 'attention')}>"


TILES = (AttentionTile(2), AttentionTile(4), AttentionTile(8))
TILES_BY_NAME = {t.name: t for t in TILES}


def check_shapes(q_shape, k_shape, v_shape):
    """None when the kernel takes these shapes, else the reason it does not."""
    q_shape, k_shape, v_shape = tuple(q_shape), tuple(k_shape), tuple(v_shape)
    if len(q_shape) < 2 or not len(q_shape) == len(k_shape) == len(v_shape):
        return f"shapes {q_shape}, {k_shape}, {v_shape}: expected equal ranks >= 2"
    if not q_shape[:-2] == k_shape[:-2] == v_shape[:-2]:
        return f"leading dims {q_shape[:-2]}, {k_shape[:-2]}, {v_shape[:-2]} differ (no broadcast)"
    d = q_shape[-1]
    if d not in HEAD_DIMS:
        return f"head dim {d}; the kernel has {', '.join(map(str, HEAD_DIMS))}"
    if k_shape[-1] != d or v_shape[-1] != d:
        return f"key/value head dims {k_shape[-1]}/{v_shape[-1]}; expected the query's {d}"
    if k_shape[-2] != v_shape[-2]:
        return f"{k_shape[-2]} keys but {v_shape[-2]} values"
    if math.prod(q_shape[:-2]) >= 2**31:
        return f"{math.prod(q_shape[:-2])} (batch x heads) matrices; expected < 2**31"
    if -(-q_shape[-2] // TILES[0].block_m) > MAX_GRID_Y:
        return f"{q_shape[-2]} queries; expected at most {MAX_GRID_Y * TILES[0].block_m}"
    return None


def _as_nhsd(cp, x):
    """x as a rank-4 (N, H, S, D) array whose strides the kernel can follow (head
    dim contiguous, every row on 16 bytes); element strides (n, h, s)."""
    if x.ndim != 4:
        x = cp.ascontiguousarray(x).reshape((-1, 1) + x.shape[-2:])
    item = x.itemsize
    ok = (x.strides[3] == item and all(s % 16 == 0 for s in x.strides[:3])
          and x.data.ptr % 16 == 0)
    if not ok:
        x = cp.ascontiguousarray(x)
    return x, tuple(s // item for s in x.strides[:3])


def _check_out(out, shape):
    """A caller's output array: ``shape``, float16/float32, the head dim contiguous
    and rows on 8 bytes (the kernel stores pairs); any other strides (a view into
    the merged-heads (N, S, H * D) buffer)."""
    if tuple(out.shape) != tuple(shape) or out.ndim != 4:
        raise UnsupportedError(f"attention: out of shape {tuple(out.shape)}; expected rank-4 {tuple(shape)}")
    if out.dtype not in _OUT:
        raise UnsupportedError(f"attention: out dtype {out.dtype}; valid: float16, float32")
    step = 2 * out.itemsize
    if out.strides[3] != out.itemsize or any(st % step for st in out.strides[:3]) or out.data.ptr % step:
        raise UnsupportedError(f"attention: out strides {out.strides}; expected the last dim "
                               f"contiguous and rows on {step} bytes")


def attention(q, k, v, scale, *, out=None, out_dtype=None, tile=TILES[1], stream=None):
    """softmax(scale * q @ k^T) @ v on the tensor cores; q, k, v cupy float16
    (the HALF layer's inputs: callers round float32 first). Writes ``out`` when
    given (rank 4, q's shape, any strides with the head dim contiguous: e.g. the
    heads view of a merged (N, S, H * D) buffer), else returns a new contiguous
    array of q's shape in ``out_dtype`` (default float16)."""
    import cupy as cp  # optional dependency: CuPy only where a launch happens
    for name, x in (("query", q), ("key", k), ("value", v)):
        if x.dtype != np.float16:
            raise UnsupportedError(f"attention: {name} dtype {x.dtype}; expected float16")
    reason = check_shapes(q.shape, k.shape, v.shape)
    if reason:
        raise UnsupportedError(f"attention: {reason}")
    if out is not None:
        _check_out(out, q.shape)
    else:
        out_dtype = np.dtype(out_dtype or np.float16)
        if out_dtype not in _OUT:
            raise UnsupportedError(f"attention: out dtype {out_dtype}; valid: float16, float32")
        out = cp.empty(q.shape, out_dtype)
    tile = TILES_BY_NAME[tile] if isinstance(tile, str) else tile
    d, sq, sk = q.shape[-1], q.shape[-2], k.shape[-2]
    if out.size == 0:
        return out
    if sk == 0:            # softmax over no keys, then a product over no rows: zeros
        out[...] = 0
        return out
    (q4, qs), (k4, ks), (v4, vs) = (_as_nhsd(cp, x) for x in (q, k, v))
    o4 = out if out.ndim == 4 else out.reshape(q4.shape)
    os_ = tuple(st // out.itemsize for st in o4.strides[:3])
    n, heads = q4.shape[:2]
    smem = tile.smem_bytes(d)
    kern = get_function(SOURCE, tile.expression(d, out.dtype), name_expressions=_expressions(d),
                        smem_bytes=smem)
    grid = (n * heads, -(-sq // tile.block_m))
    args = (q4, k4, v4, o4, i32(heads), i32(sq), i32(sk)) + tuple(
        np.int64(st) for st in qs + ks + vs + os_) + (f32(scale * math.log2(math.e)),)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tile.threads,), args, shared_mem=smem)
    return out


def _expressions(head_dim):
    """Every tile and output type of one head dim: one NVRTC compile serves them all
    (the builder times every tile)."""
    return tuple(t.expression(head_dim, od) for t in TILES for od in _OUT)


def compile_all(head_dims=HEAD_DIMS):
    """Compile every instantiation (precompile, tests)."""
    for d in head_dims:
        for t in TILES:
            for od in _OUT:
                get_function(SOURCE, t.expression(d, od), name_expressions=_expressions(d),
                             smem_bytes=t.smem_bytes(d))


# Not precompiled (no tiles listed): only transformer builds use it, and compile_all
# builds one head dim per NVRTC call on first use.
FAMILY = KernelFamily(SOURCE, launch=(attention,), compile=compile_all)
