"""Vertical fusion of a MatrixMultiply with the pointwise layers that follow it,
into its epilogue (TensorRT fuses a GEMM with its bias, scale and activation
the same way; a transformer's linears arrive as exactly these chains):

    MM -> PROD(scalar c)            alpha *= c, bias *= c
    MM -> SUM(scalar c)             bias += c          (a bias of equal values)
    MM -> SUM(constant over last)   bias += v          v: shape (1, ..., 1, N | 1)
    MM -> SUM(tensor, same shape)   residual input     (computed before the MM)
    MM -> Activation                post_activation

The epilogue is fixed, y = act(alpha * A@B + bias + residual), so a follower
is taken only where it can be rewritten into that form: nothing after the
activation, no scale once a residual is in (it would scale the residual too).
Every rewrite needs the MM output to have exactly one reader, not be a network
output, keep its dtype through the follower, and the follower to carry the
same precision constraints as the MM (a constrained layer stays its own).
"""
import numpy as np

from ..types import ElementWiseOperation as EW, LayerType
from .graph import single_consumer

NAME = "matmul_epilogue_fusion"


def _constant(t):
    """The value of ``t`` when a Constant layer produces it, else None."""
    p = t.producer
    if p is None or p.layer_type != LayerType.CONSTANT or p.weights is None:
        return None
    return np.asarray(p.weights, np.float64).reshape(t.shape)


def _last_axis_vector(value, out_shape):
    """A constant broadcast along every axis but the last -> its values over the
    last axis (length 1 or N), else None. Ranks are equal (ElementWise's rule)."""
    if value.ndim != len(out_shape) or any(d != 1 for d in value.shape[:-1]):
        return None
    if value.ndim == 0 or value.shape[-1] not in (1, out_shape[-1]):
        return None
    return value.reshape(-1)


def _same_constraints(host, nxt):
    return nxt._precision == host._precision and nxt._output_types == host._output_types


def _earlier(network, tensor, host):
    """True when ``tensor`` exists before ``host`` runs (the fused layer runs in
    the host's place, so its residual must already be computed)."""
    p = tensor.producer
    return p is None or network._layers.index(p) < network._layers.index(host)


def _fold_constant(host, op, value, out_shape):
    """Apply PROD/SUM with a constant to the host's alpha/bias. False if not foldable."""
    n = out_shape[-1] if out_shape else -1
    if op == EW.PROD:
        if value.size != 1 or host.residual is not None:
            return False
        c = float(value.reshape(()))
        host.alpha = host.alpha * c
        if host.bias is not None:
            host.bias = (host.bias.astype(np.float64) * c).astype(np.float32)
        return True
    v = _last_axis_vector(value, out_shape)
    if v is None or n < 0:          # the bias has one value per column: N must be known
        return False
    b = np.zeros(n) if host.bias is None else host.bias.astype(np.float64)
    host.bias = (b + np.broadcast_to(v, (n,))).astype(np.float32)
    return True


def _fuse(network, host, nxt, out):
    """Rewrite ``nxt`` (the only reader of ``out``) into the host's epilogue."""
    if host.post_activation is not None:
        return False              # the activation ends the epilogue
    if nxt.layer_type == LayerType.ACTIVATION:
        host.post_activation = nxt.activation_type
        host.post_alpha, host.post_beta = nxt.params()
        return True
    if nxt.layer_type != LayerType.ELEMENTWISE or nxt.op not in (EW.SUM, EW.PROD):
        return False
    a, b = nxt._inputs
    if a is b:
        return False
    other = b if a is out else a
    if nxt._outputs[0].shape != out.shape:     # the follower must not broadcast the host
        return False
    value = _constant(other)
    if value is not None:
        return _fold_constant(host, nxt.op, value, out.shape)
    if nxt.op != EW.SUM or host.residual is not None or other.shape != out.shape:
        return False
    if not _earlier(network, other, host):
        return False
    host.set_input(2, other)
    return True


def run(network):
    fused = 0
    uses = network.consumers()
    for host in list(network._layers):
        if host not in network._layers or host.layer_type != LayerType.MATRIX_MULTIPLY:
            continue
        while True:            # one follower at a time: bias, then residual, then activation
            out = host._outputs[0]
            use = single_consumer(network, out, uses)
            if use is None:
                break
            nxt = use[0]
            if nxt._outputs[0].dtype != out.dtype or not _same_constraints(host, nxt):
                break
            if not _fuse(network, host, nxt, out):
                break
            network.take_output(host, nxt)
            network._ensure_inferred()
            uses = network.consumers()
            fused += 1
    return fused
