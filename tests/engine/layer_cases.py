"""One small network per code path of the pointwise, shape, conv and spatial
layers, and a runner that executes a network the way the GPU backend does: each
layer's NumPy implementation called with arrays of another module ``xp`` and a
``device_clone`` of the layer.

Shared by tests/engine/test_xp_generic.py (a strict fake device module on the
CPU) and tests/gpu/test_layers_cupy.py (CuPy on a real device).
"""
import numpy as np

import engine as rt
from engine import kernel_table
from engine.testing import device_clone

A, E, U = rt.ActivationType, rt.ElementWiseOperation, rt.UnaryOperation
M = rt.SampleMode


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _one(net, rng, shape, add, dtype=rt.float32, values=None):
    """input -> add(net, tensor) -> output; returns the feeds."""
    x = net.add_input("x", dtype, shape)
    layer = add(net, x)
    net.mark_output(layer.get_output(0))
    return {"x": _rand(rng, *shape) if values is None else values}


# -- pointwise ------------------------------------------------------------------

def _activation(kind, alpha=None, beta=None):
    def build(net, rng):
        def add(net, x):
            layer = net.add_activation(x, kind)
            if alpha is not None:
                layer.alpha = alpha
            if beta is not None:
                layer.beta = beta
            return layer
        # GELU_ERF: a spread that reaches both erf series and the saturated tail
        scale = 4.0 if kind == A.GELU_ERF else 1.0
        return _one(net, rng, (2, 3, 5, 7), add, values=_rand(rng, 2, 3, 5, 7) * scale)
    return build


def _unary(op):
    def build(net, rng):
        x = _rand(rng, 2, 3, 4, 5)
        if op in (U.LOG, U.SQRT):
            x = np.abs(x) + 0.1
        elif op in (U.ASIN, U.ACOS, U.ATANH):
            x = np.tanh(x) * 0.9
        elif op == U.ACOSH:
            x = np.abs(x) + 1.1
        elif op == U.RECIP:
            x = np.where(np.abs(x) < 0.1, 0.5, x).astype(np.float32)
        elif op == U.ERF:
            x = x * 3.0     # both erf series
        if op == U.NOT:
            return _one(net, rng, x.shape, lambda n, t: n.add_unary(t, op), rt.bool, x > 0)
        return _one(net, rng, x.shape, lambda n, t: n.add_unary(t, op), values=x)
    return build


def _unary_int(op):
    def build(net, rng):
        x = rng.integers(-9, 9, (3, 4, 5)).astype(np.int32)
        return _one(net, rng, x.shape, lambda n, t: n.add_unary(t, op), rt.int32, x)
    return build


def _elementwise(op, dtype=rt.float32):
    def build(net, rng):
        if dtype == rt.int32:
            a = rng.integers(-20, 20, (2, 3, 4, 5)).astype(np.int32)
            b = rng.integers(1, 6, (2, 1, 4, 1)).astype(np.int32) * rng.choice([-1, 1], (2, 1, 4, 1))
            b = b.astype(np.int32)
        elif dtype == rt.bool:
            a = rng.standard_normal((2, 3, 4, 5)) > 0
            b = rng.standard_normal((2, 1, 4, 1)) > 0
        else:
            a = _rand(rng, 2, 3, 4, 5)
            b = _rand(rng, 2, 1, 4, 1)
            if op == E.POW:
                a = np.abs(a) + 0.5
        if op == E.POW and dtype == rt.int32:
            a = np.where(a == 0, 1, a).astype(np.int32)    # 0 ** -k is inf: no int32 value
        ta, tb = net.add_input("a", dtype, a.shape), net.add_input("b", dtype, b.shape)
        net.mark_output(net.add_elementwise(ta, tb, op).get_output(0))
        return {"a": a, "b": b}
    return build


def _scale(mode, axis=1, power=True):
    def build(net, rng):
        shape = (2, 3, 4, 5)
        count = {rt.ScaleMode.UNIFORM: 1, rt.ScaleMode.CHANNEL: shape[axis],
                 rt.ScaleMode.ELEMENTWISE: int(np.prod(shape[axis:]))}[mode]
        shift, scale = _rand(rng, count), _rand(rng, count)
        pw = (rng.integers(1, 3, count).astype(np.float32)) if power else None
        return _one(net, rng, shape, lambda n, t: n.add_scale_nd(t, mode, shift, scale, pw, axis))
    return build


def _cast(src, dst):
    def build(net, rng):
        if src == rt.float32:
            x = _rand(rng, 3, 4, 5) * 1e10          # saturates the integer range
            x[0, 0, 0] = np.nan
        elif src == rt.int32:
            x = rng.integers(-300, 300, (3, 4, 5)).astype(np.int32)
        else:
            x = rng.standard_normal((3, 4, 5)) > 0
        return _one(net, rng, x.shape, lambda n, t: n.add_cast(t, dst), src, x)
    return build


def _identity(net, rng):
    return _one(net, rng, (2, 3, 4), lambda n, t: n.add_identity(t))


def _select(net, rng):
    c = net.add_input("c", rt.bool, (2, 1, 4))
    a = net.add_input("a", rt.float32, (2, 3, 4))
    b = net.add_input("b", rt.float32, (1, 3, 4))
    net.mark_output(net.add_select(c, a, b).get_output(0))
    return {"c": rng.standard_normal((2, 1, 4)) > 0, "a": _rand(rng, 2, 3, 4), "b": _rand(rng, 1, 3, 4)}


# -- shape ----------------------------------------------------------------------

def _shuffle(first, dims, second):
    def build(net, rng):
        def add(n, t):
            layer = n.add_shuffle(t)
            if first is not None:
                layer.first_transpose = first
            if dims is not None:
                layer.reshape_dims = dims
            if second is not None:
                layer.second_transpose = second
            return layer
        return _one(net, rng, (2, 3, 4, 5), add)
    return build


def _flatten(net, rng):
    return _one(net, rng, (2, 3, 4, 5), lambda n, t: n.add_flatten(t, 2))


def _squeeze(net, rng):
    return _one(net, rng, (2, 1, 4, 1), lambda n, t: n.add_squeeze(t, (1, -1)))


def _unsqueeze(net, rng):
    return _one(net, rng, (2, 3, 4), lambda n, t: n.add_unsqueeze(t, (0, 3)))


def _concatenation(net, rng):
    xs = [net.add_input(f"x{i}", rt.float32, (2, c, 4, 5)) for i, c in enumerate((1, 3, 2))]
    net.mark_output(net.add_concatenation(xs).get_output(0))
    return {f"x{i}": _rand(rng, 2, c, 4, 5) for i, c in enumerate((1, 3, 2))}


def _constant(net, rng):
    # constant + input: the constant's array is the clone's (device) weights
    c = net.add_constant((1, 3, 4), _rand(rng, 12))
    x = net.add_input("x", rt.float32, (2, 3, 4))
    net.mark_output(net.add_elementwise(x, c.get_output(0), E.SUM).get_output(0))
    return {"x": _rand(rng, 2, 3, 4)}


def _slice(start, shape, stride, mode=None, fill=None):
    def build(net, rng):
        def add(n, t):
            layer = n.add_slice(t, start, shape, stride, mode)
            if fill is not None:
                layer.fill_value = fill
            return layer
        return _one(net, rng, (2, 3, 5, 6), add)
    return build


def _gather(axis, idx_shape):
    def build(net, rng):
        data_shape = (3, 4, 5)
        d = data_shape[axis]
        x = net.add_input("x", rt.float32, data_shape)
        i = net.add_input("i", rt.int32, idx_shape)
        net.mark_output(net.add_gather(x, i, axis).get_output(0))
        return {"x": _rand(rng, *data_shape),
                "i": rng.integers(-d, d, idx_shape).astype(np.int32)}
    return build


# -- conv -----------------------------------------------------------------------

def _conv(shape, k, window, groups=1, stride=None, dilation=None, pad=None, mode=None,
          bias=True, act=None, residual=False, deconv=False):
    def build(net, rng):
        c = shape[1]
        wshape = ((c, k // groups) if deconv else (k, c // groups)) + tuple(window)
        w = _rand(rng, *wshape) * 0.3
        b = _rand(rng, k) if bias else None
        x = net.add_input("x", rt.float32, shape)
        add = net.add_deconvolution_nd if deconv else net.add_convolution_nd
        layer = add(x, k, window, w, b)
        layer.num_groups = groups
        if stride is not None:
            layer.stride_nd = stride
        if dilation is not None:
            layer.dilation_nd = dilation
        if pad is not None:
            layer.padding_nd = pad
        if mode is not None:
            layer.padding_mode = mode
        if act is not None:
            layer.post_activation = act
        feeds = {"x": _rand(rng, *shape)}
        if residual:
            out_shape = layer.get_output(0).shape
            r = net.add_input("r", rt.float32, out_shape)
            layer.set_input(1, r)
            feeds["r"] = _rand(rng, *out_shape)
        net.mark_output(layer.get_output(0))
        return feeds
    return build


# -- spatial --------------------------------------------------------------------

def _pool(kind, shape, window, stride=None, pad=None, mode=None, exclude=True, blend=None):
    def build(net, rng):
        def add(n, t):
            layer = n.add_pooling_nd(t, kind, window)
            if stride is not None:
                layer.stride_nd = stride
            if pad is not None:
                layer.padding_nd = pad
            if mode is not None:
                layer.padding_mode = mode
            layer.average_count_excludes_padding = exclude
            if blend is not None:
                layer.blend_factor = blend
            return layer
        return _one(net, rng, shape, add)
    return build


def _lrn(window):
    def build(net, rng):
        return _one(net, rng, (2, 7, 4, 5), lambda n, t: n.add_lrn(t, window, 0.5, 0.75, 1.5))
    return build


def _padding(pre, post):
    def build(net, rng):
        return _one(net, rng, (2, 3, 5, 6), lambda n, t: n.add_padding_nd(t, pre, post))
    return build


def _resize(mode, coord, rounding=rt.ResizeRoundMode.FLOOR, shape=None, scales=None,
            in_shape=(2, 3, 5, 6)):
    def build(net, rng):
        def add(n, t):
            layer = n.add_resize(t)
            if shape is not None:
                layer.shape = shape
            if scales is not None:
                layer.scales = scales
            layer.resize_mode = mode
            layer.coordinate_transformation = coord
            layer.nearest_rounding = rounding
            return layer
        return _one(net, rng, in_shape, add)
    return build


R, RC, RR = rt.ResizeMode, rt.ResizeCoordinateTransformation, rt.ResizeRoundMode
PM, PT = rt.PaddingMode, rt.PoolingType

def _norm(shape, axes, groups=1):
    def build(net, rng):
        def add(net, x):
            bshape = tuple(d if (axes >> i & 1) or (groups > 1 and i == 1) else 1
                           for i, d in enumerate(shape))
            sc = net.add_constant(bshape, _rand(rng, *bshape)).get_output(0)
            bi = net.add_constant(bshape, _rand(rng, *bshape)).get_output(0)
            layer = net.add_normalization(x, sc, bi, axes)
            layer.num_groups = groups
            return layer
        return _one(net, rng, shape, add)
    return build


# -- selection and detection ------------------------------------------------------

def _topk(op, shape, k, axis, dtype=rt.float32):
    def build(net, rng):
        x = net.add_input("x", dtype, shape)
        layer = net.add_topk(x, op, k, 1 << axis)
        net.mark_output(layer.get_output(0))
        net.mark_output(layer.get_output(1))
        values = (_rand(rng, *shape) if dtype == rt.float32
                  else rng.integers(-3, 4, shape).astype(np.int32))     # ties among ints
        return {"x": values}
    return build


def _combined_nms(q, pad, clip):
    def build(net, rng):
        b = net.add_input("b", rt.float32, (2, 16, q, 4))
        s = net.add_input("s", rt.float32, (2, 16, 3))
        layer = net.add_combined_nms(b, s, 4, 9, 0.4, 0.1, pad_per_class=pad, clip_boxes=clip)
        for i in range(4):
            net.mark_output(layer.get_output(i))
        lo = rng.uniform(-0.2, 1.0, (2, 16, q, 2))
        boxes = np.concatenate([lo, lo + rng.uniform(-0.1, 0.6, lo.shape)], -1)
        return {"b": boxes.astype(np.float32), "s": rng.uniform(0, 1, (2, 16, 3)).astype(np.float32)}
    return build


CASES = (
    [(f"activation-{k.name}", _activation(k)) for k in A]
    + [("activation-LEAKY_RELU-alpha", _activation(A.LEAKY_RELU, alpha=0.3)),
       ("activation-CLIP-range", _activation(A.CLIP, alpha=-0.5, beta=0.7))]
    + [(f"unary-{op.name}", _unary(op)) for op in U]
    + [(f"unary-int-{op.name}", _unary_int(op)) for op in (U.ABS, U.NEG, U.SIGN)]
    + [(f"elementwise-{op.name}", _elementwise(op))
       for op in E if op not in (E.AND, E.OR, E.XOR)]
    + [(f"elementwise-int-{op.name}", _elementwise(op, rt.int32))
       for op in (E.SUM, E.PROD, E.SUB, E.DIV, E.FLOOR_DIV, E.POW, E.MAX, E.LESS)]
    + [(f"elementwise-bool-{op.name}", _elementwise(op, rt.bool))
       for op in (E.AND, E.OR, E.XOR, E.EQUAL)]
    + [("scale-UNIFORM", _scale(rt.ScaleMode.UNIFORM)),
       ("scale-CHANNEL", _scale(rt.ScaleMode.CHANNEL)),
       ("scale-CHANNEL-axis2-nopower", _scale(rt.ScaleMode.CHANNEL, axis=2, power=False)),
       ("scale-ELEMENTWISE", _scale(rt.ScaleMode.ELEMENTWISE))]
    + [("cast-float-int32", _cast(rt.float32, rt.int32)),
       ("cast-float-int8", _cast(rt.float32, rt.int8)),
       ("cast-int32-int8", _cast(rt.int32, rt.int8)),
       ("cast-int32-float", _cast(rt.int32, rt.float32)),
       ("cast-float-bool", _cast(rt.float32, rt.bool)),
       ("cast-bool-float", _cast(rt.bool, rt.float32)),
       ("identity", _identity), ("select", _select)]
    + [("shuffle-transpose", _shuffle((0, 2, 3, 1), None, None)),
       ("shuffle-reshape", _shuffle(None, (0, -1, 5), None)),
       ("shuffle-all", _shuffle((0, 3, 1, 2), (2, 5, 12), (2, 0, 1))),
       ("flatten", _flatten), ("squeeze", _squeeze), ("unsqueeze", _unsqueeze),
       ("concatenation", _concatenation), ("constant", _constant)]
    + [("slice-strict", _slice((0, 1, 1, 0), (2, 2, 3, 3), (1, 1, 1, 2))),
       ("slice-strict-negative-stride", _slice((1, 2, 4, 5), (2, 3, 3, 3), (-1, -1, -2, -2))),
       ("slice-strict-stride0", _slice((0, 1, 2, 0), (2, 2, 3, 6), (1, 0, 0, 1)))]
    + [(f"slice-{m.name}", _slice((0, -2, -3, 1), (2, 5, 9, 4), (1, 1, 1, 2), m))
       for m in (M.WRAP, M.CLAMP, M.REFLECT)]
    + [("slice-FILL", _slice((0, -2, -3, 1), (2, 5, 9, 4), (1, 1, 1, 2), M.FILL, 2.5))]
    + [("gather-axis0", _gather(0, (4,))), ("gather-axis1-2d", _gather(1, (2, 3))),
       ("gather-axis2-scalar", _gather(2, ()))]
    + [("conv-2d", _conv((2, 4, 7, 8), 6, (3, 3), pad=(1, 1))),
       ("conv-1x1-nobias", _conv((2, 4, 5, 6), 8, (1, 1), bias=False)),
       ("conv-strided-dilated", _conv((2, 3, 11, 10), 5, (3, 2), stride=(2, 1), dilation=(2, 3))),
       ("conv-grouped", _conv((2, 6, 7, 7), 9, (3, 3), groups=3, pad=(1, 1))),
       ("conv-depthwise", _conv((2, 4, 7, 7), 4, (3, 3), groups=4, pad=(1, 1))),
       ("conv-depthwise-multiplier", _conv((2, 3, 8, 7), 6, (3, 3), groups=3, stride=(2, 2))),
       ("conv-same-upper", _conv((2, 3, 7, 8), 4, (4, 3), stride=(2, 2), mode=PM.SAME_UPPER)),
       ("conv-round-up", _conv((2, 3, 8, 8), 4, (3, 3), stride=(2, 2), mode=PM.EXPLICIT_ROUND_UP)),
       ("conv-1d", _conv((2, 3, 9), 4, (3,), pad=(1,))),
       ("conv-3d", _conv((1, 2, 5, 6, 4), 3, (3, 2, 3), stride=(1, 2, 1), pad=(1, 0, 1))),
       ("conv-fused-relu-residual", _conv((2, 3, 6, 6), 4, (3, 3), pad=(1, 1), act=A.RELU,
                                          residual=True)),
       ("conv-fused-gelu", _conv((2, 3, 6, 6), 4, (3, 3), act=A.GELU_ERF)),
       ("deconv-2d", _conv((2, 4, 5, 6), 3, (3, 3), stride=(2, 2), deconv=True)),
       ("deconv-padded-dilated", _conv((2, 3, 5, 5), 4, (3, 2), stride=(2, 3), dilation=(2, 1),
                                       pad=(1, 1), deconv=True)),
       ("deconv-grouped", _conv((2, 4, 5, 5), 6, (2, 2), groups=2, stride=(2, 2), deconv=True)),
       ("deconv-same-lower", _conv((2, 3, 5, 4), 2, (3, 3), stride=(2, 2), mode=PM.SAME_LOWER,
                                   deconv=True)),
       ("deconv-3d", _conv((1, 2, 3, 4, 3), 3, (2, 3, 2), stride=(2, 1, 2), deconv=True)),
       ("deconv-fused-tanh-residual", _conv((2, 3, 4, 4), 2, (3, 3), stride=(2, 2), act=A.TANH,
                                            residual=True, deconv=True))]
    + [(f"pool-{k.name}", _pool(k, (2, 3, 7, 8), (3, 3), stride=(2, 2), blend=0.3
                                if k == PT.MAX_AVERAGE_BLEND else None)) for k in PT]
    + [(f"pool-{k.name}-padded", _pool(k, (2, 3, 7, 8), (3, 2), stride=(2, 2), pad=(1, 1)))
       for k in (PT.MAX, PT.AVERAGE)]
    + [("pool-AVERAGE-padded-count-padding",
        _pool(PT.AVERAGE, (2, 3, 7, 8), (3, 3), stride=(2, 2), pad=(1, 1), exclude=False)),
       ("pool-AVERAGE-round-up", _pool(PT.AVERAGE, (2, 3, 8, 8), (3, 3), stride=(2, 2),
                                       mode=PM.EXPLICIT_ROUND_UP)),
       ("pool-MAX-same-upper", _pool(PT.MAX, (2, 3, 7, 8), (2, 3), stride=(2, 2),
                                     mode=PM.SAME_UPPER)),
       ("pool-MAX-1d", _pool(PT.MAX, (2, 3, 9), (3,), stride=(2,))),
       ("pool-AVERAGE-3d", _pool(PT.AVERAGE, (1, 2, 5, 6, 4), (2, 3, 2), stride=(1, 2, 2),
                                 pad=(1, 1, 0)))]
    + [("lrn-5", _lrn(5)), ("lrn-1", _lrn(1)), ("lrn-15", _lrn(15))]
    + [("padding", _padding((1, 2), (2, 0))), ("padding-crop", _padding((-1, 1), (0, -2)))]
    + [("resize-nearest-scales", _resize(R.NEAREST, RC.ASYMMETRIC, scales=(1, 1, 2, 1.5))),
       ("resize-nearest-half-up", _resize(R.NEAREST, RC.HALF_PIXEL, RR.HALF_UP,
                                          shape=(2, 3, 8, 4))),
       ("resize-nearest-ceil-align", _resize(R.NEAREST, RC.ALIGN_CORNERS, RR.CEIL,
                                             shape=(2, 3, 9, 11))),
       ("resize-nearest-batch", _resize(R.NEAREST, RC.ASYMMETRIC, RR.HALF_DOWN,
                                        shape=(4, 3, 5, 6))),
       ("resize-linear-half-pixel", _resize(R.LINEAR, RC.HALF_PIXEL, scales=(1, 1, 1.6, 0.5))),
       ("resize-linear-align", _resize(R.LINEAR, RC.ALIGN_CORNERS, shape=(2, 3, 9, 11))),
       ("resize-linear-asymmetric", _resize(R.LINEAR, RC.ASYMMETRIC, shape=(2, 3, 10, 3))),
       ("resize-linear-3d", _resize(R.LINEAR, RC.HALF_PIXEL, shape=(2, 5, 7, 4),
                                    in_shape=(2, 3, 4, 5)))]
    + [("normalization-layer", _norm((2, 5, 8), 0b100)),
       ("normalization-instance", _norm((2, 4, 3, 5), 0b1100)),
       ("normalization-group", _norm((2, 6, 3, 4), 0b1100, groups=3))]
    + [("topk-max-axis2", _topk(rt.TopKOperation.MAX, (2, 3, 9), 4, 2)),
       ("topk-min-axis1-int", _topk(rt.TopKOperation.MIN, (3, 8, 2), 3, 1, rt.int32)),
       ("combined-nms-shared-boxes", _combined_nms(1, False, True)),
       ("combined-nms-per-class-boxes-padded", _combined_nms(3, True, False))]
)

IDS = [name for name, _ in CASES]


def build(case, seed=0):
    """(network, feeds) for the case named ``case``."""
    rng = np.random.default_rng(seed)
    net = rt.Network()
    feeds = dict(CASES)[case](net, rng)
    return net, feeds


def run_on_device(network, feeds, xp):
    """Run ``network`` layer by layer as the GPU backend does: inputs moved to
    ``xp``, each layer's NumPy implementation called with ``xp`` arrays and a
    ``device_clone`` of the layer. Returns ([(layer, outputs)], {output name:
    value}), values left in ``xp``."""
    values = {id(t): xp.asarray(feeds[t.name]) for t in network._inputs}
    trace = []
    for layer in network._layers:
        ins = [None if t is None else values[id(t)] for t in layer._inputs]
        ins = [x.astype(np.float32) if x is not None and x.dtype == np.float16 else x for x in ins]
        outs = kernel_table.numpy_kernel(layer)(device_clone(layer, xp), ins)
        trace.append((layer, list(outs)))
        for t, v in zip(layer._outputs, outs):
            values[id(t)] = xp.asarray(v).astype(t.dtype.to_numpy(), copy=False)
    return trace, {t.name: values[id(t)] for t in network._outputs}
