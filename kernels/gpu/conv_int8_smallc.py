"""INT8 small-C (stem) convolution (kernels/cuda/conv_int8_smallc.cu).

C <= 4 input channels (RGB padded 3 -> 4): four taps x four channels per 16-byte chunk of
the reduction, taps flattened over (r, s): a 7x7 reduction is 16 * ceil(49 / 4) = 208
bytes instead of 784 with C padded to 16. Bit-identical to ``conv_int8.conv2d_int8`` on
the input padded to 16 channels (the padding adds exact zeros to exact int32 sums); the
same INT8 epilogue (int8_epilogue.cuh) and launch arguments. Not precompiled (compiled
on first use); the engine registers it unless CUPYRT_INT8_SMALLC=0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..quantize import quantize_weights
from ._launch import to_krsc
from .compile import get_function
from .conv_igemm import _pair
from .conv_int8 import OUT_CODES, Int8Tactic, _int8_launch_args, int8_geometry
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "conv_int8_smallc.cu"
SMALLC_STORED_C = (4, 8, 16)


@dataclass(frozen=True)
class Int8SmallCTactic(Int8Tactic):
    """One tile configuration of conv_int8_smallc (same shared-memory budget)."""
    kind: str = "int8_smallc"

    def name_expression(self, out_dtype) -> str:
        code = OUT_CODES[np.dtype(out_dtype)]
        return (f"conv_int8_smallc<{self.bm},{self.bn},{self.bk},{self.wm},{self.wn},"
                f"{self.stages},{code},{self.minb}>")


# BK = 64: a 7x7 reduction (208 bytes) is four k-tiles; K = 64 (the stem) is one N tile.
# ptxas (nvcc 13.0, sm_90, int8 out; f32 / f16 out alike): 168 / 120 / 118 registers, no
# spills, no stack (tests/kernels/test_cuda_compile.py keeps it so).
SMALLC_TACTICS = (
    Int8SmallCTactic("i8sc_128x64x64_w2x2_s4", 128, 64, 64, 2, 2, 4),
    Int8SmallCTactic("i8sc_128x64x64_w4x2_s3", 128, 64, 64, 4, 2, 3),
    Int8SmallCTactic("i8sc_64x64x64_w2x2_s4", 64, 64, 64, 2, 2, 4),
)
SMALLC_TACTICS_BY_NAME = {t.name: t for t in SMALLC_TACTICS}


def _smallc_tactic(tactic):
    if isinstance(tactic, str):
        try:
            return SMALLC_TACTICS_BY_NAME[tactic]
        except KeyError:
            raise UnsupportedError(f"INT8 small-C tactic {tactic!r}; valid: "
                                   f"{', '.join(SMALLC_TACTICS_BY_NAME)}") from None
    if not isinstance(tactic, Int8SmallCTactic):
        raise UnsupportedError(f"tactic {tactic!r}; expected an Int8SmallCTactic or one of "
                               f"{', '.join(SMALLC_TACTICS_BY_NAME)}")
    return tactic


def _smallc_kernel(tactic: Int8SmallCTactic, out_dtype):
    name = tactic.name_expression(out_dtype)
    return get_function(SOURCE, name, name_expressions=(name,),
                        smem_bytes=tactic.smem_bytes)


def compile_smallc(tactics=SMALLC_TACTICS, out_dtypes=(np.int8,)):
    """Compile the small-C tactics now (build time rather than first use)."""
    for t in tactics:
        for dt in out_dtypes:
            _smallc_kernel(t, dt)


def smallc_taps(R, S):
    """Packed taps of an R x S filter: R*S rounded up to a whole 16-byte chunk (4 taps)."""
    return -(-R * S // 4) * 4


def pack_weight_int8_smallc(w, layout="KCRS", host=False):
    """Float weights (C <= 4) -> (int8 [K, T, 4], float32 s_w [K]) for conv2d_int8_smallc.

    Quantised as ``pack_weight_int8_krsc`` (``kernels.quantize.quantize_weights``, per
    output channel). packed[k, t, c] = q[k, t // S, t % S, c] for taps t < R*S and
    channels c < C, else 0; T = ``smallc_taps(R, S)``. Row k is the kernel's reduction
    order (16 * T / 4 bytes, a whole number of 16-byte chunks). ``layout``: "KCRS",
    "RSCK" or "KRSC". ``host=True`` returns NumPy arrays (no device).
    """
    w = np.asarray(w.get() if hasattr(w, "get") else w, dtype=np.float32)
    w = np.ascontiguousarray(to_krsc(w, layout))
    K, R, S, C = w.shape
    if not 0 < C <= 4:
        raise UnsupportedError(f"small-C convolution takes 1 to 4 input channels; got {C} "
                               f"(use pack_weight_int8_krsc + conv2d_int8)")
    q, s = quantize_weights(w)                                # per axis 0 = K
    out = np.zeros((K, smallc_taps(R, S), 4), np.int8)
    out[:, :R * S, :C] = q.reshape(K, R * S, C)
    s = s.astype(np.float32)
    if host:
        return out, s
    import cupy as cp  # optional dependency: only where the weights go to the device
    return cp.asarray(out), cp.asarray(s)


def conv2d_int8_smallc(x_q, w_q, s_in, s_w, *, kernel_size, stride=1, padding=0, dilation=1,
                       out_hw=None, bias=None, residual=None, residual_scale=None, act=None,
                       alpha=0.0, beta=0.0, s_out=None, out_dtype=np.int8, out=None,
                       out_channel_offset=0, tactic=SMALLC_TACTICS[0], stream=None):
    """INT8 convolution for C <= 4 input channels, the reduction packed four taps to a
    16-byte chunk; one launch, the fused INT8 epilogue of ``conv2d_int8``, bit for bit.

    Same arguments and result as ``conv2d_int8`` except:
      x_q:         int8 [N, H, W, Cs] codes, Cs in (4, 8, 16) stored channels (the true C
                   <= 4 padded with zeros: ``quantize_nchw_to_nhwc(x, s, c_pad_to=4)``);
                   channels 0..3 are read
      w_q:         ``pack_weight_int8_smallc`` output [K, T, 4]
      kernel_size: (R, S) of the filter (int or pair; T = ``smallc_taps(R, S)``)
    """
    import cupy as cp  # optional dependency: only where a launch happens
    tactic = _smallc_tactic(tactic)
    if x_q.dtype != np.int8 or w_q.dtype != np.int8:
        raise UnsupportedError(f"x {x_q.dtype}, w {w_q.dtype}; the INT8 conv takes int8 codes")
    if x_q.ndim != 4 or not x_q.flags.c_contiguous:
        raise UnsupportedError(f"x {x_q.shape}; expected contiguous NHWC rank 4")
    C = x_q.shape[3]
    if C not in SMALLC_STORED_C:
        raise UnsupportedError(f"x has {C} stored channels; the small-C kernel reads x with "
                               f"{', '.join(map(str, SMALLC_STORED_C))} (pad C <= 4 with "
                               f"quantize_nchw_to_nhwc(c_pad_to=4))")
    R, S = _pair(kernel_size, "kernel_size")
    if w_q.ndim != 3 or w_q.shape[1:] != (smallc_taps(R, S), 4) or not w_q.flags.c_contiguous:
        raise UnsupportedError(f"weights {w_q.shape}; expected contiguous [K, {smallc_taps(R, S)}, 4] "
                               f"for a {R}x{S} filter (pack_weight_int8_smallc)")
    g = int8_geometry(x_q, w_q.shape[0], R, S, stride, padding, dilation, out_hw, out,
                      out_dtype, s_out, residual, residual_scale)
    if x_q.data.ptr % 4 or w_q.data.ptr % 16:
        # one tap = a 4-byte cp.async from x, a weight chunk a 16-byte one
        raise UnsupportedError(f"x at {x_q.data.ptr:#x}, weights at {w_q.data.ptr:#x}: the "
                               f"gather needs x 4-byte and the weights 16-byte aligned")
    out, args = _int8_launch_args(x_q, w_q, g, s_in, s_w, bias, s_out, out, out_channel_offset,
                                  residual, residual_scale, act, alpha, beta)
    kern = _smallc_kernel(tactic, g["dt"])
    grid = (-(-(g["N"] * g["P"] * g["Q"]) // tactic.bm) * -(-g["K"] // tactic.bn),)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tactic.threads,), args, shared_mem=tactic.smem_bytes)
    return out


# INT8 builds precompile these with the other INT8 tiles (for the output types the stem's
# layer stores: int8 before an INT8 pooling layer, the usual case)
FAMILY = KernelFamily(SOURCE, compile=compile_smallc, launch=(conv2d_int8_smallc,),
                      int8_tiles=SMALLC_TACTICS)
