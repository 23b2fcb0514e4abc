"""Shape tensors become constants, dynamic reshapes and sizes become attributes.

A build at concrete input shapes knows every shape tensor's value
(engine/shape_values.py), as TensorRT does when it specialises an engine for
an optimisation profile. So here:

    Shape(x) -> Gather -> Reduce -> Concatenation -> Shuffle input 1
       becomes                         Constant   -> (dropped)   reshape_dims

Each layer whose INT32 shape-tensor output is fully known is replaced by a
Constant; a Shuffle whose reshape dims come from a Constant takes them as
``reshape_dims`` and a Slice its size as ``shape``. The layers left without
consumers go to the dead-layer pass. The built plan then holds no shape
tensors at all: no host reads at run time, and the CuPy backend can capture
the engine into a CUDA graph. Where input dims stay dynamic nothing is known,
nothing changes, and the layers compute their shape tensors at run time.
"""
import numpy as np

from ..shape_values import array as value_array, is_known as values_known
from ..types import LayerType
from .graph import replace_with_constant

NAME = "shape_tensors"
_NEVER = {LayerType.CONSTANT, LayerType.PLUGIN_V2}


def _from_constant(t):
    return t is not None and t.producer is not None and \
        t.producer.layer_type == LayerType.CONSTANT


def _fold_values(network):
    folded = 0
    for layer in list(network._layers):
        if (layer.layer_type in _NEVER or len(layer._outputs) != 1
                or layer._outputs[0].is_network_output
                or not values_known(layer._outputs[0])):
            continue
        replace_with_constant(network, layer, value_array(layer._outputs[0]), "_value")
        folded += 1
    return folded


# layer type -> (flag saying its input holds the dims, that input's index, the attribute)
_DIMS_FROM_INPUT = {LayerType.SHUFFLE: ("dynamic_reshape", 1, "reshape_dims"),
                    LayerType.SLICE: ("dynamic_size", 2, "shape")}


def _attributes(network):
    changed = 0
    for layer in network._layers:
        flag, index, attr = _DIMS_FROM_INPUT.get(layer.layer_type, (None, 0, None))
        if flag and getattr(layer, flag) and _from_constant(layer._inputs[index]):
            dims = np.asarray(layer._inputs[index].producer.weights).reshape(-1)
            layer._attrs[attr] = tuple(int(d) for d in dims)
            layer._inputs = layer._inputs[:1]
            changed += 1
    if changed:
        network._dirty = True
    return changed


def run(network):
    return _fold_values(network) + _attributes(network)
