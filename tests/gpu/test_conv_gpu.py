"""Convolution tactics on the GPU vs a float64 NumPy reference (random data, poisoned outputs)."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from gpu_helpers import TOL, act_ref, conv_nhwc, depthwise_nhwc, poison, rel_l2  # noqa: E402
from kernels.gpu import UnsupportedError  # noqa: E402
from kernels.gpu import conv_gemm, conv_igemm  # noqa: E402

RNG = np.random.default_rng(1234)

# (N, H, W, C, K, R, S, stride, pad, dil)
SHAPES = [
    (2, 11, 13, 32, 72, 3, 3, (1, 1), (1, 1), (1, 1)),     # K not a tile multiple
    (2, 14, 14, 64, 136, 1, 1, (2, 2), (0, 0), (1, 1)),    # 1x1 stride 2
    (1, 9, 9, 16, 40, 3, 3, (2, 2), (1, 1), (1, 1)),       # C < BK, odd sizes
    (2, 12, 10, 24, 32, 3, 3, (1, 1), (2, 2), (2, 2)),     # dilation, C=24 (chunks cross taps)
    (2, 17, 17, 8, 64, 7, 7, (2, 2), (3, 3), (1, 1)),      # stem-like, C=8 (padded RGB)
    (3, 7, 7, 256, 128, 3, 3, (1, 1), (1, 1), (1, 1)),     # deep reduction, M not a tile multiple
    (2, 6, 6, 16, 20, 3, 3, (1, 1), (1, 1), (1, 1)),       # K % 8 != 0: scalar epilogue tail
    (2, 5, 7, 8, 13, 1, 1, (1, 1), (0, 0), (1, 1)),        # odd K
]


def _data(N, H, W, C, K, R, S, dtype=np.float16):
    x = RNG.standard_normal((N, H, W, C)).astype(dtype)
    w = (RNG.standard_normal((K, R, S, C)) / np.sqrt(R * S * C)).astype(dtype)
    scale = RNG.uniform(0.5, 1.5, K).astype(np.float32)
    bias = RNG.standard_normal(K).astype(np.float32)
    return x, w, scale, bias


@pytest.mark.parametrize("tactic", conv_igemm.IGEMM_TACTICS + conv_igemm.IGEMM_TACTICS_LARGE
                         + conv_igemm.IGEMM_TACTICS_NARROW,
                         ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:7])))
def test_igemm_matches_reference_fp16_out(tactic, shape):
    N, H, W, C, K, R, S, st, pd, dl = shape
    x, w, scale, bias = _data(N, H, W, C, K, R, S)
    ref = conv_nhwc(x, w, st, pd, dl) * scale + bias
    P, Q = ref.shape[1:3]
    out = poison(cp, (N, P, Q, K), np.float16)
    conv_igemm.conv2d_igemm(cp.asarray(x), cp.asarray(w), stride=st, padding=pd, dilation=dl,
                         scale=cp.asarray(scale), bias=cp.asarray(bias), out=out, tactic=tactic)
    assert rel_l2(out.get(), ref) <= TOL[np.dtype(np.float16)]


@pytest.mark.parametrize("tactic", conv_igemm.IGEMM_TACTICS + conv_igemm.IGEMM_TACTICS_LARGE
                         + conv_igemm.IGEMM_TACTICS_NARROW,
                         ids=lambda t: t.name)
@pytest.mark.parametrize("act", ["RELU", "LEAKY_RELU", "SIGMOID", "CLIP"])
def test_igemm_epilogue_residual_activation_fp32_out(tactic, act):
    N, H, W, C, K, R, S = 2, 10, 10, 48, 96, 3, 3
    x, w, scale, bias = _data(N, H, W, C, K, R, S)
    res = RNG.standard_normal((N, H, W, K)).astype(np.float32)
    alpha, beta = (0.1, 0.0) if act == "LEAKY_RELU" else (-0.5, 0.7)
    ref = act_ref(conv_nhwc(x, w, (1, 1), (1, 1)) * scale + bias + res, act, alpha, beta)
    out = poison(cp, (N, H, W, K), np.float32)
    conv_igemm.conv2d_igemm(cp.asarray(x), cp.asarray(w), padding=1, scale=scale, bias=bias,
                         residual=cp.asarray(res), act=act, alpha=alpha, beta=beta,
                         out=out, tactic=tactic)
    # FP16 inputs, FP32 accumulation and output: far inside the FP16 tolerance
    assert rel_l2(out.get(), ref) <= 2e-3


@pytest.mark.parametrize("tactic", ["igemm_128x128x32_w2x4_s4", "igemm2_128x64x32_w2x2_s4"])
@pytest.mark.parametrize("off", [24, 4])
def test_igemm_writes_into_concat_buffer_at_channel_offset(tactic, off):
    N, H, W, C, K = 2, 8, 8, 32, 40
    x, w, scale, bias = _data(N, H, W, C, K, 1, 1)
    buf = poison(cp, (N, H, W, 104), np.float16)
    conv_igemm.conv2d_igemm(cp.asarray(x), cp.asarray(w), scale=scale, bias=bias, act="RELU",
                         out=buf, out_channel_offset=off, tactic=tactic)
    got = buf.get()
    ref = np.maximum(conv_nhwc(x, w) * scale + bias, 0)
    assert rel_l2(got[..., off:off + K], ref) <= 1e-2
    assert np.isnan(got[..., :off].astype(np.float32)).all()
    assert np.isnan(got[..., off + K:].astype(np.float32)).all()


def test_igemm_asymmetric_same_padding_via_out_hw():
    # TF 'SAME' with stride 2 on an even input: pad 0 on top/left, 1 bottom/right
    N, H, W, C, K = 2, 8, 8, 16, 32
    x, w, scale, bias = _data(N, H, W, C, K, 3, 3)
    ref = conv_nhwc(x, w, (2, 2), (0, 0), out_hw=(4, 4)) * scale + bias
    out = conv_igemm.conv2d_igemm(cp.asarray(x), cp.asarray(w), stride=2, padding=(0, 0),
                               out_hw=(4, 4), scale=scale, bias=bias)
    assert rel_l2(out.get(), ref) <= 1e-2


def test_pack_weight_krsc_from_kcrs_and_pad_channels():
    K, C, R, S = 16, 3, 7, 7
    w = RNG.standard_normal((K, C, R, S)).astype(np.float32)
    packed = conv_igemm.pack_weight_krsc(w, "KCRS").get()
    assert packed.shape == (K, R, S, 8) and packed.dtype == np.float16
    np.testing.assert_array_equal(packed[..., :3], w.transpose(0, 2, 3, 1).astype(np.float16))
    assert not packed[..., 3:].any()
    x = cp.asarray(RNG.standard_normal((1, 5, 5, 3)).astype(np.float16))
    xp = conv_igemm.pad_channels(x).get()
    assert xp.shape == (1, 5, 5, 8) and not xp[..., 3:].any()


def test_igemm_rejects_channels_not_multiple_of_8():
    x = cp.zeros((1, 4, 4, 12), cp.float16)
    w = cp.zeros((8, 1, 1, 12), cp.float16)
    with pytest.raises(UnsupportedError, match="multiple of 8"):
        conv_igemm.conv2d_igemm(x, w)


def test_igemm_rejects_float32_input():
    with pytest.raises(UnsupportedError, match="float16"):
        conv_igemm.conv2d_igemm(cp.zeros((1, 4, 4, 8), cp.float32), cp.zeros((8, 1, 1, 8), cp.float32))


def test_igemm_rejects_unknown_tactic():
    with pytest.raises(UnsupportedError, match="valid"):
        conv_igemm.conv2d_igemm(cp.zeros((1, 4, 4, 8), cp.float16), cp.zeros((8, 1, 1, 8), cp.float16),
                             tactic="nope")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("stride", [1, 2])
def test_cublas_1x1_with_fused_epilogue(dtype, stride):
    N, H, W, C, K = 2, 9, 9, 40, 56
    x, w, scale, bias = _data(N, H, W, C, K, 1, 1, dtype)
    ref = conv_nhwc(x, w, (stride, stride)) * scale + bias
    res = RNG.standard_normal(ref.shape).astype(dtype)
    ref = np.maximum(ref + res, 0)
    out = poison(cp, ref.shape, dtype)
    conv_gemm.conv2d_1x1_cublas(cp.asarray(x), cp.asarray(w), stride=stride, scale=scale, bias=bias,
                                residual=cp.asarray(res), act="RELU", out=out)
    assert rel_l2(out.get(), ref) <= TOL[np.dtype(dtype)]


def test_fully_connected_fp32():
    x = RNG.standard_normal((7, 300)).astype(np.float32)
    w = RNG.standard_normal((10, 300)).astype(np.float32)
    b = RNG.standard_normal(10).astype(np.float32)
    out = conv_gemm.fully_connected(cp.asarray(x), cp.asarray(w), bias=b)
    assert rel_l2(out.get(), x.astype(np.float64) @ w.T + b) <= 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("groups", [1, 2])
def test_im2col_fallback_any_channels_and_groups(dtype, groups):
    N, H, W, C, K, R, S = 3, 10, 9, 6, 10, 3, 3
    x = RNG.standard_normal((N, H, W, C)).astype(dtype)
    w = (RNG.standard_normal((K, R, S, C // groups)) / 5).astype(dtype)
    scale = RNG.uniform(0.5, 1.5, K).astype(np.float32)
    bias = RNG.standard_normal(K).astype(np.float32)
    ref = conv_nhwc(x, w, (2, 1), (1, 2), (1, 2), groups=groups) * scale + bias
    out = poison(cp, ref.shape, dtype)
    conv_gemm.conv2d_im2col(cp.asarray(x), cp.asarray(w), stride=(2, 1), padding=(1, 2),
                            dilation=(1, 2), groups=groups, scale=scale, bias=bias, out=out,
                            workspace_bytes=4096)  # forces several batch chunks
    assert rel_l2(out.get(), ref) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_3x3_with_bias_relu6(dtype, stride):
    N, H, W, C = 2, 13, 12, 48
    x = RNG.standard_normal((N, H, W, C)).astype(dtype)
    w = RNG.standard_normal((3, 3, C)).astype(np.float32)
    bias = RNG.standard_normal(C).astype(np.float32)
    ref = np.clip(depthwise_nhwc(x, w, (stride, stride), (1, 1)) + bias, 0, 6)
    out = poison(cp, ref.shape, dtype)
    conv_gemm.conv2d_depthwise(cp.asarray(x), w, stride=stride, padding=1, bias=bias,
                               act="RELU6", out=out)
    assert rel_l2(out.get(), ref) <= TOL[np.dtype(dtype)]


def test_depthwise_rejects_wrong_weight_shape():
    with pytest.raises(UnsupportedError, match="depthwise weights"):
        conv_gemm.conv2d_depthwise(cp.zeros((1, 4, 4, 8), cp.float32), np.zeros((3, 3, 4), np.float32))


# ---- split-K (small M: batch 1, the FC head) --------------------------------
SPLITK_SHAPES = [
    (1, 7, 7, 64, 72, 3, 3, (1, 1), (1, 1), (1, 1)),       # batch-1 7x7, K not a tile multiple
    (1, 14, 14, 32, 40, 1, 1, (2, 2), (0, 0), (1, 1)),     # 1x1 stride 2
    (3, 1, 1, 256, 100, 1, 1, (1, 1), (0, 0), (1, 1)),     # FC as a 1x1 conv, M = 3
    (2, 5, 7, 24, 13, 3, 3, (1, 1), (1, 1), (1, 1)),       # odd K: scalar reduction path
]


@pytest.mark.parametrize("tactic", conv_igemm.SPLITK_TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("splits", [None, 3, 1000])
@pytest.mark.parametrize("shape", SPLITK_SHAPES, ids=lambda s: "x".join(map(str, s[:7])))
def test_splitk_matches_reference_fp16_out(tactic, splits, shape):
    N, H, W, C, K, R, S, st, pd, dl = shape
    x, w, scale, bias = _data(N, H, W, C, K, R, S)
    ref = conv_nhwc(x, w, st, pd, dl) * scale + bias
    P, Q = ref.shape[1:3]
    out = poison(cp, (N, P, Q, K), np.float16)
    conv_igemm.conv2d_igemm_splitk(cp.asarray(x), cp.asarray(w), stride=st, padding=pd, dilation=dl,
                                scale=cp.asarray(scale), bias=cp.asarray(bias), out=out,
                                tactic=tactic, splits=splits)
    assert rel_l2(out.get(), ref) <= TOL[np.dtype(np.float16)]


@pytest.mark.parametrize("act", ["RELU", "SIGMOID"])
def test_splitk_residual_activation_fp32_out_and_concat_offset(act):
    N, H, W, C, K, R, S = 1, 7, 7, 128, 64, 3, 3
    x, w, scale, bias = _data(N, H, W, C, K, R, S)
    res = RNG.standard_normal((N, H, W, K)).astype(np.float32)
    ref = act_ref(conv_nhwc(x, w, (1, 1), (1, 1)) * scale + bias + res, act)
    out = poison(cp, (N, H, W, K + 8), np.float32)
    conv_igemm.conv2d_igemm_splitk(cp.asarray(x), cp.asarray(w), padding=1, scale=scale, bias=bias,
                                residual=cp.asarray(res), act=act, out=out, out_channel_offset=4,
                                splits=5)
    got = out.get()
    assert rel_l2(got[..., 4:4 + K], ref) <= 2e-3
    assert np.isnan(got[..., :4]).all() and np.isnan(got[..., 4 + K:]).all()


def test_splitk_given_workspace_and_plan():
    N, H, W, C, K = 1, 7, 7, 512, 256
    x, w, scale, bias = _data(N, H, W, C, K, 1, 1)
    splits, per = conv_igemm.splitk_plan(49, K, C, conv_igemm.SPLITK_TACTICS[0], num_sms=132)
    assert splits > 1 and (splits - 1) * per < C // 32 <= splits * per
    ws = cp.empty(splits * 49 * K, cp.float32)
    out = conv_igemm.conv2d_igemm_splitk(cp.asarray(x), cp.asarray(w), bias=bias, splits=splits,
                                      workspace=ws)
    assert rel_l2(out.get(), conv_nhwc(x, w) + bias) <= TOL[np.dtype(np.float16)]
    with pytest.raises(UnsupportedError, match="workspace"):
        conv_igemm.conv2d_igemm_splitk(cp.asarray(x), cp.asarray(w), splits=splits, workspace=ws[:10])


def test_splitk_replays_in_a_cuda_graph():
    N, H, W, C, K = 1, 7, 7, 256, 128
    x, w, scale, bias = _data(N, H, W, C, K, 3, 3)
    xd, wd, bd, sd = cp.asarray(x), cp.asarray(w), cp.asarray(bias), cp.ones(K, cp.float32)
    pool = cp.cuda.MemoryPool()
    cp.cuda.Device().synchronize()   # inputs made on the legacy stream are ready: a
    stream = cp.cuda.Stream(non_blocking=True)   # non-blocking stream would not wait for them
    with cp.cuda.using_allocator(pool.malloc), stream:
        conv_igemm.conv2d_igemm_splitk(xd, wd, padding=1, scale=sd, bias=bd)   # rehearsal fills the pool
        stream.synchronize()
        stream.begin_capture()
        out = conv_igemm.conv2d_igemm_splitk(xd, wd, padding=1, scale=sd, bias=bd)
        graph = stream.end_capture()
        out.fill(np.nan)
        graph.launch(stream)
        stream.synchronize()
    assert rel_l2(out.get(), conv_nhwc(x, w, (1, 1), (1, 1)) + bias) <= TOL[np.dtype(np.float16)]


def test_splitk_rejects_igemm_tactic_and_unpadded_channels():
    x = cp.zeros((1, 4, 4, 8), cp.float16)
    w = cp.zeros((8, 1, 1, 8), cp.float16)
    with pytest.raises(UnsupportedError, match="'splitk' tactics"):
        conv_igemm.conv2d_igemm_splitk(x, w, tactic=conv_igemm.IGEMM_TACTICS[0])
    with pytest.raises(UnsupportedError, match="multiple of 8"):
        conv_igemm.conv2d_igemm_splitk(cp.zeros((1, 4, 4, 12), cp.float16),
                                    cp.zeros((8, 1, 1, 12), cp.float16))


# ---- small-C stem (taps packed in pairs) -------------------------------------
@pytest.mark.parametrize("tactic", conv_igemm.SMALLC_TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("cstore,shape", [
    (8, (2, 37, 35, 3, 64, 7, 7, (2, 2), (3, 3), (1, 1))),     # ResNet stem, RGB padded to 8
    (4, (2, 37, 35, 3, 64, 7, 7, (2, 2), (3, 3), (1, 1))),     # RGB padded to 4
    (4, (1, 16, 18, 4, 40, 3, 3, (1, 1), (2, 2), (2, 2))),     # C=4, dilation, K not a tile multiple
    (8, (3, 11, 9, 1, 24, 5, 4, (1, 2), (1, 0), (1, 1))),      # even S, gray input
])
def test_smallc_matches_reference(tactic, cstore, shape):
    N, H, W, C, K, R, S, st, pd, dl = shape
    x, w, scale, bias = _data(N, H, W, C, K, R, S)
    ref = conv_nhwc(x, w, st, pd, dl) * scale + bias
    P, Q = ref.shape[1:3]
    xs = conv_igemm.pad_channels(cp.asarray(x), cstore)
    wp = conv_igemm.pack_weight_smallc(w, "KRSC")
    assert wp.shape == (K, R, 2 * (-(-S // 2)), 4)
    out = poison(cp, (N, P, Q, K), np.float16)
    conv_igemm.conv2d_igemm_smallc(xs, wp, stride=st, padding=pd, dilation=dl, out_hw=(P, Q),
                                scale=cp.asarray(scale), bias=cp.asarray(bias), out=out,
                                tactic=tactic)
    assert rel_l2(out.get(), ref) <= TOL[np.dtype(np.float16)]


def test_smallc_default_out_hw_residual_relu_fp32():
    N, H, W, C, K, R, S = 1, 30, 30, 3, 64, 7, 7
    x, w, scale, bias = _data(N, H, W, C, K, R, S)
    ref0 = conv_nhwc(x, w, (2, 2), (3, 3))
    res = RNG.standard_normal(ref0.shape).astype(np.float32)
    ref = np.maximum(ref0 * scale + bias + res, 0)
    out = conv_igemm.conv2d_igemm_smallc(conv_igemm.pad_channels(cp.asarray(x), 8),
                                      conv_igemm.pack_weight_smallc(w, "KRSC"), stride=2, padding=3,
                                      scale=scale, bias=bias, residual=cp.asarray(res), act="RELU",
                                      out_dtype=np.float32)
    assert out.shape == ref.shape
    assert rel_l2(out.get(), ref) <= 2e-3


def test_smallc_rejects_wide_inputs():
    with pytest.raises(UnsupportedError, match="C <= 4"):
        conv_igemm.pack_weight_smallc(np.zeros((8, 5, 3, 3), np.float32))
    w = conv_igemm.pack_weight_smallc(np.zeros((8, 3, 3, 3), np.float32))
    with pytest.raises(UnsupportedError, match="4 or 8 stored channels"):
        conv_igemm.conv2d_igemm_smallc(cp.zeros((1, 8, 8, 16), cp.float16), w)
    with pytest.raises(UnsupportedError, match="even S"):
        conv_igemm.conv2d_igemm_smallc(cp.zeros((1, 8, 8, 8), cp.float16),
                                    cp.zeros((8, 3, 3, 4), cp.float16))
