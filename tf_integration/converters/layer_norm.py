"""Layer normalisation as Keras writes it, recognised at its last add and turned into
the engine's Normalization layer (TensorRT's INormalizationLayer).

Both Keras 3 and tf_keras spell a LayerNormalization out as moments and a
rescale (tf.nn.moments + batch_normalization), which differ only in how the
shift is written:

    mean = Mean(x, axes, keep_dims)            var = Mean(SquaredDifference(x, StopGradient(mean)))
    m    = Rsqrt(var + eps) [* gamma]
    Keras 3:   out = x * m + ((-mean) * m + beta)
    tf_keras:  out = x * m + (beta - mean * m)

The match is made on the segment's own graph, so every node of the pattern must
be in the segment; anything else (a missing node, a computed gamma, other axes
for the variance) is no match and the nodes convert one by one as before.
"""
import numpy as np

import engine as rt

from ..context import Value
from ..graph_utils import canonical, get_attr, parse_input

_PASS = ("Identity", "StopGradient", "Snapshot")


class _Pattern:
    def __init__(self, graph):
        self.graph = graph

    def node(self, tensor, *ops):
        """The producer of ``tensor`` if its op is one of ``ops`` (identities skipped)."""
        name, port, _ = parse_input(tensor)
        node = self.graph.nodes.get(name)
        while node is not None and node.op in _PASS and node.op not in ops:
            name, port, _ = parse_input(node.input[0])
            node = self.graph.nodes.get(name)
        if node is None or port != 0 or node.op not in ops:
            return None
        return node

    def inputs(self, node):
        return [canonical(i) for i in node.input if not i.startswith("^")]

    def const(self, tensor):
        return self.graph.const_value(tensor) if self.graph.is_const(tensor) else None

    def same(self, a, b):
        """Both tensors are the same value once identities are skipped."""
        return self._root(a) == self._root(b)

    def _root(self, tensor):
        name, port, _ = parse_input(tensor)
        node = self.graph.nodes.get(name)
        while node is not None and node.op in _PASS:
            name, port, _ = parse_input(node.input[0])
            node = self.graph.nodes.get(name)
        return (name, port)

    def mean(self, tensor):
        """(x, axes) of Mean(x, const axes, keep_dims=True), else None."""
        node = self.node(tensor, "Mean")
        if node is None or not get_attr(node, "keep_dims", False):
            return None
        x, axes = self.inputs(node)
        axes = self.const(axes)
        return None if axes is None else (x, tuple(sorted(int(a) for a in np.ravel(axes))))

    def factor(self, tensor):
        """Rsqrt(var + eps) [* gamma]: (x, mean tensor, axes, eps, gamma or None)."""
        gamma = None
        mul = self.node(tensor, "Mul")
        if mul is not None:
            a, b = self.inputs(mul)
            for r, g in ((a, b), (b, a)):
                if self.node(r, "Rsqrt") is not None and self.const(g) is not None:
                    tensor, gamma = r, self.const(g)
                    break
            else:
                return None
        rsqrt = self.node(tensor, "Rsqrt")
        if rsqrt is None:
            return None
        add = self.node(self.inputs(rsqrt)[0], "Add", "AddV2")
        if add is None:
            return None
        a, b = self.inputs(add)
        for v, e in ((a, b), (b, a)):
            eps = self.const(e)
            var = self.mean(v)
            if eps is None or var is None or np.size(eps) != 1:
                continue
            sqd = self.node(var[0], "SquaredDifference")
            if sqd is None:
                continue
            x, mean_t = self.inputs(sqd)
            mean = self.mean(mean_t)
            if mean is None or not self.same(mean[0], x) or mean[1] != var[1]:
                continue
            return x, mean_t, var[1], float(np.ravel(eps)[0]), gamma
        return None

    def shift(self, tensor, mean_t, m):
        """beta of Keras 3's (-mean) * m + beta or tf_keras' beta - mean * m, else None."""
        add = self.node(tensor, "Add", "AddV2")
        if add is not None:
            a, b = self.inputs(add)
            for p, beta in ((a, b), (b, a)):
                mul = self.node(p, "Mul")
                if mul is None or self.const(beta) is None:
                    continue
                u, v = self.inputs(mul)
                for neg, mm in ((u, v), (v, u)):
                    n = self.node(neg, "Neg")
                    if n is not None and self.same(mm, m) and self.same(self.inputs(n)[0], mean_t):
                        return self.const(beta)
        sub = self.node(tensor, "Sub")
        if sub is not None:
            beta, p = self.inputs(sub)
            mul = self.node(p, "Mul")
            if mul is not None and self.const(beta) is not None:
                u, v = self.inputs(mul)
                if (self.same(u, mean_t) and self.same(v, m)) or \
                        (self.same(v, mean_t) and self.same(u, m)):
                    return self.const(beta)
        return None


def match_layer_norm(graph, node):
    """(x tensor, axes, epsilon, gamma, beta) when ``node`` is the last add of a layer
    norm in ``graph``; None otherwise."""
    if node.op not in ("Add", "AddV2"):
        return None
    pat = _Pattern(graph)
    a, b = pat.inputs(node)
    for scaled, rest in ((a, b), (b, a)):
        mul = pat.node(scaled, "Mul")
        if mul is None:
            continue
        u, v = pat.inputs(mul)
        for x, m in ((u, v), (v, u)):
            found = pat.factor(m)
            if found is None or not pat.same(found[0], x):
                continue
            _, mean_t, axes, eps, gamma = found
            beta = pat.shift(rest, mean_t, m)
            if beta is not None and eps > 0:
                return x, axes, eps, gamma, beta
    return None


def convert_layer_norm(ctx, node):
    """The Normalization layer for ``node`` (a Value), or None when it is no layer norm."""
    found = match_layer_norm(ctx.graph, node)
    if found is None:
        return None
    x_name, axes, eps, gamma, beta = found
    x = ctx.value(x_name)
    if x.is_const:
        return None
    axes = sorted({a % x.rank for a in axes})
    dtype = np.float16 if x.tensor.dtype == rt.float16 else np.float32
    shape = x.tf_shape()
    params = []
    for p in (np.ones(1) if gamma is None else gamma, beta):
        p = np.asarray(p, dtype)
        if p.ndim > x.rank:
            return None
        p = p.reshape((1,) * (x.rank - p.ndim) + p.shape)
        if any(d != 1 and d != shape[i] for i, d in enumerate(p.shape)):
            return None      # a parameter that does not broadcast to x as the layer needs
        params.append(ctx.tensor(Value(const=p), x.perm))
    mask = 0
    for a in axes:
        mask |= 1 << x.tf_axis_to_engine(a)
    layer = ctx.network.add_normalization(ctx.tensor(x, x.perm), params[0], params[1], mask)
    layer.epsilon = eps
    ctx.name(layer, "layer_norm")
    return Value(layer.get_output(0), perm=x.perm)
