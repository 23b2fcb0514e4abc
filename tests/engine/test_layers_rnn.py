"""RNNv2 (RELU, TANH, LSTM, GRU; uni/bidirectional; stacked; SKIP input;
initial states; sequence lengths) against Keras cells stepped one sequence at
a time, plus shape inference and every argument error."""
import numpy as np
import pytest

import engine as rt
from engine.testing import interpret, rel_l2

tf = pytest.importorskip("tensorflow")

G = rt.RNNGateType
OP = rt.RNNOperation
GATES = {OP.RELU: [G.INPUT], OP.TANH: [G.INPUT],
         OP.LSTM: [G.INPUT, G.FORGET, G.CELL, G.OUTPUT],   # Keras' i, f, c, o order
         OP.GRU: [G.UPDATE, G.RESET, G.HIDDEN]}             # Keras' z, r, h order


def make_params(rng, op, e, h, layers, dirs, skip):
    """{(index, gate): (W or None, R, Wb, Rb)} of random non-zero weights."""
    p = {}
    for index in range(layers * dirs):
        width = e if index < dirs else h * dirs
        for gate in GATES[op]:
            w = None if (skip and index < dirs) else rng.uniform(-0.5, 0.5, (h, width))
            p[index, gate] = tuple(None if a is None else a.astype(np.float32) for a in
                                   (w, rng.uniform(-0.5, 0.5, (h, h)), rng.uniform(-0.3, 0.3, h),
                                    rng.uniform(-0.3, 0.3, h)))
    return p


def keras_cell(op, params, index, e_in, h):
    """A Keras cell holding sub-layer ``index``'s weights. Keras keeps kernels
    as (in, gates*H) and a GRU's two biases as rows of one (2, 3H) array."""
    rows = [params[index, g] for g in GATES[op]]
    w = np.concatenate([np.eye(h, e_in, dtype=np.float32) if r[0] is None else r[0]
                        for r in rows]).T
    rk = np.concatenate([r[1] for r in rows]).T
    wb, rb = np.concatenate([r[2] for r in rows]), np.concatenate([r[3] for r in rows])
    if op == OP.LSTM:
        cell, bias = tf.keras.layers.LSTMCell(h), wb + rb
    elif op == OP.GRU:
        cell, bias = tf.keras.layers.GRUCell(h, reset_after=True), np.stack([wb, rb])
    else:
        cell, bias = tf.keras.layers.SimpleRNNCell(h, activation=op.name.lower()), wb + rb
    cell.build((None, e_in))
    cell.set_weights([w, rk, bias])
    return cell


def keras_reference(op, params, x, layers, h, dirs, h0, c0, lengths):
    """Each sequence alone, cut at its length, each direction stepped by Keras."""
    n, t_max, e = x.shape
    y = np.zeros((n, t_max, h * dirs), np.float32)
    h_t, c_t = h0.copy(), c0.copy()
    cells = {i: keras_cell(op, params, i, e if i < dirs else h * dirs, h)
             for i in range(layers * dirs)}
    for b in range(n):
        inp = x[b, :lengths[b]]
        for layer in range(layers):
            halves = []
            for d in range(dirs):
                i = layer * dirs + d
                state = [h0[b:b + 1, i]] + ([c0[b:b + 1, i]] if op == OP.LSTM else [])
                outs = []
                for step in (inp if d == 0 else inp[::-1]):
                    out, state = cells[i](step[None], state)
                    outs.append(np.asarray(out)[0])
                outs = np.array(outs, np.float32).reshape(-1, h)
                halves.append(outs if d == 0 else outs[::-1])
                h_t[b, i] = np.asarray(state[0])[0]
                if op == OP.LSTM:
                    c_t[b, i] = np.asarray(state[1])[0]
            inp = np.concatenate(halves, axis=-1)
        y[b, :lengths[b]] = inp
    return y, h_t, c_t


def build(op, params, n, t, e, h, layers, bidir=False, skip=False, states=False, lengths=False):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (n, t, e))
    rnn = net.add_rnn_v2(x, layers, h, t, op)
    rnn.direction = rt.RNNDirection.BIDIRECTION if bidir else rt.RNNDirection.UNIDIRECTION
    rnn.input_mode = rt.RNNInputMode.SKIP if skip else rt.RNNInputMode.LINEAR
    for (index, gate), (w, r, wb, rb) in params.items():
        if w is not None:
            rnn.set_weights_for_gate(index, gate, True, w)
        rnn.set_weights_for_gate(index, gate, False, r)
        rnn.set_bias_for_gate(index, gate, True, wb)
        rnn.set_bias_for_gate(index, gate, False, rb)
    s = (n, layers * (2 if bidir else 1), h)
    if states:
        rnn.hidden_state = net.add_input("h0", rt.float32, s)
        if op == OP.LSTM:
            rnn.cell_state = net.add_input("c0", rt.float32, s)
    if lengths:
        rnn.seq_lengths = net.add_input("len", rt.int32, (n,))
    for i in range(rnn.num_outputs):
        net.mark_output(rnn.get_output(i))
    return net, rnn


CASES = [  # op, layers, bidirectional, SKIP input, initial states, sequence lengths
    (OP.LSTM, 1, False, False, False, False),
    (OP.LSTM, 2, True, False, True, True),
    (OP.LSTM, 2, False, True, True, False),
    (OP.GRU, 2, False, False, True, False),
    (OP.GRU, 1, True, False, False, True),
    (OP.GRU, 2, True, False, True, True),
    (OP.RELU, 1, False, False, True, False),
    (OP.RELU, 2, True, True, False, True),
    (OP.TANH, 2, True, False, True, True),
    (OP.TANH, 1, False, True, False, True),
]


@pytest.mark.parametrize("op, layers, bidir, skip, states, use_lengths", CASES)
def test_rnn_matches_keras_cells(op, layers, bidir, skip, states, use_lengths):
    rng = np.random.default_rng(11)
    n, t, h = 3, 5, 4
    e = h if skip else 3
    dirs = 2 if bidir else 1
    params = make_params(rng, op, e, h, layers, dirs, skip)
    net, rnn = build(op, params, n, t, e, h, layers, bidir, skip, states, use_lengths)
    x = rng.standard_normal((n, t, e)).astype(np.float32)
    s = (n, layers * dirs, h)
    h0 = rng.standard_normal(s).astype(np.float32) if states else np.zeros(s, np.float32)
    c0 = rng.standard_normal(s).astype(np.float32) if states else np.zeros(s, np.float32)
    lengths = np.array([5, 2, 0], np.int32) if use_lengths else np.full(n, t, np.int32)
    feeds = {"x": x}
    if states:
        feeds["h0"] = h0
        if op == OP.LSTM:
            feeds["c0"] = c0
    if use_lengths:
        feeds["len"] = lengths
    got = interpret(net, feeds)
    ref = keras_reference(op, params, x, layers, h, dirs, h0, c0, lengths)
    names = [rnn.get_output(i).name for i in range(rnn.num_outputs)]
    assert rnn.num_outputs == (3 if op == OP.LSTM else 2)
    for name, want in zip(names, ref):
        assert got[name].shape == want.shape
        assert rel_l2(got[name], want) <= 1e-5, name
    if use_lengths:   # past a sequence's end: zeros; a zero-length sequence keeps its state
        assert not got[names[0]][1, 2:].any() and not got[names[0]][2].any()
        np.testing.assert_array_equal(got[names[1]][2], h0[2])


def test_rnn_plan_round_trip_and_batch_dims():
    rng = np.random.default_rng(3)
    params = make_params(rng, OP.LSTM, 3, 4, 2, 2, False)
    net, rnn = build(OP.LSTM, params, 4, 5, 3, 4, 2, bidir=True)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    ref = interpret(net, {"x": x})
    b = rt.Builder()
    engine = b.build_engine(net, b.create_builder_config())
    got = engine.create_execution_context().execute({"x": x})
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name])
    # several leading batch dims run as one flattened batch
    net2, rnn2 = build(OP.LSTM, params, 4, 5, 3, 4, 2, bidir=True)
    net2.get_input(0).shape = (2, 2, 5, 3)
    assert rnn2.get_output(0).shape == (2, 2, 5, 8) and rnn2.get_output(1).shape == (2, 2, 4, 4)
    got2 = interpret(net2, {"x": x.reshape(2, 2, 5, 3)})
    for i in range(3):
        np.testing.assert_allclose(got2[rnn2.get_output(i).name].reshape(ref[rnn.get_output(i).name].shape),
                                   ref[rnn.get_output(i).name], rtol=1e-6, atol=1e-7)


def small(op=OP.GRU, shape=(2, 5, 3), h=4, layers=2):
    net = rt.Network()
    x = net.add_input("x", rt.float32, shape)
    return net, x, net.add_rnn_v2(x, layers, h, 6, op)


def test_rnn_shapes_propagate_dynamic_dims_and_reinfer():
    net, x, rnn = small(OP.LSTM, (-1, -1, 3))
    assert [t.shape for t in rnn._outputs] == [(-1, -1, 4), (-1, 2, 4), (-1, 2, 4)]
    rnn.direction = rt.RNNDirection.BIDIRECTION
    assert [t.shape for t in rnn._outputs] == [(-1, -1, 8), (-1, 4, 4), (-1, 4, 4)]
    rnn.hidden_size = 7
    assert rnn.get_output(0).shape == (-1, -1, 14)
    x.shape = (2, 6, 3)
    assert rnn.get_output(0).shape == (2, 6, 14) and rnn.data_length == 3
    assert rnn.num_directions == 2 and rnn.gates == (G.INPUT, G.FORGET, G.CELL, G.OUTPUT)
    assert rnn.hidden_state is None and rnn.cell_state is None and rnn.seq_lengths is None


def test_rnn_weight_accessors_and_flat_weights():
    net, x, rnn = small()
    w = np.arange(12, dtype=np.float32)              # TensorRT's flat Weights, row-major (H, E)
    rnn.set_weights_for_gate(0, G.RESET, True, rt.Weights(w))
    np.testing.assert_array_equal(rnn.get_weights_for_gate(0, G.RESET, True), w.reshape(4, 3))
    rnn.set_bias_for_gate(1, G.HIDDEN, False, rt.Weights(np.ones(4, np.float32)))
    np.testing.assert_array_equal(rnn.get_bias_for_gate(1, G.HIDDEN, False), np.ones(4))
    assert rnn.get_weights_for_gate(1, G.HIDDEN, True) is None
    assert set(rnn.weights) == {"L0.RESET.W"} and set(rnn.biases) == {"L1.HIDDEN.R"}
    rnn.weights = {"L0.RESET.W": np.ones((4, 3))}       # float64 taken as float32
    assert rnn.weights["L0.RESET.W"].dtype == np.float32


def test_rnn_missing_weights_fail_at_run_time_naming_layer_and_gate():
    net, x, rnn = small()
    rnn.set_weights_for_gate(0, G.UPDATE, True, np.ones((4, 3), np.float32))
    net.mark_output(rnn.get_output(0))
    with pytest.raises(rt.BuildError, match="no R weights for sub-layer 0 gate UPDATE.*"
                       "11 missing.*set_weights_for_gate\\(0, RNNGateType.UPDATE, False"):
        interpret(net, {"x": np.ones((2, 5, 3), np.float32)})
    assert "L1.HIDDEN.W" in rnn.missing_weights()


def test_rnn_rejects_out_of_range_sequence_lengths():
    rng = np.random.default_rng(5)
    net, rnn = build(OP.TANH, make_params(rng, OP.TANH, 3, 4, 1, 1, False), 2, 5, 3, 4, 1,
                     lengths=True)
    with pytest.raises(rt.ExecutionError, match="seq_lengths range over \\[2, 6\\].*\\[0, 5\\]"):
        interpret(net, {"x": np.ones((2, 5, 3), np.float32), "len": np.array([2, 6], np.int32)})


@pytest.mark.parametrize("action, match", [
    (lambda n, x, r: r.set_weights_for_gate(4, G.UPDATE, True, np.ones((4, 3))),
     "layer_index' is 4; expected an int in \\[0, 2\\)"),
    (lambda n, x, r: r.set_weights_for_gate(True, G.UPDATE, True, np.ones((4, 3))),
     "layer_index' is True"),
    (lambda n, x, r: r.set_bias_for_gate(0, G.FORGET, True, np.ones(4)),
     "gate' is <RNNGateType.FORGET.*a gate of GRU: UPDATE, RESET, HIDDEN"),
    (lambda n, x, r: r.set_weights_for_gate(0, G.UPDATE, 1, np.ones((4, 3))),
     "is_w' is 1"),
    (lambda n, x, r: r.set_weights_for_gate(0, G.UPDATE, True, np.ones((4, 5))),
     "weights' is L0.UPDATE.W of shape \\(4, 5\\); expected shape \\(4, 3\\)"),
    (lambda n, x, r: r.set_weights_for_gate(1, G.UPDATE, True, np.ones((4, 3))),
     "L1.UPDATE.W of shape \\(4, 3\\); expected shape \\(4, 4\\)"),
    (lambda n, x, r: r.set_weights_for_gate(0, G.UPDATE, False, np.ones((3, 4))),
     "expected shape \\(4, 4\\)"),
    (lambda n, x, r: r.set_bias_for_gate(0, G.UPDATE, False, np.ones(3)),
     "biases' is L0.UPDATE.R of shape \\(3,\\); expected shape \\(4,\\)"),
    (lambda n, x, r: r.set_weights_for_gate(0, G.UPDATE, True, np.ones((4, 3), np.int32)),
     "weights' is L0.UPDATE.W: an array of int32; expected float32 or float16"),
    (lambda n, x, r: setattr(r, "weights", [1, 2]), "weights' is list"),
    (lambda n, x, r: setattr(r, "weights", {"L9.UPDATE.W": np.ones((4, 3))}),
     "weights' is 'L9.UPDATE.W'; expected keys"),
    (lambda n, x, r: setattr(r, "biases", {"bogus": np.ones(4)}), "biases' is 'bogus'"),
    (lambda n, x, r: setattr(r, "input_mode", rt.RNNInputMode.SKIP),
     "input_mode' is SKIP with input size 3; expected input size == hidden_size \\(4\\)"),
    (lambda n, x, r: setattr(r, "max_seq_length", 4),
     "input' is 5 time steps.*at most max_seq_length = 4"),
    (lambda n, x, r: setattr(r, "op", OP.LSTM),
     "op' is LSTM \\(3 outputs\\); expected an operation with this layer's 2 outputs"),
    (lambda n, x, r: r.set_input(2, n.add_input("c0", rt.float32, (2, 2, 4))),
     "cell_state' is a tensor; expected none: only LSTM has a cell state"),
    (lambda n, x, r: setattr(r, "hidden_state", n.add_input("h0", rt.float32, (2, 1, 4))),
     "hidden_state' is shape \\(2, 1, 4\\); expected shape \\(2, 2, 4\\)"),
    (lambda n, x, r: setattr(r, "hidden_state", n.add_input("h0", rt.int32, (2, 2, 4))),
     "hidden_state' is a INT32 tensor"),
    (lambda n, x, r: setattr(r, "seq_lengths", n.add_input("l", rt.float32, (2,))),
     "seq_lengths' is a FLOAT tensor; expected an INT32 tensor"),
    (lambda n, x, r: setattr(r, "seq_lengths", n.add_input("l", rt.int32, (3,))),
     "seq_lengths' is shape \\(3,\\); expected shape \\(2,\\)"),
])
def test_rnn_rejects_bad_arguments_and_rolls_back(action, match):
    net, x, rnn = small()
    before = ([t.shape for t in rnn._outputs], dict(rnn.weights), rnn.num_inputs)
    with pytest.raises(rt.NetworkDefinitionError, match=match):
        action(net, x, rnn)
    assert [t.shape for t in rnn._outputs] == before[0] and rnn.weights.keys() == before[1].keys()
    assert rnn.op == OP.GRU and rnn.input_mode == rt.RNNInputMode.LINEAR


def test_rnn_skip_mode_rejects_layer0_input_weights():
    net, x, rnn = small(OP.TANH, (2, 5, 4))
    rnn.set_weights_for_gate(0, G.INPUT, True, np.ones((4, 4), np.float32))
    with pytest.raises(rt.NetworkDefinitionError, match="W weights for L0.INPUT.W; expected no "
                       "layer-0 W weights in SKIP input mode"):
        rnn.input_mode = rt.RNNInputMode.SKIP


@pytest.mark.parametrize("shape, dtype, match", [
    ((2, 5), rt.float32, "rank >= 3"),
    ((2, 5, 3), rt.int32, "a INT32 tensor; expected a FLOAT or HALF tensor"),
])
def test_rnn_rejects_bad_input(shape, dtype, match):
    net = rt.Network()
    x = net.add_input("x", dtype, shape)
    with pytest.raises(rt.NetworkDefinitionError, match=match):
        net.add_rnn_v2(x, 1, 4, 6, OP.LSTM)
    assert net.num_layers == 0


@pytest.mark.parametrize("op, bidir, use_lengths", [(OP.LSTM, False, False), (OP.GRU, False, True),
                                                    (OP.LSTM, True, True)])
@pytest.mark.parametrize("rev_in, rev_out", [(True, False), (False, True), (True, True)])
def test_rnn_reverse_flags_flip_time_like_tf_reverse_sequence(op, bidir, use_lengths, rev_in,
                                                              rev_out):
    """reverse_input / reverse_output: the plain layer on tf.reverse_sequence'd data
    (Keras' go_backwards is reverse_input); plans keep the flags."""
    rng = np.random.default_rng(5)
    n, t, e, h = 3, 6, 3, 4
    params = make_params(rng, op, e, h, 1, 2 if bidir else 1, False)
    x = rng.standard_normal((n, t, e)).astype(np.float32)
    lengths = np.array([6, 3, 1], np.int32) if use_lengths else np.full(n, t, np.int32)
    feeds = {"x": x, **({"len": lengths} if use_lengths else {})}

    def flip(a):
        return tf.reverse_sequence(a, lengths, seq_axis=1, batch_axis=0).numpy()

    plain, prnn = build(op, params, n, t, e, h, 1, bidir, lengths=use_lengths)
    ref = interpret(plain, dict(feeds, x=flip(x) if rev_in else x))
    y_ref = ref[prnn.get_output(0).name]
    y_ref = flip(y_ref) if rev_out else y_ref
    net, rnn = build(op, params, n, t, e, h, 1, bidir, lengths=use_lengths)
    rnn.reverse_input, rnn.reverse_output = rev_in, rev_out
    b = rt.Builder()
    plan = b.build_serialized_network(net, b.create_builder_config())
    got = rt.Runtime().deserialize_cuda_engine(plan).create_execution_context().execute(feeds)
    assert rel_l2(got[rnn.get_output(0).name], y_ref) <= 1e-6
    assert rel_l2(got[rnn.get_output(1).name], ref[prnn.get_output(1).name]) <= 1e-6
    if use_lengths:
        assert not got[rnn.get_output(0).name][2, 1:].any()   # past the end: still zeros
    if rev_in and not bidir and not use_lengths:     # Keras' go_backwards, stepped by Keras
        cell = keras_cell(op, params, 0, e, h)
        layer = tf.keras.layers.RNN(cell, return_sequences=True, go_backwards=True)
        np.testing.assert_allclose(layer(x).numpy(), flip(got[rnn.get_output(0).name])
                                   if rev_out else got[rnn.get_output(0).name],
                                   rtol=1e-4, atol=1e-5)
