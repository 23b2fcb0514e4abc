"""INT8 convolutions through cuDNN graphs (kernels/gpu/cudnn_int8.py, the conv.cudnn_i8
tactic) on a GPU with the cuDNN frontend: int8 / float16 / float32 outputs, int8 and float
residuals, RELU / CLIP / LEAKY_RELU / none, against a float64 reference rounded half to
even and saturated (and against our float32 INT8 emulation, kernels/quantize.py); the plan
loop; replay inside a captured CUDA graph on new inputs; an INT8 engine timing
conv.cudnn_i8 beside its own INT8 kernels, and the tactic forced, against the NumPy INT8
engine. Skipped without CUDA or without the frontend (``pip install 'cupyrt[cudnn]'``)."""
import math

import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from gpu_helpers import act_ref, captured_runs, conv_nhwc, poison, rel_l2  # noqa: E402
from kernels import quantize as Q  # noqa: E402
from kernels.gpu import cudnn_graphs as G  # noqa: E402
from kernels.gpu import cudnn_int8 as CI  # noqa: E402

pytestmark = pytest.mark.skipif(not G.available(), reason=f"{G.unavailable_reason()}")

RNG = np.random.default_rng(77)
# the share of int8 codes allowed one off the float64 reference (float rounding of the fused
# ops; ~1e-7 measured at ResNet-50 sizes) and never more than one
MAX_OFF_BY_ONE = 1e-4

# (N, H, W, C, K, R, S, stride, pad, act, alpha, beta, residual dtype, out dtype)
CASES = [
    (2, 14, 14, 64, 64, 3, 3, 1, 1, "RELU", 0.0, 0.0, "int8", "int8"),        # bottleneck 3x3 + res
    (2, 14, 14, 64, 128, 1, 1, 2, 0, None, 0.0, 0.0, None, "int8"),           # 1x1 s2 downsample
    (2, 9, 11, 32, 48, 3, 3, 2, 1, "CLIP", 0.0, 6.0, None, "int8"),           # ReLU6, odd sizes
    (2, 8, 8, 16, 32, 3, 3, 1, 1, "LEAKY_RELU", 0.1, 0.0, None, "int8"),
    (1, 8, 8, 16, 32, 3, 3, 1, 1, "RELU", 0.0, 0.0, "float16", "int8"),       # half residual
    (2, 8, 8, 32, 64, 1, 1, 1, 0, None, 0.0, 0.0, "int8", "float16"),         # half out
    (2, 7, 7, 64, 256, 1, 1, 1, 0, "RELU", 0.0, 0.0, "float16", "float16"),
    (1, 8, 8, 16, 32, 3, 3, 1, 1, "RELU", 0.0, 0.0, "float32", "float32"),    # float32 out
    (1, 8, 8, 16, 32, 3, 3, 1, 1, None, 0.0, 0.0, None, "float32"),
]


def _case_id(c):
    return f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-k{c[4]}-{c[5]}x{c[6]}s{c[7]}-{c[9]}-res{c[12]}-{c[13]}"


def _spec(case):
    n, h, w, c, k, r, s, st, pad, act, alpha, beta, res, out = case
    return CI.Int8ConvSpec(n=n, c=c, h=h, w=w, k=k, r=r, s=s, stride=(st, st), pre_padding=(pad, pad),
                           post_padding=(pad, pad), out_dtype=out, act=act, alpha=alpha, beta=beta,
                           residual=res)


def _operands(spec):
    """Random codes and scales that put the outputs across the int8 range (some saturate)."""
    p, q = spec.out_hw()
    x = RNG.integers(-127, 128, (spec.n, spec.h, spec.w, spec.c)).astype(np.int8)
    w = RNG.integers(-127, 128, (spec.k, spec.r, spec.s, spec.c)).astype(np.int8)
    s_w = (RNG.uniform(0.5, 1.5, spec.k) * 1e-2).astype(np.float32)
    s_in = np.float32(1.5 / (73.0 * 73.0 * math.sqrt(spec.c * spec.r * spec.s) * 1e-2))
    bias = (RNG.standard_normal(spec.k) * 0.5).astype(np.float32)
    ops = {"x": x, "w": w, "s_in": s_in, "s_w": s_w, "bias": bias, "s_res": None, "res": None,
           "s_out": np.float32(1.5 / 40) if spec.out_dtype == "int8" else None}
    if spec.residual == "int8":
        ops["res"] = RNG.integers(-127, 128, (spec.n, p, q, spec.k)).astype(np.int8)
        ops["s_res"] = np.float32(0.01)
    elif spec.residual is not None:
        ops["res"] = RNG.standard_normal((spec.n, p, q, spec.k)).astype(spec.residual)
    return ops


def _vectors(o):
    return CI.epilogue_vectors(o["s_in"], o["s_w"], o["bias"], o["s_res"], o["s_out"], xp=cp)


def _float64_reference(spec, o):
    """act(acc * (s_in * s_w) + bias + residual) in float64 (the scales as the float32s
    the graph reads), then int8 codes rounded half to even and saturated, or floats."""
    acc = conv_nhwc(o["x"], o["w"], spec.stride, spec.pre_padding)
    m = (np.float32(o["s_in"]) * o["s_w"]).astype(np.float64)
    y = acc * m + o["bias"].astype(np.float64)
    if o["res"] is not None:
        r = o["res"].astype(np.float64)
        y = y + (r * np.float64(o["s_res"]) if spec.residual == "int8" else r)
    y = act_ref(y, spec.act, spec.alpha, spec.beta)
    if spec.out_dtype != "int8":
        return y
    return np.clip(np.rint(y * np.float64(np.float32(1) / o["s_out"])), -128, 127)


def _emulation(spec, o):
    """Our INT8 kernels' arithmetic (kernels/quantize.py, float32 op by op), NHWC."""
    acc = conv_nhwc(o["x"], o["w"], spec.stride, spec.pre_padding)
    res = None
    if o["res"] is not None:
        res = (o["res"], o["s_res"]) if spec.residual == "int8" else o["res"]
    return Q.epilogue_int8(acc, o["s_in"], o["s_w"], o["bias"], res, spec.act, spec.alpha, spec.beta,
                           s_out=o["s_out"], channel_axis=-1)


def _assert_codes_close(got, ref, what):
    d = np.abs(got.astype(np.int64) - ref.astype(np.int64))
    assert d.max() <= 1, f"{what}: a code {d.max()} off"
    assert np.mean(d > 0) <= MAX_OFF_BY_ONE, f"{what}: {np.mean(d > 0):.2e} of codes one off"


def _run(spec, o, out=None, **kw):
    return CI.conv2d_int8_graph(cp.asarray(o["x"]), cp.asarray(o["w"]), _vectors(o), spec,
                                residual=None if o["res"] is None else cp.asarray(o["res"]), out=out, **kw)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_int8_conv_graph_matches_the_float64_reference_and_our_emulation(case):
    spec = _spec(case)
    o = _operands(spec)
    p, q = spec.out_hw()
    if spec.out_dtype == "int8":
        out = cp.full((spec.n, p, q, spec.k), -128, np.int8)    # a code the data rarely gives
    else:
        out = poison(cp, (spec.n, p, q, spec.k), spec.out_dtype)
    y = _run(spec, o, out=out, max_plans=2).get()
    assert y.dtype == np.dtype(spec.out_dtype)
    ref, emu = _float64_reference(spec, o), _emulation(spec, o)
    plan = G.graph_for(spec).index
    if spec.out_dtype == "int8":
        assert np.unique(ref).size > 60 and np.mean(ref == 127) < 0.2, "codes spread over the range"
        _assert_codes_close(y, ref, f"vs float64 (plan {plan})")
        _assert_codes_close(y, emu, f"vs our emulation (plan {plan})")
    else:
        tol = 1e-6 if spec.out_dtype == "float32" else 1e-3
        assert rel_l2(y, ref) <= tol, f"rel L2 {rel_l2(y, ref):.2e} (plan {plan})"
        assert rel_l2(y, emu.astype(spec.out_dtype)) <= tol


def test_plans_are_enumerated_timed_and_the_fastest_kept():
    spec = _spec(CASES[0])
    o = _operands(spec)
    G.clear()
    _run(spec, o, max_plans=3)
    graph = G.graph_for(spec)
    finite = {i: t for i, t in graph.plan_times.items() if np.isfinite(t)}
    assert graph.plan_count >= 1 and finite, graph.plan_times
    assert graph.index == min(finite, key=finite.get)
    before = dict(graph.plan_times)
    _run(spec, o, max_plans=3)                         # reused: no new plan timing
    assert G.graph_for(spec) is graph and graph.plan_times == before
    assert [key for key in G._graphs if key[0] == spec] == [(spec, cp.cuda.Device().id, 3)]


def test_replays_inside_a_captured_cuda_graph_on_new_inputs():
    spec = _spec(CASES[0])
    o = _operands(spec)
    p, q = spec.out_hw()
    xd, wd, vd, rd = cp.asarray(o["x"]), cp.asarray(o["w"]), _vectors(o), cp.asarray(o["res"])
    out = cp.zeros((spec.n, p, q, spec.k), np.int8)
    CI.conv2d_int8_graph(xd, wd, vd, spec, residual=rd, out=out)     # plans chosen outside capture
    cp.cuda.Device().synchronize()
    stream, pool = cp.cuda.Stream(non_blocking=True), cp.cuda.MemoryPool()
    with cp.cuda.using_allocator(pool.malloc), stream:
        CI.conv2d_int8_graph(xd, wd, vd, spec, residual=rd, out=out)     # workspace block cached
        stream.synchronize()
        stream.begin_capture()
        CI.conv2d_int8_graph(xd, wd, vd, spec, residual=rd, out=out)
        graph = stream.end_capture()
        o2 = dict(o, x=RNG.integers(-127, 128, o["x"].shape).astype(np.int8),
                  res=RNG.integers(-127, 128, o["res"].shape).astype(np.int8))
        xd.set(o2["x"])
        rd.set(o2["res"])
        out.fill(-128)
        graph.launch(stream)
        stream.synchronize()
    _assert_codes_close(out.get(), _float64_reference(spec, o2), "replayed")


# -- the engine: conv.cudnn_i8 beside our INT8 kernels ------------------------------------------

def _int8_network():
    import engine as rt
    rng = np.random.default_rng(5)

    def randn(*s):
        return rng.standard_normal(s).astype(np.float32)
    net = rt.Network()
    x = net.add_input("x", rt.float32, (4, 16, 12, 12))
    c1 = net.add_convolution_nd(x, 32, (3, 3), kernel=randn(32, 16, 3, 3) * 0.1, bias=randn(32),
                                padding_nd=(1, 1))
    r1 = net.add_activation(c1.get_output(0), rt.ActivationType.RELU).get_output(0)
    c2 = net.add_convolution_nd(r1, 32, (3, 3), kernel=randn(32, 32, 3, 3) * 0.06, bias=randn(32),
                                padding_nd=(1, 1))
    s = net.add_elementwise(c2.get_output(0), r1, rt.ElementWiseOperation.SUM).get_output(0)
    r2 = net.add_activation(s, rt.ActivationType.RELU).get_output(0)
    pool = net.add_pooling_nd(r2, rt.PoolingType.MAX, (2, 2), stride_nd=(2, 2)).get_output(0)
    c3 = net.add_convolution_nd(pool, 16, (1, 1), kernel=randn(16, 32, 1, 1) * 0.2, bias=randn(16))
    net.mark_output(c3.get_output(0))
    data = [rng.uniform(-2, 2, (4, 16, 12, 12)).astype(np.float32) for _ in range(3)]
    return net, data, {"x": rng.uniform(-2, 2, (4, 16, 12, 12)).astype(np.float32)}


def _build(net, data, backend):
    import engine as rt
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = backend
    cfg.precision_by_timing = False        # the INT8 layers stay INT8: the tactics are compared
    cfg.set_flag(rt.BuilderFlag.INT8)
    cfg.set_flag(rt.BuilderFlag.FP16)
    cfg.int8_calibrator = rt.MinMaxCalibrator(data)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(b.build_serialized_network(net, cfg))


def _one_code(engine, name):
    """The width of one int8 code of output ``name`` (its calibrated range)."""
    t = next(t for t in engine.network._outputs if t.name == name)
    lo, hi = t.dynamic_range
    return float(Q.scale_from_amax(max(abs(lo), abs(hi))))


@pytest.fixture
def cudnn_int8_on(monkeypatch):
    """The tactic is off by default (the cudnn_int8 setting) until these tests have passed."""
    monkeypatch.setenv("CUPYRT_CUDNN_INT8", "1")


def test_int8_engine_times_cudnn_beside_its_own_kernels_and_matches_the_emulation(cudnn_int8_on):
    import engine as rt
    net, data, feeds = _int8_network()
    ref = _build(net, data, "numpy").create_execution_context().execute(feeds)
    eng = _build(net, data, "cupy")
    convs = [la for la in eng.network._layers if la.layer_type == rt.LayerType.CONVOLUTION]
    assert len(convs) == 3
    timed = eng.meta.get("tactic_ms", {})
    for la in convs:
        assert eng.meta["precisions"][la.name] == "INT8"
        ms = timed.get(la.name, {})
        assert ms.get("conv.cudnn_i8") is not None, (la.name, ms)          # timed, won or not
        assert any(k.startswith(("conv.i8_", "conv.wgi8_")) and v is not None for k, v in ms.items()), ms
    got = eng.create_execution_context().execute(feeds)
    for name, value in ref.items():
        d = np.abs(np.asarray(got[name], np.float64) - value)
        assert d.max() <= _one_code(eng, name), (name, d.max(), eng.backend.selected)


def test_int8_engine_with_cudnn_forced_matches_the_emulation_and_replays(cudnn_int8_on):
    import engine as rt
    net, data, feeds = _int8_network()
    ref = _build(net, data, "numpy").create_execution_context().execute(feeds)
    eng = _build(net, data, "cupy")
    convs = [la.name for la in eng.network._layers if la.layer_type == rt.LayerType.CONVOLUTION]
    for name in convs:
        eng.backend.forced[name] = "conv.cudnn_i8"
    out = next(iter(ref))
    runs = captured_runs(cp, eng, feeds, out, "conv.cudnn_i8 forced")
    assert all(eng.backend.selected[n] == "conv.cudnn_i8" for n in convs), eng.backend.selected
    code = _one_code(eng, out)
    assert np.abs(runs[0].astype(np.float64) - ref[out]).max() <= code
    np.testing.assert_array_equal(runs[1], runs[0])                     # captured
    np.testing.assert_array_equal(runs[2], runs[0])                     # replayed
