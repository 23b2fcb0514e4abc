"""Remove layers none of whose outputs reach a network output."""
NAME = "dead_layer_removal"


def run(network):
    live = {id(t) for t in network._outputs}
    dead = []
    for layer in reversed(network._layers):
        if any(id(t) in live for t in layer._outputs):
            live.update(id(t) for t in layer._inputs if t is not None)
        else:
            dead.append(layer)
    for layer in dead:
        network.remove_layer(layer)
    return len(dead)
