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
from .conv_common import NhwcConvTactic, conv2d_reason


def precision_reason(precision, precise):
    if precision != DataType.FLOAT:
        return f"{'3xTF32' if precise else 'TF32'} tensor-core tactics run FLOAT layers only"
    return None


class ConvTf32(NhwcConvTactic):
    """Implicit-GEMM convolution on FP32 NHWC data, one tile shape; the tile's
    precision (3xTF32 for ``3xtf32_*`` tiles, plain TF32 for ``tf32_*``)."""
    launch = staticmethod(conv_tf32.conv2d_tf32)
    pack = staticmethod(conv_tf32.pack_weight_krsc_f32)
    dtype = np.float32
    c_align = conv_tf32.C_ALIGN
    tf32 = False          # True on the plain-TF32 instances (builder: only with the TF32 flag)

    def __init__(self, tile):
        super().__init__(tile)
        self.precise = tile.precise
        if not self.precise:
            self.tf32 = True

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = precision_reason(precision, self.precise)
        if reason is None and layer.num_groups != 1:
            reason = "grouped convolution"
        return reason or conv2d_reason(layer, in_shapes)

    def options(self, state):
        return {"precise": self.precise}


# Every tile, 3xTF32 ones first, each in its precision.
TACTICS = tuple(ConvTf32(t) for t in conv_tf32.TACTICS)
