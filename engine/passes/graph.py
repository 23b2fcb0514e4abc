"""Graph queries the passes share."""
from ..layers.classes import ConstantLayer


def single_consumer(network, tensor, uses=None):
    """The one (layer, index) reading ``tensor``, or None if it has 0 or several
    readers or is a network output (an output must stay materialised)."""
    uses = network.consumers() if uses is None else uses
    readers = uses.get(id(tensor), [])
    if len(readers) != 1 or tensor in network._outputs:
        return None
    return readers[0]


def replace_with_constant(network, layer, value, suffix):
    """Put a Constant holding ``value`` where ``layer`` stands: same place in the
    layer order (so topological order holds), and it takes over the layer's output
    tensor and its consumers. The old layer is left without consumers for the
    dead-layer pass. Returns the new layer."""
    out = layer._outputs[0]
    const = ConstantLayer(network, [], shape=out._shape, weights=value)
    const.name = layer.name + suffix
    network._add(const)
    network._layers.remove(const)
    network._layers.insert(network._layers.index(layer), const)
    network.take_output(const, layer)
    return const
