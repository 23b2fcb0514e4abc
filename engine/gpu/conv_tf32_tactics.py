"""FP32 convolution tactics on tensor cores (kernels.gpu.conv_tf32), one per tile:

- 3xTF32 (``3xtf32_*`` tiles, ``precise=True``): error-compensated TF32, FP32-accurate
  (the builder may offer it for any FLOAT layer);
- plain TF32 (``tf32_*`` tiles, ``precise=False``): ~1e-3 relative error per product, the
  speed TensorRT's TF32 builder flag trades for. These carry ``tf32 = True`` so the
  builder drops them unless that flag is set.

Both replace im2col + cuBLAS SGEMM + a separate epilogue kernel with one launch
(conv_tf32.conv2d_tf32: fused scale/bias/residual/activation, concat-buffer writes) and
no cuBLAS, so FP32 engines can be captured into CUDA graphs. The calling convention is
conv_tactics.ConvIgemm's (NHWC views, ``as_nhwc`` reformats, concat ``claim`` /
``written``), with channels padded to 4. The fully-connected ones are fc_tactics.FcTf32.
"""
import numpy as np

from kernels.gpu import conv_tf32

from ..types import DataType
from .base import Tactic, as_nhwc
from .concat import claim, written
from .conv_common import ANY_FLOAT, conv2d_reason, epilogue_state, residual_nhwc, window_geometry


def precision_reason(precision, precise):
    if precision != DataType.FLOAT:
        return f"{'3xTF32' if precise else 'TF32'} tensor-core tactics run FLOAT layers only"
    return None


class ConvTf32(Tactic):
    """Implicit-GEMM convolution on FP32 NHWC data, one tile shape; the tile's
    precision (3xTF32 for ``3xtf32_*`` tiles, plain TF32 for ``tf32_*``)."""
    tf32 = False          # True on the plain-TF32 instances (builder: only with the TF32 flag)
    writes_into_concat = True

    def __init__(self, tile):
        self.tile, self.precise = tile, tile.precise
        if not self.precise:
            self.tf32 = True
        self.name = f"conv.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = precision_reason(precision, self.precise)
        if reason is None and layer.num_groups != 1:
            reason = "grouped convolution"
        return reason or conv2d_reason(layer, in_shapes)

    def prepare(self, layer):
        c = layer._inputs[0].shape[1]
        w = layer.weights(c) if c > 0 else layer.kernel
        return {"w": conv_tf32.pack_weight_krsc_f32(w, "KCRS", c_pad_to=conv_tf32.C_ALIGN),
                **epilogue_state(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        x = inputs[0]
        (p, q), pre = window_geometry(layer, x.shape)
        k = layer.num_output_maps
        place = claim(into, (x.shape[0], p, q, k), ANY_FLOAT)
        out_dtype = place["out"].dtype if place else out_dtypes[0].to_numpy()
        y = conv_tf32.conv2d_tf32(
            as_nhwc(x, np.float32, conv_tf32.C_ALIGN), state["w"], precise=self.precise,
            stride=layer.stride_nd, padding=pre, dilation=layer.dilation_nd, out_hw=(p, q),
            bias=state["bias"], scale=state["scale"], residual=residual_nhwc(inputs, out_dtype),
            act=state["act"], alpha=state["alpha"], beta=state["beta"], out_dtype=out_dtype,
            tactic=self.tile, **place)
        return [written(y, place, k)]


# Every tile, 3xTF32 ones first, each in its precision.
TACTICS = tuple(ConvTf32(t) for t in conv_tf32.TACTICS)
