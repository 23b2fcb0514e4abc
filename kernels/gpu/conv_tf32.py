"""FP32 convolution on tensor cores (kernels/cuda/conv_tf32.cu): 3xTF32 or plain TF32.

Layouts as the FP16 implicit GEMM (conv_tc.py): activations NHWC float32 with
C % 4 == 0 (``conv_tc.pad_channels(x, 4)`` pads RGB 3 -> 4), weights packed
once as KRSC float32 by ``pack_weight_krsc_f32``, output NHWC float32 or
float16, optionally into a wider buffer at a channel offset (concat elision).

``precise=True`` (default) runs the error-compensated "3xTF32" product
(CUTLASS's fast-accurate FP32 GEMM): each operand is split into a TF32 "big"
part and a TF32 "small" remainder and three MMAs accumulate
small*big + big*small + big*big, which keeps FP32-class accuracy (rel L2 ~1e-6
on N(0, 1) data). ``precise=False`` is one TF32 MMA (~1e-3 relative error per
product): only for engines built with the TF32 flag.

``tf32_round`` / ``split_3xtf32`` are the NumPy models of the kernel's operand
rounding (``cvt.rna.tf32.f32``), for tests and error estimates.

No cuBLAS, no host sync: every launch can be captured into a CUDA graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import conv_tc
from .compile import get_function
from .errors import UnsupportedError

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

    @property
    def threads(self) -> int:
        return self.wm * self.wn * 32

    @property
    def smem_bytes(self) -> int:
        pipe = self.stages * (self.bm + self.bn) * (self.bk + 4) * 4
        epi = self.bm * (self.bn + 8) * 4          # the staged epilogue reuses the ring
        return max(pipe, epi)

    def name_expression(self, precise: bool, out_f32: bool) -> str:
        return (f"conv_tf32<{self.bm},{self.bn},{self.bk},{self.wm},{self.wn},{self.stages},"
                f"{int(bool(precise))},{int(bool(out_f32))}>")


# Registers per thread, 3xTF32 / TF32 (nvcc 13.0 -arch=sm_90 -Xptxas -v; no stack, no
# spills; float and half output alike), dynamic shared memory, and why each tile:
TACTICS = (
    # 220 / 195 regs, 108 KiB: 8 warps of 64x32, 1 CTA/SM; the big 3x3 / 1x1 layers
    Tf32Tactic("tf32_128x128x32_w2x4_s3", 128, 128, 32, 2, 4, 3),
    # 230 / 221 regs, 108 KiB: 4 warps of 64x32, 2 CTAs/SM; K = 64 layers
    Tf32Tactic("tf32_128x64x32_w2x2_s4", 128, 64, 32, 2, 2, 4),
    # 160 / 128 regs, 72 KiB: 4 warps of 32x32, 3 CTAs/SM; small M (late stages, FC)
    Tf32Tactic("tf32_64x64x32_w2x2_s4", 64, 64, 32, 2, 2, 4),
    # 202 / 176 regs, 80 KiB: a 4-deep ring of shorter k-tiles; short reductions (C = 64)
    Tf32Tactic("tf32_128x128x16_w2x4_s4", 128, 128, 16, 2, 4, 4),
)
TACTICS_BY_NAME = {t.name: t for t in TACTICS}
# the fully-connected head: M is the batch, so the small tiles
FC_TACTICS = (TACTICS_BY_NAME["tf32_64x64x32_w2x2_s4"], TACTICS_BY_NAME["tf32_128x64x32_w2x2_s4"])


def tf32_round(x):
    """float32 -> the TF32 value ``cvt.rna.tf32.f32`` gives (10 mantissa bits, ties away)."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    # rounding the magnitude half away from zero = add half an ulp of TF32, truncate
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def split_3xtf32(x):
    """(big, small) with x = big + small + O(2**-22 |x|), both TF32 values."""
    x = np.asarray(x, np.float32)
    big = tf32_round(x)
    return big, tf32_round(x - big)


def pack_weight_krsc_f32(w, layout="KCRS", c_pad_to=C_ALIGN):
    """Weights -> contiguous float32 [K, R, S, Cp], Cp = C rounded up to ``c_pad_to``.

    ``layout``: "KCRS" (TensorRT / PyTorch), "RSCK" (TensorFlow HWIO) or "KRSC".
    Accepts NumPy or CuPy; returns CuPy.
    """
    if c_pad_to < 1 or c_pad_to % C_ALIGN:
        raise UnsupportedError(f"c_pad_to={c_pad_to}; expected a positive multiple of {C_ALIGN} "
                               f"(the kernel reads channels 4 at a time)")
    return conv_tc.pack_weight_krsc(w, layout, c_pad_to=c_pad_to, dtype=np.float32)


def _tactic(tactic):
    if isinstance(tactic, str):
        try:
            return TACTICS_BY_NAME[tactic]
        except KeyError:
            raise UnsupportedError(f"tactic {tactic!r}; valid: {', '.join(TACTICS_BY_NAME)}") from None
    if not isinstance(tactic, Tf32Tactic):
        raise UnsupportedError(f"tactic {tactic!r} is not a conv_tf32 tactic; valid: "
                               f"{', '.join(TACTICS_BY_NAME)}")
    return tactic


def _check_operands(x, w_krsc):
    """The conv_tf32-specific layout checks, made before any device allocation."""
    if x.ndim == 4 and x.shape[3] % C_ALIGN:
        raise UnsupportedError(f"C = {x.shape[3]} is not a multiple of {C_ALIGN}; pad channels "
                               f"(conv_tc.pad_channels(x, 4), pack_weight_krsc_f32)")
    if x.ndim == 4 and w_krsc.ndim == 4 and w_krsc.shape[3] != x.shape[3]:
        raise UnsupportedError(f"weights {w_krsc.shape}; expected [K, R, S, {x.shape[3]}] "
                               f"(x has {x.shape[3]} channels)")


def conv2d_tf32(x, w_krsc, *, precise=True, stride=1, padding=0, dilation=1, out_hw=None,
                scale=None, bias=None, residual=None, act=None, alpha=0.0, beta=0.0,
                out=None, out_dtype=np.float32, out_channel_offset=0,
                tactic=TACTICS[0], stream=None):
    """out = act((conv(x, w) * scale + bias) + residual), FP32 on tensor cores, one launch.

    x:        cupy float32 [N, H, W, C], contiguous, C % 4 == 0
    w_krsc:   cupy float32 [K, R, S, C] (``pack_weight_krsc_f32``)
    precise:  True: 3xTF32 (FP32 accuracy); False: plain TF32 (the TF32 flag)
    The other arguments are those of ``conv_tc.conv2d_igemm``: stride/dilation
    int or (h, w); padding int or (top, left), bottom/right implied by
    ``out_hw``; scale/bias float32 [K] or None; residual [N, P, Q, K] of the
    output dtype; act by name or code; ``out`` / ``out_channel_offset`` for a
    concat buffer; out_dtype float32 (default) or float16; a Tf32Tactic or its
    name. Returns ``out``.
    """
    tactic = _tactic(tactic)
    if not isinstance(precise, (bool, np.bool_)):
        raise UnsupportedError(f"precise={precise!r}; expected True (3xTF32) or False (TF32)")
    _check_operands(x, w_krsc)
    g = conv_tc._setup(x, w_krsc, stride, padding, dilation, out_hw, out, out_dtype,
                       out_channel_offset, residual, scale, bias, in_dtype=np.float32)
    # cp.async copies and the epilogue's vector stores move 16 bytes at a time
    bufs = {"x": x, "w_krsc": w_krsc, "out": g.out, "residual": residual}
    odd = [k for k, a in bufs.items() if a is not None and a.data.ptr % 16]
    if odd:
        raise UnsupportedError(f"{', '.join(odd)} not 16-byte aligned; expected arrays that start "
                               f"on a 16-byte boundary (a fresh allocation, or a view at such an offset)")
    import cupy as cp
    kern = _kernel(tactic, bool(precise), g.out_f32)
    grid = (-(-g.M // tactic.bm) * -(-g.K // tactic.bn),)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tactic.threads,), g.args(act, alpha, beta), shared_mem=tactic.smem_bytes)
    return g.out


_configured = set()


def _kernel(tactic: Tf32Tactic, precise: bool, out_f32: bool):
    import cupy as cp
    name = tactic.name_expression(precise, out_f32)
    # both output types in one module: one NVRTC run per (tile, precision)
    names = (tactic.name_expression(precise, False), tactic.name_expression(precise, True))
    fn = get_function(SOURCE, name, name_expressions=names)
    key = (name, cp.cuda.Device().id)
    if key not in _configured:
        if tactic.smem_bytes > 48 * 1024:
            fn.max_dynamic_shared_size_bytes = tactic.smem_bytes
        _configured.add(key)
    return fn


def compile_all(tactics=TACTICS, precise=(True, False)):
    """Compile every (tile, precision) now (build time rather than first use)."""
    for t in tactics:
        for p in precise:
            _kernel(_tactic(t), p, False)
            _kernel(_tactic(t), p, True)
