"""RNN / LSTM / GRU on the GPU (cuBLAS GEMMs + the fused gate kernel of
kernels/cuda/rnn.cu): kernels.gpu.rnn.rnn_forward against the reference
kernels.rnn.rnn on the same parameters, and the rnn.fused tactic forced
through a CuPy-backend engine against the NumPy backend. RELU, TANH, LSTM,
GRU; uni/bidirectional; 1 and 2 layers; SKIP input; initial states; sequence
lengths including 0 and full; FP32 (rel L2 <= 1e-5) and FP16 (<= 1e-2)."""
import numpy as np
import pytest

import engine as rt
from engine.testing import rel_l2
from kernels import rnn as K

cp = pytest.importorskip("cupy")

OPS = ("LSTM", "GRU", "RELU", "TANH")
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-2}
# layers, bidirectional, SKIP input, initial states, sequence lengths
SHAPES = [(1, False, False, False, False), (2, True, False, True, True),
          (2, False, True, True, True), (1, True, True, False, True),
          (2, True, False, False, False), (1, False, False, True, True)]


def uniform(rng, shape):
    a = 1.0 / np.sqrt(shape[-1])
    return rng.uniform(-a, a, shape).astype(np.float32)


def make_case(op, layers, bidir, skip, states, lengths, n=5, t=7, h=16, seed=0):
    rng = np.random.default_rng(seed)
    dirs = 2 if bidir else 1
    g = len(K.GATES[op])
    e = h if skip else 12
    params = []
    for index in range(layers * dirs):
        # U(+-1/sqrt(fan in)): a contractive recurrence (spectral radius ~0.6), so
        # a long RELU/TANH sequence neither overflows FP16 nor amplifies rounding
        width = e if index < dirs else h * dirs
        params.append({
            "W": None if (skip and index < dirs) else uniform(rng, (g * h, width)),
            "R": uniform(rng, (g * h, h)),
            "Wb": rng.uniform(-0.3, 0.3, g * h).astype(np.float32),
            "Rb": rng.uniform(-0.3, 0.3, g * h).astype(np.float32)})
    x = rng.standard_normal((n, t, e)).astype(np.float32)
    s = (n, layers * dirs, h)
    h0 = rng.standard_normal(s).astype(np.float32) if states else None
    c0 = rng.standard_normal(s).astype(np.float32) if states and op == "LSTM" else None
    lens = None
    if lengths:
        lens = rng.integers(1, t, n).astype(np.int32)
        lens[:2] = (0, t)                       # an empty and a full sequence
    return params, x, h0, c0, lens


def on_device(a):
    return None if a is None else cp.asarray(a)


def check(got, ref, dtype):
    assert len(got) == 3 and (got[2] is None) == (ref[2] is None)
    for a, b in zip(got, ref):
        if b is not None:
            assert isinstance(a, cp.ndarray) and a.dtype == dtype
            assert rel_l2(a.get(), b) <= TOL[np.dtype(dtype)]


# -- the launcher --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("layers, bidir, skip, states, lengths", SHAPES)
@pytest.mark.parametrize("op", OPS)
def test_rnn_forward_matches_reference(op, layers, bidir, skip, states, lengths, dtype):
    from kernels.gpu.rnn import rnn_forward
    params, x, h0, c0, lens = make_case(op, layers, bidir, skip, states, lengths)
    h = params[0]["R"].shape[1]
    ref = K.rnn(x, params, op, layers, h, bidir, h0, c0, lens)
    dev = [{k: on_device(v) for k, v in p.items()} for p in params]
    got = rnn_forward(cp.asarray(x), dev, op, layers, h, bidir, on_device(h0), on_device(c0),
                      on_device(lens), dtype=dtype)
    check(got, ref, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("op", OPS)
def test_rnn_forward_larger_shapes_and_packed_weights(op, dtype):
    """Many blocks per step (D*N*H = 2*24*96), long sequences, weights packed once."""
    from kernels.gpu.rnn import pack_params, rnn_forward
    params, x, h0, c0, lens = make_case(op, 2, True, False, True, True, n=24, t=40, h=96, seed=1)
    ref = K.rnn(x, params, op, 2, 96, True, h0, c0, lens)
    packed = pack_params([{k: on_device(v) for k, v in p.items()} for p in params],
                         op, 2, 96, True, dtype)
    for _ in range(2):                            # state buffers are fresh per call
        got = rnn_forward(cp.asarray(x), packed, op, 2, 96, True, on_device(h0), on_device(c0),
                          on_device(lens), dtype=dtype)
        check(got, ref, dtype)


def test_rnn_forward_matches_its_numpy_emulation_closely():
    """The CUDA kernel and gates_step_numpy (its CPU emulation, which the CPU tests
    check against the reference) agree to rounding on the same packed weights."""
    from kernels.gpu.rnn import rnn_forward
    params, x, h0, c0, lens = make_case("LSTM", 2, True, False, True, True)
    host = rnn_forward(x, params, "LSTM", 2, 16, True, h0, c0, lens)
    dev = rnn_forward(cp.asarray(x), [{k: on_device(v) for k, v in p.items()} for p in params],
                      "LSTM", 2, 16, True, on_device(h0), on_device(c0), on_device(lens))
    for a, b in zip(dev, host):
        np.testing.assert_allclose(a.get(), b, rtol=1e-5, atol=1e-6)


def test_rnn_forward_leaves_its_inputs_alone():
    from kernels.gpu.rnn import rnn_forward
    params, x, h0, c0, lens = make_case("GRU", 1, False, False, True, True)
    dx, dh = cp.asarray(x), cp.asarray(h0)
    rnn_forward(dx, [{k: on_device(v) for k, v in p.items()} for p in params], "GRU", 1, 16,
                False, dh, None, on_device(lens))
    np.testing.assert_array_equal(dx.get(), x)
    np.testing.assert_array_equal(dh.get(), h0)


# -- the tactic, forced through the engine -----------------------------------------------

def rnn_network(op, layers, bidir, skip, states, lengths, batch=(5,), t=7, h=16, seed=2):
    rng = np.random.default_rng(seed)
    dirs = 2 if bidir else 1
    e = h if skip else 12
    net = rt.Network()
    x = net.add_input("x", rt.float32, batch + (t, e))
    rnn = net.add_rnn_v2(x, layers, h, t, rt.RNNOperation[op])
    rnn.direction = rt.RNNDirection.BIDIRECTION if bidir else rt.RNNDirection.UNIDIRECTION
    rnn.input_mode = rt.RNNInputMode.SKIP if skip else rt.RNNInputMode.LINEAR
    for index in range(layers * dirs):
        for gate in rnn.gates:
            if not (skip and index < dirs):
                rnn.set_weights_for_gate(index, gate, True,
                                         uniform(rng, (h, e if index < dirs else h * dirs)))
            rnn.set_weights_for_gate(index, gate, False, uniform(rng, (h, h)))
            rnn.set_bias_for_gate(index, gate, True, rng.uniform(-0.3, 0.3, h).astype(np.float32))
            rnn.set_bias_for_gate(index, gate, False, rng.uniform(-0.3, 0.3, h).astype(np.float32))
    feeds = {"x": rng.standard_normal(batch + (t, e)).astype(np.float32)}
    s = batch + (layers * dirs, h)
    if states:
        rnn.hidden_state = net.add_input("h0", rt.float32, s)
        feeds["h0"] = rng.standard_normal(s).astype(np.float32)
        if op == "LSTM":
            rnn.cell_state = net.add_input("c0", rt.float32, s)
            feeds["c0"] = rng.standard_normal(s).astype(np.float32)
    if lengths:
        rnn.seq_lengths = net.add_input("len", rt.int32, batch)
        lens = rng.integers(1, t, batch).astype(np.int32)
        lens.reshape(-1)[:2] = (0, t)
        feeds["len"] = lens
    for i in range(rnn.num_outputs):
        net.mark_output(rnn.get_output(i))
    return net, feeds


def build(net, backend, fp16, cache=None):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = backend
    cfg.timing_cache_path = cache
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    plan = b.build_serialized_network(net, cfg)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(plan)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("layers, bidir, skip, states, lengths", SHAPES)
@pytest.mark.parametrize("op", OPS)
def test_fused_tactic_forced_through_the_engine(op, layers, bidir, skip, states, lengths, fp16):
    net, feeds = rnn_network(op, layers, bidir, skip, states, lengths)
    ref = build(net, "numpy", fp16).create_execution_context().execute(feeds)
    engine = build(net, "cupy", fp16)
    layer = engine.network.get_layer(0)
    engine.backend.forced[layer.name] = "rnn.fused"
    engine.backend._build_shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    context = engine.create_execution_context()
    for _ in range(3):                # eager, then the (eager, cuBLAS) replays of a shape
        got = context.execute(feeds)
        assert engine.backend.selected[layer.name] == "rnn.fused"
        assert set(got) == set(ref)
        for name, value in ref.items():
            assert got[name].shape == value.shape and got[name].dtype == value.dtype
            assert rel_l2(got[name], value) <= (1e-2 if fp16 else 1e-5), name


@pytest.mark.parametrize("op", OPS)
def test_fused_tactic_with_several_batch_dims(op):
    net, feeds = rnn_network(op, 2, True, False, True, True, batch=(2, 3))
    ref = build(net, "numpy", False).create_execution_context().execute(feeds)
    engine = build(net, "cupy", False)
    layer = engine.network.get_layer(0)
    engine.backend.forced[layer.name] = "rnn.fused"
    engine.backend._build_shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    got = engine.create_execution_context().execute(feeds)
    assert engine.backend.selected[layer.name] == "rnn.fused"
    for name, value in ref.items():
        assert rel_l2(got[name], value) <= 1e-5, name


def test_the_builder_times_the_fused_tactic(tmp_path):
    """Left to itself, the builder measures rnn.fused among the RNN candidates
    (a fresh timing cache: a hit would skip the timing)."""
    net, feeds = rnn_network("LSTM", 2, True, False, True, True, t=9, h=24)
    engine = build(net, "cupy", False, cache=str(tmp_path / "timing.cache"))
    engine.create_execution_context().execute(feeds)
    layer = engine.network.get_layer(0)
    timed = engine.backend.timings.get(layer.name) or engine.backend.meta.get("tactic_ms", {}).get(layer.name, {})
    assert "rnn.fused" in timed and timed["rnn.fused"] is not None, timed
