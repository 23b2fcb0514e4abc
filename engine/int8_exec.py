"""INT8 execution: which layers can run INT8, how INT8 tensors are stored between
layers, and the exact INT8 arithmetic of one layer (array-module generic through
kernels.quantize, so the NumPy backend runs it on the host and the GPU's INT8
emulation tactic on CuPy arrays). Which layers *do* run INT8 is the builder's
choice (engine/quantization.py); this module is what both sides of it execute.

Storage contract (``int8_tensors``): a FLOAT tensor is stored as int8 codes q
with its scale s = float32(max(|lo|, |hi|)) / 127 (kernels/quantize.py) iff
its producer runs INT8, every consumer runs INT8, it is not a network output
and its producer did not ``set_output_type`` it to another type. Any other
tensor is float. So: an INT8 layer takes float or int8 inputs (quantizing the
float ones at the input tensor's scale) and writes int8 or float outputs as
``out_dtypes`` say; non-INT8 layers never see int8 codes.
"""
import numpy as np

from kernels import quantize as Q

from .kernel_table import numpy_kernel
from .types import DataType, LayerType, PoolingType

COMPUTE = (LayerType.CONVOLUTION, LayerType.FULLY_CONNECTED, LayerType.POOLING)
TRANSPARENT = (LayerType.SHUFFLE, LayerType.FLATTEN, LayerType.SQUEEZE, LayerType.UNSQUEEZE,
               LayerType.IDENTITY)


def tensor_scale(t):
    lo, hi = t.dynamic_range
    return Q.scale_from_amax(max(abs(lo), abs(hi)))


def _float(t):
    return t is not None and t.dtype == DataType.FLOAT


def _has_ranges(layer):
    ts = [t for t in list(layer._inputs) + list(layer._outputs) if t is not None]
    return all(t.dynamic_range is not None for t in ts)


def can_run_int8(layer):
    """True when the layer has an INT8 kernel and every range it needs."""
    lt = layer.layer_type
    if lt == LayerType.POOLING and layer.pooling_type != PoolingType.MAX:
        return False
    if lt in COMPUTE:
        return (_float(layer._inputs[0]) and all(_float(t) for t in layer._outputs)
                and all(t is None or _float(t) for t in layer._inputs) and _has_ranges(layer))
    if lt in TRANSPARENT:
        return (len(layer._inputs) == 1 and _float(layer._inputs[0])
                and all(_float(t) for t in layer._outputs)
                and layer._inputs[0].dynamic_range is not None)
    return False


def consumers(network):
    """{id(tensor): [layers reading it]} of ``network``."""
    out = {}
    for layer in network._layers:
        for t in layer._inputs:
            if t is not None:
                out.setdefault(id(t), []).append(layer)
    return out


def int8_tensors(network, precisions):
    """Names of the tensors stored as int8 codes (see the module docstring)."""
    users_of = consumers(network)
    out = set()
    for layer in network._layers:
        if precisions.get(layer.name) != DataType.INT8 or not can_run_int8(layer):
            continue
        for t in layer._outputs:
            users = users_of.get(id(t), [])
            set_type = layer.output_type_is_set(t.index) and \
                layer.get_output_type(t.index) != DataType.INT8
            if (t.dtype == DataType.FLOAT and not t.is_network_output and users and not set_type
                    and all(precisions.get(u.name) == DataType.INT8 and can_run_int8(u)
                            for u in users)):
                out.add(t.name)
    return out


def _weights(layer):
    """Per-channel int8 weights of a conv/FC layer, made once per layer object."""
    cached = getattr(layer, "_int8_weights", None)
    if cached is None or cached[0] is not layer.kernel:
        if layer.layer_type == LayerType.CONVOLUTION:
            w = layer.weights(layer._inputs[0].shape[1])
        else:
            w = layer.kernel.reshape(layer.num_output_channels, -1)
        q, s = Q.quantize_weights(w)
        cached = (layer.kernel, q, s)
        layer._int8_weights = cached
    return cached[1], cached[2]


def _codes(x, t):
    """The int8 codes of input tensor ``t`` (quantized here if it arrived as float)."""
    return x if x.dtype == np.int8 else Q.quantize(x, tensor_scale(t))


def run_int8_layer(layer, inputs, out_dtypes):
    """One INT8 layer: ``inputs`` are int8 codes or floats (per the storage
    contract), outputs int8 codes where ``out_dtypes`` says INT8, else float32."""
    lt = layer.layer_type
    t_in, t_out = layer._inputs[0], layer._outputs[0]
    s_out = tensor_scale(t_out) if out_dtypes[0] == DataType.INT8 else None
    xq = _codes(inputs[0], t_in)
    if lt in TRANSPARENT:
        y = numpy_kernel(layer)(layer, [xq])[0]
        return [y if s_out is not None else Q.dequantize(y, tensor_scale(t_out))]
    if lt == LayerType.POOLING:
        y = numpy_kernel(layer)(layer, [xq.astype(np.float32)])[0]      # max of exact integers
        y = Q.dequantize(y.astype(np.int8), tensor_scale(t_in))
        return [y if s_out is None else Q.quantize(y, s_out)]
    wq, sw = _weights(layer)
    s_in = tensor_scale(t_in)
    res = inputs[1] if len(inputs) > 1 else None
    if res is not None and res.dtype == np.int8:
        res = (res, tensor_scale(layer._inputs[1]))
    act = None if layer.post_activation is None else layer.post_activation.name
    alpha, beta = layer.post_params()
    if lt == LayerType.CONVOLUTION:
        out, pre, _ = layer.geometry(xq.shape)
        acc = Q.conv_int8(xq, wq, layer.stride_nd, pre, out, layer.dilation_nd, layer.num_groups)
        return [Q.epilogue_int8(acc, s_in, sw, layer.bias, res, act, alpha, beta, s_out)]
    lead = xq.shape[:1] if xq.ndim == 2 else xq.shape[:-3]
    k = layer.num_output_channels
    shape = (*lead, k) if xq.ndim == 2 else (*lead, k, 1, 1)
    acc = Q.gemm_int8(xq.reshape(int(np.prod(lead)), -1), wq)
    if res is not None:
        if isinstance(res, tuple):
            res = (np.broadcast_to(res[0], shape).reshape(-1, k), res[1])
        else:
            res = np.broadcast_to(res, shape).reshape(-1, k)
    y = Q.epilogue_int8(acc, s_in, sw, layer.bias, res, act, alpha, beta, s_out)
    return [y.reshape(shape)]


def keep_movement_between_int8(network, chosen):
    """Drop from ``chosen`` (layer names, in place) the data-movement layers not feeding
    INT8 layers only: one stays INT8 only if all its consumers do and its output is not a
    network output (reverse order, so chains of them resolve). Returns ``chosen``."""
    users_of = consumers(network)
    for layer in reversed(network._layers):
        if layer.name in chosen and layer.layer_type in TRANSPARENT:
            t = layer._outputs[0]
            users = users_of.get(id(t), [])
            if t.is_network_output or not users or any(u.name not in chosen for u in users):
                chosen.discard(layer.name)
    return chosen
