"""Faults while tactics are timed, injected without a GPU: a candidate that fails to
compile, to launch, or runs out of device memory scores infinity, is logged with its
reason, gives its memory back, and the build succeeds with another candidate; with
every candidate failing the layer still runs (generic, then host tactic).

The builder's real tactic stage (engine/builder.py select_gpu_tactics -> the CuPy
backend's selection loop -> engine/gpu/timing.py) runs here over a stand-in ``cupy``
module: NumPy arrays, and CUDA events that read a virtual clock which each tactic
advances by its declared cost, so the timing is deterministic.
(tests/gpu/test_faults_gpu.py provokes real compile, launch and allocation failures.)"""
import logging
import math
import sys
import types

import numpy as np
import pytest

import engine as rt
from engine import kernel_table
from engine.backends import cupy_backend
from engine.gpu import base as T
from engine.gpu import timing
from engine.testing import rel_l2
from engine.types import LayerType


_GENERIC_RUN = T.GenericTactic.run       # the adapter itself (the fixture makes it cost time)


class FakeCupy(types.ModuleType):
    """Enough of cupy for selection and eager execution; anything else is NumPy's."""

    class OutOfMemoryError(MemoryError):          # cupy.cuda.memory.OutOfMemoryError's name
        pass

    class CompileException(Exception):            # cupy.cuda.compiler.CompileException's name
        pass

    def __init__(self):
        super().__init__("cupy")
        self.clock = 0.0                          # virtual milliseconds
        self.freed = 0
        outer = self

        class Event:
            def record(self, stream=None):
                self.t = outer.clock

            def synchronize(self):
                pass

        class Stream:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def synchronize(self):
                pass

        class Pool:
            def free_all_blocks(self):
                outer.freed += 1

        stream = Stream()
        self.cuda = types.SimpleNamespace(
            Event=Event, get_current_stream=lambda: stream, is_available=lambda: True,
            get_elapsed_time=lambda a, b: b.t - a.t, Device=lambda *a: types.SimpleNamespace(id=0),
            memory=types.SimpleNamespace(OutOfMemoryError=FakeCupy.OutOfMemoryError),
            compiler=types.SimpleNamespace(CompileException=FakeCupy.CompileException))
        self.get_default_memory_pool = self.get_default_pinned_memory_pool = Pool
        self.asnumpy = np.asarray

    def __getattr__(self, name):
        return getattr(np, name)


class Injected(T.Tactic):
    """A candidate that costs ``ms`` per run, or fails where ``fault`` says."""

    def __init__(self, name, ms, fault=None):
        self.name, self.ms, self.fault = name, ms, fault
        self.prepared = 0

    def prepare(self, layer):
        self.prepared += 1
        if self.fault == "compile":
            raise FakeCupy.CompileException("nvrtc: error: identifier \"__hfma3\" is undefined")
        if self.fault == "oom_prepare":
            raise FakeCupy.OutOfMemoryError("Out of memory allocating 85,899,345,920 bytes")
        return T.GENERIC.prepare(layer)

    def run(self, state, layer, inputs, precision, out_dtypes):
        if self.fault == "launch":
            raise RuntimeError("cuLaunchKernel: CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES")
        if self.fault == "oom":
            raise FakeCupy.OutOfMemoryError("Out of memory allocating 2,147,483,648 bytes")
        sys.modules["cupy"].clock += self.ms
        return _GENERIC_RUN(T.GENERIC, state, layer, inputs, precision, out_dtypes)


@pytest.fixture
def fake_gpu(monkeypatch):
    # the real tactics register now, not later into the test's table
    from engine.gpu import conv_tactics, matmul_tactics, norm_tactics  # noqa: F401
    from engine.gpu import pointwise_tactics, precompile, rnn_tactics  # noqa: F401
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cupy_backend, "available", lambda: True)
    monkeypatch.setattr(cupy_backend, "gpu_info", lambda device_id=0: ("Fake GPU", "sm_90"))
    monkeypatch.setattr(timing, "_spin", lambda stream: False)
    monkeypatch.setattr(precompile, "precompile", lambda **kw: 0.0)
    monkeypatch.setattr(cupy_backend, "_caches", {})
    monkeypatch.delenv("CUPYRT_TIMING_CACHE", raising=False)
    monkeypatch.setenv("CUPYRT_CUDA_GRAPHS", "0")        # no capture on a stand-in device
    monkeypatch.setenv("CUPYRT_CONCAT_ELISION", "0")
    def generic(self, *args):                              # the fallback is slow, not free
        fake.clock += 5.0
        return _GENERIC_RUN(self, *args)
    monkeypatch.setattr(T.GenericTactic, "run", generic)
    return fake


def conv_net(seed=3):
    rng = np.random.default_rng(seed)
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (2, 3, 9, 9))
    conv = net.add_convolution_nd(x, 6, (3, 3),
                                  rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
                                  rng.standard_normal(6).astype(np.float32), padding_nd=(1, 1))
    pool = net.add_pooling_nd(conv.get_output(0), rt.PoolingType.AVERAGE, (3, 3))
    net.mark_output(pool.get_output(0))
    return b, net


def build(monkeypatch, cands):
    """(engine meta, plan bytes) of conv_net built on the stand-in device with ``cands`` as
    the convolution's specialised tactics (for the rest of the test: the plan's run too)."""
    # only the injected candidates (the real ones need a device), then generic and host
    # (the table's entries are patched, not the name: tactics modules hold the dict itself)
    for layer_type in list(kernel_table.TACTICS):
        monkeypatch.setitem(kernel_table.TACTICS, layer_type, [])
    monkeypatch.setitem(kernel_table.TACTICS, LayerType.CONVOLUTION, list(cands))
    b, net = conv_net()
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    plan = b.build_serialized_network(net, cfg)
    return rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).meta, plan


def conv_name(meta):
    (name,) = [n for n in meta["kernels"] if "conv" in n.lower()]
    return name


def reference(plan, x):
    return rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).create_execution_context() \
        .execute({"x": x})


FAULTS = ["compile", "launch", "oom", "oom_prepare"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_candidate_is_skipped_and_the_build_takes_the_next(fake_gpu, monkeypatch, caplog,
                                                                      fault):
    bad, good = Injected("inject.bad", 0.1, fault), Injected("inject.good", 0.4)
    caplog.set_level(logging.INFO, logger="engine.backends.cupy_backend")
    meta, plan = build(monkeypatch, [bad, good])
    layer = conv_name(meta)
    assert meta["kernels"][layer] == "inject.good"
    assert meta["tactic_ms"][layer]["inject.bad"] is None            # scored infinity
    assert meta["tactic_ms"][layer]["inject.good"] == pytest.approx(0.4)
    assert "cupy.generic" not in meta["tactic_ms"][layer]           # a specialised one ran: no fallback timed
    said = [r.getMessage() for r in caplog.records if "inject.bad skipped" in r.getMessage()]
    assert len(said) == 1 and layer in said[0]
    kind = {"compile": "CompileException", "launch": "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
            "oom": "OutOfMemoryError", "oom_prepare": "OutOfMemoryError"}[fault]
    assert kind in said[0]
    # the memory pools are emptied after an out-of-memory error, and only then
    assert (fake_gpu.freed > 0) == fault.startswith("oom")


def test_the_plan_built_around_a_fault_runs_and_matches_the_reference(fake_gpu, monkeypatch):
    meta, plan = build(monkeypatch, [Injected("inject.oom", 0.05, "oom"),
                                     Injected("inject.launch", 0.1, "launch"),
                                     Injected("inject.good", 0.3)])
    x = np.random.default_rng(8).standard_normal((2, 3, 9, 9)).astype(np.float32)
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    got = engine.create_execution_context().execute({"x": x})
    assert engine.backend.selected[conv_name(meta)] == "inject.good"   # the plan's choice, untimed
    ref = reference(plan, x)
    for name in ref:
        assert rel_l2(got[name], ref[name]) <= 1e-6


def test_every_specialised_candidate_failing_leaves_the_generic_tactic(fake_gpu, monkeypatch):
    meta, plan = build(monkeypatch, [Injected(f"inject.{f}", 0.1, f) for f in FAULTS])
    layer = conv_name(meta)
    assert meta["kernels"][layer] == "cupy.generic"
    assert all(meta["tactic_ms"][layer][f"inject.{f}"] is None for f in FAULTS)


def test_the_generic_fallback_is_timed_only_when_it_could_matter(fake_gpu, monkeypatch):
    """Timed when every specialised candidate failed (above), or when those that ran
    cannot be captured into a CUDA graph while the generic tactic can; then it is the
    layer's capturable choice, and it wins where it is faster."""
    from engine.gpu.tactics import candidates
    tier = [t.name for t in candidates(conv_net()[1].get_layer(0)) if t.fallback]
    assert tier == ["conv.im2col", "int8.emulation", "cupy.generic"]   # the fallback tier

    class Uncapturable(Injected):
        capturable = False
    # a layer type whose generic code a graph can capture (a convolution's goes through cuBLAS)
    monkeypatch.setattr(T.GenericTactic, "capturable_for", lambda self, layer: True)
    meta, _ = build(monkeypatch, [Uncapturable("inject.eager", 0.3)])
    layer = conv_name(meta)
    assert meta["tactic_ms"][layer]["inject.eager"] == pytest.approx(0.3)
    assert meta["tactic_ms"][layer]["cupy.generic"] == pytest.approx(5.0)
    assert meta["kernels"][layer] == "inject.eager"
    monkeypatch.setattr(cupy_backend, "_caches", {})      # each build times afresh
    meta, _ = build(monkeypatch, [Uncapturable("inject.eager", 9.0)])
    assert meta["kernels"][conv_name(meta)] == "cupy.generic"
    monkeypatch.setattr(cupy_backend, "_caches", {})
    meta, _ = build(monkeypatch, [Injected("inject.capturable", 9.0)])
    assert "cupy.generic" not in meta["tactic_ms"][conv_name(meta)]
    monkeypatch.setattr(T.GenericTactic, "capturable_for", lambda self, layer: False)
    monkeypatch.setattr(cupy_backend, "_caches", {})
    meta, _ = build(monkeypatch, [Uncapturable("inject.eager", 0.3)])   # nothing a graph could take either
    assert "cupy.generic" not in meta["tactic_ms"][conv_name(meta)]


def test_every_device_candidate_failing_runs_the_layer_on_the_host(fake_gpu, monkeypatch, caplog):
    def broken(self, *args):
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")
    monkeypatch.setattr(T.GenericTactic, "run", broken)
    caplog.set_level(logging.INFO)
    meta, plan = build(monkeypatch, [Injected("inject.compile", 0.1, "compile")])
    layer = conv_name(meta)
    assert meta["kernels"][layer] == "numpy.host"
    assert any("every GPU tactic failed" in r.getMessage() for r in caplog.records)
    x = np.random.default_rng(9).standard_normal((2, 3, 9, 9)).astype(np.float32)
    got = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan).create_execution_context() \
        .execute({"x": x})
    ref = reference(plan, x)
    assert all(rel_l2(got[n], ref[n]) <= 1e-6 for n in ref)


def test_a_lone_candidate_that_fails_falls_to_the_host_and_says_why(fake_gpu, monkeypatch, caplog):
    """A layer with one device candidate is run once, not timed: its failure is a fault too."""
    def broken(self, *args):
        raise FakeCupy.OutOfMemoryError("Out of memory allocating 1,024 bytes")
    monkeypatch.setattr(T.GenericTactic, "run", broken)
    caplog.set_level(logging.INFO, logger="engine.backends.cupy_backend")
    meta, _ = build(monkeypatch, [Injected("inject.good", 0.2)])
    pool = [n for n in meta["kernels"] if n != conv_name(meta)]
    assert pool and all(meta["kernels"][n] == "numpy.host" for n in pool)
    assert meta["kernels"][conv_name(meta)] == "inject.good"
    assert any("cupy.generic skipped (OutOfMemoryError" in r.getMessage() for r in caplog.records)
    assert fake_gpu.freed > 0


def test_a_timer_that_fails_scores_infinity_too(fake_gpu, monkeypatch):
    """Not the candidate but the measurement raising (a broken event): still skipped."""
    real = cupy_backend.time_ms

    def flaky(fn, best, graph=False):
        if getattr(fn, "__defaults__", None) and fn.__defaults__[0].name == "inject.flaky":
            raise RuntimeError("cudaEventRecord: invalid resource handle")
        return real(fn, best, graph=graph)
    monkeypatch.setattr(cupy_backend, "time_ms", flaky)
    meta, _ = build(monkeypatch, [Injected("inject.flaky", 0.1), Injected("inject.good", 0.3)])
    layer = conv_name(meta)
    assert meta["kernels"][layer] == "inject.good"
    assert meta["tactic_ms"][layer]["inject.flaky"] is None


@pytest.mark.parametrize("exc, oom", [
    (FakeCupy.OutOfMemoryError("Out of memory allocating 512 bytes"), True),
    (RuntimeError("cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY"), True),
    (RuntimeError("CUDA_ERROR_LAUNCH_FAILED"), False),
    (FakeCupy.CompileException("nvrtc error"), False)])
def test_out_of_memory_is_recognised_by_name_or_driver_code(exc, oom):
    assert timing.is_out_of_memory(exc) == oom


def test_freeing_the_device_cache_without_cupy_is_harmless(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy raises ImportError
    timing.free_device_cache()


def test_eager_timing_of_a_candidate_that_raises_is_infinite_with_the_stand_in(fake_gpu):
    assert timing._eager_ms(lambda: (_ for _ in ()).throw(FakeCupy.OutOfMemoryError("x")),
                            math.inf, warmup=1, reps=3) == math.inf


def test_the_builder_times_tactics_through_the_backend_not_the_runtime(fake_gpu, monkeypatch):
    """The tactic stage runs on ``CupyBackend.select_tactics`` (engine/execution.py's
    layer loop); building no runtime engine on the way. The selection it makes is the
    one the plan records, and the storage types it timed on are the engine's."""
    from engine import runtime
    seen = []
    real = cupy_backend.CupyBackend.select_tactics

    def spy(self, network, feeds, profiler=None):
        engine = real(self, network, feeds, profiler)
        seen.append(engine)
        return engine

    def no_runtime(*args, **kwargs):
        raise AssertionError("the builder built a runtime engine to time tactics")
    monkeypatch.setattr(cupy_backend.CupyBackend, "select_tactics", spy)
    with monkeypatch.context() as m:
        m.setattr(runtime.CudaEngine, "__init__", no_runtime)
        with pytest.raises(AssertionError, match="built a runtime engine"):
            runtime.CudaEngine(None, {})                               # the trap is set
        b, net = conv_net()
        for layer_type in list(kernel_table.TACTICS):
            m.setitem(kernel_table.TACTICS, layer_type, [])
        m.setitem(kernel_table.TACTICS, LayerType.CONVOLUTION,
                  [Injected("inject.slow", 0.9), Injected("inject.fast", 0.2)])
        cfg = b.create_builder_config()
        cfg.backend = "cupy"
        plan = b.build_serialized_network(net, cfg)
    meta = rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).meta
    assert len(seen) == 1 and meta["kernels"][conv_name(meta)] == "inject.fast"
    assert seen[0].backend.selected == meta["kernels"]
    assert [layer.name for layer, _, _ in seen[0].schedule()] == list(meta["kernels"])


def test_a_build_served_from_the_timing_cache_still_reports_the_measurements(fake_gpu, monkeypatch,
                                                                             tmp_path):
    """The second build takes its choice from the timing cache (nothing timed again) and
    its meta carries the cached per-tactic milliseconds, as the first build's does."""
    for layer_type in list(kernel_table.TACTICS):
        monkeypatch.setitem(kernel_table.TACTICS, layer_type, [])
    monkeypatch.setitem(kernel_table.TACTICS, LayerType.CONVOLUTION,
                        [Injected("inject.slow", 0.7), Injected("inject.fast", 0.2),
                         Injected("inject.bad", 0.1, "launch")])
    metas = []
    for _ in range(2):
        b, net = conv_net()
        cfg = b.create_builder_config()
        cfg.backend = "cupy"
        cfg.timing_cache_path = str(tmp_path / "t.cache")
        plan = b.build_serialized_network(net, cfg)
        metas.append(rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).meta)
        monkeypatch.setattr(cupy_backend, "_caches", {})          # a new process would read the file
    first, second = metas
    layer = conv_name(first)
    assert second["kernels"][layer] == first["kernels"][layer] == "inject.fast"
    assert second["timing_cache_hits"] >= 1 and second["timing_cache_misses"] == 0
    assert second["tactic_ms"][layer].keys() == first["tactic_ms"][layer].keys()
    for name, ms in first["tactic_ms"][layer].items():     # the cache keeps them rounded
        assert second["tactic_ms"][layer][name] == (None if ms is None else pytest.approx(ms, abs=1e-6))
    assert second["tactic_ms"][layer]["inject.fast"] == pytest.approx(0.2)
    assert second["tactic_ms"][layer]["inject.bad"] is None


def test_tactic_selection_does_not_hold_the_device_but_a_profiled_run_does(fake_gpu, monkeypatch):
    """Selection times candidates with a host sync inside each layer: behind a device hold
    each would wait for the hold to expire. A profiled run of the built engine holds."""
    holds = []

    class Hold:
        expired = False

        def release(self):
            holds.append("release")

    def hold(self):
        holds.append("hold")
        return Hold()

    monkeypatch.setattr(cupy_backend.CupyBackend, "hold", hold)
    _, plan = build(monkeypatch, [Injected("inject.a", 0.2)])
    assert holds == []                       # the builder's progress profiler, no hold
    ctx = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan).create_execution_context()
    ctx.profiler = rt.Profiler()
    ctx.execute({"x": np.random.default_rng(2).standard_normal((2, 3, 9, 9)).astype(np.float32)})
    assert holds == ["hold", "release"] and ctx.launch_gaps is False


# the three candidates: the two injected ones and the generic fallback (5 ms)
@pytest.mark.parametrize("bound, firsts", [(math.inf, [math.inf, 0.1, 0.1]), (0.05, [0.05, 0.05, 0.05])])
def test_a_measure_bound_stops_far_slower_candidates_early(fake_gpu, monkeypatch, bound, firsts):
    """Precision by timing measures an alternative bounded by the layer's own time: every
    candidate is timed against the lower of the best so far and that bound (time_ms stops a
    clearly slower one after three runs); the answer is still the fastest measured."""
    _, plan = build(monkeypatch, [Injected("inject.fast", 0.1), Injected("inject.slow", 0.4)])
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    backend = engine.backend
    layer = next(la for la in engine.network._layers if la.layer_type == LayerType.CONVOLUTION)
    seen, real = [], cupy_backend.time_ms

    def recording(fn, best, graph=False):
        seen.append(best)
        return real(fn, best, graph=graph)
    monkeypatch.setattr(cupy_backend, "time_ms", recording)
    monkeypatch.setattr(backend.cache, "get", lambda key: None)          # nothing cached: timed
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 9)).astype(np.float32)
    name, ms = backend.measure(layer, [x], rt.float32, [rt.float32], bound_ms=bound)
    assert seen == pytest.approx(firsts)
    assert name == "inject.fast" and ms == pytest.approx(0.1)
