"""FP32 convolution and fully-connected tactics on tensor cores (kernels.gpu.conv_tf32).

Two precisions per tile:

- 3xTF32 (``precise=True``): error-compensated TF32, FP32-accurate (the
  builder may offer it for any FLOAT layer);
- plain TF32 (``precise=False``): ~1e-3 relative error per product, the speed
  TensorRT's TF32 builder flag trades for. These carry ``tf32 = True`` so the
  builder can drop them unless that flag is set.

Both replace im2col + cuBLAS SGEMM + a separate epilogue kernel with one launch
(fused scale/bias/residual/activation, concat-buffer writes) and no cuBLAS, so
FP32 engines can be captured into CUDA graphs.

The calling convention follows conv_tactics.ConvIgemm / FcIgemm (NHWC views,
``as_nhwc`` reformats, concat ``claim`` / ``written``), with channels padded to 4.
"""
import numpy as np

from kernels.gpu.conv_tf32 import C_ALIGN      # NumPy-only at import: safe without a GPU

from ..kernel_table import TACTICS as REGISTERED
from ..types import DataType, LayerType
from .concat import claim, written
from .tactics import Tactic, as_nhwc, nchw_view, register

# conv_tactics' helpers are imported at the bottom: conv_tactics ends by importing
# register_all from here, so when this module is imported first, register_all must
# exist before conv_tactics runs (else "cannot import name 'register_all' from
# partially initialized module").


def _precision_reason(precision, precise):
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
        reason = _precision_reason(precision, self.precise)
        if reason is None and layer.num_groups != 1:
            reason = "grouped convolution"
        return reason or _conv2d_reason(layer, in_shapes)

    def prepare(self, layer):
        from kernels.gpu.conv_tf32 import pack_weight_krsc_f32
        c = layer._inputs[0].shape[1]
        w = layer.weights(c) if c > 0 else layer.kernel
        return {"w": pack_weight_krsc_f32(w, "KCRS", c_pad_to=C_ALIGN), **_epilogue(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        from kernels.gpu.conv_tf32 import conv2d_tf32
        x = inputs[0]
        (p, q), pre = _geometry(layer, x.shape)
        k = layer.num_output_maps
        place = claim(into, (x.shape[0], p, q, k), _ANY_FLOAT)
        out_dtype = place["out"].dtype if place else out_dtypes[0].to_numpy()
        y = conv2d_tf32(
            as_nhwc(x, np.float32, C_ALIGN), state["w"], precise=self.precise,
            stride=layer.stride_nd, padding=pre, dilation=layer.dilation_nd, out_hw=(p, q),
            bias=state["bias"], scale=state["scale"], residual=_residual(inputs, out_dtype),
            act=state["act"], alpha=state["alpha"], beta=state["beta"], out_dtype=out_dtype,
            tactic=self.tile, **place)
        return [written(y, place, k)]


class FcTf32(Tactic):
    """Fully connected as the convolution whose window is the whole input (as
    conv_tactics.FcIgemm), FP32 on tensor cores: graph-safe, unlike cuBLAS."""
    tf32 = False

    def __init__(self, tile):
        self.tile, self.precise = tile, tile.precise
        if not self.precise:
            self.tf32 = True
        self.name = f"fc.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        reason = _precision_reason(precision, self.precise)
        if reason is None and len(in_shapes[0]) not in (2, 4):
            reason = "FC on (N, C) or (N, C, H, W) inputs only"
        return reason

    def prepare(self, layer):
        from kernels.gpu.conv_tf32 import pack_weight_krsc_f32
        shape = layer._inputs[0].shape
        c, h, w = shape[1:] if len(shape) == 4 else (shape[1], 1, 1)
        k = layer.num_output_channels
        wt = layer.kernel.reshape(k, c, h, w)
        return {"w": pack_weight_krsc_f32(wt, "KCRS", c_pad_to=C_ALIGN), **_epilogue(layer)}

    def run(self, state, layer, inputs, precision, out_dtypes):
        from kernels.gpu.conv_tf32 import conv2d_tf32
        rank = inputs[0].ndim
        x, inputs = _fc_as_4d(inputs)
        out_dtype = out_dtypes[0].to_numpy()
        y = conv2d_tf32(
            as_nhwc(x, np.float32, C_ALIGN), state["w"], precise=self.precise, out_hw=(1, 1),
            bias=state["bias"], scale=state["scale"], residual=_residual(inputs, out_dtype),
            act=state["act"], alpha=state["alpha"], beta=state["beta"], out_dtype=out_dtype,
            tactic=self.tile)
        return [_fc_out(nchw_view(y), rank)]


def all_tactics():
    """{layer type: [tactics]}: every tile, 3xTF32 ones first, each in its precision."""
    from kernels.gpu.conv_tf32 import FC_TACTICS, TACTICS
    return {LayerType.CONVOLUTION: [ConvTf32(t) for t in TACTICS],
            LayerType.FULLY_CONNECTED: [FcTf32(t) for t in FC_TACTICS]}


def register_all():
    """Register the FP32 tensor-core tactics with engine.gpu.tactics (once: a
    second call adds nothing). The plain-TF32 ones have ``tf32 = True``: the
    builder is expected to drop them unless the TF32 flag is set."""
    for layer_type, tactics in all_tactics().items():
        have = {t.name for t in REGISTERED.get(layer_type, ())}
        new = [t for t in tactics if t.name not in have]
        if new:
            register(layer_type, *new)


from .conv_tactics import (_ANY_FLOAT, _conv2d_reason, _epilogue, _fc_as_4d,  # noqa: E402
                           _fc_out, _geometry, _residual)
