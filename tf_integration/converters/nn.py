"""Convolutions, bias, batch norm, pooling and LRN: the layout-sensitive family.

Each of these takes its input in NCHW (see context.py); a TF ``data_format``
of NHWC only changes which TF axes the attributes index.
"""
import numpy as np

import engine as rt

from ..context import NCHW, Value, identity
from ..graph_utils import get_attr
from ..registry import Reason, converter
from .math import elementwise

_PAD_MODES = ("SAME", "VALID", "EXPLICIT")


def _layout(node):
    """(TF->engine perm of the data, indices of H and W, index of C) for data_format."""
    fmt = get_attr(node, "data_format", "NHWC")
    if fmt in ("NHWC", "NDHWC"):
        return NCHW, (1, 2), 3
    return identity(4), (2, 3), 1


def _spatial_validator(const_weights=True, weight_index=1):
    def check(node, graph):
        fmt = get_attr(node, "data_format", "NHWC")
        if fmt not in ("NHWC", "NCHW"):
            return Reason(Reason.ATTRIBUTE, f"data_format {fmt}; supported: NHWC, NCHW")
        pad = get_attr(node, "padding", "VALID")
        if pad not in _PAD_MODES:
            return Reason(Reason.ATTRIBUTE, f"padding {pad}; supported: {', '.join(_PAD_MODES)}")
        data = node.input[2] if node.op == "Conv2DBackpropInput" else node.input[0]
        if graph.shape(data).rank != 4:
            return Reason(Reason.ATTRIBUTE, f"input rank {graph.shape(data).rank}; expected 4")
        _, hw, c = _layout(node)
        for key in ("strides", "ksize", "dilations"):
            vals = get_attr(node, key)
            if vals and (vals[0] != 1 or vals[c] != 1):
                return Reason(Reason.ATTRIBUTE, f"{key} {vals} over batch or channels")
        if const_weights and not graph.is_const(node.input[weight_index]):
            return Reason(Reason.ATTRIBUTE, "filter is not a constant")
        return None

    check.__doc__ = ("2-D, NHWC or NCHW, constant filter" if const_weights else
                     "2-D, NHWC or NCHW")
    return check


def _pads(node, hw):
    """(mode, pre, post) of a TF padding attribute, in H, W order."""
    pad = get_attr(node, "padding", "VALID")
    if pad == "SAME":
        return rt.PaddingMode.SAME_UPPER, (0, 0), (0, 0)
    if pad == "EXPLICIT":
        ex = get_attr(node, "explicit_paddings")
        pairs = [ex[2 * i: 2 * i + 2] for i in range(4)]
        return None, tuple(pairs[a][0] for a in hw), tuple(pairs[a][1] for a in hw)
    return None, (0, 0), (0, 0)


def _window_attrs(node, hw):
    """stride_nd, padding_mode, pre_padding, post_padding of a TF node."""
    mode, pre, post = _pads(node, hw)
    attrs = dict(stride_nd=tuple(get_attr(node, "strides", [1, 1, 1, 1])[a] for a in hw),
                 pre_padding=pre, post_padding=post)
    if mode is not None:            # explicit/valid: the pre/post paddings say it all
        attrs["padding_mode"] = mode
    return attrs


@converter("Conv2D", "DepthwiseConv2dNative", validator=_spatial_validator())
def convert_conv2d(ctx, node):
    x = ctx.input(node, 0)
    perm, hw, _ = _layout(node)
    w = ctx.const(node, 1, "filter").astype(np.float32)           # (R, S, C, K) or (R, S, C, M)
    r, s, c, m = w.shape
    if node.op == "Conv2D":
        groups = ctx_channels(x, perm) // c if ctx_channels(x, perm) > 0 else 1
        kernel = w.transpose(3, 2, 0, 1)                              # KCRS
        k = m
    else:
        # depthwise: output channel c*M + m reads input channel c only
        groups, k = c, c * m
        kernel = w.reshape(r, s, c * m).transpose(2, 0, 1)[:, None, :, :]
    # attributes at creation: a 3x3 SAME conv on a 2x2 map is valid only once padded
    layer = ctx.network.add_convolution_nd(
        ctx.tensor(x, perm), k, (r, s), np.ascontiguousarray(kernel), None,
        num_groups=int(groups),
        dilation_nd=tuple(get_attr(node, "dilations", [1, 1, 1, 1])[a] for a in hw),
        **_window_attrs(node, hw))
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=perm)]


def ctx_channels(x, perm):
    return x.tf_shape()[perm[1]]


def _validate_deconv(node, graph):
    """2-D, constant filter and output size, static spatial input"""
    base = _spatial_validator(weight_index=1)(node, graph)
    if base is not None:
        return base
    if not graph.is_const(node.input[0]):
        return Reason(Reason.ATTRIBUTE, "input_sizes is not a constant")
    _, hw, _ = _layout(node)
    dims = graph.shape(node.input[2]).as_list()
    if any(dims[a] is None for a in hw):
        return Reason(Reason.ATTRIBUTE, "spatial input dims are not static")
    if any(d != 1 for d in get_attr(node, "dilations", [1, 1, 1, 1])):
        return Reason(Reason.ATTRIBUTE, "dilated transposed convolution")
    return None


@converter("Conv2DBackpropInput", validator=_validate_deconv)
def convert_conv2d_transpose(ctx, node):
    perm, hw, _ = _layout(node)
    sizes = ctx.const(node, 0, "input_sizes")
    w = ctx.const(node, 1, "filter").astype(np.float32)     # (R, S, K_out, C_in)
    x = ctx.input(node, 2)
    r, s, k, _ = w.shape
    strides = [get_attr(node, "strides")[a] for a in hw]
    in_hw = [x.tf_shape()[a] for a in hw]
    out_hw = [int(sizes[a]) for a in hw]
    pre, post, extra = [], [], []
    mode, epre, epost = _pads(node, hw)
    for i, (n_in, n_out, st, kk) in enumerate(zip(in_hw, out_hw, strides, (r, s))):
        full = (n_in - 1) * st + kk
        if mode == rt.PaddingMode.SAME_UPPER:
            # the forward (SAME) convolution of size n_out padded pad_total, before first
            total = max((n_in - 1) * st + kk - n_out, 0)
            p0 = total // 2
        else:
            p0 = epre[i]
        p1 = full - n_out - p0
        pre.append(p0)
        post.append(max(p1, 0))
        extra.append(max(-p1, 0))        # rows the forward conv never read: zero gradient
    layer = ctx.network.add_deconvolution_nd(
        ctx.tensor(x, perm), k, (r, s), np.ascontiguousarray(w.transpose(3, 2, 0, 1)), None,
        stride_nd=tuple(strides), pre_padding=tuple(pre), post_padding=tuple(post))
    ctx.name(layer)
    out = layer.get_output(0)
    if any(extra):
        pad = ctx.network.add_padding_nd(out, (0, 0), tuple(extra))
        ctx.name(pad, "output_padding")
        out = pad.get_output(0)
    return [Value(out, perm=perm)]


@converter("BiasAdd", "BiasAddV1")
def convert_bias_add(ctx, node):
    x, b = ctx.input(node, 0), ctx.input(node, 1)
    if get_attr(node, "data_format", "NHWC") == "NCHW" and x.rank > 2:
        trailing = (1,) * (x.rank - 2)
        if b.is_const:
            b = Value(const=b.const.reshape((-1,) + trailing))
        else:
            layer = ctx.network.add_unsqueeze(ctx.tensor(b), tuple(range(1, 1 + len(trailing))))
            b = Value(layer.get_output(0))
    return [elementwise(ctx, x, b, rt.ElementWiseOperation.SUM)]


def _validate_batch_norm(node, graph):
    """inference only (is_training=False), constant statistics, rank 4"""
    if get_attr(node, "is_training", True):
        return Reason(Reason.ATTRIBUTE, "is_training=True (training-mode batch norm)")
    for i in range(1, 5):
        if not graph.is_const(node.input[i]):
            return Reason(Reason.ATTRIBUTE, f"batch norm parameter (input {i}) is not a constant")
    if graph.shape(node.input[0]).rank != 4:
        return Reason(Reason.ATTRIBUTE, "input rank is not 4")
    for consumer, port in graph.consumers.get(node.name, ()):
        if port > 0:
            return Reason(Reason.ATTRIBUTE, f"batch statistics output {port} is used by "
                                            f"{consumer}")
    return None


@converter("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3",
           validator=_validate_batch_norm)
def convert_fused_batch_norm(ctx, node):
    x = ctx.input(node, 0)
    perm, _, _ = _layout(node)
    gamma, beta, mean, var = (ctx.const(node, i).astype(np.float64) for i in range(1, 5))
    eps = get_attr(node, "epsilon", 1e-3)
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    layer = ctx.network.add_scale(ctx.tensor(x, perm), rt.ScaleMode.CHANNEL,
                                  shift.astype(np.float32), scale.astype(np.float32), None)
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=perm)]


def _validate_pool(node, graph):
    """2-D windows, NHWC or NCHW"""
    return _spatial_validator(const_weights=False)(node, graph)


@converter("MaxPool", "AvgPool", validator=_validate_pool)
def convert_pool(ctx, node):
    x = ctx.input(node, 0)
    perm, hw, _ = _layout(node)
    ksize = tuple(get_attr(node, "ksize")[a] for a in hw)
    kind = rt.PoolingType.MAX if node.op == "MaxPool" else rt.PoolingType.AVERAGE
    # TF's AvgPool divides by the taps inside the input only
    layer = ctx.network.add_pooling_nd(ctx.tensor(x, perm), kind, ksize,
                                       average_count_excludes_padding=True,
                                       **_window_attrs(node, hw))
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=perm)]


def _validate_lrn(node, graph):
    """rank-4 NHWC input"""
    if graph.shape(node.input[0]).rank != 4:
        return Reason(Reason.ATTRIBUTE, "input rank is not 4")
    return None


@converter("LRN", validator=_validate_lrn)
def convert_lrn(ctx, node):
    # TF:     y = x / (bias + alpha * sum_{|j-c|<=r} x_j^2) ** beta
    # engine: y = x / (k + alpha/window * sum x_j^2) ** beta      window = 2r + 1
    x = ctx.input(node, 0)
    radius = get_attr(node, "depth_radius", 5)
    window = 2 * radius + 1
    layer = ctx.network.add_lrn(ctx.tensor(x, NCHW), window, get_attr(node, "alpha", 1.0) * window,
                                get_attr(node, "beta", 0.5), get_attr(node, "bias", 1.0))
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=NCHW)]
