"""FP32 convolution on tensor cores (kernels/cuda/conv_tf32.cu): 3xTF32 or plain TF32.

Layouts as the FP16 implicit GEMM (conv_igemm.py): activations NHWC float32 with
C % 4 == 0 (``conv_igemm.pad_channels(x, 4)`` pads RGB 3 -> 4), weights packed
once as KRSC float32 by ``pack_weight_krsc_f32``, output NHWC float32 or
float16, optionally into a wider buffer at a channel offset (concat elision).

``precise=True`` (default) runs the error-compensated "3xTF32" product
(CUTLASS's fast-accurate FP32 GEMM): each operand is split into a TF32 "big"
part and a TF32 "small" remainder and three MMAs accumulate
small*big + big*small + big*big. The tensor cores' own FP32 accumulation
truncates (``mma_tf32_model``), so the 3xTF32 tiles "promote": every ``promote``
k8 steps the MMA sum goes into the FP32 accumulator with an ordinary FADD
(conv_tf32.cu's header), which keeps FP32-class accuracy (rel L2 ~1.5e-6 on a
4608-long N(0, 1) reduction; 3e-5 without promotion). ``precise=False`` is one
TF32 MMA (~1e-3 relative error per product): only for engines built with the
TF32 flag. Each tile is built for one precision: ``PRECISE_TACTICS`` (names
``3xtf32_...``) and ``TF32_TACTICS`` (``tf32_...``).

``tf32_round`` / ``split_3xtf32`` / ``mma_tf32_model`` / ``gemm_3xtf32_model``
are the NumPy models of the kernel's rounding (``cvt.rna.tf32.f32``, the
truncating MMA accumulation), for tests and error estimates.

No cuBLAS, no host sync: every launch can be captured into a CUDA graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import conv_igemm
from .compile import get_function
from .errors import UnsupportedError
from .family import KernelFamily, resolve_tactic

SOURCE = "conv_tf32.cu"
C_ALIGN = 4            # channels per 16-byte cp.async chunk of float32


@dataclass(frozen=True)
class Tf32Tactic:
    """One tile configuration of conv_tf32 (plain data, as the builder stores it)."""
    name: str
    bm: int
    bn: int
    bk: int          # floats per k-tile
    wm: int          # warps along M
    wn: int          # warps along N (output channels)
    stages: int      # cp.async ring depth
    promote: int = 0  # 3xTF32 tiles: k8 steps per promotion window; 0: a plain TF32 tile

    @property
    def precise(self) -> bool:
        """3xTF32 (promoting) tile, else plain TF32: each tile is built for one."""
        return self.promote > 0

    @property
    def threads(self) -> int:
        return self.wm * self.wn * 32

    @property
    def smem_bytes(self) -> int:
        pipe = self.stages * (self.bm + self.bn) * (self.bk + 4) * 4
        epi = self.bm * (self.bn + 8) * 4          # the staged epilogue reuses the ring
        return max(pipe, epi)

    def name_expression(self, out_f32: bool) -> str:
        return (f"conv_tf32<{self.bm},{self.bn},{self.bk},{self.wm},{self.wn},{self.stages},"
                f"{int(self.precise)},{self.promote},{int(bool(out_f32))}>")


def _tile(bm, bn, bk, wm, wn, stages, promote=0):
    base = f"{bm}x{bn}x{bk}_w{wm}x{wn}_s{stages}"
    name = f"3xtf32_{base}_p{promote}" if promote else f"tf32_{base}"
    return Tf32Tactic(name, bm, bn, bk, wm, wn, stages, promote)


# Registers per thread (nvcc 13.0 -arch=sm_90 -Xptxas -v; no stack, no spills; float
# and half output alike), dynamic shared memory, and why each tile.
# 3xTF32: promotion needs a second accumulator set, so only 32 accumulators per
# thread (32x32 warp tiles) fit. 128x128 tiles do not: 8 warps of 64x32 use 255
# registers and spill 56 bytes; 16 warps of 32x32 are capped at 128 and spill 416.
# CTAs/SM below are register-bound (64K registers per SM): 8 warps per SM for all.
PRECISE_TACTICS = (
    # 207 regs, 108 KiB: 8 warps of 32x32, 1 CTA/SM; the big 3x3 / 1x1 layers
    _tile(128, 64, 32, 4, 2, 4, promote=2),
    # 205 regs, 108 KiB: 8 warps of 32x32, 1 CTA/SM; wide K, smaller M (late stages)
    _tile(64, 128, 32, 2, 4, 4, promote=2),
    # 213 regs, 72 KiB: 4 warps of 32x32, 2 CTAs/SM; small M (late stages, FC)
    _tile(64, 64, 32, 2, 2, 4, promote=2),
    # 186 regs, 108 KiB: one promotion per k-tile (half the FADDs; model 2.4e-6 at 4608)
    _tile(128, 64, 32, 4, 2, 4, promote=4),
)
TF32_TACTICS = (
    # 195 regs, 108 KiB: 8 warps of 64x32, 1 CTA/SM; the big 3x3 / 1x1 layers
    _tile(128, 128, 32, 2, 4, 3),
    # 221 regs, 108 KiB: 4 warps of 64x32, 2 CTAs/SM; K = 64 layers
    _tile(128, 64, 32, 2, 2, 4),
    # 128 regs, 72 KiB: 4 warps of 32x32, 3 CTAs/SM; small M (late stages, FC)
    _tile(64, 64, 32, 2, 2, 4),
    # 176 regs, 80 KiB: a 4-deep ring of shorter k-tiles; short reductions (C = 64)
    _tile(128, 128, 16, 2, 4, 4),
)
TACTICS = PRECISE_TACTICS + TF32_TACTICS
TACTICS_BY_NAME = {t.name: t for t in TACTICS}
# the fully-connected head: M is the batch, so the small tiles
FC_TACTICS = tuple(TACTICS_BY_NAME[n] for n in (
    "3xtf32_64x64x32_w2x2_s4_p2", "3xtf32_128x64x32_w4x2_s4_p2",
    "tf32_64x64x32_w2x2_s4", "tf32_128x64x32_w2x2_s4"))


def tactics_for(precise, tactics=TACTICS):
    """The tiles of one precision (3xTF32 if ``precise`` else plain TF32), in order."""
    return tuple(t for t in tactics if t.precise == bool(precise))


def tf32_round(x):
    """float32 -> the TF32 value ``cvt.rna.tf32.f32`` gives (10 mantissa bits, ties away)."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    # rounding the magnitude half away from zero = add half an ulp of TF32, truncate
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def split_3xtf32(x, inf_in_small=False):
    """(big, small) with x = big + small + O(2**-22 |x|), both TF32 values. With
    ``inf_in_small`` (the kernel's A operand, the activations) an infinite x is split as
    big 0, small x: the products 0 * b_big, 0 * b_small and inf * b_big then give FP32's
    result where inf - inf and inf * b_small would make NaN."""
    x = np.asarray(x, np.float32)
    big = tf32_round(x)
    with np.errstate(invalid="ignore"):
        small = tf32_round(x - big)
    if inf_in_small:
        inf = np.isinf(big)
        big, small = np.where(inf, np.float32(0), big), np.where(inf, big, small)
    return big, small


# Bits the tensor cores keep below the largest addend of an mma's sum. IEEE FP32
# would be 24 (with round to nearest); 21, truncated, reproduces the H200
# measurement (3xTF32, 4608-long N(0, 1) reduction, no promotion: 2.8e-5..3.0e-5
# measured, 3.0e-5 modelled; with 24 the model says 3.8e-6).
MMA_ALIGN_BITS = 21


def _truncate(v, exp, bits):
    """v rounded towards zero to a multiple of 2**(exp - bits) (exp from np.frexp)."""
    q = np.ldexp(1.0, exp - bits)
    return np.trunc(v / q) * q


def mma_tf32_model(c, a, b, align_bits=MMA_ALIGN_BITS):
    """One m16n8k8 TF32 mma as the tensor cores round it: d = c + a @ b.

    c: float64 [M, N] holding FP32 values; a [M, 8], b [8, N]: TF32 values. The 8
    products are exact (11 x 11 significant bits); each addend, c included, is
    truncated towards zero to ``align_bits`` bits below the largest one's leading
    bit, the sum is exact, then truncated to FP32's 24 bits (not rounded).
    """
    p = np.asarray(a, np.float64)[:, None, :] * np.asarray(b, np.float64).T[None, :, :]
    addends = np.concatenate([np.asarray(c, np.float64)[..., None], p], axis=2)
    _, exp = np.frexp(np.abs(addends).max(axis=2))
    s = _truncate(addends, exp[..., None], align_bits).sum(axis=2)
    _, exp = np.frexp(s)
    return _truncate(s, exp, 24)


def gemm_3xtf32_model(a, b, promote=0, align_bits=MMA_ALIGN_BITS):
    """a [M, Kr] @ b [Kr, N] (float32, Kr % 8 == 0) as the 3xTF32 kernel computes it:
    per k8 step small*big, big*small, big*big through ``mma_tf32_model``, into the
    accumulator directly (promote=0) or into a window sum that every ``promote``
    steps is added to the FP32 accumulator with round-to-nearest. ``a`` is split as the
    kernel splits the activations (an infinite element goes into its small part), ``b``
    as the weights. Returns float64."""
    (ab, as_), (bb, bs) = split_3xtf32(a, inf_in_small=True), split_3xtf32(b)
    acc = np.zeros((a.shape[0], b.shape[1]))
    part = np.zeros_like(acc)
    for k8 in range(a.shape[1] // 8):
        ks = slice(8 * k8, 8 * k8 + 8)
        c = part if promote else acc
        for x, y in ((as_, bb), (ab, bs), (ab, bb)):
            c = mma_tf32_model(c, x[:, ks], y[ks], align_bits)
        if not promote:
            acc = c
        elif (k8 + 1) % promote:
            part = c
        else:
            acc = (acc.astype(np.float32) + c.astype(np.float32)).astype(np.float64)
            part = np.zeros_like(acc)
    if promote and (a.shape[1] // 8) % promote:
        acc = (acc.astype(np.float32) + part.astype(np.float32)).astype(np.float64)
    return acc


def pack_weight_krsc_f32(w, layout="KCRS", c_pad_to=C_ALIGN):
    """Weights -> contiguous float32 [K, R, S, Cp], Cp = C rounded up to ``c_pad_to``.

    ``layout``: "KCRS" (TensorRT / PyTorch), "RSCK" (TensorFlow HWIO) or "KRSC".
    Accepts NumPy or CuPy; returns CuPy.
    """
    if c_pad_to < 1 or c_pad_to % C_ALIGN:
        raise UnsupportedError(f"c_pad_to={c_pad_to}; expected a positive multiple of {C_ALIGN} "
                               f"(the kernel reads channels 4 at a time)")
    return conv_igemm.pack_weight_krsc(w, layout, c_pad_to=c_pad_to, dtype=np.float32)


def _tactic(tactic, precise=None):
    """A Tf32Tactic from itself or its name; with ``precise``, of that precision."""
    tactic = resolve_tactic(tactic, TACTICS_BY_NAME, Tf32Tactic, "conv_tf32")
    if precise is not None and tactic.precise != bool(precise):
        kind = "3xTF32" if precise else "TF32"
        raise UnsupportedError(
            f"tactic {tactic.name} is a {'3xTF32' if tactic.precise else 'TF32'} tile, precise="
            f"{bool(precise)} asks for {kind}; valid: "
            f"{', '.join(t.name for t in tactics_for(precise))}")
    return tactic


def _check_operands(x, w_krsc):
    """The conv_tf32-specific layout checks, made before any device allocation."""
    if x.ndim == 4 and x.shape[3] % C_ALIGN:
        raise UnsupportedError(f"C = {x.shape[3]} is not a multiple of {C_ALIGN}; pad channels "
                               f"(conv_igemm.pad_channels(x, 4), pack_weight_krsc_f32)")
    if x.ndim == 4 and w_krsc.ndim == 4 and w_krsc.shape[3] != x.shape[3]:
        raise UnsupportedError(f"weights {w_krsc.shape}; expected [K, R, S, {x.shape[3]}] "
                               f"(x has {x.shape[3]} channels)")


def conv2d_tf32(x, w_krsc, *, precise=True, stride=1, padding=0, dilation=1, out_hw=None,
                scale=None, bias=None, residual=None, act=None, alpha=0.0, beta=0.0,
                out=None, out_dtype=np.float32, out_channel_offset=0,
                tactic=None, stream=None):
    """out = act((conv(x, w) * scale + bias) + residual), FP32 on tensor cores, one launch.

    x:        cupy float32 [N, H, W, C], contiguous, C % 4 == 0
    w_krsc:   cupy float32 [K, R, S, C] (``pack_weight_krsc_f32``)
    precise:  True: 3xTF32 (FP32 accuracy); False: plain TF32 (the TF32 flag)
    The other arguments are those of ``conv_igemm.conv2d_igemm``: stride/dilation
    int or (h, w); padding int or (top, left), bottom/right implied by
    ``out_hw``; scale/bias float32 [K] or None; residual [N, P, Q, K] of the
    output dtype; act by name or code; ``out`` / ``out_channel_offset`` for a
    concat buffer; out_dtype float32 (default) or float16; a Tf32Tactic or its
    name, of the precision asked for (None: that precision's first tile).
    Returns ``out``.
    """
    if not isinstance(precise, (bool, np.bool_)):
        raise UnsupportedError(f"precise={precise!r}; expected True (3xTF32) or False (TF32)")
    tactic = _tactic(tactic_default(precise) if tactic is None else tactic, precise)
    _check_operands(x, w_krsc)
    g = conv_igemm._setup(x, w_krsc, stride, padding, dilation, out_hw, out, out_dtype,
                       out_channel_offset, residual, scale, bias, in_dtype=np.float32)
    # cp.async copies and the epilogue's vector stores move 16 bytes at a time
    bufs = {"x": x, "w_krsc": w_krsc, "out": g.out, "residual": residual}
    odd = [k for k, a in bufs.items() if a is not None and a.data.ptr % 16]
    if odd:
        raise UnsupportedError(f"{', '.join(odd)} not 16-byte aligned; expected arrays that start "
                               f"on a 16-byte boundary (a fresh allocation, or a view at such an offset)")
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    kern = _kernel(tactic, g.out_f32)
    grid = (-(-g.M // tactic.bm) * -(-g.K // tactic.bn),)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tactic.threads,), g.args(act, alpha, beta), shared_mem=tactic.smem_bytes)
    return g.out


def tactic_default(precise):
    """The tile conv2d_tf32 runs when none is named."""
    return tactics_for(precise)[0]


def _kernel(tactic: Tf32Tactic, out_f32: bool):
    name = tactic.name_expression(out_f32)
    # both output types in one module: one NVRTC run per tile
    names = (tactic.name_expression(False), tactic.name_expression(True))
    return get_function(SOURCE, name, name_expressions=names, smem_bytes=tactic.smem_bytes)


def compile_all(tactics=TACTICS, precise=(True, False)):
    """Compile every tile (of the precisions in ``precise``) now, at build time
    rather than first use."""
    for t in tactics:
        t = _tactic(t)
        if t.precise in precise:
            _kernel(t, False)
            _kernel(t, True)


FAMILY = KernelFamily(SOURCE, compile=compile_all, launch=(conv2d_tf32,), tiles=TACTICS)
