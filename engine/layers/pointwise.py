"""Pointwise layers: Activation, Unary, ElementWise, Scale, Identity, Cast, Select."""
import numpy as np

from kernels import pointwise as K

from ..kernel_table import numpy_impl
from ..types import ActivationType, DataType, LayerType
from .base import EnumAttr, Float, Layer

# TensorRT's defaults for alpha/beta where the activation uses them
_ACT_DEFAULTS = {
    ActivationType.LEAKY_RELU: (0.01, 0.0),
    ActivationType.ELU: (1.0, 0.0),
    ActivationType.SELU: (1.6732632423543772, 1.0507009873554805),
    ActivationType.SOFTPLUS: (1.0, 1.0),
    ActivationType.CLIP: (0.0, 6.0),
    ActivationType.HARD_SIGMOID: (0.2, 0.5),
    ActivationType.SCALED_TANH: (1.0, 1.0),
    ActivationType.THRESHOLDED_RELU: (1.0, 0.0),
}


class ActivationLayer(Layer):
    layer_type = LayerType.ACTIVATION
    type_attr = "activation_type"
    activation_type = EnumAttr(ActivationType, ActivationType.RELU)
    alpha = Float(None)
    beta = Float(None)

    def params(self):
        """(alpha, beta) with TensorRT's defaults filled in."""
        da, db = _ACT_DEFAULTS.get(self.activation_type, (0.0, 0.0))
        return (da if self.alpha is None else self.alpha, db if self.beta is None else self.beta)

    def infer(self, in_shapes, in_dtypes):
        if in_dtypes[0] not in (DataType.FLOAT, DataType.HALF, DataType.INT8):
            self.fail("input", f"a {in_dtypes[0].name} tensor", "a FLOAT, HALF or INT8 tensor")
        return [(in_shapes[0], in_dtypes[0])]


@numpy_impl(LayerType.ACTIVATION)
def _activation(layer, inputs):
    alpha, beta = layer.params()
    return [K.activation(inputs[0], layer.activation_type.name, alpha, beta)]


class UnaryLayer(Layer):  # PLACEHOLDER: being written
    layer_type = LayerType.UNARY
    min_inputs = 0
    max_inputs = None


class ElementWiseLayer(Layer):  # PLACEHOLDER: being written
    layer_type = LayerType.ELEMENTWISE
    min_inputs = 0
    max_inputs = None


class ScaleLayer(Layer):  # PLACEHOLDER: being written
    layer_type = LayerType.SCALE
    min_inputs = 0
    max_inputs = None


class IdentityLayer(Layer):  # PLACEHOLDER: being written
    layer_type = LayerType.IDENTITY
    min_inputs = 0
    max_inputs = None


class CastLayer(Layer):  # PLACEHOLDER: being written
    layer_type = LayerType.CAST
    min_inputs = 0
    max_inputs = None


class SelectLayer(Layer):  # PLACEHOLDER: being written
    layer_type = LayerType.SELECT
    min_inputs = 0
    max_inputs = None
