"""wgmma convolution tactics on an sm_90 GPU: FP16 vs a float64 NumPy reference, INT8 bit
for bit vs conv_int8.conv2d_int8 (itself bit-exact vs kernels/quantize.py). Random non-zero
data, NaN-poisoned outputs. Skipped (not failed) off compute capability 9.0.

First-run diagnostics: the two ``*_exact_gemm`` tests use small integers, so any wrong
element is a layout bug, not rounding; they print the first mismatching (m, n) and which
rows mod 64 / columns mod 8 go wrong (m: warpgroup / swizzle row phase, n: fragment column).
"""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from gpu_helpers import TOL, act_ref, conv_nhwc, poison, rel_l2  # noqa: E402
from kernels import quantize as Qz  # noqa: E402
from kernels.gpu import UnsupportedError  # noqa: E402
from kernels.gpu import conv_int8, conv_wgmma, quantize_int8  # noqa: E402

pytestmark = pytest.mark.skipif(not conv_wgmma.available(),
                                reason="wgmma kernels need a compute capability 9.0 device")

TACTICS = conv_wgmma.TACTICS
I8_TACTICS = conv_wgmma.INT8_TACTICS + conv_wgmma.INT8_OCC_TACTICS   # the 3-CTA tile: off in builds
RNG = np.random.default_rng(4321)

# (N, H, W, C, K, R, S, stride, pad, dil)
SHAPES = [
    (2, 9, 11, 64, 96, 1, 1, (1, 1), (0, 0), (1, 1)),        # 1x1 s1, one k-tile
    (2, 14, 14, 64, 136, 1, 1, (2, 2), (0, 0), (1, 1)),      # 1x1 s2, K not a tile multiple
    (2, 11, 13, 24, 72, 3, 3, (1, 1), (1, 1), (1, 1)),       # C=24: chunks cross taps, K=72
    (1, 9, 9, 40, 1000, 3, 3, (2, 2), (1, 1), (1, 1)),       # C=40, 3x3 s2, K=1000, batch 1
    (2, 17, 17, 8, 64, 7, 7, (2, 2), (3, 3), (1, 1)),        # stem-like 7x7 s2, C=8
    (3, 7, 7, 256, 128, 3, 3, (1, 1), (1, 1), (1, 1)),       # batch 3, deep, M=147
    (2, 12, 10, 24, 32, 3, 3, (1, 1), (2, 2), (2, 2)),       # dilation 2
    (2, 6, 6, 16, 20, 3, 3, (1, 1), (1, 1), (1, 1)),         # K % 8 != 0: scalar epilogue tail
    (1, 28, 28, 128, 128, 3, 3, (1, 1), (1, 1), (1, 1)),     # 18 k-tiles: the ring wraps often
]


def _sid(s):
    return "x".join(map(str, s[:7])) + f"_s{s[7][0]}_d{s[9][0]}"


def _data(N, H, W, C, K, R, S):
    x = RNG.standard_normal((N, H, W, C)).astype(np.float16)
    w = (RNG.standard_normal((K, R, S, C)) / np.sqrt(R * S * C)).astype(np.float16)
    scale = RNG.uniform(0.5, 1.5, K).astype(np.float32)
    bias = RNG.standard_normal(K).astype(np.float32)
    return x, w, scale, bias


def _mismatch_report(got, ref):
    """First wrong (m, n) of a [M, K] pair and the residues of the wrong rows / columns."""
    bad = np.argwhere(got != ref)
    if not len(bad):
        return ""
    m, n = bad[0]
    rows = sorted({int(r) % 64 for r in bad[:, 0]})[:16]
    cols = sorted({int(c) % 8 for c in bad[:, 1]})
    return (f"{len(bad)} of {got.size} wrong; first (m={m}, n={n}): got {got[m, n]}, "
            f"want {ref[m, n]}; wrong rows mod 64 {rows}; wrong cols mod 8 {cols}")


# ---- FP16 -----------------------------------------------------------------------------
@pytest.mark.parametrize("tactic", TACTICS, ids=lambda t: t.name)
def test_fp16_exact_gemm_small_integers(tactic):
    """1x1 conv = GEMM; integers in [-2, 2], C=192 (3 k-tiles): every FP32 sum is exact."""
    N, H, W, C, K = 1, 15, 17, 192, 200             # M = 255: not a BM multiple
    x = RNG.integers(-2, 3, (N, H, W, C)).astype(np.float16)
    w = RNG.integers(-2, 3, (K, 1, 1, C)).astype(np.float16)
    out = poison(cp, (N, H, W, K), np.float32)
    conv_wgmma.conv2d_wgmma(cp.asarray(x), cp.asarray(w), out=out, tactic=tactic)
    got = out.get().reshape(-1, K)
    ref = x.reshape(-1, C).astype(np.float64) @ w.reshape(K, C).astype(np.float64).T
    assert not _mismatch_report(got, ref), _mismatch_report(got, ref)


@pytest.mark.parametrize("tactic", TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES, ids=_sid)
def test_fp16_matches_reference_scale_bias_relu(tactic, shape):
    N, H, W, C, K, R, S, st, pd, dl = shape
    x, w, scale, bias = _data(N, H, W, C, K, R, S)
    ref = np.maximum(conv_nhwc(x, w, st, pd, dl) * scale + bias, 0)
    P, Q = ref.shape[1:3]
    out = poison(cp, (N, P, Q, K), np.float16)
    conv_wgmma.conv2d_wgmma(cp.asarray(x), cp.asarray(w), stride=st, padding=pd, dilation=dl,
                            scale=cp.asarray(scale), bias=cp.asarray(bias), act="RELU",
                            out=out, tactic=tactic)
    err = rel_l2(out.get(), ref)
    assert err <= TOL[np.dtype(np.float16)], err


@pytest.mark.parametrize("tactic", TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("act", ["RELU", "SIGMOID", "GELU_ERF"])   # GELU: its own 8-wide loop
@pytest.mark.parametrize("fast", [False, True], ids=["plain_epilogue", "fast_epilogue"])
def test_fp16_residual_activation_fp32_out(tactic, act, fast):
    N, H, W, C, K, R, S = 2, 10, 10, 48, 96, 3, 3
    x, w, scale, bias = _data(N, H, W, C, K, R, S)
    res = RNG.standard_normal((N, H, W, K)).astype(np.float32)
    ref = act_ref(conv_nhwc(x, w, (1, 1), (1, 1)) * scale + bias + res, act)
    out = poison(cp, (N, H, W, K), np.float32)
    conv_wgmma.conv2d_wgmma(cp.asarray(x), cp.asarray(w), padding=1, scale=scale, bias=bias,
                            residual=cp.asarray(res), act=act, out=out, tactic=tactic,
                            fast_epilogue=fast)
    assert rel_l2(out.get(), ref) <= 2e-3


@pytest.mark.parametrize("tactic", TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("out_dtype", [np.float16, np.float32])
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1], SHAPES[7], SHAPES[8]], ids=_sid)
def test_fp16_fast_epilogue_matches_the_default_path(tactic, out_dtype, shape):
    """The FAST instantiation (residual prefetched into shared memory: has_res bit 2;
    fixed-column epilogue; fast_epilogue=True, the engine's CUPYRT_WGMMA_F16_FAST_EPILOGUE): the same values as the validated path (the
    arithmetic per element is the same expression; 1 ulp allowed for FMA contraction)."""
    N, H, W, C, K, R, S, st, pd, dl = shape
    x, w, scale, bias = _data(N, H, W, C, K, R, S)
    P = (H + 2 * pd[0] - dl[0] * (R - 1) - 1) // st[0] + 1
    Q = (W + 2 * pd[1] - dl[1] * (S - 1) - 1) // st[1] + 1
    res = cp.asarray(RNG.standard_normal((N, P, Q, K)).astype(out_dtype))
    outs = []
    for fast in (False, True):
        for r in (None, res):
            out = poison(cp, (N, P, Q, K), out_dtype)
            conv_wgmma.conv2d_wgmma(cp.asarray(x), cp.asarray(w), stride=st, padding=pd,
                                    dilation=dl, scale=scale, bias=bias, residual=r,
                                    act="RELU", out=out, tactic=tactic, fast_epilogue=fast)
            outs.append(out.get())
    for base, fast in ((outs[0], outs[2]), (outs[1], outs[3])):
        assert np.isfinite(fast).all()
        np.testing.assert_allclose(fast.astype(np.float32), base.astype(np.float32),
                                   rtol=2e-3 if out_dtype == np.float16 else 1e-6, atol=1e-6)


@pytest.mark.parametrize("tactic", TACTICS[:2], ids=lambda t: t.name)
@pytest.mark.parametrize("off", [24, 4])
def test_fp16_writes_into_concat_buffer_at_channel_offset(tactic, off):
    N, H, W, C, K = 2, 8, 8, 32, 40
    x, w, scale, bias = _data(N, H, W, C, K, 1, 1)
    res = RNG.standard_normal((N, H, W, K)).astype(np.float16)
    buf = poison(cp, (N, H, W, 104), np.float16)
    conv_wgmma.conv2d_wgmma(cp.asarray(x), cp.asarray(w), scale=scale, bias=bias, act="RELU",
                            residual=cp.asarray(res), out=buf, out_channel_offset=off,
                            tactic=tactic)
    got = buf.get()
    ref = np.maximum(conv_nhwc(x, w) * scale + bias + res, 0)
    assert rel_l2(got[..., off:off + K], ref) <= 1e-2
    assert np.isnan(got[..., :off].astype(np.float32)).all()
    assert np.isnan(got[..., off + K:].astype(np.float32)).all()


def test_fp16_default_allocation_and_asymmetric_padding():
    N, H, W, C, K = 2, 8, 8, 16, 32
    x, w, scale, bias = _data(N, H, W, C, K, 3, 3)
    ref = conv_nhwc(x, w, (2, 2), (0, 0), out_hw=(4, 4)) * scale + bias
    out = conv_wgmma.conv2d_wgmma(cp.asarray(x), cp.asarray(w), stride=2, out_hw=(4, 4),
                                  scale=scale, bias=bias, out_dtype=np.float32)
    assert out.dtype == np.float32 and out.shape == (N, 4, 4, K)
    assert rel_l2(out.get(), ref) <= 2e-3


def test_fp16_replays_in_a_cuda_graph():
    N, H, W, C, K = 2, 14, 14, 64, 128
    x, w, scale, bias = _data(N, H, W, C, K, 3, 3)
    pool = cp.cuda.MemoryPool()
    cp.cuda.Device().synchronize()   # inputs made on the legacy stream are ready: a
    stream = cp.cuda.Stream(non_blocking=True)   # non-blocking stream would not wait for them
    with cp.cuda.using_allocator(pool.malloc), stream:
        # device arrays only: a host->device copy cannot be captured
        xd, wd, sd, bd = cp.asarray(x), cp.asarray(w), cp.asarray(scale), cp.asarray(bias)

        def body():
            return conv_wgmma.conv2d_wgmma(xd, wd, padding=1, scale=sd, bias=bd,
                                           act="RELU", tactic=TACTICS[0])
        first = body()                                                   # rehearsal
        stream.synchronize()
        stream.begin_capture()
        out = body()
        graph = stream.end_capture()
        out.fill(np.nan)
        graph.launch(stream)
        stream.synchronize()
    np.testing.assert_array_equal(out.get(), first.get())
    ref = np.maximum(conv_nhwc(x, w, (1, 1), (1, 1)) * scale + bias, 0)
    assert rel_l2(out.get(), ref) <= TOL[np.dtype(np.float16)]


# ---- INT8: bit for bit against conv_int8 ----------------------------------------------
# (name, N, H, W, C, K, R, S, stride, pad, dil)
I8_SHAPES = [
    ("1x1_s1_K96", 2, 9, 11, 64, 96, 1, 1, (1, 1), (0, 0), (1, 1)),
    ("1x1_s2_K136", 2, 14, 14, 64, 136, 1, 1, (2, 2), (0, 0), (1, 1)),
    ("3x3_C32_K72", 2, 11, 13, 32, 72, 3, 3, (1, 1), (1, 1), (1, 1)),
    ("3x3_s2_C48_K1000_b1", 1, 9, 9, 48, 1000, 3, 3, (2, 2), (1, 1), (1, 1)),
    ("7x7_s2_C3pad16", 2, 19, 17, 3, 64, 7, 7, (2, 2), (3, 3), (1, 1)),
    ("3x3_dil2_C40pad_K20", 2, 12, 10, 40, 20, 3, 3, (1, 1), (2, 2), (2, 2)),
    ("3x3_C256_b3", 3, 7, 7, 256, 128, 3, 3, (1, 1), (1, 1), (1, 1)),
    ("3x3_C128_28", 1, 28, 28, 128, 128, 3, 3, (1, 1), (1, 1), (1, 1)),
]


def _i8_case(shape, seed):
    _, N, H, W, C, K, R, S, st, pd, dl = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    w = (rng.standard_normal((K, C, R, S)) / np.sqrt(R * S * C)).astype(np.float32)
    s_in = Qz.scale_from_amax(0.8 * float(np.abs(x).max()))
    xq = quantize_int8.quantize_nhwc(cp.asarray(x), s_in, c_pad_to=16)
    wq, s_w = conv_int8.pack_weight_int8_krsc(w)
    bias = cp.asarray((0.5 * rng.standard_normal(K)).astype(np.float32))
    P = (H + 2 * pd[0] - dl[0] * (R - 1) - 1) // st[0] + 1
    Q = (W + 2 * pd[1] - dl[1] * (S - 1) - 1) // st[1] + 1
    geo = dict(stride=st, padding=pd, dilation=dl)
    return xq, wq, s_in, s_w, bias, (N, P, Q, K), geo, rng


def _both(xq, wq, s_in, s_w, shape, poison_value, dtype, tactic, **kw):
    """(wgmma result, conv_int8 default-tactic result) on the same inputs."""
    outs = []
    for fn, tk in ((conv_wgmma.conv2d_wgmma_int8, tactic), (conv_int8.conv2d_int8, None)):
        out = cp.full(shape, poison_value, dtype=dtype)
        extra = {"tactic": tk} if tk is not None else {}
        fn(xq, wq, s_in, s_w, out=out, **kw, **extra)
        outs.append(out.get())
    return outs


@pytest.mark.parametrize("tactic", I8_TACTICS, ids=lambda t: t.name)
def test_int8_exact_gemm_small_integers(tactic):
    """1x1 conv = GEMM with s_in = s_w = 1, float32 out: out == the integer product exactly."""
    N, H, W, C, K = 1, 15, 17, 384, 200             # 3 k-tiles of 128; M = 255
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (N, H, W, C)).astype(np.int8)
    w = rng.integers(-127, 128, (K, 1, 1, C)).astype(np.int8)
    out = poison(cp, (N, H, W, K), np.float32)
    conv_wgmma.conv2d_wgmma_int8(cp.asarray(x), cp.asarray(w), 1.0, cp.ones(K, cp.float32),
                                 out=out, out_dtype=np.float32, tactic=tactic)
    got = out.get().reshape(-1, K)
    ref = (x.reshape(-1, C).astype(np.int64) @ w.reshape(K, C).astype(np.int64).T).astype(np.float32)
    assert not _mismatch_report(got, ref), _mismatch_report(got, ref)


@pytest.mark.parametrize("tactic", I8_TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", I8_SHAPES, ids=lambda s: s[0])
def test_int8_out_int8_residual_relu_bit_exact(tactic, shape):
    xq, wq, s_in, s_w, bias, oshape, geo, rng = _i8_case(shape, 11)
    r = rng.standard_normal(oshape).astype(np.float32)
    s_r = Qz.scale_from_amax(float(np.abs(r).max()))
    rq = cp.asarray(Qz.quantize(r, s_r))
    s_out = Qz.scale_from_amax(2.0)                                  # the top values saturate
    got, ref = _both(xq, wq, s_in, s_w, oshape, 99, np.int8, tactic, bias=bias, residual=rq,
                     residual_scale=s_r, act="RELU", s_out=s_out, **geo)
    assert (ref == 127).any() and (ref == 0).any()
    assert not _mismatch_report(got.reshape(-1, oshape[3]), ref.reshape(-1, oshape[3])), \
        _mismatch_report(got.reshape(-1, oshape[3]), ref.reshape(-1, oshape[3]))


@pytest.mark.parametrize("tactic", I8_TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", I8_SHAPES[:4] + I8_SHAPES[5:6], ids=lambda s: s[0])
@pytest.mark.parametrize("out_dtype,res_dtype,act", [
    (np.float32, np.float32, "LEAKY_RELU"), (np.float16, np.float16, "CLIP"),
    (np.float32, None, None)])
def test_int8_float_out_bit_exact(tactic, shape, out_dtype, res_dtype, act):
    xq, wq, s_in, s_w, bias, oshape, geo, rng = _i8_case(shape, 23)
    kw = {}
    if res_dtype is not None:
        kw["residual"] = cp.asarray(rng.standard_normal(oshape).astype(res_dtype))
    alpha, beta = (0.1, 0.0) if act == "LEAKY_RELU" else (-0.3, 0.8)
    got, ref = _both(xq, wq, s_in, s_w, oshape, np.nan, out_dtype, tactic, bias=bias,
                     act=act, alpha=alpha, beta=beta, **geo, **kw)
    np.testing.assert_array_equal(got, ref)


def test_int8_concat_offset_leaves_other_channels():
    xq, wq, s_in, s_w, bias, (N, P, Q, K), geo, _ = _i8_case(I8_SHAPES[2], 2)
    s_out = Qz.scale_from_amax(2.0)
    ref = conv_int8.conv2d_int8(xq, wq, s_in, s_w, bias=bias, s_out=s_out, **geo).get()
    out = cp.full((N, P, Q, K + 24), 77, cp.int8)
    conv_wgmma.conv2d_wgmma_int8(xq, wq, s_in, s_w, bias=bias, s_out=s_out, out=out,
                                 out_channel_offset=8, **geo)
    got = out.get()
    np.testing.assert_array_equal(got[..., 8:8 + K], ref)
    assert (got[..., :8] == 77).all() and (got[..., 8 + K:] == 77).all()


def test_int8_replays_in_a_cuda_graph():
    xq, wq, s_in, s_w, bias, _, geo, _ = _i8_case(I8_SHAPES[6], 9)
    s_out = Qz.scale_from_amax(3.0)
    ref = conv_int8.conv2d_int8(xq, wq, s_in, s_w, bias=bias, act="RELU", s_out=s_out, **geo).get()
    pool = cp.cuda.MemoryPool()
    cp.cuda.Device().synchronize()   # inputs made on the legacy stream are ready: a
    stream = cp.cuda.Stream(non_blocking=True)   # non-blocking stream would not wait for them
    with cp.cuda.using_allocator(pool.malloc), stream:
        def body():
            return conv_wgmma.conv2d_wgmma_int8(xq, wq, s_in, s_w, bias=bias, act="RELU",
                                                s_out=s_out, tactic=I8_TACTICS[1], **geo)
        body()
        stream.synchronize()
        stream.begin_capture()
        out = body()
        graph = stream.end_capture()
        out.fill(100)
        graph.launch(stream)
        stream.synchronize()
    np.testing.assert_array_equal(out.get(), ref)


def test_int8_rejects_wrong_scale_vector_length():
    x = cp.zeros((1, 4, 4, 16), cp.int8)
    w = cp.zeros((8, 1, 1, 16), cp.int8)
    with pytest.raises(UnsupportedError, match=r"s_w \(4,\); expected \(8,\)"):
        conv_wgmma.conv2d_wgmma_int8(x, w, 1.0, cp.ones(4, cp.float32), s_out=1.0)
    with pytest.raises(UnsupportedError, match=r"bias \(3,\); expected \(8,\)"):
        conv_wgmma.conv2d_wgmma_int8(x, w, 1.0, cp.ones(8, cp.float32), s_out=1.0,
                                     bias=cp.ones(3, cp.float32))


def test_compile_all_on_sm90():
    conv_wgmma.compile_all(TACTICS[:1] + I8_TACTICS[:1])
