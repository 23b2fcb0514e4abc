"""FP32 / FP16 activations -> INT8 codes (kernels/cuda/quantize_int8.cu), the quantize
step of the INT8 contract (kernels/quantize.py): q = saturate(rint(x * float32(1/s))),
rint half to even, padded channels 0.

The stem's input in INT8 is the float32 NCHW network input: reformatted to NHWC, the
scalar ``quantize_nhwc`` kernel writes one byte per thread with a 64-bit division per
element. The vectorised kernels write 16-byte chunks of codes with 32-bit index math
where the sizes allow, and ``quantize_nchw_to_nhwc`` reads NCHW directly (no reformat
pass). Every variant computes the same codes, bit for bit.
"""
from __future__ import annotations

import numpy as np

from .compile import f32, get_function, i32
from .conv_igemm import _sm_count
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "quantize_int8.cu"
QUANTIZE_VARIANTS = ("auto", "vec", "scalar")
_I32 = 2**31
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float16): "half_t"}


def quantize_nhwc(x, s, *, c_pad_to=1, out=None, stream=None, variant="scalar", fast=True):
    """float32/float16 [..., C] -> int8 [..., Cp] codes at scale ``s`` (Cp = C rounded
    up to ``c_pad_to``, padded channels 0): saturate(rint(x * float32(1/s))).

    variant: "scalar" (one byte per thread), "vec" (one thread per 16-byte chunk of
    codes; ``out`` 16-byte aligned) or "auto" ("vec" where ``out`` is aligned and
    ``fast`` is true, else "scalar"). ``fast``: the engine's fast_quantize setting
    (CUPYRT_FAST_QUANTIZE, on since the first GPU run showed the vectorised kernels
    bit-exact with the scalar one: H100, 0.25 vs 0.67 ms on the ResNet-50 stem tensor
    at batch 256). Every variant computes the same codes, bit for bit.
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    _check_quantize_variant(variant)
    if x.dtype not in (np.float32, np.float16) or not x.flags.c_contiguous:
        raise UnsupportedError(f"x {x.shape} {x.dtype}; expected contiguous float32 or float16")
    C = x.shape[-1]
    Cp = -(-C // c_pad_to) * c_pad_to
    shape = x.shape[:-1] + (Cp,)
    if out is None:
        out = cp.empty(shape, cp.int8)
    elif out.shape != shape or out.dtype != np.int8 or not out.flags.c_contiguous:
        raise UnsupportedError(f"out {out.shape} {out.dtype}; expected contiguous int8 {shape}")
    inv = np.float32(1.0) / np.float32(s)
    pixels = x.size // max(C, 1)
    if _use_vec_quantize(variant, out, fast):
        return _quantize_nhwc_vec(x, out, pixels, C, Cp, inv, stream)
    name = f"quantize_nhwc<{'float' if x.dtype == np.float32 else 'half_t'}>"
    fn = get_function(SOURCE, name, name_expressions=("quantize_nhwc<float>", "quantize_nhwc<half_t>"))
    total = pixels * Cp
    blocks = max(1, min(-(-total // 256), 65535 * 8))
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        fn((blocks,), (256,), (x, out, np.int64(pixels), i32(C), i32(Cp), f32(inv)))
    return out


def _check_quantize_variant(variant):
    if variant not in QUANTIZE_VARIANTS:
        raise UnsupportedError(f"quantize variant {variant!r}; valid: {', '.join(QUANTIZE_VARIANTS)}")


def _use_vec_quantize(variant, out, fast):
    """"vec" always (it checks its own needs); "auto" only when ``fast`` and where the
    codes can be written in aligned 16-byte chunks."""
    return variant == "vec" or (variant == "auto" and fast and out.data.ptr % 16 == 0)


def _index_type(*sizes):
    """32-bit index math when every offset fits (cheaper division), else 64-bit."""
    return ("int", np.int32) if max(sizes) < _I32 else ("long long", np.int64)


def _grid(total, threads=256):
    return (max(1, min(-(-total // threads), 65535 * 8)),)


def _quantize_nhwc_vec(x, out, pixels, C, Cp, inv, stream):
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    if out.data.ptr % 16:
        raise UnsupportedError(f"quantize variant 'vec' writes 16-byte chunks: out at address "
                               f"{out.data.ptr:#x} is not 16-byte aligned; use variant='scalar'")
    # DENSE: no padding, the 16 codes of a chunk are 16 consecutive (aligned) inputs
    dense = int(C == Cp and x.data.ptr % 16 == 0)
    ct, it = _index_type(x.size, out.size + 16)      # b0 reaches out.size rounded up to 16
    names = tuple(f"quantize_nhwc_vec<{t},{d},{ct}>" for t in _CTYPE.values() for d in (0, 1))
    fn = get_function(SOURCE, f"quantize_nhwc_vec<{_CTYPE[x.dtype]},{dense},{ct}>",
                      name_expressions=names)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        fn(_grid(-(-out.size // 16)), (256,), (x, out, it(pixels), i32(C), i32(Cp), f32(inv)))
    return out


def quantize_nchw_to_nhwc(x, s, *, c_pad_to=4, out=None, stream=None):
    """float32/float16 NCHW [N, C, H, W] (the network input) -> int8 NHWC [N, H, W, Cp]
    codes at scale ``s`` in one pass (no separate reformat); Cp = C rounded up to
    ``c_pad_to``, a multiple of 4; padded channels 0. The codes equal
    ``quantize_nhwc(nchw_to_nhwc(x), s, c_pad_to=...)`` bit for bit."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    if x.dtype not in _CTYPE or x.ndim != 4 or not x.flags.c_contiguous:
        raise UnsupportedError(f"x {x.shape} {x.dtype}; expected contiguous NCHW float32 or float16")
    N, C, H, W = x.shape
    Cp = -(-C // c_pad_to) * c_pad_to
    if Cp % 4:
        raise UnsupportedError(f"{C} channels padded to {c_pad_to}: {Cp} is not a multiple of 4 "
                               f"(the kernel writes 4-channel words); use c_pad_to=4 or 16")
    shape = (N, H, W, Cp)
    if out is None:
        out = cp.empty(shape, cp.int8)
    elif out.shape != shape or out.dtype != np.int8 or not out.flags.c_contiguous:
        raise UnsupportedError(f"out {out.shape} {out.dtype}; expected contiguous int8 {shape}")
    if out.data.ptr % 16:
        raise UnsupportedError(f"out at address {out.data.ptr:#x} is not 16-byte aligned")
    HW = H * W
    # vector loads of four pixels per channel plane (float4 / 8 bytes of half)
    vec = int(HW % 4 == 0 and x.data.ptr % (4 * x.itemsize) == 0)
    cb = 16 if Cp % 16 == 0 else 4
    ct, it = _index_type(x.size, out.size)
    names = tuple(f"quantize_nchw_nhwc<{t},{b},{ct}>" for t in _CTYPE.values() for b in (4, 16))
    fn = get_function(SOURCE, f"quantize_nchw_nhwc<{_CTYPE[x.dtype]},{cb},{ct}>",
                      name_expressions=names)
    inv = np.float32(1.0) / np.float32(s)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        fn(_grid(N * -(-HW // 4)), (256,),
           (x, out, i32(N), i32(C), i32(HW), i32(Cp), f32(inv), i32(vec)))
    return out


HIST_BLOCKS_PER_SM = 4      # blocks of the histogram kernel: enough to fill the GPU, few merges


def _dense(x):
    """``x``'s elements as one contiguous array, in any order (a histogram does not care):
    ``x`` itself, the NHWC buffer under an NCHW view (what the engine's tensor-core
    kernels write), else a copy."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    if x.flags.c_contiguous:
        return x
    if x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous:
        return x.transpose(0, 2, 3, 1)
    return cp.ascontiguousarray(x)


def abs_histogram(x, amax, bins, drop_zeros=False, stream=None):
    """Counts (host int64 [bins]) of |x| for a float32/float16 device array, as
    ``kernels.quantize.abs_histogram`` defines them (bin trunc(|x| * float32(bins / amax)),
    the last bin taking the rest; ``drop_zeros`` leaves exact zeros out), in one kernel:
    CuPy's bincount checked its input with a CUB reduction whose first compile took 4.9 s
    of a ResNet-50 INT8 build (H100, session 15). ``amax`` > 0."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    if x.dtype not in _CTYPE:
        raise UnsupportedError(f"abs_histogram: x is {x.dtype}; expected float32 or float16")
    if not amax > 0 or not 1 <= bins <= 8192:
        raise UnsupportedError(f"abs_histogram: amax {amax}, bins {bins}; expected amax > 0 and "
                               f"1 <= bins <= 8192 (the block's counters live in shared memory)")
    x = _dense(x)
    counts = cp.zeros(bins, cp.uint64)
    if x.size:
        name = f"abs_histogram<{_CTYPE[x.dtype]}>"
        fn = get_function(SOURCE, name)
        blocks = max(1, min(-(-x.size // 256), _sm_count() * HIST_BLOCKS_PER_SM))
        with (stream if stream is not None else cp.cuda.get_current_stream()):
            fn((blocks,), (256,), (x, np.int64(x.size), f32(np.float32(bins / amax)), i32(bins),
                                   i32(bool(drop_zeros)), counts), shared_mem=4 * bins)
    return counts.get().astype(np.int64)


FAMILY = KernelFamily(SOURCE, launch=(quantize_nhwc, quantize_nchw_to_nhwc, abs_histogram))
