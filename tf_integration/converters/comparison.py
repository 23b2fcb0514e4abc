"""Comparisons and boolean logic: Equal ... LessEqual, LogicalAnd/Or/Not.

Comparisons are ElementWise layers producing BOOL. TensorRT has EQUAL, GREATER
and LESS only; the others are composed so they stay exact with NaNs too
(TF-TRT's ``GreaterEqual = NOT(LESS)`` says True for a NaN, TF says False):

    a >= b  ->  (a > b) OR (a == b)        a != b  ->  NOT (a == b)
    a <= b  ->  (a < b) OR (a == b)
"""
import numpy as np
import tensorflow as tf

import engine as rt

from ..context import Value
from ..registry import converter
from .math import elementwise

EW = rt.ElementWiseOperation
NUMERIC = (tf.float32, tf.float16, tf.int32)
BOOL = (tf.bool,)


def logical_not(ctx, x):
    if x.is_const:
        return Value(const=np.logical_not(x.const))
    layer = ctx.network.add_unary(ctx.tensor(x, x.perm), rt.UnaryOperation.NOT)
    ctx.name(layer, "not")
    return Value(layer.get_output(0), perm=x.perm)


# TF op -> (ElementWise ops OR-ed together, negate the result)
_COMPARE = {"Equal": ((EW.EQUAL,), False), "NotEqual": ((EW.EQUAL,), True),
            "Greater": ((EW.GREATER,), False), "Less": ((EW.LESS,), False),
            "GreaterEqual": ((EW.GREATER, EW.EQUAL), False),
            "LessEqual": ((EW.LESS, EW.EQUAL), False)}


# bool only reaches Equal/NotEqual: TF's other comparisons take real numbers only
@converter(*_COMPARE, dtypes=NUMERIC + BOOL)
def convert_compare(ctx, node):
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    ops, negate = _COMPARE[node.op]
    out = elementwise(ctx, a, b, ops[0])
    for op in ops[1:]:
        out = elementwise(ctx, out, elementwise(ctx, a, b, op), EW.OR)
    return [logical_not(ctx, out) if negate else out]


@converter("LogicalAnd", "LogicalOr", dtypes=BOOL)
def convert_logical(ctx, node):
    op = EW.AND if node.op == "LogicalAnd" else EW.OR
    return [elementwise(ctx, ctx.input(node, 0), ctx.input(node, 1), op)]


@converter("LogicalNot", dtypes=BOOL)
def convert_logical_not(ctx, node):
    return [logical_not(ctx, ctx.input(node, 0))]
