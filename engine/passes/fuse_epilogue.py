"""Vertical fusion of a convolution / deconvolution / fully-connected layer with
what follows it, into the layer's epilogue:

    conv -> ElementWise SUM(residual) -> Activation   ==>   conv[+residual, act]

The residual is any other tensor of exactly the output's shape computed before
the host layer (so running the fused layer in the host's place stays in
topological order). The epilogue order is fixed, y = act(conv + b + residual),
so an activation is only fused once a residual had its chance.
"""
from ..types import ElementWiseOperation as EW, LayerType
from .graph import single_consumer

NAME = "epilogue_fusion"
_HOSTS = (LayerType.CONVOLUTION, LayerType.DECONVOLUTION, LayerType.FULLY_CONNECTED)


def _has_residual(host):
    return len(host._inputs) > 1 and host._inputs[1] is not None


def run(network):
    fused = 0
    for host in list(network._layers):
        if host not in network._layers or host.layer_type not in _HOSTS:
            continue
        if host.post_activation is not None:
            continue
        out = host._outputs[0]
        use = single_consumer(network, out)
        if use is None:
            continue
        nxt = use[0]
        if nxt._outputs and nxt._outputs[0].dtype != out.dtype:
            continue
        if nxt.layer_type == LayerType.ACTIVATION:
            host.post_activation = nxt.activation_type
            host.post_alpha, host.post_beta = nxt.params()
        elif (nxt.layer_type == LayerType.ELEMENTWISE and nxt.op == EW.SUM
              and not _has_residual(host)):
            a, b = nxt._inputs
            other = b if a is out else a
            # shapes equal as declared; a dynamic dim is re-checked by the host at run time
            if other is out or other.shape != out.shape:
                continue
            if other.producer is not None and (network._layers.index(other.producer)
                                               > network._layers.index(host)):
                continue
            host.set_input(1, other)
        else:
            continue
        network.take_output(host, nxt)
        fused += 1
    return fused
