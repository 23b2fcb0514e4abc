"""Pooling tactics (kernels.gpu.pooling), NHWC, and the global average pool that a
Reduce AVG over H and W is (ResNet's head):

    pool.nhwc                 pooling.pool2d           max / average, FP16 or FP32
    pool.int8_nhwc            pooling.pool2d           max of int8 codes (INT8 layers)
    reduce.global_avg_nhwc    pooling.global_avgpool   Reduce AVG over axes 2, 3, keep dims
"""
import numpy as np

from kernels import quantize as Q
from kernels.gpu import pooling, quantize_int8

from ..int8_exec import tensor_scale
from ..types import DataType, PoolingType, ReduceOperation
from .base import Tactic, as_nhwc, nchw_view
from .concat import claim, written
from .conv_common import compute_dtype, float_kind, window_geometry


class PoolNhwc(Tactic):
    """Max / average pooling over NHWC."""
    name = "pool.nhwc"
    writes_into_concat = True

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if len(in_shapes[0]) != 4:
            return "2-D pooling only"
        if layer.pooling_type == PoolingType.MAX_AVERAGE_BLEND:
            return "blend pooling"
        return None

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        dt = compute_dtype(precision)
        x = inputs[0]
        (p, q), pre = window_geometry(layer, x.shape)
        place = claim(into, (x.shape[0], p, q, x.shape[1]), (dt,))   # writes x's dtype
        y = pooling.pool2d(as_nhwc(x, dt), layer.pooling_type.name, layer.window_size_nd,
                           stride=layer.stride_nd, padding=pre, out_hw=(p, q),
                           exclude_padding=layer.average_count_excludes_padding, **place)
        if place:
            return [written(y, place, x.shape[1])]
        return [nchw_view(y).astype(out_dtypes[0].to_numpy(), copy=False)]


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
        return {"s_in": tensor_scale(layer._inputs[0])}

    def run(self, state, layer, inputs, precision, out_dtypes):
        x = inputs[0]
        (p, q), pre = window_geometry(layer, x.shape)
        if x.dtype != np.int8:                 # float in: the quantize kernel, NHWC codes out
            x = nchw_view(quantize_int8.quantize_nhwc(as_nhwc(x, float_kind(x), 1), state["s_in"]))
        xq = as_nhwc(x, np.int8)
        if xq.shape[3] % 16 == 0:              # codes pooled in place: one pass, 1 byte each
            y = pooling.pool2d(xq, "MAX", layer.window_size_nd, stride=layer.stride_nd,
                               padding=pre, out_hw=(p, q))
        else:                                  # the max of integers is exact in FP16 too
            y = pooling.pool2d(as_nhwc(x, np.float16), "MAX", layer.window_size_nd,
                               stride=layer.stride_nd, padding=pre, out_hw=(p, q)).astype(np.int8)
        y = nchw_view(y)
        return [y if out_dtypes[0] == DataType.INT8 else Q.dequantize(y, state["s_in"])]


class GlobalAvgPool(Tactic):
    """Reduce AVG over H and W (keep dims) of an NHWC tensor: ResNet's head."""
    name = "reduce.global_avg_nhwc"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if len(in_shapes[0]) != 4 or layer.op != ReduceOperation.AVG or layer.axes != 0b1100 \
                or not layer.keep_dims:
            return "only AVG over axes 2, 3 with keep_dims on rank 4"
        return None

    def run(self, state, layer, inputs, precision, out_dtypes):
        y = pooling.global_avgpool(as_nhwc(inputs[0], compute_dtype(precision)), keepdims=True)
        return [nchw_view(y).astype(out_dtypes[0].to_numpy(), copy=False)]


POOLING_TACTICS = (PoolNhwc(), PoolInt8())
REDUCE_TACTICS = (GlobalAvgPool(),)
