"""PLACEHOLDER: being written (replace this whole file)."""
from ..types import LayerType
from .base import Layer


class ConcatenationLayer(Layer):
    layer_type = LayerType.CONCATENATION
    min_inputs = 0
    max_inputs = None

class ConstantLayer(Layer):
    layer_type = LayerType.CONSTANT
    min_inputs = 0
    max_inputs = None

class FlattenLayer(Layer):
    layer_type = LayerType.FLATTEN
    min_inputs = 0
    max_inputs = None

class GatherLayer(Layer):
    layer_type = LayerType.GATHER
    min_inputs = 0
    max_inputs = None

class ShuffleLayer(Layer):
    layer_type = LayerType.SHUFFLE
    min_inputs = 0
    max_inputs = None

class SliceLayer(Layer):
    layer_type = LayerType.SLICE
    min_inputs = 0
    max_inputs = None

class SqueezeLayer(Layer):
    layer_type = LayerType.SQUEEZE
    min_inputs = 0
    max_inputs = None

class UnsqueezeLayer(Layer):
    layer_type = LayerType.UNSQUEEZE
    min_inputs = 0
    max_inputs = None
