"""Batched GEMM for the MatrixMultiply layer (kernels/cuda/matmul.cu), CUDA-graph safe.

    C[b] = act(alpha * op(A[b]) @ op(B[b]) + bias + residual[b])

``op`` is TensorRT's MatrixOperation NONE or TRANSPOSE (by name). Batch dims
broadcast as numpy.matmul's do, with equal ranks (a rank-2 operand is taken
as one matrix for every batch element). FP16 operands run on the tensor cores
(``MatmulTile``: one tile shape), FP32 operands on the FP32 SIMT kernel
(``SIMT``); the output is float16 or float32 either way.

How the batch reaches the kernel (a grid axis with one stride per operand):

    A (n, s, k) @ W (1, k, n_out), A contiguous, op NONE
        -> one (n*s, k) @ (k, n_out) GEMM: the tall GEMM fills the GPU
    equal batches, contiguous operands  -> stride = rows * cols
    an operand whose batch dims are all 1 -> stride 0
    anything else (mixed broadcast, non-contiguous) -> a contiguous copy first

No cuBLAS, no host synchronisation: every call is a fixed set of kernel
launches (and allocations from CuPy's pool), so it can be captured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .activation import act_code
from .compile import f32, get_function, i32
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "matmul.cu"
OPS = ("NONE", "TRANSPOSE")
MAX_BATCH = 65535           # grid.y


@dataclass(frozen=True)
class MatmulTile:
    """One tile configuration of gemm_f16 (plain data, as the builder stores it)."""
    name: str
    bm: int
    bn: int
    bk: int
    wm: int
    wn: int
    stages: int

    @property
    def threads(self) -> int:
        return self.wm * self.wn * 32

    def smem_bytes(self, a_kmajor: bool, b_kmajor: bool) -> int:
        a = self.bm * (self.bk + 8) if a_kmajor else self.bk * (self.bm + 8)
        b = self.bn * (self.bk + 8) if b_kmajor else self.bk * (self.bn + 8)
        return self.stages * (a + b) * 2

    def name_expression(self, a_kmajor, b_kmajor, aligned, out_f32) -> str:
        return (f"gemm_f16<{self.bm},{self.bn},{self.bk},{self.wm},{self.wn},{self.stages},"
                f"{int(a_kmajor)},{int(b_kmajor)},{int(aligned)},{int(out_f32)}>")


TILES = (
    MatmulTile("mm_128x128x32_w2x4_s4", 128, 128, 32, 2, 4, 4),
    MatmulTile("mm_128x64x32_w2x2_s4", 128, 64, 32, 2, 2, 4),
    MatmulTile("mm_64x64x32_w2x2_s4", 64, 64, 32, 2, 2, 4),
)
TILES_BY_NAME = {t.name: t for t in TILES}
SIMT = "mm_simt_128x128x8"          # the FP32 kernel's one tile


def tile(name_or_tile):
    """A MatmulTile by name (or the tile itself), with the valid names on error."""
    if isinstance(name_or_tile, MatmulTile):
        return name_or_tile
    try:
        return TILES_BY_NAME[name_or_tile]
    except KeyError:
        raise UnsupportedError(f"matmul tile {name_or_tile!r}; valid: "
                               f"{', '.join(TILES_BY_NAME)}") from None


def _op(op, which):
    name = getattr(op, "name", op)
    if name not in OPS:
        raise UnsupportedError(f"{which} {op!r}; valid: {', '.join(OPS)} (VECTOR operands are "
                               f"not taken by this kernel)")
    return name == "TRANSPOSE"


def _dims(shape, transpose, left):
    """(outer, inner) of op(operand): (M, K) for A, (N, K) for B."""
    rows, cols = shape[-2], shape[-1]
    if transpose:
        rows, cols = cols, rows
    return (rows, cols) if left else (cols, rows)


def plan(a_shape, b_shape, op_a="NONE", op_b="NONE"):
    """Shapes of a batched matmul, checked: (batch shape, M, N, K). Pure shape
    arithmetic (no GPU), shared by the launcher and the engine tactics."""
    ta, tb = _op(op_a, "op_a"), _op(op_b, "op_b")
    a_shape, b_shape = tuple(a_shape), tuple(b_shape)
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise UnsupportedError(f"operands of shapes {a_shape} and {b_shape}; expected rank >= 2 "
                               f"(stacks of matrices)")
    if len(a_shape) != len(b_shape) and 2 not in (len(a_shape), len(b_shape)):
        raise UnsupportedError(f"operands of ranks {len(a_shape)} and {len(b_shape)}; expected "
                               f"equal ranks (or a rank-2 operand)")
    m, k = _dims(a_shape, ta, True)
    n, k2 = _dims(b_shape, tb, False)
    if k != k2:
        raise UnsupportedError(f"inner dims {k} and {k2} (shapes {a_shape} op {op_a!s}, "
                               f"{b_shape} op {op_b!s}); expected equal")
    ba, bb = a_shape[:-2], b_shape[:-2]
    width = max(len(ba), len(bb))
    ba, bb = (1,) * (width - len(ba)) + ba, (1,) * (width - len(bb)) + bb
    batch = []
    for x, y in zip(ba, bb):
        if x != y and 1 not in (x, y):
            raise UnsupportedError(f"batch dims {a_shape[:-2]} and {b_shape[:-2]} do not "
                                   f"broadcast")
        batch.append(max(x, y) if 0 not in (x, y) else 0)
    for v, what in ((m, "M"), (n, "N"), (k, "K")):
        if v >= 2**31:
            raise UnsupportedError(f"{what} = {v}; expected < 2**31")
    return tuple(batch), m, n, k


def _batched(cp, x, batch):
    """(array, batch stride in elements): stride 0 for an operand broadcast over
    the whole batch, else a contiguous stack of exactly ``batch`` matrices."""
    if math.prod(x.shape[:-2]) == 1:
        return cp.ascontiguousarray(x.reshape(x.shape[-2:])), 0
    full = batch + x.shape[-2:]
    if tuple(x.shape) != full:
        x = cp.broadcast_to(x.reshape((1,) * (len(full) - x.ndim) + x.shape), full)
    x = cp.ascontiguousarray(x)
    return x, x.shape[-2] * x.shape[-1]


def _residual_shape_ok(res_shape, out_shape):
    try:
        return np.broadcast_shapes(tuple(res_shape), out_shape) == out_shape
    except ValueError:
        return False


def launch_plan(a, b, op_a="NONE", op_b="NONE", bias=None, residual=None, out_dtype=None,
                xp=None):
    """Everything the kernels are called with, checked first (no device work
    before the last check, so bad arguments fail cleanly), then the operands
    as the kernel reads them: ``a2``/``b2`` stacks with batch strides ``sa``/
    ``sb`` (0: broadcast), ``m_run`` x ``n`` x ``k`` per batch element,
    ``nb_run`` batch elements. ``xp``: the array module (NumPy for the CPU
    tests' emulation of the kernels' indexing, ``emulate``)."""
    if xp is None:
        import cupy as xp  # optional dependency: CuPy only where a kernel is compiled or launched
    if a.dtype != b.dtype or a.dtype not in (np.float16, np.float32):
        raise UnsupportedError(f"operands {a.dtype} and {b.dtype}; expected both float16 "
                               f"(tensor cores) or both float32")
    out_dtype = np.dtype(out_dtype or a.dtype)
    if out_dtype not in (np.float16, np.float32):
        raise UnsupportedError(f"out dtype {out_dtype}; valid: float16, float32")
    ta, tb = _op(op_a, "op_a"), _op(op_b, "op_b")
    batch, m, n, k = plan(a.shape, b.shape, op_a, op_b)
    out_shape = batch + (m, n)
    if bias is not None and bias.size != n:
        raise UnsupportedError(f"bias of {bias.size} values; expected {n} (one per output column)")
    if residual is not None and not _residual_shape_ok(residual.shape, out_shape):
        raise UnsupportedError(f"residual of shape {tuple(residual.shape)} does not broadcast to "
                               f"the output {out_shape}")
    nb = math.prod(batch)
    # fold a batch of A against one B into a single tall GEMM (rows of A are
    # rows of C): the weight of a linear layer against (batch, seq, hidden)
    fold = (nb > 1 and not ta and math.prod(b.shape[:-2]) == 1 and a.flags.c_contiguous
            and math.prod(a.shape[:-2]) == nb)
    nb_run = 1 if fold else nb
    if nb_run > MAX_BATCH:
        raise UnsupportedError(f"{nb_run} batched matrices; this kernel takes at most {MAX_BATCH} "
                               f"(grid.y)")
    p = {"ta": ta, "tb": tb, "n": n, "k": k, "out_shape": out_shape, "out_dtype": out_dtype,
         "nb_run": nb_run, "m_run": nb * m if fold else m, "sc": m * n if nb_run > 1 else 0}
    if fold:
        p["a2"], p["sa"] = a.reshape(nb * m, k), 0
    else:
        p["a2"], p["sa"] = _batched(xp, a, batch)
    p["b2"], p["sb"] = _batched(xp, b, batch)
    p["lda"], p["ldb"] = p["a2"].shape[-1], p["b2"].shape[-1]
    p["bias"] = (xp.zeros(1, np.float32) if bias is None
                 else xp.ascontiguousarray(xp.asarray(bias).astype(np.float32, copy=False).reshape(-1)))
    p["res"] = (None if residual is None else xp.ascontiguousarray(
        xp.broadcast_to(residual, out_shape).astype(out_dtype, copy=False)))
    p["sr"] = p["sc"] if residual is not None else 0
    return p


def matmul(a, b, *, op_a="NONE", op_b="NONE", alpha=1.0, bias=None, residual=None, act=None,
           act_alpha=0.0, act_beta=0.0, out=None, out_dtype=None, tactic=TILES[0], stream=None):
    """act(alpha * op(a) @ op(b) + bias + residual), batched.

    a, b:      cupy arrays, both float16 (tensor cores; ``tactic`` a MatmulTile
               or its name) or both float32 (FP32 SIMT kernel; ``tactic`` ignored)
    op_a/op_b: "NONE" or "TRANSPOSE" (or MatrixOperation members)
    bias:      [N] (any float dtype) or None; residual: broadcastable to the
               output (cast to the output dtype), or None
    act:       activation name (TensorRT ActivationType), code or None
    out:       optional preallocated contiguous batch + (M, N) array (its dtype
               wins over ``out_dtype``)
    out_dtype: float16 or float32 (default: the inputs' dtype)
    Returns ``out`` (or a new contiguous array of shape batch + (M, N)).
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    code = act_code(act)
    t = tile(tactic) if a.dtype == np.float16 else None
    if out is not None:
        out_dtype = out.dtype
        if out_dtype not in (np.float16, np.float32):
            raise UnsupportedError(f"out dtype {out_dtype}; valid: float16, float32")
        batch, m, n, _ = plan(a.shape, b.shape, op_a, op_b)
        if tuple(out.shape) != batch + (m, n) or not out.flags.c_contiguous:
            raise UnsupportedError(f"out of shape {tuple(out.shape)} (contiguous="
                                   f"{out.flags.c_contiguous}); expected contiguous "
                                   f"{batch + (m, n)}")
    p = launch_plan(a, b, op_a, op_b, bias, residual, out_dtype, cp)
    if out is None:
        out = cp.empty(p["out_shape"], p["out_dtype"])
    if out.size == 0:
        return out
    a2, b2, n, k, m_run, nb_run = p["a2"], p["b2"], p["n"], p["k"], p["m_run"], p["nb_run"]
    lda, ldb, sa, sb, sc, sr = p["lda"], p["ldb"], p["sa"], p["sb"], p["sc"], p["sr"]
    r = p["res"] if p["res"] is not None else out
    flags = (f32(alpha), i32(bias is not None), i32(residual is not None), i32(code),
             f32(act_alpha), f32(act_beta))
    out_f32 = p["out_dtype"] == np.float32
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        if t is not None:
            a_kmajor, b_kmajor = not p["ta"], p["tb"]
            # 16-byte chunks need every stored row 16-byte aligned and the
            # contiguous extent a multiple of 8 (a chunk is all in or all out)
            aligned = (lda % 8 == 0 and ldb % 8 == 0 and sa % 8 == 0 and sb % 8 == 0
                       and a2.data.ptr % 16 == 0 and b2.data.ptr % 16 == 0)
            kern = _kernel_f16(t, a_kmajor, b_kmajor, aligned, out_f32)
            vec2 = n % 2 == 0 and out.data.ptr % 8 == 0 and r.data.ptr % 8 == 0
            grid = (-(-m_run // t.bm) * -(-n // t.bn), nb_run)
            kern(grid, (t.threads,),
                 (a2, b2, out, p["bias"], r, i32(m_run), i32(n), i32(k),
                  np.int64(lda), np.int64(ldb), np.int64(n), np.int64(n),
                  np.int64(sa), np.int64(sb), np.int64(sc), np.int64(sr)) + flags + (i32(vec2),),
                 shared_mem=t.smem_bytes(a_kmajor, b_kmajor))
        else:
            kern = _kernel_f32(out_f32)
            a_sm, a_sk, b_sk, b_sn = strides_f32(p)
            grid = (-(-m_run // 128) * -(-n // 128), nb_run)
            kern(grid, (256,),
                 (a2, b2, out, p["bias"], r, i32(m_run), i32(n), i32(k),
                  np.int64(a_sm), np.int64(a_sk), np.int64(b_sk), np.int64(b_sn),
                  np.int64(n), np.int64(n), np.int64(sa), np.int64(sb), np.int64(sc),
                  np.int64(sr)) + flags)
    return out


def strides_f32(p):
    """(a_sm, a_sk, b_sk, b_sn): element (m, k) of op(A) and (k, n) of op(B)
    through strides, as gemm_f32 reads them."""
    a_sm, a_sk = (1, p["lda"]) if p["ta"] else (p["lda"], 1)
    b_sk, b_sn = (1, p["ldb"]) if p["tb"] else (p["ldb"], 1)
    return a_sm, a_sk, b_sk, b_sn


def emulate(p, alpha=1.0, act=None):
    """NumPy model of the kernels' indexing over a ``launch_plan`` made with
    NumPy: batch element z reads A at a2.flat[z*sa + m*a_sm + k*a_sk] (and B,
    C alike). CPU tests check the launcher's folding and strides with it."""
    a_sm, a_sk, b_sk, b_sn = strides_f32(p)
    m, n, k = p["m_run"], p["n"], p["k"]
    fa, fb = p["a2"].reshape(-1).astype(np.float64), p["b2"].reshape(-1).astype(np.float64)
    out = np.empty(p["nb_run"] * m * n if p["nb_run"] > 1 else m * n)
    mi, ki, ni = np.arange(m)[:, None], np.arange(k), np.arange(n)
    for z in range(p["nb_run"]):
        am = fa[z * p["sa"] + mi * a_sm + ki[None, :] * a_sk]
        bm = fb[z * p["sb"] + ki[:, None] * b_sk + ni[None, :] * b_sn]
        c = alpha * am @ bm + p["bias"].astype(np.float64)[: n if p["bias"].size == n else 1]
        if p["res"] is not None:
            c = c + p["res"].reshape(-1)[z * p["sr"]: z * p["sr"] + m * n].reshape(m, n)
        if act == "RELU":
            c = np.maximum(c, 0)
        out[z * p["sc"]: z * p["sc"] + m * n] = c.reshape(-1)
    return out.reshape(p["out_shape"])


def _kernel_f16(t, a_kmajor, b_kmajor, aligned, out_f32):
    name = t.name_expression(a_kmajor, b_kmajor, aligned, out_f32)
    # both output types of one layout in one NVRTC run
    names = tuple(t.name_expression(a_kmajor, b_kmajor, aligned, o) for o in (False, True))
    return get_function(SOURCE, name, name_expressions=names,
                        smem_bytes=t.smem_bytes(a_kmajor, b_kmajor))


_F32_NAMES = ("gemm_f32<0>", "gemm_f32<1>")


def _kernel_f32(out_f32):
    return get_function(SOURCE, _F32_NAMES[int(out_f32)], name_expressions=_F32_NAMES)


def compile_all(tiles=TILES, layouts=((True, True), (True, False))):
    """Compile the tiles (aligned, both output types) for the given (A K-major,
    B K-major) layouts, and the FP32 kernel: build time rather than first use."""
    for t in tiles:
        for ak, bk in layouts:
            _kernel_f16(t, ak, bk, True, False)
    _kernel_f32(True)


FAMILY = KernelFamily(SOURCE, compile=compile_all, launch=(matmul,), tiles=TILES)
