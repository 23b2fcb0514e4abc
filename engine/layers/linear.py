"""PLACEHOLDER: being written (replace this whole file)."""
from ..types import LayerType
from .base import Layer


class FullyConnectedLayer(Layer):
    layer_type = LayerType.FULLY_CONNECTED
    min_inputs = 0
    max_inputs = None

class MatrixMultiplyLayer(Layer):
    layer_type = LayerType.MATRIX_MULTIPLY
    min_inputs = 0
    max_inputs = None

class ReduceLayer(Layer):
    layer_type = LayerType.REDUCE
    min_inputs = 0
    max_inputs = None

class SoftMaxLayer(Layer):
    layer_type = LayerType.SOFTMAX
    min_inputs = 0
    max_inputs = None
