"""NumPy reference for TensorRT's IRNNv2Layer (RNN with ReLU/tanh, LSTM, GRU).

Gate equations, as TensorRT documents them (X input, H hidden, C cell; W input
weights, R recurrent weights, Wb/Rb their biases; σ the logistic sigmoid):

    RELU/TANH  H' = f(Wi X + Ri H + Wbi + Rbi)
    LSTM       i = σ(Wi X + Ri H + Wbi + Rbi)      f = σ(Wf X + Rf H + Wbf + Rbf)
               o = σ(Wo X + Ro H + Wbo + Rbo)      c = tanh(Wc X + Rc H + Wbc + Rbc)
               C' = f * C + i * c                  H' = o * tanh(C')
    GRU        z = σ(Wz X + Rz H + Wbz + Rbz)      r = σ(Wr X + Rr H + Wbr + Rbr)
               h = tanh(Wh X + r * (Rh H + Rbh) + Wbh)
               H' = (1 - z) * h + z * H

(the GRU is the "reset after" variant, as cuDNN and Keras' reset_after=True.)

Layout: x (N, T, E); states (N, L*dirs, H) with sub-layer index 2*layer + dir
for bidirectional networks; the output is (N, T, H*dirs), forward half first.
The input projection of a whole sequence is one matmul; only the recurrent
part loops, over time steps.
"""
import numpy as np

from .xp import array_module

# the order in which a gate's rows are stacked in the fused W/R matrices
GATES = {
    "RELU": ("INPUT",),
    "TANH": ("INPUT",),
    "LSTM": ("INPUT", "FORGET", "CELL", "OUTPUT"),
    "GRU": ("UPDATE", "RESET", "HIDDEN"),
}


def sigmoid(x):
    # 0.5 * (1 + tanh(x / 2)) never overflows, unlike 1 / (1 + exp(-x))
    return 0.5 * (1.0 + array_module(x).tanh(0.5 * x))


def _step(op, gx, gh, h, c, hidden):
    """One cell step for a batch: gx = W X + Wb, gh = R H + Rb (gates stacked)."""
    xp = array_module(gx)
    if op == "LSTM":
        a = gx + gh
        i, f, g, o = (a[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * xp.tanh(g)
        return sigmoid(o) * xp.tanh(c), c
    if op == "GRU":
        z = sigmoid(gx[:, :hidden] + gh[:, :hidden])
        r = sigmoid(gx[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
        n = xp.tanh(gx[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
        return (1.0 - z) * n + z * h, c
    a = gx + gh
    return (xp.maximum(a, 0.0) if op == "RELU" else xp.tanh(a)), c


def rnn(x, params, op, num_layers, hidden, bidirectional=False, h0=None, c0=None,
        seq_lengths=None):
    """Run a stacked (bi)directional RNN.

    params: one dict per sub-layer (index 2*layer + dir when bidirectional)
    with "W" (G*H, in) or None for identity input (SKIP mode: every gate sees X
    itself), "R" (G*H, H), "Wb" (G*H,), "Rb" (G*H,), gates stacked in GATES[op]
    order. seq_lengths (N,) ints: steps at or past a sequence's length produce
    zeros and leave the state alone, so the final state is the one after the
    last valid step; the reverse direction starts at each sequence's own end.
    Returns (y, h_T, c_T); c_T is None unless op == "LSTM".
    """
    xp = array_module(x)
    x = x.astype(np.float32, copy=False)
    n, steps, _ = x.shape
    dirs = 2 if bidirectional else 1
    gates = len(GATES[op])
    h_t = xp.zeros((n, num_layers * dirs, hidden), np.float32) if h0 is None else \
        xp.array(h0, dtype=np.float32)
    c_t = xp.zeros_like(h_t) if c0 is None else xp.array(c0, dtype=np.float32)
    mask = None
    if seq_lengths is not None:
        mask = (xp.arange(steps)[None, :] < xp.asarray(seq_lengths)[:, None])[:, :, None]
    inp = x
    for layer in range(num_layers):
        halves = []
        for d in range(dirs):
            idx = layer * dirs + d
            p = params[idx]
            if p["W"] is None:
                gx_all = xp.concatenate([inp] * gates, axis=-1) + p["Wb"]
            else:
                gx_all = xp.matmul(inp, p["W"].T) + p["Wb"]
            r_t, rb = p["R"].T, p["Rb"]
            h, c = h_t[:, idx], c_t[:, idx]
            y = xp.zeros((n, steps, hidden), np.float32)
            for t in (range(steps - 1, -1, -1) if d == 1 else range(steps)):
                h_new, c_new = _step(op, gx_all[:, t], h @ r_t + rb, h, c, hidden)
                if mask is None:
                    h, c = h_new, c_new
                    y[:, t] = h
                else:
                    m = mask[:, t]
                    h, c = xp.where(m, h_new, h), xp.where(m, c_new, c)
                    y[:, t] = xp.where(m, h_new, 0.0)
            h_t[:, idx], c_t[:, idx] = h, c
            halves.append(y)
        inp = halves[0] if dirs == 1 else xp.concatenate(halves, axis=-1)
    return inp, h_t, (c_t if op == "LSTM" else None)


def reverse_sequences(x, seq_lengths=None):
    """x (N, T, ...) with each sequence's first ``seq_lengths[n]`` steps in reverse
    order and the steps after them left in place (tf.reverse_sequence on axis 1);
    the whole time axis when seq_lengths is None."""
    xp = array_module(x)
    if seq_lengths is None:
        return xp.ascontiguousarray(x[:, ::-1])
    steps = x.shape[1]
    t = xp.arange(steps)[None, :]
    lengths = xp.asarray(seq_lengths).reshape(-1, 1)
    src = xp.where(t < lengths, lengths - 1 - t, t)          # (N, T) source step
    src = src.reshape(src.shape + (1,) * (x.ndim - 2))
    return xp.take_along_axis(x, src, axis=1)
