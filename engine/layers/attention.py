"""Attention: softmax(scale * q k^T) v in one layer.

The builder makes it (engine/passes/fuse_attention.py) from the chain a
transformer arrives as, MatMul(q, k^T) -> scale -> SoftMax(last axis) ->
MatMul(p, v), so a GPU tactic can run it as one flash-style kernel that never
writes the Sq x Sk score matrix (Dao et al., FlashAttention, 2022).

    q (..., Sq, D)   k (..., Sk, D)   v (..., Sk, Dv)   ->   out (..., Sq, Dv)

The leading dims are the batch (N, heads in the layout the heads shuffle
makes) and broadcast as MatrixMultiply's do. No mask: the pass fuses only
chains without one.

``heads`` > 0: the pass also took the shuffles around it, so the operands are
packed rank-3 tensors and so is the result:

    q (N, Sq, heads * D)   k (N, Sk, heads * D)   v (N, Sk, heads * Dv)   ->   (N, Sq, heads * Dv)

``packed_qkv`` (needs ``heads``): self-attention whose three projections ran as
one GEMM (engine/passes/merge_qkv.py), so the layer has a single input holding
q, k and v as column blocks, each heads * D wide:

    qkv (N, S, 3 * heads * D) = [ q | k | v ]   ->   (N, S, heads * D)

The kernels read the three blocks as strided views of it, no copy.
"""
from kernels import attention as A

from ..kernel_table import numpy_impl
from ..types import LayerType
from .base import Bool, Float, Int, Layer, broadcast_shapes, check_float, dim_known


class AttentionLayer(Layer):
    """Scaled dot-product attention over the last two dims of q, k and v."""

    layer_type = LayerType.ATTENTION
    min_inputs, max_inputs = 1, 3
    scale = Float(1.0)
    heads = Int(0, minimum=0)
    packed_qkv = Bool(False)

    def infer(self, in_shapes, in_dtypes):
        if self.packed_qkv:
            in_shapes, in_dtypes = self._unpack(in_shapes, in_dtypes)
        elif len(in_shapes) != 3:
            self.fail("inputs", f"{len(in_shapes)} tensors", "3 (query, key, value); or 1 with packed_qkv")
        if self.heads:
            in_shapes = [self._split(name, s) for name, s in zip(("query", "key", "value"), in_shapes)]
        (shape, dtype), = self._infer_split(in_shapes, in_dtypes)
        if self.heads:       # (N, heads, Sq, Dv) -> (N, Sq, heads * Dv)
            n, h, sq, dv = shape
            shape = (n, sq, h * dv if dim_known(dv) else -1)
        return [(shape, dtype)]

    def _unpack(self, in_shapes, in_dtypes):
        """The one packed (N, S, 3 * heads * D) input as the three (N, S, heads * D)
        shapes of its q, k and v blocks."""
        h = self.heads
        if len(in_shapes) != 1:
            self.fail("inputs", f"{len(in_shapes)} tensors", "1 (q | k | v packed) with packed_qkv")
        if not h:
            self.fail("packed_qkv", "True with heads = 0", "heads > 0 (the packed form is per-head)")
        shape = in_shapes[0]
        if len(shape) != 3:
            self.fail("qkv", f"shape {shape}", f"rank 3 (N, S, 3 * heads * D) with heads = {h}")
        e = shape[2]
        if dim_known(e) and e % (3 * h):
            self.fail("qkv", f"last dim {e} (shape {shape})", f"a multiple of 3 * heads = {3 * h}")
        block = shape[:2] + (e // 3 if dim_known(e) else -1,)
        return [block] * 3, list(in_dtypes) * 3

    def _split(self, name, shape):
        """A packed (N, S, heads * D) shape as the (N, heads, S, D) one it stands for."""
        h = self.heads
        if len(shape) != 3:
            self.fail(name, f"shape {shape}", f"rank 3 (N, S, heads * D) with heads = {h}")
        e = shape[2]
        if dim_known(e) and e % h:
            self.fail(name, f"last dim {e} (shape {shape})", f"a multiple of heads = {h}")
        return (shape[0], h, shape[1], e // h if dim_known(e) else -1)

    def _infer_split(self, in_shapes, in_dtypes):
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
    if layer.packed_qkv:
        return [A.attention_packed(inputs[0], layer.scale, layer.heads)]
    return [A.attention(inputs[0], inputs[1], inputs[2], layer.scale, layer.heads)]
