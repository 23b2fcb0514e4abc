"""kernels.gpu.rnn without a GPU: the driver (packing, GEMM layouts, directions,
SKIP input, states, sequence lengths) run on NumPy arrays, where each step goes
through gates_step_numpy, the index-for-index emulation of rnn.cu,
against the reference kernels.rnn.rnn; and every error the launcher raises."""
import numpy as np
import pytest

from kernels import rnn as K
from kernels.gpu import rnn as G
from kernels.gpu.errors import UnsupportedError

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-2}


def rel_l2(out, ref):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape and np.all(np.isfinite(out))
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def make_params(rng, op, e, h, layers, dirs, skip=False):
    g = len(K.GATES[op])
    params = []
    for index in range(layers * dirs):
        width = e if index < dirs else h * dirs
        params.append({
            "W": None if (skip and index < dirs) else rng.uniform(-0.5, 0.5, (g * h, width)).astype(np.float32),
            "R": rng.uniform(-0.5, 0.5, (g * h, h)).astype(np.float32),
            "Wb": rng.uniform(-0.3, 0.3, g * h).astype(np.float32),
            "Rb": rng.uniform(-0.3, 0.3, g * h).astype(np.float32)})
    return params


def case(op, layers, bidir, skip, states, lengths, seed=3, n=3, t=5, h=4):
    rng = np.random.default_rng(seed)
    dirs = 2 if bidir else 1
    e = h if skip else 6
    params = make_params(rng, op, e, h, layers, dirs, skip)
    x = rng.standard_normal((n, t, e)).astype(np.float32)
    s = (n, layers * dirs, h)
    h0 = rng.standard_normal(s).astype(np.float32) if states else None
    c0 = rng.standard_normal(s).astype(np.float32) if states and op == "LSTM" else None
    lens = np.array([t, 2, 0][:n], np.int32) if lengths else None
    return params, x, h0, c0, lens


CASES = [(op, layers, bidir, skip, states, lengths)
         for op in ("LSTM", "GRU", "RELU", "TANH")
         for layers, bidir, skip, states, lengths in [
             (1, False, False, False, False), (2, True, False, True, True),
             (2, False, True, True, False), (1, True, True, False, True),
             (2, True, False, False, False), (1, False, False, True, True)]]


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("op, layers, bidir, skip, states, lengths", CASES)
def test_driver_matches_reference(op, layers, bidir, skip, states, lengths, dtype):
    params, x, h0, c0, lens = case(op, layers, bidir, skip, states, lengths)
    h = params[0]["R"].shape[1]
    ref = K.rnn(x, params, op, layers, h, bidir, h0, c0, lens)
    got = G.rnn_forward(x, params, op, layers, h, bidir, h0, c0, lens, dtype=dtype)
    assert len(got) == 3 and (got[2] is None) == (op != "LSTM")
    for a, b in zip(got, ref):
        if b is not None:
            assert a.dtype == dtype
            assert rel_l2(a, b) <= TOL[np.dtype(dtype)]


def test_steps_past_a_sequence_end_write_zeros_and_keep_the_state():
    params, x, h0, c0, _ = case("LSTM", 1, True, False, True, False)
    lens = np.array([5, 2, 0], np.int32)
    y, h_t, c_t = G.rnn_forward(x, params, "LSTM", 1, 4, True, h0, c0, lens)
    assert np.all(y[1, 2:] == 0) and np.all(y[2] == 0) and np.all(y[0] != 0)
    np.testing.assert_array_equal(h_t[2], h0[2])          # length 0: untouched in both directions
    np.testing.assert_array_equal(c_t[2], c0[2])
    np.testing.assert_array_equal(h_t[1, 0], y[1, 1, :4])  # forward: the last valid step
    np.testing.assert_array_equal(h_t[1, 1], y[1, 0, 4:])  # backward: ends at t = 0


def test_initial_states_and_inputs_are_not_modified():
    # a (N, 1, H) state slice transposed to (1, N, H) is already "contiguous":
    # the driver must still copy it before the kernel updates the state in place
    params, x, h0, c0, lens = case("LSTM", 1, False, False, True, True)
    saved = [a.copy() for a in (x, h0, c0, lens)]
    G.rnn_forward(x, params, "LSTM", 1, 4, False, h0, c0, lens)
    for a, b in zip((x, h0, c0, lens), saved):
        np.testing.assert_array_equal(a, b)


def test_packed_params_give_the_same_result_in_either_storage():
    params, x, h0, _, lens = case("GRU", 2, True, False, True, True)
    packed = G.pack_params(params, "GRU", 2, 4, True)
    assert packed.dtype == np.float32 and packed.astype(np.float32) is packed
    half = packed.astype(np.float16)
    assert half.layers[0].wt.dtype == np.float16 and half.layers[0].bw.dtype == np.float32
    ref = K.rnn(x, params, "GRU", 2, 4, True, h0, None, lens)
    for p, dt in ((packed, np.float32), (half, np.float16), (packed, np.float16)):
        y, h_t, c_t = G.rnn_forward(x, p, "GRU", 2, 4, True, h0, None, lens, dtype=dt)
        assert c_t is None and rel_l2(y, ref[0]) <= TOL[np.dtype(dt)]
        assert rel_l2(h_t, ref[1]) <= TOL[np.dtype(dt)]


def test_storage_dtype_defaults_to_the_input_dtype():
    params, x, *_ = case("TANH", 1, False, False, False, False)
    assert G.rnn_forward(x.astype(np.float16), params, "TANH", 1, 4)[0].dtype == np.float16
    assert G.rnn_forward(x.astype(np.float64), params, "TANH", 1, 4)[0].dtype == np.float32


def test_operation_enums_are_taken_by_name():
    from engine.types import RNNOperation
    params, x, *_ = case("RELU", 1, False, False, False, False)
    a = G.rnn_forward(x, params, RNNOperation.RELU, 1, 4)[0]
    np.testing.assert_array_equal(a, G.rnn_forward(x, params, "relu", 1, 4)[0])


def test_errors_name_the_bad_value():
    params, x, h0, c0, lens = case("LSTM", 1, False, False, True, True)
    with pytest.raises(UnsupportedError, match="RNN operation 'SRU'; valid: RELU, TANH, LSTM, GRU"):
        G.rnn_forward(x, params, "SRU", 1, 4)
    with pytest.raises(UnsupportedError, match="storage dtype int8"):
        G.rnn_forward(x, params, "LSTM", 1, 4, dtype=np.int8)
    with pytest.raises(UnsupportedError, match=r"x of shape \(15, 6\); expected \(N, T, E\)"):
        G.rnn_forward(x.reshape(15, 6), params, "LSTM", 1, 4)
    with pytest.raises(UnsupportedError, match="1 sub-layers; expected num_layers x directions = 2"):
        G.rnn_forward(x, params, "LSTM", 1, 4, bidirectional=True)
    with pytest.raises(UnsupportedError, match=r"\['R'\] of shape \(16, 4\); expected \(12, 4\)"):
        G.rnn_forward(x, params, "GRU", 1, 4)
    bad_w = [dict(params[0], W=params[0]["W"][:5])]
    with pytest.raises(UnsupportedError, match=r"\['W'\] of shape \(5, 6\); expected \(16, input size\)"):
        G.rnn_forward(x, bad_w, "LSTM", 1, 4)
    two = make_params(np.random.default_rng(0), "LSTM", 6, 4, 2, 1)
    two[1]["W"] = None
    with pytest.raises(UnsupportedError, match="only layer 0 may skip W"):
        G.rnn_forward(x, two, "LSTM", 2, 4)
    with pytest.raises(UnsupportedError, match=r"h0 of shape \(3, 2, 4\); expected \(3, 1, 4\)"):
        G.rnn_forward(x, params, "LSTM", 1, 4, h0=np.zeros((3, 2, 4), np.float32))
    with pytest.raises(UnsupportedError, match=r"c0 of shape \(3, 4\)"):
        G.rnn_forward(x, params, "LSTM", 1, 4, c0=np.zeros((3, 4), np.float32))
    with pytest.raises(UnsupportedError, match="input size 5; expected 6"):
        G.rnn_forward(x[..., :5], params, "LSTM", 1, 4)
    skip = make_params(np.random.default_rng(0), "LSTM", 4, 4, 1, 1, skip=True)
    with pytest.raises(UnsupportedError, match="input size 6; expected 4 \\(SKIP input mode"):
        G.rnn_forward(x, skip, "LSTM", 1, 4)
    with pytest.raises(UnsupportedError, match=r"seq_lengths of shape \(2,\); expected \(3,\)"):
        G.rnn_forward(x, params, "LSTM", 1, 4, seq_lengths=lens[:2])
    packed = G.pack_params(params, "LSTM", 1, 4)
    with pytest.raises(UnsupportedError, match=r"packed params for \(op, layers, hidden, dirs\) "
                                               r"= \('LSTM', 1, 4, 1\); the call asks for \('LSTM', 1, 4, 2\)"):
        G.rnn_forward(x, packed, "LSTM", 1, 4, bidirectional=True)
