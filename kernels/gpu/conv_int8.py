"""INT8 tensor-core implicit-GEMM convolution tactics (kernels/cuda/conv_int8.cu).

The arithmetic is the INT8 contract of kernels/quantize.py, bit for bit:

* activations: NHWC int8 codes at a per-tensor scale s (``quantize_nhwc``:
  q = saturate(rint(float32(x) * float32(1/s))), rint half to even);
* weights: per-output-channel int8 codes from ``kernels.quantize.quantize_weights``,
  packed KRSC with C zero-padded to 16 (``pack_weight_int8_krsc``);
* exact int32 accumulation (mma.sync m16n8k32 s8.s8.s32);
* epilogue in float32 with no FMA contraction, in ``epilogue_int8``'s order:
  y = float(acc) * (s_in * s_w[k]); + bias[k]; + residual (int8 dequantised at
  its own scale, or float32/float16); activation; then int8 at ``s_out`` or
  float32 / float16 (float16 = round-to-nearest of the float32 result).

Piecewise-linear activations (RELU, CLIP, LEAKY_RELU, RELU6, NONE) are exact;
the transcendental ones run through common.cuh's expf/tanhf/erff and are not
guaranteed bit-equal to NumPy's.

Layout constraints: x contiguous [N, H, W, C] int8 with C % 16 == 0 (one
16-byte cp.async chunk = 16 channels inside one filter tap; pad with
``conv_tc.pad_channels(x, 16)`` or ``quantize_nhwc(..., c_pad_to=16)``); groups = 1.
One launch, no cuBLAS, no host synchronisation: CUDA-graph capturable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .activation import act_code
from .compile import f32, get_function, i32
from .conv_tc import _pair, conv_out_size, prepare_output
from .errors import UnsupportedError

SOURCE = "conv_int8.cu"
C_ALIGN = 16
OUT_CODES = {np.dtype(np.int8): 0, np.dtype(np.float32): 1, np.dtype(np.float16): 2}
RES_CODES = {np.dtype(np.int8): 1, np.dtype(np.float32): 2, np.dtype(np.float16): 3}


@dataclass(frozen=True)
class Int8Tactic:
    """One tile configuration of conv_int8_igemm (plain data, as the builder stores it)."""
    name: str
    bm: int
    bn: int
    bk: int          # bytes = int8 elements per k-tile (multiple of 64)
    wm: int
    wn: int
    stages: int
    minb: int = 0
    kind: str = "int8"

    @property
    def threads(self) -> int:
        return self.wm * self.wn * 32

    @property
    def smem_bytes(self) -> int:
        return max(self.stages * (self.bm + self.bn) * (self.bk + 16), self.bm * (self.bn + 8) * 4)

    def name_expression(self, out_dtype) -> str:
        code = OUT_CODES[np.dtype(out_dtype)]
        return (f"conv_int8_igemm<{self.bm},{self.bn},{self.bk},{self.wm},{self.wn},"
                f"{self.stages},{code},{self.minb}>")


INT8_TACTICS = (
    Int8Tactic("i8_128x128x64_w2x4_s4", 128, 128, 64, 2, 4, 4),
    Int8Tactic("i8_128x128x128_w2x4_s3", 128, 128, 128, 2, 4, 3),
    Int8Tactic("i8_256x128x64_w4x2_s3", 256, 128, 64, 4, 2, 3),
    Int8Tactic("i8_128x256x64_w2x4_s3", 128, 256, 64, 2, 4, 3),
    Int8Tactic("i8_128x64x64_w2x2_s4", 128, 64, 64, 2, 2, 4),
    Int8Tactic("i8_64x64x64_w2x2_s4", 64, 64, 64, 2, 2, 4),
    # 8 warps of 32x32 warp tiles, capped at 128 registers (2+ CTAs per SM): for
    # the memory-bound 1x1 layers with C or K = 64 (short reductions). The same
    # with 32x64 warp tiles (128x128) spills 56 bytes under the cap: left out.
    Int8Tactic("i8_128x64x64_w4x2_s3_mb2", 128, 64, 64, 4, 2, 3, minb=2),
)
TACTICS_BY_NAME = {t.name: t for t in INT8_TACTICS}


def _tactic(tactic):
    if isinstance(tactic, str):
        try:
            return TACTICS_BY_NAME[tactic]
        except KeyError:
            raise UnsupportedError(f"INT8 tactic {tactic!r}; valid: {', '.join(TACTICS_BY_NAME)}") from None
    if not isinstance(tactic, Int8Tactic):
        raise UnsupportedError(f"tactic {tactic!r}; expected an Int8Tactic or one of "
                               f"{', '.join(TACTICS_BY_NAME)}")
    return tactic


def _kernel(tactic: Int8Tactic, out_dtype):
    name = tactic.name_expression(out_dtype)
    return get_function(SOURCE, name, name_expressions=(name,), smem_bytes=tactic.smem_bytes)


def compile_all(tactics=INT8_TACTICS, out_dtypes=(np.int8,)):
    """Compile the given tactics now (build time rather than first use)."""
    for t in tactics:
        for dt in out_dtypes:
            _kernel(t, dt)


def pack_weight_int8_krsc(w, layout="KCRS", c_pad_to=C_ALIGN):
    """Float weights -> (cupy int8 [K, R, S, Cp], cupy float32 s_w [K]).

    Quantised on the host by ``kernels.quantize.quantize_weights`` (symmetric,
    per output channel, codes in [-127, 127]); C zero-padded up to ``c_pad_to``.
    ``layout``: "KCRS" (TensorRT / PyTorch), "RSCK" (TensorFlow HWIO) or "KRSC".
    """
    import cupy as cp

    from kernels.quantize import quantize_weights
    w = np.asarray(w.get() if hasattr(w, "get") else w, dtype=np.float32)
    if w.ndim != 4:
        raise UnsupportedError(f"weights of rank {w.ndim}; expected 4 ({layout})")
    perm = {"KCRS": (0, 2, 3, 1), "RSCK": (3, 0, 1, 2), "KRSC": (0, 1, 2, 3)}
    if layout not in perm:
        raise UnsupportedError(f"weight layout {layout!r}; valid: {', '.join(perm)}")
    w = np.ascontiguousarray(w.transpose(perm[layout]))       # KRSC
    q, s = quantize_weights(w)                                # per axis 0 = K
    K, R, S, C = q.shape
    Cp = -(-C // c_pad_to) * c_pad_to
    out = np.zeros((K, R, S, Cp), np.int8)
    out[..., :C] = q
    return cp.asarray(out), cp.asarray(s.astype(np.float32))


def quantize_nhwc(x, s, *, c_pad_to=1, out=None, stream=None, variant="scalar"):
    """float32/float16 [..., C] -> int8 [..., Cp] codes at scale ``s`` (Cp = C rounded
    up to ``c_pad_to``, padded channels 0): saturate(rint(x * float32(1/s))).

    variant: "scalar" (one byte per thread), "vec" (one thread per 16-byte chunk of
    codes, kernels/cuda/quantize_int8.cu; ``out`` 16-byte aligned) or "auto" ("vec"
    where ``out`` is aligned and ``FAST_QUANTIZE`` is on, the default; else "scalar"). Every variant computes the same codes, bit for bit.
    """
    import cupy as cp
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
    if _use_vec_quantize(variant, out):
        return _quantize_nhwc_vec(x, out, pixels, C, Cp, inv, stream)
    name = f"quantize_nhwc<{'float' if x.dtype == np.float32 else 'half_t'}>"
    fn = get_function(SOURCE, name, name_expressions=("quantize_nhwc<float>", "quantize_nhwc<half_t>"))
    total = pixels * Cp
    blocks = max(1, min(-(-total // 256), 65535 * 8))
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        fn((blocks,), (256,), (x, out, np.int64(pixels), i32(C), i32(Cp), f32(inv)))
    return out


def _f32vec(v, K, what):
    import cupy as cp
    v = cp.ascontiguousarray(cp.asarray(v, cp.float32))
    if v.shape != (K,):
        raise UnsupportedError(f"{what} {v.shape}; expected ({K},)")
    # read as float4 by the epilogue: keep 16-byte alignment
    return v if v.data.ptr % 16 == 0 else v.copy()


def int8_geometry(x_q, K, R, S, stride, padding, dilation, out_hw, out, out_dtype, s_out,
                  residual, residual_scale):
    """The INT8 launchers' rules past their operand layouts, on shapes and dtypes only
    (no device work, so NumPy arrays serve the CPU tests): output size, output type
    and its scale, residual. Returns the geometry as a dict."""
    N, H, W, C = x_q.shape
    if x_q.size >= 2**31:
        raise UnsupportedError(f"x has {x_q.size} elements; split the batch below 2**31")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if out_hw is None:
        P = conv_out_size(H, R, sh, ph, ph, dh)
        Q = conv_out_size(W, S, sw, pw, pw, dw)
    else:
        P, Q = out_hw
    if P <= 0 or Q <= 0:
        raise UnsupportedError(f"output size {P}x{Q} from input {H}x{W}; expected positive")
    dt = np.dtype(out.dtype if out is not None else out_dtype)
    if dt not in OUT_CODES:
        raise UnsupportedError(f"out dtype {dt}; valid: int8, float32, float16")
    if (dt == np.int8) != (s_out is not None):
        raise UnsupportedError(f"out dtype {dt} with s_out={s_out}: int8 output needs s_out, "
                               f"float output takes none")
    res_kind = 0
    if residual is not None:
        rdt = np.dtype(residual.dtype)
        if rdt not in RES_CODES or residual.shape != (N, P, Q, K) or not residual.flags.c_contiguous:
            raise UnsupportedError(f"residual {residual.shape} {rdt}; expected contiguous "
                                   f"({N}, {P}, {Q}, {K}) int8, float32 or float16")
        if (rdt == np.int8) != (residual_scale is not None):
            raise UnsupportedError(f"residual {rdt} with residual_scale={residual_scale}: an int8 "
                                   f"residual needs its scale, a float one takes none")
        res_kind = RES_CODES[rdt]
    return dict(N=N, H=H, W=W, C=C, K=K, R=R, S=S, P=P, Q=Q, sh=sh, sw=sw, ph=ph, pw=pw,
                dh=dh, dw=dw, dt=dt, res_kind=res_kind)


def check_int8_args(x_q, w_q, stride, padding, dilation, out_hw, out, out_dtype, s_out,
                    residual, residual_scale):
    """conv2d_int8's argument rules (int8 NHWC codes, KRSC weights, C % 16 == 0, then
    ``int8_geometry``), device free; the wgmma INT8 launcher takes the same."""
    if x_q.dtype != np.int8 or w_q.dtype != np.int8:
        raise UnsupportedError(f"x {x_q.dtype}, w {w_q.dtype}; the INT8 conv takes int8 codes")
    if x_q.ndim != 4 or not x_q.flags.c_contiguous:
        raise UnsupportedError(f"x {x_q.shape}; expected contiguous NHWC rank 4")
    if w_q.ndim != 4 or not w_q.flags.c_contiguous:
        raise UnsupportedError(f"weights {w_q.shape}; expected contiguous rank 4 (KRSC)")
    C = x_q.shape[3]
    K, R, S, Cw = w_q.shape
    if C % C_ALIGN:
        raise UnsupportedError(f"C = {C} is not a multiple of {C_ALIGN}; pad channels "
                               f"(quantize_nhwc(c_pad_to=16) / conv_tc.pad_channels(x, 16))")
    if Cw != C:
        raise UnsupportedError(f"weights {w_q.shape}; expected [K, R, S, {C}] (C of x)")
    return int8_geometry(x_q, K, R, S, stride, padding, dilation, out_hw, out, out_dtype, s_out,
                         residual, residual_scale)


def _int8_launch_args(x_q, w_q, g, s_in, s_w, bias, s_out, out, out_channel_offset, residual,
                      residual_scale, act, alpha, beta, res_flags=0):
    """(out, kernel arguments) of every INT8 conv kernel (conv_int8_igemm,
    conv_int8_smallc, conv_wgmma_s8 share one argument list); ``g`` from
    ``int8_geometry``; ``res_flags`` ORed into res_kind (conv_wgmma_s8's 4: residual
    prefetched)."""
    N, P, Q, K = g["N"], g["P"], g["Q"], g["K"]
    out, out_ld, _ = prepare_output(N, P, Q, K, out, g["dt"], out_channel_offset, None)
    res_ld, res = (K, residual) if residual is not None else (0, out)
    s_wv = _f32vec(s_w, K, "s_w")
    has_bias = bias is not None
    bi = _f32vec(bias, K, "bias") if has_bias else s_wv
    inv_out = np.float32(1.0) / np.float32(s_out) if s_out is not None else np.float32(0.0)
    rs = np.float32(residual_scale) if residual_scale is not None else np.float32(0.0)
    return out, (x_q, w_q, out, s_wv, bi, res,
                 i32(N), i32(g["H"]), i32(g["W"]), i32(g["C"]), i32(K), i32(g["R"]), i32(g["S"]),
                 i32(P), i32(Q), i32(g["sh"]), i32(g["sw"]), i32(g["ph"]), i32(g["pw"]),
                 i32(g["dh"]), i32(g["dw"]),
                 i32(out_ld), i32(out_channel_offset), i32(res_ld), i32(g["res_kind"] | res_flags),
                 i32(has_bias), f32(s_in), rs, f32(inv_out), i32(act_code(act)), f32(alpha),
                 f32(beta))


def conv2d_int8(x_q, w_q, s_in, s_w, *, stride=1, padding=0, dilation=1, out_hw=None,
                bias=None, residual=None, residual_scale=None, act=None, alpha=0.0, beta=0.0,
                s_out=None, out_dtype=np.int8, out=None, out_channel_offset=0,
                tactic=INT8_TACTICS[0], stream=None):
    """INT8 convolution with the fused INT8 epilogue, one launch.

    x_q:      cupy int8 [N, H, W, C] codes at scale ``s_in``, contiguous, C % 16 == 0
    w_q:      cupy int8 [K, R, S, C] (``pack_weight_int8_krsc``); s_w: float32 [K]
    stride, dilation: int or (h, w); padding: int or (top, left); bottom/right
              implied by ``out_hw`` (default: symmetric)
    bias:     float32 [K] or None
    residual: [N, P, Q, K] contiguous: int8 codes (then ``residual_scale`` is
              its scale), float32 or float16
    act, alpha, beta: activation (kernels/gpu/activation.py names or codes)
    s_out:    output scale: int8 output (requantised); None: float output
    out_dtype: int8 (needs s_out), float32 or float16
    out, out_channel_offset: optional preallocated [N, P, Q, Ctot] (concat elision)
    Returns ``out``.
    """
    import cupy as cp
    tactic = _tactic(tactic)
    g = check_int8_args(x_q, w_q, stride, padding, dilation, out_hw, out, out_dtype, s_out,
                        residual, residual_scale)
    out, args = _int8_launch_args(x_q, w_q, g, s_in, s_w, bias, s_out, out, out_channel_offset,
                                  residual, residual_scale, act, alpha, beta)
    kern = _kernel(tactic, g["dt"])
    grid = (-(-(g["N"] * g["P"] * g["Q"]) // tactic.bm) * -(-g["K"] // tactic.bn),)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tactic.threads,), args, shared_mem=tactic.smem_bytes)
    return out


# ---- fast quantize (kernels/cuda/quantize_int8.cu) ---------------------------------------
#
# The stem's input in INT8 is the float32 NCHW network input: the engine reformats it to
# NHWC, then quantize_nhwc's scalar kernel writes one byte per thread with a 64-bit
# division per element. The vectorised kernels write 16-byte chunks of codes with 32-bit
# index math where the sizes allow, and quantize_nchw_to_nhwc reads NCHW directly (no
# reformat pass). Same per-element arithmetic as the scalar kernel (q8(x * inv)).

QUANT_SOURCE = "quantize_int8.cu"
QUANTIZE_VARIANTS = ("auto", "vec", "scalar")
# On since the first GPU run showed the vectorised kernels bit-exact with the scalar one
# (tests/gpu/test_conv_int8_smallc_gpu.py; H100, session 3: 0.25 vs 0.67 ms on the ResNet-50
# stem tensor at batch 256). CUPYRT_FAST_QUANTIZE=0 keeps variant="auto" on the scalar kernel.
FAST_QUANTIZE = os.environ.get("CUPYRT_FAST_QUANTIZE") != "0"
_I32 = 2**31
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float16): "half_t"}


def _check_quantize_variant(variant):
    if variant not in QUANTIZE_VARIANTS:
        raise UnsupportedError(f"quantize variant {variant!r}; valid: {', '.join(QUANTIZE_VARIANTS)}")


def _use_vec_quantize(variant, out):
    """"vec" always (it checks its own needs); "auto" only under FAST_QUANTIZE and
    where the codes can be written in aligned 16-byte chunks."""
    return variant == "vec" or (variant == "auto" and FAST_QUANTIZE and out.data.ptr % 16 == 0)


def _index_type(*sizes):
    """32-bit index math when every offset fits (cheaper division), else 64-bit."""
    return ("int", np.int32) if max(sizes) < _I32 else ("long long", np.int64)


def _grid(total, threads=256):
    return (max(1, min(-(-total // threads), 65535 * 8)),)


def _quantize_nhwc_vec(x, out, pixels, C, Cp, inv, stream):
    import cupy as cp
    if out.data.ptr % 16:
        raise UnsupportedError(f"quantize variant 'vec' writes 16-byte chunks: out at address "
                               f"{out.data.ptr:#x} is not 16-byte aligned; use variant='scalar'")
    # DENSE: no padding, the 16 codes of a chunk are 16 consecutive (aligned) inputs
    dense = int(C == Cp and x.data.ptr % 16 == 0)
    ct, it = _index_type(x.size, out.size + 16)      # b0 reaches out.size rounded up to 16
    names = tuple(f"quantize_nhwc_vec<{t},{d},{ct}>" for t in _CTYPE.values() for d in (0, 1))
    fn = get_function(QUANT_SOURCE, f"quantize_nhwc_vec<{_CTYPE[x.dtype]},{dense},{ct}>",
                      name_expressions=names)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        fn(_grid(-(-out.size // 16)), (256,), (x, out, it(pixels), i32(C), i32(Cp), f32(inv)))
    return out


def quantize_nchw_to_nhwc(x, s, *, c_pad_to=4, out=None, stream=None):
    """float32/float16 NCHW [N, C, H, W] (the network input) -> int8 NHWC [N, H, W, Cp]
    codes at scale ``s`` in one pass (no separate reformat); Cp = C rounded up to
    ``c_pad_to``, a multiple of 4; padded channels 0. The codes equal
    ``quantize_nhwc(nchw_to_nhwc(x), s, c_pad_to=...)`` bit for bit."""
    import cupy as cp
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
    fn = get_function(QUANT_SOURCE, f"quantize_nchw_nhwc<{_CTYPE[x.dtype]},{cb},{ct}>",
                      name_expressions=names)
    inv = np.float32(1.0) / np.float32(s)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        fn(_grid(N * -(-HW // 4)), (256,),
           (x, out, i32(N), i32(C), i32(HW), i32(Cp), f32(inv), i32(vec)))
    return out


# ---- small-C (stem) convolution (kernels/cuda/conv_int8_smallc.cu) -------------------------
#
# C <= 4 input channels (RGB padded 3 -> 4): four taps x four channels per 16-byte chunk of
# the reduction, taps flattened over (r, s): a 7x7 reduction is 16 * ceil(49 / 4) = 208
# bytes instead of 784 with C padded to 16. Bit-identical to conv2d_int8 on the input
# padded to 16 channels (the padding adds exact zeros to exact int32 sums). Not in
# INT8_TACTICS / TACTICS_BY_NAME: unvalidated on a GPU, so neither precompiled nor timed
# by default (engine/gpu/int8_tactics.py registers it only on request).

SMALLC_SOURCE = "conv_int8_smallc.cu"
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
    return get_function(SMALLC_SOURCE, name, name_expressions=(name,),
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
    from kernels.quantize import quantize_weights
    w = np.asarray(w.get() if hasattr(w, "get") else w, dtype=np.float32)
    perm = {"KCRS": (0, 2, 3, 1), "RSCK": (3, 0, 1, 2), "KRSC": (0, 1, 2, 3)}
    if w.ndim != 4 or layout not in perm:
        raise UnsupportedError(f"weights of rank {w.ndim} in layout {layout!r}; expected rank 4 "
                               f"in one of {', '.join(perm)}")
    w = np.ascontiguousarray(w.transpose(perm[layout]))       # KRSC
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
    import cupy as cp
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
    import cupy as cp
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
