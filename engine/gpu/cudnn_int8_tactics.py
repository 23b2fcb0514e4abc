"""cuDNN INT8 convolution graphs as a tactic (kernels/gpu/cudnn_int8.py): ``conv.cudnn_i8``
runs an INT8 layer's convolution and requantising epilogue as one cuDNN graph, timed by
the builder beside our own INT8 kernels (engine/gpu/conv_int8_tactics.py) and kept only
where it is faster.

It takes ConvInt8's state (int8 KRSC weight codes with per-channel s_w, s_in, s_res,
s_out, bias, activation) and its quantised input (int8 NHWC codes), so the graph sees the
same codes and scales our kernels do; the INT8 codes it writes match them except for
rare ties of float rounding (kernels/gpu/cudnn_int8.py). Declined: other precisions,
grouped convolutions, C or K not multiples of 16, activations cuDNN does not fuse, and,
as the FP16 cuDNN tactics, CUPYRT_CUDNN=0 or no usable frontend.

Cold-build time: the first INT8 layer this tactic is asked about queues the INT8 graphs
of every convolution of the network it expects to run in INT8 (``prefetch_int8_network``)
on the plan workers. Which layers the builder made INT8 and how it stores their tensors
is the builder's (plan metadata this tactic does not see): the prefetch redoes the INT8
stage's choice from the layers' dynamic ranges and assumes the FP16 flag beside INT8 (as
TensorRT users and our benchmarks set it), which decides how an INT8 layer's float output
is stored. A guess that misses queues a plan nobody uses; the layer's real graph then
builds on its first run, within the build budget.
"""
import logging

import numpy as np

from kernels.gpu import conv_int8, cudnn_int8

from ..execution import EngineSchedule
from ..int8_exec import can_run_int8, keep_movement_between_int8
from ..types import DataType, LayerType
from .base import Tactic, as_nhwc, cupy, nchw_view
from .conv_common import float_kind, int8_out_dtype
from .conv_int8_tactics import ConvInt8
from .cudnn_tactics import _runtime_reason, _window, plan_options, queue_network_once

log = logging.getLogger(__name__)

_STORED = {DataType.INT8: "int8", DataType.HALF: "float16", DataType.FLOAT: "float32"}


def int8_conv_spec(layer, in_shape, out_dtype, residual=None):
    """The kernels-level description of INT8 convolution ``layer`` at input ``in_shape``
    (n, c, h, w), writing ``out_dtype``; ``residual``: the residual's dtype name or None."""
    n, c, h, w = in_shape
    _, pre, post = _window(layer, tuple(in_shape))
    act = layer.post_activation
    alpha, beta = layer.post_params() if act is not None else (0.0, 0.0)
    r, s = layer.kernel_size_nd
    return cudnn_int8.Int8ConvSpec(
        n=n, c=c, h=h, w=w, k=layer.num_output_maps, r=r, s=s, stride=tuple(layer.stride_nd),
        pre_padding=pre, post_padding=post, dilation=tuple(layer.dilation_nd),
        out_dtype=np.dtype(out_dtype).name, act=None if act is None else act.name,
        alpha=float(alpha), beta=float(beta), residual=None if residual is None else np.dtype(residual).name)


def static_reason(layer, in_shapes, in_dtypes=()):
    """Why no cuDNN INT8 graph can run ``layer`` at these input shapes (None: one can)."""
    if layer.layer_type != LayerType.CONVOLUTION:
        return "convolutions only"
    if len(in_shapes[0]) != 4 or len(layer.kernel_size_nd) != 2:
        return "only 2-D convolutions (rank-4 inputs)"
    if layer.num_groups != 1:
        return "grouped convolution"
    res = in_dtypes[1] if len(in_dtypes) > 1 else None
    spec = int8_conv_spec(layer, tuple(in_shapes[0]), np.int8, res)
    reason = spec.reason()
    if reason and "multiples of 16" in reason:
        # an RGB stem is ours: padded to C=4 its best cuDNN INT8 plan took 10.8 ms at b256
        # on an H200, our small-C kernel well under 1 ms
        return f"{reason}; the stem stays on our small-C kernel"
    return reason


class ConvCudnnInt8(Tactic):
    """An INT8 convolution + bias + residual + activation + requantisation as one cuDNN
    graph (int8 NHWC in, int32 accumulate, the epilogue in float32), plans timed inside."""
    name = "conv.cudnn_i8"
    int8 = True
    switch = "cudnn_int8"          # on by default: GPU tests and an A/B against FP32 (RESULTS.md, session 10)
    # ConvInt8's state and quantised input, so both see the same codes and scales; its
    # ``launch`` is not taken over: this tactic launches no kernel family of ours
    pack_weights = staticmethod(conv_int8.pack_weight_int8_krsc)
    quantized_input = ConvInt8.quantized_input

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.INT8:
            return "INT8 tactic (the cuDNN INT8 graphs run INT8 layers)"
        return static_reason(layer, in_shapes, in_dtypes) or \
            _runtime_reason(layer, in_shapes[0][0], prefetch=prefetch_int8_network)

    def prepare(self, layer):
        state = ConvInt8.prepare(self, layer)
        state["vectors"] = cudnn_int8.epilogue_vectors(state["s_in"], state["s_w"], state["bias"],
                                                       state["s_res"], state["s_out"], xp=cupy())
        return state

    def run(self, state, layer, inputs, precision, out_dtypes):
        x = inputs[0]
        xq = self.quantized_input(state, x)        # C is a multiple of 16: no padding
        r = inputs[1] if len(inputs) > 1 else None
        if r is not None:
            r = as_nhwc(r, np.int8 if r.dtype == np.int8 else float_kind(r), 1)
        spec = int8_conv_spec(layer, tuple(x.shape), int8_out_dtype(out_dtypes[0]),
                              None if r is None else r.dtype)
        opts = plan_options()
        opts.pop("workers")
        y = cudnn_int8.conv2d_int8_graph(xq, state["w"], state["vectors"], spec, residual=r, **opts)
        return [nchw_view(y)]


# -- which graphs an INT8 build will ask for ------------------------------------------------

def expected_int8_layers(net):
    """The layers the builder's INT8 stage (engine/quantization.py, assign_int8) makes INT8,
    redone from the network as it stands after that stage (dynamic ranges set, pooling
    outputs' ranges propagated): those that can run INT8, data-movement layers only where
    every consumer does too. Precision constraints are not seen here."""
    return keep_movement_between_int8(net, {layer.name for layer in net._layers if can_run_int8(layer)})


def int8_specs(net, batch, fp16=True):
    """The INT8 graph specs of ``net``'s convolutions at batch ``batch`` as this tactic
    would run them in an INT8 build (``fp16``: with the FP16 flag too), storage types
    from the engine's own rules (execution.EngineSchedule); layers it declines, or with a
    dynamic dimension besides the batch, are left out."""
    int8 = expected_int8_layers(net)
    flt = "HALF" if fp16 else "FLOAT"
    meta = {"precisions": {la.name: "INT8" if la.name in int8 else flt for la in net._layers},
            "flags": ["INT8"] + (["FP16"] if fp16 else [])}
    stored = {id(t): t.dtype for t in net._inputs}
    specs = []
    for layer, precision, out_types in EngineSchedule(net, meta, backend=None).schedule():
        for t, d in zip(layer._outputs, out_types):
            stored[id(t)] = d
        if precision != DataType.INT8 or layer.layer_type != LayerType.CONVOLUTION:
            continue
        shape = tuple(layer._inputs[0].shape or ())
        if len(shape) != 4 or shape[0] not in (-1, batch) or min(shape[1:]) < 1:
            continue
        shape = (batch,) + shape[1:]
        res_t = layer._inputs[1] if len(layer._inputs) > 1 else None
        res = None if res_t is None else _STORED.get(stored.get(id(res_t)))
        if res_t is not None and res is None:
            continue
        if static_reason(layer, [shape], [None, res]) is not None:
            continue
        specs.append(int8_conv_spec(layer, shape, int8_out_dtype(out_types[0]), res))
    return specs


def prefetch_int8_network(layer, batch, options=None, device_id=None, fp16=True):
    """Queue the INT8 graph plans of every convolution of ``layer``'s network that an INT8
    build would run through this tactic (``int8_specs``), once per network and batch;
    returns the number of plans queued."""
    net = layer._network
    return queue_network_once(net, batch, "int8", lambda: int8_specs(net, batch, fp16), options, device_id,
                              "cuDNN INT8")
