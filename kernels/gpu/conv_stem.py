"""The FP16 stem convolution for C <= 4 input channels (kernels/cuda/conv_stem.cu): each
output tile's input patch staged once in shared memory, the A operand of mma.sync built
from it, the filter resident in shared memory, persistent CTAs.

Layouts: x NHWC float16 with 4 or 8 stored channels (channels 0..3 read; the reformat
``nchw_to_nhwc_padded(x, float16, 4)`` makes it), or the network input itself, NCHW
float32/float16 C-contiguous with C <= 4 (``layout="NCHW"``: no reformat pass at all);
weights packed once by ``pack_weight_stem`` as [K, T, 4] float16 (taps flattened over
(r, s), T = 4 * ceil(R*S / 4)); output NHWC float16, float32 or int8 codes (an INT8
layer's output computed in FP16 from the float input: ``s_out``), optionally written into
a wider buffer at a channel offset (concat elision). Dilation 1, strides 1 or 2, filters
up to 7x7, K a multiple of 8 (64 output channels per CTA, more through grid.y).

Each ``StemTile`` is one CTA shape (TP output rows x 16 columns); the builder times them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activation import act_code
from ._launch import to_krsc
from .compile import f32, get_function, i32
from .conv_igemm import _epilogue_vectors, _pair, _sm_count, conv_out_size, prepare_output
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "conv_stem.cu"
TQ, BN = 16, 64          # output columns per tile, output channels per CTA (conv_stem.cu)
MAX_FILTER = 7
LAYOUTS = {"NHWC": 0, "NCHW": None}      # NCHW: 1 (float32) or 2 (float16), by dtype
OUT_KINDS = {"float16": 0, "float32": 1, "int8": 2}     # conv_stem.cu's OUT
STORE_CHANNELS = {"float16": 8, "float32": 2, "int8": 16}   # channels per epilogue store


@dataclass(frozen=True)
class StemTile:
    """One CTA shape of conv_stem_f16 (plain data, as the builder stores it)."""
    name: str
    tp: int          # output rows per tile (16 columns each)
    warps: int       # warps per CTA; each takes tp / warps rows x 64 channels
    minb: int        # CTAs per SM (__launch_bounds__ and the persistent grid)
    nchw_f32_out: bool = True   # reads NCHW into a float32 output without register spills

    @property
    def threads(self) -> int:
        return self.warps * 32

    def smem_bytes(self, R, S, sh, sw, out_kind) -> int:
        """conv_stem.cu's Geo::SMEM: weights, two patch buffers, staging (half or int8;
        none for float32), vectors. ``out_kind``: OUT_KINDS' value."""
        ks = -(-R * S // 4)
        w_bytes = BN * (ks * 16 + 8) * 2
        ph, pw = (self.tp - 1) * sh + R, (TQ - 1) * sw + S
        x_bytes = -(-ph * pw * 8 // 16) * 16
        c_bytes = {0: self.tp * 16 * (BN + 8) * 2, 1: 0, 2: self.tp * 16 * (BN + 16)}[int(out_kind)]
        return w_bytes + 2 * x_bytes + c_bytes + 2 * BN * 4

    def name_expression(self, R, S, sh, sw, in_kind, out_kind) -> str:
        return (f"conv_stem_f16<{R},{S},{sh},{sw},{self.tp},{self.warps},{in_kind},"
                f"{int(out_kind)},{self.minb}>")


# ptxas (sm_90, 7x7/2): t8w4 164-168 registers, t16w4 210-250, no spills -- except t16w4
# reading NCHW (44 prefetch registers) into float32 (255 + 32 bytes of spills): refused
STEM_TILES = (
    StemTile("stem_t8w4", 8, 4, 3),
    StemTile("stem_t16w4", 16, 4, 2, nchw_f32_out=False),
)
TILES_BY_NAME = {t.name: t for t in STEM_TILES}


def stem_taps(R, S):
    """Taps of the packed filter: R*S rounded up to a whole k16 step (4 taps)."""
    return -(-R * S // 4) * 4


def pack_weight_stem(w, layout="KCRS", dtype=np.float16, host=False):
    """Weights -> contiguous [K, T, 4] for ``conv2d_stem``: tap t = r*S + s, channel c
    (zeros for c >= C and t >= R*S). ``layout``: "KCRS", "RSCK" (TensorFlow) or "KRSC".
    Returns CuPy (NumPy with ``host=True``)."""
    if host:
        xp = np
    else:
        import cupy as xp  # optional dependency: CuPy only where a kernel is compiled or launched
    w = to_krsc(xp.asarray(w), layout)
    K, R, S, C = w.shape
    if not 0 < C <= 4:
        raise UnsupportedError(f"the stem kernel takes 1 to 4 input channels; got {C}")
    out = xp.zeros((K, stem_taps(R, S), 4), dtype=dtype)
    out[:, :R * S, :C] = w.reshape(K, R * S, C).astype(dtype)
    return out


def _tile(tactic):
    if isinstance(tactic, StemTile):
        return tactic
    try:
        return TILES_BY_NAME[tactic]
    except (KeyError, TypeError):
        raise UnsupportedError(f"stem tile {tactic!r}; valid: {', '.join(TILES_BY_NAME)}") from None


def _input_kind(x, layout):
    """(kernel input kind, true channels C, per-pixel or per-plane channel count the kernel
    indexes with, N, H, W) after checking x against ``layout``."""
    if layout not in LAYOUTS:
        raise UnsupportedError(f"layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if x.ndim != 4 or not x.flags.c_contiguous:
        raise UnsupportedError(f"x {x.shape} (contiguous={x.flags.c_contiguous}); expected a "
                               f"contiguous rank-4 {layout} array")
    if layout == "NHWC":
        N, H, W, Cs = x.shape
        if x.dtype != np.float16 or Cs not in (4, 8):
            raise UnsupportedError(f"NHWC x {x.dtype} with {Cs} stored channels; expected float16 "
                                   f"with 4 or 8 (channels 0..3 read)")
        if H * W * Cs >= 2**31:
            raise UnsupportedError(f"an image of {H * W * Cs} elements; the kernel indexes one "
                                   f"with 32 bits")
        return 0, Cs, N, H, W
    N, C, H, W = x.shape
    if x.dtype not in (np.float32, np.float16):
        raise UnsupportedError(f"NCHW x {x.dtype}; expected float32 or float16")
    if not 0 < C <= 4:
        raise UnsupportedError(f"NCHW x with {C} channels; expected 1 to 4")
    if C * H * W >= 2**31:
        raise UnsupportedError(f"an image of {C * H * W} elements; the kernel indexes one with 32 bits")
    return (1 if x.dtype == np.float32 else 2), C, N, H, W


def _address(a):
    """Device address of a CuPy array, host address of a NumPy one (argument checks)."""
    ptr = getattr(a.data, "ptr", None)
    return a.ctypes.data if ptr is None else ptr


def conv2d_stem(x, w_packed, *, kernel_size, stride=2, padding=3, dilation=1, out_hw=None,
                scale=None, bias=None, act=None, alpha=0.0, beta=0.0, out=None,
                out_dtype=np.float16, out_channel_offset=0, layout="NHWC", s_out=None,
                tactic=STEM_TILES[0], num_sms=None, stream=None):
    """out = act(conv(x, w) * scale + bias) for C <= 4 input channels, one launch; int8
    output: the codes sat(rint(out / s_out)) (round half to even, [-128, 127]).

    x:           NHWC float16 [N, H, W, 4 or 8] (``layout="NHWC"``), or NCHW float32 /
                 float16 [N, C <= 4, H, W] C-contiguous (``layout="NCHW"``)
    w_packed:    ``pack_weight_stem`` output [K, T, 4] float16, K % 8 == 0
    kernel_size: (R, S) or an int, at most 7; stride 1 or 2 per dim; dilation 1
    padding:     (top, left) or an int; bottom/right follow from ``out_hw``
    scale, bias: float32 [K] or None (1 / 0); act: activation name or code
    out:         optional preallocated NHWC [N, P, Q, Ctot] (Ctot and the offset multiples
                 of 8 for float16, 2 for float32, 16 for int8); result in channels
                 [offset, offset + K)
    s_out:       the output's scale, required for (and only with) int8 output
    tactic:      a StemTile or its name; num_sms: the persistent grid's SM count
                 (default: the device's)
    Returns ``out``.
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    tile = _tile(tactic)
    in_kind, C, N, H, W = _input_kind(x, layout)
    R, S = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if _pair(dilation, "dilation") != (1, 1):
        raise UnsupportedError(f"dilation {dilation}; the stem kernel takes 1")
    if not (1 <= R <= MAX_FILTER and 1 <= S <= MAX_FILTER):
        raise UnsupportedError(f"filter {R}x{S}; the stem kernel takes 1..{MAX_FILTER} per dim")
    if sh not in (1, 2) or sw not in (1, 2):
        raise UnsupportedError(f"stride {(sh, sw)}; the stem kernel takes 1 or 2 per dim")
    if w_packed.dtype != np.float16 or w_packed.ndim != 3 or not w_packed.flags.c_contiguous \
            or w_packed.shape[1:] != (stem_taps(R, S), 4):
        raise UnsupportedError(f"weights {w_packed.shape} {w_packed.dtype}; expected contiguous "
                               f"float16 [K, {stem_taps(R, S)}, 4] (pack_weight_stem, {R}x{S})")
    K = w_packed.shape[0]
    if K % 8 or K == 0:
        raise UnsupportedError(f"{K} output channels; the stem kernel takes a positive multiple of 8")
    if out_hw is None:
        P, Q = conv_out_size(H, R, sh, ph, ph, 1), conv_out_size(W, S, sw, pw, pw, 1)
    else:
        P, Q = out_hw
    if P <= 0 or Q <= 0:
        raise UnsupportedError(f"output size {P}x{Q} from input {H}x{W}; expected positive")
    dt = np.dtype(out.dtype if out is not None else out_dtype)
    if dt.name not in OUT_KINDS:
        raise UnsupportedError(f"out dtype {dt}; valid: {', '.join(OUT_KINDS)}")
    out_kind = OUT_KINDS[dt.name]
    if (dt == np.int8) != (s_out is not None):
        raise UnsupportedError("s_out goes with int8 output, and int8 output needs it"
                               f" (out {dt}, s_out {s_out!r})")
    if s_out is not None and not (np.isfinite(s_out) and s_out > 0):
        raise UnsupportedError(f"s_out {s_out!r}; expected a positive finite scale")
    if dt == np.int8 and K % 16:
        raise UnsupportedError(f"{K} output channels into int8; the int8 epilogue stores 16 at once")
    if in_kind and dt == np.float32 and not tile.nchw_f32_out:
        raise UnsupportedError(f"stem tile {tile.name} does not write float32 from an NCHW input "
                               f"(its registers would spill); valid: the NHWC layout, or tiles "
                               f"{', '.join(t.name for t in STEM_TILES if t.nchw_f32_out)}")
    out, out_ld, _ = prepare_output(N, P, Q, K, out, dt, out_channel_offset, None)
    align = STORE_CHANNELS[dt.name]
    if (out_ld | out_channel_offset) % align:
        raise UnsupportedError(f"out with {out_ld} channels at offset {out_channel_offset}; the "
                               f"{dt} epilogue stores {align} channels at once: both multiples "
                               f"of {align}")
    # the kernel's vector accesses need their base addresses aligned (a misaligned one is a
    # sticky fault of the whole CUDA context): cp.async 8-byte pixels of NHWC x, 16-byte
    # weight rows, 16-byte (half) / 8-byte (float) output stores
    for what, a, need in (("x", x, 8 if in_kind == 0 else x.dtype.itemsize),
                          ("w_packed", w_packed, 16), ("out", out, 8 if dt == np.float32 else 16)):
        if _address(a) % need:
            raise UnsupportedError(f"{what} at address {_address(a):#x}; the stem kernel needs it "
                                   f"{need}-byte aligned")
    sc, bi = _epilogue_vectors(K, scale, bias)
    tiles = N * -(-P // tile.tp) * -(-Q // TQ)
    grid = (max(1, min(tiles, (num_sms or _sm_count()) * tile.minb)), -(-K // BN))
    smem = tile.smem_bytes(R, S, sh, sw, out_kind)
    # one instantiation per NVRTC run (precompile builds the ones the stem layer will run:
    # compile_all with its geometry, input kind and output type)
    kern = get_function(SOURCE, tile.name_expression(R, S, sh, sw, in_kind, out_kind), smem_bytes=smem)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tile.threads,),
             (x, w_packed, out, sc, bi, i32(N), i32(H), i32(W), i32(C), i32(K), i32(P), i32(Q),
              i32(ph), i32(pw), i32(out_ld), i32(out_channel_offset), i32(act_code(act)),
              f32(alpha), f32(beta), f32(np.float32(1) / np.float32(s_out) if s_out is not None else 1)),
             shared_mem=smem)
    return out


def compile_all(tiles=STEM_TILES, geometry=(7, 7, 2, 2), in_kinds=(0, 1), out_dtypes=("float16",)):
    """Compile tiles now for one filter geometry (R, S, stride_h, stride_w), the input kinds
    (0 NHWC half, 1 / 2 NCHW float32 / float16) and output types given (the builder's
    precompile passes the stem layer's own: engine/gpu/conv_tactics.py ConvStem), skipping
    what ``conv2d_stem`` refuses (an NCHW input into float32 on a tile without that form)."""
    for t in tiles:
        for k in in_kinds:
            for dt in out_dtypes:
                out_kind = OUT_KINDS[np.dtype(dt).name]
                if k and out_kind == 1 and not t.nchw_f32_out:
                    continue
                get_function(SOURCE, t.name_expression(*geometry, k, out_kind),
                             smem_bytes=t.smem_bytes(*geometry, out_kind))


# precompiled for every FP16 build with an RGB stem, one NVRTC run per geometry and input kind
FAMILY = KernelFamily(SOURCE, compile=compile_all, launch=(conv2d_stem,), tiles=STEM_TILES)
