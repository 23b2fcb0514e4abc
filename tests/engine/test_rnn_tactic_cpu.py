"""The RnnFused GPU tactic's engine-side logic without a GPU: with NumPy standing
in for CuPy, prepare/run take the kernel driver's NumPy path (the gate kernel's
emulation), and must agree with the layer's NumPy adapter: leading batch dims,
optional states and lengths, FP16 rounding, output dtypes, and its errors.
(tests/gpu/test_rnn_gpu.py runs the same tactic on the device.)"""
import numpy as np
import pytest

import engine as rt
from engine.backends.numpy_backend import NumpyBackend
from engine.errors import ExecutionError
from engine.gpu import rnn_tactics
from engine.gpu.tactics import by_name, candidates
from engine.testing import rel_l2

G, OP = rt.RNNGateType, rt.RNNOperation
GATES = {OP.RELU: [G.INPUT], OP.TANH: [G.INPUT],
         OP.LSTM: [G.INPUT, G.FORGET, G.CELL, G.OUTPUT], OP.GRU: [G.UPDATE, G.RESET, G.HIDDEN]}


@pytest.fixture
def numpy_device(monkeypatch):
    monkeypatch.setattr(rnn_tactics, "cupy", lambda: np)


def rnn_layer(op, layers=1, bidir=False, skip=False, states=False, lengths=False,
              batch=(3,), t=5, h=4, seed=5):
    rng = np.random.default_rng(seed)
    dirs = 2 if bidir else 1
    e = h if skip else 3
    net = rt.Network()
    x = net.add_input("x", rt.float32, batch + (t, e))
    rnn = net.add_rnn_v2(x, layers, h, t, op)
    rnn.direction = rt.RNNDirection.BIDIRECTION if bidir else rt.RNNDirection.UNIDIRECTION
    rnn.input_mode = rt.RNNInputMode.SKIP if skip else rt.RNNInputMode.LINEAR
    for index in range(layers * dirs):
        for gate in GATES[op]:
            if not (skip and index < dirs):
                rnn.set_weights_for_gate(index, gate, True, rng.uniform(
                    -0.5, 0.5, (h, e if index < dirs else h * dirs)).astype(np.float32))
            rnn.set_weights_for_gate(index, gate, False, rng.uniform(-0.5, 0.5, (h, h)).astype(np.float32))
            rnn.set_bias_for_gate(index, gate, True, rng.uniform(-0.3, 0.3, h).astype(np.float32))
            rnn.set_bias_for_gate(index, gate, False, rng.uniform(-0.3, 0.3, h).astype(np.float32))
    s = batch + (layers * dirs, h)
    feeds = [rng.standard_normal(batch + (t, e)).astype(np.float32), None, None, None]
    if states:
        rnn.hidden_state = net.add_input("h0", rt.float32, s)
        feeds[1] = rng.standard_normal(s).astype(np.float32)
        if op == OP.LSTM:
            rnn.cell_state = net.add_input("c0", rt.float32, s)
            feeds[2] = rng.standard_normal(s).astype(np.float32)
    if lengths:
        rnn.seq_lengths = net.add_input("len", rt.int32, batch)
        feeds[3] = rng.integers(0, t + 1, batch).astype(np.int32)
        feeds[3].reshape(-1)[:2] = (0, t)[:feeds[3].size]
    while feeds[-1] is None:
        feeds.pop()
    return rnn, feeds


CASES = [(OP.LSTM, 1, False, False, False, False), (OP.LSTM, 2, True, False, True, True),
         (OP.GRU, 2, True, False, True, True), (OP.GRU, 1, False, True, True, False),
         (OP.RELU, 2, False, False, False, True), (OP.TANH, 1, True, True, True, True)]


@pytest.mark.parametrize("precision", [rt.float32, rt.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("batch", [(3,), (2, 3)], ids=["n", "n1xn2"])
@pytest.mark.parametrize("op, layers, bidir, skip, states, lengths", CASES)
def test_fused_tactic_matches_the_numpy_adapter(numpy_device, op, layers, bidir, skip, states,
                                                lengths, batch, precision):
    rnn, feeds = rnn_layer(op, layers, bidir, skip, states, lengths, batch)
    out_dtypes = [precision] * rnn.num_outputs
    ref = NumpyBackend.run_layer(rnn, feeds, precision, out_dtypes)
    tactic = by_name(rnn, "rnn.fused")
    shapes = [None if f is None else f.shape for f in feeds]
    assert tactic.supports(rnn, shapes, [None if f is None else f.dtype.name for f in feeds],
                           precision) is None
    state = tactic.prepare(rnn)
    for _ in range(2):                          # the FP16 weights are cast once, then reused
        got = tactic.run(state, rnn, feeds, precision, out_dtypes)
        assert len(got) == len(ref) == (3 if op == OP.LSTM else 2)
        for a, b in zip(got, ref):
            assert a.shape == b.shape and a.dtype == b.dtype == precision.to_numpy()
            assert rel_l2(a, b) <= (1e-2 if precision == rt.float16 else 1e-5)
    assert set(state) == {np.dtype(np.float32), np.dtype(precision.to_numpy())}


def test_fused_tactic_is_the_first_rnn_candidate_and_not_capturable():
    rnn, _ = rnn_layer(OP.GRU)
    names = [t.name for t in candidates(rnn)]
    assert names[0] == "rnn.fused" and "cupy.generic" in names
    assert not by_name(rnn, "rnn.fused").capturable_for(rnn)
    assert "rnn.fused" not in [t.name for t in candidates(rnn, rt.int8)]


def test_fused_tactic_declines_int8_and_missing_weights():
    rnn, feeds = rnn_layer(OP.LSTM)
    t = by_name(rnn, "rnn.fused")
    assert "FLOAT or HALF" in t.supports(rnn, [feeds[0].shape], ["float32"], rt.int8)
    rnn.weights = {k: v for k, v in rnn.weights.items() if k != "L0.CELL.R"}
    assert t.supports(rnn, [feeds[0].shape], ["float32"], rt.float32) == "unset gate weights"


@pytest.mark.parametrize("bad", [-1, 6])
def test_sequence_lengths_out_of_range_are_an_execution_error(numpy_device, bad):
    rnn, feeds = rnn_layer(OP.GRU, lengths=True)
    feeds[3] = np.array([2, bad, 5], np.int32)
    t = by_name(rnn, "rnn.fused")
    with pytest.raises(ExecutionError, match=rf"seq_lengths range over \[{min(bad, 2)}, {max(bad, 5)}\]; "
                                             r"expected values in \[0, 5\]"):
        t.run(t.prepare(rnn), rnn, feeds, rt.float32, [rt.float32] * 2)
