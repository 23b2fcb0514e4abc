"""GPU tactic for the fused pointwise chain: one generated kernel (kernels.gpu.pointwise_gen).

The chain's ops are mapped onto kernels.gpu.pointwise_gen's op tuples once, at
prepare time; an op that has no single-kernel form (a scale over whole
elements, a constant that is neither a scalar nor per-channel, an operand
that broadcasts) makes the tactic decline, and the generic tactic replays the
chain layer by layer instead.

The kernel runs over the tensor's physical buffer: an NHWC buffer (what a
tensor-core convolution wrote) with the channel axis last, else the logical
contiguous NCHW array with the channel axis at 1.
"""
import numpy as np

from kernels.gpu import pointwise_gen

from ..types import ElementWiseOperation as EW, LayerType, ScaleMode
from .base import Tactic, as_nhwc, cupy, nchw_view

_COMMUTES = {EW.SUM, EW.PROD, EW.MAX, EW.MIN}


class Unfusable(Exception):
    pass


def _vector(const, rank, axes):
    """A constant that varies along at most one axis: (kind, value); the axis it
    varies along is added to ``axes`` (the kernel has one channel axis)."""
    varying = [i for i, d in enumerate(const.shape) if d != 1]
    if const.ndim != rank or len(varying) > 1:
        raise Unfusable(f"a constant of shape {const.shape}")
    flat = const.reshape(-1).astype(np.float32)
    if not varying:
        return "scalar", float(flat[0])
    axes.add(varying[0])
    return "channel", flat


def plan_chain(layer, rank):
    """(channel axis, the chain as pointwise_gen ops); tensor operands stay as
    ('tensor', op, input index) until run time."""
    ops, axes = [], set()
    cp = cupy()
    for op in layer.chain:
        sub, t = op.layer, op.layer.layer_type
        if t == LayerType.ACTIVATION:
            alpha, beta = sub.params()
            ops.append(("act", sub.activation_type.name, alpha, beta))
        elif t == LayerType.UNARY:
            if sub.op.name not in pointwise_gen.UNARY_OPS:
                raise Unfusable(f"unary {sub.op.name}")
            ops.append(("unary", sub.op.name))
        elif t == LayerType.SCALE:
            if sub.mode == ScaleMode.ELEMENTWISE:
                raise Unfusable("an ELEMENTWISE scale")
            vec = [None if w is None else cp.asarray(w.reshape(-1), cp.float32)
                   for w in (sub.scale, sub.shift, sub.power)]
            if sub.mode == ScaleMode.UNIFORM:
                for kind, w in zip(("PROD", "SUM", "POW"), vec):
                    if w is not None:
                        ops.append(("const", kind, float(w[0])))
            else:
                axes.add(sub.channel_axis % rank)
                ops.append(("channel", *vec))
        elif t == LayerType.ELEMENTWISE:
            name = sub.op.name
            if op.input_index is not None:
                if op.side == 1 and sub.op not in _COMMUTES:
                    raise Unfusable(f"tensor {name} v")
                ops.append(("tensor", name, op.input_index))
                continue
            kind, value = _vector(op.const, rank, axes)
            if kind == "scalar":
                ops.append(("const" if op.side == 0 else "rconst", name, value))
            elif sub.op == EW.SUM:
                ops.append(("channel", None, cp.asarray(value), None))
            elif sub.op == EW.PROD:
                ops.append(("channel", cp.asarray(value), None, None))
            elif sub.op == EW.SUB and op.side == 0:
                ops.append(("channel", None, cp.asarray(-value), None))
            elif sub.op == EW.SUB:           # c - v = (-1) * v + c
                ops.append(("channel", cp.asarray(-np.ones_like(value)), cp.asarray(value), None))
            elif sub.op == EW.DIV and op.side == 0:
                ops.append(("channel", cp.asarray(1.0 / value), None, None))
            else:
                raise Unfusable(f"a per-channel {name} with the constant on the left")
        else:
            raise Unfusable(t.name)
    if len(axes) > 1:
        raise Unfusable(f"per-channel constants along several axes {sorted(axes)}")
    return (axes.pop() if axes else min(1, rank - 1)), ops


class PointwiseChainKernel(Tactic):
    name = "pointwise.fused_kernel"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if any(s != in_shapes[0] for s in in_shapes[1:]):
            return "an operand that broadcasts"
        try:
            plan_chain(layer, len(in_shapes[0]))
        except Unfusable as e:
            return f"no single-kernel form for {e}"
        return None

    def prepare(self, layer):
        return plan_chain(layer, len(layer._inputs[0].shape))

    def run(self, state, layer, inputs, precision, out_dtypes):
        cp = cupy()
        x = inputs[0]
        store = np.float16 if x.dtype == np.float16 else np.float32
        nhwc = x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous
        axis, plan = state
        if nhwc:                 # logical n c h w -> physical n h w c
            phys, axis = x.transpose(0, 2, 3, 1), (0, 3, 1, 2)[axis]

            def same(t):
                return as_nhwc(t, t.dtype)
        else:
            phys = cp.ascontiguousarray(x)

            def same(t):
                return cp.ascontiguousarray(t)
        ops = [("tensor", op[1], same(inputs[op[2]])) if op[0] == "tensor" else op for op in plan]
        y = pointwise_gen.pointwise_chain(phys.astype(store, copy=False), ops,
                            out_dtype=out_dtypes[0].to_numpy(), channel_axis=axis)
        return [nchw_view(y) if nhwc else y]


# The POINTWISE tactics (the builder's fused chains).
TACTICS = (PointwiseChainKernel(),)
