"""kernels/gpu/space_to_depth.py on the CPU: a stride-2 convolution equals the stride-1
convolution of ``s2d_geometry``/``s2d_filter`` over the space-to-depth input
(``s2d_reference``), exactly in float64, for odd and even sizes, several windows and
paddings (asymmetric too) and C = 1..4; and every argument the launcher refuses."""
import numpy as np
import pytest

from kernels.gpu import space_to_depth as S
from kernels.gpu.errors import UnsupportedError

RNG = np.random.default_rng(1414)


def direct_conv(x, w, stride, pre, post):
    """float64 cross-correlation, NCHW x, KCRS w, explicit pre/post padding -> NHWC."""
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    xp = np.zeros((n, c, h + pre[0] + post[0], wd + pre[1] + post[1]))
    xp[:, :, pre[0]:pre[0] + h, pre[1]:pre[1] + wd] = x
    p = (xp.shape[2] - r) // stride + 1
    q = (xp.shape[3] - s) // stride + 1
    y = np.zeros((n, p, q, k))
    for i in range(r):
        for j in range(s):
            patch = xp[:, :, i:i + stride * (p - 1) + 1:stride, j:j + stride * (q - 1) + 1:stride]
            y += np.einsum("nchw,kc->nhwk", patch, w[:, :, i, j])
    return y


def s2d_conv(x, w, pre, post, c_pad=16):
    """The same convolution the rewritten way, in float64."""
    n, c, h, wd = x.shape
    g = S.s2d_geometry(h, wd, w.shape[2], w.shape[3], pre[0], pre[1], post[0], post[1])
    xs = S.s2d_reference(x, g.hs, g.ws, c_pad).transpose(0, 3, 1, 2)        # -> NCHW
    ws = S.s2d_filter(w, pre, c_pad, np.float64).transpose(0, 3, 1, 2)      # KRSC -> KCRS
    assert ws.shape[2:] == (g.r, g.s)
    y = direct_conv(xs, ws, 1, g.pre, g.post)
    assert y.shape[1:3] == (g.p, g.q)
    return y


# (C, H, W, R, S, pre, post): ResNet's stem, odd sizes, 3x3/5x5/1x1 windows, asymmetric
# ("SAME") paddings, C = 1..4
SHAPES = [
    (3, 224 // 8, 224 // 8, 7, 7, (3, 3), (3, 3)),
    (3, 15, 17, 7, 7, (3, 3), (3, 3)),
    (1, 9, 11, 3, 3, (1, 1), (1, 1)),
    (2, 10, 7, 3, 3, (1, 1), (1, 1)),
    (4, 13, 12, 5, 5, (2, 2), (2, 2)),
    (3, 11, 11, 5, 5, (2, 2), (2, 2)),
    (2, 9, 10, 1, 1, (0, 0), (0, 0)),
    (4, 8, 9, 1, 1, (0, 0), (0, 0)),
    (3, 12, 12, 3, 3, (0, 0), (1, 1)),      # TF "SAME" for even sizes: padding after only
    (1, 11, 12, 4, 4, (1, 2), (2, 1)),      # even filter, uneven paddings
    (3, 9, 9, 3, 3, (0, 0), (0, 0)),        # VALID: no padding at all
    (2, 6, 5, 2, 3, (1, 0), (0, 2)),
]


@pytest.mark.parametrize("case, c_pad", [(c, p) for c in SHAPES for p in (8, 16) if 4 * c[0] <= p],
                         ids=lambda v: f"c{v[0]}-{v[1]}x{v[2]}-{v[3]}x{v[4]}-{v[5]}-{v[6]}"
                         if isinstance(v, tuple) else f"pad{v}")
def test_rewritten_conv_equals_the_stride2_conv(case, c_pad):
    c, h, w, r, s, pre, post = case
    x = RNG.standard_normal((2, c, h, w))
    wt = RNG.standard_normal((5, c, r, s))
    ref = direct_conv(x, wt, 2, pre, post)
    got = s2d_conv(x, wt, pre, post, c_pad)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_resnet_stem_geometry():
    g = S.s2d_geometry(224, 224, 7, 7, 3, 3)
    assert g == S.S2dGeometry(112, 112, 4, 4, (2, 2), (1, 1), 112, 112)
    assert S.s2d_geometry(7, 7, 3, 3, 1, 1) == S.S2dGeometry(4, 4, 2, 2, (1, 1), (0, 0), 4, 4)
    # rows no output reads are not made: 1x1/2 VALID of 9 rows reads rows 0, 2, .., 8 only
    assert S.s2d_geometry(9, 9, 1, 1, 0, 0)[:2] == (5, 5)
    assert S.s2d_geometry(12, 12, 3, 3, 0, 0, 0, 0) == S.S2dGeometry(6, 6, 2, 2, (0, 0), (0, 0), 5, 5)


def test_filter_places_each_tap_once_and_pads_with_zeros():
    w = RNG.standard_normal((8, 3, 7, 7)).astype(np.float32) + 3.0          # no zero tap
    f = S.s2d_filter(w, (3, 3), 16)
    assert f.shape == (8, 4, 4, 16) and f.dtype == np.float32
    assert np.count_nonzero(f) == w.size                  # 147 taps each, the other 109 zero
    assert not f[..., 12:].any()
    # tap (r, s) = (0, 0): r - 3 = -3 = 2*(-2) + 1 -> a = -2 (index 0), b = 1: channel c*4 + 3
    assert np.array_equal(f[:, 0, 0, [3, 7, 11]], w[:, :, 0, 0])
    # tap (3, 3): 0 = 2*0 + 0 -> a = 0 (index 2), b = 0: channel c*4
    assert np.array_equal(f[:, 2, 2, [0, 4, 8]], w[:, :, 3, 3])
    # tap (6, 5): 3 = 2*1 + 1 and 2 = 2*1 + 0 -> index (3, 3), channel c*4 + 2
    assert np.array_equal(f[:, 3, 3, [2, 6, 10]], w[:, :, 6, 5])


def test_input_reference_layout():
    x = np.arange(1 * 2 * 3 * 5, dtype=np.float32).reshape(1, 2, 3, 5) + 1
    y = S.s2d_reference(x, 2, 3, 8)
    assert y.shape == (1, 2, 3, 8)
    # pixel (0, 1): channel 0 rows 0-1 cols 2-3, then channel 1
    assert y[0, 0, 1].tolist() == [3, 4, 8, 9, 18, 19, 23, 24]
    # pixel (1, 2): row 3 and col 5 lie outside x
    assert y[0, 1, 2].tolist() == [15, 0, 0, 0, 30, 0, 0, 0]


@pytest.mark.parametrize("args, words", [
    ((0, 8, 3, 3, 1, 1), "size 0"),
    ((8, 8, 3, 3, -1, 1), "expected non-negative"),
    ((3, 8, 7, 3, 0, 1, 0, 1), "leave no output"),
])
def test_geometry_refuses_what_has_no_rewrite(args, words):
    with pytest.raises(UnsupportedError, match=words):
        S.s2d_geometry(*args)


def test_filter_and_reference_refuse_bad_shapes():
    with pytest.raises(UnsupportedError, match="expected \\(K, C, R, S\\)"):
        S.s2d_filter(np.ones((8, 3, 7)), (3, 3))
    with pytest.raises(UnsupportedError, match="5 input channels; expected 1..4"):
        S.s2d_filter(np.ones((8, 5, 7, 7)), (3, 3))
    with pytest.raises(UnsupportedError, match="3 input channels; expected 1..2"):
        S.s2d_filter(np.ones((8, 3, 7, 7)), (3, 3), c_pad=8)
    with pytest.raises(UnsupportedError, match="c_pad 12; valid"):
        S.s2d_filter(np.ones((8, 3, 7, 7)), (3, 3), c_pad=12)
    with pytest.raises(UnsupportedError, match="rank 3; expected NCHW"):
        S.s2d_reference(np.ones((3, 8, 8)), 4, 4)


@pytest.mark.parametrize("x, kw, words", [
    (np.ones((3, 8, 8), np.float32), {}, "rank 3"),
    (np.ones((1, 3, 8, 8), np.float64), {}, "dtype float64"),
    (np.ones((1, 3, 8, 8), np.float32), {"c_pad": 4}, "c_pad 4"),
    (np.ones((1, 5, 8, 8), np.float32), {}, "5 input channels"),
    (np.ones((1, 3, 8, 8), np.float32), {"c_pad": 8}, "3 input channels; expected 1..2"),
    (np.ones((1, 3, 8, 8), np.float32), {"hs": 5}, "output 5x4 pixels"),
    (np.ones((70000, 1, 2, 2), np.float16), {}, "batch 70000"),
    (np.ones((1, 3, 8, 8), np.float32)[:, :, ::-1], {}, "negative strides"),
    (np.ones((1, 3, 8, 8), np.float32), {"out": np.empty((1, 4, 4, 16), np.float32)}, "expected contiguous"),
])
def test_launcher_refuses_with_what_it_expected(x, kw, words):
    with pytest.raises(UnsupportedError, match=words):
        S.space_to_depth_nhwc(x, **kw)


def test_launch_reason_accepts_an_nhwc_backed_view():
    x = np.ones((2, 9, 11, 3), np.float16).transpose(0, 3, 1, 2)
    assert S.launch_reason(x, 5, 6, 16, np.empty((2, 5, 6, 16), np.float16)) is None
