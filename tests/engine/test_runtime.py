"""Execution contexts, engine inspection, profiler, backends, memory planning."""
import json
import threading

import numpy as np
import pytest

import engine as rt
from engine import memory
from engine.backends import requested, select_backend


def chain_engine(flags=(), shape=(-1, 8)):
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, shape)
    t = x
    for kind in (rt.ActivationType.SIGMOID, rt.ActivationType.TANH, rt.ActivationType.RELU,
                 rt.ActivationType.ELU):
        t = net.add_activation(t, kind).get_output(0)
    t.name = "y"
    net.mark_output(t)
    cfg = b.create_builder_config()
    cfg.disable_pass("pointwise_fusion")      # keep four layers to look at
    for f in flags:
        cfg.set_flag(f)
    return b.build_engine(net, cfg)


def reference(x):
    t = np.maximum(np.tanh(1 / (1 + np.exp(-x.astype(np.float64)))), 0)
    return np.where(t >= 0, t, np.expm1(t))


def test_execute_resolves_dynamic_dims_per_call():
    ctx = chain_engine().create_execution_context()
    rng = np.random.default_rng(0)
    for n in (1, 5, 3):
        x = rng.standard_normal((n, 8)).astype(np.float32)
        y = ctx.execute({"x": x})["y"]
        assert y.shape == (n, 8) and y.dtype == np.float32
        np.testing.assert_allclose(y, reference(x), rtol=1e-6)
    assert ctx.execute_v2({"x": x})["y"].shape == (3, 8)


@pytest.mark.parametrize("feed,match", [
    ({}, "missing input"),
    ({"x": np.ones((2, 8), np.float32), "z": np.ones(1)}, "unknown input"),
    ({"x": np.ones((2, 8), np.float64)}, "dtype float64; expected float32"),
    ({"x": np.ones((2, 8, 1), np.float32)}, "rank 3"),
    ({"x": np.ones((2, 7), np.float32)}, "dims \\[1\\] must match"),
])
def test_execute_rejects_bad_inputs(feed, match):
    with pytest.raises(rt.ExecutionError, match=match):
        chain_engine().create_execution_context().execute(feed)


def test_execute_takes_a_dict():
    with pytest.raises(rt.ExecutionError, match="dict name -> array"):
        chain_engine().create_execution_context().execute([np.ones((2, 8), np.float32)])


def test_contexts_are_independent_across_threads():
    engine = chain_engine()
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((i + 1, 8)).astype(np.float32) for i in range(8)]
    results, errors = [None] * 8, []

    def work(i):
        try:
            ctx = engine.create_execution_context()
            for _ in range(5):
                results[i] = ctx.execute({"x": xs[i]})["y"]
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for x, y in zip(xs, results):
        np.testing.assert_allclose(y, reference(x), rtol=1e-6)


def test_profiler_reports_every_layer():
    engine = chain_engine()
    ctx = engine.create_execution_context()
    ctx.profiler = rt.Profiler()
    ctx.execute({"x": np.ones((2, 8), np.float32)})
    assert set(ctx.profiler.times) == {info.name for info in engine.layers}
    assert all(ms >= 0 for ms in ctx.profiler.times.values())
    assert engine.layers[0].name in ctx.profiler.table()


def test_profiler_times_layers_with_the_backends_clock_after_the_loop():
    """Layer times come from the backend's marks (CUDA events on the GPU: device time,
    no host sync per layer), read once the last layer is issued."""
    from engine.backends.numpy_backend import NumpyBackend

    class Clocked(NumpyBackend):
        def __init__(self):
            self.clock, self.read = 0.0, []
            self.cost = iter([0.5, 1.25, 2.0, 4.0])

        def mark(self):
            return self.clock

        def run_layer(self, *args):
            self.clock += next(self.cost)
            return NumpyBackend.run_layer(*args)

        def elapsed_ms(self, start, end):
            self.read.append(self.clock)
            return end - start

    engine = chain_engine()
    engine.backend = backend = Clocked()
    ctx = engine.create_execution_context()
    ctx.profiler = rt.Profiler()
    ctx.execute({"x": np.ones((2, 8), np.float32)})
    assert [ctx.profiler.times[info.name] for info in engine.layers] == [0.5, 1.25, 2.0, 4.0]
    assert backend.read == [7.75] * 4          # every layer issued before the first read


class _Hold:
    def __init__(self, log, expired):
        self.log, self.expired = log, expired

    def release(self):
        self.log.append("release")


def _held_engine(expired=False, fail_at=None):
    """A chain engine on a NumPy backend that logs its hold, each layer and each read."""
    from engine.backends.numpy_backend import NumpyBackend

    class Held(NumpyBackend):
        def __init__(self):
            self.log = []

        def hold(self):
            self.log.append("hold")
            return _Hold(self.log, expired)

        def run_layer(self, *args):
            self.log.append("layer")
            if len([e for e in self.log if e == "layer"]) == fail_at:
                raise RuntimeError("layer failed")
            return NumpyBackend.run_layer(*args)

        def elapsed_ms(self, start, end):
            self.log.append("read")
            return 1.0

    engine = chain_engine()
    engine.backend = Held()
    ctx = engine.create_execution_context()
    return engine, ctx


def test_profiled_run_holds_the_device_until_every_layer_is_issued():
    """The hold comes first, its release after the last layer and before the first read
    (kernels/gpu/device_hold.py): the device then runs the queue without launch gaps."""
    engine, ctx = _held_engine()
    ctx.execute({"x": np.ones((2, 8), np.float32)})
    assert engine.backend.log == ["layer"] * 4           # no profiler: no hold, no reads
    engine.backend.log.clear()
    ctx.profiler = rt.Profiler()
    ctx.execute({"x": np.ones((2, 8), np.float32)})
    assert engine.backend.log == ["hold"] + ["layer"] * 4 + ["release"] + ["read"] * 4
    assert ctx.launch_gaps is False


def test_an_expired_hold_is_reported_as_launch_gaps():
    engine, ctx = _held_engine(expired=True)
    ctx.profiler = rt.Profiler()
    ctx.execute({"x": np.ones((2, 8), np.float32)})
    assert ctx.launch_gaps is True
    assert set(ctx.profiler.times) == {info.name for info in engine.layers}


def test_a_failing_layer_still_releases_the_hold():
    engine, ctx = _held_engine(fail_at=2)
    ctx.profiler = rt.Profiler()
    with pytest.raises(RuntimeError, match="layer failed"):
        ctx.execute({"x": np.ones((2, 8), np.float32)})
    assert engine.backend.log == ["hold", "layer", "layer", "release"]


def test_engine_inspection():
    engine = chain_engine()
    assert engine.num_layers == 4 and engine.num_io_tensors == 2
    assert [engine.get_tensor_name(i) for i in range(2)] == ["x", "y"]
    assert engine.get_tensor_mode("x") == rt.TensorIOMode.INPUT
    assert engine.get_tensor_mode("y") == rt.TensorIOMode.OUTPUT
    assert engine.get_tensor_shape("x") == (-1, 8) and engine.get_tensor_dtype("y") == rt.float32
    assert all(info.kernel == "numpy.reference" and info.precision == rt.float32 for info in engine.layers)
    info = json.loads(engine.create_engine_inspector().get_engine_information())
    assert len(info["layers"]) == 4 and info["backend"] == "numpy"
    assert json.loads(engine.create_engine_inspector().get_layer_information(0))["type"] == "ACTIVATION"
    with pytest.raises(rt.ExecutionError, match="valid: x, y"):
        engine.get_tensor_shape("nope")


def test_activation_memory_reuses_buffers():
    engine = chain_engine()
    # three intermediates t0 -> t1 -> t2; t0 is dead when t2 is written, so two
    # 256-byte-aligned slots hold all three
    assert engine.activation_memory({"x": (4, 8)}) == 512
    assert engine.device_memory_size == 512
    assert engine.activation_memory({"x": (1000, 8)}) == 2 * 32000    # not 3 * 32000


def test_set_input_shape_validates():
    ctx = chain_engine().create_execution_context()
    assert ctx.set_input_shape("x", (7, 8))
    with pytest.raises(rt.ExecutionError, match="does not fit"):
        ctx.set_input_shape("x", (7, 9))


def test_fp16_engine_rounds_like_fp16_hardware():
    engine = chain_engine([rt.BuilderFlag.FP16])
    assert all(info.precision == rt.float16 for info in engine.layers)
    x = np.random.default_rng(4).standard_normal((16, 8)).astype(np.float32)
    y = engine.create_execution_context().execute({"x": x})["y"]
    assert y.dtype == np.float32
    err = np.linalg.norm(y - reference(x)) / np.linalg.norm(reference(x))
    assert 1e-5 < err < 1e-2       # FP16 error: present but small
    # intermediates are stored in half precision
    assert engine.activation_memory({"x": (64, 8)}) == 2 * 64 * 8 * 2


def test_memory_plan_first_fit():
    offsets, total = memory.plan({"a": 100, "b": 300, "c": 100}, {"a": (0, 1), "b": (1, 2), "c": (2, 3)})
    assert offsets["b"] == 0 and offsets["a"] == 512 and offsets["c"] == 512
    assert total == 768


def test_backend_selection(monkeypatch):
    assert select_backend("numpy").name == "numpy"
    monkeypatch.setenv("CUPYRT_BACKEND", "auto")
    assert select_backend().name in ("numpy", "cupy")
    with pytest.raises(rt.BuildError, match="valid: auto"):
        select_backend("tpu")


def test_backend_from_the_environment_goes_through_settings(monkeypatch):
    """$CUPYRT_BACKEND is read through engine.settings: case and blanks do not matter,
    and a name that is no backend is refused with the same message as in code."""
    monkeypatch.setenv("CUPYRT_BACKEND", " NumPy ")
    assert select_backend().name == "numpy" and requested() == "numpy"
    monkeypatch.setenv("CUPYRT_BACKEND", "auto")
    assert requested() is None
    monkeypatch.setenv("CUPYRT_BACKEND", "tensorrt")
    with pytest.raises(rt.BuildError, match=r"backend ' ?tensorrt' is not available \(CUPYRT_BACKEND\); "
                                            r"valid: auto, numpy, cupy"):
        select_backend()


def test_bound_buffers_and_execute_async_v3():
    engine = chain_engine()
    ctx = engine.create_execution_context()
    x = np.random.default_rng(5).standard_normal((3, 8)).astype(np.float32)
    y = np.full((3, 8), np.nan, np.float32)
    with pytest.raises(rt.ExecutionError, match="no array bound for \\['x', 'y'\\]"):
        ctx.execute_async_v3()
    with pytest.raises(rt.ExecutionError, match="takes an array"):
        ctx.set_tensor_address("x", 1234)
    assert ctx.set_tensor_address("x", x) and ctx.set_tensor_address("y", y)
    assert ctx.get_tensor_address("x") is x
    assert ctx.execute_async_v3()
    np.testing.assert_allclose(y, reference(x), rtol=1e-6)
    ctx.set_tensor_address("y", np.zeros((2, 8), np.float32))
    with pytest.raises(rt.ExecutionError, match="the bound array is \\(2, 8\\)"):
        ctx.execute_async_v3()


def test_data_movement_between_half_layers_stores_half():
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (2, 4, 3, 3))
    a = net.add_activation(x, rt.ActivationType.TANH).get_output(0)
    c = net.add_activation(x, rt.ActivationType.SIGMOID).get_output(0)
    cat = net.add_concatenation([a, c])
    cat.axis = 1
    y = net.add_activation(cat.get_output(0), rt.ActivationType.RELU).get_output(0)
    net.mark_output(y)
    cfg = b.create_builder_config()
    cfg.set_flag(rt.BuilderFlag.FP16)
    engine = b.build_engine(net, cfg)
    concat = next(layer for layer in engine.network if layer.type == rt.LayerType.CONCATENATION)
    assert engine._storage_dtype(concat, concat.get_output(0)) == rt.float16
    xs = np.random.default_rng(6).standard_normal((2, 4, 3, 3)).astype(np.float32)
    got = engine.create_execution_context().execute({"x": xs})
    ref = np.maximum(np.concatenate([np.tanh(xs), 1 / (1 + np.exp(-xs))], 1), 0)
    assert np.abs(list(got.values())[0] - ref).max() < 2e-3
