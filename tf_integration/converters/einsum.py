"""Einsum as matrix multiplies, the way TensorRT's ONNX parser lowers it.

Two operands A and B: every index is one of

    batch  in A, B and the output        K  in A and B only (contracted)
    M      in A and the output only      N  in B and the output only

(an index in one operand and nowhere else is summed away first). A is laid out
as [batch, M..., K] and B as [batch, K, N] (or K and N swapped, read with
TRANSPOSE, when that is the layout B already has), several K dims merged into
one, several N dims merged into one and split again after. Extra M dims stay
dims of their own: they act as batch dims of A against which B broadcasts, so a
projection ``abc,cde->abde`` on a (batch, seq, d) input needs no dynamic dim
merged at all:

    A (a, b, c)  @  B (1, c, d*e)  ->  (a, b, d*e)  -> reshape (0, 0, d, e)

Where dims that are only known at run time must be merged or split, the
reshape takes a shape tensor (tensor.reshape_to), which a build at concrete
shapes turns back into static dims. The output's index order becomes the
Value's layout, so no transpose is emitted for it.
"""
import string

import numpy as np

import engine as rt

from ..context import Value, perm_after_removing
from ..errors import ConversionError
from ..graph_utils import get_attr
from ..registry import Reason, converter
from .tensor import reshape_to, shape_of

MO = rt.MatrixOperation


def parse(equation, ranks):
    """(operand index strings, output string) with any ellipsis expanded into fresh
    letters, right-aligned across operands as NumPy broadcasting aligns dims."""
    eq = equation.replace(" ", "")
    if "->" not in eq:
        raise ConversionError(f"einsum equation {equation!r} has no '->'; expected an explicit "
                              "output (as Keras and tf.einsum write it)")
    lhs, out = eq.split("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ConversionError(f"einsum equation {equation!r} names {len(terms)} operands; the "
                              f"node has {len(ranks)}")
    fresh = [c for c in string.ascii_letters if c not in eq]
    counts = [r - len(t.replace("...", "")) if "..." in t else 0 for t, r in zip(terms, ranks)]
    width = max(counts + [0])
    ell = "".join(fresh[:width])
    expanded = []
    for t, r, n in zip(terms, ranks, counts):
        t = t.replace("...", ell[width - n:] if n else "")
        if len(t) != r or not all(c in string.ascii_letters for c in t):
            raise ConversionError(f"einsum term {t!r} of {equation!r} does not index a rank-{r} "
                                  "operand with letters")
        if len(set(t)) != len(t):
            raise ConversionError(f"einsum term {t!r} of {equation!r} repeats an index (a "
                                  "diagonal); the engine has no diagonal extraction")
        expanded.append(t)
    out = out.replace("...", ell)
    if len(set(out)) != len(out) or any(c not in "".join(expanded) for c in out):
        raise ConversionError(f"einsum output {out!r} of {equation!r}: each index once, and "
                              "only indices of the operands")
    return expanded, out


def _validate_einsum(node, graph):
    """one or two operands of static rank; explicit output; no repeated index in a term"""
    data = [i for i in node.input if not i.startswith("^")]
    if len(data) not in (1, 2):
        return Reason(Reason.ATTRIBUTE, f"einsum of {len(data)} operands; expected 1 or 2")
    ranks = [graph.shape(i).rank for i in data]
    try:
        parse(get_attr(node, "equation"), ranks)
    except ConversionError as exc:
        return Reason(Reason.ATTRIBUTE, str(exc))
    return None


# ---------------------------------------------------------------------------- helpers

def _layout(ctx, v, axes):
    """Engine tensor of ``v`` with TF axes in the order ``axes``, as an identity Value."""
    if v.is_const:
        return Value(const=np.ascontiguousarray(np.transpose(v.const, axes)))
    return Value(ctx.tensor(v, tuple(axes)))


def _reduce_sum(ctx, v, term, drop):
    """Sum ``v`` (indexed by ``term``) over the indices ``drop``."""
    axes = [term.index(c) for c in drop]
    keep = "".join(c for c in term if c not in drop)
    if v.is_const:
        return Value(const=v.const.sum(axis=tuple(axes))), keep
    mask = 0
    for a in axes:
        mask |= 1 << v.tf_axis_to_engine(a)
    layer = ctx.network.add_reduce(ctx.tensor(v, v.perm), rt.ReduceOperation.SUM, mask, False)
    ctx.name(layer, "einsum_sum")
    return Value(layer.get_output(0), perm=perm_after_removing(v.perm, axes)), keep


def _regroup(ctx, x, groups):
    """Reshape identity-layout ``x`` so that each group (a list of (Value, TF axis)
    sources whose dims multiply, or an int) becomes one dim: static dims, 0 = copy
    the same dim, one -1; else a shape tensor built from the sources' shapes."""
    if all(not isinstance(g, int) and len(g) == 1 and g[0][0] is x and g[0][1] == i
           for i, g in enumerate(groups)) and len(groups) == x.rank:
        return x                             # nothing changes
    if x.is_const:
        dims = [g if isinstance(g, int) else
                int(np.prod([src.tf_shape()[a] for src, a in g], dtype=np.int64)) for g in groups]
        return Value(const=x.const.reshape(dims))
    dims, unknown = [], 0
    for i, g in enumerate(groups):
        sizes = [g] if isinstance(g, int) else [src.tf_shape()[a] for src, a in g]
        if -1 not in sizes:
            dims.append(int(np.prod(sizes, dtype=np.int64)))
        elif len(g) == 1 and g[0][0] is x and g[0][1] == i:
            dims.append(0)                   # the same dim at the same place: copy it
        else:
            dims.append(-1)
            unknown += 1
    if unknown <= 1:
        layer = ctx.network.add_shuffle(ctx.tensor(x))
        layer.reshape_dims = tuple(dims)
        ctx.name(layer, "einsum_reshape")
        return Value(layer.get_output(0))
    parts = []
    for g in groups:
        if isinstance(g, int):
            parts.append(ctx.constant(np.array([g], np.int32)))
            continue
        piece = None
        for src, a in g:
            d = ctx.network.add_gather(ctx.tensor(shape_of(ctx, src)),
                                       ctx.constant(np.array([a], np.int32)), 0).get_output(0)
            piece = d if piece is None else ctx.network.add_elementwise(
                piece, d, rt.ElementWiseOperation.PROD).get_output(0)
        parts.append(piece)
    layer = ctx.network.add_concatenation(parts, axis=0)
    ctx.name(layer, "einsum_dims")
    return reshape_to(ctx, x, Value(layer.get_output(0)))


def _matrix(ctx, v, term, batch, free, k, is_b):
    """Operand ``v`` (indexed by ``term``) as a stack of matrices and its op:

        A: [batch, free..., K]  NONE       or [batch, K, free]  TRANSPOSE
        B: [batch, K, free]     NONE       or [batch, free, K]  TRANSPOSE

    the TRANSPOSE form only where it is the layout ``v`` already has (no shuffle).
    Several K dims become one (a unit dim when there are none); B's free dims
    become one; A keeps its free dims (the extra ones broadcast B) or gets a unit."""
    pref, alt = (batch + k + free, batch + free + k) if is_b else \
        (batch + free + k, batch + k + free)
    axes = {o: tuple(term.index(c) for c in o) for o in map(tuple, (pref, alt))}
    use_alt = (not v.is_const and (is_b or len(free) == 1)
               and axes[tuple(alt)] == tuple(v.perm) and axes[tuple(pref)] != tuple(v.perm))
    order = list(alt if use_alt else pref)
    m = _layout(ctx, v, axes[tuple(order)])

    def group(idx):
        return [(m, order.index(c)) for c in idx] if idx else 1

    groups = [[(m, i)] for i in range(len(batch))]
    free_groups = ([[(m, order.index(c))] for c in free] or [1]) if not is_b else [group(free)]
    k_group = [group(k)]
    transposed_a = not is_b and use_alt
    groups += (k_group + free_groups) if (is_b and not use_alt) or transposed_a else \
        (free_groups + k_group)
    return _regroup(ctx, m, groups), (MO.TRANSPOSE if use_alt else MO.NONE)


def _unsqueeze(ctx, v, axes):
    if not axes:
        return v
    if v.is_const:
        c = v.const
        for a in sorted(axes):
            c = np.expand_dims(c, a)
        return Value(const=c)
    layer = ctx.network.add_unsqueeze(ctx.tensor(v), tuple(axes))
    ctx.name(layer, "einsum_unsqueeze")
    return Value(layer.get_output(0))


# ---------------------------------------------------------------------------- converter

@converter("Einsum", validator=_validate_einsum)
def convert_einsum(ctx, node):
    n = len([i for i in node.input if not i.startswith("^")])
    ops = [ctx.input(node, i) for i in range(n)]
    terms, out = parse(get_attr(node, "equation"), [v.rank for v in ops])
    # indices in one operand only and not in the output are summed first
    for i, (v, t) in enumerate(zip(ops, terms)):
        others = "".join(terms[:i] + terms[i + 1:]) + out
        drop = [c for c in t if c not in others]
        if drop:
            ops[i], terms[i] = _reduce_sum(ctx, v, t, drop)
    if n == 1:
        v, t = ops[0], terms[0]
        perm = [t.index(c) for c in out]
        if v.is_const:
            return [Value(const=np.transpose(v.const, perm))]
        return [Value(v.tensor, perm=tuple(perm.index(p) for p in v.perm))]
    (a, b), (ta, tb) = ops, terms
    m_idx = [c for c in out if c in ta and c not in tb]
    n_idx = [c for c in out if c in tb and c not in ta]
    if m_idx and n_idx and out.index(n_idx[0]) < out.index(m_idx[0]):
        (a, b), (ta, tb), (m_idx, n_idx) = (b, a), (tb, ta), (n_idx, m_idx)
    batch = [c for c in out if c in ta and c in tb]
    k = [c for c in ta if c in tb and c not in out]
    am, op0 = _matrix(ctx, a, ta, batch, m_idx, k, is_b=False)
    bm, op1 = _matrix(ctx, b, tb, batch, n_idx, k, is_b=True)
    nb = len(batch)
    # extra M dims of A are batch dims of the product: B broadcasts over them
    bm = _unsqueeze(ctx, bm, list(range(nb, nb + max(0, len(m_idx) - 1))))
    rank = max(am.rank, bm.rank)
    ident = tuple(range(rank))
    layer = ctx.network.add_matrix_multiply(ctx.broadcast(am, rank, ident), op0,
                                            ctx.broadcast(bm, rank, ident), op1)
    ctx.name(layer, "einsum")
    y = Value(layer.get_output(0))
    letters = batch + (m_idx or ["1"]) + ["N"]
    if len(n_idx) == 1:
        letters[-1] = n_idx[0]
    else:
        # split the merged N dim (or drop the unit one) back into the output's dims
        groups = [[(y, i)] for i in range(len(letters) - 1)]
        groups += [[(b, tb.index(c))] for c in n_idx]
        y = _regroup(ctx, y, groups)
        letters = letters[:-1] + n_idx
    if not m_idx:
        layer = ctx.network.add_squeeze(ctx.tensor(y), (nb,))
        ctx.name(layer, "einsum_squeeze")
        y = Value(layer.get_output(0))
        letters.remove("1")
    if y.is_const:
        return [Value(const=np.transpose(y.const, [letters.index(c) for c in out]))]
    return [Value(y.tensor, perm=tuple(out.index(c) for c in letters))]
