"""Evaluate single-output layers whose inputs are all constants, at build time.

This is what turns Keras 3's decomposed batch norm (Rsqrt/Mul/Sub on constant
mean, variance, gamma, beta) into two constant vectors that the scale-folding
pass can push into the convolution weights.
"""
import numpy as np

from ..kernel_table import numpy_kernel
from ..types import LayerType
from .graph import replace_with_constant

NAME = "constant_folding"
MAX_ELEMENTS = 1 << 26      # never materialise a folded tensor larger than this
_NEVER = {LayerType.CONSTANT, LayerType.PLUGIN_V2}


def _foldable(layer):
    if layer.layer_type in _NEVER or not layer._inputs or len(layer._outputs) != 1:
        return False
    for t in layer._inputs:
        if t is not None and (t.producer is None or t.producer.layer_type != LayerType.CONSTANT):
            return False
    shape = layer._outputs[0].shape
    return -1 not in shape and int(np.prod(shape)) <= MAX_ELEMENTS


def run(network):
    folded = 0
    for layer in list(network._layers):
        if not _foldable(layer):
            continue
        ins = []
        for t in layer._inputs:
            a = None if t is None else t.producer.weights.reshape(t.shape)
            ins.append(a.astype(np.float32) if a is not None and a.dtype == np.float16 else a)
        out = layer._outputs[0]
        value = np.asarray(numpy_kernel(layer)(layer, ins)[0])
        replace_with_constant(network, layer, value.astype(out.dtype.to_numpy(), copy=False),
                              "_folded")
        folded += 1
    return folded
