"""cuDNN as a tactic source (kernels/gpu/cudnn_graphs.py): a fused convolution
(conv + bias + residual + activation) as one cuDNN graph, timed by the builder
beside our own kernels and kept only where it is faster.

On when the cuDNN frontend is installed (``pip install 'cupyrt[cudnn]'``) unless
``CUPYRT_CUDNN=0``; the switch joins the timing-cache key (engine/gpu/timing.py).
FP16 layers only: cuDNN may run FP32 convolutions on TF32 tensor cores, which our
FP32 layers promise not to do.
"""
import os

import numpy as np

from ..types import DataType
from .tactics import Tactic, as_nhwc, cupy, nchw_view


def enabled(environ=None):
    env = os.environ if environ is None else environ
    return env.get("CUPYRT_CUDNN", "1") != "0"


def _window(layer, shape):
    """(out_hw, pre, post) of a 2-D convolution at ``shape``, memoised on the layer."""
    memo = layer.__dict__.setdefault("_cudnn_window_memo", {})
    hit = memo.get(shape)
    if hit is None:
        out, pre, post = layer.geometry(shape)
        hit = memo[shape] = (tuple(out), tuple(pre), tuple(post))
    return hit


def conv_spec(layer, in_shape, out_dtype, out_ldc=0):
    """The kernels-level description of ``layer`` at input ``in_shape`` (n, c, h, w);
    ``out_ldc``: the channel pitch of a concat buffer the output is a slice of."""
    from kernels.gpu.cudnn_graphs import ConvSpec
    n, c, h, w = in_shape
    _, pre, post = _window(layer, tuple(in_shape))
    act = layer.post_activation
    alpha, beta = layer.post_params() if act is not None else (0.0, 0.0)
    r, s = layer.kernel_size_nd
    return ConvSpec(n=n, c=c, h=h, w=w, k=layer.num_output_maps, r=r, s=s,
                    stride=tuple(layer.stride_nd), pre_padding=pre, post_padding=post,
                    dilation=tuple(layer.dilation_nd), out_dtype=np.dtype(out_dtype).name,
                    act=None if act is None else act.name, alpha=float(alpha), beta=float(beta),
                    residual=len(layer._inputs) > 1 and layer._inputs[1] is not None, out_ldc=out_ldc)


class ConvCudnn(Tactic):
    """Convolution + bias + residual + activation as one cuDNN graph (NHWC FP16 in,
    FP32 accumulate), its plans enumerated and timed inside the tactic."""
    name = "conv.cudnn"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        from kernels.gpu import cudnn_graphs
        if precision != DataType.HALF:
            return "the cuDNN graphs run FP16 layers"
        if len(in_shapes[0]) != 4 or len(layer.kernel_size_nd) != 2:
            return "only 2-D convolutions (rank-4 inputs)"
        if layer.num_groups != 1:
            return "grouped convolution"
        if in_shapes[0][1] % 8 or layer.num_output_maps % 8:
            # cuDNN declined an RGB stem (C=3, FP32 output) outright on an H200; our
            # small-C stem kernels serve those layers
            return "channels not multiples of 8 (tensor-core alignment)"
        if not enabled():
            return "switched off (CUPYRT_CUDNN=0)"
        if not cudnn_graphs.available():
            return cudnn_graphs.unavailable_reason()
        act = layer.post_activation
        if act is not None and act.name not in cudnn_graphs.ACTIVATIONS:
            return f"activation {act.name} not fused by the cuDNN graphs"
        return None

    def prepare(self, layer):
        from .conv_tactics import _epilogue      # conv_tactics registers this module's tactic
        cp = cupy()
        c = layer._inputs[0].shape[1]
        w = layer.weights(c).transpose(0, 2, 3, 1)          # KCRS -> KRSC (NHWC filter)
        return {"w": cp.asarray(np.ascontiguousarray(w), cp.float16), **_epilogue(layer)}

    writes_into_concat = True      # the output descriptor takes the concat buffer's pitch

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        from kernels.gpu.cudnn_graphs import conv2d_fused

        from .concat import claim
        from .conv_tactics import _residual
        x = inputs[0]
        (p, q), _, _ = _window(layer, tuple(x.shape))
        k = layer.num_output_maps
        place = claim(into, (x.shape[0], p, q, k), (np.float16, np.float32))
        out, ldc = None, 0
        if place:
            buf, off = place["out"], place["out_channel_offset"]
            out, ldc = buf[..., off:off + k], buf.shape[3]
        out_dtype = out.dtype if out is not None else out_dtypes[0].to_numpy()
        spec = conv_spec(layer, tuple(x.shape), out_dtype, out_ldc=ldc)
        res = _residual(inputs, out_dtype)
        if res is not None and not res.flags.c_contiguous:
            res = cupy().ascontiguousarray(res)
        if out is None:
            y = conv2d_fused(as_nhwc(x, np.float16), state["w"], state["bias"], spec, residual=res)
            return [nchw_view(y)]
        from kernels.gpu.errors import UnsupportedError
        if place["out_channel_offset"] % 8 or ldc % 8:
            raise UnsupportedError(f"concat slice at channel {place['out_channel_offset']} of {ldc}: "
                                   "cuDNN wants 16-byte aligned rows")
        try:
            y = conv2d_fused(as_nhwc(x, np.float16), state["w"], state["bias"], spec, residual=res, out=out)
        except (RuntimeError, ValueError) as e:   # no cuDNN engine for the strided output
            raise UnsupportedError(f"cuDNN graph writing a concat slice: {e}") from e
        return [nchw_view(y)]


def register_all():
    from ..types import LayerType
    from .tactics import register
    register(LayerType.CONVOLUTION, ConvCudnn())
