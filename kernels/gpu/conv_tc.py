"""Tensor-core implicit-GEMM convolution tactics (kernels/cuda/conv_igemm.cu).

Layouts: activations NHWC float16 with C % 8 == 0 (``pad_channels`` pads the
network input, e.g. RGB 3 -> 8); weights packed once as KRSC float16 by
``pack_weight_krsc``; output NHWC float16 or float32, optionally written into
a wider buffer at a channel offset (concat elision).

Each ``ConvTactic`` is one tile shape; the builder times them all
(``IGEMM_TACTICS``) and keeps the fastest per layer. Weights are the same for
every tactic, so switching tactics never repacks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activation import act_code
from .compile import f32, get_function, i32
from .errors import UnsupportedError

SOURCE = "conv_igemm.cu"


@dataclass(frozen=True)
class ConvTactic:
    """One tile configuration of conv_igemm_f16 (plain data, as the builder stores it)."""
    name: str
    bm: int
    bn: int
    bk: int
    wm: int          # warps along M
    wn: int          # warps along N (output channels)
    stages: int      # cp.async ring depth
    v2: int = 0      # 1: double-buffered fragments + smem-staged 16-byte epilogue
    minb: int = 0    # __launch_bounds__ min blocks per SM (0: no hint)

    @property
    def threads(self) -> int:
        return self.wm * self.wn * 32

    @property
    def smem_bytes(self) -> int:
        pipe = self.stages * (self.bm + self.bn) * (self.bk + 8) * 2
        epi = self.bm * (self.bn + 8) * 4 if self.v2 else 0
        return max(pipe, epi)

    def name_expression(self, out_f32: bool) -> str:
        return (f"conv_igemm_f16<{self.bm},{self.bn},{self.bk},{self.wm},{self.wn},"
                f"{self.stages},{int(bool(out_f32))},{self.v2},{self.minb}>")


ALL_TACTICS = (
    ConvTactic("igemm_128x128x32_w2x4_s4", 128, 128, 32, 2, 4, 4),
    ConvTactic("igemm_128x128x64_w2x4_s3", 128, 128, 64, 2, 4, 3),
    ConvTactic("igemm_128x64x32_w2x2_s4", 128, 64, 32, 2, 2, 4),
    ConvTactic("igemm_64x64x32_w2x2_s4", 64, 64, 32, 2, 2, 4),
    ConvTactic("igemm2_128x128x32_w2x4_s4", 128, 128, 32, 2, 4, 4, v2=1),
    ConvTactic("igemm2_128x128x32_w2x4_s4_mb2", 128, 128, 32, 2, 4, 4, v2=1, minb=2),
    ConvTactic("igemm2_128x128x64_w2x4_s3", 128, 128, 64, 2, 4, 3, v2=1),
    ConvTactic("igemm2_128x64x32_w2x2_s4", 128, 64, 32, 2, 2, 4, v2=1),
    ConvTactic("igemm2_64x64x32_w2x2_s4", 64, 64, 32, 2, 2, 4, v2=1),
    # never the fastest on ResNet-50 shapes in run 1 (benchmarks/KERNEL_NOTES.md)
    ConvTactic("igemm_128x128x32_w2x2_s4", 128, 128, 32, 2, 2, 4),
    ConvTactic("igemm_256x128x32_w4x2_s3", 256, 128, 32, 4, 2, 3),
)
# the candidates the builder times by default
IGEMM_TACTICS = ALL_TACTICS[:9]
TACTICS_BY_NAME = {t.name: t for t in ALL_TACTICS}


def conv_out_size(size, k, stride, pad_lo, pad_hi, dil):
    """Output extent of one spatial dim (explicit low/high padding)."""
    return (size + pad_lo + pad_hi - dil * (k - 1) - 1) // stride + 1


def pack_weight_krsc(w, layout="KCRS", c_pad_to=8, dtype=np.float16):
    """Weights -> contiguous [K, R, S, Cp] (Cp = C rounded up to ``c_pad_to``, zeros added).

    ``layout``: "KCRS" (TensorRT / PyTorch), "RSCK" (TensorFlow HWIO) or "KRSC".
    Accepts NumPy or CuPy; returns CuPy.
    """
    import cupy as cp
    w = cp.asarray(w)
    if w.ndim != 4:
        raise UnsupportedError(f"weights of rank {w.ndim}; expected 4 ({layout})")
    perm = {"KCRS": (0, 2, 3, 1), "RSCK": (3, 0, 1, 2), "KRSC": (0, 1, 2, 3)}
    if layout not in perm:
        raise UnsupportedError(f"weight layout {layout!r}; valid: {', '.join(perm)}")
    w = w.transpose(perm[layout])
    K, R, S, C = w.shape
    Cp = -(-C // c_pad_to) * c_pad_to
    out = cp.zeros((K, R, S, Cp), dtype=dtype)
    out[..., :C] = w.astype(dtype)
    return out


def pad_channels(x, multiple=8):
    """NHWC array with C zero-padded up to a multiple of ``multiple`` (copy only when needed)."""
    import cupy as cp
    C = x.shape[-1]
    Cp = -(-C // multiple) * multiple
    if Cp == C:
        return x
    out = cp.zeros(x.shape[:-1] + (Cp,), dtype=x.dtype)
    out[..., :C] = x
    return out


def _pair(v, what):
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = tuple(int(t) for t in v)
    if len(v) != 2:
        raise UnsupportedError(f"{what} {v}; expected an int or a pair")
    return v


def _epilogue_vectors(K, scale, bias):
    import cupy as cp
    def vec(v, fill):
        if v is None:
            return cp.full(K, fill, cp.float32)
        v = cp.ascontiguousarray(cp.asarray(v, cp.float32))
        # the V2 epilogue reads scale/bias as float4: keep them 16-byte aligned
        return v if v.data.ptr % 16 == 0 else v.copy()
    sc, bi = vec(scale, 1.0), vec(bias, 0.0)
    if sc.shape != (K,) or bi.shape != (K,):
        raise UnsupportedError(f"scale {sc.shape} / bias {bi.shape}; expected ({K},) each")
    return sc, bi


def prepare_output(N, P, Q, K, out, out_dtype, out_channel_offset, residual):
    """Validate/allocate the output (and residual) and return (out, out_ld, res_ld).

    Shared by every conv tactic so that all of them honour the same contract.
    """
    import cupy as cp
    if out is None:
        if out_channel_offset:
            raise UnsupportedError("out_channel_offset needs a preallocated `out`")
        out = cp.empty((N, P, Q, K), dtype=out_dtype)
    else:
        if out.dtype != np.dtype(out_dtype):
            raise UnsupportedError(f"out dtype {out.dtype}; expected {np.dtype(out_dtype)}")
        if out.ndim != 4 or out.shape[:3] != (N, P, Q) or not out.flags.c_contiguous:
            raise UnsupportedError(f"out {out.shape} (contiguous={out.flags.c_contiguous}); "
                                   f"expected contiguous ({N}, {P}, {Q}, >= {K + out_channel_offset})")
        if out_channel_offset < 0 or out_channel_offset + K > out.shape[3]:
            raise UnsupportedError(f"channels [{out_channel_offset}, {out_channel_offset + K}) do not "
                                   f"fit out's {out.shape[3]} channels")
    res_ld = 0
    if residual is not None:
        if residual.shape != (N, P, Q, K) or residual.dtype != out.dtype or not residual.flags.c_contiguous:
            raise UnsupportedError(f"residual {residual.shape} {residual.dtype}; expected contiguous "
                                   f"({N}, {P}, {Q}, {K}) {out.dtype}")
        res_ld = K
    return out, out.shape[3], res_ld


def conv2d_igemm(x, w_krsc, *, stride=1, padding=0, dilation=1, out_hw=None,
                 scale=None, bias=None, residual=None, act=None, alpha=0.0, beta=0.0,
                 out=None, out_dtype=np.float16, out_channel_offset=0,
                 tactic=IGEMM_TACTICS[0], stream=None):
    """out = act((conv(x, w) * scale + bias) + residual), tensor cores, one launch.

    x:        cupy float16 [N, H, W, C], contiguous, C % 8 == 0
    w_krsc:   cupy float16 [K, R, S, C] (``pack_weight_krsc``)
    stride, dilation: int or (h, w); padding: int or (top, left); bottom/right
              padding is implied by ``out_hw`` (default: symmetric padding)
    scale, bias: float32 [K] or None (1 / 0)
    residual: [N, P, Q, K] contiguous, dtype = out dtype, or None
    act:      activation name (TensorRT ActivationType name), code, or None
    out:      optional preallocated [N, P, Q, Ctot]; result goes to channels
              [out_channel_offset, out_channel_offset + K)
    out_dtype: float16 or float32 (when ``out`` is None)
    tactic:   a ConvTactic or its name
    Returns ``out``.
    """
    import cupy as cp
    if isinstance(tactic, str):
        try:
            tactic = TACTICS_BY_NAME[tactic]
        except KeyError:
            raise UnsupportedError(f"tactic {tactic!r}; valid: {', '.join(TACTICS_BY_NAME)}") from None
    if x.dtype != np.float16 or w_krsc.dtype != np.float16:
        raise UnsupportedError(f"x {x.dtype}, w {w_krsc.dtype}; the tensor-core conv takes float16")
    if x.ndim != 4 or not x.flags.c_contiguous:
        raise UnsupportedError(f"x {x.shape}; expected contiguous NHWC rank 4")
    N, H, W, C = x.shape
    if C % 8:
        raise UnsupportedError(f"C = {C} is not a multiple of 8; pad channels (pad_channels, "
                               f"pack_weight_krsc(c_pad_to=8))")
    if w_krsc.ndim != 4 or w_krsc.shape[3] != C or not w_krsc.flags.c_contiguous:
        raise UnsupportedError(f"weights {w_krsc.shape}; expected contiguous [K, R, S, {C}]")
    if x.size >= 2**31:
        raise UnsupportedError(f"x has {x.size} elements; this kernel indexes with 32 bits per image "
                               f"and needs the batch split below 2**31 elements")
    K, R, S, _ = w_krsc.shape
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
    out_dtype = np.dtype(out.dtype if out is not None else out_dtype)
    if out_dtype not in (np.float16, np.float32):
        raise UnsupportedError(f"out dtype {out_dtype}; valid: float16, float32")
    out, out_ld, res_ld = prepare_output(N, P, Q, K, out, out_dtype, out_channel_offset, residual)
    sc, bi = _epilogue_vectors(K, scale, bias)

    out_f32 = out_dtype == np.float32
    kern = _kernel(tactic, out_f32)
    M = N * P * Q
    grid = (-(-M // tactic.bm) * -(-K // tactic.bn),)
    res = residual if residual is not None else out
    args = (x, w_krsc, out, sc, bi, res,
            i32(N), i32(H), i32(W), i32(C), i32(K), i32(R), i32(S), i32(P), i32(Q),
            i32(sh), i32(sw), i32(ph), i32(pw), i32(dh), i32(dw),
            i32(out_ld), i32(out_channel_offset), i32(res_ld), i32(residual is not None),
            i32(act_code(act)), f32(alpha), f32(beta))
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tactic.threads,), args, shared_mem=tactic.smem_bytes)
    return out


_configured = set()


def _kernel(tactic: ConvTactic, out_f32: bool):
    import cupy as cp
    name = tactic.name_expression(out_f32)
    # compile both output types in one module: one NVRTC run per tile shape
    names = (tactic.name_expression(False), tactic.name_expression(True))
    fn = get_function(SOURCE, name, name_expressions=names)
    key = (name, cp.cuda.Device().id)
    if key not in _configured:
        if tactic.smem_bytes > 48 * 1024:
            fn.max_dynamic_shared_size_bytes = tactic.smem_bytes
        _configured.add(key)
    return fn


def compile_all(tactics=IGEMM_TACTICS):
    """Compile every tactic now (build time rather than first use)."""
    for t in tactics:
        _kernel(t, False)
        _kernel(t, True)
