"""GPU tactics for the layers where the time goes: convolution, fully connected,
pooling, global average pooling. Kernels come from kernels.gpu; this module
only maps an engine layer (attributes, fused epilogue, formats) onto them.
"""
import functools
import os

import numpy as np

from ..types import DataType, LayerType, PoolingType, ReduceOperation
from .concat import claim, written
from .tactics import Tactic, as_nhwc, cupy, nchw_view, register

# concat elision (engine/gpu/concat.py): tactics with ``writes_into_concat`` take
# ``into=`` (their slot in a concat's NHWC buffer) and, when ``claim`` gives them
# the buffer, pass ``out=, out_channel_offset=`` to the launcher and return the
# view of their slice (``written``). ``_ANY_FLOAT``: an epilogue that casts to
# either float type writes the buffer's dtype directly.
_ANY_FLOAT = (np.float16, np.float32)


def _f16(precision):
    return precision == DataType.HALF


def _epilogue(layer, k=None):
    """Epilogue state, vectors on the device once (not re-made per call)."""
    cp = cupy()
    act = layer.post_activation
    alpha, beta = layer.post_params() if act is not None else (0.0, 0.0)
    k = k or (layer.num_output_maps if hasattr(layer, "num_output_maps") else layer.num_output_channels)
    bias = cp.zeros(k, cp.float32) if layer.bias is None else cp.asarray(layer.bias, cp.float32)
    return {"act": None if act is None else act.name, "alpha": alpha, "beta": beta,
            "bias": bias, "scale": cp.ones(k, cp.float32)}


def _conv2d_reason(layer, in_shapes):
    if len(in_shapes[0]) != 4:
        return "only 2-D convolutions (rank-4 inputs)"
    return None


def _geometry(layer, shape):
    """(output spatial size, leading padding) of a window layer at an input shape,
    memoised on the layer: the shape rule is Python arithmetic, too slow for
    every call (engine layers are not modified after the build)."""
    memo = layer.__dict__.setdefault("_geometry_memo", {})
    hit = memo.get(shape)
    if hit is None:
        out, pre, _ = layer.geometry(shape)
        hit = memo[shape] = (tuple(out), tuple(pre))
    return hit


def _residual(inputs, dtype):
    r = inputs[1] if len(inputs) > 1 else None
    return None if r is None else as_nhwc(r, dtype)


@functools.lru_cache(maxsize=None)
def _launcher(module, name):
    """kernels.gpu.<module>.<name>, resolved once (tactics run it on every call)."""
    import importlib
    return getattr(importlib.import_module(f"kernels.gpu.{module}"), name)


def _wgmma_reason():
    from kernels.gpu.conv_wgmma import available
    return None if available() else "wgmma needs compute capability 9.0 (sm_90a)"


class ConvIgemm(Tactic):
    """Tensor-core implicit GEMM (mma.sync), NHWC FP16, fused epilogue; one tile shape.
    Subclasses change the launcher (split-K, small-C, wgmma) and keep the calling convention."""
    module, launcher = "conv_tc", "conv2d_igemm"

    def __init__(self, tile):
        self.tile = tile
        self.name = f"conv.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if not _f16(precision):
            return "tensor-core convolution runs in FP16"
        if layer.num_groups != 1:
            return "grouped convolution"
        return _conv2d_reason(layer, in_shapes)

    def prepare(self, layer):
        from kernels.gpu.conv_tc import pack_weight_krsc
        c = layer._inputs[0].shape[1]
        w = layer.weights(c) if c > 0 else layer.kernel
        return {"w": pack_weight_krsc(w, "KCRS", c_pad_to=8), **_epilogue(layer)}

    writes_into_concat = True

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        x = inputs[0]
        (p, q), pre = _geometry(layer, x.shape)
        k = layer.num_output_maps
        place = claim(into, (x.shape[0], p, q, k), _ANY_FLOAT)
        out_dtype = place["out"].dtype if place else out_dtypes[0].to_numpy()
        y = _launcher(self.module, self.launcher)(
            as_nhwc(x, np.float16, 8), state["w"], stride=layer.stride_nd, padding=pre,
            dilation=layer.dilation_nd, out_hw=(p, q), bias=state["bias"], scale=state["scale"],
            residual=_residual(inputs, out_dtype), act=state["act"], alpha=state["alpha"],
            beta=state["beta"], out_dtype=out_dtype, tactic=self.tile, **place)
        return [written(y, place, k)]


class ConvIgemmSplitK(ConvIgemm):
    """The implicit GEMM with the reduction split over CTAs (FP32 partial sums,
    then one kernel adds them and applies the epilogue): fills the GPU when the
    output is small (batch 1, late stages)."""
    launcher = "conv2d_igemm_splitk"


class ConvWgmma(ConvIgemm):
    """The implicit GEMM on Hopper's warpgroup MMA (wgmma, sm_90a): operands from
    128-byte-swizzled shared memory, 64 x N per warpgroup (kernels/cuda/conv_wgmma.cu)."""
    module, launcher = "conv_wgmma", "conv2d_wgmma"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        return super().supports(layer, in_shapes, in_dtypes, precision) or _wgmma_reason()


class ConvStemSmallC(ConvIgemm):
    """Few input channels (an RGB stem): taps packed densely in pairs, so a 7x7
    reduction is 224 long instead of 392 with per-tap channel padding."""
    launcher = "conv2d_igemm_smallc"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = super().supports(layer, in_shapes, in_dtypes, precision)
        if reason is None and not 0 < in_shapes[0][1] <= 4:
            return "more than 4 input channels"
        return reason

    def prepare(self, layer):
        from kernels.gpu.conv_tc import pack_weight_smallc
        c = layer._inputs[0].shape[1]
        return {"w": pack_weight_smallc(layer.weights(c), "KCRS"), **_epilogue(layer)}


class Conv1x1Cublas(Tactic):
    """1x1 convolution as one cuBLAS GEMM over NHWC rows + fused epilogue kernel."""
    name = "conv.cublas_1x1"
    capturable = False

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if tuple(layer.kernel_size_nd) != (1, 1) or layer.num_groups != 1:
            return "not a 1x1 ungrouped convolution"
        if any(layer.geometry(in_shapes[0])[1]) or any(layer.geometry(in_shapes[0])[2]):
            return "padded 1x1 convolution"
        return _conv2d_reason(layer, in_shapes)

    def prepare(self, layer):
        cp = cupy()
        w = layer.kernel.reshape(layer.num_output_maps, -1)
        return {"w16": cp.asarray(w, cp.float16), "w32": cp.asarray(w, cp.float32),
                **_epilogue(layer)}

    writes_into_concat = True

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        from kernels.gpu.conv_gemm import conv2d_1x1_cublas
        dt = np.float16 if _f16(precision) else np.float32
        x = inputs[0]
        (p, q), _ = _geometry(layer, x.shape)
        k = layer.num_output_maps
        place = claim(into, (x.shape[0], p, q, k), _ANY_FLOAT)
        out_dtype = place["out"].dtype if place else out_dtypes[0].to_numpy()
        y = conv2d_1x1_cublas(as_nhwc(x, dt), state["w16" if dt == np.float16 else "w32"],
                              stride=layer.stride_nd, bias=state["bias"], scale=state["scale"],
                              residual=_residual(inputs, out_dtype), act=state["act"],
                              alpha=state["alpha"], beta=state["beta"], out_dtype=out_dtype,
                              **place)
        return [written(y, place, k)]


class ConvIm2col(Tactic):
    """Any 2-D convolution: im2col + cuBLAS per group + fused epilogue (FP32 or FP16)."""
    name = "conv.im2col"
    capturable = False

    def supports(self, layer, in_shapes, in_dtypes, precision):
        return _conv2d_reason(layer, in_shapes)

    def prepare(self, layer):
        cp = cupy()
        c = layer._inputs[0].shape[1]
        w = layer.weights(c).transpose(0, 2, 3, 1)          # KCRS -> KRSC
        return {"w16": cp.asarray(np.ascontiguousarray(w), cp.float16),
                "w32": cp.asarray(np.ascontiguousarray(w), cp.float32),
                **_epilogue(layer)}

    writes_into_concat = True

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        from kernels.gpu.conv_gemm import conv2d_im2col
        dt = np.float16 if _f16(precision) else np.float32
        x = inputs[0]
        (p, q), pre = _geometry(layer, x.shape)
        k = layer.num_output_maps
        place = claim(into, (x.shape[0], p, q, k), _ANY_FLOAT)
        out_dtype = place["out"].dtype if place else out_dtypes[0].to_numpy()
        y = conv2d_im2col(as_nhwc(x, dt), state["w16" if dt == np.float16 else "w32"],
                          stride=layer.stride_nd, padding=pre, dilation=layer.dilation_nd,
                          out_hw=(p, q), groups=layer.num_groups, bias=state["bias"], scale=state["scale"],
                          residual=_residual(inputs, out_dtype), act=state["act"],
                          alpha=state["alpha"], beta=state["beta"], out_dtype=out_dtype, **place)
        return [written(y, place, k)]


class ConvDepthwise(Tactic):
    """Direct depthwise kernel (one filter per channel), NHWC, fused epilogue."""
    name = "conv.depthwise"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        c = in_shapes[0][1] if len(in_shapes[0]) == 4 else -1
        if not (layer.num_groups == c == layer.num_output_maps):
            return "not depthwise (groups == C == K)"
        if len(in_shapes) > 1 and in_shapes[1] is not None:
            return "residual not fused by the depthwise kernel"
        return _conv2d_reason(layer, in_shapes)

    def prepare(self, layer):
        cp = cupy()
        c = layer._inputs[0].shape[1]
        w = layer.weights(c)                                   # (C, 1, R, S)
        return {"w": cp.asarray(np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)), cp.float32),
                **_epilogue(layer)}

    writes_into_concat = True

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        from kernels.gpu.conv_gemm import conv2d_depthwise
        dt = np.float16 if _f16(precision) else np.float32
        x = inputs[0]
        (p, q), pre = _geometry(layer, x.shape)
        place = claim(into, (x.shape[0], p, q, x.shape[1]), (dt,))   # writes x's dtype
        y = conv2d_depthwise(as_nhwc(x, dt), state["w"], stride=layer.stride_nd, padding=pre,
                             dilation=layer.dilation_nd, out_hw=(p, q), bias=state["bias"], scale=state["scale"],
                             act=state["act"], alpha=state["alpha"], beta=state["beta"], **place)
        if place:
            return [written(y, place, x.shape[1])]
        return [nchw_view(y).astype(out_dtypes[0].to_numpy(), copy=False)]


def _fc_as_4d(inputs):
    """(N, C) FC operands as (N, C, 1, 1): the same bytes, a convolution's view."""
    x = inputs[0]
    if x.ndim == 4:
        return x, inputs
    as4 = [None if t is None else t.reshape(t.shape + (1, 1)) for t in inputs]
    return as4[0], as4


def _fc_out(y_nchw, rank):
    """Back to the layer's output rank: (N, K, 1, 1) or (N, K)."""
    return y_nchw if rank == 4 else y_nchw.reshape(y_nchw.shape[:2])


class ConvDepthwiseV2(ConvDepthwise):
    """Register-blocked depthwise kernel: 8 channels x q_tile outputs per thread,
    weights in registers, fused epilogue."""

    def __init__(self, q_tile):
        self.q_tile = q_tile
        self.name = f"conv.depthwise_v2_q{q_tile}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = super().supports(layer, in_shapes, in_dtypes, precision)
        if reason is None and in_shapes[0][1] % 8:
            return "channels not a multiple of 8"
        if reason is None and max(layer.kernel_size_nd) > 7:
            return "filter larger than 7x7"
        return reason

    def prepare(self, layer):
        from kernels.gpu.conv_dw import pack_weight_dw
        w = layer.weights(layer._inputs[0].shape[1])             # (C, 1, R, S)
        return {"w16": pack_weight_dw(w, "C1RS", np.float16),
                "w32": pack_weight_dw(w, "C1RS", np.float32), **_epilogue(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        from kernels.gpu.conv_dw import conv2d_depthwise_v2
        dt = np.float16 if _f16(precision) else np.float32
        x = inputs[0]
        (p, q), pre = _geometry(layer, x.shape)
        place = claim(into, (x.shape[0], p, q, x.shape[1]), (dt,))   # writes x's dtype
        # no channel padding here: padded channels would not line up with the filters
        y = conv2d_depthwise_v2(as_nhwc(x, dt), state["w16" if dt == np.float16 else "w32"],
                                stride=layer.stride_nd, padding=pre, dilation=layer.dilation_nd,
                                out_hw=(p, q), bias=state["bias"], scale=state["scale"],
                                act=state["act"], alpha=state["alpha"], beta=state["beta"],
                                q_tile=self.q_tile, **place)
        if place:
            return [written(y, place, x.shape[1])]
        return [nchw_view(y).astype(out_dtypes[0].to_numpy(), copy=False)]


class ConvIgemmNarrow(ConvIgemm):
    """Narrow implicit-GEMM tiles, offered only for 1x1 layers with few channels
    (where they win; elsewhere they would only cost compile and timing time)."""

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = super().supports(layer, in_shapes, in_dtypes, precision)
        if reason is None and (tuple(layer.kernel_size_nd) != (1, 1)
                               or min(in_shapes[0][1], layer.num_output_maps) > 384):
            return "narrow tiles are for 1x1 layers with C or K <= 384"
        return reason


class FcIgemm(Tactic):
    """Fully connected as a convolution whose window is the whole input: tensor
    cores, fused epilogue, and CUDA-graph safe (cuBLAS is not)."""

    def __init__(self, tile):
        self.tile = tile
        self.name = f"fc.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if not _f16(precision):
            return "tensor-core FC runs in FP16"
        if len(in_shapes[0]) not in (2, 4):
            return "FC on (N, C) or (N, C, H, W) inputs only"
        return None

    def prepare(self, layer):
        from kernels.gpu.conv_tc import pack_weight_krsc
        shape = layer._inputs[0].shape
        n, c, h, w = shape if len(shape) == 4 else (shape[0], shape[1], 1, 1)
        k = layer.num_output_channels
        wt = layer.kernel.reshape(k, c, h, w)
        return {"w": pack_weight_krsc(wt, "KCRS", c_pad_to=8),
                **_epilogue(layer)}

    launcher = "conv2d_igemm"

    def run(self, state, layer, inputs, precision, out_dtypes):
        from kernels.gpu import conv_tc
        rank = inputs[0].ndim
        x, inputs = _fc_as_4d(inputs)
        out_dtype = out_dtypes[0].to_numpy()
        y = getattr(conv_tc, self.launcher)(
            as_nhwc(x, np.float16, 8), state["w"], out_hw=(1, 1), bias=state["bias"],
            scale=state["scale"], residual=_residual(inputs, out_dtype), act=state["act"],
            alpha=state["alpha"], beta=state["beta"], out_dtype=out_dtype, tactic=self.tile)
        return [_fc_out(nchw_view(y), rank)]


class FcIgemmSplitK(FcIgemm):
    """Fully connected through the split-K implicit GEMM (M is the batch: small)."""
    launcher = "conv2d_igemm_splitk"


class FcCublas(Tactic):
    """Fully connected through cuBLAS + fused epilogue; any rank."""
    name = "fc.cublas"
    capturable = False

    def prepare(self, layer):
        cp = cupy()
        k = layer.num_output_channels
        w = layer.kernel.reshape(k, -1)
        return {"w16": cp.asarray(w, cp.float16), "w32": cp.asarray(w, cp.float32),
                **_epilogue(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes):
        from kernels.gpu.conv_gemm import fully_connected
        cp = cupy()
        dt = np.float16 if _f16(precision) else np.float32
        x = inputs[0]
        k = layer.num_output_channels
        flat = 3 if x.ndim >= 3 else 1
        lead = x.shape[:x.ndim - flat]
        x2 = cp.ascontiguousarray(x.reshape(int(np.prod(lead)), -1).astype(dt, copy=False))
        out_dtype = out_dtypes[0].to_numpy()
        res = inputs[1] if len(inputs) > 1 else None
        if res is not None:
            res = cp.ascontiguousarray(res.reshape(x2.shape[0], k).astype(out_dtype, copy=False))
        y = fully_connected(x2, state["w16" if dt == np.float16 else "w32"], bias=state["bias"],
                            scale=state["scale"],
                            residual=res, act=state["act"], alpha=state["alpha"],
                            beta=state["beta"], out_dtype=out_dtype)
        return [y.reshape(lead + ((k, 1, 1) if flat == 3 else (k,)))]


class PoolNhwc(Tactic):
    """Max / average pooling over NHWC."""
    name = "pool.nhwc"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if len(in_shapes[0]) != 4:
            return "2-D pooling only"
        if layer.pooling_type == PoolingType.MAX_AVERAGE_BLEND:
            return "blend pooling"
        return None

    writes_into_concat = True

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        from kernels.gpu.pooling import pool2d
        dt = np.float16 if _f16(precision) else np.float32
        x = inputs[0]
        (p, q), pre = _geometry(layer, x.shape)
        place = claim(into, (x.shape[0], p, q, x.shape[1]), (dt,))   # writes x's dtype
        y = pool2d(as_nhwc(x, dt), layer.pooling_type.name, layer.window_size_nd,
                   stride=layer.stride_nd, padding=pre, out_hw=(p, q),
                   exclude_padding=layer.average_count_excludes_padding, **place)
        if place:
            return [written(y, place, x.shape[1])]
        return [nchw_view(y).astype(out_dtypes[0].to_numpy(), copy=False)]


class GlobalAvgPool(Tactic):
    """Reduce AVG over H and W (keep dims) of an NHWC tensor: ResNet's head."""
    name = "reduce.global_avg_nhwc"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if len(in_shapes[0]) != 4 or layer.op != ReduceOperation.AVG or layer.axes != 0b1100 \
                or not layer.keep_dims:
            return "only AVG over axes 2, 3 with keep_dims on rank 4"
        return None

    def run(self, state, layer, inputs, precision, out_dtypes):
        from kernels.gpu.pooling import global_avgpool
        dt = np.float16 if _f16(precision) else np.float32
        y = global_avgpool(as_nhwc(inputs[0], dt), keepdims=True)
        return [nchw_view(y).astype(out_dtypes[0].to_numpy(), copy=False)]


class MatMulCublas(Tactic):
    """Batched matrix multiply through cuBLAS in the layer's precision (FP16 in,
    FP32 accumulate), transposes as strided views (no copies)."""
    name = "matmul.cublas"
    capturable = False

    def supports(self, layer, in_shapes, in_dtypes, precision):
        from ..types import MatrixOperation as MO
        if MO.VECTOR in (layer.op0, layer.op1):
            return "vector operands"
        if any(d not in ("float32", "float16") for d in in_dtypes):
            return "floating inputs only"
        if layer.has_epilogue:
            # cp.matmul has no epilogue; the matmul.* tactics fuse it (and the
            # generic tactic runs it as the reference does, for the shapes they decline)
            return "a fused epilogue (alpha/bias/residual/activation): the matmul.* tactics"
        return None

    def run(self, state, layer, inputs, precision, out_dtypes):
        from ..types import MatrixOperation as MO
        cp = cupy()
        dt = np.float16 if _f16(precision) else np.float32
        a, b = (x.astype(dt, copy=False) for x in inputs)
        if layer.op0 == MO.TRANSPOSE:
            a = a.swapaxes(-1, -2)
        if layer.op1 == MO.TRANSPOSE:
            b = b.swapaxes(-1, -2)
        return [cp.matmul(a, b).astype(out_dtypes[0].to_numpy(), copy=False)]


def _register():
    from .int8_tactics import ConvInt8, ConvWgmmaInt8, FcInt8, PoolInt8
    from kernels.gpu.conv_int8 import INT8_TACTICS
    from kernels.gpu.conv_dw import Q_TILES
    from kernels.gpu.conv_tc import (IGEMM_TACTICS, IGEMM_TACTICS_LARGE, IGEMM_TACTICS_NARROW,
                                     SMALLC_TACTICS, SPLITK_TACTICS)
    register(LayerType.CONVOLUTION, *[ConvIgemm(t) for t in IGEMM_TACTICS + IGEMM_TACTICS_LARGE],
             *[ConvIgemmSplitK(t) for t in SPLITK_TACTICS],
             *[ConvStemSmallC(t) for t in SMALLC_TACTICS],
             *[ConvIgemmNarrow(t) for t in IGEMM_TACTICS_NARROW],
             *[ConvDepthwiseV2(q) for q in Q_TILES],
             Conv1x1Cublas(), ConvDepthwise(), ConvIm2col(),
             *[ConvInt8(t) for t in INT8_TACTICS])
    if os.environ.get("CUPYRT_WGMMA", "1") != "0":
        from kernels.gpu import conv_wgmma
        register(LayerType.CONVOLUTION, *[ConvWgmma(t) for t in conv_wgmma.TACTICS],
                 *[ConvWgmmaInt8(t) for t in conv_wgmma.INT8_TACTICS])
    from .cudnn_tactics import enabled as cudnn_enabled, register_all as register_cudnn
    if cudnn_enabled():              # supports() declines when the frontend is absent
        register_cudnn()
    register(LayerType.FULLY_CONNECTED, *[FcIgemm(t) for t in IGEMM_TACTICS[-2:]],
             *[FcIgemmSplitK(t) for t in SPLITK_TACTICS], FcCublas(),
             *[FcInt8(t) for t in INT8_TACTICS])
    register(LayerType.POOLING, PoolNhwc(), PoolInt8())
    register(LayerType.REDUCE, GlobalAvgPool())
    register(LayerType.MATRIX_MULTIPLY, MatMulCublas())
    # FP32 on tensor cores (3xTF32; plain TF32 only under the TF32 flag): after the
    # names above exist, as fp32_tactics imports them
    from .fp32_tactics import register_all
    register_all()


_register()
