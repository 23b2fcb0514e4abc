"""Persistent, weight-resident 1x1 stride-1 convolution (kernels/cuda/conv_pw.cu), INT8 and FP16.

For the short-reduction 1x1 layers (ResNet's bottleneck expand: C -> 4C with C of 64..512,
a residual add and ReLU): a CTA keeps a BN x C slice of the weights in shared memory and
walks M tiles through a cp.async ring of X tiles (and residual tiles), so loads stream
while earlier tiles are multiplied and written.

    conv2d_pw_int8   calling convention, numerics (int8_epilogue.cuh) and weight packing of
                     ``conv_int8.conv2d_int8``; bit-identical to it       (PW_TACTICS)
    conv2d_pw_f16    those of ``conv_igemm.conv2d_igemm`` (f16_epilogue.cuh: its epilogue,
                     float32 accumulation in the same k order)           (PW16_TACTICS)
    conv2d_pw3_int8  ``conv2d_pw_int8`` for 3x3, stride 1, padding 1: a stage holds the tile's
                     rows and a halo of one image row each side, read by all nine taps
                     (C % 32 == 0, the weight slice 9C bytes a row)      (PW3_TACTICS)

The grid is (K / BN weight slices) x (CTAs per slice): as many CTAs as fit on the device
at once (``ctas_per_sm`` from the tile's shared memory, threads and registers), divided
among the slices; each CTA then takes every ``gridDim.y``-th M tile.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .compile import get_function, i32
from .conv_igemm import _pair, _require_c8, _setup, _sm_count, conv_out_size
from .conv_int8 import OUT_CODES, _int8_launch_args, check_int8_args
from .errors import UnsupportedError
from .family import KernelFamily, resolve_tactic

SOURCE = "conv_pw.cu"
C_ALIGN = 16                     # int8 channels; FP16: 8 (16-byte rows either way)
# sm_90 (H100 / H200): what one SM holds; the kernel is built for that family only
SMEM_LIMIT = 227 * 1024          # dynamic shared memory one CTA may opt in to
SMEM_PER_SM = 228 * 1024
SMEM_RESERVED = 1024             # the runtime's share of every resident CTA
THREADS_PER_SM = 2048
REGS_PER_SM = 65536
RES_BYTES = {np.dtype(np.int8): 1, np.dtype(np.float32): 4, np.dtype(np.float16): 2}


@dataclass(frozen=True)
class PwTactic:
    """One tile configuration of conv_pw_int8 (kind pw_int8) or conv_pw_f16 (pw_f16), plain
    data as the builder stores it."""
    name: str
    bm: int
    bn: int
    wm: int
    wn: int
    stages: int
    minb: int = 0
    kind: str = "pw_int8"       # pw_int8 / pw_f16 (1x1), pw3_int8 (3x3, padding 1)

    @property
    def threads(self) -> int:
        return self.wm * self.wn * 32

    @property
    def taps(self) -> int:
        """The filter's side: 1 (1x1) or 3 (3x3, padding 1)."""
        return 3 if self.kind == "pw3_int8" else 1

    @property
    def elem(self) -> int:
        """Bytes per input element."""
        return 2 if self.kind == "pw_f16" else 1

    @property
    def c_align(self) -> int:
        """C must be a multiple of it: channels per 16-byte chunk (1x1), per 32-byte k-step
        (3x3: no k-step crosses a tap of the weight row)."""
        return (16 if self.taps == 1 else 32) // self.elem

    def smem_bytes(self, C, res_bytes=0, W=0):
        """Dynamic shared memory for C input channels (a multiple of ``c_align``) with a
        prefetched residual of ``res_bytes`` per element (0: none), images W pixels wide
        (3x3 only): INT8's epilogue coefficients, the warps' staging tiles, the weight slice,
        the zero row (3x3) and the ring (conv_pw.cu's layout)."""
        lds = C * self.elem + 16
        coef = 2 * self.bn * 4 if self.elem == 1 else 0      # INT8: the epilogue coefficients
        staging = self.wm * self.wn * 16 * (self.bn // self.wn + 8) * 4
        weights = self.bn * (self.taps ** 2 * C * self.elem + 16)
        rows, zero = (self.bm, 0) if self.taps == 1 else (self.bm + 2 * (W + 1), lds)
        return coef + staging + weights + zero + self.stages * (rows * lds + self.bm * self.bn * res_bytes)

    def max_channels(self, res_bytes=0, W=0):
        """The largest C (multiple of ``c_align``) whose weight slice and ring fit SMEM_LIMIT."""
        c = 0
        while self.smem_bytes(c + self.c_align, res_bytes, W) <= SMEM_LIMIT:
            c += self.c_align
        return c

    @property
    def out_dtypes(self):
        """The output types this kind writes (an instantiation each)."""
        return tuple(OUT_CODES) if self.elem == 1 else (np.dtype(np.float16), np.dtype(np.float32))

    def name_expression(self, out_dtype) -> str:
        dt = np.dtype(out_dtype)
        if dt not in self.out_dtypes:
            raise UnsupportedError(f"{self.name}: out dtype {dt}; valid: "
                                   f"{', '.join(d.name for d in self.out_dtypes)}")
        if self.elem == 1:
            fn, code = ("conv_pw_int8" if self.taps == 1 else "conv_pw3_int8"), OUT_CODES[dt]
        else:
            fn, code = "conv_pw_f16", int(dt == np.float32)
        return f"{fn}<{self.bm},{self.bn},{self.wm},{self.wn},{self.stages},{code},{self.minb}>"


PW_TACTICS = (
    # 4 warps: 2-3 CTAs per SM up to C = 128; min 1 CTA an SM lifts ptxas's 128-register
    # cap, under which the epilogue's specialised row loops spilled
    PwTactic("pwi8_64x128_s3", 64, 128, 2, 2, 3, 1),
    PwTactic("pwi8_128x128_s2", 128, 128, 4, 2, 2),    # 8 warps, half the W-slice traffic per row
    PwTactic("pwi8_64x256_s2", 64, 256, 2, 4, 2),      # X tile read by half as many slices
)
# FP16 rows are twice as long: narrower weight slices keep C = 512 in shared memory
PW16_TACTICS = (
    PwTactic("pw16_64x128_s3", 64, 128, 2, 2, 3, kind="pw_f16"),    # C <= 192 with a residual
    PwTactic("pw16_128x64_s2", 128, 64, 4, 1, 2, kind="pw_f16"),    # C <= 256
    PwTactic("pw16_64x64_s2", 64, 64, 2, 2, 2, kind="pw_f16"),      # C <= 512
)
# 3x3: the weight slice is 9C bytes a row (BN = 64: ResNet's stage-1 3x3, C = K = 64, fits
# twice an SM); a stage is BM + 2W + 2 rows, so a taller tile re-reads less of its halo
PW3_TACTICS = (
    PwTactic("pw3i8_128x64_s3", 128, 64, 2, 2, 3, 1, kind="pw3_int8"),
    PwTactic("pw3i8_256x64_s2", 256, 64, 4, 2, 2, 1, kind="pw3_int8"),    # 8 warps, 1 CTA an SM
)
TACTICS_BY_NAME = {t.name: t for t in PW_TACTICS + PW16_TACTICS + PW3_TACTICS}


def _tactic(tactic, kind):
    return resolve_tactic(tactic, TACTICS_BY_NAME, PwTactic, "pointwise", kind)


def ctas_per_sm(smem, threads, regs):
    """How many CTAs of ``threads`` threads, ``regs`` registers each and ``smem`` bytes of
    dynamic shared memory one sm_90 SM holds at once (at least 1: a launch still runs)."""
    by_smem = SMEM_PER_SM // (smem + SMEM_RESERVED)
    by_threads = THREADS_PER_SM // threads
    by_regs = REGS_PER_SM // (threads * max(-(-regs // 8) * 8, 1))
    return max(1, min(by_smem, by_threads, by_regs, 32))


def grid_for(M, K, tactic, per_sm, num_sms, ctas_per_slice=None):
    """(slices, CTAs per slice): the K / BN weight slices, each with as many CTAs as the
    device holds at once divided among the slices, never more than there are M tiles.
    ``ctas_per_slice`` forces the count (tests: more M tiles than CTAs)."""
    slices = -(-K // tactic.bn)
    m_tiles = -(-M // tactic.bm)
    if ctas_per_slice is None:
        ctas_per_slice = (num_sms * per_sm) // slices
    return slices, max(1, min(m_tiles, int(ctas_per_slice)))


def pointwise_reason(tactic, C, K, R, S, stride, padding, dilation, res_bytes=0):
    """Why this kernel cannot run a convolution (None: it can): 1x1, stride 1, no padding,
    no dilation, C a multiple of the tile's ``c_align`` within what its shared memory holds."""
    if (R, S) != (1, 1):
        return f"{R}x{S} filter; this kernel runs 1x1 convolutions only"
    if tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or tuple(padding) != (0, 0):
        return (f"stride {tuple(stride)}, padding {tuple(padding)}, dilation {tuple(dilation)}; "
                f"expected stride 1, no padding, dilation 1")
    if C % tactic.c_align:
        return f"C = {C} is not a multiple of {tactic.c_align}"
    if tactic.smem_bytes(C, res_bytes) > SMEM_LIMIT:
        return (f"C = {C}: weight slice and ring take {tactic.smem_bytes(C, res_bytes)} bytes of "
                f"shared memory, more than {SMEM_LIMIT} ({tactic.name} holds C <= "
                f"{tactic.max_channels(res_bytes)})")
    return None


def residual_prefetch_bytes(tactic, C, K, residual, W=0):
    """Bytes per residual element the ring prefetches (0: the epilogue reads the residual
    from global memory): rows of whole 16-byte chunks, a 16-byte-aligned pointer, and room
    for the residual tiles in shared memory (3x3: at image width W)."""
    if residual is None:
        return 0
    b = RES_BYTES[np.dtype(residual.dtype)]
    if (K * b) % 16 or residual.data.ptr % 16 or tactic.smem_bytes(C, b, W) > SMEM_LIMIT:
        return 0
    return b


def check_aligned(fn, **arrays):
    """UnsupportedError naming the first of ``arrays`` (None: absent) whose device address is
    not a multiple of 16: the kernel moves rows in 16-byte chunks (cp.async, vector loads and
    stores), and a row offset that is aligned only helps from an aligned base. Arrays without
    a device pointer (the NumPy stand-ins of the CPU tests) pass."""
    for name, a in arrays.items():
        ptr = getattr(getattr(a, "data", None), "ptr", None)
        if ptr is not None and ptr % 16:
            raise UnsupportedError(f"{fn}: {name} starts at address {ptr:#x}, not a multiple of 16 bytes; "
                                   f"the kernel moves 16-byte chunks: pass an array that starts on a "
                                   f"16-byte boundary (a fresh allocation, or a whole-image batch slice)")


_per_sm = {}              # (kernel, shared memory bytes) -> CTAs one SM holds


def _kernel(tactic, out_dtype, smem=SMEM_LIMIT):
    name = tactic.name_expression(out_dtype)
    return get_function(SOURCE, name, name_expressions=(name,), smem_bytes=smem)


def compile_all(tactics=PW_TACTICS + PW16_TACTICS + PW3_TACTICS, out_dtypes=None):
    """Compile the given tactics now, for the output types in ``out_dtypes`` each can
    write (a network's stored types: engine/gpu/precompile.py), else for every one."""
    want = None if not out_dtypes else {np.dtype(d) for d in out_dtypes}
    for t in tactics:
        for dt in t.out_dtypes:
            if want is None or dt in want:
                _kernel(t, dt)


def _launch(tactic, args, M, C, K, pre, out_dtype, stream, ctas_per_slice, H=0, W=0):
    """Launch with ``args``, the igemm-family argument list (x, w, out, two [K] vectors,
    residual, the window geometry, then out_ld ...): the kernel takes M, C, K (3x3: and the
    image's H, W) in the geometry's place."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    image = (i32(H), i32(W)) if tactic.taps == 3 else ()
    args = args[:6] + (i32(M), i32(C), i32(K)) + image + args[21:]
    smem = tactic.smem_bytes(C, pre, W)
    kern = _kernel(tactic, out_dtype, smem)
    key = (id(kern), smem)
    per_sm = _per_sm.get(key)
    if per_sm is None:        # a driver query: once per kernel and size, not per launch
        per_sm = _per_sm[key] = ctas_per_sm(smem, tactic.threads, kern.num_regs)
    grid = grid_for(M, K, tactic, per_sm, _sm_count(), ctas_per_slice)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(grid, (tactic.threads,), args, shared_mem=smem)


def _window_reason(tactic, C, K, R, S, stride, padding, dilation, P, Q, H, W):
    reason = pointwise_reason(tactic, C, K, R, S, stride, padding, dilation)
    if reason is None and (P, Q) != (H, W):
        reason = f"output {P}x{Q} from input {H}x{W}; a 1x1 stride-1 convolution keeps the size"
    return reason


def conv2d_pw_int8(x_q, w_q, s_in, s_w, *, stride=1, padding=0, dilation=1, out_hw=None,
                   bias=None, residual=None, residual_scale=None, act=None, alpha=0.0, beta=0.0,
                   s_out=None, out_dtype=np.int8, out=None, out_channel_offset=0,
                   tactic=PW_TACTICS[0], stream=None, ctas_per_slice=None):
    """1x1 stride-1 INT8 convolution, persistent and weight-resident, one launch.

    Arguments and result exactly as ``conv_int8.conv2d_int8`` (x int8 NHWC codes with
    C % 16 == 0 at ``s_in``; w int8 [K, 1, 1, C] from ``pack_weight_int8_krsc``; bias;
    int8 / float32 / float16 residual; activation; int8 output at ``s_out`` or float32 /
    float16; channel slice of a wider ``out``), bit-identical to it, for 1x1 filters,
    stride 1, no padding, dilation 1 only. ``ctas_per_slice``: force the CTAs that walk
    each weight slice's M tiles (default: what fills the device).
    """
    return _int8(
        "conv2d_pw_int8", _tactic(tactic, "pw_int8"), x_q, w_q, s_in, s_w,
        dict(stride=stride, padding=padding, dilation=dilation, out_hw=out_hw, bias=bias,
             residual=residual, residual_scale=residual_scale, act=act, alpha=alpha, beta=beta,
             s_out=s_out, out_dtype=out_dtype, out=out, out_channel_offset=out_channel_offset),
        stream, ctas_per_slice)


def _int8(fn, tactic, x_q, w_q, s_in, s_w, kw, stream, ctas_per_slice):
    """The INT8 launchers' common path: conv_int8's argument checks, this kernel's window
    rule (1x1 or 3x3 by the tactic), aligned arrays, residual prefetch, one launch."""
    g = check_int8_args(x_q, w_q, kw["stride"], kw["padding"], kw["dilation"], kw["out_hw"],
                        kw["out"], kw["out_dtype"], kw["s_out"], kw["residual"], kw["residual_scale"])
    window = (g["C"], g["K"], g["R"], g["S"], (g["sh"], g["sw"]), (g["ph"], g["pw"]), (g["dh"], g["dw"]))
    reason = (_window_reason(tactic, *window, g["P"], g["Q"], g["H"], g["W"]) if tactic.taps == 1
              else pointwise3_reason(tactic, *window, g["H"], g["W"], g["P"], g["Q"]))
    if reason is not None:
        raise UnsupportedError(f"{fn}: {reason}")
    residual = kw["residual"]
    check_aligned(fn, x_q=x_q, w_q=w_q, out=kw["out"], residual=residual)
    M, C, K = g["N"] * g["H"] * g["W"], g["C"], g["K"]
    pre = residual_prefetch_bytes(tactic, C, K, residual, g["W"] if tactic.taps == 3 else 0)
    out, args = _int8_launch_args(x_q, w_q, g, s_in, s_w, kw["bias"], kw["s_out"], kw["out"],
                                  kw["out_channel_offset"], residual, kw["residual_scale"], kw["act"],
                                  kw["alpha"], kw["beta"], res_flags=4 if pre else 0)
    _launch(tactic, args, M, C, K, pre, g["dt"], stream, ctas_per_slice, g["H"], g["W"])
    return out


def pointwise3_reason(tactic, C, K, R, S, stride, padding, dilation, H, W, P, Q, res_bytes=0):
    """Why the 3x3 kernel cannot run a convolution (None: it can): 3x3, stride 1, padding 1
    on every side (output H x W), no dilation, C a multiple of 32 within what its shared
    memory holds at this image width."""
    if (R, S) != (3, 3):
        return f"{R}x{S} filter; this kernel runs 3x3 convolutions only"
    if tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or tuple(padding) != (1, 1):
        return (f"stride {tuple(stride)}, padding {tuple(padding)}, dilation {tuple(dilation)}; "
                f"expected stride 1, padding 1, dilation 1")
    if (P, Q) != (H, W):
        return f"output {P}x{Q} from input {H}x{W}; padding 1 on every side keeps the size"
    if C % tactic.c_align:
        return f"C = {C} is not a multiple of {tactic.c_align}"
    if tactic.smem_bytes(C, res_bytes, W) > SMEM_LIMIT:
        return (f"C = {C}, W = {W}: weight slice and ring take {tactic.smem_bytes(C, res_bytes, W)} "
                f"bytes of shared memory, more than {SMEM_LIMIT} ({tactic.name} holds C <= "
                f"{tactic.max_channels(res_bytes, W)} at this width)")
    return None


def conv2d_pw3_int8(x_q, w_q, s_in, s_w, *, stride=1, padding=1, dilation=1, out_hw=None,
                    bias=None, residual=None, residual_scale=None, act=None, alpha=0.0, beta=0.0,
                    s_out=None, out_dtype=np.int8, out=None, out_channel_offset=0,
                    tactic=PW3_TACTICS[0], stream=None, ctas_per_slice=None):
    """3x3 stride-1 padding-1 INT8 convolution, persistent and weight-resident, one launch.

    Arguments and result exactly as ``conv_int8.conv2d_int8`` (w int8 [K, 3, 3, C] from
    ``pack_weight_int8_krsc``), bit-identical to it, for 3x3 filters, stride 1, padding 1,
    dilation 1 and C % 32 == 0 only. ``ctas_per_slice`` as ``conv2d_pw_int8``.
    """
    return _int8(
        "conv2d_pw3_int8", _tactic(tactic, "pw3_int8"), x_q, w_q, s_in, s_w,
        dict(stride=stride, padding=padding, dilation=dilation, out_hw=out_hw, bias=bias,
             residual=residual, residual_scale=residual_scale, act=act, alpha=alpha, beta=beta,
             s_out=s_out, out_dtype=out_dtype, out=out, out_channel_offset=out_channel_offset),
        stream, ctas_per_slice)


def conv2d_pw_f16(x, w_krsc, *, stride=1, padding=0, dilation=1, out_hw=None, scale=None,
                  bias=None, residual=None, act=None, alpha=0.0, beta=0.0, out=None,
                  out_dtype=np.float16, out_channel_offset=0, tactic=PW16_TACTICS[0], stream=None,
                  ctas_per_slice=None):
    """1x1 stride-1 FP16 convolution, persistent and weight-resident, one launch.

    Arguments and result exactly as ``conv_igemm.conv2d_igemm`` (x float16 NHWC with
    C % 8 == 0; w float16 [K, 1, 1, C] from ``pack_weight_krsc``; scale, bias; residual of
    the output's type; activation; float16 / float32 output, a channel slice of a wider
    ``out``), the same epilogue, for 1x1 filters, stride 1, no padding, dilation 1 only.
    ``ctas_per_slice`` as ``conv2d_pw_int8``.
    """
    tactic = _tactic(tactic, "pw_f16")
    if x.dtype == np.float16 and x.ndim == 4 and w_krsc.ndim == 4:
        # the window first, from the shapes: _setup allocates the output
        (_, H, W, C), (K, R, S, _) = x.shape, w_krsc.shape
        st, pd, dl = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
        P, Q = out_hw if out_hw is not None else (
            conv_out_size(H, R, st[0], pd[0], pd[0], dl[0]), conv_out_size(W, S, st[1], pd[1], pd[1], dl[1]))
        reason = _window_reason(tactic, C, K, R, S, st, pd, dl, P, Q, H, W)
        if reason is not None:
            raise UnsupportedError(f"conv2d_pw_f16: {reason}")
    check_aligned("conv2d_pw_f16", x=x, w_krsc=w_krsc, out=out, residual=residual)
    g = _setup(x, w_krsc, stride, padding, dilation, out_hw, out, out_dtype, out_channel_offset,
               residual, scale, bias)
    _require_c8(g, w_krsc)
    pre = residual_prefetch_bytes(tactic, g.C, g.K, residual)
    _launch(tactic, g.args(act, alpha, beta, res_flags=4 if pre else 0), g.M, g.C, g.K, pre,
            g.out.dtype, stream, ctas_per_slice)
    return g.out


FAMILY = KernelFamily(SOURCE, compile=compile_all, launch=(conv2d_pw_int8, conv2d_pw_f16, conv2d_pw3_int8),
                      tiles=PW16_TACTICS, int8_tiles=PW_TACTICS + PW3_TACTICS)

__all__ = ["PW_TACTICS", "PW16_TACTICS", "PW3_TACTICS", "PwTactic", "conv2d_pw_f16", "conv2d_pw_int8",
           "conv2d_pw3_int8", "check_aligned", "ctas_per_sm", "grid_for", "pointwise_reason",
           "pointwise3_reason", "residual_prefetch_bytes", "FAMILY"]
