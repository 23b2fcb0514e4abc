"""INT8 convolution tactics on the GPU vs the NumPy INT8 emulation (kernels/quantize.py),
bit for bit: int8 outputs equal, float32 outputs equal, float16 outputs equal to the
float16 rounding of the emulation's float32 result. Random non-zero data, poisoned outputs."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from kernels import quantize as Q  # noqa: E402
from kernels.gpu import UnsupportedError  # noqa: E402
from kernels.gpu import conv_int8, quantize_int8  # noqa: E402

TACTICS = conv_int8.INT8_TACTICS
# float outputs compile two more instantiations per tactic: two tactics cover them
FLOAT_OUT_TACTICS = (TACTICS[0], TACTICS[2])

# (name, N, H, W, C, K, R, S, stride, pad, dil)
SHAPES = [
    ("3x3_s1_K72", 2, 11, 13, 32, 72, 3, 3, (1, 1), (1, 1), (1, 1)),
    ("1x1_s2_K136", 2, 14, 14, 64, 136, 1, 1, (2, 2), (0, 0), (1, 1)),
    ("7x7_s2_C3pad", 2, 19, 17, 3, 64, 7, 7, (2, 2), (3, 3), (1, 1)),
    ("3x3_dil2_C40pad_K20", 2, 12, 10, 40, 20, 3, 3, (1, 1), (2, 2), (2, 2)),
    ("3x3_C256_deep", 3, 7, 7, 256, 128, 3, 3, (1, 1), (1, 1), (1, 1)),
    ("3x3_s2_K264", 1, 16, 16, 48, 264, 3, 3, (2, 2), (1, 1), (1, 1)),
    # ResNet-50 layers at a batch that spans many tiles of every size
    ("r50_3x3_64_b8", 8, 56, 56, 64, 64, 3, 3, (1, 1), (1, 1), (1, 1)),
    ("r50_1x1_256_64_b8", 8, 56, 56, 256, 64, 1, 1, (1, 1), (0, 0), (1, 1)),
    ("r50_1x1_64_256_b8", 8, 56, 56, 64, 256, 1, 1, (1, 1), (0, 0), (1, 1)),
    ("r50_3x3s2_128_b8", 8, 56, 56, 128, 128, 3, 3, (2, 2), (1, 1), (1, 1)),
    ("r50_1x1s2_1024_2048_b4", 4, 14, 14, 1024, 2048, 1, 1, (2, 2), (0, 0), (1, 1)),
    ("r50_stem_b4", 4, 224, 224, 3, 64, 7, 7, (2, 2), (3, 3), (1, 1)),
]


def _case(shape, seed):
    _, N, H, W, C, K, R, S, st, pd, dl = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    w = (rng.standard_normal((K, C, R, S)) / np.sqrt(R * S * C)).astype(np.float32)
    bias = (0.5 * rng.standard_normal(K)).astype(np.float32)
    # amax below max|x|: the largest activations saturate
    s_in = Q.scale_from_amax(0.8 * float(np.abs(x).max()))
    P = (H + 2 * pd[0] - dl[0] * (R - 1) - 1) // st[0] + 1
    Qo = (W + 2 * pd[1] - dl[1] * (S - 1) - 1) // st[1] + 1
    return dict(x=x, w=w, bias=bias, s_in=s_in, st=st, pd=pd, dl=dl, P=P, Q=Qo, K=K, rng=rng)


def _acc_nhwc(c):
    """Exact accumulators of the emulation, NHWC float64."""
    xq = Q.quantize(c["x"], c["s_in"])                              # NHWC int8
    wq, s_w = Q.quantize_weights(c["w"])                            # KCRS int8
    acc = Q.conv_int8(xq.transpose(0, 3, 1, 2), wq, c["st"], c["pd"], (c["P"], c["Q"]),
                      c["dl"], 1)
    return acc.transpose(0, 2, 3, 1), s_w


def _gpu_inputs(c):
    xq = quantize_int8.quantize_nhwc(cp.asarray(c["x"]), c["s_in"], c_pad_to=16)
    wq, s_w = conv_int8.pack_weight_int8_krsc(c["w"])
    return xq, wq, s_w


def _run(c, xq, wq, s_w, poison, **kw):
    N = c["x"].shape[0]
    dt = np.dtype(kw.pop("out_dtype"))
    out = cp.full((N, c["P"], c["Q"], c["K"]), poison, dtype=dt)
    conv_int8.conv2d_int8(xq, wq, c["s_in"], s_w, stride=c["st"], padding=c["pd"],
                          dilation=c["dl"], bias=cp.asarray(c["bias"]), out=out, **kw)
    return out.get()


@pytest.mark.parametrize("in_dtype", [np.float32, np.float16])
def test_quantize_nhwc_matches_emulation_bit_exact(in_dtype):
    rng = np.random.default_rng(7)
    x = (3 * rng.standard_normal((2, 5, 7, 19))).astype(in_dtype)
    x[0, 0, 0, :4] = [0.5, 1.5, 2.5, -2.5]                          # ties: half to even at s = 1
    for s in (np.float32(1.0), Q.scale_from_amax(2.0)):             # 2.0 < max|x|: saturation
        got = quantize_int8.quantize_nhwc(cp.asarray(x), s, c_pad_to=16).get()
        ref = Q.quantize(x, s)
        assert got.shape == (2, 5, 7, 32)
        np.testing.assert_array_equal(got[..., :19], ref)
        assert not got[..., 19:].any()
    assert (quantize_int8.quantize_nhwc(cp.asarray(x), Q.scale_from_amax(2.0)).get() == 127).any()


def test_pack_weight_int8_matches_quantize_weights():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((24, 5, 3, 3)).astype(np.float32)
    w[3] = 0.0                                                      # zero channel: scale 1
    wq, s_w = conv_int8.pack_weight_int8_krsc(w)
    ref_q, ref_s = Q.quantize_weights(w)
    assert wq.shape == (24, 3, 3, 16) and wq.dtype == np.int8
    np.testing.assert_array_equal(wq.get()[..., :5], ref_q.transpose(0, 2, 3, 1))
    assert not wq.get()[..., 5:].any()
    np.testing.assert_array_equal(s_w.get(), ref_s)


@pytest.mark.parametrize("tactic", TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s[0])
def test_int8_out_bit_exact(tactic, shape):
    """int8 in, int8 out (requantised), bias + int8 residual + ReLU; odd shapes."""
    c = _case(shape, 11)
    acc, s_w_ref = _acc_nhwc(c)
    r = c["rng"].standard_normal(acc.shape).astype(np.float32)
    s_r = Q.scale_from_amax(float(np.abs(r).max()))
    rq = Q.quantize(r, s_r)
    yf = Q.epilogue_int8(acc, c["s_in"], s_w_ref, c["bias"], (rq, s_r), "RELU",
                         channel_axis=3)
    s_out = Q.scale_from_amax(0.7 * float(np.abs(yf).max()))      # top values saturate
    ref = Q.epilogue_int8(acc, c["s_in"], s_w_ref, c["bias"], (rq, s_r), "RELU", s_out=s_out,
                          channel_axis=3)
    assert (ref == 127).any() and (ref == 0).any()
    xq, wq, s_w = _gpu_inputs(c)
    for poison in (99, -99):
        got = _run(c, xq, wq, s_w, poison, residual=cp.asarray(rq), residual_scale=s_r,
                   act="RELU", s_out=s_out, out_dtype=np.int8, tactic=tactic)
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("tactic", TACTICS, ids=lambda t: t.name)
def test_int8_out_clip_float_residual_no_bias_stride2(tactic):
    shape = ("1x1_s2", 2, 15, 13, 96, 104, 1, 1, (2, 2), (0, 0), (1, 1))
    c = _case(shape, 5)
    acc, s_w_ref = _acc_nhwc(c)
    res = c["rng"].standard_normal(acc.shape).astype(np.float32)
    s_out = np.float32(0.9) / np.float32(127)
    ref = Q.epilogue_int8(acc, c["s_in"], s_w_ref, None, res, "CLIP", -0.4, 0.6,
                          s_out=s_out, channel_axis=3)
    xq, wq, s_w = _gpu_inputs(c)
    N = c["x"].shape[0]
    out = cp.full((N, c["P"], c["Q"], c["K"]), 55, dtype=cp.int8)
    conv_int8.conv2d_int8(xq, wq, c["s_in"], s_w, stride=2, residual=cp.asarray(res),
                          act="CLIP", alpha=-0.4, beta=0.6, s_out=s_out, out=out, tactic=tactic)
    np.testing.assert_array_equal(out.get(), ref)


@pytest.mark.parametrize("tactic", FLOAT_OUT_TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s[0])
@pytest.mark.parametrize("out_dtype,res_dtype,act", [
    (np.float32, np.float32, "RELU"), (np.float32, np.int8, "LEAKY_RELU"),
    (np.float16, np.float16, "CLIP"), (np.float32, None, None)])
def test_float_out_exact(tactic, shape, out_dtype, res_dtype, act):
    c = _case(shape, 23)
    acc, s_w_ref = _acc_nhwc(c)
    alpha, beta = (0.1, 0.0) if act == "LEAKY_RELU" else (-0.3, 0.8)
    kw, res_ref = {}, None
    if res_dtype is not None:
        r = c["rng"].standard_normal(acc.shape).astype(np.float32)
        if res_dtype == np.int8:
            s_r = Q.scale_from_amax(float(np.abs(r).max()))
            rq = Q.quantize(r, s_r)
            res_ref, kw = (rq, s_r), dict(residual=cp.asarray(rq), residual_scale=s_r)
        else:
            r = r.astype(res_dtype)
            res_ref, kw = r, dict(residual=cp.asarray(r))
    ref = Q.epilogue_int8(acc, c["s_in"], s_w_ref, c["bias"], res_ref, act, alpha, beta,
                          channel_axis=3).astype(out_dtype)
    xq, wq, s_w = _gpu_inputs(c)
    got = _run(c, xq, wq, s_w, np.nan, act=act, alpha=alpha, beta=beta, out_dtype=out_dtype,
               tactic=tactic, **kw)
    np.testing.assert_array_equal(got, ref)


def test_concat_offset_leaves_other_channels():
    shape = ("3x3", 1, 9, 9, 16, 40, 3, 3, (1, 1), (1, 1), (1, 1))
    c = _case(shape, 2)
    acc, s_w_ref = _acc_nhwc(c)
    s_out = Q.scale_from_amax(2.0)
    ref = Q.epilogue_int8(acc, c["s_in"], s_w_ref, c["bias"], s_out=s_out, channel_axis=3)
    xq, wq, s_w = _gpu_inputs(c)
    out = cp.full((1, 9, 9, 64), 77, cp.int8)
    conv_int8.conv2d_int8(xq, wq, c["s_in"], s_w, padding=1, bias=cp.asarray(c["bias"]),
                          s_out=s_out, out=out, out_channel_offset=8)
    got = out.get()
    np.testing.assert_array_equal(got[..., 8:48], ref)
    assert (got[..., :8] == 77).all() and (got[..., 48:] == 77).all()


def test_replays_in_a_cuda_graph():
    shape = ("3x3", 2, 10, 10, 64, 128, 3, 3, (1, 1), (1, 1), (1, 1))
    c = _case(shape, 9)
    acc, s_w_ref = _acc_nhwc(c)
    s_out = Q.scale_from_amax(3.0)
    ref = Q.epilogue_int8(acc, c["s_in"], s_w_ref, c["bias"], act="RELU", s_out=s_out,
                          channel_axis=3)
    pool = cp.cuda.MemoryPool()
    cp.cuda.Device().synchronize()   # inputs made on the legacy stream are ready: a
    stream = cp.cuda.Stream(non_blocking=True)   # non-blocking stream would not wait for them
    with cp.cuda.using_allocator(pool.malloc), stream:
        xd, bd = cp.asarray(c["x"]), cp.asarray(c["bias"])
        wq, s_w = conv_int8.pack_weight_int8_krsc(c["w"])

        def body():
            xq = quantize_int8.quantize_nhwc(xd, c["s_in"], c_pad_to=16)
            return conv_int8.conv2d_int8(xq, wq, c["s_in"], s_w, padding=1, bias=bd,
                                         act="RELU", s_out=s_out)
        body()                                                        # rehearsal: compile, pool
        stream.synchronize()
        stream.begin_capture()
        out = body()
        graph = stream.end_capture()
        out.fill(100)
        graph.launch(stream)
        stream.synchronize()
    np.testing.assert_array_equal(out.get(), ref)


def test_rejects_bad_arguments():
    x = cp.zeros((1, 4, 4, 16), cp.int8)
    w = cp.zeros((8, 1, 1, 16), cp.int8)
    s = cp.ones(8, cp.float32)
    with pytest.raises(UnsupportedError, match="multiple of 16"):
        conv_int8.conv2d_int8(cp.zeros((1, 4, 4, 8), cp.int8), cp.zeros((8, 1, 1, 8), cp.int8),
                              1.0, s, s_out=1.0)
    with pytest.raises(UnsupportedError, match="needs s_out"):
        conv_int8.conv2d_int8(x, w, 1.0, s)
    with pytest.raises(UnsupportedError, match="int8 codes"):
        conv_int8.conv2d_int8(x.astype(cp.float16), w, 1.0, s, s_out=1.0)
    with pytest.raises(UnsupportedError, match="residual_scale"):
        conv_int8.conv2d_int8(x, w, 1.0, s, s_out=1.0, residual=cp.zeros((1, 4, 4, 8), cp.int8))
    with pytest.raises(UnsupportedError, match="valid: i8_"):
        conv_int8.conv2d_int8(x, w, 1.0, s, s_out=1.0, tactic="nope")
    with pytest.raises(UnsupportedError, match="out dtype"):
        conv_int8.conv2d_int8(x, w, 1.0, s, out_dtype=np.int32)
