"""The persistent, weight-resident 1x1 convolution (kernels/gpu/conv_pw.py) as tactics.

    conv.pwi8_<tile>   conv_pw.conv2d_pw_int8   INT8; everything but the launch is ConvInt8's
                                                (weights, scales, input quantisation, residual,
                                                output), outputs equal conv.i8_*'s bit for bit
    conv.pw16_<tile>   conv_pw.conv2d_pw_f16    FP16; ConvIgemm's calling convention (and concat
                                                writes), conv_igemm's epilogue
    conv.pw3i8_<tile>  conv_pw.conv2d_pw3_int8  INT8 3x3, stride 1, padding 1, C % 32 == 0; as
                                                conv.pwi8_*, bit for bit with conv.i8_*

For 1x1, stride 1, no padding, ungrouped convolutions whose weight slice and cp.async ring
fit shared memory (the tile says up to which C): ResNet's bottleneck expand layers, where the
one-tile-per-CTA kernels wait on memory. Candidates only when their setting is on:
pw_persistent (CUPYRT_PW_PERSISTENT, on by default) for INT8, pw_persistent_f16 (off) for FP16,
pw3_persistent (off) for the 3x3 kernel.
"""
from kernels.gpu import conv_pw

from .conv_common import window_geometry
from .conv_int8_tactics import ConvInt8
from .conv_tactics import ConvIgemm


def pointwise_reason(tile, layer, in_shapes):
    """Why the persistent kernel's ``tile`` cannot run ``layer`` at these input shapes (None:
    it can); the input's channels padded as the tactic pads them."""
    shape = tuple(in_shapes[0])
    c_pad = -(-shape[1] // tile.c_align) * tile.c_align
    (p, q), pre = window_geometry(layer, shape)
    reason = conv_pw.pointwise_reason(tile, c_pad, layer.num_output_maps, *layer.kernel_size_nd,
                                      layer.stride_nd, pre, layer.dilation_nd)
    if reason is None and (p, q) != tuple(shape[2:]):
        return f"output {p}x{q} from input {shape[2]}x{shape[3]}: padded past the input"
    return reason


class ConvPwInt8(ConvInt8):
    """INT8 1x1 convolution: weight slice resident in shared memory, persistent CTAs
    streaming M tiles through a cp.async ring; ConvInt8's epilogue bit for bit."""
    launch = staticmethod(conv_pw.conv2d_pw_int8)
    switch = "pw_persistent"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        return (super().supports(layer, in_shapes, in_dtypes, precision)
                or pointwise_reason(self.tile, layer, in_shapes))


def pointwise3_reason(tile, layer, in_shapes):
    """Why the 3x3 kernel's ``tile`` cannot run ``layer`` at these input shapes (None: it
    can); the input's channels padded to 16 as ConvInt8 pads them."""
    shape = tuple(in_shapes[0])
    c_pad = -(-shape[1] // 16) * 16
    (p, q), pre = window_geometry(layer, shape)
    return conv_pw.pointwise3_reason(tile, c_pad, layer.num_output_maps, *layer.kernel_size_nd,
                                     layer.stride_nd, pre, layer.dilation_nd, shape[2], shape[3],
                                     p, q)


class ConvPw3Int8(ConvInt8):
    """INT8 3x3 stride-1 convolution: weight slice resident, each ring stage the M tile's
    rows with a one-row halo that all nine taps read; ConvInt8's epilogue bit for bit."""
    launch = staticmethod(conv_pw.conv2d_pw3_int8)
    switch = "pw3_persistent"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        return (super().supports(layer, in_shapes, in_dtypes, precision)
                or pointwise3_reason(self.tile, layer, in_shapes))


class ConvPwF16(ConvIgemm):
    """FP16 1x1 convolution on the same persistent kernel (m16n8k16, float32 accumulation),
    conv_igemm's epilogue."""
    launch = staticmethod(conv_pw.conv2d_pw_f16)
    switch = "pw_persistent_f16"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        return (super().supports(layer, in_shapes, in_dtypes, precision)
                or pointwise_reason(self.tile, layer, in_shapes))


TACTICS = (*[ConvPwInt8(t) for t in conv_pw.PW_TACTICS],
           *[ConvPw3Int8(t) for t in conv_pw.PW3_TACTICS],
           *[ConvPwF16(t) for t in conv_pw.PW16_TACTICS])
