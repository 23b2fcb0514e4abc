"""A few-channel stride-2 convolution (the RGB stem) as a space-to-depth pass and a
stride-1 cuDNN graph: tactic ``conv.cudnn_s2d``.

cuDNN has no good engine for ResNet's 7x7/2 stem over 3 channels (b256, H200, best plan:
C=3 3.16 ms, padded to 4 1.75 ms, to 8 2.37 ms, against 1.33 ms for our conv.igemmsc
with its reformat). Folded into 2x2 blocks (kernels/gpu/space_to_depth.py) the same
convolution is a 4x4 stride-1 one over 112x112x16: an ordinary implicit GEMM with a
reduction of 256, which cuDNN's tensor-core engines are built for. The space-to-depth
pass (kernels/cuda/space_to_depth.cu) does the FP32 -> FP16 cast and the NHWC reformat
the stem needed anyway, so the tactic reads the network input once.

Not measured yet: the builder times it beside conv.igemmsc and the others and keeps it
only where it is faster; off (CUPYRT_CUDNN_S2D=0) until its GPU tests have passed. The
other switches, plan options and the plan prefetch are
engine/gpu/cudnn_tactics.py's (CUPYRT_CUDNN and the rest): this tactic adds its spec to
what that module's ``prefetch_network`` queues.
"""
import numpy as np

from kernels.gpu import cudnn_graphs, space_to_depth

from ..settings import settings
from ..types import DataType, LayerType
from . import cudnn_tactics
from .base import Tactic, cupy, nchw_view
from .conv_common import epilogue_state
from .cudnn_tactics import _output_dtype, _runtime_reason, _window, plan_options

MAX_CHANNELS = 4       # 4*C channels of X: 16 at most (more: conv.cudnn's own C % 8 == 0 case)


def c_pad_for(c):
    """X's channels: 4*C rounded up to 8 (cuDNN's 16-byte alignment of FP16 channels)."""
    return 8 if 4 * c <= 8 else 16


def _geometry(layer, shape):
    """``S2dGeometry`` of ``layer`` at input ``shape``, memoised on the layer like
    cudnn_tactics._window (the layer's geometry is Python arithmetic)."""
    memo = layer.__dict__.setdefault("_s2d_geometry_memo", {})
    hit = memo.get(shape)
    if hit is None:
        _, pre, post = _window(layer, shape)
        r, s = layer.kernel_size_nd
        hit = memo[shape] = space_to_depth.s2d_geometry(shape[2], shape[3], r, s, pre[0], pre[1],
                                                        post[0], post[1])
    return hit


def static_reason(layer, in_shape, in_dtype=None):
    """Why the space-to-depth rewrite cannot take this convolution at ``in_shape`` (and
    input dtype name ``in_dtype``, None: not checked), from the layer alone; None: it can."""
    if len(in_shape) != 4 or len(layer.kernel_size_nd) != 2:
        return "only 2-D convolutions (rank-4 inputs)"
    if tuple(layer.stride_nd) != (2, 2):
        return f"stride {tuple(layer.stride_nd)}; the space-to-depth rewrite takes stride (2, 2)"
    if tuple(layer.dilation_nd) != (1, 1):
        return f"dilation {tuple(layer.dilation_nd)}; the space-to-depth rewrite takes dilation (1, 1)"
    if layer.num_groups != 1:
        return "grouped convolution"
    c = in_shape[1]
    if not 1 <= c <= MAX_CHANNELS:
        return f"{c} input channels; the space-to-depth rewrite takes 1..{MAX_CHANNELS}"
    if layer.num_output_maps % 8:
        return f"{layer.num_output_maps} output channels; expected a multiple of 8 (tensor-core alignment)"
    if len(layer._inputs) > 1 and layer._inputs[1] is not None:
        return "a residual input (a stem has none; not fused here)"
    act = layer.post_activation
    if act is not None and act.name not in cudnn_graphs.ACTIVATIONS:
        return f"activation {act.name} not fused by the cuDNN graphs"
    if in_dtype is not None and np.dtype(in_dtype) not in (np.float32, np.float16):
        return f"input dtype {in_dtype}; expected float32 or float16"
    # every geometry is rewritable: the layers' paddings are non-negative (NdInts minimum 0)
    return None


def s2d_spec(layer, in_shape, out_dtype):
    """The stride-1 cuDNN graph spec ``layer`` runs as at input ``in_shape`` (n, c, h, w)."""
    n, c = in_shape[:2]
    g = _geometry(layer, tuple(in_shape))
    act = layer.post_activation
    alpha, beta = layer.post_params() if act is not None else (0.0, 0.0)
    return cudnn_graphs.ConvSpec(n=n, c=c_pad_for(c), h=g.hs, w=g.ws, k=layer.num_output_maps, r=g.r,
                                 s=g.s, stride=(1, 1), pre_padding=g.pre, post_padding=g.post,
                                 dilation=(1, 1), out_dtype=np.dtype(out_dtype).name,
                                 act=None if act is None else act.name, alpha=float(alpha),
                                 beta=float(beta))


def prefetch_spec(layer, batch):
    """The graph spec this tactic would run ``layer`` with at batch ``batch``, for
    cudnn_tactics.prefetch_network (None: not a layer it takes, or a shape not known)."""
    if not settings().cudnn_s2d:
        return None                  # switched off: no plans to compile
    if layer.layer_type != LayerType.CONVOLUTION or not layer._inputs or layer._inputs[0] is None \
            or layer._outputs[0].dtype not in (DataType.FLOAT, DataType.HALF):
        return None
    shape = tuple(layer._inputs[0].shape or ())
    if len(shape) != 4 or shape[0] not in (-1, batch) or min(shape[1:]) < 1:
        return None
    shape = (batch,) + shape[1:]
    if static_reason(layer, shape) is not None:
        return None
    return s2d_spec(layer, shape, _output_dtype(layer))


if prefetch_spec not in cudnn_tactics.PREFETCH_SPECS:
    cudnn_tactics.PREFETCH_SPECS.append(prefetch_spec)


class ConvCudnnS2d(Tactic):
    """A stride-2 convolution over 1-4 channels + bias + activation: the space-to-depth
    kernel (cast, reformat, 2x2 blocks to channels), then the stride-1 convolution as a
    cuDNN graph (FP16 in, FP32 accumulate), its plans timed inside like conv.cudnn's."""
    name = "conv.cudnn_s2d"
    switch = "cudnn_s2d"            # off until its GPU tests have passed (engine/settings.py)
    launch = staticmethod(space_to_depth.space_to_depth_nhwc)
    writes_into_concat = False      # a stem writes a buffer of its own

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.HALF:
            return "the cuDNN graphs run FP16 layers"
        return (static_reason(layer, in_shapes[0], in_dtypes[0] if in_dtypes else None)
                or _runtime_reason(layer, in_shapes[0][0]))

    def prepare(self, layer):
        state = {"kcrs": np.asarray(layer.weights(layer._inputs[0].shape[1]), np.float32),
                 "filters": {}, **epilogue_state(layer)}
        shape = tuple(layer._inputs[0].shape or ())
        if len(shape) == 4 and min(shape[1:]) >= 1:     # the declared shape: upload now
            self._filter(state, layer, (1,) + shape[1:])
        return state

    @staticmethod
    def _filter(state, layer, shape):
        """The device filter for ``shape``'s leading padding (the same for every shape
        with explicit padding; SAME modes pad by the input's size), made once each."""
        _, pre, _ = _window(layer, tuple(shape))
        key = (pre, c_pad_for(shape[1]))
        w = state["filters"].get(key)
        if w is None:
            host = space_to_depth.s2d_filter(state["kcrs"], pre, key[1])
            w = state["filters"][key] = cupy().asarray(host, cupy().float16)
        return w

    def run(self, state, layer, inputs, precision, out_dtypes):
        x = inputs[0]
        shape = tuple(x.shape)
        g = _geometry(layer, shape)
        c_pad = c_pad_for(shape[1])
        w = self._filter(state, layer, shape)
        xs = space_to_depth.space_to_depth_nhwc(x, c_pad, hs=g.hs, ws=g.ws)
        spec = s2d_spec(layer, shape, out_dtypes[0].to_numpy())
        opts = plan_options()
        opts.pop("workers")
        y = cudnn_graphs.conv2d_fused(xs, w, state["bias"], spec, **opts)
        return [nchw_view(y)]
