"""Reduce: TensorRT's IReduceLayer (sum, product, max, min, mean over a bitmask of axes)."""
from kernels import reduce as R

from ..kernel_table import numpy_impl
from ..types import DataType, LayerType, ReduceOperation
from .base import Bool, EnumAttr, Int, Layer, axes_from_mask


class ReduceLayer(Layer):
    """TensorRT's IReduceLayer: ``axes`` is a bitmask (bit i reduces axis i)."""

    layer_type = LayerType.REDUCE
    op = EnumAttr(ReduceOperation, ReduceOperation.SUM)
    axes = Int(1, minimum=1)
    keep_dims = Bool(False)

    def reduce_axes(self, rank):
        return axes_from_mask(self, self.axes, rank)

    def infer(self, in_shapes, in_dtypes):
        shape, dtype = in_shapes[0], in_dtypes[0]
        if dtype not in (DataType.FLOAT, DataType.HALF, DataType.INT32):
            self.fail("input", f"a {dtype.name} tensor", "a FLOAT, HALF or INT32 tensor")
        if dtype == DataType.INT32 and self.op == ReduceOperation.AVG:
            self.fail("op", "AVG on an INT32 tensor", "SUM, PROD, MAX or MIN for INT32 (or cast first)")
        axes = self.reduce_axes(len(shape))
        if self.keep_dims:
            out = tuple(1 if i in axes else d for i, d in enumerate(shape))
        else:
            out = tuple(d for i, d in enumerate(shape) if i not in axes)
        return [(out, dtype)]


@numpy_impl(LayerType.REDUCE)
def _reduce(layer, inputs):
    x = inputs[0]
    return [R.reduce(x, layer.op.name, layer.reduce_axes(x.ndim), layer.keep_dims)]
