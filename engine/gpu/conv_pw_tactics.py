"""The persistent, weight-resident 1x1 INT8 convolution (kernels/gpu/conv_pw.py) as tactics.

``conv.pwi8_<tile>``: 1x1, stride 1, no padding, ungrouped INT8 convolutions whose weight
slice and cp.async ring fit shared memory (C up to 480..640 by tile): ResNet's bottleneck
expand layers, where the one-tile-per-CTA kernels wait on memory. Everything but the
launch is ConvInt8's (weights, scales, input quantisation, residual, output), so its
outputs equal conv.i8_*'s bit for bit. A candidate only when the pw_persistent setting is
on (CUPYRT_PW_PERSISTENT=1), off until its GPU tests pass.
"""
from kernels.gpu import conv_pw

from .conv_common import window_geometry
from .conv_int8_tactics import ConvInt8


class ConvPwInt8(ConvInt8):
    """INT8 1x1 convolution: weight slice resident in shared memory, persistent CTAs
    streaming M tiles through a cp.async ring; ConvInt8's epilogue bit for bit."""
    launch = staticmethod(conv_pw.conv2d_pw_int8)
    switch = "pw_persistent"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = super().supports(layer, in_shapes, in_dtypes, precision)
        if reason is not None:
            return reason
        shape = tuple(in_shapes[0])
        c_pad = -(-shape[1] // conv_pw.C_ALIGN) * conv_pw.C_ALIGN    # ConvInt8 pads C to 16
        (p, q), pre = window_geometry(layer, shape)
        reason = conv_pw.pointwise_reason(self.tile, c_pad, layer.num_output_maps,
                                          *layer.kernel_size_nd, layer.stride_nd, pre,
                                          layer.dilation_nd)
        if reason is None and (p, q) != tuple(shape[2:]):
            return f"output {p}x{q} from input {shape[2]}x{shape[3]}: padded past the input"
        return reason


TACTICS = tuple(ConvPwInt8(t) for t in conv_pw.PW_TACTICS)
