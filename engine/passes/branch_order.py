"""Put the short side of a residual add first, so the add fuses into the long side.

    x -> reduce -> 3x3 -> expand --\\
    x -> projection --------------- SUM -> ReLU

Epilogue fusion (fuse_epilogue.py) takes the add into a convolution whose other
operand is already computed, so it looks at the layer order: traced from PyTorch
(torchvision computes the shortcut after the main branch), the projection comes
last, the add and ReLU fuse into it, and it must then wait for the expand: the
block is one chain. This pass moves the projection to just before the expand when
its inputs are ready there. The add and ReLU then fuse into the expand, and the
projection is a branch of its own beside reduce and 3x3, which auxiliary streams
(engine/aux_streams.py) can run concurrently. Only the shorter side (fewer layers
from the network inputs) moves, so two sides of one depth stay as they are. A network traced in that order
already (Keras computes the shortcut first) is left as it is.

A pure reordering: same layers, same values; only which operand is the residual
of the fused layer changes (FP32 rounding, and in INT8 which tensor is read as codes).
"""
from ..types import ElementWiseOperation as EW, LayerType
from .graph import single_consumer

NAME = "branch_order"
_HOSTS = (LayerType.CONVOLUTION, LayerType.DECONVOLUTION, LayerType.FULLY_CONNECTED)


def _free_host(network, tensor, uses):
    """The host layer making ``tensor`` when the add could fuse into it: a convolution
    (or FC) whose only reader is that add, with no residual or activation fused yet."""
    layer = tensor.producer
    if (layer is None or layer.layer_type not in _HOSTS or layer.post_activation is not None
            or (len(layer._inputs) > 1 and layer._inputs[1] is not None)):
        return None
    return layer if single_consumer(network, tensor, uses) is not None else None


def _depths(network):
    """layer -> the most layers on a path from a network input to it, itself included."""
    depth = {}
    for layer in network._layers:
        depth[layer] = 1 + max((depth.get(t.producer, 0) for t in layer._inputs
                                if t is not None and t.producer is not None), default=0)
    return depth


def run(network):
    moved = 0
    uses = network.consumers()
    depth = _depths(network)
    for add in list(network._layers):
        if add.layer_type != LayerType.ELEMENTWISE or add.op != EW.SUM or len(add._inputs) != 2:
            continue
        a, b = add._inputs
        if a is None or b is None or a is b:
            continue
        hosts = [_free_host(network, t, uses) for t in (a, b)]
        if None in hosts:
            continue
        order = network._layers.index
        first, last = sorted(hosts, key=order)
        # the later one goes first only where it is the shorter side (never back and forth
        # between sides of one depth) and all it reads is made by then
        at = order(first)
        if depth[last] >= depth[first]:
            continue
        if any(t is not None and t.producer is not None and order(t.producer) >= at for t in last._inputs):
            continue
        network._layers.remove(last)
        network._layers.insert(at, last)
        moved += 1
    return moved
