"""What the convolution, fully-connected and pooling tactics share: the fused epilogue's
state, a window layer's output geometry, the residual as NHWC, the FC-as-convolution
views, and the precision / dtype rules of the NHWC kernels. Each tactic family imports
these; none of the families imports another."""
import numpy as np

from kernels.gpu import conv_wgmma

from ..types import DataType
from .base import Tactic, as_nhwc
from .concat import claim, written
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


def conv_output(layer, x, into, out_dtypes):
    """Where a convolution of ``x`` (logical NCHW) writes: ((P, Q), leading padding, K,
    the concat slot ``claim`` gave it (keyword arguments of the launcher; empty: a buffer
    of its own), and the dtype it writes: the slot's, else the layer's storage type)."""
    (p, q), pre = window_geometry(layer, x.shape)
    k = layer.num_output_maps
    place = claim(into, (x.shape[0], p, q, k), ANY_FLOAT)
    return (p, q), pre, k, place, place["out"].dtype if place else out_dtypes[0].to_numpy()


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


class NhwcConvTactic(Tactic):
    """The calling convention of the implicit-GEMM convolution kernels (conv_igemm,
    conv_wgmma, conv_tf32): NHWC input of ``dtype`` with channels padded to ``c_align``,
    KRSC weights packed by ``pack``, the fused epilogue, and concat-buffer writes. A
    subclass names its kernel (``launch``), its tile and ``supports``; ``options`` adds
    the kernel's own keyword arguments."""
    writes_into_concat = True
    dtype = np.float16
    c_align = 8
    pack = None           # staticmethod(pack(weights, "KCRS", c_pad_to=...)) of the kernel

    def __init__(self, tile):
        self.tile = tile
        self.name = f"conv.{tile.name}"

    def prepare(self, layer):
        c = layer._inputs[0].shape[1]
        w = layer.weights(c) if c > 0 else layer.kernel
        return {"w": self.pack(w, "KCRS", c_pad_to=self.c_align), **epilogue_state(layer)}

    def options(self, state):
        """Keyword arguments of this kernel beyond the shared calling convention."""
        return {}

    def run(self, state, layer, inputs, precision, out_dtypes, into=None):
        x = inputs[0]
        (p, q), pre, k, place, out_dtype = conv_output(layer, x, into, out_dtypes)
        y = self.launch(
            as_nhwc(x, self.dtype, self.c_align), state["w"], stride=layer.stride_nd, padding=pre,
            dilation=layer.dilation_nd, out_hw=(p, q), bias=state["bias"], scale=state["scale"],
            residual=residual_nhwc(inputs, out_dtype), act=state["act"], alpha=state["alpha"],
            beta=state["beta"], out_dtype=out_dtype, tactic=self.tile, **self.options(state), **place)
        return [written(y, place, k)]
