"""What the convolution, fully-connected and pooling tactics share: the fused epilogue's
state, a window layer's output geometry, the residual as NHWC, the FC-as-convolution
views, and the precision / dtype rules of the NHWC kernels. Each tactic family imports
these; none of the families imports another."""
import numpy as np

from kernels.gpu import conv_wgmma

from ..types import DataType
from .base import as_nhwc
from .device import cupy

# concat elision (engine/gpu/concat.py): an epilogue that casts to either float type
# writes the concat buffer's dtype directly
ANY_FLOAT = (np.float16, np.float32)


def is_half(precision):
    return precision == DataType.HALF


def compute_dtype(precision):
    """The storage the float NHWC kernels compute in: float16 for HALF layers, else float32."""
    return np.float16 if is_half(precision) else np.float32


def epilogue_state(layer, k=None):
    """Epilogue state, vectors on the device once (not re-made per call)."""
    cp = cupy()
    act = layer.post_activation
    alpha, beta = layer.post_params() if act is not None else (0.0, 0.0)
    k = k or (layer.num_output_maps if hasattr(layer, "num_output_maps") else layer.num_output_channels)
    bias = cp.zeros(k, cp.float32) if layer.bias is None else cp.asarray(layer.bias, cp.float32)
    return {"act": None if act is None else act.name, "alpha": alpha, "beta": beta,
            "bias": bias, "scale": cp.ones(k, cp.float32)}


def conv2d_reason(layer, in_shapes):
    if len(in_shapes[0]) != 4:
        return "only 2-D convolutions (rank-4 inputs)"
    return None


def window_geometry(layer, shape):
    """(output spatial size, leading padding) of a window layer at an input shape,
    memoised on the layer: the shape rule is Python arithmetic, too slow for
    every call (engine layers are not modified after the build)."""
    memo = layer.__dict__.setdefault("_geometry_memo", {})
    hit = memo.get(shape)
    if hit is None:
        out, pre, _ = layer.geometry(shape)
        hit = memo[shape] = (tuple(out), tuple(pre))
    return hit


def residual_nhwc(inputs, dtype):
    r = inputs[1] if len(inputs) > 1 else None
    return None if r is None else as_nhwc(r, dtype)


def wgmma_reason():
    return None if conv_wgmma.available() else "wgmma needs compute capability 9.0 (sm_90a)"


def fc_as_4d(inputs):
    """(N, C) FC operands as (N, C, 1, 1): the same bytes, a convolution's view."""
    x = inputs[0]
    if x.ndim == 4:
        return x, inputs
    as4 = [None if t is None else t.reshape(t.shape + (1, 1)) for t in inputs]
    return as4[0], as4


def fc_output(y_nchw, rank):
    """Back to the layer's output rank: (N, K, 1, 1) or (N, K)."""
    return y_nchw if rank == 4 else y_nchw.reshape(y_nchw.shape[:2])


def float_kind(x):
    """Half stays half (the INT8 kernels read either float type): no cast pass."""
    return np.float16 if x.dtype == np.float16 else np.float32


def int8_out_dtype(storage):
    """The INT8 epilogue writes the stored type itself: codes, half or float32."""
    return {DataType.INT8: np.int8, DataType.HALF: np.float16}.get(storage, np.float32)
