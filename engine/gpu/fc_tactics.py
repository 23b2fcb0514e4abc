"""Fully-connected tactics, every precision. Except cuBLAS, each runs the layer as the
convolution whose window is the whole input (tensor cores, fused epilogue, CUDA-graph
safe), on the convolution kernel it names:

    fc.igemm2_<tile>     conv_igemm.conv2d_igemm          FP16 (the two small V2 tiles)
    fc.igemmsk_<tile>    conv_igemm.conv2d_igemm_splitk   FP16, split-K (M is the batch: small)
    fc.cublas            conv_gemm.fully_connected        cuBLAS + epilogue kernel, any rank
    fc.i8_<tile>         conv_int8.conv2d_int8            INT8, bit-exact with the emulation
    fc.3xtf32_<tile>     conv_tf32.conv2d_tf32            FP32 (3xTF32; tf32_* under the TF32 flag)
"""
import numpy as np

from kernels.gpu import conv_gemm, conv_igemm, conv_int8, conv_tf32, quantize_int8

from ..int8_exec import tensor_scale
from ..types import DataType
from .base import Tactic, as_nhwc, cupy, nchw_view
from .conv_common import (compute_dtype, epilogue_state, fc_as_4d, fc_output, float_kind,
                          int8_out_dtype, is_half, residual_nhwc)
from .conv_tf32_tactics import precision_reason
from .device import sm_count


def _conv_weights(layer):
    """The FC kernel as the KCRS filter of the whole-input convolution."""
    shape = layer._inputs[0].shape
    c, h, w = shape[1:] if len(shape) == 4 else (shape[1], 1, 1)
    return layer.kernel.reshape(layer.num_output_channels, c, h, w)


class FcIgemm(Tactic):
    """Fully connected as a convolution whose window is the whole input: tensor
    cores, fused epilogue, and CUDA-graph safe (cuBLAS is not)."""
    launch = staticmethod(conv_igemm.conv2d_igemm)

    def __init__(self, tile):
        self.tile = tile
        self.name = f"fc.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if not is_half(precision):
            return "tensor-core FC runs in FP16"
        if len(in_shapes[0]) not in (2, 4):
            return "FC on (N, C) or (N, C, H, W) inputs only"
        return None

    def prepare(self, layer):
        return {"w": conv_igemm.pack_weight_krsc(_conv_weights(layer), "KCRS", c_pad_to=8),
                **epilogue_state(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes):
        rank = inputs[0].ndim
        x, inputs = fc_as_4d(inputs)
        out_dtype = out_dtypes[0].to_numpy()
        y = self.launch(
            as_nhwc(x, np.float16, 8), state["w"], out_hw=(1, 1), bias=state["bias"],
            scale=state["scale"], residual=residual_nhwc(inputs, out_dtype), act=state["act"],
            alpha=state["alpha"], beta=state["beta"], out_dtype=out_dtype, tactic=self.tile)
        return [fc_output(nchw_view(y), rank)]


class FcIgemmSplitK(FcIgemm):
    """Fully connected through the split-K implicit GEMM (M is the batch: small)."""
    launch = staticmethod(conv_igemm.conv2d_igemm_splitk)


class FcCublas(Tactic):
    """Fully connected through cuBLAS + fused epilogue; any rank."""
    name = "fc.cublas"
    capturable = False

    def prepare(self, layer):
        cp = cupy()
        k = layer.num_output_channels
        w = layer.kernel.reshape(k, -1)
        return {"w16": cp.asarray(w, cp.float16), "w32": cp.asarray(w, cp.float32),
                **epilogue_state(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes):
        cp = cupy()
        dt = compute_dtype(precision)
        x = inputs[0]
        k = layer.num_output_channels
        flat = 3 if x.ndim >= 3 else 1
        lead = x.shape[:x.ndim - flat]
        x2 = cp.ascontiguousarray(x.reshape(int(np.prod(lead)), -1).astype(dt, copy=False))
        out_dtype = out_dtypes[0].to_numpy()
        res = inputs[1] if len(inputs) > 1 else None
        if res is not None:
            res = cp.ascontiguousarray(res.reshape(x2.shape[0], k).astype(out_dtype, copy=False))
        y = conv_gemm.fully_connected(x2, state["w16" if dt == np.float16 else "w32"],
                                      bias=state["bias"], scale=state["scale"], residual=res,
                                      act=state["act"], alpha=state["alpha"], beta=state["beta"],
                                      out_dtype=out_dtype)
        return [y.reshape(lead + ((k, 1, 1) if flat == 3 else (k,)))]


class FcInt8(Tactic):
    """INT8 fully connected as the INT8 convolution whose window is the whole input
    (graph-safe, unlike the emulation's float64 matmul); bit-exact with it."""
    int8 = True
    launch = staticmethod(conv_int8.conv2d_int8)

    def __init__(self, tile):
        self.tile, self.name = tile, f"fc.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.INT8:
            return "INT8 tactic"
        if len(in_shapes[0]) not in (2, 4) or len(in_shapes) > 1 and in_shapes[1] is not None:
            return "(N, C) or (N, C, H, W) inputs without a residual"
        return underfills(self.tile, in_shapes[0][0], layer.num_output_channels, sm_count())

    def prepare(self, layer):
        wq, s_w = conv_int8.pack_weight_int8_krsc(_conv_weights(layer), "KCRS")
        ep = epilogue_state(layer)
        return {"w": wq, "s_w": s_w, **ep, "bias": None if layer.bias is None else ep["bias"],
                "s_in": tensor_scale(layer._inputs[0]),
                "s_out": tensor_scale(layer._outputs[0]) if layer._outputs[0].dynamic_range else None}

    def run(self, state, layer, inputs, precision, out_dtypes):
        rank = inputs[0].ndim
        x, _ = fc_as_4d(inputs[:1])
        if x.dtype == np.int8:
            xq = as_nhwc(x, np.int8, 16)
        else:
            xq = quantize_int8.quantize_nhwc(as_nhwc(x, float_kind(x), 1), state["s_in"], c_pad_to=16)
        int8_out = out_dtypes[0] == DataType.INT8
        y = self.launch(xq, state["w"], state["s_in"], state["s_w"], out_hw=(1, 1),
                        bias=state["bias"], act=state["act"], alpha=state["alpha"],
                        beta=state["beta"], s_out=state["s_out"] if int8_out else None,
                        out_dtype=int8_out_dtype(out_dtypes[0]), tactic=self.tile)
        return [fc_output(nchw_view(y), rank)]


def fc_ctas(tile, rows, k):
    """The CTAs an INT8 tile launches for a fully connected layer of ``rows`` rows (the batch)
    and ``k`` outputs (conv_int8's grid: row tiles x output tiles)."""
    return -(-rows // tile.bm) * -(-k // tile.bn)


def underfills(tile, rows, k, sms=None):
    """Why ``tile`` is not timed for an INT8 fully connected layer of ``rows`` x ``k``: it
    launches fewer than half the CTAs of the INT8 tile launching the most, capped at ``sms``
    (the device's SMs; None: no cap). Such a tile leaves most SMs idle on a layer no tile
    fills, each CTA doing twice the work or more. ResNet-50's classifier at batch 256 (64
    CTAs at most) timed all 7 tiles: the 4 of 8-16 CTAs ran 1.57-2.36x the 64x64 tile's
    0.0133 ms and the two of 32 CTAs 1.30-1.35x (H100, session 18); each tile is an NVRTC
    compile in the INT8 cold build. None (timed) for a dynamic row count."""
    if rows < 1:
        return None
    most = max(fc_ctas(t, rows, k) for t in conv_int8.INT8_TACTICS)
    enough = most if sms is None else min(most, sms)
    mine = fc_ctas(tile, rows, k)
    if 2 * mine < enough:
        return (f"{mine} CTAs for {rows} x {k}: under half of the {enough} another INT8 tile "
                f"launches{'' if sms is None else f' (of {sms} SMs)'}")
    return None


class FcTf32(Tactic):
    """Fully connected as the whole-input convolution (as FcIgemm), FP32 on tensor
    cores (3xTF32, or plain TF32 on ``tf32_*`` tiles): graph-safe, unlike cuBLAS."""
    tf32 = False
    launch = staticmethod(conv_tf32.conv2d_tf32)

    def __init__(self, tile):
        self.tile, self.precise = tile, tile.precise
        if not self.precise:
            self.tf32 = True
        self.name = f"fc.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = precision_reason(precision, self.precise)
        if reason is None and len(in_shapes[0]) not in (2, 4):
            reason = "FC on (N, C) or (N, C, H, W) inputs only"
        return reason

    def prepare(self, layer):
        return {"w": conv_tf32.pack_weight_krsc_f32(_conv_weights(layer), "KCRS",
                                                    c_pad_to=conv_tf32.C_ALIGN),
                **epilogue_state(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes):
        rank = inputs[0].ndim
        x, inputs = fc_as_4d(inputs)
        out_dtype = out_dtypes[0].to_numpy()
        y = self.launch(
            as_nhwc(x, np.float32, conv_tf32.C_ALIGN), state["w"], precise=self.precise,
            out_hw=(1, 1), bias=state["bias"], scale=state["scale"],
            residual=residual_nhwc(inputs, out_dtype), act=state["act"], alpha=state["alpha"],
            beta=state["beta"], out_dtype=out_dtype, tactic=self.tile)
        return [fc_output(nchw_view(y), rank)]


# The FULLY_CONNECTED tactics, in the order the builder times them.
TACTICS = (
    *[FcIgemm(t) for t in conv_igemm.FC_TACTICS],
    *[FcIgemmSplitK(t) for t in conv_igemm.SPLITK_TACTICS],
    FcCublas(),
    *[FcInt8(t) for t in conv_int8.INT8_TACTICS],
    *[FcTf32(t) for t in conv_tf32.FC_TACTICS],
)
