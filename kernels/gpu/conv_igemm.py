"""Tensor-core (mma.sync) implicit-GEMM convolution (kernels/cuda/conv_igemm.cu).

Layouts: activations NHWC float16 with C % 8 == 0 (``pad_channels`` pads the
network input, e.g. RGB 3 -> 8); weights packed once as KRSC float16 by
``pack_weight_krsc``; output NHWC float16 or float32, optionally written into
a wider buffer at a channel offset (concat elision).

Each ``ConvTactic`` is one tile shape; the builder times the candidates
(``IGEMM_TACTICS``, ``IGEMM_TACTICS_LARGE``; the narrow, split-K and small-C tiles where
they apply) and keeps the fastest per layer. Weights are the same for
every tactic, so switching tactics never repacks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activation import act_code
from ._launch import to_krsc
from .compile import f32, get_function, i32
from .errors import UnsupportedError
from .family import KernelFamily, resolve_tactic

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
    kind: str = "igemm"   # "igemm" (conv2d_igemm), "splitk" (conv2d_igemm_splitk),
                          # "smallc" (conv2d_igemm_smallc)

    @property
    def threads(self) -> int:
        return self.wm * self.wn * 32

    @property
    def smem_bytes(self) -> int:
        pipe = self.stages * (self.bm + self.bn) * (self.bk + 8) * 2
        # the split-K kernel writes FP32 partials straight from registers
        epi = self.bm * (self.bn + 8) * 4 if self.v2 and self.kind != "splitk" else 0
        return max(pipe, epi)

    def name_expression(self, out_f32: bool) -> str:
        dims = f"{self.bm},{self.bn},{self.bk},{self.wm},{self.wn},{self.stages}"
        if self.kind == "splitk":       # always FP32 partials; the epilogue kernel casts
            return f"conv_igemm_splitk_f16<{dims},{self.v2},{self.minb}>"
        base = {"igemm": "conv_igemm_f16", "smallc": "conv_igemm_smallc_f16"}[self.kind]
        return f"{base}<{dims},{int(bool(out_f32))},{self.v2},{self.minb}>"


# the candidates the builder times by default
IGEMM_TACTICS = (
    ConvTactic("igemm_128x128x32_w2x4_s4", 128, 128, 32, 2, 4, 4),
    ConvTactic("igemm_128x128x64_w2x4_s3", 128, 128, 64, 2, 4, 3),
    ConvTactic("igemm_128x64x32_w2x2_s4", 128, 64, 32, 2, 2, 4),
    ConvTactic("igemm_64x64x32_w2x2_s4", 64, 64, 32, 2, 2, 4),
    ConvTactic("igemm2_128x128x32_w2x4_s4", 128, 128, 32, 2, 4, 4, v2=1),
    ConvTactic("igemm2_128x128x32_w2x4_s4_mb2", 128, 128, 32, 2, 4, 4, v2=1, minb=2),
    ConvTactic("igemm2_128x128x64_w2x4_s3", 128, 128, 64, 2, 4, 3, v2=1),
    ConvTactic("igemm2_128x64x32_w2x2_s4", 128, 64, 32, 2, 2, 4, v2=1),
    ConvTactic("igemm2_64x64x32_w2x2_s4", 64, 64, 32, 2, 2, 4, v2=1),
)
# never the fastest on ResNet-50 shapes in run 1 (benchmarks/KERNEL_NOTES.md): compiled
# (precompile, benchmarks), not timed
IGEMM_TACTICS_UNTIMED = (
    ConvTactic("igemm_128x128x32_w2x2_s4", 128, 128, 32, 2, 2, 4),
    ConvTactic("igemm_256x128x32_w4x2_s3", 256, 128, 32, 4, 2, 3),
)
# larger V2 tiles for the compute-bound 3x3 layers (8 warps, 64x64 warp tiles,
# 227-238 registers, no spills; 1 block/SM): faster on 15 of 23 ResNet-50 layers at
# batch 256 in device run 4 (conv total 15.69 -> 14.80 ms), correct against cuDNN there
# on every layer (benchmarks/KERNEL_NOTES.md)
IGEMM_TACTICS_LARGE = (
    ConvTactic("igemm2_256x128x32_w4x2_s3", 256, 128, 32, 4, 2, 3, v2=1),
    ConvTactic("igemm2_128x256x32_w2x4_s3", 128, 256, 32, 2, 4, 3, v2=1),
    ConvTactic("igemm2_128x128x64_w2x4_s4", 128, 128, 64, 2, 4, 4, v2=1),
)
ALL_TACTICS = IGEMM_TACTICS + IGEMM_TACTICS_UNTIMED + IGEMM_TACTICS_LARGE

# Narrow tiles (conv2d_igemm) for the 1x1 layers of MobileNet-style networks,
# whose C or K is 16..384: a 128-wide N tile wastes most of its MMAs when
# K = 24 or 32, and BK = 32 wastes half of each k-step when C = 16. BN = 32/64/96
# match K = 16..384 (96 divides 96, 192, 384, 576, 960); BK = 16 tiles are V1
# (the V2 fragment double-buffer needs BK/16 even). ptxas: no spills, 96-210
# registers (benchmarks/KERNEL_NOTES.md). The engine times every candidate.
IGEMM_TACTICS_NARROW = (
    ConvTactic("igemm2_128x32x32_w4x1_s4", 128, 32, 32, 4, 1, 4, v2=1),
    ConvTactic("igemm2_256x32x32_w4x1_s3", 256, 32, 32, 4, 1, 3, v2=1),
    ConvTactic("igemm2_64x32x32_w2x1_s4", 64, 32, 32, 2, 1, 4, v2=1),
    ConvTactic("igemm2_128x64x32_w4x1_s4", 128, 64, 32, 4, 1, 4, v2=1),
    ConvTactic("igemm2_256x64x32_w4x2_s3", 256, 64, 32, 4, 2, 3, v2=1),
    ConvTactic("igemm2_128x96x32_w4x1_s4", 128, 96, 32, 4, 1, 4, v2=1),
    ConvTactic("igemm_128x64x16_w2x2_s4", 128, 64, 16, 2, 2, 4),
    ConvTactic("igemm_128x128x16_w2x4_s4", 128, 128, 16, 2, 4, 4),
)

# Split-K (conv2d_igemm_splitk): small-M layers (batch 1, the FC head) whose
# M x K tiles leave most of the 132 SMs idle. Small tiles: the split count,
# not the tile, supplies the parallelism.
SPLITK_TACTICS = (
    ConvTactic("igemmsk_64x64x32_w2x2_s4", 64, 64, 32, 2, 2, 4, v2=1, kind="splitk"),
    ConvTactic("igemmsk_64x64x64_w2x2_s3", 64, 64, 64, 2, 2, 3, v2=1, kind="splitk"),
    ConvTactic("igemmsk_64x128x32_w2x2_s4", 64, 128, 32, 2, 2, 4, v2=1, kind="splitk"),
    ConvTactic("igemmsk_128x64x32_w2x2_s4", 128, 64, 32, 2, 2, 4, v2=1, kind="splitk"),
)

# Small-C (conv2d_igemm_smallc): the RGB stem, taps packed in pairs (4 channels each).
SMALLC_TACTICS = (
    ConvTactic("igemmsc_128x64x32_w2x2_s4", 128, 64, 32, 2, 2, 4, v2=1, kind="smallc"),
    ConvTactic("igemmsc_128x64x32_w4x2_s4", 128, 64, 32, 4, 2, 4, v2=1, kind="smallc"),
    ConvTactic("igemmsc_64x64x32_w2x2_s4", 64, 64, 32, 2, 2, 4, v2=1, kind="smallc"),
)
TACTICS_BY_NAME = {t.name: t for t in ALL_TACTICS + IGEMM_TACTICS_NARROW + SPLITK_TACTICS
                   + SMALLC_TACTICS}
# the fully-connected head (M is the batch): the two smaller V2 tiles
FC_TACTICS = tuple(TACTICS_BY_NAME[n] for n in ("igemm2_128x64x32_w2x2_s4", "igemm2_64x64x32_w2x2_s4"))


def conv_out_size(size, k, stride, pad_lo, pad_hi, dil):
    """Output extent of one spatial dim (explicit low/high padding)."""
    return (size + pad_lo + pad_hi - dil * (k - 1) - 1) // stride + 1


def pack_weight_krsc(w, layout="KCRS", c_pad_to=8, dtype=np.float16):
    """Weights -> contiguous [K, R, S, Cp] (Cp = C rounded up to ``c_pad_to``, zeros added).

    ``layout``: "KCRS" (TensorRT / PyTorch), "RSCK" (TensorFlow HWIO) or "KRSC".
    Accepts NumPy or CuPy; returns CuPy.
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    w = to_krsc(cp.asarray(w), layout)
    K, R, S, C = w.shape
    Cp = -(-C // c_pad_to) * c_pad_to
    out = cp.zeros((K, R, S, Cp), dtype=dtype)
    out[..., :C] = w.astype(dtype)
    return out


def pad_channels(x, multiple=8):
    """NHWC array with C zero-padded up to a multiple of ``multiple`` (copy only when needed)."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
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
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
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
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
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
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    tactic = _tactic(tactic, "igemm")
    g = _setup(x, w_krsc, stride, padding, dilation, out_hw, out, out_dtype,
               out_channel_offset, residual, scale, bias)
    _require_c8(g, w_krsc)
    kern = _kernel(tactic, g.out_f32)
    grid = (-(-g.M // tactic.bm) * -(-g.K // tactic.bn),)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tactic.threads,), g.args(act, alpha, beta), shared_mem=tactic.smem_bytes)
    return g.out


def _tactic(tactic, kind):
    return resolve_tactic(tactic, TACTICS_BY_NAME, ConvTactic, "igemm", kind)


class _Geometry:
    """Validated shapes and launch arguments shared by the igemm-family launchers."""

    def args(self, act, alpha, beta, res_flags=0):
        """``res_flags``: ORed into has_res (conv_wgmma_f16 FAST's 2: residual prefetched)."""
        return (self.x, self.w, self.out, self.sc, self.bi, self.res,
                i32(self.N), i32(self.H), i32(self.W), i32(self.C), i32(self.K), i32(self.R),
                i32(self.S), i32(self.P), i32(self.Q),
                i32(self.sh), i32(self.sw), i32(self.ph), i32(self.pw), i32(self.dh), i32(self.dw),
                i32(self.out_ld), i32(self.out_off), i32(self.res_ld), i32(int(self.has_res) | res_flags),
                i32(act_code(act)), f32(alpha), f32(beta))


def _setup(x, w_krsc, stride, padding, dilation, out_hw, out, out_dtype, out_channel_offset,
           residual, scale, bias, s_true=None, in_dtype=np.float16):
    # in_dtype: the operand type of the kernel (float16 here; float32 for conv_tf32.py)
    if x.dtype != in_dtype or w_krsc.dtype != in_dtype:
        raise UnsupportedError(f"x {x.dtype}, w {w_krsc.dtype}; the tensor-core conv takes "
                               f"{np.dtype(in_dtype)}")
    if x.ndim != 4 or not x.flags.c_contiguous:
        raise UnsupportedError(f"x {x.shape}; expected contiguous NHWC rank 4")
    g = _Geometry()
    g.N, g.H, g.W, g.C = x.shape
    if w_krsc.ndim != 4 or not w_krsc.flags.c_contiguous:
        raise UnsupportedError(f"weights {w_krsc.shape}; expected contiguous rank 4 (KRSC)")
    if x.size >= 2**31:
        raise UnsupportedError(f"x has {x.size} elements; this kernel indexes with 32 bits per image "
                               f"and needs the batch split below 2**31 elements")
    g.K, g.R, g.S, _ = w_krsc.shape
    g.sh, g.sw = _pair(stride, "stride")
    g.ph, g.pw = _pair(padding, "padding")
    g.dh, g.dw = _pair(dilation, "dilation")
    if out_hw is None:
        g.P = conv_out_size(g.H, g.R, g.sh, g.ph, g.ph, g.dh)
        g.Q = conv_out_size(g.W, s_true or g.S, g.sw, g.pw, g.pw, g.dw)
    else:
        g.P, g.Q = out_hw
    if g.P <= 0 or g.Q <= 0:
        raise UnsupportedError(f"output size {g.P}x{g.Q} from input {g.H}x{g.W}; expected positive")
    dt = np.dtype(out.dtype if out is not None else out_dtype)
    if dt not in (np.float16, np.float32):
        raise UnsupportedError(f"out dtype {dt}; valid: float16, float32")
    g.out, g.out_ld, g.res_ld = prepare_output(g.N, g.P, g.Q, g.K, out, dt, out_channel_offset,
                                               residual)
    g.out_off = out_channel_offset
    g.sc, g.bi = _epilogue_vectors(g.K, scale, bias)
    g.out_f32 = dt == np.float32
    g.M = g.N * g.P * g.Q
    g.x, g.w = x, w_krsc
    g.has_res = residual is not None
    g.res = residual if residual is not None else g.out
    return g


_num_sms = {}


def _require_c8(g, w_krsc):
    """The mma.sync kernels' channel needs: C a multiple of 8, weights [K, R, S, C]."""
    if g.C % 8:
        raise UnsupportedError(f"C = {g.C} is not a multiple of 8; pad channels (pad_channels, "
                               f"pack_weight_krsc(c_pad_to=8))")
    if w_krsc.shape[3] != g.C:
        raise UnsupportedError(f"weights {w_krsc.shape}; expected contiguous [K, R, S, {g.C}]")


def _sm_count():
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    dev = cp.cuda.Device().id
    if dev not in _num_sms:
        _num_sms[dev] = int(cp.cuda.Device(dev).attributes["MultiProcessorCount"])
    return _num_sms[dev]


def splitk_plan(M, K, Kr, tactic, splits=None, num_sms=None):
    """(splits, k-tiles per split) for a split-K launch; every split gets >= 1 k-tile.

    Default: enough splits that tiles x splits reaches about 2 CTAs per SM,
    keeping >= 2 k-tiles per split (and <= 32 splits, to bound the workspace
    and the reduction). ``splits`` forces a count (clipped to the k-tiles).
    """
    tactic = _tactic(tactic, "splitk")
    tiles = -(-M // tactic.bm) * -(-K // tactic.bn)
    kt = -(-Kr // tactic.bk)
    if splits is None:
        sms = num_sms or _sm_count()
        splits = -(-2 * sms // tiles)
        splits = min(splits, 32, max(1, kt // 2))
    splits = max(1, min(int(splits), kt))
    per = -(-kt // splits)
    return -(-kt // per), per


def conv2d_igemm_splitk(x, w_krsc, *, stride=1, padding=0, dilation=1, out_hw=None,
                        scale=None, bias=None, residual=None, act=None, alpha=0.0, beta=0.0,
                        out=None, out_dtype=np.float16, out_channel_offset=0,
                        tactic=SPLITK_TACTICS[0], splits=None, workspace=None, stream=None):
    """conv2d_igemm with the reduction (R*S*C) split over ``splits`` CTAs per output tile.

    Same arguments and result as ``conv2d_igemm`` (x NHWC float16 with C % 8 == 0,
    w KRSC float16, fused scale/bias/residual/activation, out_dtype, concat
    offset), plus:
      splits:    number of reduction splits (default: ``splitk_plan``'s choice)
      workspace: optional float32 cupy array with >= splits * M * K elements
                 (M = N*P*Q); default: allocated per call with cupy.empty
    Two launches: the partial GEMMs (grid tiles x splits, FP32 sums to the
    workspace), then ``splitk_epilogue`` (adds the splits in a fixed order,
    applies the epilogue, casts). No host sync, no cuBLAS: CUDA-graph safe.
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    tactic = _tactic(tactic, "splitk")
    g = _setup(x, w_krsc, stride, padding, dilation, out_hw, out, out_dtype,
               out_channel_offset, residual, scale, bias)
    _require_c8(g, w_krsc)
    n_split, per = splitk_plan(g.M, g.K, g.R * g.S * g.C, tactic, splits)
    need = n_split * g.M * g.K
    if workspace is None:
        workspace = cp.empty(need, cp.float32)
    elif (workspace.dtype != np.float32 or workspace.size < need
          or not workspace.flags.c_contiguous):
        raise UnsupportedError(f"workspace {workspace.shape} {workspace.dtype}; expected contiguous "
                               f"float32 with >= {need} elements ({n_split} splits x {g.M} x {g.K})")
    if need >= 2**31:
        raise UnsupportedError(f"split-K workspace of {need} elements; needs < 2**31 "
                               f"(fewer splits, or conv2d_igemm)")
    kern = _kernel(tactic, False)
    grid = (-(-g.M // tactic.bm) * -(-g.K // tactic.bn), n_split)
    vec4 = ((g.K | g.out_ld | g.out_off | g.res_ld) & 3) == 0
    epi = get_function(SOURCE, f"splitk_epilogue<{int(g.out_f32)},{int(vec4)}>",
                       name_expressions=_EPI_NAMES)
    total = g.M * (g.K // 4 if vec4 else g.K)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tactic.threads,),
             (g.x, g.w, workspace,
              i32(g.N), i32(g.H), i32(g.W), i32(g.C), i32(g.K), i32(g.R), i32(g.S), i32(g.P),
              i32(g.Q), i32(g.sh), i32(g.sw), i32(g.ph), i32(g.pw), i32(g.dh), i32(g.dw),
              i32(per)),
             shared_mem=tactic.smem_bytes)
        epi((max(1, min(-(-total // 256), 1 << 20)),), (256,),
            (workspace, g.out, g.sc, g.bi, g.res, i32(g.M), i32(g.K), i32(n_split),
             i32(g.out_ld), i32(g.out_off), i32(g.res_ld), i32(g.has_res),
             i32(act_code(act)), f32(alpha), f32(beta)))
    return g.out


_EPI_NAMES = tuple(f"splitk_epilogue<{o},{v}>" for o in (0, 1) for v in (0, 1))


def pack_weight_smallc(w, layout="KCRS", dtype=np.float16):
    """Weights -> [K, R, 2*ceil(S/2), 4] for ``conv2d_igemm_smallc`` (C <= 4; zeros added).

    Taps are paired along S: (s, s+1) x 4 channels make one 16-byte chunk of
    the reduction; an odd S gets a zero tap S. Accepts NumPy or CuPy.
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    w = to_krsc(cp.asarray(w), layout)
    K, R, S, C = w.shape
    if C > 4:
        raise UnsupportedError(f"small-C convolution takes C <= 4 input channels; got {C} "
                               f"(use pack_weight_krsc + conv2d_igemm)")
    out = cp.zeros((K, R, 2 * (-(-S // 2)), 4), dtype=dtype)
    out[:, :, :S, :C] = w.astype(dtype)
    return out


def conv2d_igemm_smallc(x, w_pairs, *, stride=1, padding=0, dilation=1, out_hw=None,
                        scale=None, bias=None, residual=None, act=None, alpha=0.0, beta=0.0,
                        out=None, out_dtype=np.float16, out_channel_offset=0,
                        tactic=SMALLC_TACTICS[0], kernel_s=None, stream=None):
    """The stem convolution for C <= 4 input channels, reduction packed in tap pairs.

    Same arguments and result as ``conv2d_igemm`` except:
      x:        float16 [N, H, W, Cs], Cs = 4 or 8 stored channels (RGB padded
                with zeros, as ``pad_channels`` makes); channels 0..3 are read
      w_pairs:  ``pack_weight_smallc`` output [K, R, Se, 4], Se even
      kernel_s: true filter width, used only when ``out_hw`` is None
                (default Se - 1: odd filters such as 7x7)
    One launch (same grid/epilogue as conv2d_igemm). The reduction is
    R * Se * 4 (224 for 7x7) instead of R * S * 8 (392).
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    tactic = _tactic(tactic, "smallc")
    if w_pairs.ndim == 4 and (w_pairs.shape[3] != 4 or w_pairs.shape[2] % 2):
        raise UnsupportedError(f"weights {w_pairs.shape}; expected [K, R, even S, 4] "
                               f"(pack_weight_smallc)")
    g = _setup(x, w_pairs, stride, padding, dilation, out_hw, out, out_dtype,
               out_channel_offset, residual, scale, bias,
               s_true=kernel_s or (w_pairs.shape[2] - 1 if w_pairs.ndim == 4 else None))
    if g.C not in (4, 8):
        raise UnsupportedError(f"small-C convolution reads x with 4 or 8 stored channels; got {g.C}")
    kern = _kernel(tactic, g.out_f32)
    grid = (-(-g.M // tactic.bm) * -(-g.K // tactic.bn),)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tactic.threads,), g.args(act, alpha, beta), shared_mem=tactic.smem_bytes)
    return g.out


def _kernel(tactic: ConvTactic, out_f32: bool):
    # one instantiation per NVRTC run: an FP16 network's layers almost all store half, and
    # compiling the float32-output instantiation beside it doubled the work of every tile
    # (split-K: one FP32-partials kernel whatever the output)
    name = tactic.name_expression(out_f32 and tactic.kind != "splitk")
    return get_function(SOURCE, name, name_expressions=(name,), smem_bytes=tactic.smem_bytes)


def compile_all(tactics=IGEMM_TACTICS, out_dtypes=(np.float16, np.float32)):
    """Compile these tactics for these output dtypes now (build time rather than first
    use); split-K tiles compile their one kernel and the shared epilogue module."""
    for t in tactics:
        if t.kind == "splitk":
            _kernel(t, False)
            get_function(SOURCE, _EPI_NAMES[0], name_expressions=_EPI_NAMES)
            continue
        for dt in out_dtypes:
            _kernel(t, np.dtype(dt) == np.float32)


FAMILY = KernelFamily(SOURCE, compile=compile_all,
                      launch=(conv2d_igemm, conv2d_igemm_splitk, conv2d_igemm_smallc),
                      tiles=tuple(TACTICS_BY_NAME.values()))
