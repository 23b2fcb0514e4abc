"""The INT8 space-to-depth transform on the CPU (kernels/gpu/space_to_depth.py): its NumPy
reference quantises with the INT8 contract and folds; the stride-2 INT8 convolution equals
the stride-1 INT8 convolution over the folded codes with the s2d filter, bit for bit (the
same per-channel weight scales and codes, the same int32 sums), for odd and even sizes,
asymmetric paddings and C = 1..4; and every argument ``space_to_depth_int8`` refuses."""
import numpy as np
import pytest

from kernels import quantize as Q
from kernels.gpu import space_to_depth as S
from kernels.gpu.errors import UnsupportedError

RNG = np.random.default_rng(1515)


def test_reference_quantises_then_folds():
    x = (3 * RNG.standard_normal((2, 3, 7, 9))).astype(np.float32)
    x[0, 0, 0, :4] = [0.25, 0.75, -0.25, 1e6]            # ties at s = 0.5 (half to even), saturation
    s = 0.5
    got = S.s2d_int8_reference(x, s, 4, 5)
    assert got.dtype == np.int8 and got.shape == (2, 4, 5, 16)
    np.testing.assert_array_equal(got, S.s2d_reference(Q.quantize(x, s), 4, 5, 16))
    # pixel (0, 0) channel 0: x[0, 0, 0:2, 0:2]; 0.25/0.5 = 0.5 -> 0, 0.75/0.5 = 1.5 -> 2
    assert got[0, 0, 0, :2].tolist() == [0, 2]
    assert got[0, 0, 1, 1] == 127                         # 1e6 saturates
    assert not got[..., 12:].any()                        # channels 4*C.. are zero codes
    assert not got[:, 3, :, 2:4].any() and not got[:, :, 4, 1::2].any()   # row 7 / column 9 outside x


def test_reference_folds_int8_codes_as_they_are():
    codes = RNG.integers(-128, 128, (2, 4, 6, 5), dtype=np.int8)
    got = S.s2d_int8_reference(codes, None, 3, 3)
    np.testing.assert_array_equal(got, S.s2d_reference(codes, 3, 3, 16))
    assert got[1, 2, 1, 4 * 3 + 2] == codes[1, 3, 5, 2]   # c = 3, (bh, bw) = (1, 0)


def _direct_int8(x, w, s_in, stride, pre, post):
    """Integer sums of the original convolution (the INT8 contract, int64 loop)."""
    xq = Q.quantize(x, s_in)
    wq, s_w = Q.quantize_weights(w)
    n, c, h, wd = x.shape
    _, _, r, s = w.shape
    out = ((h + pre[0] + post[0] - r) // stride + 1, (wd + pre[1] + post[1] - s) // stride + 1)
    return Q.conv_int8_direct(xq, wq, (stride, stride), pre, out, (1, 1), 1), s_w


def _s2d_int8(x, w, s_in, pre, post):
    """The same sums the rewritten way: folded codes, s2d filter quantised per channel."""
    n, c, h, wd = x.shape
    g = S.s2d_geometry(h, wd, w.shape[2], w.shape[3], pre[0], pre[1], post[0], post[1])
    xs = S.s2d_int8_reference(x, s_in, g.hs, g.ws).transpose(0, 3, 1, 2)
    wq, s_w = Q.quantize_weights(S.s2d_filter(w, pre, 16))              # KRSC, as packed
    acc = Q.conv_int8_direct(xs, wq.transpose(0, 3, 1, 2), (1, 1), g.pre, (g.p, g.q), (1, 1), 1)
    return acc, s_w, wq


# (C, H, W, R, S, pre, post): ResNet's stem (scaled down), odd sizes, other windows,
# asymmetric ("SAME") paddings, C = 1..4
SHAPES = [
    (3, 28, 28, 7, 7, (3, 3), (3, 3)),
    (3, 15, 17, 7, 7, (3, 3), (3, 3)),
    (1, 9, 11, 3, 3, (1, 1), (1, 1)),
    (2, 10, 7, 3, 3, (1, 1), (1, 1)),
    (4, 13, 12, 5, 5, (2, 2), (2, 2)),
    (3, 12, 12, 3, 3, (0, 0), (1, 1)),
    (1, 11, 12, 4, 4, (1, 2), (2, 1)),
    (2, 6, 5, 2, 3, (1, 0), (0, 2)),
]


@pytest.mark.parametrize("case", SHAPES, ids=lambda c: f"c{c[0]}-{c[1]}x{c[2]}-{c[3]}x{c[4]}-{c[5]}-{c[6]}")
def test_rewritten_int8_conv_has_the_same_scales_codes_and_sums(case):
    c, h, w, r, s, pre, post = case
    x = (2 * RNG.standard_normal((2, c, h, w))).astype(np.float32)
    wt = RNG.standard_normal((6, c, r, s)).astype(np.float32)
    wt[0] *= 50                                           # per-channel scales far apart
    s_in = Q.scale_from_amax(3.0)                         # some inputs saturate
    ref, s_w = _direct_int8(x, wt, s_in, 2, pre, post)
    got, s_w2, wq2 = _s2d_int8(x, wt, s_in, pre, post)
    np.testing.assert_array_equal(s_w2, s_w)              # same max |w| per output channel
    q_orig, _ = Q.quantize_weights(wt)
    # every code of the s2d filter is the original's, the rest are zeros
    assert sorted(wq2[wq2 != 0].tolist()) == sorted(q_orig[q_orig != 0].tolist())
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    y_ref = Q.epilogue_int8(ref, s_in, s_w, act="RELU", s_out=Q.scale_from_amax(40.0))
    y_got = Q.epilogue_int8(got, s_in, s_w2, act="RELU", s_out=Q.scale_from_amax(40.0))
    assert (y_ref != 0).any()
    np.testing.assert_array_equal(y_got, y_ref)


@pytest.mark.parametrize("x, s, kw, words", [
    (np.ones((3, 8, 8), np.float32), 1.0, {}, "rank 3"),
    (np.ones((1, 3, 8, 8), np.float64), 1.0, {}, "dtype float64; expected float32 or float16 or int8"),
    (np.ones((1, 5, 8, 8), np.float32), 1.0, {}, "5 input channels"),
    (np.ones((1, 3, 8, 8), np.float32), 1.0, {"ws": 5}, "output 4x5 pixels"),
    (np.ones((1, 3, 8, 8), np.float32)[:, :, ::-1], 1.0, {}, "negative strides"),
    (np.ones((1, 3, 8, 8), np.float32), None, {}, "scale None for float32 input"),
    (np.ones((1, 3, 8, 8), np.float16), 0.0, {}, "scale 0.0 for float16 input"),
    (np.ones((1, 3, 8, 8), np.float32), float("inf"), {}, "expected a positive finite"),
    (np.ones((1, 3, 8, 8), np.float32), 1.0, {"out": np.empty((1, 4, 4, 16), np.float16)},
     "expected contiguous 16-byte aligned \\(1, 4, 4, 16\\) int8"),
    (np.ones((1, 3, 8, 8), np.float32), 1.0, {"out": np.empty((1, 4, 4, 8), np.int8)}, "16-byte aligned"),
])
def test_int8_launcher_refuses_with_what_it_expected(x, s, kw, words):
    with pytest.raises(UnsupportedError, match=words):
        S.space_to_depth_int8(x, s, **kw)


def test_int8_launcher_refuses_a_misaligned_out():
    buf = np.zeros(1 * 4 * 4 * 16 + 32, np.int8)
    off = (-buf.ctypes.data) % 16 + 1                   # one byte past a 16-byte boundary
    out = buf[off:off + 256].reshape(1, 4, 4, 16)
    with pytest.raises(UnsupportedError, match="16-byte aligned"):
        S.space_to_depth_int8(np.ones((1, 3, 8, 8), np.float32), 1.0, out=out)


def test_int8_launch_reason_takes_codes_without_a_scale_and_nhwc_views():
    codes = np.zeros((2, 9, 11, 3), np.int8).transpose(0, 3, 1, 2)     # an NHWC buffer seen as NCHW
    assert S.int8_launch_reason(codes, None, 5, 6) is None
    buf = np.zeros(2 * 5 * 6 * 16 + 16, np.int8)
    off = (-buf.ctypes.data) % 16
    out = buf[off:off + 2 * 5 * 6 * 16].reshape(2, 5, 6, 16)
    assert S.int8_launch_reason(np.ones((2, 3, 9, 11), np.float16), 0.1, 5, 6, out) is None
