"""The engine on the CuPy backend against the NumPy backend: every layer type,
every conv tactic, whole networks, CUDA-graph replay, the timing cache."""
import os
import sys

import numpy as np
import pytest

import engine as rt
from engine.testing import rel_l2

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from test_plan_every_layer import FACTORIES, ClipCube  # noqa: E402
from gpu_helpers import every_tile  # noqa: E402

cp = pytest.importorskip("cupy")
RNG = np.random.default_rng(123)
PASSES = ("constant_folding", "dead_layer_removal", "identity_shuffle_cancellation",
          "scale_folding", "epilogue_fusion")


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def build(net, backend, fp16=False, keep_layers=False, cache=None):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = backend
    cfg.precision_by_timing = False     # these tests force and compare tactics per precision
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    if keep_layers:
        for p in PASSES:
            cfg.disable_pass(p)
    cfg.timing_cache_path = cache
    plan = b.build_serialized_network(net, cfg)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(plan)


def both(net, feeds, fp16=False, keep_layers=False, tol=None):
    ref = build(net, "numpy", fp16, keep_layers).create_execution_context().execute(feeds)
    gpu_engine = build(net, "cupy", fp16, keep_layers)
    got = gpu_engine.create_execution_context().execute(feeds)
    tol = tol or (1e-2 if fp16 else 1e-5)
    for name, value in ref.items():
        if value.dtype.kind == "f":
            nan = np.isnan(value)            # e.g. x ** x at negative x: NaN on both backends
            np.testing.assert_array_equal(np.isnan(got[name]), nan)
            assert rel_l2(np.where(nan, 0, got[name]), np.where(nan, 0, value)) <= tol, \
                (name, gpu_engine.backend.selected)
        else:
            np.testing.assert_array_equal(got[name], value)
    return gpu_engine


@pytest.fixture(scope="module", autouse=True)
def plugin_registered():
    reg = rt.get_plugin_registry()
    if reg.get_creator(ClipCube.plugin_type, "1") is None:
        reg.register_creator(ClipCube)
    yield


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("kind", list(FACTORIES), ids=lambda k: k.name)
def test_every_layer_type_on_the_gpu(kind, fp16):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 3, 5, 6))
    layer = FACTORIES[kind](net, x)
    for i in range(layer.num_outputs):
        net.mark_output(layer.get_output(i))
    eng = both(net, {"x": randn(2, 3, 5, 6)}, fp16=fp16, keep_layers=True)
    assert eng.backend.selected, "no layer ran on the GPU backend"
    assert "numpy.host" not in eng.backend.selected.values(), eng.backend.selected


def conv_net(k=16, c=16, ksize=3, stride=1, groups=1, residual=True, act=rt.ActivationType.RELU,
             hw=14, n=4):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (n, c, hw, hw))
    conv = net.add_convolution_nd(x, k, (ksize, ksize), kernel=randn(k, c // groups, ksize, ksize) * 0.2,
                                  bias=randn(k))
    conv.stride_nd, conv.num_groups = (stride, stride), groups
    conv.padding_nd = (ksize // 2, ksize // 2)
    y = conv.get_output(0)
    if residual and stride == 1 and k == c:
        y = net.add_elementwise(y, x, rt.ElementWiseOperation.SUM).get_output(0)
    if act is not None:
        y = net.add_activation(y, act).get_output(0)
    net.mark_output(y)
    return net, {"x": randn(n, c, hw, hw)}


def tactic_names(layer_type):
    from engine.gpu.tactics import candidates
    net, _ = conv_net()
    layer = net.get_layer(0) if layer_type == rt.LayerType.CONVOLUTION else None
    return [t.name for t in candidates(layer)]


@pytest.mark.parametrize("tactic", tactic_names(rt.LayerType.CONVOLUTION))
@pytest.mark.parametrize("case", ["3x3_res_relu", "1x1", "3x3_s2", "depthwise", "stem_c3"])
def test_every_conv_tactic_against_numpy(tactic, case):
    args = {"3x3_res_relu": {}, "1x1": dict(ksize=1, c=32, k=64, residual=False),
            "3x3_s2": dict(stride=2, act=rt.ActivationType.CLIP),
            "depthwise": dict(groups=16, residual=False),
            "stem_c3": dict(c=3, k=8, ksize=7, stride=2, hw=32)}[case]
    net, feeds = conv_net(**args)
    ref = build(net, "numpy", fp16=True).create_execution_context().execute(feeds)
    engine = build(net, "cupy", fp16=True)
    from engine.gpu.tactics import by_name
    layer = engine.network.get_layer(0)
    t = by_name(layer, tactic)
    shapes = [tuple(feeds["x"].shape)] + [tuple(feeds["x"].shape)] * (layer.num_inputs - 1)
    reason = t.supports(layer, shapes, ["float32"] * len(shapes), rt.float16)
    if reason is not None:
        pytest.skip(f"{tactic} does not run this case: {reason}")
    engine.backend.forced[layer.name] = tactic
    engine.backend._build_shapes = {"x": tuple(feeds["x"].shape)}
    with every_tile():
        got = engine.create_execution_context().execute(feeds)
    assert engine.backend.selected[layer.name] == tactic
    for name, value in ref.items():
        assert rel_l2(got[name], value) <= 1e-2


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_resnet_style_and_lstm_networks_on_both_backends(fp16):
    from test_networks import ResNetWeights, build_resnet
    w = ResNetWeights()
    net, _ = build_resnet(w)
    both(net, {"image": randn(4, 3, 16, 16)}, fp16=fp16)
    lstm = rt.Network()
    x = lstm.add_input("seq", rt.float32, (3, 6, 5))
    r = lstm.add_rnn_v2(x, 2, 4, 6, rt.RNNOperation.LSTM)
    r.direction = rt.RNNDirection.BIDIRECTION
    for li in range(4):
        for g in (rt.RNNGateType.INPUT, rt.RNNGateType.FORGET, rt.RNNGateType.CELL,
                  rt.RNNGateType.OUTPUT):
            r.set_weights_for_gate(li, g, True, randn(4, 5 if li < 2 else 8) * 0.5)
            r.set_weights_for_gate(li, g, False, randn(4, 4) * 0.5)
            r.set_bias_for_gate(li, g, True, randn(4) * 0.1)
    lstm.mark_output(r.get_output(0))
    both(lstm, {"seq": randn(3, 6, 5)}, fp16=fp16)


def test_cuda_graph_replay_matches_eager():
    net, feeds = conv_net(k=32, c=32)
    engine = build(net, "cupy", fp16=True)
    ctx = engine.create_execution_context()
    first = ctx.execute(feeds)                     # eager: selects, compiles
    outs = [ctx.execute({"x": randn(*feeds["x"].shape)}) for _ in range(3)]   # capture, replay
    graphs = ctx.__dict__.get("_cuda_graphs", {})
    assert any(not isinstance(v, str) for v in graphs.values()), graphs
    x2 = randn(*feeds["x"].shape)
    replayed = ctx.execute({"x": x2})
    eager_ctx = engine.create_execution_context()
    engine.backend.use_graphs = False
    eager = eager_ctx.execute({"x": x2})
    engine.backend.use_graphs = True
    for name in first:
        np.testing.assert_array_equal(replayed[name], eager[name])
    assert outs


def _profiled(hw, n, calls=3):
    """(engine, context, wall ms of ``calls`` profiled eager calls) of conv_net at that
    size, built in FP16 and run once before the profiler is attached (tactics chosen,
    kernels compiled)."""
    import time
    net, feeds = conv_net(k=64, c=64, hw=hw, n=n)
    engine = build(net, "cupy", fp16=True)
    ctx = engine.create_execution_context()
    ctx.execute(feeds)
    ctx.profiler = rt.Profiler()
    cp.cuda.get_current_stream().synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        ctx.execute(feeds)
    return engine, ctx, 1e3 * (time.perf_counter() - t0)


def test_profiler_times_layers_on_the_device_within_the_calls_wall_time():
    """Per-layer device times (CUDA events): every layer reported, each positive, and their
    sum within the wall time of the profiled calls (a host clock per layer counted the
    launch path too). A bigger convolution's layer takes longer than a small one's. At
    batch 1 the device hold keeps the Python launch path out: the layers' device times
    are a fraction of the eager call's wall time, and no hold expires."""
    engine, ctx, wall_ms = _profiled(hw=56, n=32)
    times = ctx.profiler.times
    assert set(times) == {info.name for info in engine.layers}
    assert all(ms > 0 for ms in times.values()), times
    assert sum(times.values()) < wall_ms
    _, c2, small_wall_ms = _profiled(hw=7, n=1)
    assert ctx.launch_gaps is False and c2.launch_gaps is False
    assert max(times.values()) > max(c2.profiler.times.values())
    assert sum(c2.profiler.times.values()) < 0.5 * small_wall_ms, (c2.profiler.times, small_wall_ms)


def test_execute_async_v3_with_bound_cupy_arrays():
    net, feeds = conv_net()
    engine = build(net, "cupy", fp16=True)
    ctx = engine.create_execution_context()
    x = cp.asarray(feeds["x"])
    name = engine.output_names[0]
    y = cp.full(engine.infer_shapes({"x": x.shape})[id(engine.network.get_tensor(name))], cp.nan,
                dtype=cp.float32)
    ctx.set_tensor_address("x", x)
    ctx.set_tensor_address(name, y)
    cp.cuda.Device().synchronize()   # inputs made on the legacy stream are ready: a
    stream = cp.cuda.Stream(non_blocking=True)   # non-blocking stream would not wait for them
    for _ in range(3):
        ctx.execute_async_v3(stream)
    stream.synchronize()
    ref = build(net, "numpy", fp16=True).create_execution_context().execute(feeds)[name]
    assert rel_l2(cp.asnumpy(y), ref) <= 1e-2


def test_timing_cache_is_reused(tmp_path):
    cache = str(tmp_path / "tactics.cache")
    net, _ = conv_net(k=32, c=32)
    first = build(net, "cupy", fp16=True, cache=cache)
    assert os.path.exists(cache) and first.meta["timing_cache_misses"] > 0
    from engine.backends import cupy_backend
    cupy_backend._caches.clear()                 # as a new process would
    second = build(net, "cupy", fp16=True, cache=cache)
    assert second.meta["timing_cache_misses"] == 0 and second.meta["timing_cache_hits"] > 0
    assert second.meta["kernels"] == first.meta["kernels"]


def _int8_engines():
    """A small INT8 network (conv-relu-conv-maxpool-FC) built on both backends from one
    calibration: {"numpy": engine, "cupy": engine}."""
    net = rt.Network()
    x = net.add_input("x", rt.float32, (4, 8, 10, 10))
    c1 = net.add_convolution_nd(x, 16, (3, 3), kernel=randn(16, 8, 3, 3) * 0.2, bias=randn(16),
                                padding_nd=(1, 1))
    r1 = net.add_activation(c1.get_output(0), rt.ActivationType.RELU).get_output(0)
    c2 = net.add_convolution_nd(r1, 16, (3, 3), kernel=randn(16, 16, 3, 3) * 0.2, bias=randn(16),
                                padding_nd=(1, 1))
    p = net.add_pooling_nd(c2.get_output(0), rt.PoolingType.MAX, (2, 2), stride_nd=(2, 2))
    fc = net.add_fully_connected(p.get_output(0), 10, randn(10, 400) * 0.05, randn(10))
    net.mark_output(fc.get_output(0))
    data = [randn(4, 8, 10, 10) for _ in range(4)]
    engines = {}
    for backend in ("numpy", "cupy"):
        b = rt.Builder()
        cfg = b.create_builder_config()
        cfg.backend = backend
        cfg.precision_by_timing = False     # the INT8 arithmetic, layer for layer
        cfg.set_flag(rt.BuilderFlag.INT8)
        cfg.int8_calibrator = rt.MinMaxCalibrator(data)
        engines[backend] = rt.Runtime(backend=backend).deserialize_cuda_engine(
            b.build_serialized_network(net, cfg))
    return engines


def test_int8_engine_on_the_gpu_matches_the_numpy_emulation(monkeypatch):
    # bit for bit is the point: our INT8 kernels only (cuDNN's INT8 graphs, conv.cudnn_i8,
    # may put a code one off; tests/gpu/test_cudnn_int8_gpu.py holds them to that)
    monkeypatch.setenv("CUPYRT_CUDNN", "0")
    engines = _int8_engines()
    assert any(i.precision == rt.int8 for i in engines["cupy"].layers)
    feeds = {"x": randn(4, 8, 10, 10)}
    ref = engines["numpy"].create_execution_context().execute(feeds)
    got = engines["cupy"].create_execution_context().execute(feeds)
    for name in ref:
        assert rel_l2(got[name], ref[name]) <= 1e-6, engines["cupy"].backend.selected


def test_layer_outputs_of_the_gpu_int8_engine_equal_the_emulation_tensor_by_tensor(monkeypatch):
    """ExecutionContext.layer_outputs on the CuPy backend (eager, no concat elision, the
    engine's cuDNN plans): every tensor equals the NumPy engine's, int8 ones dequantized."""
    from engine.metrics import compare_tensors
    monkeypatch.setenv("CUPYRT_CUDNN", "0")
    engines = _int8_engines()
    feeds = {"x": randn(4, 8, 10, 10)}
    ref = engines["numpy"].create_execution_context().layer_outputs(feeds)
    ctx = engines["cupy"].create_execution_context()
    got = ctx.layer_outputs({"x": cp.asarray(feeds["x"])})
    assert list(got) == list(ref)
    rows = compare_tensors(got, ref)
    assert len(rows) == len(ref) and all(r["rel_l2"] <= 1e-6 for r in rows), rows
    assert "_cuda_graphs" not in ctx.__dict__          # eager: nothing captured
    out = ctx.execute(feeds)                           # and the context still runs as before
    name = next(iter(out))
    assert rel_l2(out[name], ref[name]) <= 1e-6


def _fc_tactics():
    from engine.gpu.tactics import candidates
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 8))
    layer = net.add_fully_connected(x, 4, randn(4, 8), randn(4))
    return [t.name for t in candidates(layer)]


@pytest.mark.parametrize("tactic", _fc_tactics())
@pytest.mark.parametrize("shape", [(3, 40), (3, 16, 2, 2)], ids=["rank2", "rank4"])
def test_every_fc_tactic_against_numpy(tactic, shape):
    net = rt.Network()
    x = net.add_input("x", rt.float32, shape)
    c = int(np.prod(shape[1:]))
    fc = net.add_fully_connected(x, 24, randn(24, c) * 0.2, randn(24))
    act = net.add_activation(fc.get_output(0), rt.ActivationType.RELU)
    net.mark_output(act.get_output(0))
    feeds = {"x": randn(*shape)}
    ref = build(net, "numpy", fp16=True).create_execution_context().execute(feeds)
    engine = build(net, "cupy", fp16=True)
    from engine.gpu.tactics import by_name
    layer = engine.network.get_layer(0)
    t = by_name(layer, tactic)
    reason = t.supports(layer, [shape], ["float32"], rt.float16)
    if reason is not None:
        pytest.skip(f"{tactic}: {reason}")
    engine.backend.forced[layer.name] = tactic
    engine.backend._build_shapes = {"x": shape}
    with every_tile():
        got = engine.create_execution_context().execute(feeds)
    assert engine.backend.selected[layer.name] == tactic
    for name, value in ref.items():
        assert got[name].shape == value.shape
        assert rel_l2(got[name], value) <= 1e-2


@pytest.mark.parametrize("src,dst,pad", [(np.int8, np.float16, 1), (np.float16, np.float32, 8),
                                         (np.float32, np.float16, 8), (np.int8, np.int8, 16)])
def test_as_nhwc_reads_any_layout(src, dst, pad):
    """An NHWC buffer seen as NCHW (what a tensor-core layer hands on), re-typed and padded."""
    from engine.gpu.tactics import as_nhwc
    rng = np.random.default_rng(9)
    host = rng.integers(-100, 100, (2, 5, 6, 7)).astype(src)          # logical N C H W
    nhwc_view = cp.ascontiguousarray(cp.asarray(host).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    for x in (nhwc_view, cp.asarray(host)):
        got = as_nhwc(x, dst, pad).get()
        cpad = -(-5 // pad) * pad
        assert got.shape == (2, 6, 7, cpad) and got.dtype == dst
        np.testing.assert_array_equal(got[..., :5], host.transpose(0, 2, 3, 1).astype(dst))
        assert not got[..., 5:].any()
