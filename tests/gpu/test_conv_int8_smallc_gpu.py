"""INT8 small-C stem on the GPU: conv2d_int8_smallc bit-identical to conv2d_int8 on the
input padded to 16 channels (exact int32 sums, the same epilogue), the vectorised and
NCHW quantize kernels bit-identical to the scalar one, CUDA-graph replay, and the engine
tactic against ConvInt8. Random non-zero codes, poisoned outputs."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from kernels import quantize as Q  # noqa: E402
from kernels.gpu import UnsupportedError  # noqa: E402
from gpu_helpers import check_is_stem, fixed_precision_plan, forced_outputs, stem_net  # noqa: E402
from kernels.gpu import conv_int8, conv_int8_smallc, quantize_int8  # noqa: E402

SC = conv_int8_smallc.SMALLC_TACTICS
REF_TACTIC = conv_int8.INT8_TACTICS[0]

# (name, H, W, R, S, stride, pad, dil)
GEOMS = [
    ("stem_7x7s2", 23, 19, 7, 7, (2, 2), (3, 3), (1, 1)),
    ("3x3s1", 13, 11, 3, 3, (1, 1), (1, 1), (1, 1)),
    ("5x5s2", 17, 14, 5, 5, (2, 2), (2, 2), (1, 1)),
]


def _case(N, C, K, geom, seed, Cs=4):
    _, H, W, R, S, st, pd, dl = geom
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (N, H, W, C), dtype=np.int8)
    w = (rng.standard_normal((K, C, R, S)) / np.sqrt(R * S * C)).astype(np.float32)
    x16 = np.zeros((N, H, W, 16), np.int8)
    x16[..., :C] = x
    xs = np.zeros((N, H, W, Cs), np.int8)
    xs[..., :C] = x
    P = (H + 2 * pd[0] - dl[0] * (R - 1) - 1) // st[0] + 1
    Qo = (W + 2 * pd[1] - dl[1] * (S - 1) - 1) // st[1] + 1
    return dict(x16=cp.asarray(x16), xs=cp.asarray(xs), w=w, R=R, S=S, st=st, pd=pd, dl=dl,
                P=P, Q=Qo, N=N, K=K, rng=rng,
                bias=cp.asarray((0.5 * rng.standard_normal(K)).astype(np.float32)))


def _both(c, tactic, out_dtype, poison, **kw):
    """(small-C result, conv2d_int8 result on C padded to 16), same arguments."""
    wq16, s_w16 = conv_int8.pack_weight_int8_krsc(c["w"])
    wsc, s_wsc = conv_int8_smallc.pack_weight_int8_smallc(c["w"])
    np.testing.assert_array_equal(s_w16.get(), s_wsc.get())
    shape = (c["N"], c["P"], c["Q"], c["K"])
    common = dict(stride=c["st"], padding=c["pd"], dilation=c["dl"], bias=c["bias"],
                  out_dtype=out_dtype, **kw)
    ref = cp.full(shape, poison, out_dtype)
    conv_int8.conv2d_int8(c["x16"], wq16, 0.02, s_w16, out=ref, tactic=REF_TACTIC, **common)
    got = cp.full(shape, poison, out_dtype)
    conv_int8_smallc.conv2d_int8_smallc(c["xs"], wsc, 0.02, s_wsc, kernel_size=(c["R"], c["S"]),
                                 out=got, tactic=tactic, **common)
    return got.get(), ref.get()


@pytest.mark.parametrize("tactic", SC, ids=lambda t: t.name)
@pytest.mark.parametrize("geom", GEOMS, ids=lambda g: g[0])
@pytest.mark.parametrize("C", [1, 2, 3, 4])
@pytest.mark.parametrize("K", [64, 72])
@pytest.mark.parametrize("N", [1, 3])
def test_int8_out_bit_exact_vs_padded_conv(tactic, geom, C, K, N):
    """int8 out (requantised), bias + int8 residual + ReLU."""
    c = _case(N, C, K, geom, seed=C * 100 + K + N)
    shape = (N, c["P"], c["Q"], K)
    rq = cp.asarray(c["rng"].integers(-128, 128, shape, dtype=np.int8))
    for poison in (99, -99):
        got, ref = _both(c, tactic, np.int8, poison, residual=rq, residual_scale=0.05, act="RELU",
                         s_out=Q.scale_from_amax(3.0))
        assert (ref == 127).any() and (ref == 0).any()          # saturation and ReLU exercised
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("tactic", SC, ids=lambda t: t.name)
@pytest.mark.parametrize("geom", GEOMS, ids=lambda g: g[0])
@pytest.mark.parametrize("C", [1, 3, 4])
@pytest.mark.parametrize("out_dtype, res_dtype, act", [
    (np.float32, np.float32, "LEAKY_RELU"), (np.float16, np.float16, "CLIP"), (np.float32, None, None)])
def test_float_out_bit_exact_vs_padded_conv(tactic, geom, C, out_dtype, res_dtype, act):
    c = _case(3, C, 72, geom, seed=7 + C)
    kw = {}
    if res_dtype is not None:
        kw["residual"] = cp.asarray(c["rng"].standard_normal((3, c["P"], c["Q"], 72)).astype(res_dtype))
    got, ref = _both(c, tactic, out_dtype, np.nan, act=act, alpha=0.1 if act == "LEAKY_RELU" else -0.3,
                     beta=0.8, **kw)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("Cs", [8, 16])
def test_stored_channels_past_four_are_ignored(Cs):
    c = _case(2, 3, 64, GEOMS[0], seed=3, Cs=Cs)
    c["xs"][..., 4:] = 55                                       # garbage in the padding
    got, ref = _both(c, SC[0], np.int8, 0, s_out=Q.scale_from_amax(2.0))
    np.testing.assert_array_equal(got, ref)


def test_resnet_stem_size_bit_exact_and_concat_offset():
    c = _case(3, 3, 64, ("r50", 224, 224, 7, 7, (2, 2), (3, 3), (1, 1)), seed=11)
    got, ref = _both(c, SC[1], np.int8, 0, act="RELU", s_out=Q.scale_from_amax(4.0))
    np.testing.assert_array_equal(got, ref)
    wsc, s_w = conv_int8_smallc.pack_weight_int8_smallc(c["w"])
    out = cp.full((3, 112, 112, 80), 77, cp.int8)
    conv_int8_smallc.conv2d_int8_smallc(c["xs"], wsc, 0.02, s_w, kernel_size=7, stride=2, padding=3,
                                 bias=c["bias"], act="RELU", s_out=Q.scale_from_amax(4.0), out=out,
                                 out_channel_offset=8)
    o = out.get()
    np.testing.assert_array_equal(o[..., 8:72], ref)
    assert (o[..., :8] == 77).all() and (o[..., 72:] == 77).all()


# ---- quantize: vectorised and NCHW variants vs the scalar kernel ------------------------

def _float_input(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    flat = x.reshape(-1)
    flat[:8] = [0.5, 1.5, 2.5, -2.5, -0.5, np.inf, -np.inf, np.nan]   # ties (s = 1), inf, NaN
    flat[8:12] = [1e6, -1e6, 127.5, -128.5]                            # saturation
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape, c_pad_to", [
    ((2, 5, 7, 3), 4), ((2, 5, 7, 3), 16), ((2, 5, 7, 3), 1), ((3, 8, 8, 16), 16),
    ((1, 5, 7, 19), 16), ((2, 3, 5, 32), 1), ((1, 1, 3, 5), 1), ((7, 13), 1)])
@pytest.mark.parametrize("s", [1.0, 0.05])
def test_quantize_nhwc_vec_matches_scalar(dtype, shape, c_pad_to, s):
    x = cp.asarray(_float_input(shape, dtype, 1))
    ref = quantize_int8.quantize_nhwc(x, s, c_pad_to=c_pad_to, variant="scalar").get()
    got = quantize_int8.quantize_nhwc(x, s, c_pad_to=c_pad_to, variant="vec").get()
    np.testing.assert_array_equal(got, ref)
    auto = quantize_int8.quantize_nhwc(x, s, c_pad_to=c_pad_to, variant="auto").get()
    np.testing.assert_array_equal(auto, ref)
    if x.dtype == np.float32:                        # and the NumPy contract, where finite
        xh = x.get()
        fin = np.isfinite(xh)
        np.testing.assert_array_equal(ref[..., :shape[-1]][fin], Q.quantize(xh, s)[fin])


def test_quantize_nhwc_vec_unaligned_input_and_64bit_indices(monkeypatch):
    base = cp.asarray(_float_input((1 + 2 * 6 * 16,), np.float32, 2))
    x = base[1:].reshape(2, 6, 16)                   # dense but 4 bytes off: scalar loads
    ref = quantize_int8.quantize_nhwc(x, 0.1, variant="scalar").get()
    np.testing.assert_array_equal(quantize_int8.quantize_nhwc(x, 0.1, variant="vec").get(), ref)
    monkeypatch.setattr(quantize_int8, "_I32", 16)       # force the long long instantiations
    np.testing.assert_array_equal(quantize_int8.quantize_nhwc(x, 0.1, variant="vec").get(), ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape, c_pad_to", [
    ((2, 3, 8, 12), 4), ((2, 3, 7, 9), 4), ((1, 3, 224, 224), 4), ((2, 3, 8, 12), 16),
    ((2, 4, 5, 5), 4), ((1, 20, 6, 6), 16), ((3, 1, 2, 2), 4), ((2, 6, 3, 5), 4)])
def test_quantize_nchw_to_nhwc_matches_scalar(dtype, shape, c_pad_to):
    x = cp.asarray(_float_input(shape, dtype, 3))
    ref = quantize_int8.quantize_nhwc(cp.ascontiguousarray(x.transpose(0, 2, 3, 1)), 0.05,
                                  c_pad_to=c_pad_to, variant="scalar").get()
    got = quantize_int8.quantize_nchw_to_nhwc(x, 0.05, c_pad_to=c_pad_to).get()
    np.testing.assert_array_equal(got, ref)


def test_quantize_nchw_unaligned_input_and_64bit_indices(monkeypatch):
    base = cp.asarray(_float_input((1 + 2 * 3 * 8 * 8,), np.float32, 4))
    x = base[1:].reshape(2, 3, 8, 8)                 # HW % 4 == 0 but 4 bytes off: scalar loads
    ref = quantize_int8.quantize_nhwc(cp.ascontiguousarray(x.transpose(0, 2, 3, 1)), 0.1,
                                  c_pad_to=4, variant="scalar").get()
    np.testing.assert_array_equal(quantize_int8.quantize_nchw_to_nhwc(x, 0.1).get(), ref)
    monkeypatch.setattr(quantize_int8, "_I32", 16)
    np.testing.assert_array_equal(quantize_int8.quantize_nchw_to_nhwc(x, 0.1).get(), ref)


def test_quantize_vec_rejects_unaligned_out():
    x = cp.ones((2, 4, 4, 4), cp.float32)
    buf = cp.zeros(2 * 4 * 4 * 4 + 4, cp.int8)
    out = buf[4:].reshape(2, 4, 4, 4)
    with pytest.raises(UnsupportedError, match="not 16-byte aligned; use variant='scalar'"):
        quantize_int8.quantize_nhwc(x, 1.0, out=out, variant="vec")
    quantize_int8.quantize_nhwc(x, 1.0, out=out, variant="auto")   # auto: scalar, any alignment
    with pytest.raises(UnsupportedError, match="is not 16-byte aligned"):
        quantize_int8.quantize_nchw_to_nhwc(cp.ones((2, 4, 4, 4), cp.float32), 1.0, out=out)


def test_smallc_rejects_unaligned_operands():
    buf = cp.zeros(1 * 8 * 8 * 4 + 2, cp.int8)
    x = buf[2:].reshape(1, 8, 8, 4)
    wbuf = cp.zeros(8 * 12 * 4 + 4, cp.int8)
    w = wbuf[4:].reshape(8, 12, 4)
    s = cp.ones(8, cp.float32)
    with pytest.raises(UnsupportedError, match="needs x 4-byte and the weights 16-byte aligned"):
        conv_int8_smallc.conv2d_int8_smallc(x, wbuf[:-4].reshape(8, 12, 4), 1.0, s, kernel_size=3, s_out=1.0)
    with pytest.raises(UnsupportedError, match="needs x 4-byte and the weights 16-byte aligned"):
        conv_int8_smallc.conv2d_int8_smallc(cp.zeros((1, 8, 8, 4), cp.int8), w, 1.0, s, kernel_size=3,
                                     s_out=1.0)


def test_smallc_rejects_bad_scale_vectors():
    x = cp.zeros((1, 8, 8, 4), cp.int8)
    w = cp.zeros((8, 12, 4), cp.int8)
    with pytest.raises(UnsupportedError, match=r"s_w \(4,\); expected \(8,\)"):
        conv_int8_smallc.conv2d_int8_smallc(x, w, 1.0, cp.ones(4, cp.float32), kernel_size=3, s_out=1.0)


# ---- CUDA graph, engine --------------------------------------------------------------------

def test_quantize_and_smallc_conv_replay_in_a_cuda_graph():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    w = rng.standard_normal((64, 3, 7, 7)).astype(np.float32) / 12
    s_in, s_out = Q.scale_from_amax(2.5), Q.scale_from_amax(3.0)
    pool = cp.cuda.MemoryPool()
    cp.cuda.Device().synchronize()   # inputs made on the legacy stream are ready: a
    stream = cp.cuda.Stream(non_blocking=True)   # non-blocking stream would not wait for them
    with cp.cuda.using_allocator(pool.malloc), stream:
        xd = cp.asarray(x)
        wsc, s_w = conv_int8_smallc.pack_weight_int8_smallc(w)
        wq16, s_w16 = conv_int8.pack_weight_int8_krsc(w)
        bias = cp.asarray(rng.standard_normal(64).astype(np.float32))
        ref = conv_int8.conv2d_int8(
            quantize_int8.quantize_nhwc(cp.ascontiguousarray(xd.transpose(0, 2, 3, 1)), s_in, c_pad_to=16),
            wq16, s_in, s_w16, stride=2, padding=3, bias=bias, act="RELU", s_out=s_out).get()

        def body():
            xq = quantize_int8.quantize_nchw_to_nhwc(xd, s_in, c_pad_to=4)
            return conv_int8_smallc.conv2d_int8_smallc(xq, wsc, s_in, s_w, kernel_size=7, stride=2,
                                                padding=3, bias=bias, act="RELU", s_out=s_out)
        body()                                                        # rehearsal: compile, pool
        stream.synchronize()
        stream.begin_capture()
        out = body()
        graph = stream.end_capture()
        out.fill(100)
        graph.launch(stream)
        stream.synchronize()
    np.testing.assert_array_equal(out.get(), ref)


def test_engine_tactic_matches_conv_int8_on_a_stem(monkeypatch):
    """ConvInt8SmallC forced on the stem of an INT8 engine: the same outputs as ConvInt8
    forced there, bit for bit (registered for this test only: the flag's registration
    happens at import)."""
    import engine as rt
    from engine import kernel_table
    from engine.gpu.conv_int8_tactics import ConvInt8SmallC
    from engine.types import LayerType
    tactics = list(kernel_table.TACTICS[LayerType.CONVOLUTION])
    if not any(isinstance(t, ConvInt8SmallC) for t in tactics):
        tactics += [ConvInt8SmallC(t) for t in SC]
    monkeypatch.setitem(kernel_table.TACTICS, LayerType.CONVOLUTION, tactics)
    net, randn = stem_net(2, 40, 40, tail_k=16)
    data = [randn(2, 3, 40, 40) for _ in range(3)]
    feeds = {"x": randn(2, 3, 40, 40)}
    plan = fixed_precision_plan(net, rt.BuilderFlag.INT8, data)
    outs = forced_outputs(plan, ("conv." + SC[0].name, "conv." + REF_TACTIC.name), feeds, check_is_stem)
    a, b_ = outs.values()                            # host arrays (execute's outputs)
    for k in a:
        np.testing.assert_array_equal(a[k], b_[k])
