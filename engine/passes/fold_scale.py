"""Fold per-channel affine layers that follow a convolution or fully-connected
layer into its weights:

    y = (conv(x, W) + b) * s + t   ==>   conv(x, W * s[k]) + (b * s + t)

Recognised followers, each on a conv/deconv/FC output read by nothing else:
Scale (UNIFORM or CHANNEL on axis 1, power 1) and ElementWise SUM/SUB/PROD/DIV
with a constant whose shape is 1 everywhere except the channel axis (this is
how TensorFlow's BiasAdd, Keras 3's decomposed batch norm and FusedBatchNorm
arrive once constant folding has run).
"""
import numpy as np

from ..types import ElementWiseOperation as EW, LayerType, ScaleMode
from .graph import single_consumer

NAME = "scale_folding"
_HOSTS = (LayerType.CONVOLUTION, LayerType.DECONVOLUTION, LayerType.FULLY_CONNECTED)


def _channels(host):
    return host._outputs[0].shape[1]


def _per_channel(value, out_shape, k):
    """A constant broadcast along every axis but 1 -> a length-k vector, else None."""
    if value.ndim != len(out_shape):
        return None
    if any(d != 1 for i, d in enumerate(value.shape) if i != 1):
        return None
    if value.shape[1] not in (1, k):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (k,))


def _affine_of(layer, host_out):
    """(scale, shift) vectors if ``layer`` is a foldable per-channel affine of host_out."""
    k = host_out.shape[1]
    if layer.layer_type == LayerType.SCALE:
        if layer.power is not None and np.any(layer.power != 1):
            return None
        if layer.mode == ScaleMode.ELEMENTWISE or layer.channel_axis != 1:
            return None
        s = np.ones(k) if layer.scale is None else np.broadcast_to(layer.scale.astype(np.float64).reshape(-1), (k,))
        t = np.zeros(k) if layer.shift is None else np.broadcast_to(layer.shift.astype(np.float64).reshape(-1), (k,))
        return s, t
    if layer.layer_type != LayerType.ELEMENTWISE:
        return None
    a, b = layer._inputs
    other = b if a is host_out else a
    if other.producer is None or other.producer.layer_type != LayerType.CONSTANT:
        return None
    if layer._outputs[0].shape != host_out.shape:     # the constant must not broadcast the host
        return None
    v = _per_channel(other.producer.weights.reshape(other.shape), host_out.shape, k)
    if v is None:
        return None
    op = layer.op
    if op == EW.SUM:
        return np.ones(k), v
    if op == EW.PROD:
        return v, np.zeros(k)
    if op == EW.SUB:
        return (np.ones(k), -v) if a is host_out else (-np.ones(k), v)
    if op == EW.DIV and a is host_out and np.all(v != 0):
        return 1.0 / v, np.zeros(k)
    return None


def _fold(host, scale, shift):
    if host.layer_type == LayerType.FULLY_CONNECTED:
        w = host.kernel.astype(np.float64).reshape(len(scale), -1)
    else:     # the kernel in its N-d layout (a flat kernel is allowed until here)
        w = host.weights(host._inputs[0].shape[1]).astype(np.float64)
    if host.layer_type == LayerType.DECONVOLUTION:
        # deconv kernel (C, K/g, R, S): output channel k = g*(K/g) + j
        g = host.num_groups
        c, kg = w.shape[0], w.shape[1]
        w = (w.reshape(g, c // g, kg, -1) * scale.reshape(g, 1, kg, 1)).reshape(host.kernel.shape)
    else:
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    b = np.zeros(len(scale)) if host.bias is None else host.bias.astype(np.float64)
    host.kernel = w.astype(host.kernel.dtype).reshape(host.kernel.shape)
    host.bias = (b * scale + shift).astype(host.kernel.dtype)


def run(network):
    folded = 0
    for host in list(network._layers):
        if host not in network._layers or host.layer_type not in _HOSTS:
            continue
        if host.post_activation is not None or host.kernel is None:
            continue
        if len(host._inputs) > 1 and host._inputs[1] is not None:     # residual already fused
            continue
        out = host._outputs[0]
        use = single_consumer(network, out)
        if use is None or -1 == out.shape[1]:
            continue
        affine = _affine_of(use[0], out)
        if affine is None or use[0]._outputs[0].dtype != out.dtype:
            continue
        if host.layer_type != LayerType.FULLY_CONNECTED and host._inputs[0].shape[1] < 0:
            continue
        _fold(host, *affine)
        network.take_output(host, use[0])
        folded += 1
    return folded
