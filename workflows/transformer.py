"""A BERT-style encoder (torch.nn.TransformerEncoder, batch_first, post-norm)
rebuilt through the network API: matrix multiplies, softmax, layer norm from
reduce/elementwise/unary layers, GELU. The weights are the module's own."""
import math

import numpy as np

import engine as rt

EW = rt.ElementWiseOperation


def _np(t):
    return t.detach().cpu().float().numpy().copy()


def _const(net, array):
    return net.add_constant(array.shape, np.ascontiguousarray(array, np.float32)).get_output(0)


def _linear(net, x, weight, bias):
    """x (N, S, in) @ W^T + b, W (out, in): one matmul against a (1, in, out) constant."""
    w = _const(net, weight.T[None])
    y = net.add_matrix_multiply(x, rt.MatrixOperation.NONE, w, rt.MatrixOperation.NONE).get_output(0)
    return net.add_elementwise(y, _const(net, bias[None, None]), EW.SUM).get_output(0)


def _layer_norm(net, x, gamma, beta, eps):
    """One INormalizationLayer over the last axis (not ten reduce/elementwise layers)."""
    norm = net.add_normalization(x, _const(net, gamma[None, None]), _const(net, beta[None, None]),
                                 1 << (len(x.shape) - 1))
    norm.epsilon = eps
    return norm.get_output(0)


def _heads(net, x, n_heads, seq):
    """(N, S, H) -> (N, heads, S, H / heads)."""
    s = net.add_shuffle(x)
    s.reshape_dims = (0, seq, n_heads, -1)
    s.second_transpose = (0, 2, 1, 3)
    return s.get_output(0)


def _encoder_layer(net, x, layer, seq):
    attn = layer.self_attn
    h, nh = attn.embed_dim, attn.num_heads
    w_in, b_in = _np(attn.in_proj_weight), _np(attn.in_proj_bias)
    q, k, v = (_heads(net, _linear(net, x, w_in[i * h:(i + 1) * h], b_in[i * h:(i + 1) * h]), nh, seq)
               for i in range(3))
    scores = net.add_matrix_multiply(q, rt.MatrixOperation.NONE, k, rt.MatrixOperation.TRANSPOSE)
    scaled = net.add_elementwise(scores.get_output(0),
                                 _const(net, np.full((1, 1, 1, 1), 1 / math.sqrt(h // nh), np.float32)),
                                 EW.PROD).get_output(0)
    sm = net.add_softmax(scaled)
    sm.axes = 1 << 3
    ctx = net.add_matrix_multiply(sm.get_output(0), rt.MatrixOperation.NONE, v, rt.MatrixOperation.NONE)
    merge = net.add_shuffle(ctx.get_output(0))
    merge.first_transpose = (0, 2, 1, 3)
    merge.reshape_dims = (0, seq, h)
    a = _linear(net, merge.get_output(0), _np(attn.out_proj.weight), _np(attn.out_proj.bias))
    x = _layer_norm(net, net.add_elementwise(x, a, EW.SUM).get_output(0), _np(layer.norm1.weight),
                    _np(layer.norm1.bias), layer.norm1.eps)
    f = _linear(net, x, _np(layer.linear1.weight), _np(layer.linear1.bias))
    act = layer.activation
    kind = rt.ActivationType.GELU_ERF if "gelu" in str(act).lower() else rt.ActivationType.RELU
    f = net.add_activation(f, kind).get_output(0)
    f = _linear(net, f, _np(layer.linear2.weight), _np(layer.linear2.bias))
    return _layer_norm(net, net.add_elementwise(x, f, EW.SUM).get_output(0), _np(layer.norm2.weight),
                       _np(layer.norm2.bias), layer.norm2.eps)


def import_encoder(encoder, seq, hidden, builder=None):
    """Rebuild ``encoder`` (a batch_first, post-norm torch.nn.TransformerEncoder)
    for inputs (N, seq, hidden). Returns (builder, network)."""
    builder = builder or rt.Builder()
    net = builder.create_network()
    x = net.add_input("tokens", rt.float32, (-1, seq, hidden))
    for layer in encoder.layers:
        if getattr(layer, "norm_first", False) or not layer.self_attn.batch_first:
            raise rt.CupyrtError("import_encoder takes batch_first, post-norm encoder layers")
        x = _encoder_layer(net, x, layer, seq)
    x.name = "encoded"
    net.mark_output(x)
    return builder, net
