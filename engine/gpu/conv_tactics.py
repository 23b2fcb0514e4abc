"""Convolution tactics in FP16 / FP32 (INT8: conv_int8_tactics.py; FP32 on tensor cores:
conv_tf32_tactics.py). Each tactic names the kernel it launches (``launch``); this module
only maps an engine layer (attributes, fused epilogue, formats) onto it.

    conv.igemm*_<tile>        conv_igemm.conv2d_igemm         mma.sync implicit GEMM, FP16
    conv.igemmsk_<tile>       conv_igemm.conv2d_igemm_splitk  the same, reduction split over CTAs
    conv.igemmsc_<tile>       conv_igemm.conv2d_igemm_smallc  C <= 4 (RGB stem), taps in pairs
    conv.stem_<tile>[_nchw]   conv_stem.conv2d_stem           C <= 4, patch in shared memory
                                                              (stem_kernel setting)
    conv.wg_<tile>            conv_wgmma.conv2d_wgmma         Hopper wgmma (sm_90a), FP16
    conv.depthwise_v2_q<n>    conv_dw.conv2d_depthwise_v2     register-blocked depthwise
    conv.cublas_1x1           conv_gemm.conv2d_1x1_cublas     one cuBLAS GEMM + epilogue kernel
    conv.depthwise            conv_gemm.conv2d_depthwise      direct depthwise kernel
    conv.im2col               conv_gemm.conv2d_im2col         any convolution (groups too)

Concat elision (engine/gpu/concat.py): tactics with ``writes_into_concat`` take ``into=``
(their slot in a concat's NHWC buffer) and, when ``claim`` gives them the buffer, pass
``out=, out_channel_offset=`` to the launcher and return the view of their slice
(``written``).
"""
import numpy as np

from kernels.gpu import conv_dw, conv_gemm, conv_igemm, conv_stem, conv_wgmma

from ..settings import settings
from .base import Tactic, as_nhwc, cupy, nchw_view
from .concat import claim, written
from .conv_common import (NhwcConvTactic, compute_dtype, conv2d_reason, conv_output, epilogue_state,
                          is_half, residual_nhwc, wgmma_reason, window_geometry)


class ConvIgemm(NhwcConvTactic):
    """Tensor-core implicit GEMM (mma.sync), NHWC FP16, fused epilogue; one tile shape.
    Subclasses change the kernel (split-K, small-C, wgmma) and keep the calling convention."""
    launch = staticmethod(conv_igemm.conv2d_igemm)
    pack = staticmethod(conv_igemm.pack_weight_krsc)
    # a general FP16 tile: with tiles_where_specialised off it is no candidate where a
    # specialised kernel takes the layer (engine/gpu/tactics.py ``supported``)
    general_tile = True

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if not is_half(precision):
            return "tensor-core convolution runs in FP16"
        if layer.num_groups != 1:
            return "grouped convolution"
        return conv2d_reason(layer, in_shapes)


class ConvIgemmSplitK(ConvIgemm):
    """The implicit GEMM with the reduction split over CTAs (FP32 partial sums,
    then one kernel adds them and applies the epilogue): fills the GPU when the
    output is small (batch 1, late stages)."""
    launch = staticmethod(conv_igemm.conv2d_igemm_splitk)


class ConvIgemmNarrow(ConvIgemm):
    """Narrow implicit-GEMM tiles, offered only for 1x1 layers with few channels
    (where they win; elsewhere they would only cost compile and timing time)."""

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = super().supports(layer, in_shapes, in_dtypes, precision)
        if reason is None and (tuple(layer.kernel_size_nd) != (1, 1)
                               or min(in_shapes[0][1], layer.num_output_maps) > 384):
            return "narrow tiles are for 1x1 layers with C or K <= 384"
        return reason


class ConvStemSmallC(ConvIgemm):
    """Few input channels (an RGB stem): taps packed densely in pairs, so a 7x7
    reduction is 224 long instead of 392 with per-tap channel padding."""
    launch = staticmethod(conv_igemm.conv2d_igemm_smallc)

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = super().supports(layer, in_shapes, in_dtypes, precision)
        if reason is None and not 0 < in_shapes[0][1] <= 4:
            return "more than 4 input channels"
        return reason

    def prepare(self, layer):
        c = layer._inputs[0].shape[1]
        return {"w": conv_igemm.pack_weight_smallc(layer.weights(c), "KCRS"), **epilogue_state(layer)}


class ConvStem(Tactic):
    """The FP16 stem for C <= 4 input channels (kernels/cuda/conv_stem.cu): each output
    tile's input patch loaded once into shared memory, the filter resident there, persistent
    CTAs. ``direct``: the network input (C-contiguous NCHW float32/float16) is read as it is,
    no reformat pass; any other input (and the plain flavour always) goes through the
    reformat to NHWC half with 4 channels. The builder times both flavours."""
    switch = "stem_kernel"
    writes_into_concat = True
    outruns_general_tiles = True    # they yield to it (tiles_where_specialised off)

    def __init__(self, tile, direct=False):
        self.tile = tile
        self.direct = direct
        self.name = f"conv.{tile.name}{'_nchw' if direct else ''}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if not is_half(precision):
            return "the stem kernel runs in FP16"
        if layer.num_groups != 1:
            return "grouped convolution"
        reason = conv2d_reason(layer, in_shapes)
        if reason is not None:
            return reason
        if not 0 < in_shapes[0][1] <= 4:
            return f"{in_shapes[0][1]} input channels; the stem kernel takes 1 to 4"
        if layer.num_output_maps % 8:
            return f"{layer.num_output_maps} output channels; the stem kernel takes multiples of 8"
        if tuple(layer.dilation_nd) != (1, 1):
            return "dilated convolution"
        if max(layer.kernel_size_nd) > conv_stem.MAX_FILTER:
            return f"filter {tuple(layer.kernel_size_nd)} larger than {conv_stem.MAX_FILTER}x{conv_stem.MAX_FILTER}"
        if any(s not in (1, 2) for s in layer.stride_nd):
            return f"stride {tuple(layer.stride_nd)}; the stem kernel takes 1 or 2"
        if len(in_shapes) > 1 and in_shapes[1] is not None:
            return "residual not fused by the stem kernel"
        return None

    def compile_options(self, layer, in_shapes, in_dtypes):
        """What precompile builds for this layer (conv_stem.compile_all): its filter geometry
        and the input kind ``run`` will read: the network input as it is (NCHW float32 / float16)
        for the direct flavour, else the NHWC half reformat."""
        kind = 0
        if self.direct:
            kind = {"float32": 1, "float16": 2}.get(str(in_dtypes[0]), 0)
        return {"geometry": [*layer.kernel_size_nd, *layer.stride_nd], "in_kinds": [kind]}

    def prepare(self, layer):
        c = layer._inputs[0].shape[1]
        return {"w": conv_stem.pack_weight_stem(layer.weights(c), "KCRS"), **epilogue_state(layer)}

    def launch_stem(self, state, layer, x, pre, out_hw, out_dtype, **kw):
        """The stem kernel on ``x``: the network input itself (direct flavour, an NCHW float
        array, unless the tile cannot write float32 from it), else the NHWC half reformat
        with 4 channels; ``kw``: the output's placement or scale."""
        if (self.direct and x.flags.c_contiguous and x.dtype in (np.float32, np.float16)
                and (np.dtype(out_dtype) != np.float32 or self.tile.nchw_f32_out)):
            x_in, layout = x, "NCHW"
        else:
            x_in, layout = as_nhwc(x, np.float16, 4), "NHWC"
        return conv_stem.conv2d_stem(
            x_in, state["w"], kernel_size=layer.kernel_size_nd, stride=layer.stride_nd, padding=pre,
            out_hw=out_hw, scale=state["scale"], bias=state["bias"], act=state["act"],
            alpha=state["alpha"], beta=state["beta"], out_dtype=out_dtype, layout=layout,
            tactic=self.tile, **kw)

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        x = inputs[0]
        (p, q), pre, k, place, out_dtype = conv_output(layer, x, into, out_dtypes)
        return [written(self.launch_stem(state, layer, x, pre, (p, q), out_dtype, **place), place, k)]


class ConvWgmma(ConvIgemm):
    """The implicit GEMM on Hopper's warpgroup MMA (wgmma, sm_90a): operands from
    128-byte-swizzled shared memory, 64 x N per warpgroup (kernels/cuda/conv_wgmma.cu)."""
    launch = staticmethod(conv_wgmma.conv2d_wgmma)
    switch = "wgmma"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        return super().supports(layer, in_shapes, in_dtypes, precision) or wgmma_reason()

    def prepare(self, layer):
        # the FP16 fast epilogue (experimental, off by default) is fixed per layer when it
        # is prepared; the setting is part of the timing-cache key (settings.tactic_key)
        return {**super().prepare(layer), "fast_epilogue": settings().wgmma_f16_fast_epilogue}

    def options(self, state):
        return {"fast_epilogue": state["fast_epilogue"]}


class Conv1x1Cublas(Tactic):
    """1x1 convolution as one cuBLAS GEMM over NHWC rows + fused epilogue kernel."""
    name = "conv.cublas_1x1"
    capturable = False
    writes_into_concat = True

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if tuple(layer.kernel_size_nd) != (1, 1) or layer.num_groups != 1:
            return "not a 1x1 ungrouped convolution"
        if any(layer.geometry(in_shapes[0])[1]) or any(layer.geometry(in_shapes[0])[2]):
            return "padded 1x1 convolution"
        return conv2d_reason(layer, in_shapes)

    def prepare(self, layer):
        cp = cupy()
        w = layer.kernel.reshape(layer.num_output_maps, -1)
        return {"w16": cp.asarray(w, cp.float16), "w32": cp.asarray(w, cp.float32),
                **epilogue_state(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        dt = compute_dtype(precision)
        x = inputs[0]
        _, _, k, place, out_dtype = conv_output(layer, x, into, out_dtypes)
        y = conv_gemm.conv2d_1x1_cublas(
            as_nhwc(x, dt), state["w16" if dt == np.float16 else "w32"], stride=layer.stride_nd,
            bias=state["bias"], scale=state["scale"], residual=residual_nhwc(inputs, out_dtype),
            act=state["act"], alpha=state["alpha"], beta=state["beta"], out_dtype=out_dtype, **place)
        return [written(y, place, k)]


class ConvIm2col(Tactic):
    """Any 2-D convolution: im2col + cuBLAS per group + fused epilogue (FP32 or FP16)."""
    name = "conv.im2col"
    capturable = False
    writes_into_concat = True
    fallback = True             # the convolution any other kernel declines; never won where one ran

    def supports(self, layer, in_shapes, in_dtypes, precision):
        return conv2d_reason(layer, in_shapes)

    def prepare(self, layer):
        cp = cupy()
        c = layer._inputs[0].shape[1]
        w = layer.weights(c).transpose(0, 2, 3, 1)          # KCRS -> KRSC
        return {"w16": cp.asarray(np.ascontiguousarray(w), cp.float16),
                "w32": cp.asarray(np.ascontiguousarray(w), cp.float32),
                **epilogue_state(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        dt = compute_dtype(precision)
        x = inputs[0]
        (p, q), pre, k, place, out_dtype = conv_output(layer, x, into, out_dtypes)
        y = conv_gemm.conv2d_im2col(
            as_nhwc(x, dt), state["w16" if dt == np.float16 else "w32"], stride=layer.stride_nd,
            padding=pre, dilation=layer.dilation_nd, out_hw=(p, q), groups=layer.num_groups,
            bias=state["bias"], scale=state["scale"], residual=residual_nhwc(inputs, out_dtype),
            act=state["act"], alpha=state["alpha"], beta=state["beta"], out_dtype=out_dtype, **place)
        return [written(y, place, k)]


class ConvDepthwise(Tactic):
    """Direct depthwise kernel (one filter per channel), NHWC, fused epilogue."""
    name = "conv.depthwise"
    writes_into_concat = True

    def supports(self, layer, in_shapes, in_dtypes, precision):
        c = in_shapes[0][1] if len(in_shapes[0]) == 4 else -1
        if not (layer.num_groups == c == layer.num_output_maps):
            return "not depthwise (groups == C == K)"
        if len(in_shapes) > 1 and in_shapes[1] is not None:
            return "residual not fused by the depthwise kernel"
        return conv2d_reason(layer, in_shapes)

    def prepare(self, layer):
        cp = cupy()
        c = layer._inputs[0].shape[1]
        w = layer.weights(c)                                   # (C, 1, R, S)
        return {"w": cp.asarray(np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)), cp.float32),
                **epilogue_state(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        dt = compute_dtype(precision)
        x = inputs[0]
        (p, q), pre = window_geometry(layer, x.shape)
        place = claim(into, (x.shape[0], p, q, x.shape[1]), (dt,))   # writes x's dtype
        y = conv_gemm.conv2d_depthwise(
            as_nhwc(x, dt), state["w"], stride=layer.stride_nd, padding=pre,
            dilation=layer.dilation_nd, out_hw=(p, q), bias=state["bias"], scale=state["scale"],
            act=state["act"], alpha=state["alpha"], beta=state["beta"], **place)
        if place:
            return [written(y, place, x.shape[1])]
        return [nchw_view(y).astype(out_dtypes[0].to_numpy(), copy=False)]


class ConvDepthwiseV2(ConvDepthwise):
    """Register-blocked depthwise kernel: 8 channels x q_tile outputs per thread,
    weights in registers, fused epilogue."""

    def __init__(self, q_tile):
        self.q_tile = q_tile
        self.name = f"conv.depthwise_v2_q{q_tile}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = super().supports(layer, in_shapes, in_dtypes, precision)
        if reason is None and in_shapes[0][1] % 8:
            return "channels not a multiple of 8"
        if reason is None and max(layer.kernel_size_nd) > 7:
            return "filter larger than 7x7"
        return reason

    def prepare(self, layer):
        w = layer.weights(layer._inputs[0].shape[1])             # (C, 1, R, S)
        return {"w16": conv_dw.pack_weight_dw(w, "C1RS", np.float16),
                "w32": conv_dw.pack_weight_dw(w, "C1RS", np.float32), **epilogue_state(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        dt = compute_dtype(precision)
        x = inputs[0]
        (p, q), pre = window_geometry(layer, x.shape)
        place = claim(into, (x.shape[0], p, q, x.shape[1]), (dt,))   # writes x's dtype
        # no channel padding here: padded channels would not line up with the filters
        y = conv_dw.conv2d_depthwise_v2(
            as_nhwc(x, dt), state["w16" if dt == np.float16 else "w32"], stride=layer.stride_nd,
            padding=pre, dilation=layer.dilation_nd, out_hw=(p, q), bias=state["bias"],
            scale=state["scale"], act=state["act"], alpha=state["alpha"], beta=state["beta"],
            q_tile=self.q_tile, **place)
        if place:
            return [written(y, place, x.shape[1])]
        return [nchw_view(y).astype(out_dtypes[0].to_numpy(), copy=False)]


# The CONVOLUTION tactics of this module, in the order the builder times them.
TACTICS = (
    *[ConvIgemm(t) for t in conv_igemm.IGEMM_TACTICS + conv_igemm.IGEMM_TACTICS_LARGE],
    *[ConvIgemmSplitK(t) for t in conv_igemm.SPLITK_TACTICS],
    *[ConvStemSmallC(t) for t in conv_igemm.SMALLC_TACTICS],
    *[ConvStem(t, direct) for t in conv_stem.STEM_TILES for direct in (False, True)],
    *[ConvIgemmNarrow(t) for t in conv_igemm.IGEMM_TACTICS_NARROW],
    *[ConvDepthwiseV2(q) for q in conv_dw.Q_TILES],
    Conv1x1Cublas(), ConvDepthwise(), ConvIm2col(),
    *[ConvWgmma(t) for t in conv_wgmma.TACTICS],
)
