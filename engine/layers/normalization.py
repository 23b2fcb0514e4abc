"""Normalization: TensorRT's INormalizationLayer (layer, instance and group norm)."""
from kernels import reduce as R

from ..kernel_table import numpy_impl
from ..types import LayerType
from .base import Float, Int, Layer, axes_from_mask, broadcast_shapes, check_float, dim_known


class NormalizationLayer(Layer):
    """TensorRT's INormalizationLayer (layer, instance and group norm):

        y = (x - mean) / sqrt(var + epsilon) * scale + bias

    with mean and (biased) variance over the ``axes`` bitmask; with
    ``num_groups`` > 1 the channel axis (1) is split into groups that are
    normalised separately (group norm). Inputs: x, scale, bias; scale and bias
    broadcast to x (same rank).
    """

    layer_type = LayerType.NORMALIZATION
    min_inputs = max_inputs = 3
    axes = Int(1, minimum=1)
    epsilon = Float(1e-5)
    num_groups = Int(1, minimum=1)

    def infer(self, in_shapes, in_dtypes):
        x, scale, bias = in_shapes
        check_float(self, "input", in_dtypes[0])
        for arg, dt in (("scale", in_dtypes[1]), ("bias", in_dtypes[2])):
            check_float(self, arg, dt)
        axes_from_mask(self, self.axes, len(x))
        if not self.epsilon > 0:
            self.fail("epsilon", self.epsilon, "a positive number")
        for arg, s in (("scale", scale), ("bias", bias)):
            broadcast_shapes(self, x, s, arg)
            if any(d not in (1, xd) and xd != -1 for d, xd in zip(s, x)):
                self.fail(arg, f"shape {s}", f"a shape that broadcasts into the input {x}")
        if self.num_groups > 1:
            if len(x) < 2 or (dim_known(x[1]) and x[1] % self.num_groups):
                self.fail("num_groups", self.num_groups, f"a divisor of the channels of {x}")
        return [(x, in_dtypes[0])]


@numpy_impl(LayerType.NORMALIZATION)
def _normalization(layer, inputs):
    x, scale, bias = inputs
    return [R.normalize(x, scale, bias, axes_from_mask(layer, layer.axes, x.ndim),
                        layer.epsilon, layer.num_groups)]
