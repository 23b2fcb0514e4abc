"""Hopper warpgroup-MMA (wgmma) implicit-GEMM convolution tactics (kernels/cuda/conv_wgmma.cu).

Drop-in tactics for the two mma.sync families, same layouts and same fused epilogues:

* ``conv2d_wgmma``      = ``conv_tc.conv2d_igemm``  (x NHWC float16, C % 8 == 0; weights
  KRSC float16 from ``conv_tc.pack_weight_krsc``; FP32 accumulation; scale, bias,
  residual, activation; float16 / float32 out, concat offset);
* ``conv2d_wgmma_int8`` = ``conv_int8.conv2d_int8`` (x int8 codes, C % 16 == 0; weights
  from ``conv_int8.pack_weight_int8_krsc``; exact int32 accumulation; the INT8 epilogue of
  kernels/quantize.py bit for bit, shared with conv_int8.cu through int8_epilogue.cuh).

The kernels use ``wgmma.mma_async``, which exists only on the arch-specific target
sm_90a: they are compiled with ``-arch=sm_90a`` (CuPy appends its own ``-arch=sm_90``;
NVRTC then builds the sm_90a target, checked by tests/kernels/test_conv_wgmma_args.py)
and run on compute capability 9.0 devices only (``available()``). Elsewhere every
launcher raises ``UnsupportedError`` after checking its arguments, so a builder that
scores failing tactics as infinitely slow simply skips them.

A tactic is one tile: BM output pixels (64 per consumer warpgroup) x BN output channels,
a STAGES-deep cp.async ring of 128-byte k-tiles (64 halves / 128 int8 per row).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activation import act_code
from .compile import f32, get_function, i32
from .conv_tc import _pair, _setup, conv_out_size, prepare_output
from .errors import UnsupportedError

SOURCE = "conv_wgmma.cu"
ARCH_OPTIONS = ("-arch=sm_90a",)
COMPUTE_CAPABILITY = "90"
INT8_OUT_CODES = {np.dtype(np.int8): 0, np.dtype(np.float32): 1, np.dtype(np.float16): 2}
INT8_RES_CODES = {np.dtype(np.int8): 1, np.dtype(np.float32): 2, np.dtype(np.float16): 3}


@dataclass(frozen=True)
class WgmmaTactic:
    """One tile configuration of conv_wgmma_f16 (kind "wgmma") or conv_wgmma_s8 ("wgmma_int8")."""
    name: str
    bm: int          # output pixels per CTA: 64 per consumer warpgroup
    bn: int          # output channels per CTA: the wgmma n (64, 128, 256)
    stages: int      # cp.async ring depth (stages - 2 tiles prefetched)
    kind: str = "wgmma"

    @property
    def threads(self) -> int:
        return self.bm * 2

    @property
    def smem_bytes(self) -> int:
        # conv_wgmma.cu Smem<BM, BN, STAGES>::BYTES: the ring or the staged accumulator
        # tile, plus 1024 bytes to align the base for the 128-byte swizzle
        return max(self.stages * (self.bm + self.bn) * 128, self.bm * (self.bn + 8) * 4) + 1024

    def name_expression(self, out_dtype) -> str:
        dims = f"{self.bm},{self.bn},{self.stages}"
        dt = np.dtype(out_dtype)
        if self.kind == "wgmma":
            return f"conv_wgmma_f16<{dims},{int(dt == np.float32)}>"
        return f"conv_wgmma_s8<{dims},{INT8_OUT_CODES[dt]}>"


# (bm, bn, stages): smem per CTA in KiB = ring / epilogue tile + 1
#   128x128 s4: 129 (1 CTA/SM)   128x256 s4: 193   128x128 s3: 97 (2 CTAs/SM)
#   64x128  s4:  97 (2 CTAs/SM)  128x64  s4:  97 (2 CTAs/SM, K = 64 layers)
# keep in step with the CUPYRT_NVCC_INSTANTIATE list of conv_wgmma.cu
_TILES = ((128, 128, 4), (128, 256, 4), (128, 128, 3), (64, 128, 4), (128, 64, 4))
TACTICS = tuple(WgmmaTactic(f"wg_{m}x{n}_s{s}", m, n, s) for m, n, s in _TILES)
INT8_TACTICS = tuple(WgmmaTactic(f"wgi8_{m}x{n}_s{s}", m, n, s, kind="wgmma_int8")
                     for m, n, s in _TILES)
TACTICS_BY_NAME = {t.name: t for t in TACTICS + INT8_TACTICS}


def available(device=None) -> bool:
    """True when CuPy sees a CUDA device of compute capability 9.0 (H100 / H200)."""
    try:
        import cupy as cp
        return cp.cuda.Device(device).compute_capability == COMPUTE_CAPABILITY
    except Exception:     # no CuPy, no driver, no device
        return False


def require_available(device=None):
    """Raise ``UnsupportedError`` unless the device runs sm_90a code."""
    if available(device):
        return
    try:
        import cupy as cp
        found = f"compute capability {cp.cuda.Device(device).compute_capability}"
    except Exception as exc:
        found = f"no usable CUDA device ({type(exc).__name__})"
    raise UnsupportedError(f"wgmma convolution needs a compute capability 9.0 device (sm_90a: "
                           f"H100 / H200); found {found}. Use conv_tc / conv_int8 tactics instead")


def _tactic(tactic, kind):
    if isinstance(tactic, str):
        try:
            tactic = TACTICS_BY_NAME[tactic]
        except KeyError:
            raise UnsupportedError(f"wgmma tactic {tactic!r}; valid: "
                                   f"{', '.join(TACTICS_BY_NAME)}") from None
    if not isinstance(tactic, WgmmaTactic):
        raise UnsupportedError(f"tactic {tactic!r}; expected a WgmmaTactic or one of "
                               f"{', '.join(TACTICS_BY_NAME)}")
    if tactic.kind != kind:
        valid = [t.name for t in TACTICS_BY_NAME.values() if t.kind == kind]
        raise UnsupportedError(f"tactic {tactic.name!r} is a {tactic.kind!r} tactic; this function "
                               f"takes {kind!r} tactics: {', '.join(valid)}")
    return tactic


_configured: set = set()


def _kernel(tactic: WgmmaTactic, out_dtype):
    import cupy as cp
    name = tactic.name_expression(out_dtype)
    fn = get_function(SOURCE, name, options=ARCH_OPTIONS, name_expressions=(name,))
    key = (name, cp.cuda.Device().id)
    if key not in _configured:
        if tactic.smem_bytes > 48 * 1024:
            fn.max_dynamic_shared_size_bytes = tactic.smem_bytes
        _configured.add(key)
    return fn


def compile_all(tactics=TACTICS + INT8_TACTICS, out_dtypes=None):
    """Compile the given tactics now (build time rather than first use).

    ``out_dtypes`` default: float16 for the FP16 tactics, int8 for the INT8 ones.
    """
    require_available()
    for t in tactics:
        dts = out_dtypes or ((np.float16,) if t.kind == "wgmma" else (np.int8,))
        for dt in dts:
            _kernel(t, dt)


def _grid(tactic, M, K):
    return (-(-M // tactic.bm) * -(-K // tactic.bn),)


# ---- FP16 ------------------------------------------------------------------------------
def _check_f16(x, w_krsc):
    """Shape / dtype rules of the FP16 kernel that need no device (NumPy arrays work too)."""
    if x.dtype != np.float16 or w_krsc.dtype != np.float16:
        raise UnsupportedError(f"x {x.dtype}, w {w_krsc.dtype}; the wgmma FP16 conv takes float16")
    if x.ndim != 4 or w_krsc.ndim != 4:
        raise UnsupportedError(f"x {x.shape}, w {w_krsc.shape}; expected NHWC and KRSC, rank 4")
    C = x.shape[3]
    if C % 8:
        raise UnsupportedError(f"C = {C} is not a multiple of 8; pad channels (conv_tc.pad_channels, "
                               f"pack_weight_krsc(c_pad_to=8))")
    if w_krsc.shape[3] != C:
        raise UnsupportedError(f"weights {w_krsc.shape}; expected [K, R, S, {C}] (C of x)")


def conv2d_wgmma(x, w_krsc, *, stride=1, padding=0, dilation=1, out_hw=None,
                 scale=None, bias=None, residual=None, act=None, alpha=0.0, beta=0.0,
                 out=None, out_dtype=np.float16, out_channel_offset=0,
                 tactic=TACTICS[0], stream=None):
    """out = act((conv(x, w) * scale + bias) + residual) on wgmma, one launch.

    Arguments and result exactly as ``conv_tc.conv2d_igemm`` (x float16 NHWC with
    C % 8 == 0, w KRSC float16, scale/bias float32 [K], residual of the out dtype,
    out_dtype float16/float32, ``out`` + ``out_channel_offset`` for concat elision);
    ``tactic``: a ``WgmmaTactic`` of ``TACTICS`` or its name. Needs compute capability 9.0.
    """
    import cupy as cp
    tactic = _tactic(tactic, "wgmma")
    _check_f16(x, w_krsc)
    require_available()
    g = _setup(x, w_krsc, stride, padding, dilation, out_hw, out, out_dtype,
               out_channel_offset, residual, scale, bias)
    kern = _kernel(tactic, np.float32 if g.out_f32 else np.float16)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(_grid(tactic, g.M, g.K), (tactic.threads,), g.args(act, alpha, beta),
             shared_mem=tactic.smem_bytes)
    return g.out


# ---- INT8 ------------------------------------------------------------------------------
def _check_int8(x_q, w_q, stride, padding, dilation, out_hw, out, out_dtype, s_out,
                residual, residual_scale):
    """conv_int8.conv2d_int8's argument rules that need no device, in the same order and
    with the same messages (NumPy arrays work too). Returns the geometry as a dict."""
    if x_q.dtype != np.int8 or w_q.dtype != np.int8:
        raise UnsupportedError(f"x {x_q.dtype}, w {w_q.dtype}; the INT8 conv takes int8 codes")
    if x_q.ndim != 4 or not x_q.flags.c_contiguous:
        raise UnsupportedError(f"x {x_q.shape}; expected contiguous NHWC rank 4")
    if w_q.ndim != 4 or not w_q.flags.c_contiguous:
        raise UnsupportedError(f"weights {w_q.shape}; expected contiguous rank 4 (KRSC)")
    N, H, W, C = x_q.shape
    K, R, S, Cw = w_q.shape
    if C % 16:
        raise UnsupportedError(f"C = {C} is not a multiple of 16; pad channels "
                               f"(quantize_nhwc(c_pad_to=16) / conv_tc.pad_channels(x, 16))")
    if Cw != C:
        raise UnsupportedError(f"weights {w_q.shape}; expected [K, R, S, {C}] (C of x)")
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
    if dt not in INT8_OUT_CODES:
        raise UnsupportedError(f"out dtype {dt}; valid: int8, float32, float16")
    if (dt == np.int8) != (s_out is not None):
        raise UnsupportedError(f"out dtype {dt} with s_out={s_out}: int8 output needs s_out, "
                               f"float output takes none")
    res_kind = 0
    if residual is not None:
        rdt = np.dtype(residual.dtype)
        if rdt not in INT8_RES_CODES or residual.shape != (N, P, Q, K) or not residual.flags.c_contiguous:
            raise UnsupportedError(f"residual {residual.shape} {rdt}; expected contiguous "
                                   f"({N}, {P}, {Q}, {K}) int8, float32 or float16")
        if (rdt == np.int8) != (residual_scale is not None):
            raise UnsupportedError(f"residual {rdt} with residual_scale={residual_scale}: an int8 "
                                   f"residual needs its scale, a float one takes none")
        res_kind = INT8_RES_CODES[rdt]
    return dict(N=N, H=H, W=W, C=C, K=K, R=R, S=S, P=P, Q=Q, sh=sh, sw=sw, ph=ph, pw=pw,
                dh=dh, dw=dw, dt=dt, res_kind=res_kind)


def _f32vec(v, K, what):
    import cupy as cp
    v = cp.ascontiguousarray(cp.asarray(v, cp.float32))
    if v.shape != (K,):
        raise UnsupportedError(f"{what} {v.shape}; expected ({K},)")
    # read as float4 by the epilogue: keep 16-byte alignment
    return v if v.data.ptr % 16 == 0 else v.copy()


def conv2d_wgmma_int8(x_q, w_q, s_in, s_w, *, stride=1, padding=0, dilation=1, out_hw=None,
                      bias=None, residual=None, residual_scale=None, act=None, alpha=0.0,
                      beta=0.0, s_out=None, out_dtype=np.int8, out=None, out_channel_offset=0,
                      tactic=INT8_TACTICS[0], stream=None):
    """INT8 convolution with the fused INT8 epilogue on wgmma, one launch.

    Arguments and result exactly as ``conv_int8.conv2d_int8`` (x int8 codes NHWC with
    C % 16 == 0 at scale ``s_in``; w int8 KRSC with per-channel ``s_w``; bias; int8 /
    float32 / float16 residual; activation; int8 out at ``s_out`` or float32 / float16;
    concat offset), bit-identical to it; ``tactic``: one of ``INT8_TACTICS`` or its name.
    Needs compute capability 9.0.
    """
    import cupy as cp
    tactic = _tactic(tactic, "wgmma_int8")
    g = _check_int8(x_q, w_q, stride, padding, dilation, out_hw, out, out_dtype, s_out,
                    residual, residual_scale)
    require_available()
    N, P, Q, K = g["N"], g["P"], g["Q"], g["K"]
    out, out_ld, _ = prepare_output(N, P, Q, K, out, g["dt"], out_channel_offset, None)
    res_ld, res = (K, residual) if residual is not None else (0, out)
    s_wv = _f32vec(s_w, K, "s_w")
    has_bias = bias is not None
    bi = _f32vec(bias, K, "bias") if has_bias else s_wv
    inv_out = np.float32(1.0) / np.float32(s_out) if s_out is not None else np.float32(0.0)
    rs = np.float32(residual_scale) if residual_scale is not None else np.float32(0.0)
    kern = _kernel(tactic, g["dt"])
    args = (x_q, w_q, out, s_wv, bi, res,
            i32(N), i32(g["H"]), i32(g["W"]), i32(g["C"]), i32(K), i32(g["R"]), i32(g["S"]),
            i32(P), i32(Q), i32(g["sh"]), i32(g["sw"]), i32(g["ph"]), i32(g["pw"]),
            i32(g["dh"]), i32(g["dw"]),
            i32(out_ld), i32(out_channel_offset), i32(res_ld), i32(g["res_kind"]), i32(has_bias),
            f32(s_in), rs, f32(inv_out), i32(act_code(act)), f32(alpha), f32(beta))
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(_grid(tactic, N * P * Q, K), (tactic.threads,), args, shared_mem=tactic.smem_bytes)
    return out
