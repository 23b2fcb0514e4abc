"""A stride-2 convolution as a stride-1 one over the space-to-depth input.

A 7x7/2 convolution over 3 channels (an RGB stem) suits no tensor-core engine of cuDNN
(the reduction is 147 long, C = 3 fills no MMA operand, and stride 2 halves the reuse);
the same convolution over 2x2 blocks folded into channels is an ordinary stride-1 one:

    X[n, P, Q, c*4 + bh*2 + bw] = x[n, c, 2P + bh, 2Q + bw]        (zero outside x)
    W'[k, a_h - a_min_h, a_w - a_min_w, c*4 + bh*2 + bw] = w[k, c, r, s]
        where r = 2*a_h + bh + pad_h, s = 2*a_w + bw + pad_w        (zero outside w)

Output row p of the original reads input rows 2p - pad_h + r (r in [0, R)); writing
r - pad_h = 2a + b (b in {0, 1}) makes that row 2(p + a) + b, i.e. row p + a of X, channel
block b: a stride-1 window over X with offsets a in [floor(-pad/2), floor((R-1-pad)/2)].
For ResNet's stem (224x224, 7x7, pad 3): a in [-2, 1], a 4x4 stride-1 convolution over
112x112x12 (16 with the zero channels cuDNN's alignment wants), padding 2 before and 1
after, output 112x112 as before. The literature calls it the space-to-depth stem
(e.g. "TResNet", Ridnik et al. 2021, and MLPerf ResNet submissions on TPUs).

Here: the geometry (``s2d_geometry``), the filter transform (``s2d_filter``, on the
host at prepare time), the NumPy references of the input transform (``s2d_reference``;
``s2d_int8_reference`` with the INT8 quantisation) and their GPU kernels
(kernels/cuda/space_to_depth.cu): ``space_to_depth_nhwc`` (the cast to half fused in)
and ``space_to_depth_int8`` (the INT8 input quantisation fused in, or int8 codes
folded as they are). The convolution itself is a cuDNN graph (kernels/gpu/cudnn_graphs.py)
or one of our implicit GEMMs (engine/gpu/conv_s2d_tactics.py).

INT8: the s2d filter holds the original's weights and zeros, so its per-output-channel
max |w|, scale and codes are the original's (kernels.quantize.quantize_weights), the
input codes are the original's codes moved, and the int32 sums add the same products
plus zeros: the rewritten INT8 convolution is bit-exact with the direct one.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..quantize import quantize
from .compile import f32, get_function, i32
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "space_to_depth.cu"
_IN = {np.dtype(np.float32): "float", np.dtype(np.float16): "half_t"}
_IN_Q8 = {**_IN, np.dtype(np.int8): "i8_t"}
Q8_C_PAD = 16           # the INT8 convolutions take C % 16 == 0: one 16-byte chunk per pixel
C_PADS = (8, 16)        # the kernel's channel counts: 4*C must fit (C <= 2 or C <= 4)


class S2dGeometry(NamedTuple):
    """The stride-1 convolution equal to a stride-2 one: X is (hs, ws) pixels, the filter
    (r, s) taps, padding ``pre`` before and ``post`` after (per axis), output (p, q)."""
    hs: int
    ws: int
    r: int
    s: int
    pre: tuple
    post: tuple
    p: int
    q: int


def _axis(size, taps, pad_lo, pad_hi):
    """(X size, taps, pre, post, output size) along one axis; see the module docstring."""
    if size < 1 or taps < 1:
        raise UnsupportedError(f"space-to-depth: size {size}, filter {taps}; expected both >= 1")
    if pad_lo < 0 or pad_hi < 0:
        raise UnsupportedError(f"space-to-depth: padding {pad_lo}/{pad_hi}; expected non-negative")
    out = (size + pad_lo + pad_hi - taps) // 2 + 1
    if out < 1:
        raise UnsupportedError(f"space-to-depth: size {size}, filter {taps}, padding {pad_lo}/{pad_hi} "
                               "leave no output; expected at least one output")
    a_min, a_max = (-pad_lo) // 2, (taps - 1 - pad_lo) // 2
    # X rows past out - 1 + a_max are read by no output: not made (the original's post
    # padding, and its floor, may drop input rows), so post is never negative
    xs = min(-(-size // 2), out + a_max)
    return xs, a_max - a_min + 1, -a_min, out + a_max - xs, out


def s2d_geometry(h, w, r, s, pad_h, pad_w, post_h=None, post_w=None):
    """``S2dGeometry`` of a stride-2, dilation-1 convolution of an (h, w) input with an
    (r, s) filter and padding (pad_h, pad_w) before and (post_h, post_w) after (default:
    the same as before); its output (p, q) is the original's."""
    hs, rr, pre_h, post2_h, p = _axis(h, r, pad_h, pad_h if post_h is None else post_h)
    ws, ss, pre_w, post2_w, q = _axis(w, s, pad_w, pad_w if post_w is None else post_w)
    return S2dGeometry(hs, ws, rr, ss, (pre_h, pre_w), (post2_h, post2_w), p, q)


def _check_c(c, c_pad):
    if c_pad not in C_PADS:
        raise UnsupportedError(f"space-to-depth: c_pad {c_pad}; valid: {C_PADS}")
    if c < 1 or 4 * c > c_pad:
        raise UnsupportedError(f"space-to-depth: {c} input channels; expected 1..{c_pad // 4} "
                               f"(4*C channels must fit in c_pad={c_pad})")


def s2d_filter(w_kcrs, pad, c_pad=16, dtype=np.float32):
    """The stride-1 filter (K, R', S', c_pad) of ``dtype`` (KRSC, cuDNN's NHWC filter) of
    the stride-2 filter ``w_kcrs`` (K, C, R, S) with leading padding ``pad`` (ph, pw); the
    taps are moved, not combined, so the values are w's (float64 for exact checks)."""
    w = np.asarray(w_kcrs)
    if w.ndim != 4:
        raise UnsupportedError(f"space-to-depth filter of rank {w.ndim}; expected (K, C, R, S)")
    k, c, r, s = w.shape
    _check_c(c, c_pad)
    ph, pw = pad
    a0h, a0w = (-ph) // 2, (-pw) // 2
    rr, ss = (r - 1 - ph) // 2 - a0h + 1, (s - 1 - pw) // 2 - a0w + 1
    out = np.zeros((k, rr, ss, c_pad), dtype)
    for i in range(r):
        ah, bh = divmod(i - ph, 2)              # floor division: r - pad = 2a + b, b in {0, 1}
        for j in range(s):
            aw, bw = divmod(j - pw, 2)
            out[:, ah - a0h, aw - a0w, bh * 2 + bw:4 * c:4] = w[:, :, i, j]
    return out


def s2d_reference(x_nchw, hs, ws, c_pad=16):
    """NumPy reference of the input transform: (N, C, H, W) -> (N, hs, ws, c_pad) in
    x's dtype (the kernel casts to float16 on the way)."""
    x = np.asarray(x_nchw)
    if x.ndim != 4:
        raise UnsupportedError(f"space-to-depth input of rank {x.ndim}; expected NCHW rank 4")
    n, c, h, w = x.shape
    _check_c(c, c_pad)
    padded = np.zeros((n, c, 2 * hs, 2 * ws), x.dtype)
    hh, ww = min(h, 2 * hs), min(w, 2 * ws)
    padded[:, :, :hh, :ww] = x[:, :, :hh, :ww]
    blocks = padded.reshape(n, c, hs, 2, ws, 2).transpose(0, 2, 4, 1, 3, 5).reshape(n, hs, ws, 4 * c)
    out = np.zeros((n, hs, ws, c_pad), x.dtype)
    out[..., :4 * c] = blocks
    return out


def s2d_int8_reference(x_nchw, s, hs, ws):
    """NumPy reference of ``space_to_depth_int8``: float x quantised at scale ``s`` by
    kernels.quantize.quantize (the INT8 contract), int8 x taken as codes (``s`` unused),
    then folded: (N, C, H, W) -> int8 (N, hs, ws, 16), zero codes outside x and in
    channels 4*C..15."""
    x = np.asarray(x_nchw)
    codes = x if x.dtype == np.int8 else quantize(x, s)
    return s2d_reference(codes, hs, ws, Q8_C_PAD)


def _shape_reason(x, hs, ws, c_pad, dtypes):
    """Input checks both launchers share (rank, dtype, channels, output size, strides)."""
    if x.ndim != 4:
        return f"input of rank {x.ndim}; expected NCHW rank 4"
    if x.dtype not in dtypes:
        return f"input dtype {x.dtype}; expected {' or '.join(d.name for d in dtypes)}"
    if c_pad not in C_PADS:
        return f"c_pad {c_pad}; valid: {C_PADS}"
    n, c, h, w = x.shape
    if c < 1 or 4 * c > c_pad:
        return f"{c} input channels; expected 1..{c_pad // 4} (4*C must fit in c_pad={c_pad})"
    if not (1 <= hs <= -(-h // 2) and 1 <= ws <= -(-w // 2)):
        return f"output {hs}x{ws} pixels; expected 1..{-(-h // 2)} x 1..{-(-w // 2)} for input {h}x{w}"
    if n > 65535 or hs * ws >= 2**31:
        return f"batch {n} > 65535 or {hs}x{ws} pixels of 2**31 or more"
    if any(st < 0 for st in x.strides):
        return f"negative strides {x.strides}"
    return None


def launch_reason(x, hs, ws, c_pad=16, out=None):
    """None when ``space_to_depth_nhwc`` takes these arguments, else why not (shape,
    dtype and flag checks only: NumPy arrays answer the same as CuPy ones)."""
    reason = _shape_reason(x, hs, ws, c_pad, tuple(_IN))
    if reason is not None:
        return reason
    n = x.shape[0]
    if out is not None and (out.dtype != np.float16 or not out.flags.c_contiguous
                            or out.shape != (n, hs, ws, c_pad)):
        return f"out {out.shape} {out.dtype}; expected contiguous ({n}, {hs}, {ws}, {c_pad}) float16"
    return None


def space_to_depth_nhwc(x, c_pad=16, out=None, hs=None, ws=None):
    """(N, C, H, W) float32/float16 CuPy array, any element strides (the network input
    is contiguous NCHW; a tensor another layer wrote is an NHWC buffer seen as NCHW) ->
    contiguous (N, hs, ws, c_pad) float16 with ``X[n, P, Q, c*4 + bh*2 + bw] = x[n, c,
    2P + bh, 2Q + bw]`` (zero outside x and in channels 4*C..c_pad). ``hs``/``ws``:
    ``s2d_geometry``'s (default ceil(H/2), ceil(W/2))."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    n, c, h, w = x.shape if x.ndim == 4 else (0, 0, 0, 0)
    hs = -(-h // 2) if hs is None else hs
    ws = -(-w // 2) if ws is None else ws
    reason = launch_reason(x, hs, ws, c_pad, out)
    if reason is not None:
        raise UnsupportedError(f"space_to_depth_nhwc: {reason}")
    if out is None:
        out = cp.empty((n, hs, ws, c_pad), np.float16)
    (sn, sc, sh, sw), vec = _strides_and_vec(x)
    kern = get_function(SOURCE, f"space_to_depth_pad<{_IN[x.dtype]},{c_pad},{vec}>")
    if n:
        kern((-(-(hs * ws) // 256), n), (256,),
             (x, out, i32(c), i32(h), i32(w), i32(hs), i32(ws),
              np.int64(sn), np.int64(sc), np.int64(sh), np.int64(sw)))
    return out


def _strides_and_vec(x):
    """(element strides, VEC): the pair loads take unit w-stride, W even, the other
    strides even and a base aligned to the pair (then every pair is aligned)."""
    item = x.dtype.itemsize
    sn, sc, sh, sw = (st // item for st in x.strides)
    vec = int(sw == 1 and x.shape[3] % 2 == 0 and sn % 2 == 0 and sc % 2 == 0 and sh % 2 == 0
              and x.data.ptr % (2 * item) == 0)
    return (sn, sc, sh, sw), vec


def _address(a):
    """The first element's address of a CuPy or NumPy array (the checks serve both)."""
    ptr = getattr(a.data, "ptr", None)
    return a.ctypes.data if ptr is None else ptr


def int8_launch_reason(x, s, hs, ws, out=None):
    """None when ``space_to_depth_int8`` takes these arguments, else why not (shape,
    dtype, scale and flag checks only: NumPy arrays answer the same as CuPy ones)."""
    reason = _shape_reason(x, hs, ws, Q8_C_PAD, tuple(_IN_Q8))
    if reason is not None:
        return reason
    if x.dtype != np.int8 and not (s is not None and np.isfinite(s) and s > 0):
        return f"scale {s} for {x.dtype} input; expected a positive finite float (int8 input: codes, any)"
    shape = (x.shape[0], hs, ws, Q8_C_PAD)
    if out is not None and (out.dtype != np.int8 or not out.flags.c_contiguous or out.shape != shape
                            or _address(out) % 16):
        return f"out {out.shape} {out.dtype}; expected contiguous 16-byte aligned {shape} int8"
    return None


def space_to_depth_int8(x, s=None, out=None, hs=None, ws=None):
    """(N, C, H, W) CuPy array, C <= 4, any element strides -> contiguous int8 (N, hs, ws,
    16) codes of the space-to-depth input (the INT8 convolutions' C % 16 == 0 layout).
    float32/float16 x is quantised at scale ``s`` exactly as the INT8 input path does
    (``quantize_int8.quantize_nchw_to_nhwc``: saturate(rint(x * float32(1/s)))); int8 x
    holds codes already and is only folded (``s`` unused). Zero codes outside x and in
    channels 4*C..15. ``hs``/``ws``: ``s2d_geometry``'s (default ceil(H/2), ceil(W/2))."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    n, c, h, w = x.shape if x.ndim == 4 else (0, 0, 0, 0)
    hs = -(-h // 2) if hs is None else hs
    ws = -(-w // 2) if ws is None else ws
    reason = int8_launch_reason(x, s, hs, ws, out)
    if reason is not None:
        raise UnsupportedError(f"space_to_depth_int8: {reason}")
    if out is None:
        out = cp.empty((n, hs, ws, Q8_C_PAD), np.int8)
    # the host arithmetic of quantize_int8 (float32 reciprocal), so the codes match it
    inv = np.float32(0.0) if x.dtype == np.int8 else np.float32(1.0) / np.float32(s)
    (sn, sc, sh, sw), vec = _strides_and_vec(x)
    kern = get_function(SOURCE, f"space_to_depth_q8<{_IN_Q8[x.dtype]},{vec}>")
    if n:
        kern((-(-(hs * ws) // 256), n), (256,),
             (x, out, i32(c), i32(h), i32(w), i32(hs), i32(ws),
              np.int64(sn), np.int64(sc), np.int64(sh), np.int64(sw), f32(inv)))
    return out


FAMILY = KernelFamily(SOURCE, launch=(space_to_depth_nhwc, space_to_depth_int8))
