"""Pointwise math, activations, reductions and matrix products."""
import numpy as np
import tensorflow as tf

import engine as rt

from ..context import Value, perm_after_removing
from ..graph_utils import get_attr
from ..registry import ENGINE_TYPES, FLOAT_TYPES, Reason, converter
from .layer_norm import convert_layer_norm

EW = rt.ElementWiseOperation
UN = rt.UnaryOperation
ACT = rt.ActivationType

NUMERIC = (tf.float32, tf.float16, tf.int32)


def const_input(index, what):
    """Validator factory: input ``index`` must be a constant."""

    def check(node, graph):
        data = [i for i in node.input if not i.startswith("^")]
        if index >= len(data) or not graph.is_const(data[index]):
            return Reason(Reason.ATTRIBUTE, f"{what} (input {index}) is not a constant")
        return None

    check.__doc__ = f"{what} must be constant"
    return check


# ---------------------------------------------------------------------------- elementwise

_NUMPY = {EW.SUM: np.add, EW.SUB: np.subtract, EW.PROD: np.multiply, EW.DIV: np.divide,
          EW.MAX: np.maximum, EW.MIN: np.minimum, EW.POW: np.power,
          EW.FLOOR_DIV: np.floor_divide, EW.EQUAL: np.equal, EW.GREATER: np.greater,
          EW.LESS: np.less, EW.AND: np.logical_and, EW.OR: np.logical_or}


def elementwise(ctx, a, b, op):
    """``a op b`` with TF broadcasting, in the layout of the computed operand
    (comparisons and logic ops give BOOL)."""
    if a.is_const and b.is_const:
        return Value(const=_NUMPY[op](a.const, b.const))
    rank, perm = ctx.common_layout([a, b])
    layer = ctx.network.add_elementwise(ctx.broadcast(a, rank, perm),
                                        ctx.broadcast(b, rank, perm), op)
    ctx.name(layer, op.name.lower())
    return Value(layer.get_output(0), perm=perm)


def _binary(op):
    def convert(ctx, node):
        return [elementwise(ctx, ctx.input(node, 0), ctx.input(node, 1), op)]

    convert.__name__ = f"convert_{op.name.lower()}"
    return convert


for _ops, _op, _types in [(("Sub",), EW.SUB, NUMERIC),
                          (("Mul",), EW.PROD, NUMERIC), (("RealDiv", "Div"), EW.DIV, FLOAT_TYPES),
                          (("Maximum",), EW.MAX, NUMERIC), (("Minimum",), EW.MIN, NUMERIC),
                          (("Pow",), EW.POW, FLOAT_TYPES), (("FloorDiv",), EW.FLOOR_DIV,
                                                             FLOAT_TYPES)]:
    converter(*_ops, dtypes=_types)(_binary(_op))


@converter("Add", "AddV2", dtypes=NUMERIC)
def convert_add(ctx, node):
    # the last add of a layer norm (Keras 3 and tf_keras spell it out as
    # mean/variance/rsqrt chains) becomes one Normalization layer; the chain's
    # own layers then have no consumer and the builder drops them
    fused = convert_layer_norm(ctx, node)
    if fused is not None:
        return [fused]
    return [elementwise(ctx, ctx.input(node, 0), ctx.input(node, 1), EW.SUM)]


@converter("SquaredDifference")
def convert_squared_difference(ctx, node):
    d = elementwise(ctx, ctx.input(node, 0), ctx.input(node, 1), EW.SUB)
    return [elementwise(ctx, d, d, EW.PROD)]


@converter("AddN", dtypes=NUMERIC)
def convert_add_n(ctx, node):
    n = get_attr(node, "N")
    acc = ctx.input(node, 0)
    for i in range(1, n):
        acc = elementwise(ctx, acc, ctx.input(node, i), EW.SUM)
    return [acc]


def _validate_select(node, graph):
    """condition, then and else of broadcastable static ranks"""
    return None


@converter("Select", "SelectV2", validator=_validate_select, dtypes=ENGINE_TYPES)
def convert_select(ctx, node):
    c, a, b = (ctx.input(node, i) for i in range(3))
    if node.op == "Select" and c.rank == 1 and a.rank > 1:
        # TF1 Select: a vector condition picks whole rows of a and b
        c = Value(const=c.const.reshape((-1,) + (1,) * (a.rank - 1))) if c.is_const else c
        if not c.is_const:
            layer = ctx.network.add_unsqueeze(ctx.tensor(c), tuple(range(1, a.rank)))
            c = Value(layer.get_output(0))
    rank, perm = ctx.common_layout([a, b, c])
    layer = ctx.network.add_select(ctx.broadcast(c, rank, perm), ctx.broadcast(a, rank, perm),
                                   ctx.broadcast(b, rank, perm))
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=perm)]


# ---------------------------------------------------------------------------- unary

def unary(ctx, value, op):
    layer = ctx.network.add_unary(ctx.tensor(value, value.perm), op)
    ctx.name(layer, op.name.lower())
    return Value(layer.get_output(0), perm=value.perm)


_UNARY = {"Exp": UN.EXP, "Log": UN.LOG, "Sqrt": UN.SQRT, "Reciprocal": UN.RECIP, "Inv": UN.RECIP,
          "Abs": UN.ABS, "Neg": UN.NEG, "Erf": UN.ERF, "Sin": UN.SIN, "Cos": UN.COS,
          "Tan": UN.TAN, "Floor": UN.FLOOR, "Ceil": UN.CEIL, "Round": UN.ROUND, "Sign": UN.SIGN,
          "Asin": UN.ASIN, "Acos": UN.ACOS, "Atan": UN.ATAN, "Sinh": UN.SINH, "Cosh": UN.COSH,
          "Asinh": UN.ASINH, "Acosh": UN.ACOSH, "Atanh": UN.ATANH}


def _unary_converter(op):
    def convert(ctx, node):
        return [unary(ctx, ctx.input(node, 0), op)]

    convert.__name__ = f"convert_{op.name.lower()}"
    return convert


for _tf_op, _op in _UNARY.items():
    _types = NUMERIC if _tf_op in ("Abs", "Neg", "Sign") else FLOAT_TYPES
    converter(_tf_op, dtypes=_types)(_unary_converter(_op))


@converter("Rsqrt")
def convert_rsqrt(ctx, node):
    return [unary(ctx, unary(ctx, ctx.input(node, 0), UN.SQRT), UN.RECIP)]


def _const_like(x, value):
    return Value(const=np.asarray(value, np.float16 if x.tensor is not None and
                                  x.tensor.dtype == rt.float16 else np.float32))


@converter("Erfc")
def convert_erfc(ctx, node):
    # erfc = 1 - erf: exact to float32 rounding near 0; for large x the difference
    # loses relative (not absolute) accuracy, which is what a GELU multiplies by x
    x = ctx.input(node, 0)
    return [elementwise(ctx, _const_like(x, 1.0), unary(ctx, x, UN.ERF), EW.SUB)]


@converter("Expm1")
def convert_expm1(ctx, node):
    # exp(x) - 1 = 2 exp(x/2) sinh(x/2): no cancellation near 0 (sinh is accurate
    # there), and no early overflow (both factors grow as exp(x/2))
    x = ctx.input(node, 0)
    half = elementwise(ctx, x, _const_like(x, 0.5), EW.PROD)
    prod = elementwise(ctx, unary(ctx, half, UN.EXP), unary(ctx, half, UN.SINH), EW.PROD)
    return [elementwise(ctx, prod, _const_like(x, 2.0), EW.PROD)]


@converter("Log1p")
def convert_log1p(ctx, node):
    # log(1 + x) = 2 atanh(x / (2 + x)) keeps full relative accuracy for small x,
    # where log(1 + x) has lost the low bits of x; for |x| >= 1/2 the plain form
    # is as accurate and stays finite for large x (where x / (2 + x) rounds to 1)
    x = ctx.input(node, 0)
    two, one = _const_like(x, 2.0), _const_like(x, 1.0)
    small = elementwise(ctx, unary(ctx, x, UN.ABS), _const_like(x, 0.5), EW.LESS)
    z = elementwise(ctx, x, elementwise(ctx, x, two, EW.SUM), EW.DIV)
    near = elementwise(ctx, unary(ctx, z, UN.ATANH), two, EW.PROD)
    far = unary(ctx, elementwise(ctx, x, one, EW.SUM), UN.LOG)
    layer = ctx.network.add_select(ctx.tensor(small, small.perm), ctx.tensor(near, small.perm),
                                   ctx.tensor(far, small.perm))
    ctx.name(layer, "log1p")
    return [Value(layer.get_output(0), perm=small.perm)]


@converter("Square", dtypes=NUMERIC)
def convert_square(ctx, node):
    x = ctx.input(node, 0)
    return [elementwise(ctx, x, x, EW.PROD)]


# ---------------------------------------------------------------------------- activations

def activation(ctx, value, kind, alpha=None, beta=None):
    layer = ctx.network.add_activation(ctx.tensor(value, value.perm), kind)
    if alpha is not None:
        layer.alpha = float(alpha)
    if beta is not None:
        layer.beta = float(beta)
    ctx.name(layer, kind.name.lower())
    return Value(layer.get_output(0), perm=value.perm)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


@converter("Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus",
           "Softsign")
def convert_activation(ctx, node):
    x = ctx.input(node, 0)
    table = {"Relu": (ACT.RELU, None, None), "Relu6": (ACT.CLIP, 0.0, 6.0),
             "LeakyRelu": (ACT.LEAKY_RELU, get_attr(node, "alpha", 0.2), None),
             "Elu": (ACT.ELU, 1.0, None), "Selu": (ACT.SELU, _SELU_ALPHA, _SELU_SCALE),
             "Sigmoid": (ACT.SIGMOID, None, None), "Tanh": (ACT.TANH, None, None),
             "Softplus": (ACT.SOFTPLUS, 1.0, 1.0), "Softsign": (ACT.SOFTSIGN, None, None)}
    kind, alpha, beta = table[node.op]
    return [activation(ctx, x, kind, alpha, beta)]


def _validate_clip(node, graph):
    """clip bounds must be constant"""
    for i in (1, 2):
        if not graph.is_const(node.input[i]):
            return Reason(Reason.ATTRIBUTE, f"clip bound (input {i}) is not a constant")
    return None


@converter("ClipByValue", validator=_validate_clip)
def convert_clip(ctx, node):
    x, lo, hi = (ctx.input(node, i) for i in range(3))
    if lo.const.size == 1 and hi.const.size == 1:
        return [activation(ctx, x, ACT.CLIP, lo.const.item(), hi.const.item())]
    return [elementwise(ctx, elementwise(ctx, x, lo, EW.MAX), hi, EW.MIN)]


# ---------------------------------------------------------------------------- softmax

def softmax(ctx, x, axis):
    layer = ctx.network.add_softmax(ctx.tensor(x, x.perm))
    layer.axes = 1 << x.tf_axis_to_engine(axis)
    ctx.name(layer, "softmax")
    return Value(layer.get_output(0), perm=x.perm)


@converter("Softmax", "LogSoftmax")
def convert_softmax(ctx, node):
    x = ctx.input(node, 0)
    y = softmax(ctx, x, -1)
    return [unary(ctx, y, UN.LOG) if node.op == "LogSoftmax" else y]


# ---------------------------------------------------------------------------- reductions

_REDUCE = {"Mean": rt.ReduceOperation.AVG, "Sum": rt.ReduceOperation.SUM,
           "Max": rt.ReduceOperation.MAX, "Min": rt.ReduceOperation.MIN,
           "Prod": rt.ReduceOperation.PROD}


def _validate_reduce(node, graph):
    """reduction axes must be constant and non-empty"""
    if not graph.is_const(node.input[1]):
        return Reason(Reason.ATTRIBUTE, "reduction axes are not a constant")
    if np.size(graph.const_value(node.input[1])) == 0:
        return Reason(Reason.ATTRIBUTE, "empty reduction axes (an identity in TF)")
    return None


@converter(*_REDUCE, validator=_validate_reduce, dtypes=NUMERIC)
def convert_reduce(ctx, node):
    x = ctx.input(node, 0)
    axes = sorted({int(a) % x.rank for a in np.ravel(ctx.const(node, 1, "axes"))})
    keep = bool(get_attr(node, "keep_dims", False))
    mask = 0
    for a in axes:
        mask |= 1 << x.tf_axis_to_engine(a)
    layer = ctx.network.add_reduce(ctx.tensor(x, x.perm), _REDUCE[node.op], mask, keep)
    ctx.name(layer, node.op.lower())
    perm = x.perm if keep else perm_after_removing(x.perm, axes)
    return [Value(layer.get_output(0), perm=perm)]


# ---------------------------------------------------------------------------- matmul

@converter("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
def convert_matmul(ctx, node):
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    if node.op == "MatMul":
        ta, tb = get_attr(node, "transpose_a", False), get_attr(node, "transpose_b", False)
    else:
        ta, tb = get_attr(node, "adj_x", False), get_attr(node, "adj_y", False)
    rank = max(a.rank, b.rank)
    ident = tuple(range(rank))
    layer = ctx.network.add_matrix_multiply(
        ctx.broadcast(a, rank, ident), rt.MatrixOperation.TRANSPOSE if ta else
        rt.MatrixOperation.NONE, ctx.broadcast(b, rank, ident),
        rt.MatrixOperation.TRANSPOSE if tb else rt.MatrixOperation.NONE)
    ctx.name(layer)
    return [Value(layer.get_output(0))]
