"""Graph queries the passes share."""
def single_consumer(network, tensor, uses=None):
    """The one (layer, index) reading ``tensor``, or None if it has 0 or several
    readers or is a network output (an output must stay materialised)."""
    uses = network.consumers() if uses is None else uses
    readers = uses.get(id(tensor), [])
    if len(readers) != 1 or tensor in network._outputs:
        return None
    return readers[0]
