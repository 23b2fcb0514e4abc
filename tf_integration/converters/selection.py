"""TopKV2, ArgMax and ArgMin through the engine's TopK layer."""
import numpy as np
import tensorflow as tf

import engine as rt

from ..context import Value, perm_after_removing
from ..graph_utils import get_attr
from ..registry import Reason, converter

NUMERIC = (tf.float32, tf.float16, tf.int32)


def topk(ctx, x, k, axis, largest):
    """(values, indices) Values of the k best along TF axis ``axis``, x's layout kept."""
    op = rt.TopKOperation.MAX if largest else rt.TopKOperation.MIN
    layer = ctx.network.add_topk(ctx.tensor(x, x.perm), op, k, 1 << x.tf_axis_to_engine(axis))
    ctx.name(layer, "topk")
    return Value(layer.get_output(0), perm=x.perm), Value(layer.get_output(1), perm=x.perm)


def _validate_topk(node, graph):
    """constant k; sorted=True; int32 indices"""
    if not graph.is_const(node.input[1]):
        return Reason(Reason.ATTRIBUTE, "k (input 1) is not a constant")
    if not get_attr(node, "sorted", True):
        # TF leaves the order unspecified then; the engine always sorts, so results
        # could differ from TF's in order: leave it to TF
        return Reason(Reason.ATTRIBUTE, "sorted=False")
    index_type = get_attr(node, "index_type", tf.int32)
    if index_type != tf.int32:
        return Reason(Reason.ATTRIBUTE, f"index_type={index_type.name}; supported: int32")
    return None


@converter("TopKV2", validator=_validate_topk, dtypes=NUMERIC)
def convert_topk(ctx, node):
    x = ctx.input(node, 0)
    k = int(np.ravel(ctx.const(node, 1, "k"))[0])
    return list(topk(ctx, x, k, x.rank - 1, largest=True))


def _validate_arg(node, graph):
    """constant axis; output_type int32"""
    if not graph.is_const(node.input[1]):
        return Reason(Reason.ATTRIBUTE, "dimension (input 1) is not a constant")
    out = get_attr(node, "output_type", tf.int64)
    if out != tf.int32:
        # the engine has no 64-bit integers (TF-TRT refused int64 too)
        return Reason(Reason.ATTRIBUTE, f"output_type={out.name}; supported: int32")
    return None


@converter("ArgMax", "ArgMin", validator=_validate_arg, dtypes=NUMERIC)
def convert_arg(ctx, node):
    x = ctx.input(node, 0)
    axis = int(np.ravel(ctx.const(node, 1, "dimension"))[0]) % x.rank
    _, idx = topk(ctx, x, 1, axis, largest=node.op == "ArgMax")
    layer = ctx.network.add_squeeze(idx.tensor, (x.tf_axis_to_engine(axis),))
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=perm_after_removing(x.perm, [axis]))]
