"""TopK: TensorRT's ITopKLayer, the k largest or smallest values along one axis.

Two outputs: the values (the input's dtype) and their INT32 indices along the
axis, best first. TF's TopKV2 is TopK(MAX) on the last axis; ArgMax/ArgMin are
TopK with k = 1 and the axis squeezed away by the converter.
"""
from kernels import selection as K

from ..kernel_table import numpy_impl
from ..types import DataType, LayerType, TopKOperation
from .base import EnumAttr, Int, Layer, axes_from_mask

_ALLOWED = (DataType.FLOAT, DataType.HALF, DataType.INT32)


class TopKLayer(Layer):
    """out0 = the ``k`` best values along the single axis of the ``axes``
    bitmask (largest for MAX, smallest for MIN), out1 = their INT32 indices.
    Equal values keep input order (lower index first), as TF's TopKV2."""
    layer_type = LayerType.TOPK
    type_attr = "op"
    op = EnumAttr(TopKOperation, TopKOperation.MAX)
    k = Int(1, minimum=1)
    axes = Int(1, minimum=1)

    def axis(self, rank):
        found = axes_from_mask(self, self.axes, rank)
        if len(found) != 1:
            self.fail("axes", f"bitmask {self.axes:#b}", "exactly one axis (one bit set)")
        return found[0]

    def infer(self, in_shapes, in_dtypes):
        shape, dtype = tuple(in_shapes[0]), in_dtypes[0]
        if dtype not in _ALLOWED:
            self.fail("input", f"a {dtype.name} tensor",
                      "a " + ", ".join(d.name for d in _ALLOWED) + " tensor")
        axis = self.axis(len(shape))
        if shape[axis] >= 0 and self.k > shape[axis]:
            self.fail("k", self.k, f"at most {shape[axis]} (the size of axis {axis} of {shape})")
        out = shape[:axis] + (self.k,) + shape[axis + 1:]
        return [(out, dtype), (out, DataType.INT32)]


@numpy_impl(LayerType.TOPK)
def _topk(layer, inputs):
    x = inputs[0]
    values, indices = K.topk(x, layer.k, layer.axis(x.ndim), layer.op == TopKOperation.MAX)
    return [values, indices]
