"""The seed's "model from an unsupported framework" workflow: rebuild a PyTorch
module through cupyrt's network API, weights and all.

``torch.fx`` traces the module into a flat graph of calls; each call maps to one
or two engine layers through a small table (one function per op, torch2trt
style). Only what CNNs such as torchvision's ResNet and MobileNet use is
covered; anything else raises with the op named.
"""
import operator

import numpy as np

import engine as rt
from engine.errors import NetworkDefinitionError


class UnsupportedTorchOp(rt.CupyrtError, ValueError):
    pass


def _np(t):
    return t.detach().cpu().float().numpy().copy()


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _conv(net, m, x):
    if m.padding_mode != "zeros":
        raise UnsupportedTorchOp(f"Conv2d padding_mode {m.padding_mode!r}; supported: 'zeros'")
    layer = net.add_convolution_nd(x, m.out_channels, m.kernel_size, kernel=_np(m.weight),
                                   bias=None if m.bias is None else _np(m.bias))
    layer.stride_nd, layer.dilation_nd, layer.num_groups = _pair(m.stride), _pair(m.dilation), m.groups
    if isinstance(m.padding, str):
        layer.padding_mode = rt.PaddingMode.SAME_UPPER if m.padding == "same" else \
            rt.PaddingMode.EXPLICIT_ROUND_DOWN
    else:
        layer.padding_nd = _pair(m.padding)
    return layer.get_output(0)


def _bn(net, m, x):
    s = _np(m.weight) / np.sqrt(_np(m.running_var) + m.eps)
    shift = _np(m.bias) - _np(m.running_mean) * s
    return net.add_scale(x, rt.ScaleMode.CHANNEL, shift.astype(np.float32), s.astype(np.float32),
                         None).get_output(0)


def _act(kind, alpha=None, beta=None):
    def make(net, m, x):
        layer = net.add_activation(x, kind)
        if alpha is not None:
            layer.alpha, layer.beta = alpha, beta
        return layer.get_output(0)
    return make


def _hardtanh(net, m, x):
    layer = net.add_activation(x, rt.ActivationType.CLIP)
    layer.alpha, layer.beta = float(m.min_val), float(m.max_val)
    return layer.get_output(0)


def _pool(kind):
    def make(net, m, x):
        if getattr(m, "ceil_mode", False) or _pair(getattr(m, "dilation", 1)) != (1, 1):
            raise UnsupportedTorchOp("pooling with ceil_mode or dilation")
        layer = net.add_pooling_nd(x, kind, _pair(m.kernel_size))
        layer.stride_nd = _pair(m.stride if m.stride is not None else m.kernel_size)
        layer.padding_nd = _pair(m.padding)
        if kind == rt.PoolingType.AVERAGE:
            layer.average_count_excludes_padding = not m.count_include_pad
        return layer.get_output(0)
    return make


def _adaptive_avg(net, m, x):
    if _pair(m.output_size) != (1, 1):
        raise UnsupportedTorchOp(f"AdaptiveAvgPool2d output_size {m.output_size}; supported: 1")
    return net.add_reduce(x, rt.ReduceOperation.AVG, 0b1100, True).get_output(0)


def _adaptive_avg_fn(net, x, output_size):
    return _adaptive_avg(net, type("AdaptiveAvgPool2d", (), {"output_size": output_size}), x)


def _linear(net, m, x):
    return net.add_fully_connected(x, m.out_features, _np(m.weight),
                                   None if m.bias is None else _np(m.bias)).get_output(0)


def _identity(net, m, x):
    return x


MODULES = {
    "Conv2d": _conv, "BatchNorm2d": _bn, "ReLU": _act(rt.ActivationType.RELU),
    "ReLU6": _act(rt.ActivationType.CLIP, 0.0, 6.0), "Hardtanh": _hardtanh,
    "Sigmoid": _act(rt.ActivationType.SIGMOID), "Tanh": _act(rt.ActivationType.TANH),
    "GELU": _act(rt.ActivationType.GELU_ERF), "MaxPool2d": _pool(rt.PoolingType.MAX),
    "AvgPool2d": _pool(rt.PoolingType.AVERAGE), "AdaptiveAvgPool2d": _adaptive_avg,
    "Linear": _linear, "Dropout": _identity, "Identity": _identity,
}


def _flatten(net, x, start_dim=1, end_dim=-1):
    if end_dim != -1:
        raise UnsupportedTorchOp("flatten with end_dim != -1")
    s = net.add_shuffle(x)
    s.reshape_dims = tuple([0] * start_dim + [-1])
    return s.get_output(0)


def _add(net, a, b):
    return net.add_elementwise(a, b, rt.ElementWiseOperation.SUM).get_output(0)


def _cat(net, tensors, dim=0):
    layer = net.add_concatenation(list(tensors))
    layer.axis = dim
    return layer.get_output(0)


def import_module(module, input_shape, name="input", network=None, builder=None):
    """Trace ``module`` and rebuild it. Returns (builder, network) with the
    module's output marked as "output"."""
    # optional dependency: PyTorch
    import torch
    import torch.fx

    builder = builder or rt.Builder()
    net = network or builder.create_network()
    gm = torch.fx.symbolic_trace(module.eval())
    mods = dict(gm.named_modules())
    functions = {torch.flatten: _flatten, operator.add: _add, torch.add: _add, torch.cat: _cat,
                 torch.nn.functional.adaptive_avg_pool2d: _adaptive_avg_fn,
                 torch.nn.functional.relu: lambda n, x, inplace=False: _act(rt.ActivationType.RELU)(n, None, x)}
    env = {}

    def val(a):
        if isinstance(a, torch.fx.Node):
            return env[a.name]
        if isinstance(a, (tuple, list)):
            return type(a)(val(v) for v in a)
        return a

    out = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node.name] = net.add_input(name, rt.float32, input_shape)
        elif node.op == "call_module":
            m = mods[node.target]
            fn = MODULES.get(type(m).__name__)
            if fn is None:
                raise UnsupportedTorchOp(f"module {node.target} of type {type(m).__name__}; "
                                         f"supported: {', '.join(sorted(MODULES))}")
            env[node.name] = fn(net, m, val(node.args[0]))
        elif node.op == "call_function":
            fn = functions.get(node.target)
            if fn is None:
                raise UnsupportedTorchOp(f"function {getattr(node.target, '__name__', node.target)}")
            env[node.name] = fn(net, *val(node.args), **{k: val(v) for k, v in node.kwargs.items()})
        elif node.op == "call_method" and node.target in ("flatten", "view", "reshape"):
            args = val(node.args)
            env[node.name] = _flatten(net, args[0], *args[1:2]) if node.target == "flatten" else \
                _reshape(net, args[0], args[1:])
        elif node.op == "output":
            out = val(node.args[0])
        else:
            raise UnsupportedTorchOp(f"fx node {node.op} {node.target}")
    if not isinstance(out, rt.Tensor):
        raise UnsupportedTorchOp("modules with several outputs")
    out.name = "output"
    net.mark_output(out)
    return builder, net


def _reshape(net, x, dims):
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else tuple(dims)
    if any(not isinstance(d, int) for d in dims):
        raise UnsupportedTorchOp("reshape to data-dependent sizes")
    s = net.add_shuffle(x)
    try:
        s.reshape_dims = dims          # -1 infers one dim (the batch, when it is dynamic)
    except NetworkDefinitionError as e:
        raise UnsupportedTorchOp(f"reshape to {dims}: {e}") from e
    return s.get_output(0)
