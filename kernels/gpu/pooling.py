"""Pooling on NHWC (kernels/cuda/pool_softmax.cu): max/average windows and global average."""
from __future__ import annotations

import numpy as np

from ._launch import BLOCK, check_nhwc, grid_1d, templated
from .compile import i32
from .conv_tc import _pair, conv_out_size, prepare_output
from .errors import UnsupportedError

SOURCE = "pool_softmax.cu"
MODES = {"MAX": 0, "AVERAGE": 1, "AVG": 1}


def pool2d(x, mode, window, *, stride=None, padding=0, out_hw=None, exclude_padding=True,
           out=None, out_channel_offset=0):
    """Max or average pooling. x: [N, H, W, C] float16/float32 contiguous.

    mode: "MAX" or "AVERAGE"; window/stride: int or (h, w) (stride defaults to
    window); padding: (top, left), bottom/right implied by ``out_hw``;
    exclude_padding: average over in-bounds taps only (TensorRT's default).
    Returns [N, P, Q, C] (or writes ``out`` at ``out_channel_offset``).
    """
    check_nhwc(x, "pool2d")
    try:
        code = MODES[str(getattr(mode, "name", mode)).upper()]
    except KeyError:
        raise UnsupportedError(f"pooling mode {mode!r}; valid: MAX, AVERAGE") from None
    N, H, W, C = x.shape
    R, S = _pair(window, "window")
    sh, sw = _pair(stride if stride is not None else (R, S), "stride")
    ph, pw = _pair(padding, "padding")
    if out_hw is None:
        out_hw = (conv_out_size(H, R, sh, ph, ph, 1), conv_out_size(W, S, sw, pw, pw, 1))
    P, Q = out_hw
    out, out_ld, _ = prepare_output(N, P, Q, C, out, x.dtype, out_channel_offset, None)
    kern = templated(SOURCE, "pool2d_nhwc", (x.dtype,), "pool2d")
    kern(grid_1d(N * P * Q * C), (BLOCK,),
         (x, out, i32(N), i32(H), i32(W), i32(C), i32(R), i32(S), i32(P), i32(Q),
          i32(sh), i32(sw), i32(ph), i32(pw), i32(code), i32(bool(exclude_padding)),
          i32(out_ld), i32(out_channel_offset)))
    return out


def global_avgpool(x, keepdims=False):
    """Mean over H and W of NHWC x (FP32 accumulation): [N, C] or [N, 1, 1, C]."""
    import cupy as cp
    check_nhwc(x, "global_avgpool")
    N, H, W, C = x.shape
    out = cp.empty((N, C), dtype=x.dtype)
    kern = templated(SOURCE, "global_avgpool_nhwc", (x.dtype,), "global_avgpool")
    kern(grid_1d(N * C), (BLOCK,), (x, out, i32(N), i32(H * W), i32(C)))
    return out.reshape(N, 1, 1, C) if keepdims else out
