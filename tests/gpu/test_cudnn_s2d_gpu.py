"""The space-to-depth stem on a GPU: the kernel (kernels/cuda/space_to_depth.cu) bit-exact
against the NumPy transform for float32/float16 inputs, contiguous NCHW and NHWC-backed
views, odd sizes and a misaligned output; the conv.cudnn_s2d tactic against a float64
NumPy convolution + bias + ReLU (and replayed in a captured CUDA graph); an FP16 engine
build that times it. The tactic's tests need the cuDNN frontend (``pip install
'cupyrt[cudnn]'``) and skip without it; the kernel's need only CUDA."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from gpu_helpers import act_ref, conv_nhwc, rel_l2  # noqa: E402
from kernels.gpu import cudnn_graphs as G  # noqa: E402
from kernels.gpu import space_to_depth as S  # noqa: E402

RNG = np.random.default_rng(8080)
needs_frontend = pytest.mark.skipif(not G.available(), reason=f"{G.unavailable_reason()}")


def _expected(x_host, hs, ws, c_pad):
    return S.s2d_reference(x_host.astype(np.float32), hs, ws, c_pad).astype(np.float16)


# (N, C, H, W, dtype, c_pad, layout): layout "nchw" contiguous, "nhwc" an NHWC buffer seen as NCHW
KERNEL_CASES = [
    (2, 3, 15, 17, np.float32, 16, "nchw"),       # odd H and W: scalar loads, zero last row/column
    (2, 3, 16, 20, np.float32, 16, "nchw"),       # even W: pair loads
    (1, 3, 224, 224, np.float32, 16, "nchw"),     # ResNet's stem, one image
    (3, 2, 9, 12, np.float16, 8, "nchw"),
    (2, 1, 7, 7, np.float16, 8, "nchw"),
    (2, 4, 11, 13, np.float16, 16, "nhwc"),
    (2, 3, 10, 12, np.float32, 16, "nhwc"),
]


@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-"
                         f"{np.dtype(c[4]).name}-cp{c[5]}-{c[6]}")
def test_kernel_is_bit_exact_against_the_numpy_transform(case):
    n, c, h, w, dtype, c_pad, layout = case
    host = RNG.standard_normal((n, c, h, w)).astype(dtype)
    if layout == "nhwc":
        x = cp.asarray(np.ascontiguousarray(host.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
        assert not x.flags.c_contiguous
    else:
        x = cp.asarray(host)
    hs, ws = -(-h // 2), -(-w // 2)
    out = cp.full((n, hs, ws, c_pad), np.nan, np.float16)
    got = S.space_to_depth_nhwc(x, c_pad, out=out)
    assert got is out
    np.testing.assert_array_equal(out.get().view(np.uint16), _expected(host, hs, ws, c_pad).view(np.uint16))


def test_kernel_makes_fewer_rows_when_asked_and_writes_a_misaligned_buffer():
    host = RNG.standard_normal((2, 3, 9, 11)).astype(np.float32)
    hs, ws = 4, 5                                  # one row and column fewer than ceil(/2)
    flat = cp.full(2 * hs * ws * 16 + 1, np.nan, np.float16)
    out = flat[1:].reshape(2, hs, ws, 16)          # 2-byte aligned only: the narrow stores
    assert out.data.ptr % 16 and out.flags.c_contiguous
    S.space_to_depth_nhwc(cp.asarray(host), 16, out=out, hs=hs, ws=ws)
    np.testing.assert_array_equal(out.get().view(np.uint16), _expected(host, hs, ws, 16).view(np.uint16))
    fresh = S.space_to_depth_nhwc(cp.asarray(host))
    assert fresh.shape == (2, 5, 6, 16) and fresh.dtype == np.float16 and fresh.flags.c_contiguous


# -- the tactic ---------------------------------------------------------------------------

def _stem_layer(n, c, h, w, k, r, pad, act="RELU"):
    import engine as rt
    net = rt.Network()
    x = net.add_input("x", rt.float32, (n, c, h, w))
    wt = (RNG.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
    bias = RNG.standard_normal(k).astype(np.float32)
    conv = net.add_convolution_nd(x, k, (r, r), kernel=wt, bias=bias)
    conv.stride_nd, conv.padding_nd = (2, 2), (pad, pad)
    if act is not None:
        conv.post_activation = getattr(rt.ActivationType, act)
    net.mark_output(conv.get_output(0))
    return net, conv, wt, bias


def _reference(x_nchw, wt, bias, pad):
    v = conv_nhwc(x_nchw.transpose(0, 2, 3, 1), wt.transpose(0, 2, 3, 1), (2, 2), (pad, pad))
    return act_ref(v + bias.astype(np.float64), "RELU")


# (N, C, H, W, K, R, pad, input dtype, layout)
TACTIC_CASES = [
    (2, 3, 32, 32, 16, 7, 3, np.float32, "nchw"),     # a small RGB stem
    (2, 2, 17, 19, 8, 3, 1, np.float32, "nchw"),      # odd sizes, 3x3/2, C = 2 -> 8 channels
    (2, 4, 15, 16, 24, 5, 2, np.float16, "nhwc"),     # another layer's NHWC output as input
]


@needs_frontend
@pytest.mark.parametrize("case", TACTIC_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-k{c[4]}-"
                         f"{c[5]}x{c[5]}p{c[6]}-{np.dtype(c[7]).name}-{c[8]}")
def test_tactic_matches_float64_conv_bias_relu(case):
    import engine as rt
    from engine.gpu.cudnn_s2d_tactics import ConvCudnnS2d
    n, c, h, w, k, r, pad, dtype, layout = case
    _, layer, wt, bias = _stem_layer(n, c, h, w, k, r, pad)
    host = RNG.standard_normal((n, c, h, w)).astype(dtype)
    x = cp.asarray(host) if layout == "nchw" else \
        cp.asarray(np.ascontiguousarray(host.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    t = ConvCudnnS2d()
    assert t.supports(layer, [x.shape], [x.dtype.name], rt.DataType.HALF) is None
    state = t.prepare(layer)
    (y,) = t.run(state, layer, [x], rt.DataType.HALF, [rt.DataType.HALF])
    assert y.shape == (n, k) + tuple(layer.geometry(x.shape)[0]) and y.dtype == np.float16
    err = rel_l2(y.get(), _reference(host.astype(np.float64), wt, bias, pad).transpose(0, 3, 1, 2))
    assert err <= 1e-2, err


@needs_frontend
def test_tactic_replays_inside_a_captured_cuda_graph_on_new_inputs():
    import engine as rt
    from engine.gpu.cudnn_s2d_tactics import ConvCudnnS2d
    n, c, h, w, k, r, pad = 2, 3, 32, 32, 16, 7, 3
    _, layer, wt, bias = _stem_layer(n, c, h, w, k, r, pad)
    t = ConvCudnnS2d()
    state = t.prepare(layer)
    x = cp.asarray(RNG.standard_normal((n, c, h, w)).astype(np.float32))
    t.run(state, layer, [x], rt.DataType.HALF, [rt.DataType.HALF])     # plans chosen outside capture
    cp.cuda.Device().synchronize()
    stream = cp.cuda.Stream(non_blocking=True)
    pool = cp.cuda.MemoryPool()
    with cp.cuda.using_allocator(pool.malloc), stream:
        t.run(state, layer, [x], rt.DataType.HALF, [rt.DataType.HALF])     # rehearsal: blocks cached
        stream.synchronize()
        stream.begin_capture()
        (y,) = t.run(state, layer, [x], rt.DataType.HALF, [rt.DataType.HALF])
        graph = stream.end_capture()
        host = RNG.standard_normal((n, c, h, w)).astype(np.float32)
        x.set(host)
        y.fill(np.nan)
        graph.launch(stream)
        stream.synchronize()
    assert rel_l2(y.get(), _reference(host.astype(np.float64), wt, bias, pad).transpose(0, 3, 1, 2)) <= 1e-2


@needs_frontend
def test_engine_times_the_s2d_tactic_for_a_stem_and_matches_float64(monkeypatch):
    import engine as rt
    from engine.gpu.tactics import candidates
    monkeypatch.setenv("CUPYRT_CUDNN_S2D", "1")          # off by default until these tests pass
    net, conv, wt, bias = _stem_layer(4, 3, 64, 64, 64, 7, 3)
    host = RNG.standard_normal((4, 3, 64, 64)).astype(np.float32)
    cfg = rt.Builder().create_builder_config()
    cfg.backend = "cupy"
    cfg.set_flag(rt.BuilderFlag.FP16)
    eng = rt.Runtime(backend="cupy").deserialize_cuda_engine(rt.Builder().build_serialized_network(net, cfg))
    layer = eng.network.get_layer(0)
    assert "conv.cudnn_s2d" in [t.name for t in candidates(layer)]
    (got,) = eng.create_execution_context().execute({"x": host}).values()
    assert rel_l2(got, _reference(host.astype(np.float64), wt, bias, 3).transpose(0, 3, 1, 2)) <= 1e-2
    timed = eng.meta.get("tactic_ms", {}).get(layer.name, {})
    assert timed.get("conv.cudnn_s2d") is not None, timed      # timed, whether or not it won
