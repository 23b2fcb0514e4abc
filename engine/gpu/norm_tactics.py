"""GPU tactic for INormalizationLayer as a layer norm: one fused kernel
(kernels/gpu/layernorm.py) instead of the generic tactic's chain of CuPy
reductions and elementwise kernels.

Takes the layer norm shape only: the axes mask is a trailing run of axes,
num_groups == 1, and scale/bias vary only along the normalised axes (what a
transformer's LayerNorm is). Instance and group norm keep the generic tactic.
"""
import numpy as np

from kernels.gpu import layernorm

from ..layers.base import axes_from_mask
from ..types import DataType
from .base import Tactic
from .matmul_tactics import constant_operand

_COMPUTE = {DataType.FLOAT: np.float32, DataType.HALF: np.float16}


def trailing_axes(layer, rank):
    """How many trailing axes the layer normalises, or None if its mask is not a
    trailing run (e.g. axes 1 and 3 of a rank-4 input)."""
    axes = sorted(axes_from_mask(layer, layer.axes, rank))
    k = len(axes)
    return k if axes == list(range(rank - k, rank)) else None


class LayerNormKernel(Tactic):
    name = "norm.layernorm_fused"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision not in _COMPUTE:
            return f"runs FLOAT or HALF layers, not {getattr(precision, 'name', precision)}"
        if any(d not in ("float16", "float32") for d in in_dtypes):
            return f"floating inputs only, not {in_dtypes}"
        if layer.num_groups != 1:
            return "group norm (num_groups > 1)"
        x = in_shapes[0]
        k = trailing_axes(layer, len(x))
        if k is None:
            return "the normalised axes are not the trailing ones"
        for arg, s in (("scale", in_shapes[1]), ("bias", in_shapes[2])):
            if any(d != 1 for d in s[:len(s) - k]):
                return f"{arg} of shape {s} varies outside the normalised axes"
        return None

    def prepare(self, layer):
        # constant scale/bias (NumPy) now; their row vectors per (normalised
        # shape, compute dtype) on the first run, before any graph capture
        return {"const": {i: constant_operand(layer, i) for i in (1, 2)}, "rows": {}}

    def _rows(self, state, inputs, norm_shape, dt):
        key = (norm_shape, np.dtype(dt).name)
        hit = state["rows"].get(key)
        if hit is not None:
            return hit
        vecs = []
        for i, what in ((1, "scale"), (2, "bias")):
            const = state["const"].get(i)
            v = inputs[i] if const is None else const
            # a HALF layer's reference sees every float input rounded to half
            vecs.append(layernorm.row_vector(v.astype(dt, copy=False), norm_shape, what))
        if all(state["const"].get(i) is not None for i in (1, 2)):
            state["rows"][key] = vecs
        return vecs

    def run(self, state, layer, inputs, precision, out_dtypes):
        x = inputs[0]
        k = trailing_axes(layer, x.ndim)
        norm_shape = tuple(x.shape[x.ndim - k:])
        dt = _COMPUTE[precision]
        scale, bias = self._rows(state, inputs, norm_shape, dt)
        return [layernorm.layernorm(x.astype(dt, copy=False), scale, bias, norm_ndim=k, eps=layer.epsilon,
                          out_dtype=out_dtypes[0].to_numpy())]


# The NORMALIZATION tactics.
TACTICS = (LayerNormKernel(),)
