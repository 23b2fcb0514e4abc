"""3-D convolutions and pooling: Conv3D, Conv3DBackpropInputV2, MaxPool3D, AvgPool3D.

The engine's convolution, deconvolution and pooling layers are N-d (TensorRT's
*_nd layers); these converters hand them NCDHW tensors, as nn.py hands 2-D ones
NCHW:

    NDHWC tensor kept as NCDHW:   perm = (0, 4, 1, 2, 3)
"""
import numpy as np

import engine as rt

from ..context import Value
from ..graph_utils import get_attr
from ..registry import Reason, converter

NCDHW = (0, 4, 1, 2, 3)
SPATIAL = (1, 2, 3)            # D, H, W in NDHWC


def _validate_3d(weight_index=None):
    def check(node, graph):
        fmt = get_attr(node, "data_format", "NDHWC")
        if fmt != "NDHWC":
            # TF's CPU kernels take NDHWC only: nothing else can be checked against TF
            return Reason(Reason.ATTRIBUTE, f"data_format {fmt}; supported: NDHWC")
        # padding is SAME or VALID and the rank 5 by the op's definition and shape function
        for key in ("strides", "ksize", "dilations"):
            vals = get_attr(node, key)
            if vals and (vals[0] != 1 or vals[4] != 1):
                return Reason(Reason.ATTRIBUTE, f"{key} {vals} over batch or channels")
        if weight_index is not None and not graph.is_const(node.input[weight_index]):
            return Reason(Reason.ATTRIBUTE, "filter is not a constant")
        return None

    check.__doc__ = ("3-D, NDHWC, constant filter" if weight_index is not None
                     else "3-D windows, NDHWC")
    return check


def _window(node):
    """stride_nd and padding of a TF 3-D node, as engine window attributes."""
    attrs = dict(stride_nd=tuple(get_attr(node, "strides", [1] * 5)[a] for a in SPATIAL))
    if get_attr(node, "padding") == "SAME":
        attrs["padding_mode"] = rt.PaddingMode.SAME_UPPER    # TF pads the odd one at the end
    return attrs


@converter("Conv3D", validator=_validate_3d(weight_index=1))
def convert_conv3d(ctx, node):
    x = ctx.input(node, 0)
    w = ctx.const(node, 1, "filter").astype(np.float32)          # (KD, KH, KW, C/g, K)
    kd, kh, kw, cg, k = w.shape
    c = x.tf_shape()[4]
    layer = ctx.network.add_convolution_nd(
        ctx.tensor(x, NCDHW), k, (kd, kh, kw), np.ascontiguousarray(w.transpose(4, 3, 0, 1, 2)),
        None, num_groups=max(1, c // cg) if c > 0 else 1,
        dilation_nd=tuple(get_attr(node, "dilations", [1] * 5)[a] for a in SPATIAL),
        **_window(node))
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=NCDHW)]


def _validate_deconv3d(node, graph):
    """3-D, NDHWC, constant filter and output size, static spatial input, no dilation"""
    base = _validate_3d(weight_index=1)(node, graph)
    if base is not None:
        return base
    if not graph.is_const(node.input[0]):
        return Reason(Reason.ATTRIBUTE, "input_sizes is not a constant")
    dims = graph.shape(node.input[2]).as_list()
    if any(dims[a] is None for a in SPATIAL):
        return Reason(Reason.ATTRIBUTE, f"spatial input dims {dims[1:4]} are not static")
    if any(d != 1 for d in get_attr(node, "dilations", [1] * 5)):
        return Reason(Reason.ATTRIBUTE, "dilated transposed convolution")
    return None


@converter("Conv3DBackpropInputV2", validator=_validate_deconv3d)
def convert_conv3d_transpose(ctx, node):
    # The gradient of a forward convolution from an output of ``sizes`` with this
    # filter: a deconvolution whose padding is the forward one, cropped (pre) and
    # extended with zeros (rows the forward convolution never read) where needed.
    sizes = np.ravel(ctx.const(node, 0, "input_sizes"))
    w = ctx.const(node, 1, "filter").astype(np.float32)          # (KD, KH, KW, K_out, C_in)
    x = ctx.input(node, 2)
    k = w.shape[3]
    strides = [get_attr(node, "strides")[a] for a in SPATIAL]
    same = get_attr(node, "padding") == "SAME"
    pre, post, extra = [], [], []
    for a, st, kk in zip(SPATIAL, strides, w.shape[:3]):
        n_in, n_out = x.tf_shape()[a], int(sizes[a])
        full = (n_in - 1) * st + kk
        p0 = max((n_in - 1) * st + kk - n_out, 0) // 2 if same else 0
        p1 = full - n_out - p0
        pre.append(p0)
        post.append(max(p1, 0))
        extra.append(max(-p1, 0))
    layer = ctx.network.add_deconvolution_nd(
        ctx.tensor(x, NCDHW), k, tuple(w.shape[:3]),
        np.ascontiguousarray(w.transpose(4, 3, 0, 1, 2)), None,
        stride_nd=tuple(strides), pre_padding=tuple(pre), post_padding=tuple(post))
    ctx.name(layer)
    out = layer.get_output(0)
    if any(extra):
        pad = ctx.network.add_padding_nd(out, (0, 0, 0), tuple(extra))
        ctx.name(pad, "output_padding")
        out = pad.get_output(0)
    return [Value(out, perm=NCDHW)]


@converter("MaxPool3D", "AvgPool3D", validator=_validate_3d())
def convert_pool3d(ctx, node):
    x = ctx.input(node, 0)
    kind = rt.PoolingType.MAX if node.op == "MaxPool3D" else rt.PoolingType.AVERAGE
    # TF's AvgPool3D divides by the taps inside the input only
    layer = ctx.network.add_pooling_nd(
        ctx.tensor(x, NCDHW), kind, tuple(get_attr(node, "ksize")[a] for a in SPATIAL),
        average_count_excludes_padding=True, **_window(node))
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=NCDHW)]
