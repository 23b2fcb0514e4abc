"""Attention fusion: the chain a transformer's self-attention arrives as,

    MatMul(q, k^T) -> [PROD by a scalar constant | UNIFORM Scale] -> SoftMax(last axis) -> MatMul(p, v)

becomes one Attention layer (engine/layers/attention.py), whose GPU tactic
never writes the scores to memory. The scale may already sit in the first
matmul's alpha (matmul_epilogue_fusion folds a scalar PROD there) or still be
its own layer; both are taken, and both together multiply.

The rewrite needs every intermediate (scores, scaled scores, probabilities)
to have exactly one reader and not be a network output (the fused layer
never materialises them), the first matmul to carry nothing but alpha in its
epilogue (a bias or a residual there is a mask: not ours), the second none
at all, q, k and v to share their batch dims, and every layer of the chain
to carry the same precision constraints (a constrained layer stays its own).

Then the heads shuffles around an Attention layer go into it too, when all
four are there and read by nothing else (the layer's ``heads``):

    (N, S, H*D) -reshape (N, S, H, D), transpose (0, 2, 1, 3)-> (N, H, S, D)    x3: q, k, v
    (N, H, S, D) -transpose (0, 2, 1, 3), reshape (N, S, H*D)-> (N, S, H*D)      the result

so the kernel reads the projections and writes the merged heads in place
(strides), and four copies per attention block are gone.
"""
import numpy as np

from ..layers.attention import AttentionLayer
from ..types import ElementWiseOperation as EW, LayerType, MatrixOperation as MO, ScaleMode
from ..layers.base import dim_known
from .graph import rewrite_matches, single_consumer, unique_name

NAME = "attention_fusion"


def _scalar_constant(t):
    """The value of ``t`` when a Constant layer makes it and it holds one value, else None."""
    p = t.producer
    if p is None or p.layer_type != LayerType.CONSTANT or p.weights is None:
        return None
    w = np.asarray(p.weights)
    return float(w.reshape(())) if w.size == 1 else None


def _scaling(layer):
    """(scores, factor) when ``layer`` only multiplies its input by a constant
    scalar (ElementWise PROD with a one-value Constant, or a UNIFORM Scale with
    a scale alone), else None."""
    if layer.layer_type == LayerType.ELEMENTWISE and layer.op == EW.PROD:
        a, b = layer._inputs
        for scores, other in ((a, b), (b, a)):
            c = _scalar_constant(other)
            # the constant must not broadcast the scores to a larger shape
            if c is not None and layer._outputs[0].shape == scores.shape:
                return scores, c
        return None
    if layer.layer_type == LayerType.SCALE and layer.mode == ScaleMode.UNIFORM:
        if layer.shift is not None or layer.power is not None or layer.scale is None:
            return None
        return layer._inputs[0], float(np.asarray(layer.scale).reshape(()))
    return None


def _same_constraints(layers):
    first = layers[0]
    return all(x._precision == first._precision and x._output_types == first._output_types
               for x in layers[1:])


def _match(network, sm, uses):
    """The chain ending in SoftMax ``sm`` as (qk, scale layer or None, pv, scale), or None."""
    x = sm._inputs[0]
    rank = len(x.shape)
    if rank < 2 or sm.axis(rank) != rank - 1:
        return None
    pv_use = single_consumer(network, sm._outputs[0], uses)
    if pv_use is None or pv_use[1] != 0:
        return None
    pv = pv_use[0]
    if (pv.layer_type != LayerType.MATRIX_MULTIPLY or (pv.op0, pv.op1) != (MO.NONE, MO.NONE)
            or pv.has_epilogue):
        return None
    scale, scaler, scores = 1.0, None, x
    p = x.producer
    if p is not None and p.layer_type in (LayerType.ELEMENTWISE, LayerType.SCALE):
        found = _scaling(p)
        if found is None:
            return None
        scaler, (scores, scale) = p, found
        if single_consumer(network, scores, uses) is None:
            return None
        p = scores.producer
    if single_consumer(network, x, uses) is None:
        return None
    qk = p
    if (qk is None or qk.layer_type != LayerType.MATRIX_MULTIPLY
            or (qk.op0, qk.op1) != (MO.NONE, MO.TRANSPOSE) or qk.bias is not None
            or qk.residual is not None or qk.post_activation is not None):
        return None
    q, k = qk._inputs[:2]
    v = pv._inputs[1]
    if not (len(q.shape) == len(k.shape) == len(v.shape) == rank):
        return None
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        return None                     # broadcast batches stay unfused (the kernel walks one)
    chain = [qk] + ([scaler] if scaler is not None else []) + [sm, pv]
    if not _same_constraints(chain):
        return None
    if len({t.dtype for t in (q, k, v, scores, x, sm._outputs[0], pv._outputs[0])}) != 1:
        return None
    return qk, scaler, pv, scale * qk.alpha


def _rewrite(network, sm, qk, scaler, pv, scale):
    q, k = qk._inputs[:2]
    att = AttentionLayer(network, [q, k, pv._inputs[1]], scale=scale)
    att.name = unique_name(network, sm.name + "_attention")
    network._add(att)
    att._precision = qk._precision
    att._output_types = dict(qk._output_types)
    # the fused layer runs where the second matmul ran: q, k and v all exist by then
    network._layers.remove(att)
    network._layers.insert(network._layers.index(pv), att)
    network.take_output(att, pv)
    for dead in (sm, scaler, qk):
        if dead is not None:
            network.remove_layer(dead)


def _placeholder(r, dim, shape, sh):
    """True when reshape entry ``r`` keeps dim ``dim`` of the (transposed) input:
    a 0 placeholder, or the same known size."""
    return (r == 0 and sh.zero_is_placeholder) or (r == shape[dim] and dim_known(r) and r > 0)


def _split_heads(sh):
    """``sh`` as (its input, heads) when it is the heads split
    (N, S, H*D) -> (N, H, S, D), else None."""
    if sh.layer_type != LayerType.SHUFFLE or sh.dynamic_reshape or sh.reshape_dims is None:
        return None
    if sh.first_transpose not in (None, (0, 1, 2)) or sh.second_transpose != (0, 2, 1, 3):
        return None
    x = sh._inputs[0]
    shape, r = x.shape, sh.reshape_dims
    if len(shape) != 3 or len(r) != 4 or not dim_known(shape[2]):
        return None
    heads, d = sh._outputs[0].shape[1], sh._outputs[0].shape[3]
    if not (_placeholder(r[0], 0, shape, sh) and _placeholder(r[1], 1, shape, sh)):
        return None
    if r[2] != heads or heads <= 0 or r[3] not in (-1, d) or not dim_known(d) or heads * d != shape[2]:
        return None
    return x, heads


def _merge_heads(sh, heads):
    """True when ``sh`` is the heads merge (N, H, S, D) -> (N, S, H*D) for ``heads``."""
    if sh.layer_type != LayerType.SHUFFLE or sh.dynamic_reshape or sh.reshape_dims is None:
        return False
    if sh.first_transpose != (0, 2, 1, 3) or sh.second_transpose not in (None, (0, 1, 2)):
        return False
    shape = tuple(sh._inputs[0].shape[p] for p in sh.first_transpose)     # (N, S, H, D)
    r = sh.reshape_dims
    if len(shape) != 4 or len(r) != 3 or shape[2] != heads or not dim_known(shape[3]):
        return False
    return (_placeholder(r[0], 0, shape, sh) and _placeholder(r[1], 1, shape, sh)
            and r[2] in (-1, heads * shape[3]))


def _absorb_heads(network, att, uses):
    """Take the four heads shuffles around ``att`` into it; False if they are not all there."""
    if att.heads or len(att._outputs[0].shape) != 4:
        return False
    splits = []
    for t in att._inputs:
        sh = t.producer
        if sh is None or single_consumer(network, t, uses) is None:
            return False
        found = _split_heads(sh)
        if found is None:
            return False
        splits.append((sh, *found))
    heads = splits[0][2]
    if any(h != heads for _, _, h in splits):
        return False
    if len({x.shape[0] for _, x, _ in splits}) != 1:
        return False
    use = single_consumer(network, att._outputs[0], uses)
    if use is None or not _merge_heads(use[0], heads):
        return False
    merge = use[0]
    if not _same_constraints([att, merge] + [sh for sh, _, _ in splits]):
        return False
    for i, (_, x, _) in enumerate(splits):
        att._inputs[i] = x
    att._attrs["heads"] = heads         # inputs and heads change together: no re-check between
    network._dirty = True
    network.take_output(att, merge)
    for sh, _, _ in splits:
        network.remove_layer(sh)
    return True


def run(network):
    fused, uses = rewrite_matches(network, LayerType.SOFTMAX, _match,
                                  lambda net, sm, found: _rewrite(net, sm, *found))
    for att in list(network._layers):
        if att.layer_type == LayerType.ATTENTION and _absorb_heads(network, att, uses):
            network._ensure_inferred()
            uses = network.consumers()
            fused += 1
    return fused
