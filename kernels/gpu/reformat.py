"""Layout reformats (NCHW <-> NHWC) and concat into a preallocated buffer.

The transpose goes through a 32x33 shared-memory tile (kernels/cuda/
reformat.cu, transpose_brc) so both the read and the write are coalesced. The
network input of a tensor-core stem (NCHW float -> NHWC half, channels padded to 4 or
8) has its own kernel there (nchw_to_nhwc_pad: cast, transpose and padding in one
pass, vector loads of each plane, 16-byte stores).
"""
from __future__ import annotations

import math

import numpy as np

from .compile import get_function, i32
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "reformat.cu"
_CT = {np.dtype(np.float16): "half_t", np.dtype(np.float32): "float",
       np.dtype(np.int8): "signed char", np.dtype(np.int32): "int"}


def _transpose_brc(x, B, R, C, out):
    try:
        ct = _CT[x.dtype]
    except KeyError:
        raise UnsupportedError(f"reformat: dtype {x.dtype}; valid: {', '.join(map(str, _CT))}") from None
    kern = get_function(SOURCE, f"transpose_brc<{ct}>")
    if B > 65535:
        raise UnsupportedError(f"reformat: batch {B} > 65535")
    kern((-(-C // 32), -(-R // 32), B), (32, 8), (x, out, i32(R), i32(C)))
    return out


def nchw_to_nhwc(x, out=None):
    """[N, C, *spatial] -> [N, *spatial, C] (any rank >= 3), contiguous copy."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    x = cp.ascontiguousarray(x)
    N, C = x.shape[:2]
    sp = x.shape[2:]
    out = out if out is not None else cp.empty((N,) + sp + (C,), dtype=x.dtype)
    return _transpose_brc(x, N, C, math.prod(sp), out)


def nhwc_to_nchw(x, out=None):
    """[N, *spatial, C] -> [N, C, *spatial], contiguous copy."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    x = cp.ascontiguousarray(x)
    N, C = x.shape[0], x.shape[-1]
    sp = x.shape[1:-1]
    out = out if out is not None else cp.empty((N, C) + sp, dtype=x.dtype)
    return _transpose_brc(x, N, math.prod(sp), C, out)


def concat_into(out, x, channel_offset):
    """Copy NHWC ``x`` into channels [offset, offset + C) of ``out`` (for producers
    that cannot write at an offset themselves; conv/pool tactics take
    ``out=, out_channel_offset=`` instead and need no copy)."""
    C = x.shape[-1]
    if out.shape[:-1] != x.shape[:-1] or channel_offset + C > out.shape[-1] or channel_offset < 0:
        raise UnsupportedError(f"concat_into: {x.shape} at channel {channel_offset} does not fit {out.shape}")
    out[..., channel_offset:channel_offset + C] = x
    return out


def concat_buffer(shapes, dtype):
    """Allocate the NHWC concat output for inputs of ``shapes`` and return (buffer, offsets)."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    offs, c = [], 0
    for s in shapes:
        if tuple(s[:-1]) != tuple(shapes[0][:-1]):
            raise UnsupportedError(f"concat inputs {shapes}: all but the channel dim must match")
        offs.append(c)
        c += s[-1]
    return cp.empty(tuple(shapes[0][:-1]) + (c,), dtype=dtype), offs


_TO_NHWC_PADDED = {}
_PAD_KERNEL_IN = {np.dtype(np.float32): "float", np.dtype(np.float16): "half_t"}


def padded_kernel_reason(x, dtype, Cp, out=None):
    """None when ``nchw_to_nhwc_pad`` (reformat.cu) takes this reformat, else why the
    generic kernel does it: the dedicated one reads C-contiguous NCHW float32/float16
    and writes contiguous NHWC float16 with 4 or 8 channels, 32-bit offsets per image.
    Shape and flag checks only (NumPy arrays answer the same as CuPy ones)."""
    if x.ndim != 4:
        return f"rank {x.ndim}; expected NCHW rank 4"
    if x.dtype not in _PAD_KERNEL_IN:
        return f"input dtype {x.dtype}; expected float32 or float16"
    if np.dtype(dtype) != np.float16:
        return f"output dtype {np.dtype(dtype)}; expected float16"
    if Cp not in (4, 8):
        return f"{Cp} padded channels; expected 4 or 8"
    if not x.flags.c_contiguous:
        return f"input strides {x.strides} are not C-contiguous NCHW"
    N, C, H, W = x.shape
    if N > 65535 or C * H * W >= 2**31 or H * W * Cp >= 2**31:
        return f"shape {x.shape}: batch > 65535 or an image of 2**31 elements or more"
    if out is not None and (out.dtype != np.float16 or not out.flags.c_contiguous
                            or out.shape != (N, H, W, Cp)):
        return f"out {out.shape} {out.dtype}; expected contiguous ({N}, {H}, {W}, {Cp}) float16"
    if out is not None:
        ptr = getattr(out.data, "ptr", None)                  # CuPy; NumPy: ctypes
        ptr = out.ctypes.data if ptr is None else ptr
        if ptr % 8:
            return f"out at address {ptr:#x}; the kernel's stores need 8-byte alignment"
    return None


def _pad_kernel(x, Cp, out):
    """The dedicated kernel (``padded_kernel_reason`` said yes): 4 pixels per thread,
    16-byte (float) / 8-byte (half) plane loads when H*W % 4 == 0 and the planes are
    aligned, 16-byte NHWC stores."""
    N, C, H, W = x.shape
    HW = H * W
    vec = int(HW % 4 == 0 and x.data.ptr % (4 * x.dtype.itemsize) == 0)
    kern = get_function(SOURCE, f"nchw_to_nhwc_pad<{_PAD_KERNEL_IN[x.dtype]},{Cp},{vec}>")
    if N and HW:
        kern((-(-HW // 1024), N), (256,), (x, out, i32(C), i32(HW)))
    return out


def nchw_to_nhwc_padded(x, dtype, c_to=8, out=None, dedicated=False):
    """[N, C, H, W] (any strides, any float dtype) -> contiguous [N, H, W, Cp] of
    ``dtype`` with Cp = C rounded up to ``c_to`` and the extra channels zero: the
    cast, the transpose and the padding in one pass (the network input of a
    tensor-core stem convolution, where three separate copies used to cost more
    than the convolution).

    With ``dedicated``, C-contiguous float32/float16 input to float16 with Cp = 4 or 8
    (the stem's case) takes reformat.cu's ``nchw_to_nhwc_pad``; anything else, and every
    call without it, the generic elementwise kernel, which applies any strides itself.
    (The engine asks for the dedicated kernel under its stem_kernel setting.)"""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    N, C, H, W = x.shape
    Cp = -(-C // c_to) * c_to
    if dedicated and padded_kernel_reason(x, dtype, Cp, out) is None:
        return _pad_kernel(x, Cp, out if out is not None else cp.empty((N, H, W, Cp), np.float16))
    return generic_padded(x, dtype, Cp, out)


def generic_padded(x, dtype, Cp, out=None):
    """``nchw_to_nhwc_padded`` through the generic elementwise kernel (any strides, any
    dtypes; one thread per output element); public for benchmarks that compare the two."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    N, C, H, W = x.shape
    if out is None:
        out = cp.empty((N, H, W, Cp), dtype=dtype)
    key = (x.dtype.name, np.dtype(dtype).name)
    kern = _TO_NHWC_PADDED.get(key)
    if kern is None:
        kern = _TO_NHWC_PADDED[key] = cp.ElementwiseKernel(
            "raw X x, int32 C, int32 H, int32 W, int32 Cp",
            "Y y",
            # a raw CuPy array indexed with one integer takes it as the C-order
            # index of its *logical* shape and applies its strides itself, so
            # this is right for any layout of x (an NHWC buffer seen as NCHW too)
            """
            int c = i % Cp; long long r = i / Cp;
            int w = r % W; r /= W;
            int h = r % H; long long n = r / H;
            y = c < C ? (Y)((float)x[((n * C + c) * H + h) * W + w]) : (Y)(0.0f);
            """, "cupyrt_nchw_to_nhwc_padded_v2")
    kern(x, np.int32(C), np.int32(H), np.int32(W), np.int32(Cp), out)
    return out


# the padded NCHW -> NHWC cast of other layouts is a generated ElementwiseKernel
FAMILY = KernelFamily(SOURCE, launch=(nchw_to_nhwc, nhwc_to_nchw, nchw_to_nhwc_padded))
