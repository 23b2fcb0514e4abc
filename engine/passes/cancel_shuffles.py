"""Remove layers that move no data: identities, same-type casts, no-op shuffles,
and pairs of shuffles that compose (transpose∘transpose, reshape∘reshape).

A shuffle computes  second_transpose(reshape(first_transpose(x))).  Two
back-to-back pure transposes compose into one permutation (and vanish when it
is the identity); two back-to-back pure reshapes with static shapes become one.
"""
from ..types import LayerType
from .graph import single_consumer

NAME = "identity_shuffle_cancellation"


def _is_transpose_only(s):
    return s.reshape_dims is None and s.second_transpose is None


def _is_reshape_only(s):
    return s.first_transpose is None and s.second_transpose is None


def _is_noop(layer):
    if layer.layer_type not in (LayerType.IDENTITY, LayerType.CAST, LayerType.SHUFFLE):
        return False
    t_in, t_out = layer._inputs[0], layer._outputs[0]
    if layer.layer_type == LayerType.IDENTITY:
        return t_in.dtype == t_out.dtype
    if layer.layer_type == LayerType.CAST:
        return t_in.dtype == layer.to_type
    if layer.layer_type == LayerType.SHUFFLE:
        perm_ok = all(p is None or tuple(p) == tuple(range(len(p)))
                      for p in (layer.first_transpose, layer.second_transpose))
        return perm_ok and t_in.shape == t_out.shape and -1 not in t_in.shape


def _bypass(network, layer):
    """Replace ``layer``'s output by its input everywhere. Not when that would
    rename a network input or merge two network outputs."""
    t_in, t_out = layer._inputs[0], layer._outputs[0]
    if t_out in network._outputs and (t_in.is_network_input or t_in in network._outputs):
        return False
    network.replace_all_uses(t_out, t_in)
    network.remove_layer(layer)
    return True


def run(network):
    changes = 0
    for layer in list(network._layers):
        if layer not in network._layers:
            continue
        if _is_noop(layer):
            changes += _bypass(network, layer)
            continue
        if layer.layer_type != LayerType.SHUFFLE:
            continue
        use = single_consumer(network, layer._outputs[0])
        if use is None or use[0].layer_type != LayerType.SHUFFLE:
            continue
        nxt = use[0]
        if _is_transpose_only(layer) and _is_transpose_only(nxt):
            p, q = layer.first_transpose, nxt.first_transpose
            if p is None or q is None:
                continue
            nxt.first_transpose = tuple(p[i] for i in q)     # out[j] = x[p[q[j]]]
        elif _is_reshape_only(layer) and _is_reshape_only(nxt):
            if -1 in nxt._outputs[0].shape:
                continue
            nxt.reshape_dims = nxt._outputs[0].shape
            nxt.zero_is_placeholder = True
        else:
            continue
        nxt.set_input(0, layer._inputs[0])
        network.remove_layer(layer)
        changes += 1
    return changes
