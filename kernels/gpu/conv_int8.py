"""INT8 tensor-core implicit-GEMM convolution tactics (kernels/cuda/conv_int8.cu).

The arithmetic is the INT8 contract of kernels/quantize.py, bit for bit:

* activations: NHWC int8 codes at a per-tensor scale s (``quantize_int8.quantize_nhwc``:
  q = saturate(rint(float32(x) * float32(1/s))), rint half to even);
* weights: per-output-channel int8 codes from ``kernels.quantize.quantize_weights``,
  packed KRSC with C zero-padded to 16 (``pack_weight_int8_krsc``);
* exact int32 accumulation (mma.sync m16n8k32 s8.s8.s32);
* epilogue in float32, ``epilogue_int8``'s order and roundings: y = fma(float(acc),
  a[k], b[k]); y = fma(residual, rs, y) (an int8 residual's codes at rs = its scale,
  a float32/float16 one at rs = 1); activation; then int8 at ``s_out`` or float32 /
  float16 (float16 = round-to-nearest of the float32 result). Into int8 codes with ReLU
  or no activation, 1 / s_out is folded into a, b and rs (``epilogue_coefficients``).

Piecewise-linear activations (RELU, CLIP, LEAKY_RELU, RELU6, NONE) are exact;
the transcendental ones run through common.cuh's expf/tanhf/erff and are not
guaranteed bit-equal to NumPy's.

Layout constraints: x contiguous [N, H, W, C] int8 with C % 16 == 0 (one
16-byte cp.async chunk = 16 channels inside one filter tap; pad with
``conv_igemm.pad_channels(x, 16)`` or ``quantize_nhwc(..., c_pad_to=16)``); groups = 1.
One launch, no cuBLAS, no host synchronisation: CUDA-graph capturable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..quantize import quantize_weights
from .activation import act_code
from ._launch import to_krsc
from .compile import f32, get_function, i32
from .conv_igemm import _pair, conv_out_size, prepare_output
from .errors import UnsupportedError
from .family import KernelFamily, resolve_tactic

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
    return resolve_tactic(tactic, TACTICS_BY_NAME, Int8Tactic, "INT8")


def _kernel(tactic: Int8Tactic, out_dtype):
    name = tactic.name_expression(out_dtype)
    return get_function(SOURCE, name, name_expressions=(name,), smem_bytes=tactic.smem_bytes)


def compile_all(tactics=INT8_TACTICS, out_dtypes=(np.int8,)):
    """Compile the given tactics now (build time rather than first use) for the given
    output types (precompile: every one, ``OUT_CODES``)."""
    for t in tactics:
        for dt in out_dtypes:
            _kernel(t, dt)


def pack_weight_int8_krsc(w, layout="KCRS", c_pad_to=C_ALIGN):
    """Float weights -> (cupy int8 [K, R, S, Cp], cupy float32 s_w [K]).

    Quantised on the host by ``kernels.quantize.quantize_weights`` (symmetric,
    per output channel, codes in [-127, 127]); C zero-padded up to ``c_pad_to``.
    ``layout``: "KCRS" (TensorRT / PyTorch), "RSCK" (TensorFlow HWIO) or "KRSC".
    """
    import cupy as cp  # optional dependency: only where the weights go to the device
    w = np.asarray(w.get() if hasattr(w, "get") else w, dtype=np.float32)
    w = np.ascontiguousarray(to_krsc(w, layout))
    q, s = quantize_weights(w)                                # per axis 0 = K
    K, R, S, C = q.shape
    Cp = -(-C // c_pad_to) * c_pad_to
    out = np.zeros((K, R, S, Cp), np.int8)
    out[..., :C] = q
    return cp.asarray(out), cp.asarray(s.astype(np.float32))


def _f32vec(v, K, what):
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
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
                               f"(quantize_nhwc(c_pad_to=16) / conv_igemm.pad_channels(x, 16))")
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
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
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


def _compile_every_output(tactics=INT8_TACTICS, out_dtypes=None):
    """What precompile builds: each tile for the output types a network's layers store
    (``out_dtypes``; engine/gpu/precompile.py passes them), else for int8, float32 and
    float16 output."""
    compile_all(tactics, out_dtypes=tuple(out_dtypes) if out_dtypes else tuple(OUT_CODES))


# INT8 tiles: precompiled for INT8 builds only
FAMILY = KernelFamily(SOURCE, compile=_compile_every_output, launch=(conv2d_int8,),
                      int8_tiles=INT8_TACTICS)
