"""Pooling on NHWC (kernels/cuda/pooling.cu): max/average windows and global average."""
from __future__ import annotations

import numpy as np

from ._launch import BLOCK, check_nhwc, grid_1d, templated
from .compile import ctype, get_function, i32
from .conv_igemm import _pair, conv_out_size, prepare_output
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "pooling.cu"
MODES = {"MAX": 0, "AVERAGE": 1, "AVG": 1}
# max pool windows with kernels of their own (pooling.cu maxpool_i8_window / maxpool_vec_window:
# every tap's load in flight at once), taken by variant "auto"
WINDOWS = {(3, 3): "3x3", (2, 2): "2x2"}


VARIANTS = ("auto", "vec", "window", "scalar")
# the float max pool's fixed-window kernels are taken by "auto" once a GPU has timed them against
# the runtime-window kernel (benchmarks/KERNEL_NOTES.md "Session 24"); "window" asks for them
FLOAT_WINDOW_AUTO = False


def _check_variant(variant):
    if variant not in VARIANTS:
        raise UnsupportedError(f"pooling variant {variant!r}; valid: {', '.join(VARIANTS)}")


def _vec_ok(x, out, C, extra=0):
    """The 16-byte kernels need C (and concat ld/offset) multiples of 16 bytes' worth of elements."""
    vec = 16 // x.itemsize
    ok = C % vec == 0 and extra % vec == 0 and x.data.ptr % 16 == 0
    return ok and (out is None or out.data.ptr % 16 == 0)


def pool2d(x, mode, window, *, stride=None, padding=0, out_hw=None, exclude_padding=True,
           out=None, out_channel_offset=0, variant="auto"):
    """Max or average pooling. x: [N, H, W, C] float16/float32 contiguous.

    mode: "MAX" or "AVERAGE"; window/stride: int or (h, w) (stride defaults to
    window); padding: (top, left), bottom/right implied by ``out_hw``;
    exclude_padding: average over in-bounds taps only (TensorRT's default).
    variant: "auto" (16-byte vector kernel where C, the output's channel
    count and offset are multiples of 8 halves / 4 floats, else the scalar
    one), "vec" (the runtime-window vector kernel; raise if it does not
    apply), "window" (MAX over a 3x3 or 2x2 window: the vector kernel of that
    fixed window, every tap's load in flight at once, bit-equal to "vec"; raise
    for anything else) or "scalar" (benchmarks). "auto" takes "window" where it
    applies for int8 codes, and for floats once FLOAT_WINDOW_AUTO is set.
    int8 codes: MAX only, on packed bytes (C, the output's channel count and offset
    multiples of 16); the codes keep their scale.
    Returns [N, P, Q, C] (or writes ``out`` at ``out_channel_offset``).
    """
    check_nhwc(x, "pool2d", dtypes=(np.float16, np.float32, np.int8))
    _check_variant(variant)
    try:
        code = MODES[str(getattr(mode, "name", mode)).upper()]
    except KeyError:
        raise UnsupportedError(f"pooling mode {mode!r}; valid: MAX, AVERAGE") from None
    if x.dtype == np.int8 and (code != MODES["MAX"] or variant == "scalar"):
        raise UnsupportedError("int8 pooling: MAX through the vector kernel only (an average of "
                               "codes would need requantising)")
    N, H, W, C = x.shape
    R, S = _pair(window, "window")
    sh, sw = _pair(stride if stride is not None else (R, S), "stride")
    ph, pw = _pair(padding, "padding")
    if out_hw is None:
        out_hw = (conv_out_size(H, R, sh, ph, ph, 1), conv_out_size(W, S, sw, pw, pw, 1))
    P, Q = out_hw
    out, out_ld, _ = prepare_output(N, P, Q, C, out, x.dtype, out_channel_offset, None)
    vec = 16 // x.itemsize
    use_vec = (variant != "scalar" and _vec_ok(x, out, C, out_ld | out_channel_offset)
               and N * P * Q * (C // vec) < 2**31 and x.size < 2**62)
    if (variant == "vec" or x.dtype == np.int8) and not use_vec:
        raise UnsupportedError(f"pool2d variant 'vec' needs C ({C}), the output's channel count "
                               f"({out_ld}) and offset ({out_channel_offset}) multiples of {vec} "
                               f"and 16-byte aligned arrays")
    fixed = use_vec and code == 0 and (R, S) in WINDOWS
    if variant == "window" and not fixed:
        raise UnsupportedError(f"pooling variant 'window' is MAX over a window of "
                               f"{', '.join(WINDOWS.values())} through the vector kernel; "
                               f"got {'MAX' if code == 0 else 'AVERAGE'} {R}x{S}"
                               f"{'' if use_vec else ' (the vector kernel does not apply)'}")
    geometry = (i32(N), i32(H), i32(W), i32(C), i32(R), i32(S), i32(P), i32(Q),
                i32(sh), i32(sw), i32(ph), i32(pw))
    name = "pool2d_nhwc_vec" if use_vec else "pool2d_nhwc"
    if fixed and (variant == "window" or (variant == "auto" and (x.dtype == np.int8 or FLOAT_WINDOW_AUTO))):
        # the fixed-window max (bit-equal to the runtime-window kernel); the float ones are
        # fetched from the module the vector kernel's instantiation builds (no NVRTC run of
        # their own), the int8 ones from the module of the plain C kernels
        tname = {"int8": "i8", "float16": "f16", "float32": "f32"}[x.dtype.name]
        kern = get_function(SOURCE, f"maxpool2d_nhwc_{tname}_{WINDOWS[(R, S)]}",
                            name_expressions=() if x.dtype == np.int8 else (f"{name}<{ctype(x.dtype)}>",))
    elif x.dtype == np.int8:                    # max of int8 codes, runtime window: on packed bytes
        kern = get_function(SOURCE, "maxpool2d_nhwc_i8")
    else:
        kern = None
    if kern is not None:
        kern(grid_1d(N * P * Q * (C // vec)), (BLOCK,),
             (x, out, *geometry, i32(out_ld), i32(out_channel_offset)))
        return out
    kern = templated(SOURCE, name, (x.dtype,), "pool2d")
    kern(grid_1d(N * P * Q * (C // vec if use_vec else C)), (BLOCK,),
         (x, out, *geometry, i32(code), i32(bool(exclude_padding)),
          i32(out_ld), i32(out_channel_offset)))
    return out


def global_avgpool(x, keepdims=False, variant="auto"):
    """Mean over H and W of NHWC x (FP32 accumulation): [N, C] or [N, 1, 1, C].

    variant: "auto" (vector kernel, block of 32 channel vectors x 8 HW slices,
    where C is a multiple of 8 halves / 4 floats), "vec" or "scalar".
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    check_nhwc(x, "global_avgpool")
    _check_variant(variant)
    N, H, W, C = x.shape
    out = cp.empty((N, C), dtype=x.dtype)
    vec = 16 // x.itemsize
    use_vec = variant != "scalar" and _vec_ok(x, out, C) and N < 65536
    if variant == "vec" and not use_vec:
        raise UnsupportedError(f"global_avgpool variant 'vec' needs C ({C}) a multiple of {vec}, "
                               f"N < 65536 and 16-byte aligned arrays")
    if use_vec:
        kern = templated(SOURCE, "global_avgpool_nhwc_vec", (x.dtype,), "global_avgpool")
        kern((-(-(C // vec) // 32), N), (32, 8), (x, out, i32(N), i32(H * W), i32(C)))
    else:
        kern = templated(SOURCE, "global_avgpool_nhwc", (x.dtype,), "global_avgpool")
        kern(grid_1d(N * C), (BLOCK,), (x, out, i32(N), i32(H * W), i32(C)))
    return out.reshape(N, 1, 1, C) if keepdims else out


FAMILY = KernelFamily(SOURCE, launch=(pool2d, global_avgpool))
