"""INT8 tactics: convolution (mma.sync and wgmma), fully connected and max pooling
on int8 codes, with the requantising epilogue; bit-exact with engine.quantization's
integer arithmetic (engine/gpu/conv_tactics.py registers them).

The conv_tactics helpers are imported at the bottom: conv_tactics registers these
classes at the end of its own import, so either module may be imported first.
ConvInt8SmallC (the INT8 RGB stem) is registered here unless CUPYRT_INT8_SMALLC=0:
see register_smallc.
"""
import os

import numpy as np

from ..types import DataType, LayerType, PoolingType
from .tactics import Tactic, as_nhwc, nchw_view, register


def _float_kind(x):
    """Half stays half (the INT8 kernels read either float type): no cast pass."""
    return np.float16 if x.dtype == np.float16 else np.float32


def _int8_out_dtype(storage):
    """The INT8 epilogue writes the stored type itself: codes, half or float32."""
    return {DataType.INT8: np.int8, DataType.HALF: np.float16}.get(storage, np.float32)


class ConvInt8(Tactic):
    """INT8 implicit GEMM (mma.sync s8, int32 accumulation) with the requantising
    epilogue; bit-exact with engine.quantization's integer arithmetic."""
    int8 = True
    module, launcher = "conv_int8", "conv2d_int8"

    def __init__(self, tile):
        self.tile, self.name = tile, f"conv.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.INT8:
            return "INT8 tactic"
        if layer.layer_type != LayerType.CONVOLUTION or layer.num_groups != 1:
            return "ungrouped convolutions only"
        return _conv2d_reason(layer, in_shapes)

    weight_packer = "pack_weight_int8_krsc"     # kernels.gpu.conv_int8's packer for this kernel

    def prepare(self, layer):
        from kernels.gpu import conv_int8

        from ..int8_exec import tensor_scale
        c = layer._inputs[0].shape[1]
        pack = getattr(conv_int8, self.weight_packer)
        wq, s_w = pack(layer.weights(c) if c > 0 else layer.kernel, "KCRS")
        ep = _epilogue(layer)
        res_t = layer._inputs[1] if len(layer._inputs) > 1 else None
        return {"w": wq, "s_w": s_w, **ep, "bias": None if layer.bias is None else ep["bias"],
                "s_in": tensor_scale(layer._inputs[0]),
                "s_res": tensor_scale(res_t) if res_t is not None and res_t.dynamic_range else None,
                "s_out": tensor_scale(layer._outputs[0]) if layer._outputs[0].dynamic_range else None}

    def run(self, state, layer, inputs, precision, out_dtypes):
        from kernels.gpu.conv_int8 import quantize_nhwc
        conv2d_int8 = _launcher(self.module, self.launcher)
        x = inputs[0]
        (p, q), pre = _geometry(layer, x.shape)
        if x.dtype == np.int8:
            xq = as_nhwc(x, np.int8, 16)                  # int8 codes, C padded to 16
        else:
            xq = quantize_nhwc(as_nhwc(x, _float_kind(x), 1), state["s_in"], c_pad_to=16)
        r = inputs[1] if len(inputs) > 1 else None
        int8_out = out_dtypes[0] == DataType.INT8
        kw = {}
        if r is not None:
            kw = ({"residual": as_nhwc(r, np.int8, 1), "residual_scale": state["s_res"]}
                  if r.dtype == np.int8 else {"residual": as_nhwc(r, _float_kind(r), 1)})
        y = conv2d_int8(xq, state["w"], state["s_in"], state["s_w"], stride=layer.stride_nd,
                        padding=pre, dilation=layer.dilation_nd, out_hw=(p, q),
                        bias=state["bias"], act=state["act"], alpha=state["alpha"],
                        beta=state["beta"], s_out=state["s_out"] if int8_out else None,
                        out_dtype=_int8_out_dtype(out_dtypes[0]), tactic=self.tile, **kw)
        return [nchw_view(y)]


class ConvWgmmaInt8(ConvInt8):
    """INT8 convolution on wgmma (s8 x s8 -> s32), the same epilogue bit for bit."""
    module, launcher = "conv_wgmma", "conv2d_wgmma_int8"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        return super().supports(layer, in_shapes, in_dtypes, precision) or _wgmma_reason()


class FcInt8(Tactic):
    """INT8 fully connected as the INT8 convolution whose window is the whole input
    (graph-safe, unlike the emulation's float64 matmul); bit-exact with it."""
    int8 = True

    def __init__(self, tile):
        self.tile, self.name = tile, f"fc.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.INT8:
            return "INT8 tactic"
        if len(in_shapes[0]) not in (2, 4) or len(in_shapes) > 1 and in_shapes[1] is not None:
            return "(N, C) or (N, C, H, W) inputs without a residual"
        return None

    def prepare(self, layer):
        from kernels.gpu.conv_int8 import pack_weight_int8_krsc

        from ..int8_exec import tensor_scale
        shape = layer._inputs[0].shape
        c, h, w = shape[1:] if len(shape) == 4 else (shape[1], 1, 1)
        k = layer.num_output_channels
        wq, s_w = pack_weight_int8_krsc(layer.kernel.reshape(k, c, h, w), "KCRS")
        ep = _epilogue(layer)
        return {"w": wq, "s_w": s_w, **ep, "bias": None if layer.bias is None else ep["bias"],
                "s_in": tensor_scale(layer._inputs[0]),
                "s_out": tensor_scale(layer._outputs[0]) if layer._outputs[0].dynamic_range else None}

    def run(self, state, layer, inputs, precision, out_dtypes):
        from kernels.gpu.conv_int8 import conv2d_int8, quantize_nhwc
        rank = inputs[0].ndim
        x, _ = _fc_as_4d(inputs[:1])
        if x.dtype == np.int8:
            xq = as_nhwc(x, np.int8, 16)
        else:
            xq = quantize_nhwc(as_nhwc(x, _float_kind(x), 1), state["s_in"], c_pad_to=16)
        int8_out = out_dtypes[0] == DataType.INT8
        y = conv2d_int8(xq, state["w"], state["s_in"], state["s_w"], out_hw=(1, 1),
                        bias=state["bias"], act=state["act"], alpha=state["alpha"],
                        beta=state["beta"], s_out=state["s_out"] if int8_out else None,
                        out_dtype=_int8_out_dtype(out_dtypes[0]), tactic=self.tile)
        return [_fc_out(nchw_view(y), rank)]


class PoolInt8(Tactic):
    """Max pooling of int8 codes: the max of integers is exact in FP16, so the FP16
    NHWC pooling kernel serves; the output keeps the input's scale."""
    name = "pool.int8_nhwc"
    int8 = True

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.INT8 or layer.pooling_type != PoolingType.MAX \
                or len(in_shapes[0]) != 4:
            return "INT8 2-D max pooling only"
        return None

    def prepare(self, layer):
        from ..int8_exec import tensor_scale
        return {"s_in": tensor_scale(layer._inputs[0])}

    def run(self, state, layer, inputs, precision, out_dtypes):
        from kernels import quantize as Q
        from kernels.gpu.conv_int8 import quantize_nhwc
        from kernels.gpu.pooling import pool2d
        x = inputs[0]
        (p, q), pre = _geometry(layer, x.shape)
        if x.dtype != np.int8:                 # float in: the quantize kernel, NHWC codes out
            x = nchw_view(quantize_nhwc(as_nhwc(x, _float_kind(x), 1), state["s_in"]))
        xq = as_nhwc(x, np.int8)
        if xq.shape[3] % 16 == 0:              # codes pooled in place: one pass, 1 byte each
            y = pool2d(xq, "MAX", layer.window_size_nd, stride=layer.stride_nd, padding=pre,
                       out_hw=(p, q))
        else:                                  # the max of integers is exact in FP16 too
            y = pool2d(as_nhwc(x, np.float16), "MAX", layer.window_size_nd, stride=layer.stride_nd,
                       padding=pre, out_hw=(p, q)).astype(np.int8)
        y = nchw_view(y)
        return [y if out_dtypes[0] == DataType.INT8 else Q.dequantize(y, state["s_in"])]


class ConvInt8SmallC(ConvInt8):
    """INT8 convolution for C <= 4 input channels (the RGB stem): four taps x four
    channels per 16-byte chunk of the reduction (C padded 3 -> 4, a 7x7 reduction 208
    bytes instead of 784), the float network input quantised straight from NCHW;
    bit-exact with ConvInt8 (the padding adds exact zeros)."""
    launcher = "conv2d_int8_smallc"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = super().supports(layer, in_shapes, in_dtypes, precision)
        if reason is None and not 0 < in_shapes[0][1] <= 4:
            return "more than 4 input channels"
        return reason

    # ConvInt8.prepare's state with the tap-packed weights (same codes, same s_w)
    weight_packer = "pack_weight_int8_smallc"

    def run(self, state, layer, inputs, precision, out_dtypes):
        from kernels.gpu.conv_int8 import conv2d_int8_smallc, quantize_nchw_to_nhwc, quantize_nhwc
        x = inputs[0]
        (p, q), pre = _geometry(layer, x.shape)
        if x.dtype == np.int8:
            xq = as_nhwc(x, np.int8, 4)                   # int8 codes, C padded to 4
        elif x.dtype in (np.float32, np.float16) and x.flags.c_contiguous:
            # the network input (NCHW): quantised and reformatted in one pass
            xq = quantize_nchw_to_nhwc(x, state["s_in"], c_pad_to=4)
        else:
            xq = quantize_nhwc(as_nhwc(x, _float_kind(x), 1), state["s_in"], c_pad_to=4,
                               variant="vec")
        r = inputs[1] if len(inputs) > 1 else None
        int8_out = out_dtypes[0] == DataType.INT8
        kw = {}
        if r is not None:
            kw = ({"residual": as_nhwc(r, np.int8, 1), "residual_scale": state["s_res"]}
                  if r.dtype == np.int8 else {"residual": as_nhwc(r, _float_kind(r), 1)})
        y = conv2d_int8_smallc(xq, state["w"], state["s_in"], state["s_w"],
                               kernel_size=layer.kernel_size_nd, stride=layer.stride_nd,
                               padding=pre, dilation=layer.dilation_nd, out_hw=(p, q),
                               bias=state["bias"], act=state["act"], alpha=state["alpha"],
                               beta=state["beta"], s_out=state["s_out"] if int8_out else None,
                               out_dtype=_int8_out_dtype(out_dtypes[0]), tactic=self.tile, **kw)
        return [nchw_view(y)]


def register_smallc():
    """Register ConvInt8SmallC (the INT8 stem for C <= 4), unless CUPYRT_INT8_SMALLC=0.

    First GPU run (H100, session 3): bit-exact with ConvInt8 on C padded to 16 on every test
    case, ResNet-50 stem at batch 256 0.70 ms vs 1.51 ms (benchmarks/RESULTS.md). The
    switch is there to take it out of the builder's choice when a stem is in doubt.
    Called once, at the end of this module's import (a module body runs once per process,
    whichever of conv_tactics / int8_tactics is imported first).
    """
    if os.environ.get("CUPYRT_INT8_SMALLC") == "0":
        return []
    from kernels.gpu.conv_int8 import SMALLC_TACTICS
    tactics = [ConvInt8SmallC(t) for t in SMALLC_TACTICS]
    register(LayerType.CONVOLUTION, *tactics)
    return tactics


from .conv_tactics import (_conv2d_reason, _epilogue, _fc_as_4d, _fc_out, _geometry,  # noqa: E402
                           _launcher, _wgmma_reason)

register_smallc()
