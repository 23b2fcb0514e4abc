"""conv2d_depthwise_v2 (kernels/cuda/conv_dw.cu) vs a float64 NumPy reference.

Random non-zero data, fixed seed, NaN-poisoned outputs; FP16 rel L2 <= 1e-2,
FP32 <= 1e-5 (gpu_helpers.TOL).
"""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from gpu_helpers import TOL, act_ref, depthwise_nhwc, poison, rel_l2  # noqa: E402
from kernels.gpu import UnsupportedError  # noqa: E402
from kernels.gpu import conv_dw  # noqa: E402

RNG = np.random.default_rng(4321)

# (N, H, W, C, R, S, stride, pad, dil)
SHAPES = [
    (2, 13, 15, 32, 3, 3, (1, 1), (1, 1), (1, 1)),     # stride 1, odd sizes (strip tail)
    (2, 14, 14, 48, 3, 3, (2, 2), (1, 1), (1, 1)),     # stride 2
    (1, 9, 11, 24, 3, 3, (2, 2), (1, 1), (1, 1)),      # stride 2, odd, C = 3 vectors
    (2, 7, 7, 64, 3, 3, (1, 1), (1, 1), (1, 1)),       # 7x7: q_tile 7
    (2, 10, 12, 16, 5, 5, (1, 1), (2, 2), (1, 1)),     # 5x5
    (2, 16, 16, 8, 7, 7, (2, 2), (3, 3), (1, 1)),      # 7x7 filter, stride 2
    (2, 12, 12, 16, 3, 3, (1, 1), (2, 2), (2, 2)),     # dilation: generic path (SW = 0)
    (2, 11, 11, 16, 3, 3, (3, 3), (1, 1), (1, 1)),     # stride 3: generic path
    (2, 12, 10, 16, 3, 3, (2, 1), (1, 1), (1, 1)),     # different strides along H and W
    (1, 9, 9, 8, 1, 1, (1, 1), (0, 0), (1, 1)),        # 1x1 (per-channel scale)
]


def _data(N, H, W, C, R, S, dtype=np.float16, wdtype=np.float16):
    x = RNG.standard_normal((N, H, W, C)).astype(dtype)
    w = (RNG.standard_normal((R, S, C)) / np.sqrt(R * S)).astype(wdtype)
    scale = RNG.uniform(0.5, 1.5, C).astype(np.float32)
    bias = RNG.standard_normal(C).astype(np.float32)
    return x, w, scale, bias


def _run(x, w, scale, bias, st, pd, dl, **kw):
    N, H, W, C = x.shape
    R, S, _ = w.shape
    P = (H + 2 * pd[0] - dl[0] * (R - 1) - 1) // st[0] + 1
    Q = (W + 2 * pd[1] - dl[1] * (S - 1) - 1) // st[1] + 1
    out = poison(cp, (N, P, Q, C), x.dtype)
    conv_dw.conv2d_depthwise_v2(cp.asarray(x), cp.asarray(w), stride=st, padding=pd, dilation=dl,
                                scale=cp.asarray(scale), bias=cp.asarray(bias), out=out, **kw)
    return out.get()


@pytest.mark.parametrize("wdtype", [np.float16, np.float32], ids=["w16", "w32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + f"_s{s[6][0]}{s[6][1]}_d{s[8][0]}")
def test_depthwise_v2_matches_reference_fp16(shape, wdtype):
    N, H, W, C, R, S, st, pd, dl = shape
    x, w, scale, bias = _data(N, H, W, C, R, S, wdtype=wdtype)
    ref = depthwise_nhwc(x, w.astype(np.float64), st, pd, dl) * scale + bias
    assert rel_l2(_run(x, w, scale, bias, st, pd, dl), ref) <= TOL[np.dtype(np.float16)]


@pytest.mark.parametrize("shape", SHAPES[:3] + SHAPES[6:7], ids=lambda s: "x".join(map(str, s[:6])))
def test_depthwise_v2_matches_reference_fp32(shape):
    N, H, W, C, R, S, st, pd, dl = shape
    x, w, scale, bias = _data(N, H, W, C, R, S, np.float32, np.float32)
    ref = depthwise_nhwc(x, w, st, pd, dl) * scale + bias
    assert rel_l2(_run(x, w, scale, bias, st, pd, dl), ref) <= TOL[np.dtype(np.float32)]


@pytest.mark.parametrize("q_tile", [1, 2, 3, 4, 7, 8])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_v2_every_q_tile(q_tile, stride):
    x, w, scale, bias = _data(2, 15, 17, 40, 3, 3)
    st, pd, dl = (stride, stride), (1, 1), (1, 1)
    ref = depthwise_nhwc(x, w, st, pd, dl) * scale + bias
    assert rel_l2(_run(x, w, scale, bias, st, pd, dl, q_tile=q_tile), ref) <= 1e-2


@pytest.mark.parametrize("act,alpha,beta", [("CLIP", 0.0, 6.0), ("RELU6", 0.0, 0.0),
                                            ("CLIP", -0.3, 0.4), ("RELU", 0.0, 0.0),
                                            ("HARD_SWISH", 0.0, 0.0)])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_v2_fused_activation(act, alpha, beta, stride):
    x, w, scale, bias = _data(2, 12, 12, 32, 3, 3)
    x = (x * 4).astype(np.float16)              # reach both clip bounds
    st, pd, dl = (stride, stride), (1, 1), (1, 1)
    ref = act_ref(depthwise_nhwc(x, w, st, pd, dl) * scale + bias, act, alpha, beta)
    got = _run(x, w, scale, bias, st, pd, dl, act=act, alpha=alpha, beta=beta)
    assert rel_l2(got, ref) <= 1e-2
    if act in ("CLIP", "RELU6"):
        lo, hi = (alpha, beta) if act == "CLIP" else (0.0, 6.0)
        assert got.min() >= lo - 1e-3 and got.max() <= hi + 1e-3


def test_depthwise_v2_asymmetric_same_padding_via_out_hw():
    # TF "SAME", stride 2, even input: 0 rows/cols on top/left, 1 at the bottom/right
    x, w, scale, bias = _data(2, 14, 14, 32, 3, 3)
    ref = depthwise_nhwc(np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))), w, (2, 2), (0, 0))
    ref = ref * scale + bias
    out = poison(cp, (2, 7, 7, 32), np.float16)
    conv_dw.conv2d_depthwise_v2(cp.asarray(x), cp.asarray(w), stride=2, padding=(0, 0),
                                out_hw=(7, 7), scale=scale, bias=bias, out=out)
    assert rel_l2(out.get(), ref) <= 1e-2


@pytest.mark.parametrize("off", [16, 4])     # 4: unaligned -> per-element stores
def test_depthwise_v2_writes_at_channel_offset(off):
    x, w, scale, bias = _data(2, 9, 9, 24, 3, 3)
    buf = poison(cp, (2, 9, 9, 56), np.float16)
    conv_dw.conv2d_depthwise_v2(cp.asarray(x), cp.asarray(w), padding=1, scale=scale, bias=bias,
                                act="RELU6", out=buf, out_channel_offset=off)
    got = buf.get()
    ref = np.clip(depthwise_nhwc(x, w, (1, 1), (1, 1)) * scale + bias, 0, 6)
    assert rel_l2(got[..., off:off + 24], ref) <= 1e-2
    assert np.isnan(got[..., :off].astype(np.float32)).all()
    assert np.isnan(got[..., off + 24:].astype(np.float32)).all()


def test_depthwise_v2_defaults_allocate_output_without_scale_bias():
    x, w, _, _ = _data(1, 8, 8, 16, 3, 3)
    out = conv_dw.conv2d_depthwise_v2(cp.asarray(x), cp.asarray(w), padding=1)
    assert out.shape == (1, 8, 8, 16) and out.dtype == np.float16
    assert rel_l2(out.get(), depthwise_nhwc(x, w, (1, 1), (1, 1))) <= 1e-2


def test_pack_weight_dw_layouts_agree():
    w = RNG.standard_normal((3, 3, 16)).astype(np.float32)
    a = conv_dw.pack_weight_dw(w.transpose(2, 0, 1)[:, None], "C1RS")
    b = conv_dw.pack_weight_dw(w[..., None], "RSC1")
    c = conv_dw.pack_weight_dw(w, "RSC", dtype=np.float32)
    assert a.dtype == np.float16 and a.flags.c_contiguous and a.shape == (3, 3, 16)
    assert (a == b).all() and np.allclose(c.get(), w)
    with pytest.raises(UnsupportedError, match="layout 'KCRS'"):
        conv_dw.pack_weight_dw(w, "KCRS")


def test_depthwise_v2_replays_in_a_cuda_graph():
    x, w, scale, bias = _data(2, 28, 28, 144, 3, 3)
    xd, wd, sd, bd = cp.asarray(x), cp.asarray(w), cp.asarray(scale), cp.asarray(bias)
    out = cp.empty((2, 14, 14, 144), cp.float16)
    cp.cuda.Device().synchronize()   # inputs made on the legacy stream are ready: a
    stream = cp.cuda.Stream(non_blocking=True)   # non-blocking stream would not wait for them
    kw = dict(stride=2, padding=1, scale=sd, bias=bd, act="CLIP", alpha=0.0, beta=6.0, out=out)
    with stream:
        conv_dw.conv2d_depthwise_v2(xd, wd, **kw)          # compile outside the capture
        stream.synchronize()
        stream.begin_capture()
        conv_dw.conv2d_depthwise_v2(xd, wd, **kw)
        graph = stream.end_capture()
        out.fill(np.nan)
        graph.launch(stream)
        stream.synchronize()
    ref = np.clip(depthwise_nhwc(x, w, (2, 2), (1, 1)) * scale + bias, 0, 6)
    assert rel_l2(out.get(), ref) <= 1e-2


@pytest.mark.parametrize("C", [12, 3, 20])
def test_depthwise_v2_rejects_channels_not_multiple_of_8(C):
    x = cp.zeros((1, 5, 5, C), cp.float16)
    w = cp.zeros((3, 3, C), cp.float16)
    with pytest.raises(UnsupportedError, match=f"C = {C} is not a multiple of 8"):
        conv_dw.conv2d_depthwise_v2(x, w, padding=1)


def test_depthwise_v2_rejects_bad_weights_filter_and_q_tile():
    x = cp.zeros((1, 9, 9, 16), cp.float16)
    with pytest.raises(UnsupportedError, match=r"expected a contiguous cupy \[R, S, 16\]"):
        conv_dw.conv2d_depthwise_v2(x, cp.zeros((3, 3, 8), cp.float16))
    with pytest.raises(UnsupportedError, match="expected a contiguous cupy"):
        conv_dw.conv2d_depthwise_v2(x, np.zeros((3, 3, 16), np.float16))
    with pytest.raises(UnsupportedError, match="expected a contiguous cupy"):
        conv_dw.conv2d_depthwise_v2(x, cp.zeros((3, 3, 16), cp.int8))
    with pytest.raises(UnsupportedError, match="R, S in 1..7"):
        conv_dw.conv2d_depthwise_v2(x, cp.zeros((9, 9, 16), cp.float16), padding=4)
    with pytest.raises(UnsupportedError, match="q_tile 9"):
        conv_dw.conv2d_depthwise_v2(x, cp.zeros((3, 3, 16), cp.float16), q_tile=9)
    with pytest.raises(UnsupportedError, match="expected >= 1"):
        conv_dw.conv2d_depthwise_v2(x, cp.zeros((3, 3, 16), cp.float16), stride=0)
    with pytest.raises(UnsupportedError, match="expected positive"):
        conv_dw.conv2d_depthwise_v2(x, cp.zeros((3, 3, 16), cp.float16), out_hw=(0, 4))
    with pytest.raises(UnsupportedError, match="32 bits"):       # 2**31 output elements
        conv_dw.conv2d_depthwise_v2(cp.zeros((1, 1, 1, 8), cp.float16),
                                    cp.zeros((1, 1, 8), cp.float16), out_hw=(1 << 14, 1 << 14))
    with pytest.raises(UnsupportedError, match="dtype float64"):
        conv_dw.conv2d_depthwise_v2(cp.zeros((1, 4, 4, 8)), cp.zeros((3, 3, 8), cp.float16))
