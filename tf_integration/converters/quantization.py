"""Explicit quantization: TF's fake-quantization ops become INT8 ranges.

A quantization-aware graph marks the tensors it quantizes with Q/DQ nodes:

    conv --> FakeQuantWithMinMaxVars(min=-a, max=b) --> next conv
                        |
                        v   converted as
    conv --> (same tensor, dynamic range (-a, b)) --> next conv

The node itself is passed through (an identity); its constant range goes onto
the tensor (``tensor.set_dynamic_range``), so an INT8 engine quantizes there
with exactly the training-time range and needs no calibration. TensorRT
quantizes symmetrically: the engine's scale is max(|lo|, |hi|) / 127. In FP32
or FP16 engines the ranges are unused, so those engines skip the rounding and
the clipping to [min, max] that TF applies (as TF-TRT's FP32/FP16 engines do).
"""
import numpy as np

from ..graph_utils import get_attr
from ..registry import Reason, converter

QDQ_OPS = ("QuantizeAndDequantizeV2", "QuantizeAndDequantizeV3", "QuantizeAndDequantizeV4",
           "FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxArgs")


def _const_range(node, graph):
    """(lo, hi) of a Q/DQ node as Python floats, or a Reason it has none."""
    if node.op == "FakeQuantWithMinMaxArgs":
        return float(get_attr(node, "min", -6.0)), float(get_attr(node, "max", 6.0))
    data = [i for i in node.input if not i.startswith("^")]
    vals = []
    for i, what in ((1, "min"), (2, "max")):
        if not graph.is_const(data[i]):
            return Reason(Reason.ATTRIBUTE, f"{what} (input {i}) is computed; a constant "
                                            "range is needed")
        v = np.asarray(graph.const_value(data[i]))
        if v.size != 1:
            return Reason(Reason.ATTRIBUTE, f"{what} has shape {v.shape}: per-channel "
                                            "quantization is not supported; expected a scalar")
        vals.append(float(v.reshape(())))
    return vals[0], vals[1]


def _num_bits(node, graph):
    if node.op == "QuantizeAndDequantizeV3":
        src = [i for i in node.input if not i.startswith("^")][3]
        if not graph.is_const(src):
            return None
        return int(np.asarray(graph.const_value(src)).reshape(()))
    return get_attr(node, "num_bits", 8)


def _validate_qdq(node, graph):
    """8 bits, per-tensor constant range with min < max (QuantizeAndDequantize: range_given)"""
    if node.op.startswith("QuantizeAndDequantize"):
        if not get_attr(node, "range_given", False):
            return Reason(Reason.ATTRIBUTE, "range_given=False: TF takes the range from the "
                                            "data at run time; expected range_given=True")
        if get_attr(node, "axis", -1) != -1:
            return Reason(Reason.ATTRIBUTE, f"axis={get_attr(node, 'axis')}: per-channel "
                                            "quantization is not supported; expected -1")
    bits = _num_bits(node, graph)
    if bits != 8:
        return Reason(Reason.ATTRIBUTE, f"num_bits={bits}; only 8-bit quantization maps to INT8")
    rng = _const_range(node, graph)
    if isinstance(rng, Reason):
        return rng
    if not rng[0] < rng[1]:
        return Reason(Reason.ATTRIBUTE, f"range min {rng[0]} >= max {rng[1]}; expected min < max")
    return None


@converter(*QDQ_OPS, validator=_validate_qdq)
def convert_quantize_dequantize(ctx, node):
    x = ctx.input(node, 0)
    if x.is_const:             # a quantized weight TF did not fold: the value is what counts
        return [x]
    x.tensor.set_dynamic_range(*_const_range(node, ctx.graph))     # the validator checked it
    return [x]
