"""ExecutionContext.layer_outputs and metrics.compare_tensors: every tensor an engine's layers
make, on the host in float64 (int8 codes dequantized at their scale), and the comparison of two
engines tensor by tensor that shows where they part (the NumPy backend; the CuPy backend's
eager, elision-free run through a stand-in)."""
import types

import numpy as np
import pytest

import engine as rt
from engine.backends.cupy_backend import CupyBackend
from engine.errors import ExecutionError
from engine.int8_exec import tensor_scale
from engine.metrics import compare_tensors, rel_l2

RNG = np.random.default_rng(11)
W = {"c1": (RNG.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
     "b1": (RNG.standard_normal(8) * 0.1).astype(np.float32),
     "c2": (RNG.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32),
     "b2": (RNG.standard_normal(8) * 0.1).astype(np.float32),
     "fc": (RNG.standard_normal((10, 8 * 5 * 5)) * 0.1).astype(np.float32),
     "bf": (RNG.standard_normal(10)).astype(np.float32)}
CALIB = [RNG.standard_normal((8, 3, 10, 10)).astype(np.float32) for _ in range(2)]
X = RNG.standard_normal((4, 3, 10, 10)).astype(np.float32)


def _network(c2_kernel=None):
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 3, 10, 10))
    c1 = net.add_convolution_nd(x, 8, (3, 3), kernel=W["c1"], bias=W["b1"])
    c1.padding_nd = (1, 1)
    c1.get_output(0).name = "conv1"
    h = net.add_activation(c1.get_output(0), rt.ActivationType.RELU).get_output(0)
    h.name = "relu1"
    c2 = net.add_convolution_nd(h, 8, (3, 3), kernel=W["c2"] if c2_kernel is None else c2_kernel,
                                bias=W["b2"])
    c2.padding_nd = (1, 1)
    c2.get_output(0).name = "conv2"
    p = net.add_pooling_nd(c2.get_output(0), rt.PoolingType.MAX, (2, 2))
    p.stride_nd = (2, 2)
    p.get_output(0).name = "pool"
    s = net.add_shuffle(p.get_output(0))
    s.reshape_dims = (-1, 8 * 5 * 5)
    s.get_output(0).name = "flat"
    fc = net.add_fully_connected(s.get_output(0), 10, W["fc"], W["bf"])
    fc.get_output(0).name = "logits"
    net.mark_output(fc.get_output(0))
    return b, net


def _engine(int8=False, c2_kernel=None):
    b, net = _network(c2_kernel)
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    if int8:
        cfg.set_flag(rt.BuilderFlag.INT8)
        cfg.int8_calibrator = rt.MinMaxCalibrator(CALIB)
    return rt.Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(net, cfg))


def test_every_layer_output_in_layer_order_and_the_last_is_the_engine_output():
    e = _engine()
    ctx = e.create_execution_context()
    values = ctx.layer_outputs({"x": X})
    made = [t.name for layer in e.network._layers for t in layer._outputs]
    assert list(values) == made and "logits" in values
    assert all(v.dtype == np.float64 for v in values.values())
    np.testing.assert_allclose(values["logits"], ctx.execute({"x": X})["logits"], rtol=1e-6, atol=1e-6)


def test_int8_codes_come_back_dequantized_at_their_tensor_scale():
    e = _engine(int8=True)
    values = e.create_execution_context().layer_outputs({"x": X})
    fp32 = _engine().create_execution_context().layer_outputs({"x": X})
    stored = {t.name: d for layer, _, dts in e.schedule() for t, d in zip(layer._outputs, dts)}
    int8 = [n for n, d in stored.items() if d == rt.DataType.INT8]
    assert int8, stored                                  # the test needs an int8-stored tensor
    for name in int8:
        t = next(t for layer in e.network._layers for t in layer._outputs if t.name == name)
        codes = values[name] / float(tensor_scale(t))
        np.testing.assert_allclose(codes, np.rint(codes), atol=1e-6)   # whole codes times the scale
        assert rel_l2(values[name], fp32[name]) < 0.05    # and the values they stand for
    rows = compare_tensors(values, fp32)
    assert [r["tensor"] for r in rows] == [n for n in values if n in fp32]
    assert all(0 < r["rel_l2"] < 0.05 for r in rows), rows


def test_two_engines_part_at_the_layer_that_differs():
    base = _engine().create_execution_context().layer_outputs({"x": X})
    same = _engine().create_execution_context().layer_outputs({"x": X})
    assert all(r["rel_l2"] == 0 and r["max_abs"] == 0 for r in compare_tensors(same, base))
    bent = W["c2"].copy()
    bent[3] *= 1.5                                       # one output channel of conv 2 off
    other = _engine(c2_kernel=bent).create_execution_context().layer_outputs({"x": X})
    rows = compare_tensors(other, base)
    first = next(r["tensor"] for r in rows if r["rel_l2"] > 0)
    assert first == "conv2"
    assert all(r["rel_l2"] == 0 for r in rows[:[r["tensor"] for r in rows].index("conv2")])


def test_a_tensor_of_type_int8_keeps_its_integers():
    """Only tensors stored as int8 codes between INT8 layers are dequantized: a Cast to INT8
    in an FP32 engine gives integers (and has no dynamic range to scale by)."""
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (2, 5))
    c = net.add_cast(x, rt.int8)
    c.get_output(0).name = "as_int8"
    back = net.add_cast(c.get_output(0), rt.float32)
    back.get_output(0).name = "back"
    net.mark_output(back.get_output(0))
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    e = rt.Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(net, cfg))
    feeds = {"x": np.array([[1.7, -3.2, 0.0, 100.4, -7.9]] * 2, np.float32)}
    values = e.create_execution_context().layer_outputs(feeds)
    want = e.create_execution_context().execute(feeds)["back"]
    np.testing.assert_array_equal(values["back"], want)
    np.testing.assert_array_equal(values["as_int8"], want)


def test_compare_counts_a_nan_as_an_infinite_error_and_an_empty_tensor_as_none():
    ref = {"a": np.ones(4), "b": np.ones(4), "c": np.ones(4), "e": np.zeros((0, 3))}
    got = {"a": np.ones(4), "e": np.zeros((0, 3)), "b": np.array([1.0, np.nan, 1.0, 1.0]), "c": 2 * np.ones(4)}
    rows = {r["tensor"]: r for r in compare_tensors(got, ref)}
    assert rows["a"]["rel_l2"] == 0 and rows["e"] == {"tensor": "e", "rel_l2": 0.0, "max_abs": 0.0}
    assert rows["b"]["rel_l2"] == float("inf") and rows["b"]["max_abs"] == float("inf")
    assert rows["c"]["rel_l2"] == pytest.approx(1.0)
    first = next(r["tensor"] for r in compare_tensors(got, ref) if r["rel_l2"] > 1e-3)
    assert first == "b"                                  # the NaN is where they part, before c


def test_compare_leaves_out_names_one_side_lacks_and_other_shapes():
    a = {"t0": np.ones(3), "t1": np.ones((2, 2)), "t2": np.arange(4.0) + 1}
    b = {"t1": np.ones(4), "t2": np.arange(4.0) + 2, "t9": np.zeros(1)}
    rows = compare_tensors(a, b)
    assert [r["tensor"] for r in rows] == ["t2"]
    assert rows[0]["max_abs"] == 1.0
    assert rows[0]["rel_l2"] == pytest.approx(2.0 / np.linalg.norm(np.arange(4.0) + 2))


def test_layer_outputs_checks_its_inputs_like_execute():
    ctx = _engine().create_execution_context()
    with pytest.raises(ExecutionError, match=r"missing input\(s\) \['x'\]"):
        ctx.layer_outputs({})
    with pytest.raises(ExecutionError, match="has dtype float64; expected float32"):
        ctx.layer_outputs({"x": X.astype(np.float64)})


def test_cupy_backend_runs_eagerly_with_its_plans_and_no_concat_placement(monkeypatch):
    """The CuPy backend's run_visiting: every layer through run_layers with the visitor, inside
    the engine's cuDNN plans, at-build-shapes decided as execute decides it."""
    from engine.backends import cupy_backend
    from engine.gpu import cudnn_tactics
    seen = []
    monkeypatch.setattr(cudnn_tactics, "plans_in_use", lambda plans: _Recording(seen, plans))
    monkeypatch.setattr(cupy_backend, "ConcatElision", lambda engine: types.SimpleNamespace(engine=engine))
    backend = CupyBackend.__new__(CupyBackend)
    backend._build_shapes, backend.cudnn_plans = {"x": (4, 3, 10, 10)}, "PLANS"
    backend._runs = types.SimpleNamespace(placement="left from a run")
    backend.concat_elision, backend.elision = True, None
    calls = []
    context = types.SimpleNamespace(engine="ENGINE", run_layers=lambda feeds, sched, visit: calls.append(
        (feeds, sched, visit, backend._runs.placement)) or {"y": 1})
    visit = object()
    assert backend.run_visiting(context, {"x": np.zeros((4, 3, 10, 10))}, "SCHED", visit) == {"y": 1}
    assert calls[0][1:] == ("SCHED", visit, None) and seen == ["enter PLANS", "exit"]
    assert backend._at_build_shapes is True
    # the concat plan exists for tactic choices made now (kept for later runs), placement does not
    assert backend.elision.engine == "ENGINE"
    backend.run_visiting(context, {"x": np.zeros((2, 3, 10, 10))}, "SCHED", visit)
    assert backend._at_build_shapes is False


class _Recording:
    def __init__(self, log, plans):
        self.log, self.plans = log, plans

    def __enter__(self):
        self.log.append(f"enter {self.plans}")

    def __exit__(self, *exc):
        self.log.append("exit")
        return False
