"""Register-blocked depthwise convolution (kernels/cuda/conv_dw.cu), NHWC.

``conv2d_depthwise_v2`` has the calling convention of
``conv_gemm.conv2d_depthwise`` (groups == C, multiplier 1, fused per-channel
scale/bias + activation, optional concat offset). One thread computes 8
channels x ``q_tile`` adjacent output pixels of a row, with the R x S weights
of its channels in registers and every input vector of a row loaded once for
the whole strip (see the sketch at the top of conv_dw.cu).

Constraints (each raises ``UnsupportedError`` naming the value): C % 8 == 0
(the 16-byte channel vector), weights [R, S, C] float16/float32 contiguous on
the device with R, S <= 7. One launch, no host sync, no allocation when
``out`` (and scale/bias) are given: CUDA-graph capturable.
"""
from __future__ import annotations

import numpy as np

from ._launch import check_nhwc
from .activation import act_code
from .compile import ctype, f32, get_function, i32
from .conv_igemm import _epilogue_vectors, _pair, conv_out_size, prepare_output
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "conv_dw.cu"
THREADS = 128
MAX_TAPS = 7          # R, S <= 7 (filter in registers; ptxas report in benchmarks/KERNEL_NOTES.md)
# Output pixels per thread along W. Device run 5 (H100, benchmarks/KERNEL_NOTES.md):
# 2 was the fastest on 19 of the 20 MobileNetV2 rows (batch 256 and 1); 4 wins
# the 7x7 layer at batch 256 by 2 %; 7 is 30-90 % slower (167-190 registers).
DEFAULT_Q_TILE = 2
Q_TILES = (2, 4)      # the values worth timing as separate engine tactics


def pack_weight_dw(w, layout="C1RS", dtype=np.float16):
    """Depthwise weights -> contiguous [R, S, C] on the device.

    ``layout``: "C1RS" (PyTorch / TensorRT [C, 1, R, S]), "RSC1" (TensorFlow
    [R, S, C, 1]) or "RSC". Accepts NumPy or CuPy.
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    w = cp.asarray(w)
    if layout == "C1RS" and w.ndim == 4 and w.shape[1] == 1:
        w = w[:, 0].transpose(1, 2, 0)
    elif layout == "RSC1" and w.ndim == 4 and w.shape[3] == 1:
        w = w[..., 0]
    elif layout != "RSC" or w.ndim != 3:
        raise UnsupportedError(f"depthwise weights {w.shape} in layout {layout!r}; expected "
                               f"C1RS [C, 1, R, S], RSC1 [R, S, C, 1] or RSC [R, S, C]")
    return cp.ascontiguousarray(w.astype(dtype))


def conv2d_depthwise_v2(x, w_rsc, *, stride=1, padding=0, dilation=1, out_hw=None,
                        scale=None, bias=None, act=None, alpha=0.0, beta=0.0,
                        out=None, out_channel_offset=0, q_tile=None, stream=None):
    """Depthwise convolution, register-blocked, fused epilogue; one launch.

    x:        cupy [N, H, W, C] float16/float32, contiguous, C % 8 == 0
    w_rsc:    cupy [R, S, C] float16 or float32, contiguous (``pack_weight_dw``);
              FP16 weights are widened to FP32 once per thread, accumulation is FP32
    stride, dilation: int or (h, w); padding: int or (top, left); bottom/right
              padding is implied by ``out_hw`` (default: symmetric)
    scale, bias: float32 [C] or None (1 / 0)
    act, alpha, beta: activation (kernels/gpu/activation.py codes; RELU6 / CLIP fused)
    out:      optional preallocated contiguous [N, P, Q, Ctot] of x's dtype; result
              goes to channels [out_channel_offset, out_channel_offset + C)
    q_tile:   outputs per thread along W, 1..8 (default ``DEFAULT_Q_TILE``)
    Returns ``out`` ([N, P, Q, C] of x's dtype when allocated here).
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    check_nhwc(x, "conv2d_depthwise_v2")
    N, H, W, C = x.shape
    if C % 8:
        raise UnsupportedError(f"conv2d_depthwise_v2: C = {C} is not a multiple of 8 (one thread "
                               f"owns a 16-byte vector of 8 channels); use conv_gemm.conv2d_depthwise")
    if not isinstance(w_rsc, cp.ndarray) or w_rsc.ndim != 3 or w_rsc.shape[2] != C \
            or not w_rsc.flags.c_contiguous or w_rsc.dtype not in (np.float16, np.float32):
        raise UnsupportedError(f"depthwise weights {getattr(w_rsc, 'shape', None)} "
                               f"{getattr(w_rsc, 'dtype', None)}; expected a contiguous cupy "
                               f"[R, S, {C}] float16/float32 array (pack_weight_dw)")
    R, S, _ = w_rsc.shape
    if not (1 <= R <= MAX_TAPS and 1 <= S <= MAX_TAPS):
        raise UnsupportedError(f"depthwise filter {R}x{S}; conv2d_depthwise_v2 keeps the filter in "
                               f"registers and takes R, S in 1..{MAX_TAPS}")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if min(sh, sw, dh, dw) < 1:
        raise UnsupportedError(f"stride {(sh, sw)} / dilation {(dh, dw)}; expected >= 1")
    if out_hw is None:
        out_hw = (conv_out_size(H, R, sh, ph, ph, dh), conv_out_size(W, S, sw, pw, pw, dw))
    P, Q = out_hw
    if P <= 0 or Q <= 0:
        raise UnsupportedError(f"output size {P}x{Q} from input {H}x{W}; expected positive")
    out, out_ld, _ = prepare_output(N, P, Q, C, out, x.dtype, out_channel_offset, None)
    if H * W * C >= 2**31 or P * Q * out_ld >= 2**31:
        raise UnsupportedError(f"one image of {H}x{W}x{C} (out {P}x{Q}x{out_ld}) needs 64-bit "
                               f"offsets inside the image; this kernel indexes them with 32 bits")
    sc, bi = _epilogue_vectors(C, scale, bias)
    # compile-time stride along W (column reuse) when dilation along W is 1
    sw_t = sw if sw in (1, 2) and dw == 1 else 0
    qt = int(q_tile) if q_tile is not None else DEFAULT_Q_TILE
    if qt not in (1, 2, 3, 4, 5, 6, 7, 8):
        raise UnsupportedError(f"q_tile {q_tile}; valid: 1..8")
    name = (f"dwconv_nhwc_v2<{ctype(x.dtype, 'depthwise conv')},{ctype(w_rsc.dtype, 'depthwise')},"
            f"{R},{S},{sw_t},{qt}>")
    kern = get_function(SOURCE, name)
    work = N * P * (-(-Q // qt)) * (C // 8)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern((-(-work // THREADS),), (THREADS,),
             (x, w_rsc, out, sc, bi, i32(N), i32(H), i32(W), i32(C), i32(P), i32(Q),
              i32(sh), i32(sw), i32(ph), i32(pw), i32(dh), i32(dw), i32(out_ld),
              i32(out_channel_offset), i32(act_code(act)), f32(alpha), f32(beta)))
    return out


# compiled on first use (one instantiation per filter size, stride and q_tile)
FAMILY = KernelFamily(SOURCE, launch=(conv2d_depthwise_v2,))
