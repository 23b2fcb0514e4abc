"""PLACEHOLDER: being written (replace this whole file)."""
from ..types import LayerType
from .base import Layer


class ConvolutionLayer(Layer):
    layer_type = LayerType.CONVOLUTION
    min_inputs = 0
    max_inputs = None

class DeconvolutionLayer(Layer):
    layer_type = LayerType.DECONVOLUTION
    min_inputs = 0
    max_inputs = None

class LRNLayer(Layer):
    layer_type = LayerType.LRN
    min_inputs = 0
    max_inputs = None

class PaddingLayer(Layer):
    layer_type = LayerType.PADDING
    min_inputs = 0
    max_inputs = None

class PoolingLayer(Layer):
    layer_type = LayerType.POOLING
    min_inputs = 0
    max_inputs = None

class ResizeLayer(Layer):
    layer_type = LayerType.RESIZE
    min_inputs = 0
    max_inputs = None
