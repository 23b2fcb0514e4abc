"""Q/K/V merge: self-attention's three projections of one input become one GEMM.

After attention_fusion an encoder block reads

    x -MM(Wq)+bq-> q ┐
    x -MM(Wk)+bk-> k ├-> Attention(heads)          three launches of (S x K) @ (K x E)
    x -MM(Wv)+bv-> v ┘

and this pass makes it

    x -MM([Wq | Wk | Wv]) + [bq | bk | bv]-> qkv (N, S, 3E) -> Attention(heads, packed_qkv)

one launch of (S x K) @ (K x 3E): at BERT's batch 1 each projection alone
leaves most of the GPU idle, the merged one fills three times the tiles. The
attention reads q, k and v as strided views of the packed result, so nothing is
copied (TensorRT's and FasterTransformer's fused QKV GEMM do the same).

The three matmuls must be interchangeable but for their weights: the same left
operand (op0 NONE), a constant right operand each (leading dims 1, op1 NONE or
TRANSPOSE, the same K and the same width E), a bias on all or none, no residual,
the same fused activation, the same precision constraints, each output read by
the attention alone (not a network output), no INT8 dynamic range on an output
or on the weights. Different alphas are folded into the weights (in float64,
one rounding to the weights' type); the epilogue adds the bias after alpha, so
the bias is untouched.
"""
import numpy as np

from ..layers.classes import MatrixMultiplyLayer
from ..types import LayerType, MatrixOperation as MO
from .graph import rewrite_matches, single_consumer, unique_name

NAME = "qkv_merge"


def _weight(mm):
    """(K, E) view of the matmul's constant right operand, the Constant layer, its
    leading (all 1) dims, or None when the operand is not such a constant."""
    if mm._inputs[1].dynamic_range is not None:      # an INT8 range of these weights alone
        return None
    c = mm._inputs[1].producer
    if c is None or c.layer_type != LayerType.CONSTANT or c.weights is None:
        return None
    w = np.asarray(c.weights).reshape(tuple(c.shape))
    if w.ndim < 2 or any(d != 1 for d in w.shape[:-2]):
        return None
    w2 = w.reshape(w.shape[-2:])
    return (w2.T if mm.op1 == MO.TRANSPOSE else w2), c, w.shape[:-2]


def _same(values):
    return all(v == values[0] for v in values[1:])


def _match(network, att, uses):
    """The three projections feeding ``att`` as [(matmul, (K, E) weight, constant, lead)],
    or None when they cannot be merged."""
    if att.heads <= 0 or att.packed_qkv or len(att._inputs) != 3:
        return None
    found = []
    for i, t in enumerate(att._inputs):
        mm = t.producer
        if mm is None or mm.layer_type != LayerType.MATRIX_MULTIPLY or mm in [f[0] for f in found]:
            return None
        if single_consumer(network, t, uses) != (att, i) or t.dynamic_range is not None:
            return None
        if mm.op0 != MO.NONE or mm.op1 not in (MO.NONE, MO.TRANSPOSE) or mm.residual is not None:
            return None
        w = _weight(mm)
        if w is None:
            return None
        found.append((mm,) + w)
    mms = [f[0] for f in found]
    ws = [f[1] for f in found]
    consts = [f[2] for f in found]
    x = mms[0]._inputs[0]
    if any(m._inputs[0] is not x for m in mms):
        return None
    if not _same([w.shape for w in ws]) or not _same([w.dtype for w in ws]):
        return None
    if not _same([m.bias is None for m in mms]):
        return None
    if not _same([(m.post_activation, m.post_params()) for m in mms]):
        return None
    if not _same([(m._precision, m._output_types) for m in mms]):
        return None
    if not _same([(c._precision, c._output_types) for c in consts]) or not _same([f[3] for f in found]):
        return None
    return found


def _move_before(network, layer, anchor):
    network._layers.remove(layer)
    network._layers.insert(network._layers.index(anchor), layer)


def _rewrite(network, att, found):
    mms = [f[0] for f in found]
    first, lead = mms[0], found[0][3]
    alphas = [m.alpha for m in mms]
    wdt = found[0][1].dtype
    if _same(alphas):
        w = np.concatenate([f[1] for f in found], axis=1)
        alpha = alphas[0]
    else:     # y = alpha * x @ W + b = x @ (alpha W) + b: the bias is added after alpha
        w = np.concatenate([a * f[1].astype(np.float64) for a, f in zip(alphas, found)], axis=1).astype(wdt)
        alpha = 1.0
    op1 = MO.TRANSPOSE if all(m.op1 == MO.TRANSPOSE for m in mms) else MO.NONE
    if op1 == MO.TRANSPOSE:
        w = w.T
    w = np.ascontiguousarray(w).reshape(tuple(lead) + w.shape)
    const = network.add_constant(w.shape, w)
    const.name = unique_name(network, first.name + "_qkv_weights")
    const._precision = found[0][2]._precision
    const._output_types = dict(found[0][2]._output_types)
    bias = None
    if first.bias is not None:
        bias = np.concatenate([np.asarray(m.bias).reshape(-1) for m in mms]).astype(np.asarray(first.bias).dtype)
    merged = MatrixMultiplyLayer(network, [first._inputs[0], const.get_output(0)], op0=MO.NONE, op1=op1,
                                 alpha=alpha, bias=bias, post_activation=first.post_activation,
                                 post_alpha=first.post_alpha, post_beta=first.post_beta)
    merged.name = unique_name(network, first.name + "_qkv")
    merged._precision = first._precision
    merged._output_types = dict(first._output_types)
    network._add(merged)
    # the merged GEMM runs where the earliest projection ran: x exists by then,
    # and the attention comes after all three
    anchor = min(mms, key=network._layers.index)
    _move_before(network, const, anchor)
    _move_before(network, merged, anchor)
    att._inputs = [merged.get_output(0)]
    att._attrs["packed_qkv"] = True     # inputs and form change together: no re-check between
    network._dirty = True
    for mm in mms:
        network.remove_layer(mm)


def run(network):
    merged, _ = rewrite_matches(network, LayerType.ATTENTION, _match, _rewrite)
    return merged
