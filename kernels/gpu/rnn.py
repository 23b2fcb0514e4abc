"""RNN / LSTM / GRU on the GPU: cuBLAS GEMMs and one fused gate kernel per step.

The same contract as the reference ``kernels.rnn.rnn`` (read its docstring
for the gate equations, the gate order and the layouts); the work per layer:

    gx = X W^T                  one GEMM over every time step and direction
    for t in 0 .. T-1:
        gh = h_{t-1} R^T        one GEMM (a strided batch of 2 when bidirectional)
        rnn_gates_step          biases, gates, cell update, length mask, h, c, y

so a layer costs T + 1 GEMMs and T small kernels, where the array-generic
reference launches a dozen elementwise kernels per step. Buffers:

    gx   (N*T, D*G*H)  row n*T + t; direction d's gates at columns d*G*H ..
    gh   (D, N, G*H)   storage dtype (cuBLAS output, FP32 accumulation)
    h, c (D, N, H)     FP32 state; hg = h in the storage dtype (the GEMM operand)
    y    (N, T, D*H)   the layer's output and the next layer's input

The gate kernel is kernels/cuda/rnn.cu. On NumPy arrays the same driver
runs ``gates_step_numpy``, a line-by-line emulation of that kernel's index
arithmetic, so the driver is tested on machines without a GPU.

FP32 math throughout; FP16 or FP32 storage (x, weights, gx, gh, y). cuBLAS
computes FP32 GEMMs without TF32 (CuPy's default), which the FP32 tolerance
of rel L2 1e-5 needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..rnn import GATES
from ..xp import array_module
from ._launch import BLOCK, grid_1d
from .compile import ctype, get_function, i32
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "rnn.cu"
OP_CODES = {"RELU": 0, "TANH": 1, "LSTM": 2, "GRU": 3}     # RnnOp in rnn.cu
STORAGE = (np.dtype(np.float16), np.dtype(np.float32))


def _op_name(op):
    name = str(getattr(op, "name", op)).upper()
    if name not in OP_CODES:
        raise UnsupportedError(f"RNN operation {op!r}; valid: {', '.join(OP_CODES)}")
    return name


def _storage(dtype):
    dt = np.dtype(dtype)
    if dt not in STORAGE:
        raise UnsupportedError(f"RNN storage dtype {dt}; valid: float16, float32")
    return dt


@dataclass
class PackedLayer:
    """One stacked layer, both directions: wt (E, D*G*H) or None in SKIP mode,
    rt (D, H, G*H), bw and br (D, G*H) FP32."""
    wt: object
    rt: object
    bw: object
    br: object


@dataclass
class PackedRNN:
    """Weights laid out for rnn_forward, uploaded once (a tactic's state)."""
    op: str
    num_layers: int
    hidden: int
    dirs: int
    dtype: np.dtype
    layers: list = field(default_factory=list)

    def astype(self, dtype):
        """The same network with matrices in another storage dtype (biases stay FP32)."""
        dtype = _storage(dtype)
        if dtype == self.dtype:
            return self
        layers = [PackedLayer(None if p.wt is None else p.wt.astype(dtype), p.rt.astype(dtype),
                              p.bw, p.br) for p in self.layers]
        return PackedRNN(self.op, self.num_layers, self.hidden, self.dirs, dtype, layers)


def pack_params(params, op, num_layers, hidden, bidirectional=False, dtype=np.float32, xp=None):
    """kernels.rnn.rnn's per-sub-layer dicts (W, R, Wb, Rb; index 2*layer + dir)
    -> a PackedRNN on ``xp`` (default: the module of the R matrices)."""
    op = _op_name(op)
    dtype = _storage(dtype)
    dirs = 2 if bidirectional else 1
    gh = len(GATES[op]) * hidden
    if len(params) != num_layers * dirs:
        raise UnsupportedError(f"RNN params: {len(params)} sub-layers; expected num_layers x "
                               f"directions = {num_layers * dirs}")
    xp = xp or array_module(params[0]["R"])
    layers = []
    for layer in range(num_layers):
        ps = params[layer * dirs:(layer + 1) * dirs]
        for i, p in enumerate(ps):
            if tuple(p["R"].shape) != (gh, hidden):
                raise UnsupportedError(f"RNN params[{layer * dirs + i}]['R'] of shape "
                                       f"{tuple(p['R'].shape)}; expected {(gh, hidden)}")
            if p["W"] is not None and p["W"].shape[0] != gh:
                raise UnsupportedError(f"RNN params[{layer * dirs + i}]['W'] of shape "
                                       f"{tuple(p['W'].shape)}; expected ({gh}, input size)")
        skip = [p["W"] is None for p in ps]
        if any(skip) and not (all(skip) and layer == 0):
            raise UnsupportedError(f"RNN layer {layer}: W is None for {sum(skip)} of {dirs} "
                                   "directions; only layer 0 may skip W (SKIP input mode), "
                                   "and then in every direction")
        wt = None if skip[0] else xp.ascontiguousarray(
            xp.concatenate([xp.asarray(p["W"]) for p in ps]).T.astype(dtype))
        rt = xp.ascontiguousarray(xp.stack([xp.asarray(p["R"]).T for p in ps]).astype(dtype))
        bw = xp.stack([xp.asarray(p["Wb"]) for p in ps]).astype(np.float32)
        br = xp.stack([xp.asarray(p["Rb"]) for p in ps]).astype(np.float32)
        layers.append(PackedLayer(wt, rt, bw, br))
    return PackedRNN(op, int(num_layers), int(hidden), dirs, dtype, layers)


# -- the gate step: CUDA kernel, and its NumPy emulation ---------------------------

def _sigmoid(v):
    return np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * v))


def gates_step_numpy(op, gx, gx_strides, gh, bw, br, h, c, hg, y, lens, n, hidden, steps, t, dirs):
    """rnn_gates_step of rnn.cu on NumPy arrays, index for index (flat
    offsets, the same strides), so the driver's layouts are tested on the CPU."""
    gates = len(GATES[op])
    gx_row, gx_dir, gx_gate = gx_strides
    gxf, ghf, yf = gx.reshape(-1), gh.reshape(-1), y.reshape(-1)
    hf, cf, hgf = h.reshape(-1), c.reshape(-1), hg.reshape(-1)
    # the flat views write through (the buffers are contiguous, as on the device)
    assert all(a.flags.c_contiguous for a in (gx, gh, h, c, hg, y))
    i = np.arange(dirs * n * hidden)
    j, dn = i % hidden, i // hidden
    nn, d = dn % n, dn // n
    tt = np.where(d == 1, steps - 1 - t, t)
    valid = tt < lens[nn]
    yp = (nn * steps + tt) * dirs * hidden + d * hidden + j
    xp = (nn * steps + tt) * gx_row + d * gx_dir + j
    hp = dn * gates * hidden + j
    bp = d * gates * hidden + j
    s = dn * hidden + j

    def x_part(g):
        return gxf[xp + g * gx_gate].astype(np.float32) + bw.reshape(-1)[bp + g * hidden]

    def h_part(g):
        return ghf[hp + g * hidden].astype(np.float32) + br.reshape(-1)[bp + g * hidden]

    if op == "LSTM":
        a = [x_part(g) + h_part(g) for g in range(4)]
        cn = _sigmoid(a[1]) * cf[s] + _sigmoid(a[0]) * np.tanh(a[2])
        hn = _sigmoid(a[3]) * np.tanh(cn)
        cf[s[valid]] = cn[valid]
    elif op == "GRU":
        z = _sigmoid(x_part(0) + h_part(0))
        r = _sigmoid(x_part(1) + h_part(1))
        hn = (np.float32(1.0) - z) * np.tanh(x_part(2) + r * h_part(2)) + z * hf[s]
    else:
        a = x_part(0) + h_part(0)
        hn = np.maximum(a, np.float32(0.0)) if op == "RELU" else np.tanh(a)
    hf[s[valid]] = hn[valid]
    hgf[s[valid]] = hn[valid]
    yf[yp] = np.where(valid, hn, np.float32(0.0))


def gates_step_cuda(op, gx, gx_strides, gh, bw, br, h, c, hg, y, lens, n, hidden, steps, t, dirs):
    total = dirs * n * hidden
    if total == 0:
        return
    kern = get_function(SOURCE, f"rnn_gates_step<{ctype(y.dtype, 'rnn_gates_step')},{OP_CODES[op]}>")
    gx_row, gx_dir, gx_gate = gx_strides
    kern(grid_1d(total), (BLOCK,),
         (gx, np.int64(gx_row), i32(gx_dir), i32(gx_gate), gh, bw, br, h, c, hg, y, lens,
          i32(n), i32(hidden), i32(steps), i32(t), i32(dirs)))


# -- the driver ---------------------------------------------------------------------

def _state(xp, s0, layer, dirs, n, hidden):
    """(D, N, H) FP32 initial state of one layer from (N, L*D, H), or zeros."""
    if s0 is None:
        return xp.zeros((dirs, n, hidden), np.float32)
    # a copy, always: the kernel updates the state in place (and a (1, N, H)
    # view of a caller's array already counts as contiguous)
    return xp.array(s0[:, layer * dirs:(layer + 1) * dirs].transpose(1, 0, 2),
                    dtype=np.float32, order="C", copy=True)


def _check_state(s0, shape, what):
    if s0 is not None and tuple(s0.shape) != shape:
        raise UnsupportedError(f"rnn_forward: {what} of shape {tuple(s0.shape)}; expected {shape} "
                               "(N, layers*dirs, hidden)")


def rnn_forward(x, params, op, num_layers, hidden, bidirectional=False, h0=None, c0=None,
                seq_lengths=None, *, dtype=None):
    """kernels.rnn.rnn on the GPU (or, on NumPy arrays, the kernel's emulation).

    x (N, T, E); params: the reference's per-sub-layer dicts, or a PackedRNN
    (pack_params; a tactic packs once); h0/c0 (N, L*dirs, H); seq_lengths (N,)
    ints, values in [0, T] (not checked here: that needs a device sync; a value
    past T counts as T, below 0 as 0). dtype: the storage dtype (float16 or
    float32; default x's dtype when it is one of them, else float32).
    Returns (y (N, T, H*dirs), h_T, c_T or None unless LSTM), all in ``dtype``.
    """
    xp = array_module(x)
    op = _op_name(op)
    dtype = _storage(dtype if dtype is not None else
                     (x.dtype if np.dtype(x.dtype) in STORAGE else np.float32))
    if x.ndim != 3:
        raise UnsupportedError(f"rnn_forward: x of shape {tuple(x.shape)}; expected (N, T, E)")
    n, steps, e = (int(v) for v in x.shape)
    if isinstance(params, PackedRNN):
        want = (op, int(num_layers), int(hidden), 2 if bidirectional else 1)
        got = (params.op, params.num_layers, params.hidden, params.dirs)
        if got != want:
            raise UnsupportedError(f"rnn_forward: packed params for (op, layers, hidden, dirs) "
                                   f"= {got}; the call asks for {want}")
        packed = params.astype(dtype)
    else:
        packed = pack_params(params, op, num_layers, hidden, bidirectional, dtype, xp)
    dirs, hidden, layers = packed.dirs, packed.hidden, packed.num_layers
    gates = len(GATES[op])
    states = (n, layers * dirs, hidden)
    _check_state(h0, states, "h0")
    _check_state(c0, states, "c0")
    first = packed.layers[0].wt
    if (e != hidden) if first is None else (e != first.shape[0]):
        raise UnsupportedError(f"rnn_forward: input size {e}; expected "
                               f"{hidden if first is None else first.shape[0]}"
                               + (" (SKIP input mode: the hidden size)" if first is None else ""))
    if seq_lengths is None:
        lens = xp.full(n, steps, np.int32)
    else:
        lens = xp.ascontiguousarray(xp.asarray(seq_lengths), dtype=np.int32)
        if lens.shape != (n,):
            raise UnsupportedError(f"rnn_forward: seq_lengths of shape {tuple(lens.shape)}; "
                                   f"expected ({n},)")
    step = gates_step_numpy if xp is np else gates_step_cuda
    lstm = op == "LSTM"
    h_t = xp.empty(states, np.float32)
    c_t = xp.empty(states, np.float32) if lstm else None
    inp = xp.ascontiguousarray(x, dtype=dtype)
    for layer, p in enumerate(packed.layers):
        h = _state(xp, h0, layer, dirs, n, hidden)
        c = _state(xp, c0, layer, dirs, n, hidden) if lstm else h   # c unused unless LSTM
        hg = h if dtype == np.float32 else h.astype(dtype)
        if p.wt is None:                   # SKIP: every gate of every direction reads x
            gx, strides = inp, (hidden, 0, 0)
        else:
            gx = xp.matmul(inp.reshape(n * steps, -1), p.wt)
            strides = (dirs * gates * hidden, gates * hidden, hidden)
        gh = xp.empty((dirs, n, gates * hidden), dtype)
        y = xp.empty((n, steps, dirs * hidden), dtype)
        for t in range(steps):
            if dirs == 1:
                xp.matmul(hg[0], p.rt[0], out=gh[0])
            else:
                xp.matmul(hg, p.rt, out=gh)
            step(op, gx, strides, gh, p.bw, p.br, h, c, hg, y, lens, n, hidden, steps, t, dirs)
        h_t[:, layer * dirs:(layer + 1) * dirs] = h.transpose(1, 0, 2)
        if lstm:
            c_t[:, layer * dirs:(layer + 1) * dirs] = c.transpose(1, 0, 2)
        inp = y
    return (inp, h_t.astype(dtype, copy=False),
            None if c_t is None else c_t.astype(dtype, copy=False))


# the GEMMs are cuBLAS (CuPy); rnn.cu holds the fused gate step
FAMILY = KernelFamily(SOURCE, launch=(rnn_forward,))
