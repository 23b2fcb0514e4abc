"""Attention: softmax(scale * q k^T) v in one layer.

The builder makes it (engine/passes/fuse_attention.py) from the chain a
transformer arrives as, MatMul(q, k^T) -> scale -> SoftMax(last axis) ->
MatMul(p, v), so a GPU tactic can run it as one flash-style kernel that never
writes the Sq x Sk score matrix (Dao et al., FlashAttention, 2022).

    q (..., Sq, D)   k (..., Sk, D)   v (..., Sk, Dv)   ->   out (..., Sq, Dv)

The leading dims are the batch (N, heads in the layout the heads shuffle
makes) and broadcast as MatrixMultiply's do. No mask: the pass fuses only
chains without one.
"""
from kernels import attention as A

from ..kernel_table import numpy_impl
from ..types import LayerType
from .base import Float, Layer, broadcast_shapes, check_float, dim_known


class AttentionLayer(Layer):
    """Scaled dot-product attention over the last two dims of q, k and v."""

    layer_type = LayerType.ATTENTION
    min_inputs = max_inputs = 3
    scale = Float(1.0)

    def infer(self, in_shapes, in_dtypes):
        names = ("query", "key", "value")
        for name, shape, dtype in zip(names, in_shapes, in_dtypes):
            check_float(self, name, dtype)
            if len(shape) < 2:
                self.fail(name, f"shape {shape}", "rank >= 2 (..., sequence, head dim)")
        q, k, v = in_shapes
        if not len(q) == len(k) == len(v):
            self.fail("inputs", f"ranks {len(q)}, {len(k)}, {len(v)}", "equal ranks")
        batch = broadcast_shapes(self, broadcast_shapes(self, q[:-2], k[:-2]), v[:-2])
        if dim_known(q[-1]) and dim_known(k[-1]) and q[-1] != k[-1]:
            self.fail("key", f"head dim {k[-1]} (shape {k})", f"the query's head dim {q[-1]}")
        if dim_known(k[-2]) and dim_known(v[-2]) and k[-2] != v[-2]:
            self.fail("value", f"{v[-2]} rows (shape {v})", f"one row per key: {k[-2]}")
        return [(batch + (q[-2], v[-1]), in_dtypes[0])]


@numpy_impl(LayerType.ATTENTION)
def _attention(layer, inputs):
    return [A.attention(inputs[0], inputs[1], inputs[2], layer.scale)]
