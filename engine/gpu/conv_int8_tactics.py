"""INT8 convolution tactics (mma.sync, wgmma, the small-C stem), with the requantising
epilogue; bit-exact with engine.int8_exec's integer arithmetic. Each tactic names the
kernel it launches (``launch``) and the packer of its weights (``pack_weights``):

    conv.i8_<tile>      conv_int8.conv2d_int8              pack_weight_int8_krsc
    conv.wgi8_<tile>    conv_wgmma.conv2d_wgmma_int8       pack_weight_int8_krsc  (sm_90a)
    conv.i8sc_<tile>    conv_int8_smallc.conv2d_int8_smallc  pack_weight_int8_smallc (C <= 4)

The small-C stem tactic is a candidate unless the int8_smallc setting is off
(CUPYRT_INT8_SMALLC=0). First GPU run (H100, session 3): bit-exact with ConvInt8 on C
padded to 16 on every test case, ResNet-50 stem at batch 256 0.70 ms vs 1.51 ms
(benchmarks/RESULTS.md); the switch takes it out of the builder's choice when a stem is
in doubt.
"""
import numpy as np

from kernels.gpu import conv_int8, conv_int8_smallc, conv_stem, conv_wgmma, quantize_int8

from ..int8_exec import tensor_scale
from ..types import DataType, LayerType
from .base import Tactic, as_nhwc, nchw_view
from .conv_common import (conv2d_reason, epilogue_state, float_kind, int8_out_dtype, wgmma_reason,
                          window_geometry)
from .conv_tactics import ConvStem


class ConvInt8(Tactic):
    """INT8 implicit GEMM (mma.sync s8, int32 accumulation) with the requantising
    epilogue; bit-exact with engine.int8_exec's integer arithmetic."""
    int8 = True
    launch = staticmethod(conv_int8.conv2d_int8)
    pack_weights = staticmethod(conv_int8.pack_weight_int8_krsc)
    # a general INT8 tile: with tiles_where_specialised off it is no candidate where a kernel
    # that outran these takes the layer (the INT8 stem kernel; engine/gpu/tactics.py ``supported``)
    general_tile = True

    def __init__(self, tile):
        self.tile, self.name = tile, f"conv.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.INT8:
            return "INT8 tactic"
        if layer.layer_type != LayerType.CONVOLUTION or layer.num_groups != 1:
            return "ungrouped convolutions only"
        return conv2d_reason(layer, in_shapes)

    def prepare(self, layer):
        c = layer._inputs[0].shape[1]
        wq, s_w = self.pack_weights(layer.weights(c) if c > 0 else layer.kernel, "KCRS")
        ep = epilogue_state(layer)
        res_t = layer._inputs[1] if len(layer._inputs) > 1 else None
        return {"w": wq, "s_w": s_w, **ep, "bias": None if layer.bias is None else ep["bias"],
                "s_in": tensor_scale(layer._inputs[0]),
                "s_res": tensor_scale(res_t) if res_t is not None and res_t.dynamic_range else None,
                "s_out": tensor_scale(layer._outputs[0]) if layer._outputs[0].dynamic_range else None}

    def quantized_input(self, state, x):
        """x as int8 NHWC codes, C padded to 16 (float in: the quantize kernel)."""
        if x.dtype == np.int8:
            return as_nhwc(x, np.int8, 16)
        return quantize_int8.quantize_nhwc(as_nhwc(x, float_kind(x), 1), state["s_in"], c_pad_to=16)

    def options(self, layer):
        """Keyword arguments of this kernel beyond the shared calling convention."""
        return {}

    def run(self, state, layer, inputs, precision, out_dtypes):
        x = inputs[0]
        (p, q), pre = window_geometry(layer, x.shape)
        xq = self.quantized_input(state, x)
        r = inputs[1] if len(inputs) > 1 else None
        int8_out = out_dtypes[0] == DataType.INT8
        kw = {}
        if r is not None:
            kw = ({"residual": as_nhwc(r, np.int8, 1), "residual_scale": state["s_res"]}
                  if r.dtype == np.int8 else {"residual": as_nhwc(r, float_kind(r), 1)})
        y = self.launch(xq, state["w"], state["s_in"], state["s_w"], stride=layer.stride_nd,
                        padding=pre, dilation=layer.dilation_nd, out_hw=(p, q),
                        bias=state["bias"], act=state["act"], alpha=state["alpha"],
                        beta=state["beta"], s_out=state["s_out"] if int8_out else None,
                        out_dtype=int8_out_dtype(out_dtypes[0]), tactic=self.tile,
                        **self.options(layer), **kw)
        return [nchw_view(y)]


class ConvWgmmaInt8(ConvInt8):
    """INT8 convolution on wgmma (s8 x s8 -> s32), the same epilogue bit for bit."""
    launch = staticmethod(conv_wgmma.conv2d_wgmma_int8)
    switch = "wgmma"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        return super().supports(layer, in_shapes, in_dtypes, precision) or wgmma_reason()


class ConvWgmmaInt8Occupancy(ConvWgmmaInt8):
    """The same kernel on a tile whose registers are capped for three CTAs an SM
    (conv_wgmma.INT8_OCC_TACTICS); a candidate while the wgmma_int8_3cta switch (on by
    default) and the wgmma switch are on."""
    switch = ("wgmma", "wgmma_int8_3cta")


class ConvInt8SmallC(ConvInt8):
    """INT8 convolution for C <= 4 input channels (the RGB stem): four taps x four
    channels per 16-byte chunk of the reduction (C padded 3 -> 4, a 7x7 reduction 208
    bytes instead of 784), the float network input quantised straight from NCHW;
    bit-exact with ConvInt8 (the padding adds exact zeros)."""
    launch = staticmethod(conv_int8_smallc.conv2d_int8_smallc)
    pack_weights = staticmethod(conv_int8_smallc.pack_weight_int8_smallc)   # same codes, same s_w
    switch = "int8_smallc"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = super().supports(layer, in_shapes, in_dtypes, precision)
        if reason is None and not 0 < in_shapes[0][1] <= 4:
            return "more than 4 input channels"
        return reason

    def quantized_input(self, state, x):
        if x.dtype == np.int8:
            return as_nhwc(x, np.int8, 4)                   # int8 codes, C padded to 4
        if x.dtype in (np.float32, np.float16) and x.flags.c_contiguous:
            # the network input (NCHW): quantised and reformatted in one pass
            return quantize_int8.quantize_nchw_to_nhwc(x, state["s_in"], c_pad_to=4)
        return quantize_int8.quantize_nhwc(as_nhwc(x, float_kind(x), 1), state["s_in"], c_pad_to=4,
                                           variant="vec")

    def options(self, layer):
        return {"kernel_size": layer.kernel_size_nd}


class ConvStemInt8(ConvStem):
    """An INT8 stem layer (C <= 4, calibrated) computed in FP16 by the stem kernel from the
    float input itself, writing the INT8 output codes (or half / float32 where the consumer
    is not INT8) in its epilogue: no quantize pass over the input and no input rounding to
    8 bits. Not bit-exact with engine.int8_exec (FP16 products of the unquantised input;
    the codes agree to within rounding); the builder times it beside the INT8 kernels unless
    the stem_int8 setting is off."""
    int8 = True
    switch = "stem_int8"
    writes_into_concat = False

    def __init__(self, tile, direct=False):
        super().__init__(tile, direct)
        self.name += "_i8"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.INT8:
            return "INT8 tactic"
        if str(in_dtypes[0]) not in ("float32", "float16"):
            return f"input {in_dtypes[0]}; the INT8 stem tactic reads the float input"
        reason = super().supports(layer, in_shapes, in_dtypes, DataType.HALF)
        if reason is None and layer.num_output_maps % 16:
            return f"{layer.num_output_maps} output channels; int8 codes are stored 16 at once"
        return reason

    def compile_options(self, layer, in_shapes, in_dtypes):
        return dict(super().compile_options(layer, in_shapes, in_dtypes), out_dtypes=["int8"])

    def prepare(self, layer):
        out = layer._outputs[0]
        return {**super().prepare(layer), "s_out": tensor_scale(out) if out.dynamic_range else None}

    def run(self, state, layer, inputs, precision, out_dtypes):
        x = inputs[0]
        (p, q), pre = window_geometry(layer, x.shape)
        int8_out = out_dtypes[0] == DataType.INT8
        y = self.launch_stem(state, layer, x, pre, (p, q), int8_out_dtype(out_dtypes[0]),
                             s_out=state["s_out"] if int8_out else None)
        return [nchw_view(y)]


# The INT8 CONVOLUTION tactics, in the order the builder times them.
TACTICS = (
    *[ConvInt8(t) for t in conv_int8.INT8_TACTICS],
    *[ConvWgmmaInt8(t) for t in conv_wgmma.INT8_TACTICS],
    *[ConvWgmmaInt8Occupancy(t) for t in conv_wgmma.INT8_OCC_TACTICS],
    *[ConvInt8SmallC(t) for t in conv_int8_smallc.SMALLC_TACTICS],
    *[ConvStemInt8(t, direct) for t in conv_stem.STEM_TILES for direct in (False, True)],
)
