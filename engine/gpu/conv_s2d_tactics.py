"""A few-channel stride-2 convolution (the RGB stem) as a space-to-depth pass and a
stride-1 convolution on our own implicit GEMMs, INT8 and FP16 (no cuDNN):

    conv.s2d_wgi8_<tile>      space_to_depth_int8 + conv_wgmma.conv2d_wgmma_int8   (sm_90a)
    conv.s2d_i8_<tile>        space_to_depth_int8 + conv_int8.conv2d_int8          (mma.sync)
    conv.s2d_wg_<tile>        space_to_depth_nhwc + conv_wgmma.conv2d_wgmma        (sm_90a)
    conv.s2d_igemm2_<tile>    space_to_depth_nhwc + conv_igemm.conv2d_igemm        (mma.sync)

ResNet's 7x7/2 stem over 3 channels, folded into 2x2 blocks (kernels/gpu/space_to_depth.py),
is a 4x4 stride-1 convolution over 112x112x16 with padding 2 before and 1 after: a
reduction of 256 instead of 147 taps of 3 channels, C = 16, which every tensor-core
kernel of ours takes (INT8 C % 16 == 0, FP16 C % 8 == 0) at full operand width. The
launchers take the leading padding and the output size (``out_hw``); rows and columns
past the folded input are read as zeros, which is the post padding.

INT8 is bit-exact with conv.i8_* / conv.i8sc_* on the original layer: the pass quantises
with the INT8 input path's arithmetic (the same codes, moved), the s2d filter holds the
same weights plus zeros (the same per-channel scales and codes), so the int32 sums and
the epilogue are the same (tests/engine/test_conv_s2d_tactics.py proves it on the NumPy
emulation). The tiles are those of the plain tactics (N = 64 output channels: bn = 64),
so precompile lists them through their families (engine/gpu/precompile.py tactic_tile).

Settings: s2d_stem (CUPYRT_S2D_STEM) for the INT8 tactics, s2d_stem_f16 for the FP16 ones.
"""
import numpy as np

from kernels import quantize as Q
from kernels.gpu import conv_igemm, conv_int8, conv_wgmma, space_to_depth

from ..int8_exec import tensor_scale
from ..settings import settings
from ..types import DataType, LayerType
from .base import Tactic, nchw_view
from .conv_common import epilogue_state, int8_out_dtype, is_half, wgmma_reason

MAX_CHANNELS = 4       # 4*C channels of the folded input: 16 at most
INT8_C_PAD = space_to_depth.Q8_C_PAD

# the tiles for N = 64 output channels (bn = 64); a 256-byte INT8 reduction is 2 k-tiles
WGI8_TILES = tuple(conv_wgmma.TACTICS_BY_NAME[n] for n in ("wgi8_128x64_s4", "wgi8_64x64_s4"))
I8_TILES = (conv_int8.TACTICS_BY_NAME["i8_128x64x64_w2x2_s4"],)
WG_TILES = tuple(conv_wgmma.TACTICS_BY_NAME[n] for n in ("wg_128x64_s4", "wg_64x64_s4"))
IGEMM_TILES = (conv_igemm.TACTICS_BY_NAME["igemm2_128x64x32_w2x2_s4"],)


def f16_c_pad(c):
    """The FP16 folded input's channels: 4*C rounded up to 8 (the FP16 kernels' C % 8)."""
    return 8 if 4 * c <= 8 else 16


def s2d_geometry(layer, shape):
    """``S2dGeometry`` of ``layer`` at input ``shape`` (its pre/post padding, SAME modes
    included), memoised on the layer (the layer's geometry is Python arithmetic)."""
    memo = layer.__dict__.setdefault("_s2d_ours_memo", {})
    hit = memo.get(shape)
    if hit is None:
        out, pre, post = layer.geometry(shape)
        r, s = layer.kernel_size_nd
        # EXPLICIT_ROUND_UP counts a last window that reaches past the declared post padding
        # (ceil); the post padding that window reads makes s2d_geometry's floor rule give the
        # layer's output size (the direct tactics read those rows as zeros, through out_hw)
        post = [max(a, (o - 1) * 2 + k - i - b)
                for a, o, k, i, b in zip(post, out, (r, s), shape[2:], pre)]
        hit = memo[shape] = space_to_depth.s2d_geometry(shape[2], shape[3], r, s, pre[0], pre[1],
                                                        post[0], post[1])
    return hit


def s2d_reason(layer, in_shapes, in_dtypes, dtypes):
    """Why the space-to-depth rewrite cannot take this convolution (input dtype names
    must be among ``dtypes``); None: it can. The same rules as conv.i8sc_* (C <= 4, no
    residual) plus stride (2, 2) and dilation 1."""
    if layer.layer_type != LayerType.CONVOLUTION or layer.num_groups != 1:
        return "ungrouped convolutions only"
    shape = in_shapes[0]
    if len(shape) != 4 or len(layer.kernel_size_nd) != 2:
        return "only 2-D convolutions (rank-4 inputs)"
    if tuple(layer.stride_nd) != (2, 2):
        return f"stride {tuple(layer.stride_nd)}; the space-to-depth rewrite takes stride (2, 2)"
    if tuple(layer.dilation_nd) != (1, 1):
        return f"dilation {tuple(layer.dilation_nd)}; the space-to-depth rewrite takes dilation (1, 1)"
    if not 1 <= shape[1] <= MAX_CHANNELS:
        return f"{shape[1]} input channels; the space-to-depth rewrite takes 1..{MAX_CHANNELS}"
    if len(in_shapes) > 1 and in_shapes[1] is not None:
        return "a residual input (a stem has none; not fused here)"
    if in_dtypes and in_dtypes[0] is not None and np.dtype(in_dtypes[0]).name not in dtypes:
        return f"input dtype {in_dtypes[0]}; expected {' or '.join(dtypes)}"
    return None


def s2d_weights(kcrs, pre, c_pad):
    """The float32 KRSC filter (K, R', S', c_pad) of the stride-1 convolution: the same
    weights, moved, plus zeros (so INT8 per-channel scales and codes are unchanged)."""
    return space_to_depth.s2d_filter(np.asarray(kcrs, np.float32), pre, c_pad, np.float32)


def int8_reference(layer, x, s_out=None):
    """NumPy reference of what the INT8 tactics compute on ``layer`` for input ``x``
    (float NCHW, or int8 codes): the folded codes (``s2d_int8_reference``), the s2d filter
    quantised as ``pack_weight_int8_krsc`` does (``quantize_weights``), exact sums of the
    stride-1 convolution and the INT8 epilogue; int8 at ``s_out``, else float32 (NCHW).
    Equal, bit for bit, to engine.int8_exec's direct arithmetic on the original layer."""
    x = np.asarray(x)
    g = s2d_geometry(layer, tuple(x.shape))
    s_in = tensor_scale(layer._inputs[0])
    xs = space_to_depth.s2d_int8_reference(x, s_in, g.hs, g.ws).transpose(0, 3, 1, 2)
    lead = tuple(layer.geometry(tuple(x.shape))[1])
    wq, s_w = Q.quantize_weights(s2d_weights(layer.weights(x.shape[1]), lead, INT8_C_PAD))
    acc = Q.conv_int8(xs, wq.transpose(0, 3, 1, 2), (1, 1), g.pre, (g.p, g.q), (1, 1), 1)
    act = layer.post_activation
    alpha, beta = layer.post_params() if act is not None else (0.0, 0.0)
    return Q.epilogue_int8(acc, s_in, s_w, layer.bias, None, None if act is None else act.name,
                         alpha, beta, s_out)


class _S2dTactic(Tactic):
    """What both precisions share: the switch, the tile, the per-padding filters."""
    switch = "s2d_stem"              # off until its GPU tests have passed (engine/settings.py)
    writes_into_concat = False       # a stem writes a buffer of its own
    needs_wgmma = False

    def __init__(self, tile):
        self.tile = tile             # one of the plain tactics' tiles: precompile finds it
        self.name = f"conv.s2d_{tile.name}"

    def wgmma_reason(self):
        if not self.needs_wgmma:
            return None
        if not settings().wgmma:
            return "wgmma tactics are off (CUPYRT_WGMMA=0)"
        return wgmma_reason()

    def _pack(self, w_krsc):
        """(device weights, per-channel weight scales or None) of a host KRSC filter."""
        raise NotImplementedError

    def _c_pad(self, c):
        raise NotImplementedError

    def _state(self, layer):
        c = layer._inputs[0].shape[1]
        state = {"kcrs": np.asarray(layer.weights(c), np.float32), "filters": {},
                 **epilogue_state(layer)}
        shape = tuple(layer._inputs[0].shape or ())
        if len(shape) == 4 and min(shape[1:]) >= 1:     # the declared shape: upload now
            self._filter(state, layer, (1,) + shape[1:])
        return state

    def _filter(self, state, layer, shape):
        """(weights, s_w) for ``shape``'s leading padding (the same for every shape with
        explicit padding; SAME modes pad by the input's size), made once each."""
        memo = layer.__dict__.setdefault("_s2d_lead_memo", {})
        shape = tuple(shape)
        lead = memo.get(shape)
        if lead is None:
            lead = memo[shape] = tuple(layer.geometry(shape)[1])
        key = (lead, self._c_pad(shape[1]))
        hit = state["filters"].get(key)
        if hit is None:
            hit = state["filters"][key] = self._pack(s2d_weights(state["kcrs"], lead, key[1]))
        return hit


class ConvS2dInt8(_S2dTactic):
    """INT8 stem: the quantising space-to-depth pass (float network input -> int8 codes,
    16 channels; int8 input only folded), then the INT8 implicit GEMM on the 4x4 stride-1
    convolution with the requantising epilogue; bit-exact with conv.i8_* on the layer."""
    int8 = True
    launch = staticmethod(conv_int8.conv2d_int8)

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.INT8:
            return "INT8 tactic"
        return (s2d_reason(layer, in_shapes, in_dtypes, ("float32", "float16", "int8"))
                or self.wgmma_reason())

    def _c_pad(self, c):
        return INT8_C_PAD

    def _pack(self, w_krsc):
        return conv_int8.pack_weight_int8_krsc(w_krsc, "KRSC")

    def prepare(self, layer):
        return {**self._state(layer), "s_in": tensor_scale(layer._inputs[0]),
                "s_out": tensor_scale(layer._outputs[0]) if layer._outputs[0].dynamic_range else None,
                "has_bias": layer.bias is not None}

    def run(self, state, layer, inputs, precision, out_dtypes):
        x = inputs[0]
        shape = tuple(x.shape)
        g = s2d_geometry(layer, shape)
        w, s_w = self._filter(state, layer, shape)
        xs = space_to_depth.space_to_depth_int8(x, state["s_in"], hs=g.hs, ws=g.ws)
        int8_out = out_dtypes[0] == DataType.INT8
        y = self.launch(xs, w, state["s_in"], s_w, stride=1, padding=g.pre, dilation=1,
                        out_hw=(g.p, g.q), bias=state["bias"] if state["has_bias"] else None,
                        act=state["act"], alpha=state["alpha"], beta=state["beta"],
                        s_out=state["s_out"] if int8_out else None,
                        out_dtype=int8_out_dtype(out_dtypes[0]), tactic=self.tile)
        return [nchw_view(y)]


class ConvS2dWgmmaInt8(ConvS2dInt8):
    """The INT8 stem on wgmma (sm_90a), the same epilogue bit for bit."""
    launch = staticmethod(conv_wgmma.conv2d_wgmma_int8)
    needs_wgmma = True


class ConvS2dHalf(_S2dTactic):
    """FP16 stem: the space-to-depth pass (cast to half fused in), then the FP16 implicit
    GEMM (mma.sync) with bias and activation fused; FP32 accumulation."""
    launch = staticmethod(conv_igemm.conv2d_igemm)
    switch = "s2d_stem_f16"          # its own: the FP16 stem kernel is the one to beat

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if not is_half(precision):
            return "tensor-core convolution runs in FP16"
        return (s2d_reason(layer, in_shapes, in_dtypes, ("float32", "float16"))
                or self.wgmma_reason())

    def _c_pad(self, c):
        return f16_c_pad(c)

    def _pack(self, w_krsc):
        return conv_igemm.pack_weight_krsc(w_krsc, "KRSC", c_pad_to=w_krsc.shape[3]), None

    def prepare(self, layer):
        return self._state(layer)

    def options(self, state):
        return {}

    def run(self, state, layer, inputs, precision, out_dtypes):
        x = inputs[0]
        shape = tuple(x.shape)
        g = s2d_geometry(layer, shape)
        w, _ = self._filter(state, layer, shape)
        xs = space_to_depth.space_to_depth_nhwc(x, self._c_pad(shape[1]), hs=g.hs, ws=g.ws)
        y = self.launch(xs, w, stride=1, padding=g.pre, dilation=1, out_hw=(g.p, g.q),
                        bias=state["bias"], scale=state["scale"], act=state["act"],
                        alpha=state["alpha"], beta=state["beta"],
                        out_dtype=out_dtypes[0].to_numpy(), tactic=self.tile, **self.options(state))
        return [nchw_view(y)]


class ConvS2dWgmma(ConvS2dHalf):
    """The FP16 stem on wgmma (sm_90a)."""
    launch = staticmethod(conv_wgmma.conv2d_wgmma)
    needs_wgmma = True

    def prepare(self, layer):
        # fixed per layer when prepared, like conv.wg_* (a timing-cache key setting)
        return {**self._state(layer), "fast_epilogue": settings().wgmma_f16_fast_epilogue}

    def options(self, state):
        return {"fast_epilogue": state["fast_epilogue"]}


# The space-to-depth stem tactics, in the order the builder times them (wgmma first:
# the expected fastest bounds the timing of the rest).
TACTICS = (
    *[ConvS2dWgmmaInt8(t) for t in WGI8_TILES],
    *[ConvS2dInt8(t) for t in I8_TILES],
    *[ConvS2dWgmma(t) for t in WG_TILES],
    *[ConvS2dHalf(t) for t in IGEMM_TILES],
)
