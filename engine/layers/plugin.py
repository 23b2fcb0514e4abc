"""PLACEHOLDER: being written (replace this whole file)."""
from ..types import LayerType
from .base import Layer


class PluginV2Layer(Layer):
    layer_type = LayerType.PLUGIN_V2
    min_inputs = 0
    max_inputs = None
