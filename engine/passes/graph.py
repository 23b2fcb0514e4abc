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


def unique_name(network, base):
    """``base``, or ``base`` with underscores appended until no layer of ``network`` has it."""
    taken = {layer.name for layer in network._layers}
    name = base
    while name in taken:
        name += "_"
    return name


def rewrite_matches(network, layer_type, match, rewrite):
    """For each layer of ``layer_type`` still in ``network``: ``match(network, layer,
    uses)`` gives what to rewrite (None: leave it), ``rewrite(network, layer, found)``
    does it; the network is re-inferred and its consumers recomputed after each rewrite.
    Returns (rewrites, the consumers map of the final network)."""
    done = 0
    uses = network.consumers()
    for layer in list(network._layers):
        if layer not in network._layers or layer.layer_type != layer_type:
            continue
        found = match(network, layer, uses)
        if found is None:
            continue
        rewrite(network, layer, found)
        network._ensure_inferred()
        uses = network.consumers()
        done += 1
    return done, uses
