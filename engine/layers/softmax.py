"""SoftMax: TensorRT's ISoftMaxLayer over one axis."""
from kernels import reduce as R

from ..kernel_table import numpy_impl
from ..types import LayerType
from .base import Int, Layer, axes_from_mask, check_float


class SoftMaxLayer(Layer):
    """TensorRT's ISoftMaxLayer: ``axes`` is a bitmask with exactly one bit set."""

    layer_type = LayerType.SOFTMAX
    axes = Int(1, minimum=1)

    def axis(self, rank):
        axes = axes_from_mask(self, self.axes, rank)
        if len(axes) != 1:
            self.fail("axes", f"bitmask {self.axes:#b} (axes {axes})", "exactly one bit set")
        return axes[0]

    def infer(self, in_shapes, in_dtypes):
        check_float(self, "input", in_dtypes[0])
        self.axis(len(in_shapes[0]))
        return [(in_shapes[0], in_dtypes[0])]


@numpy_impl(LayerType.SOFTMAX)
def _softmax(layer, inputs):
    return [R.softmax(inputs[0], layer.axis(inputs[0].ndim))]
