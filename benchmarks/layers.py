"""Per-layer kernel benchmarks (GPU): one kernel family against the ones it replaces and
against PyTorch (cuDNN), in one process on one card.

    python -m benchmarks layers NAME [--out DIR] [--batches N ...] [--reps N] [--layers L ...]

    kernels    ResNet-50 convolutions: FP16 mma.sync tiles (--tactics) and cuBLAS 1x1  b256, b1
    int8       ResNet-50 convolutions: INT8 mma.sync against FP16 mma.sync              b256, b1
    wgmma      ResNet-50 convolutions: wgmma FP16 and INT8 against mma.sync             b256
    expand     ResNet-50's 1x1 expand layers with their residual, the persistent kernel b256
               (pw8, pw16) against cuDNN's INT8 graph (cudnn8), wgmma and mma.sync, INT8
               and FP16, and the DRAM floor (dram8: the layer's bytes streamed once);
               CUDA-graph timed, GB/s (--families pw8 pw8_def --define NAME: against the
               same tiles compiled with a macro set)
    fp32       ResNet-50 convolutions: 3xTF32, TF32, im2col + SGEMM; torch FP32, no TF32 b256
               (--families tf32x3 tf32x3_base --tf32-base FILE: against another source)
    new        pooling (below), split-K at small M, the small-C stem
    pooling    ResNet's max pool (scalar / vectorised with a runtime window (vec) or the fixed
               3x3 one (window); FP16 and int8 codes) and global average pool, against torch;
               CUDA-graph timed
    mobilenet  MobileNetV2's depthwise 3x3 and 1x1 layers (CUDA-graph timed)
    int8_stem  the ResNet-50 stem from float32 NCHW, step by step (INT8 and FP16 paths)
    s2d_stem   the ResNet-50 stem, whole paths: small-C kernels against space-to-depth +
               our stride-1 INT8 / FP16 kernels                                   b256
    attention  the flash attention tiles at BERT-base shapes against the unfused path

The four convolution names are one measurement (``conv``, PRESETS) over kernel families:
every candidate runs the fused epilogue (bias + ReLU; INT8: requantised codes) and is
checked before it is timed (FP16 against torch's conv + bias + ReLU, rel L2 <= 1e-2; INT8
codes equal to conv_int8's default tile's; FP32 <= 1e-5, TF32 <= 1e-3); PyTorch runs the
bare convolution (channels_last, cudnn.benchmark). A candidate that fails scores infinity.
Timing: CUDA events around one call, median of --reps after 3 warm-ups; at batch <= 8 (or
--graph) a CUDA graph of --calls calls replayed, per call, so Python launch cost is out of
both sides. Totals: layer time x count. ``--precompile`` fills CuPy's kernel cache in
parallel first (engine.gpu.precompile). Writes ``<out>/layers_<NAME>.json``; table last.
"""
import argparse
import datetime
import importlib
import json
import logging
import os
import sys
from functools import cached_property

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.models import graph_ms, median_ms  # noqa: E402  (after the repo root joins the path)

log = logging.getLogger("benchmarks.layers")

# (name, H_in, C, K, R, stride, count in ResNet-50 v1.5)
RESNET50 = [
    ("stem7x7", 224, 3, 64, 7, 2, 1), ("s1_1x1_64_64", 56, 64, 64, 1, 1, 1),
    ("s1_3x3_64", 56, 64, 64, 3, 1, 3), ("s1_1x1_64_256", 56, 64, 256, 1, 1, 4),
    ("s1_1x1_256_64", 56, 256, 64, 1, 1, 2), ("s2_1x1_256_128", 56, 256, 128, 1, 1, 1),
    ("s2_3x3s2_128", 56, 128, 128, 3, 2, 1), ("s2_1x1_128_512", 28, 128, 512, 1, 1, 4),
    ("s2_ds_256_512", 56, 256, 512, 1, 2, 1), ("s2_1x1_512_128", 28, 512, 128, 1, 1, 3),
    ("s2_3x3_128", 28, 128, 128, 3, 1, 3), ("s3_1x1_512_256", 28, 512, 256, 1, 1, 1),
    ("s3_3x3s2_256", 28, 256, 256, 3, 2, 1), ("s3_1x1_256_1024", 14, 256, 1024, 1, 1, 6),
    ("s3_ds_512_1024", 28, 512, 1024, 1, 2, 1), ("s3_1x1_1024_256", 14, 1024, 256, 1, 1, 5),
    ("s3_3x3_256", 14, 256, 256, 3, 1, 5), ("s4_1x1_1024_512", 14, 1024, 512, 1, 1, 1),
    ("s4_3x3s2_512", 14, 512, 512, 3, 2, 1), ("s4_1x1_512_2048", 7, 512, 2048, 1, 1, 3),
    ("s4_ds_1024_2048", 14, 1024, 2048, 1, 2, 1), ("s4_1x1_2048_512", 7, 2048, 512, 1, 1, 2),
    ("s4_3x3_512", 7, 512, 512, 3, 1, 2),
]
FC = ("fc_2048_1000", 1, 2048, 1000, 1, 1, 1)           # the classifier as a 1x1 convolution
# the batch-1 layers split-K was written for (run 3 of KERNEL_NOTES.md)
SPLITK_LAYERS = ("fc_2048_1000", "s4_3x3_512", "s4_1x1_2048_512", "s4_1x1_512_2048", "s3_3x3_256",
                 "s3_1x1_1024_256", "s4_3x3s2_512", "s2_3x3_128")
# MobileNetV2 at 224x224: depthwise 3x3 (name, H_in, C, stride, count), 1x1 as conv rows
MOBILENET_DW = [("dw32_112_s1", 112, 32, 1, 1), ("dw96_112_s2", 112, 96, 2, 1),
                ("dw144_56_s1", 56, 144, 1, 1), ("dw144_56_s2", 56, 144, 2, 1),
                ("dw192_28_s1", 28, 192, 1, 2), ("dw192_28_s2", 28, 192, 2, 1),
                ("dw384_14_s1", 14, 384, 1, 4), ("dw576_14_s1", 14, 576, 1, 2),
                ("dw576_14_s2", 14, 576, 2, 1), ("dw960_7_s1", 7, 960, 1, 3)]
MOBILENET_PW = [(f"pw{h}_{c}_{k}", h, c, k, 1, 1, n) for h, c, k, n in (
    (112, 32, 16, 1), (112, 16, 96, 1), (56, 96, 24, 1), (56, 24, 144, 2), (56, 144, 24, 1),
    (28, 144, 32, 1), (28, 32, 192, 3), (28, 192, 32, 2), (14, 192, 64, 1), (14, 64, 384, 4),
    (14, 384, 64, 3), (14, 384, 96, 1), (14, 96, 576, 3), (14, 576, 96, 2), (7, 576, 160, 1),
    (7, 160, 960, 3), (7, 960, 160, 2), (7, 960, 320, 1), (7, 320, 1280, 1))]
# the mma.sync FP16 tiles the INT8 and wgmma comparisons time (the V2 ones, large included)
MMA_FP16 = ("igemm2_128x128x32_w2x4_s4", "igemm2_128x64x32_w2x2_s4", "igemm2_256x128x32_w4x2_s3",
            "igemm2_128x256x32_w2x4_s3", "igemm2_128x128x64_w2x4_s4")
# i8: codes differing from conv_int8's; i8~ (cuDNN's INT8 graphs, which round a rare tie the
# other way): the fraction of codes that differ
TOLERANCE = {"f16": 1e-2, "f32": 1e-5, "tf32": 1e-3, "i8": 0, "i8~": 1e-4}
INF = float("inf")


def _gpu(name):
    return importlib.import_module(f"kernels.gpu.{name}")


# ---- timing (the loops themselves: models.median_ms, models.graph_ms) ---------------
def timer(args, batch, graph=False):
    """``time(lib, fn) -> ms`` for this batch: graph replay at batch <= 8, with --graph
    or where the measurement asks for it."""
    if graph or args.graph or batch <= 8:
        calls = args.calls if batch > 8 else 20
        return lambda lib, fn: graph_ms(fn, lib, calls, max(args.reps // 2, 5))
    return lambda lib, fn: median_ms(fn, lib, args.reps, warmup=3)


def rel_l2(xp, got, ref):
    got, ref = xp.asarray(got, xp.float64), xp.asarray(ref, xp.float64)
    return float(xp.linalg.norm(got - ref) / max(float(xp.linalg.norm(ref)), 1e-30))


def time_all(cands, time):
    """{name: ms} of every candidate (one that raises scores infinity), and the best name."""
    ms = {}
    for name, fn in cands.items():
        try:
            ms[name] = time(fn)
        except Exception as exc:      # noqa: BLE001 -- reported, the others still timed
            log.warning("%s failed: %s: %s", name, type(exc).__name__, str(exc).splitlines()[:1])
            ms[name] = INF
    return ms, min(ms, key=ms.get)


# ---- convolutions: one layer at one batch, and the kernel families -----------------------
def geometry(layer, n):
    """(padding, output size, true MACs) of ``layer`` at batch ``n``."""
    _, h, c, k, r, stride, _ = layer
    p = (h + 2 * (r // 2) - r) // stride + 1
    return r // 2, p, n * p * p * k * r * r * c


class ConvCase:
    """A layer's random operands (made on the device: host RNG would dominate), the
    layouts each family reads made on first use, and the references it is checked against."""

    def __init__(self, cp, torch, layer, n):
        self.cp, self.torch, self.layer, self.n = cp, torch, layer, n
        self.name, self.h, self.c, self.k, self.r, self.stride, self.count = layer
        self.pad, self.p, self.macs = geometry(layer, n)
        self.xf = cp.random.standard_normal((n, self.h, self.h, self.c), dtype=cp.float32)
        self.wf = (cp.random.standard_normal((self.k, self.c, self.r, self.r), dtype=cp.float32)
                   / np.float32(np.sqrt(self.c * self.r * self.r)))
        self.bias = cp.random.standard_normal(self.k, dtype=cp.float32) * np.float32(0.1)
        self.ones = cp.ones(self.k, cp.float32)
        self.out = {kind: cp.empty((n, self.p, self.p, self.k), dt)
                    for kind, dt in (("f16", cp.float16), ("i8", cp.int8), ("f32", cp.float32))}
        self.geo, self.refs, self.tiles = dict(stride=self.stride, padding=self.pad), {}, ()
        self.res_kw, self.res16_kw = {}, {}   # the residual INT8 / FP16 candidates add (expand)

    def add_residuals(self):
        """A bottleneck's skip input at the output's shape: int8 codes (and their scale) for
        the INT8 candidates, float16 for the FP16 ones and their reference."""
        r = self.cp.random.standard_normal((self.n, self.p, self.p, self.k), dtype=self.cp.float32)
        s = np.float32(4.0) / np.float32(127)
        self.res_kw = dict(residual=_gpu("quantize_int8").quantize_nhwc(r, s), residual_scale=s)
        self.res16_kw = dict(residual=r.astype(self.cp.float16))

    @cached_property
    def x16(self):
        return _gpu("conv_igemm").pad_channels(self.xf.astype(self.cp.float16), 8)

    @cached_property
    def w16(self):
        return _gpu("conv_igemm").pack_weight_krsc(self.wf.astype(self.cp.float16))

    @cached_property
    def int8(self):
        """(x codes with C padded to 16, weight codes, s_in, s_w, s_out)."""
        s_in = np.float32(float(self.cp.abs(self.xf).max())) / np.float32(127)
        wq, s_w = _gpu("conv_int8").pack_weight_int8_krsc(self.wf)
        return (_gpu("quantize_int8").quantize_nhwc(self.xf, s_in, c_pad_to=16), wq, s_in, s_w,
                np.float32(4.0) / np.float32(127))

    def torch_view(self, x):
        return self.torch.from_dlpack(x[..., :self.c].copy()).permute(0, 3, 1, 2)   # NCHW, channels_last

    def torch_weight(self, dtype):
        return self.torch.from_dlpack(self.wf.astype(dtype)).contiguous(memory_format=self.torch.channels_last)

    def reference(self, kind):
        """What a candidate's output is compared with: kind f16 / f32 -> torch's
        relu(conv + bias) as float32 NHWC; i8 -> conv_int8's default tile's codes."""
        if kind == "i8":
            xq, wq, s_in, s_w, s_out = self.int8
            return _gpu("conv_int8").conv2d_int8(xq, wq, s_in, s_w, bias=self.bias, act="RELU",
                                                 s_out=s_out, **self.geo, **self.res_kw).copy()
        F, dt = self.torch.nn.functional, (self.cp.float16 if kind == "f16" else self.cp.float32)
        x = self.torch_view(self.x16 if kind == "f16" else self.xf)
        # true FP32 whatever the peers run in: a TF32 reference is off by 3e-4, the 1e-5 it checks 30 times over
        cudnn, allow = self.torch.backends.cudnn, self.torch.backends.cudnn.allow_tf32
        cudnn.allow_tf32 = False
        try:
            y = F.conv2d(x, self.torch_weight(dt), stride=self.stride, padding=self.pad).float()
        finally:
            cudnn.allow_tf32 = allow
        y = y + self.torch.from_dlpack(self.bias)[None, :, None, None]
        if kind == "f16" and self.res16_kw:
            y = y + self.torch.from_dlpack(self.res16_kw["residual"]).permute(0, 3, 1, 2).float()
        y = self.torch.relu(y)
        return self.cp.from_dlpack(y.permute(0, 2, 3, 1).contiguous())

    def check(self, kind, fn):
        """Run ``fn`` into a poisoned output: its rel L2 against the reference of ``kind``
        (i8: how many codes differ)."""
        store = {"tf32": "f32", "i8~": "i8"}.get(kind, kind)
        out = self.out[store]
        out.fill(0 if store == "i8" else np.nan)
        fn()
        if store not in self.refs:
            self.refs[store] = self.reference(store)
        ref = self.refs[store]
        if store != "i8":
            return rel_l2(self.cp, out, ref)
        wrong = int(self.cp.count_nonzero(out != ref))
        return wrong if kind == "i8" else wrong / out.size


# A family: case -> {candidate: (fn writing case.out[dtype], check kind, or None for a peer)}.
def _f16(c, launch, tactics, x=None):
    kw = dict(scale=c.ones, bias=c.bias, act="RELU", out=c.out["f16"], **c.geo, **c.res16_kw)
    return {t.name: (lambda t=t: launch(c.x16 if x is None else x, c.w16, tactic=t, **kw), "f16") for t in tactics}


def _mma16(c):
    """The case's conv_igemm tiles and, on a 3-channel input, the small-C kernel reading C padded to 8 and to 4."""
    ci = _gpu("conv_igemm")
    cands = _f16(c, ci.conv2d_igemm, c.tiles)
    if c.c <= 4:
        wsc = ci.pack_weight_smallc(c.wf.astype(c.cp.float16))
        for tag, x in (("C8", c.x16), ("C4", ci.pad_channels(c.xf.astype(c.cp.float16), 4))):
            smallc = _f16(c, lambda x, w, **kw: ci.conv2d_igemm_smallc(x, wsc, kernel_s=c.r, **kw), ci.SMALLC_TACTICS, x)
            cands |= {f"{k} {tag}": v for k, v in smallc.items()}
    return cands


def _i8(c, launch, tactics):
    xq, wq, s_in, s_w, s_out = c.int8
    kw = dict(bias=c.bias, act="RELU", s_out=s_out, out=c.out["i8"], **c.geo, **c.res_kw)
    return {t.name: (lambda t=t: launch(xq, wq, s_in, s_w, tactic=t, **kw), "i8") for t in tactics}


def _i8_defined(c, module_name, launch_name, tactics_name):
    """``--define NAME``: the INT8 tiles of a module compiled with ``#define NAME 1`` in front
    of its source (a variant under evaluation: see KERNEL_NOTES "Session 21"), named
    ``<tile>@NAME``, timed beside the plain family in the same process."""
    if not c.define:
        return {}
    from kernels.gpu.compile import read_source
    m = _gpu(module_name)
    text = f"#define {c.define} 1\n" + read_source(m.SOURCE)
    plain = _i8(c, getattr(m, launch_name), getattr(m, tactics_name))
    return {f"{name}@{c.define}": (lambda fn=fn: with_source(m, text, fn), kind)
            for name, (fn, kind) in plain.items()}


def _cudnn8(c):
    """cuDNN's INT8 graph (conv + bias + residual + ReLU + requantisation), the engine's
    conv.cudnn_i8; none when the frontend is not installed."""
    ci8 = _gpu("cudnn_int8")
    xq, wq, s_in, s_w, s_out = c.int8
    if not _gpu("cudnn_graphs").available():
        return {}
    res = c.res_kw.get("residual")
    vectors = ci8.epilogue_vectors(s_in, s_w, c.bias, c.res_kw.get("residual_scale"), s_out, xp=c.cp)
    spec = ci8.Int8ConvSpec(n=c.n, c=xq.shape[-1], h=c.h, w=c.h, k=c.k, r=c.r, s=c.r,
                            stride=(c.stride,) * 2, pre_padding=(c.pad,) * 2, post_padding=(c.pad,) * 2,
                            out_dtype="int8", act="RELU", residual=None if res is None else "int8")
    return {"cudnn_i8": (lambda: ci8.conv2d_int8_graph(xq, wq, vectors, spec, residual=res, out=c.out["i8"]),
                         "i8~")}


_STREAM = r"""
extern "C" __global__ void stream_bound(const int4* x, const int4* r, int4* y, long long rows,
                                        int x16, int y16) {
    // every row: its x bytes and residual bytes read once, output bytes written once
    long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    for (; t < rows * y16; t += (long long)gridDim.x * blockDim.x) {
        const long long m = t / y16;
        const int j = (int)(t - m * y16);
        int4 a = r[t];
        if (j < x16) { const int4 b = x[m * x16 + j]; a.x ^= b.x; a.y ^= b.y; a.z ^= b.z; a.w ^= b.w; }
        y[t] = a;
    }
}"""


def _dram8(c):
    """The layer's DRAM floor: a streaming kernel that reads the int8 input and residual and
    writes the int8 output once each (16-byte vectors, no arithmetic); no check."""
    if c.stride != 1 or c.k % 16 or c.int8[0].shape[-1] % 16:
        return {}
    cp = c.cp
    xq, res, y = c.int8[0], c.res_kw.get("residual"), c.out["i8"]
    if res is None:
        return {}
    kern = cp.RawKernel(_STREAM, "stream_bound")
    rows = np.int64(xq.size // xq.shape[-1])
    grid = (cp.cuda.Device().attributes["MultiProcessorCount"] * 8,)
    args = (xq, res, y, rows, np.int32(xq.shape[-1] // 16), np.int32(c.k // 16))
    return {"stream": (lambda: kern(grid, (256,), args), None)}


def _tf32(c, precise, base=None):
    """The tiles of one precision; ``base``: compiled from that file of kernels/cuda instead
    (``--tf32-base``, e.g. the source before a change, untracked), named ``<tile>@base``."""
    tf = _gpu("conv_tf32")
    x4, w4 = _gpu("conv_igemm").pad_channels(c.xf, 4), tf.pack_weight_krsc_f32(c.wf, "KCRS")
    kw = dict(scale=c.ones, bias=c.bias, act="RELU", out=c.out["f32"], **c.geo)
    kind = "f32" if precise else "tf32"      # tile names say the precision: 3xtf32_* / tf32_*
    run = (lambda t: tf.conv2d_tf32(x4, w4, precise=precise, tactic=t, **kw))
    if base is None:
        return {t.name: (lambda t=t: run(t), kind) for t in tf.tactics_for(precise)}
    return {f"{t.name}@base": (lambda t=t: with_source(tf, base, lambda: run(t)), kind)
            for t in tf.tactics_for(precise)}


def with_source(module, source, fn):
    """``fn()`` with ``module.SOURCE`` (the kernels/cuda file its launches compile) set to
    ``source``; restored after, also when ``fn`` raises."""
    saved = module.SOURCE
    module.SOURCE = source
    try:
        return fn()
    finally:
        module.SOURCE = saved


def _cublas(c, dtype):
    """cuBLAS 1x1 + our epilogue; in FP32 also im2col + SGEMM, the FP32 path before 3xTF32."""
    cg, cp = _gpu("conv_gemm"), c.cp
    kind, x = ("f16", c.x16) if dtype == cp.float16 else ("f32", c.xf)
    kw = dict(scale=c.ones, bias=c.bias, act="RELU", out=c.out[kind])
    cands = {}
    if dtype == cp.float32:
        w_krsc = cp.ascontiguousarray(c.wf.transpose(0, 2, 3, 1))
        cands["im2col_sgemm"] = (lambda: cg.conv2d_im2col(c.xf, w_krsc, **c.geo, **kw), kind)
    if c.r == 1:
        w_kc = c.w16.reshape(c.k, -1) if kind == "f16" else cp.ascontiguousarray(c.wf.reshape(c.k, c.c))
        cands["cublas_1x1"] = (lambda: cg.conv2d_1x1_cublas(x, w_kc, stride=c.stride, **kw), kind)
    return cands


def _torch(c, dtype, linear=False):
    """torch's bare conv2d; ``linear``: F.linear (cuBLAS) on a 1x1 stride-1 layer, a GEMM's floor."""
    F, x = c.torch.nn.functional, c.torch_view(c.x16 if dtype == c.cp.float16 else c.xf)
    if not linear:
        w = c.torch_weight(dtype)
        return {"conv2d": (lambda: F.conv2d(x, w, stride=c.stride, padding=c.pad), None)}
    if c.r != 1 or c.stride != 1:
        return {}
    x, w = x.permute(0, 2, 3, 1).reshape(-1, c.c), c.torch.from_dlpack(c.wf.astype(dtype)).reshape(c.k, c.c)
    return {"linear": (lambda: F.linear(x, w), None)}


FAMILIES = {
    "mma16": _mma16,
    "splitk16": lambda c: _f16(c, _gpu("conv_igemm").conv2d_igemm_splitk, _gpu("conv_igemm").SPLITK_TACTICS),
    "narrow16": lambda c: _f16(c, _gpu("conv_igemm").conv2d_igemm, _gpu("conv_igemm").IGEMM_TACTICS_NARROW),
    "cublas16": lambda c: _cublas(c, c.cp.float16),
    "wgmma16": lambda c: _f16(c, _gpu("conv_wgmma").conv2d_wgmma, _gpu("conv_wgmma").TACTICS),
    "cudnn8": _cudnn8,
    "dram8": _dram8,
    "mma8": lambda c: _i8(c, _gpu("conv_int8").conv2d_int8, _gpu("conv_int8").INT8_TACTICS),
    "wgmma8": lambda c: _i8(c, _gpu("conv_wgmma").conv2d_wgmma_int8,
                            _gpu("conv_wgmma").INT8_TACTICS + _gpu("conv_wgmma").INT8_OCC_TACTICS),
    # the persistent 1x1 kernel: stride-1 1x1 layers only
    "pw8": lambda c: _i8(c, _gpu("conv_pw").conv2d_pw_int8, _gpu("conv_pw").PW_TACTICS)
    if (c.r, c.stride) == (1, 1) else {},
    "pw8_def": lambda c: _i8_defined(c, "conv_pw", "conv2d_pw_int8", "PW_TACTICS")
    if (c.r, c.stride) == (1, 1) else {},
    "wgmma8_def": lambda c: _i8_defined(c, "conv_wgmma", "conv2d_wgmma_int8", "INT8_TACTICS"),
    "pw16": lambda c: _f16(c, _gpu("conv_pw").conv2d_pw_f16, _gpu("conv_pw").PW16_TACTICS)
    if (c.r, c.stride) == (1, 1) else {},
    "tf32x3": lambda c: _tf32(c, True),
    "tf32x3_base": lambda c: _tf32(c, True, base=c.tf32_base) if c.tf32_base else {},
    "tf32": lambda c: _tf32(c, False),
    "sgemm32": lambda c: _cublas(c, c.cp.float32),
    "torch16": lambda c: _torch(c, c.cp.float16),
    "torch32": lambda c: _torch(c, c.cp.float32),
    "linear16": lambda c: _torch(c, c.cp.float16, linear=True),
}
PEERS = ("torch16", "torch32", "linear16")
BOUNDS = ("dram8",)          # floors, neither ours nor a peer


def _v2(ci):
    return [t for t in ci.IGEMM_TACTICS if t.v2]


# a preset: the families it times, default batches and layers, and the mma16 tiles
# (conv_igemm tile names, or a function of the conv_igemm module)
PRESETS = {
    "kernels": dict(families=("mma16", "cublas16", "torch16"), batches=(256, 1), tiles=lambda ci: ci.IGEMM_TACTICS),
    "int8": dict(families=("mma8", "mma16", "torch16"), batches=(256, 1)),
    "wgmma": dict(families=("wgmma16", "mma16", "torch16", "wgmma8", "mma8"), batches=(256,)),
    "fp32": dict(families=("tf32x3", "tf32", "sgemm32", "torch32"), batches=(256,)),
    # the bottleneck expand layers as ResNet runs them: bias + residual + ReLU (torch16: the
    # bare convolution); families that take no residual would fail their check here
    "expand": dict(families=("dram8", "pw8", "cudnn8", "wgmma8", "mma8", "pw16", "wgmma16", "mma16",
                             "torch16"),
                   batches=(256,), residual=True, graph=True,   # cuDNN's host path out of its time
                   layers=("s1_1x1_64_256", "s2_1x1_128_512", "s3_1x1_256_1024", "s4_1x1_512_2048")),
    # run 3's comparisons: split-K at small M, the small-C stem against the channel-padded tiles
    "splitk": dict(families=("mma16", "splitk16", "torch16", "linear16"), batches=(1,), graph=True,
                   layers=SPLITK_LAYERS, tiles=_v2),
    "stem": dict(families=("mma16", "torch16"), batches=(256, 1), layers=("stem7x7",), tiles=_v2),
    # MobileNetV2's 1x1 layers: the narrow tiles against the ones timed before them
    "pointwise": dict(families=("mma16", "splitk16", "narrow16", "torch16"), batches=(256, 1), graph=True,
                      layers=[r[0] for r in MOBILENET_PW],
                      tiles=lambda ci: ci.IGEMM_TACTICS + ci.IGEMM_TACTICS_LARGE),
}


def conv(args, preset, table=None, layers=None, batches=None):
    """Rows of the conv measurement for ``preset`` (PRESETS) over ``table``'s layers."""
    import cupy as cp
    import torch
    spec, ci = PRESETS[preset], _gpu("conv_igemm")
    torch.backends.cudnn.benchmark = True
    families = args.families or spec["families"]
    # FP32 against FP32: cuDNN would otherwise run FP32 convolutions on TF32 tensor cores
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = "torch32" not in families
    wanted = layers or args.layers or spec.get("layers") or [r[0] for r in RESNET50]
    tiles = args.tactics or spec.get("tiles", MMA_FP16)
    tiles = tiles(ci) if callable(tiles) else [ci.TACTICS_BY_NAME[n] for n in tiles]
    cp.random.seed(0)
    rows = []
    for n in batches or args.batches or spec["batches"]:
        time = timer(args, n, spec.get("graph", False))
        for layer in (row for row in (table or RESNET50 + [FC]) if row[0] in wanted):
            c = ConvCase(cp, torch, layer, n)
            c.tiles = tiles
            c.tf32_base = getattr(args, "tf32_base", None)
            c.define = getattr(args, "define", None)
            if spec.get("residual"):
                c.add_residuals()
            row = {"layer": c.name, "batch": n, "count": c.count, "macs": c.macs, "ms": {}, "best": {},
                   "check": {}, "errors": {}}
            if spec.get("residual"):       # int8 traffic: x, residual and output once each
                row["bytes"] = n * c.p * c.p * (2 * c.k + c.c * c.stride * c.stride)
            for fam in families:
                ms = {}
                for cand, (fn, kind) in FAMILIES[fam](c).items():
                    ms[cand] = INF                # a failing candidate scores infinity
                    try:
                        if kind is not None:
                            row["check"][cand] = err = c.check(kind, fn)
                            if not err <= TOLERANCE[kind]:
                                row["errors"][cand] = f"check {err:.3g} > tolerance {TOLERANCE[kind]}"
                                continue
                        ms[cand] = time(torch if fam in PEERS else cp, fn)
                    except Exception as exc:      # noqa: BLE001 -- reported, the others still timed
                        row["errors"][cand] = f"{type(exc).__name__}: {str(exc)[:200]}"
                if ms:
                    row["ms"][fam] = ms
                    row["best"][fam] = min(ms, key=ms.get)
            rows.append(row)
            if row["errors"]:
                log.warning("b%d %s, failed: %s", n, c.name, row["errors"])
            log.info("b%d %s: %s", n, c.name, ", ".join(
                f"{f} {row['ms'][f][b]:.4f} ({b})" for f, b in row["best"].items()))
            del c
            cp.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()
    return rows


def conv_totals(rows):
    """{batch: {family: sum of its best ms x count, "ours": the same for the best of our
    families per layer}}. A family with no candidate on a layer (cuBLAS 1x1 on a 3x3)
    counts what replaces it there: the best of ours, or for a peer the fastest peer."""
    totals = {}
    for r in rows:
        best = {f: r["ms"][f][b] for f, b in r["best"].items()}
        ours = min((v for f, v in best.items() if f not in PEERS + BOUNDS), default=INF)
        peer = min((v for f, v in best.items() if f in PEERS), default=INF)
        t = totals.setdefault(r["batch"], {})
        for f in sorted({f for x in rows if x["batch"] == r["batch"] for f in x["best"]}, key=list(FAMILIES).index):
            t[f] = t.get(f, 0.0) + best.get(f, peer if f in PEERS else ours) * r["count"]
        t["ours"] = t.get("ours", 0.0) + ours * r["count"]
    return totals


def conv_table(rows):
    lines = []
    rate = "GB/s of x, residual and output" if any("bytes" in r for r in rows) else \
        "TFLOP/s or TOPS on the true MACs"
    for n, tot in conv_totals(rows).items():
        fams = [f for f in tot if f != "ours"]
        lines += [f"\nbatch {n}: ms per layer ({rate}), best candidate per family",
                  f"{'layer':18s} {'x':>2s} " + " ".join(f"{f:>15s}" for f in fams) + "  best of ours"]
        for r in (r for r in rows if r["batch"] == n):
            cells = []
            for f in fams:
                v = r["ms"].get(f, {}).get(r["best"].get(f), INF)
                # FP16 families move two bytes an element
                per = (r["bytes"] * (2 if f.endswith("16") else 1) / v / 1e6 if "bytes" in r
                       else 2 * r["macs"] / v / 1e9)
                cells.append(f"{v:8.4f} ({per:4.0f})" if v < INF else f"{'-':>15s}")
            ours = [f"{f}:{b}" for f, b in r["best"].items() if f not in PEERS + BOUNDS]
            lines.append(f"{r['layer'][:18]:18s} {r['count']:2d} " + " ".join(cells) + "  " + ", ".join(ours))
        lines.append("total x count, ms: " + ", ".join(f"{f} {v:.3f}" for f, v in tot.items()))
    return "\n".join(lines)


# ---- the other measurements ------------------------------------------------------------
def pooling(args):
    """ResNet-50's max pool and global average pool: the scalar and vectorised kernels and torch;
    the max pool of int8 codes; runtime window: vec, fixed 3x3: window (CUDA-graph timed)."""
    import cupy as cp
    import torch
    F, pool, rows = torch.nn.functional, _gpu("pooling"), []
    for n in (256, 1):
        time = timer(args, n, graph=True)
        x = cp.random.standard_normal((n, 112, 112, 64), dtype=cp.float32).astype(cp.float16)
        xt = torch.from_dlpack(x).permute(0, 3, 1, 2)
        ref = cp.from_dlpack(F.max_pool2d(xt, 3, 2, 1).permute(0, 2, 3, 1).contiguous())
        q = cp.clip(cp.rint(x * 40), -128, 127).astype(cp.int8)
        qref = cp.from_dlpack(F.max_pool2d(torch.from_dlpack(q.astype(cp.float16)).permute(0, 3, 1, 2),
                                           3, 2, 1).permute(0, 2, 3, 1).contiguous())
        g = cp.random.standard_normal((n, 7, 7, 2048), dtype=cp.float32).astype(cp.float16)
        gref, gt = g.astype(cp.float32).mean(axis=(1, 2)), torch.from_dlpack(g).permute(0, 3, 1, 2)
        for case, ours, theirs, want, variants in (
                (f"maxpool 3x3s2 b{n} 112x112x64", lambda v: pool.pool2d(x, "MAX", 3, stride=2, padding=1, variant=v),
                 lambda: F.max_pool2d(xt, 3, 2, 1), ref, ("scalar", "vec", "window")),
                (f"maxpool int8 3x3s2 b{n} 112x112x64",
                 lambda v: pool.pool2d(q, "MAX", 3, stride=2, padding=1, variant=v),
                 lambda: F.max_pool2d(xt, 3, 2, 1), qref, ("vec", "window")),
                (f"gap b{n} 7x7x2048", lambda v: pool.global_avgpool(g, variant=v),
                 lambda: gt.mean((2, 3)), gref, ("scalar", "vec"))):
            ms, _ = time_all({v: (lambda v=v: ours(v)) for v in variants}, lambda f: time(cp, f))
            err = {v: rel_l2(cp, ours(v), want) for v, t in ms.items() if t < INF}
            rows.append({"case": case, "ms": ms | {"torch": time(torch, theirs)}, "rel_l2": err})
            log.info("%s: %s", case, rows[-1]["ms"])
    return rows


def depthwise(args):
    """MobileNetV2's depthwise layers: the old scalar kernel, v2 per q tile, torch (groups=C + clamp)."""
    import cupy as cp
    import torch
    F, dw, rows = torch.nn.functional, _gpu("conv_dw"), []
    rng = cp.random.default_rng(7)
    for n in args.batches or (256, 1):
        time = timer(args, n, graph=True)
        for name, h, c, s, count in MOBILENET_DW:
            p = (h + 2 - 3) // s + 1
            x = rng.standard_normal((n, h, h, c), dtype=cp.float32).astype(cp.float16)
            w = (rng.standard_normal((3, 3, c), dtype=cp.float32) / 3).astype(cp.float16)
            bias = rng.standard_normal(c, dtype=cp.float32)
            out = cp.empty((n, p, p, c), cp.float16)
            tw = torch.as_tensor(w, device="cuda").permute(2, 0, 1).unsqueeze(1).contiguous()
            tx, tb = torch.as_tensor(x, device="cuda").permute(0, 3, 1, 2), torch.as_tensor(bias, device="cuda").half()
            theirs = lambda: F.conv2d(tx, tw, tb, stride=s, padding=1, groups=c).clamp_(0, 6)  # noqa: E731
            ref = cp.asarray(theirs().permute(0, 2, 3, 1).contiguous())
            kw = dict(stride=s, padding=1, scale=cp.ones(c, cp.float32), bias=bias, act="CLIP", alpha=0.0,
                      beta=6.0, out=out)
            w32 = w.astype(cp.float32)              # the old kernel's weights
            cands = {"old dwconv_nhwc": lambda: _gpu("conv_gemm").conv2d_depthwise(x, w32, **kw)}
            for qt in sorted({dw.DEFAULT_Q_TILE, *dw.Q_TILES} | ({7} if s == 1 else set())):
                cands[f"v2 q{qt}"] = lambda qt=qt: dw.conv2d_depthwise_v2(x, w, q_tile=qt, **kw)
            err = {}
            for k, fn in cands.items():
                out.fill(cp.nan)
                fn()
                err[k] = rel_l2(cp, out, ref)
            ms, best = time_all({k: f for k, f in cands.items() if err[k] <= 1e-2}, lambda f: time(cp, f))
            rows.append({"layer": name, "batch": n, "count": count, "ms": ms | {"torch": time(torch, theirs)},
                         "best": best, "rel_l2": err, "bytes": (n * h * h * c + n * p * p * c) * 2})
            log.info("b%d %s: %s", n, name, rows[-1]["ms"])
    return rows


def _stem_problem(args):
    """ResNet-50's stem at batch --batches[0] (256): (n, K, x float32 NCHW on the GPU, w float32
    KCRS, bias, ones, s_in from x's range, s_out for outputs up to 4), the same in every stem
    measurement."""
    import cupy as cp
    from kernels import quantize as Q
    n, k = (args.batches or [256])[0], 64
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((n, 3, 224, 224), dtype=np.float32))
    w = rng.standard_normal((k, 3, 7, 7)).astype(np.float32) / np.sqrt(147)
    bias, ones = cp.asarray(0.1 * rng.standard_normal(k).astype(np.float32)), cp.ones(k, cp.float32)
    return n, k, x, w, bias, ones, Q.scale_from_amax(float(cp.abs(x).max())), Q.scale_from_amax(4.0)


def int8_stem(args):
    """The stem (7x7/2, 3 -> 64, 224x224) from the float32 NCHW network input, each step
    timed alone, paths summed: INT8 now (reformat + quantize to C16 + conv_int8), INT8 fast
    (quantize_nchw_to_nhwc to C4 + the INT8 small-C kernel), the FP16 small-C peer, and the
    FP16 stem kernel (conv_stem.cu, also reading NCHW directly). Fast paths are checked bit
    for bit (INT8) or by rel L2 against the FP16 peer before any timing."""
    import cupy as cp
    ci, i8, sc, stem, qz = (_gpu(m) for m in ("conv_igemm", "conv_int8", "conv_int8_smallc", "conv_stem",
                                              "quantize_int8"))
    from kernels.gpu.reformat import generic_padded, nchw_to_nhwc_padded
    n, k, x, w, bias, ones, s_in, s_out = _stem_problem(args)
    (wq16, s_w16), (wsc, s_wsc) = i8.pack_weight_int8_krsc(w), sc.pack_weight_int8_smallc(w)
    w16, wstem = ci.pack_weight_smallc(w.astype(np.float16)), stem.pack_weight_stem(w.astype(np.float16))
    xf, x16, x4 = (nchw_to_nhwc_padded(x, np.float32, 1), nchw_to_nhwc_padded(x, np.float16, 8, dedicated=True),
                   nchw_to_nhwc_padded(x, np.float16, 4, dedicated=True))
    xq16, xq4 = qz.quantize_nhwc(xf, s_in, c_pad_to=16), qz.quantize_nchw_to_nhwc(x, s_in, c_pad_to=4)
    out8, outh = cp.empty((n, 112, 112, k), cp.int8), cp.empty((n, 112, 112, k), cp.float16)
    q8 = dict(stride=2, padding=3, bias=bias, act="RELU", s_out=s_out)
    h16 = dict(stride=2, padding=3, scale=ones, bias=bias, act="RELU")
    ref = i8.conv2d_int8(xq16, wq16, s_in, s_w16, **q8).get()
    exact = {"quantize_nchw": bool((xq4[..., :4] == xq16[..., :4]).all() and not xq4[..., 3].any()),
             "quantize_vec": bool((qz.quantize_nhwc(xf, s_in, c_pad_to=16, variant="vec") == xq16).all())}
    for t in sc.SMALLC_TACTICS:
        exact[t.name] = bool((sc.conv2d_int8_smallc(xq4, wsc, s_in, s_wsc, kernel_size=7, tactic=t, **q8).get()
                              == ref).all())
    peer = ci.conv2d_igemm_smallc(x16, w16, kernel_s=7, **h16).get()
    fp16_rel_l2 = {f"{t.name}_{lay}": rel_l2(np, stem.conv2d_stem(xin, wstem, kernel_size=7, layout=lay, tactic=t,
                                                                   **h16).get(), peer)
                   for t in stem.STEM_TILES for lay, xin in (("NHWC", x4), ("NCHW", x))}
    log.info("bit-exact vs the padded INT8 path: %s; FP16 stem rel L2: %s", exact, fp16_rel_l2)
    def tiles(launch, tactics):
        return {t.name: (lambda t=t: launch(t)) for t in tactics}
    steps = {name: time_all(cands, lambda f: median_ms(f, cp, args.reps, warmup=3)) for name, cands in {
        "reformat_f32": {"nchw_to_nhwc_padded": lambda: nchw_to_nhwc_padded(x, np.float32, 1, out=xf)},
        "quantize_scalar_c16": {"scalar": lambda: qz.quantize_nhwc(xf, s_in, c_pad_to=16, out=xq16)},
        "quantize_vec_c16": {"vec": lambda: qz.quantize_nhwc(xf, s_in, c_pad_to=16, out=xq16, variant="vec")},
        "quantize_nchw_c4": {"nchw": lambda: qz.quantize_nchw_to_nhwc(x, s_in, c_pad_to=4, out=xq4)},
        "conv_int8_c16": tiles(lambda t: i8.conv2d_int8(xq16, wq16, s_in, s_w16, out=out8, tactic=t, **q8),
                               i8.INT8_TACTICS),
        "conv_int8_smallc": tiles(lambda t: sc.conv2d_int8_smallc(xq4, wsc, s_in, s_wsc, kernel_size=7, out=out8,
                                                                  tactic=t, **q8), sc.SMALLC_TACTICS),
        "reformat_f16": {"nchw_to_nhwc_padded": lambda: nchw_to_nhwc_padded(x, np.float16, 8, out=x16, dedicated=True)},
        "conv_fp16_smallc": tiles(lambda t: ci.conv2d_igemm_smallc(x16, w16, out=outh, tactic=t, kernel_s=7, **h16),
                                  ci.SMALLC_TACTICS),
        "reformat_f16_generic": {"generic_padded": lambda: generic_padded(x, np.float16, 8, out=x16)},
        "reformat_f16_c4": {"nchw_to_nhwc_padded": lambda: nchw_to_nhwc_padded(x, np.float16, 4, out=x4, dedicated=True)},
        "conv_fp16_stem": tiles(lambda t: stem.conv2d_stem(x4, wstem, kernel_size=7, out=outh, tactic=t, **h16),
                                stem.STEM_TILES),
        "conv_fp16_stem_nchw": tiles(lambda t: stem.conv2d_stem(x, wstem, kernel_size=7, out=outh, layout="NCHW",
                                                                tactic=t, **h16), stem.STEM_TILES)}.items()}
    paths = {name: sum(steps[s][0][steps[s][1]] for s in parts) for name, parts in STEM_PATHS.items()}
    return {"batch": n, "exact": exact, "fp16_stem_rel_l2": fp16_rel_l2, "paths": paths,
            "steps": {k: {"best": b, "ms": m} for k, (m, b) in steps.items()}}


STEM_PATHS = {"int8_now": ("reformat_f32", "quantize_scalar_c16", "conv_int8_c16"),
              "int8_vec_quantize": ("reformat_f32", "quantize_vec_c16", "conv_int8_c16"),
              "int8_fast": ("quantize_nchw_c4", "conv_int8_smallc"),
              "fp16_peer": ("reformat_f16", "conv_fp16_smallc"),
              "fp16_peer_generic_reformat": ("reformat_f16_generic", "conv_fp16_smallc"),
              "fp16_stem": ("reformat_f16_c4", "conv_fp16_stem"), "fp16_stem_direct": ("conv_fp16_stem_nchw",)}
HEADS, HEAD_DIM, SEQ = 12, 64, 128


def attention_reference(q, k, v, scale, heads=HEADS):
    """Softmax attention in float64 on packed (N, S, heads * D) projections."""
    n, s, hd = q.shape
    q, k, v = (np.asarray(a, np.float64).reshape(n, s, heads, hd // heads).transpose(0, 2, 1, 3) for a in (q, k, v))
    z = scale * q @ k.transpose(0, 1, 3, 2)
    e = np.exp(z - z.max(-1, keepdims=True))
    return ((e / e.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(n, s, hd)


def attention(args):
    """Per batch: every flash tile on packed projections read and written in place, the
    unfused path the engine ran before attention_fusion (head split copies, GEMM with the
    scale in alpha, softmax, GEMM, merge) and torch's SDPA (+ merge); 20 back-to-back
    calls per timed call, so host launch cost is included; each checked against float64."""
    import cupy as cp
    import torch
    from kernels.attention import merge_heads, split_heads
    from kernels.gpu import matmul as mm
    from kernels.gpu.attention import TILES, attention as flash
    from kernels.gpu.softmax import softmax
    scale, rows = 1 / np.sqrt(HEAD_DIM), []
    for n in args.batches or (1, 32):
        host = [np.random.default_rng(n + i).standard_normal((n, SEQ, HEADS * HEAD_DIM)).astype(np.float16)
                for i in range(3)]
        q, k, v = (cp.asarray(a) for a in host)
        y = cp.empty_like(q)
        runs = {f"flash.{t.name}": lambda t=t: (flash(*(split_heads(a, HEADS) for a in (q, k, v)), scale,
                                                       out=split_heads(y, HEADS), tile=t), y)[1] for t in TILES}

        def unfused():
            qh, kh, vh = (cp.ascontiguousarray(split_heads(a, HEADS)) for a in (q, k, v))
            s = mm.matmul(qh, kh, op_b="TRANSPOSE", alpha=scale, out_dtype=np.float16)
            return cp.ascontiguousarray(merge_heads(mm.matmul(softmax(s, -1), vh, out_dtype=np.float16)))
        tq, tk, tv = (torch.as_tensor(a, device="cuda").view(n, SEQ, HEADS, HEAD_DIM).transpose(1, 2) for a in host)
        runs["unfused (before the pass)"] = unfused
        runs["torch sdpa (+ merge)"] = lambda: torch.nn.functional.scaled_dot_product_attention(
            tq, tk, tv).transpose(1, 2).reshape(n, SEQ, -1)
        ref = attention_reference(*host, scale)
        for name, fn in runs.items():
            got = fn()
            got = got.cpu().numpy() if hasattr(got, "cpu") else cp.asnumpy(got)
            ms = median_ms(lambda: [fn() for _ in range(20)], cp, args.reps, warmup=3) / 20
            rows.append({"batch": n, "system": name, "ms": ms, "rel_l2": rel_l2(np, got, ref)})
            log.info("%5d %-28s %8.4f ms rel L2 %.2e", n, name, ms, rows[-1]["rel_l2"])
    return rows


def s2d_stem(args):
    """``python -m benchmarks layers s2d_stem``: ResNet-50's stem (7x7/2, 3 -> 64, 224x224,
    bias + ReLU) from the float32 NCHW network input at batch 256 (--batches), every path
    timed whole (input pass + convolution, CUDA events, median of --reps):

        int8_i8sc      quantize_nchw_to_nhwc (C4) + conv_int8_smallc           (conv.i8sc_*)
        int8_s2d_wgi8  space_to_depth_int8 + conv2d_wgmma_int8, 4x4 over C16    (conv.s2d_wgi8_*)
        int8_s2d_i8    space_to_depth_int8 + conv2d_int8                        (conv.s2d_i8_*)
        fp16_igemmsc   nchw_to_nhwc_padded (C8) + conv2d_igemm_smallc           (conv.igemmsc_*)
        fp16_stem      conv2d_stem reading NCHW directly                        (conv.stem_*_nchw)
        fp16_s2d_wg    space_to_depth_nhwc + conv2d_wgmma                       (conv.s2d_wg_*)
        fp16_s2d_igemm space_to_depth_nhwc + conv2d_igemm                       (conv.s2d_igemm2_*)

    and the two space-to-depth passes alone. Before any timing every INT8 path's codes are
    checked equal to the i8sc path's (bit-exact), every FP16 path's rel L2 against the
    igemmsc path (<= 1e-2); a path that fails is not timed (infinity).
    """
    import cupy as cp
    from engine.gpu import conv_s2d_tactics as T
    from kernels.gpu.reformat import nchw_to_nhwc_padded
    ci, i8, sc, stem, qz, wg, s2d = (_gpu(m) for m in (
        "conv_igemm", "conv_int8", "conv_int8_smallc", "conv_stem", "quantize_int8", "conv_wgmma",
        "space_to_depth"))
    n, k, x, w, bias, ones, s_in, s_out = _stem_problem(args)
    g = s2d.s2d_geometry(224, 224, 7, 7, 3, 3)
    ws2d = T.s2d_weights(w, (3, 3), 16)                     # KRSC (64, 4, 4, 16)
    wsc, s_wsc = sc.pack_weight_int8_smallc(w)
    wq, s_wq = i8.pack_weight_int8_krsc(ws2d, "KRSC")
    w16sc = ci.pack_weight_smallc(w.astype(np.float16))
    wstem = stem.pack_weight_stem(w.astype(np.float16))
    w16 = ci.pack_weight_krsc(ws2d, "KRSC", c_pad_to=16)
    xq4 = cp.empty((n, 224, 224, 4), cp.int8)
    xq16 = cp.empty((n, g.hs, g.ws, 16), cp.int8)
    x8 = cp.empty((n, 224, 224, 8), cp.float16)
    xh16 = cp.empty((n, g.hs, g.ws, 16), cp.float16)
    out8, outh = cp.empty((n, 112, 112, k), cp.int8), cp.empty((n, 112, 112, k), cp.float16)
    q8 = dict(bias=bias, act="RELU", s_out=s_out, out=out8)
    h16 = dict(scale=ones, bias=bias, act="RELU", out=outh)
    s1 = dict(stride=1, padding=g.pre, out_hw=(g.p, g.q))

    def int8_i8sc(t):
        qz.quantize_nchw_to_nhwc(x, s_in, c_pad_to=4, out=xq4)
        return sc.conv2d_int8_smallc(xq4, wsc, s_in, s_wsc, kernel_size=7, stride=2, padding=3,
                                     tactic=t, **q8)

    def int8_s2d(launch):
        def run(t):
            s2d.space_to_depth_int8(x, s_in, out=xq16, hs=g.hs, ws=g.ws)
            return launch(xq16, wq, s_in, s_wq, tactic=t, **s1, **q8)
        return run

    def fp16_igemmsc(t):
        nchw_to_nhwc_padded(x, np.float16, 8, out=x8, dedicated=True)
        return ci.conv2d_igemm_smallc(x8, w16sc, stride=2, padding=3, kernel_s=7, tactic=t, **h16)

    def fp16_stem(t):
        return stem.conv2d_stem(x, wstem, kernel_size=7, stride=2, padding=3, layout="NCHW", tactic=t, **h16)

    def fp16_s2d(launch):
        def run(t):
            s2d.space_to_depth_nhwc(x, 16, out=xh16, hs=g.hs, ws=g.ws)
            return launch(xh16, w16, tactic=t, **s1, **h16)
        return run

    paths = {
        "int8_i8sc": (int8_i8sc, sc.SMALLC_TACTICS),
        "int8_s2d_wgi8": (int8_s2d(wg.conv2d_wgmma_int8), T.WGI8_TILES),
        "int8_s2d_i8": (int8_s2d(i8.conv2d_int8), T.I8_TILES),
        "fp16_igemmsc": (fp16_igemmsc, ci.SMALLC_TACTICS),
        "fp16_stem": (fp16_stem, stem.STEM_TILES),
        "fp16_s2d_wg": (fp16_s2d(wg.conv2d_wgmma), T.WG_TILES),
        "fp16_s2d_igemm": (fp16_s2d(ci.conv2d_igemm), T.IGEMM_TILES),
    }
    ref8 = int8_i8sc(sc.SMALLC_TACTICS[0]).get()
    ref16 = fp16_igemmsc(ci.SMALLC_TACTICS[0]).get()
    check = {}
    for name, (fn, tiles) in paths.items():
        for t in tiles:
            try:
                got = fn(t).get()
                check[f"{name}.{t.name}"] = (bool((got == ref8).all()) if name.startswith("int8")
                                             else rel_l2(np, got, ref16))
            except Exception as exc:      # noqa: BLE001 -- reported, the others still checked
                log.warning("%s %s failed: %s: %s", name, t.name, type(exc).__name__, exc)
                check[f"{name}.{t.name}"] = None
    log.info("checks (INT8: equal to i8sc; FP16: rel L2 vs igemmsc): %s", check)

    def ok(name, t):
        v = check[f"{name}.{t.name}"]
        return v is True if name.startswith("int8") else (v is not None and v <= 1e-2)

    def timed(f):
        return median_ms(f, cp, args.reps, warmup=3)
    results = {}
    for name, (fn, tiles) in paths.items():
        cands = {t.name: (lambda t=t: fn(t)) for t in tiles if ok(name, t)}
        if not cands:                                     # every tile failed its check: not timed
            results[name] = {"best": None, "best_ms": INF, "ms": {}}
            continue
        ms, best = time_all(cands, timed)
        results[name] = {"best": best, "best_ms": ms[best], "ms": ms}
        log.info("%-16s best %-26s %8.4f ms", name, best, ms[best])
    passes = {"space_to_depth_int8": timed(lambda: s2d.space_to_depth_int8(x, s_in, out=xq16, hs=g.hs, ws=g.ws)),
              "space_to_depth_nhwc": timed(lambda: s2d.space_to_depth_nhwc(x, 16, out=xh16, hs=g.hs, ws=g.ws)),
              "quantize_nchw_c4": timed(lambda: qz.quantize_nchw_to_nhwc(x, s_in, c_pad_to=4, out=xq4))}
    summary = {name: r["best_ms"] for name, r in results.items()}
    return {"batch": n, "paths_ms": summary, "passes_ms": passes, "checks": check, "paths": results,
            "int8_i8sc_over_s2d_wgi8": summary["int8_i8sc"] / summary["int8_s2d_wgi8"]}


def _measure(args):
    """{part: rows} for ``args.name``."""
    if args.name in ("kernels", "int8", "wgmma", "fp32", "expand"):
        return {"conv": conv(args, args.name)}
    if args.name == "new":
        return {"pooling": pooling(args), "splitk_b1": conv(args, "splitk"),
                "splitk_fc_b256": conv(args, "splitk", layers=["fc_2048_1000"], batches=[256]),
                "stem": conv(args, "stem")}
    if args.name == "mobilenet":
        return {"depthwise": depthwise(args), "pointwise": conv(args, "pointwise", table=MOBILENET_PW)}
    if args.name == "s2d_stem":
        return {"s2d_stem": s2d_stem(args)}
    return {args.name: {"int8_stem": int8_stem, "attention": attention, "pooling": pooling}[args.name](args)}


NAMES = ("kernels", "int8", "wgmma", "expand", "fp32", "new", "pooling", "mobilenet", "int8_stem", "s2d_stem",
         "attention")


def parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks layers", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("name", choices=NAMES)
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--batches", "--batch", dest="batches", type=int, nargs="+",
                   help="default: the measurement's (see above)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--calls", type=int, default=5, help="calls per CUDA graph at batch > 8 with --graph")
    p.add_argument("--graph", action="store_true", help="CUDA-graph timing at every batch")
    p.add_argument("--layers", nargs="+", help="conv measurements: these layer names only")
    p.add_argument("--tactics", nargs="+", help="mma16 family: these conv_igemm tile names only")
    p.add_argument("--families", nargs="+", choices=sorted(FAMILIES), metavar="FAMILY",
                   help=f"conv measurements: instead of the preset's; of {', '.join(FAMILIES)}")
    p.add_argument("--precompile", action="store_true", help="compile every kernel family in parallel first")
    p.add_argument("--tf32-base", metavar="FILE",
                   help="family tf32x3_base: the 3xTF32 tiles compiled from this file of kernels/cuda (e.g. "
                        "the source before a change), timed beside tf32x3 in the same process")
    p.add_argument("--define", metavar="NAME",
                   help="families pw8_def / wgmma8_def: the INT8 tiles compiled with #define NAME 1 in "
                        "front of their source, timed beside pw8 / wgmma8 in the same process")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    import cupy as cp
    import torch
    if args.precompile:
        from engine.gpu.precompile import precompile
        log.info("precompile %.1f s", precompile(int8=True))
    card = torch.cuda.get_device_name()
    started = datetime.datetime.now()
    parts = _measure(args)
    path = os.path.join(args.out, f"layers_{args.name}.json")
    with open(path, "w") as f:
        json.dump({"card": card, "date": started.isoformat(timespec="seconds"), "command": " ".join(sys.argv),
                   "versions": {"cupy": cp.__version__, "torch": torch.__version__}, **parts}, f, indent=1,
                  default=str)
    print(f"\n# {card} {started.isoformat(timespec='seconds')} layers {args.name} -> {path}")
    for part, rows in parts.items():
        print(f"\n## {part}")
        if part in ("conv", "pointwise", "stem") or part.startswith("splitk"):
            print(conv_table(rows))
        elif isinstance(rows, dict):         # int8_stem, s2d_stem: steps and paths
            print(json.dumps(rows, indent=1, default=str))
        else:
            print(*(json.dumps(r, default=str) for r in rows), sep="\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
