"""Fuse chains of pointwise layers into one PointwiseLayer (one kernel on the GPU).

A chain follows a single running value: each member's output is read only by
the next member, and every member keeps the value's shape (its other operand,
if any, broadcasts into it). Other operands are constants (folded into the op)
or tensors computed before the chain's first layer, so the fused layer can run
in that first layer's place. Runs after epilogue fusion: an activation that can
ride on a convolution's epilogue goes there first.
"""
from ..layers.pointwise_chain import Op, PointwiseLayer
from ..types import FLOATING, ElementWiseOperation as EW, LayerType, UnaryOperation as U
from .graph import single_consumer

NAME = "pointwise_fusion"
LATE = True
MIN_CHAIN = 2
_ARITH = {EW.SUM, EW.PROD, EW.MAX, EW.MIN, EW.SUB, EW.DIV, EW.POW}
_UNARY_FLOAT = set(U) - {U.NOT}


def _operand(layer, value):
    """For a pointwise ``layer`` reading ``value``: (ok, other tensor or None, side)."""
    t = layer.layer_type
    if t in (LayerType.ACTIVATION, LayerType.SCALE) or (t == LayerType.UNARY and
                                                        layer.op in _UNARY_FLOAT):
        return layer._inputs[0] is value, None, 0
    if t == LayerType.ELEMENTWISE and layer.op in _ARITH:
        a, b = layer._inputs
        if a is b:
            return False, None, 0
        if a is value:
            return True, b, 0
        if b is value:
            return True, a, 1
    return False, None, 0


def _fusible(layer, value, head_index, network, head=None):
    if layer.layer_type == LayerType.SCALE and layer.channel_axis != 1:
        return False
    if layer._output_types or (head is not None and layer._precision != head._precision):
        return False          # a precision constraint keeps the layer on its own
    ok, other, _ = _operand(layer, value)
    if not ok or value.dtype not in FLOATING or layer._outputs[0].shape != value.shape:
        return False
    if layer._outputs[0].dtype != value.dtype:
        return False
    if other is not None and other.producer is not None and \
            other.producer.layer_type != LayerType.CONSTANT and \
            network._layers.index(other.producer) >= head_index:
        return False
    return True


def run(network):
    fused = 0
    for head in list(network._layers):
        if head not in network._layers or not head._inputs:
            continue
        value = head._inputs[0]
        if head.layer_type == LayerType.ELEMENTWISE:
            ok, other, side = _operand(head, head._inputs[0])
            if ok and other is not None and other.producer is not None \
                    and other.producer.layer_type != LayerType.CONSTANT \
                    and (value.producer is None or value.producer.layer_type == LayerType.CONSTANT):
                value = other           # the running value is the non-constant operand
        head_index = network._layers.index(head)
        if not _fusible(head, value, head_index, network):
            continue
        chain, cur = [head], head._outputs[0]
        while True:
            use = single_consumer(network, cur)
            if use is None or not _fusible(use[0], cur, head_index, network, head):
                break
            chain.append(use[0])
            cur = use[0]._outputs[0]
        if len(chain) < MIN_CHAIN:
            continue
        inputs, ops, v = [value], [], value
        for member in chain:
            _, other, side = _operand(member, v)
            op = Op(member, side=side)
            if other is not None:
                if other.producer is not None and other.producer.layer_type == LayerType.CONSTANT:
                    op.const = other.producer.weights.reshape(other.shape)
                else:
                    if other not in inputs:
                        inputs.append(other)
                    op.input_index = inputs.index(other)
            ops.append(op)
            v = member._outputs[0]
        layer = PointwiseLayer(network, inputs, chain=ops)
        layer.name = "+".join(m.name for m in chain)[:120]
        network._add(layer)
        network._layers.remove(layer)
        network._layers.insert(head_index, layer)
        last = chain[-1]
        for member in chain[:-1]:
            network.remove_layer(member)
        network.take_output(layer, last)
        for member in chain:             # the ops keep them detached from the network
            member._network, member._outputs = None, []
        fused += 1
    return fused
