"""Hopper warpgroup-MMA (wgmma) implicit-GEMM convolution tactics (kernels/cuda/conv_wgmma.cu).

Drop-in tactics for the two mma.sync families, same layouts and same fused epilogues:

* ``conv2d_wgmma``      = ``conv_igemm.conv2d_igemm``  (x NHWC float16, C % 8 == 0; weights
  KRSC float16 from ``conv_igemm.pack_weight_krsc``; FP32 accumulation; scale, bias,
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

from .compile import get_function, offline_arch
from .conv_int8 import OUT_CODES as INT8_OUT_CODES   # conv_wgmma_s8's OUT codes are conv_int8's
from .conv_int8 import _int8_launch_args, check_int8_args
from .conv_igemm import _setup
from .errors import UnsupportedError
from .family import KernelFamily, resolve_tactic

SOURCE = "conv_wgmma.cu"
ARCH_OPTIONS = ("-arch=sm_90a",)
COMPUTE_CAPABILITY = "90"


@dataclass(frozen=True)
class WgmmaTactic:
    """One tile configuration of conv_wgmma_f16 (kind "wgmma") or conv_wgmma_s8 ("wgmma_int8")."""
    name: str
    bm: int          # output pixels per CTA: 64 per consumer warpgroup
    bn: int          # output channels per CTA: the wgmma n (64, 128, 256)
    stages: int      # cp.async ring depth (stages - 2 tiles prefetched)
    kind: str = "wgmma"
    minb: int = 1    # INT8: CTAs an SM its registers must allow (__launch_bounds__)

    @property
    def threads(self) -> int:
        return self.bm * 2

    @property
    def smem_bytes(self) -> int:
        # conv_wgmma.cu Smem<BM, BN, STAGES>::BYTES: the ring or the staged accumulator
        # tile, plus 1024 bytes to align the base for the 128-byte swizzle
        return self.smem_for(None)

    def smem_for(self, k_bytes) -> int:
        """Dynamic shared memory of one launch whose reduction row is ``k_bytes`` long
        (R*S*C elements x element size; None: the largest). The ring only ever fills
        stages [0, k-tiles) (the mainloop prefetches tile kt into stage kt % STAGES and
        stops at the last k-tile), so a layer with fewer 128-byte k-tiles than stages needs
        only those: 1x1 layers with 64-256 channels then fit 2-4x more CTAs per SM."""
        used = self.stages if k_bytes is None else max(1, min(self.stages, -(-k_bytes // 128)))
        return max(used * (self.bm + self.bn) * 128, self.bm * (self.bn + 8) * 4) + 1024

    def name_expression(self, out_dtype, fast=False) -> str:
        dims = f"{self.bm},{self.bn},{self.stages}"
        dt = np.dtype(out_dtype)
        if self.kind == "wgmma":
            # fast: the FAST = 1 instantiation (residual prefetch, fixed-column epilogue)
            return f"conv_wgmma_f16<{dims},{int(dt == np.float32)}{',1' if fast else ''}>"
        minb = f",{self.minb}" if self.minb != 1 else ""
        return f"conv_wgmma_s8<{dims},{INT8_OUT_CODES[dt]}{minb}>"


# (bm, bn, stages): smem per CTA in KiB = ring / epilogue tile + 1
#   128x128 s4: 129 (1 CTA/SM)   128x256 s4: 193   128x128 s3: 97 (2 CTAs/SM)
#   64x128  s4:  97 (2 CTAs/SM)  128x64  s4:  97 (2 CTAs/SM, K = 64 layers)
#   64x64   s4:  65
# Those are the most a launch takes: one with fewer k-tiles than stages (1x1 layers with
# up to 256 channels) gets only the stages it fills (WgmmaTactic.smem_for), e.g. 64x64 on a
# 64-channel 1x1 layer: 19 KiB.
# keep in step with the CUPYRT_NVCC_INSTANTIATE list of conv_wgmma.cu
_TILES = ((128, 128, 4), (128, 256, 4), (128, 128, 3), (64, 128, 4), (128, 64, 4), (64, 64, 4))
TACTICS = tuple(WgmmaTactic(f"wg_{m}x{n}_s{s}", m, n, s) for m, n, s in _TILES)
INT8_TACTICS = tuple(WgmmaTactic(f"wgi8_{m}x{n}_s{s}", m, n, s, kind="wgmma_int8")
                     for m, n, s in _TILES)
# INT8 (engine switch wgmma_int8_3cta, on by default): the 128x64 tile with a three-stage
# ring and registers capped for three CTAs an SM. ResNet-50's stage-1 3x3 layers (C = K = 64)
# ran at two CTAs an SM on the s4 tile, 25 % occupancy and latency-bound (ncu,
# benchmarks/KERNEL_NOTES.md "Session 21"); this tile took them in session 22's A/B
INT8_OCC_TACTICS = (WgmmaTactic("wgi8_128x64_s3_3cta", 128, 64, 3, kind="wgmma_int8", minb=3),)
TACTICS_BY_NAME = {t.name: t for t in TACTICS + INT8_TACTICS + INT8_OCC_TACTICS}


def available(device=None) -> bool:
    """True when CuPy sees a CUDA device of compute capability 9.0 (H100 / H200), or the
    device-free compiles (``compile.offline``) are for one."""
    arch = offline_arch()
    if arch is not None:
        return arch.startswith("sm_" + COMPUTE_CAPABILITY)
    try:
        import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
        return cp.cuda.Device(device).compute_capability == COMPUTE_CAPABILITY
    except Exception:     # no CuPy, no driver, no device
        return False


def require_available(device=None):
    """Raise ``UnsupportedError`` unless the device runs sm_90a code."""
    if available(device):
        return
    try:
        import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
        found = f"compute capability {cp.cuda.Device(device).compute_capability}"
    except Exception as exc:
        found = f"no usable CUDA device ({type(exc).__name__})"
    raise UnsupportedError(f"wgmma convolution needs a compute capability 9.0 device (sm_90a: "
                           f"H100 / H200); found {found}. Use conv_igemm / conv_int8 tactics instead")


def _tactic(tactic, kind):
    return resolve_tactic(tactic, TACTICS_BY_NAME, WgmmaTactic, "wgmma", kind)


def _kernel(tactic: WgmmaTactic, out_dtype, fast=False):
    name = tactic.name_expression(out_dtype, fast)
    # the most a launch may ask for: the ring plus a prefetched residual tile (INT8, and
    # the FAST FP16 instantiation; the default FP16 one keeps its validated setting)
    need = SMEM_LIMIT if (tactic.kind == "wgmma_int8" or fast) else tactic.smem_bytes
    return get_function(SOURCE, name, options=ARCH_OPTIONS, name_expressions=(name,),
                        smem_bytes=need)


def compile_all(tactics=TACTICS + INT8_TACTICS + INT8_OCC_TACTICS, out_dtypes=None, fast=False):
    """Compile the given tactics now (build time rather than first use).

    ``out_dtypes`` default: float16 for the FP16 tactics, int8 for the INT8 ones;
    ``fast``: the FP16 tactics' FAST instantiations instead of the plain ones (a launch
    with ``fast_epilogue`` runs the FAST one only: compiling both cost the precompile
    twice the FP16 modules).
    """
    require_available()
    for t in tactics:
        dts = out_dtypes or ((np.float16,) if t.kind == "wgmma" else (np.int8,))
        for dt in dts:
            _kernel(t, dt, fast=fast and t.kind == "wgmma")


def _grid(tactic, M, K):
    return (-(-M // tactic.bm) * -(-K // tactic.bn),)


SMEM_LIMIT = 227 * 1024     # dynamic shared memory a CTA may opt in to on sm_90


def residual_prefetch_bytes(tactic, smem, residual):
    """Shared memory for the residual tile a wgmma kernel prefetches (INT8: res_kind | 4;
    FP16: has_res | 2), or 0 where it reads the residual from global memory: no residual,
    rows not 16-byte aligned, or the tile would not fit beside ``smem`` (the launch's ring /
    staging bytes)."""
    if residual is None:
        return 0
    rbytes = np.dtype(residual.dtype).itemsize
    extra = tactic.bm * tactic.bn * rbytes
    if (residual.shape[-1] * rbytes) % 16 or residual.data.ptr % 16 or smem + extra > SMEM_LIMIT:
        return 0
    return extra


# ---- FP16 ------------------------------------------------------------------------------
# The INT8 kernel's residual prefetch and fixed-column epilogue, ported to the FP16 kernel
# as its FAST = 1 instantiation (has_res bit 2: residual prefetched), asked for by
# ``conv2d_wgmma(fast_epilogue=True)``: the engine passes its wgmma_f16_fast_epilogue
# setting (CUPYRT_WGMMA_F16_FAST_EPILOGUE, off by default). Correct on an H200
# (tests/gpu/test_conv_wgmma_gpu.py checks it against the default path), speed not yet
# measured: it stays off until a timed run shows it faster. The FAST = 0 instantiation's
# PTX is the validated kernel's.


def f16_epilogue_flags(tactic, smem, residual, fast):
    """(has_res argument, extra shared memory bytes) of one FP16 launch: bit 1 a residual;
    with ``fast`` (the FAST instantiation), where the residual tile fits
    (``residual_prefetch_bytes``), bit 2 and the bytes it takes."""
    flags = int(residual is not None)
    if not fast:
        return flags, 0
    extra = residual_prefetch_bytes(tactic, smem, residual)
    return flags | (2 if extra else 0), extra


def _check_f16(x, w_krsc):
    """Shape / dtype rules of the FP16 kernel that need no device (NumPy arrays work too)."""
    if x.dtype != np.float16 or w_krsc.dtype != np.float16:
        raise UnsupportedError(f"x {x.dtype}, w {w_krsc.dtype}; the wgmma FP16 conv takes float16")
    if x.ndim != 4 or w_krsc.ndim != 4:
        raise UnsupportedError(f"x {x.shape}, w {w_krsc.shape}; expected NHWC and KRSC, rank 4")
    C = x.shape[3]
    if C % 8:
        raise UnsupportedError(f"C = {C} is not a multiple of 8; pad channels (conv_igemm.pad_channels, "
                               f"pack_weight_krsc(c_pad_to=8))")
    if w_krsc.shape[3] != C:
        raise UnsupportedError(f"weights {w_krsc.shape}; expected [K, R, S, {C}] (C of x)")


def conv2d_wgmma(x, w_krsc, *, stride=1, padding=0, dilation=1, out_hw=None,
                 scale=None, bias=None, residual=None, act=None, alpha=0.0, beta=0.0,
                 out=None, out_dtype=np.float16, out_channel_offset=0,
                 tactic=TACTICS[0], stream=None, fast_epilogue=True):
    """out = act((conv(x, w) * scale + bias) + residual) on wgmma, one launch.

    Arguments and result exactly as ``conv_igemm.conv2d_igemm`` (x float16 NHWC with
    C % 8 == 0, w KRSC float16, scale/bias float32 [K], residual of the out dtype,
    out_dtype float16/float32, ``out`` + ``out_channel_offset`` for concat elision);
    ``tactic``: a ``WgmmaTactic`` of ``TACTICS`` or its name. Needs compute capability 9.0.
    ``fast_epilogue``: the FAST = 1 instantiation (residual prefetched into shared memory,
    fixed-column epilogue; the engine's default, CUPYRT_WGMMA_F16_FAST_EPILOGUE); False:
    the FAST = 0 one (the residual read from global memory per row).
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    tactic = _tactic(tactic, "wgmma")
    _check_f16(x, w_krsc)
    require_available()
    g = _setup(x, w_krsc, stride, padding, dilation, out_hw, out, out_dtype,
               out_channel_offset, residual, scale, bias)
    fast = bool(fast_epilogue)
    kern = _kernel(tactic, np.float32 if g.out_f32 else np.float16, fast)
    kr = w_krsc.shape[1] * w_krsc.shape[2] * w_krsc.shape[3]
    smem = tactic.smem_for(2 * kr)
    flags, extra = f16_epilogue_flags(tactic, smem, residual, fast)
    args = g.args(act, alpha, beta, res_flags=flags)
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(_grid(tactic, g.M, g.K), (tactic.threads,), args, shared_mem=smem + extra)
    return g.out


# ---- INT8 ------------------------------------------------------------------------------
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
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    tactic = _tactic(tactic, "wgmma_int8")
    g = check_int8_args(x_q, w_q, stride, padding, dilation, out_hw, out, out_dtype, s_out,
                        residual, residual_scale)
    require_available()
    smem = tactic.smem_for(w_q.shape[1] * w_q.shape[2] * w_q.shape[3])
    extra = residual_prefetch_bytes(tactic, smem, residual)
    out, args = _int8_launch_args(x_q, w_q, g, s_in, s_w, bias, s_out, out, out_channel_offset,
                                  residual, residual_scale, act, alpha, beta,
                                  res_flags=4 if extra else 0)
    kern = _kernel(tactic, g["dt"])
    with (stream if stream is not None else cp.cuda.get_current_stream()):
        kern(_grid(tactic, g["N"] * g["P"] * g["Q"], g["K"]), (tactic.threads,), args,
             shared_mem=smem + extra)
    return out


def _compile_for_builds(tactics, fast_epilogue=False, out_dtypes=None):
    """What precompile builds: FP16 tiles (the FAST instantiations when the engine's
    fast-epilogue setting is on) for ``out_dtypes`` (default float16 and float32), INT8
    tiles for those of ``out_dtypes`` an INT8 tile writes (default int8, float16, float32)."""
    for t in tactics:
        if t.kind == "wgmma":
            dts = [d for d in (out_dtypes or (np.float16, np.float32)) if np.dtype(d) != np.int8]
            compile_all((t,), out_dtypes=dts, fast=fast_epilogue)
        else:
            compile_all((t,), out_dtypes=out_dtypes or (np.int8, np.float16, np.float32))


FAMILY = KernelFamily(SOURCE, compile=_compile_for_builds,
                      launch=(conv2d_wgmma, conv2d_wgmma_int8),
                      tiles=TACTICS, int8_tiles=INT8_TACTICS + INT8_OCC_TACTICS, available=available)
