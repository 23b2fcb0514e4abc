"""Pooling, softmax, reformat, concat and fused pointwise chains vs float64 NumPy."""
import math

import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from gpu_helpers import TOL, act_ref, pool_nhwc, poison, rel_l2, softmax  # noqa: E402
from kernels.gpu import UnsupportedError  # noqa: E402
from kernels.gpu import pointwise_gen, pooling, reformat  # noqa: E402
from kernels.gpu import softmax as gsoftmax  # noqa: E402

RNG = np.random.default_rng(99)
DTYPES = [np.float32, np.float16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,win,stride,pad", [("MAX", 3, 2, 1), ("AVERAGE", 3, 1, 1),
                                                 ("AVERAGE", 2, 2, 0), ("MAX", 2, 2, 0)])
def test_pool2d_nhwc(dtype, mode, win, stride, pad):
    x = RNG.standard_normal((2, 11, 10, 24)).astype(dtype)
    ref = pool_nhwc(x, mode, (win, win), (stride, stride), (pad, pad))
    out = poison(cp, ref.shape, dtype)
    pooling.pool2d(cp.asarray(x), mode, win, stride=stride, padding=pad, out=out)
    assert rel_l2(out.get(), ref) <= TOL[np.dtype(dtype)]


def test_pool2d_average_including_padding():
    x = RNG.standard_normal((1, 6, 6, 8)).astype(np.float32)
    ref = pool_nhwc(x, "AVERAGE", (3, 3), (1, 1), (1, 1), exclude_pad=False)
    out = pooling.pool2d(cp.asarray(x), "AVERAGE", 3, stride=1, padding=1, exclude_padding=False)
    assert rel_l2(out.get(), ref) <= 1e-5


def test_pool2d_rejects_unknown_mode():
    with pytest.raises(UnsupportedError, match="MAX, AVERAGE"):
        pooling.pool2d(cp.zeros((1, 4, 4, 8), cp.float32), "MEDIAN", 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avgpool(dtype):
    x = RNG.standard_normal((3, 7, 7, 200)).astype(dtype)
    out = pooling.global_avgpool(cp.asarray(x))
    assert rel_l2(out.get(), x.astype(np.float64).mean(axis=(1, 2))) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((37, 1000), -1), ((5, 3), 1), ((4, 7, 6, 5), 1),
                                        ((4, 7, 6, 5), 0), ((2, 3, 2053), 2)])
def test_softmax_any_axis(dtype, shape, axis):
    x = (RNG.standard_normal(shape) * 3).astype(dtype)
    out = gsoftmax.softmax(cp.asarray(x), axis=axis)
    assert rel_l2(out.get(), softmax(x, axis)) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8, np.int32])
def test_nchw_nhwc_round_trip_exact(dtype):
    x = (RNG.standard_normal((3, 37, 9, 11)) * 50).astype(dtype)
    nhwc = reformat.nchw_to_nhwc(cp.asarray(x))
    np.testing.assert_array_equal(nhwc.get(), x.transpose(0, 2, 3, 1))
    back = reformat.nhwc_to_nchw(nhwc)
    np.testing.assert_array_equal(back.get(), x)


def test_concat_buffer_and_concat_into():
    a = RNG.standard_normal((2, 3, 3, 5)).astype(np.float32)
    b = RNG.standard_normal((2, 3, 3, 7)).astype(np.float32)
    buf, offs = reformat.concat_buffer([a.shape, b.shape], np.float32)
    assert offs == [0, 5]
    reformat.concat_into(buf, cp.asarray(a), 0)
    reformat.concat_into(buf, cp.asarray(b), 5)
    np.testing.assert_array_equal(buf.get(), np.concatenate([a, b], axis=-1))
    with pytest.raises(UnsupportedError, match="does not fit"):
        reformat.concat_into(buf, cp.asarray(b), 6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_chain_matches_numpy(dtype):
    x = RNG.standard_normal((2, 5, 6, 16)).astype(dtype)
    t = RNG.standard_normal(x.shape).astype(dtype)
    s = RNG.uniform(0.5, 2, 16).astype(np.float32)
    h = RNG.standard_normal(16).astype(np.float32)
    ops = [("channel", s, h, None), ("tensor", "SUM", cp.asarray(t)), ("act", "LEAKY_RELU", 0.2, 0.0),
           ("const", "PROD", 1.5), ("unary", "TANH" if False else "ABS"), ("rconst", "SUB", 3.0),
           ("act", "SIGMOID", 0.0, 0.0)]
    out = pointwise_gen.pointwise_chain(cp.asarray(x), ops)
    v = x.astype(np.float64) * s + h + t
    v = act_ref(v, "LEAKY_RELU", 0.2)
    v = np.abs(v * 1.5)
    v = act_ref(3.0 - v, "SIGMOID")
    assert rel_l2(out.get(), v) <= TOL[np.dtype(dtype)]


def test_pointwise_chain_channel_axis_nchw():
    x = RNG.standard_normal((2, 4, 3, 5)).astype(np.float32)
    s = RNG.uniform(0.5, 2, 4).astype(np.float32)
    out = pointwise_gen.pointwise_chain(cp.asarray(x), [("channel", s, None, None), ("unary", "EXP")],
                                        channel_axis=1)
    assert rel_l2(out.get(), np.exp(x.astype(np.float64) * s[None, :, None, None])) <= 1e-5


def test_pointwise_chain_rejects_unknown_op():
    with pytest.raises(UnsupportedError, match="valid"):
        pointwise_gen.pointwise_chain(cp.zeros(4, cp.float32), [("unary", "FROB")])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [64, 12])          # 12: float16 falls back to the scalar kernel
@pytest.mark.parametrize("mode", ["MAX", "AVERAGE"])
def test_pool2d_vector_and_scalar_kernels_agree(dtype, C, mode):
    x = RNG.standard_normal((3, 15, 13, C)).astype(dtype)
    ref = pool_nhwc(x, mode, (3, 3), (2, 2), (1, 1))
    xd = cp.asarray(x)
    outs = [pooling.pool2d(xd, mode, 3, stride=2, padding=1, variant=v).get()
            for v in ("auto", "scalar")]
    for o in outs:
        assert rel_l2(o, ref) <= TOL[np.dtype(dtype)]
    if mode == "MAX":
        np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, win, stride, pad", [
    ((3, 15, 13, 64), 3, 2, 1),                     # ResNet's pool, odd sizes
    ((2, 9, 10, 32), 3, 2, (4, 1)),                 # windows wholly in the padding
    ((2, 8, 9, 16), 2, 2, 0),
    ((1, 7, 8, 16), 2, (1, 3), (2, 0)),             # stride past the window, empty rows
])
def test_pool2d_fixed_window_max_is_bit_equal_to_the_vector_kernel(dtype, shape, win, stride, pad):
    """The fixed-window max (3x3, 2x2) against the runtime-window vector kernel, bit for bit,
    on data with -inf, NaN, +-0 and the type's extremes, into a slice of a wider buffer."""
    x = RNG.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[::7], flat[3::11], flat[5::13], flat[6::17] = -np.inf, np.nan, -0.0, 0.0
    flat[9::19] = np.finfo(dtype).min
    xd = cp.asarray(x)
    ref = pooling.pool2d(xd, "MAX", win, stride=stride, padding=pad, variant="vec")
    out = poison(cp, ref.shape[:3] + (shape[3] + 16,), dtype)
    got = pooling.pool2d(xd, "MAX", win, stride=stride, padding=pad, out=out, out_channel_offset=8,
                         variant="window")
    np.testing.assert_array_equal(got.get()[..., 8:8 + shape[3]].view(np.uint8), ref.get().view(np.uint8))
    assert np.isnan(got.get()[..., :8]).all() and np.isnan(got.get()[..., 8 + shape[3]:]).all()
    # the value: the window's max with NaN dropped, floored at the type's lowest (empty windows too)
    (R, S), (sh, sw), (ph, pw) = (v if isinstance(v, tuple) else (v, v) for v in (win, stride, pad))
    N, H, W, C = shape
    P, Q = ref.shape[1:3]
    xp = np.full((N, H + 2 * ph + R, W + 2 * pw + S, C), -np.inf)
    xp[:, ph:ph + H, pw:pw + W] = np.where(np.isnan(x), -np.inf, x)
    want = np.full((N, P, Q, C), -np.inf)
    for r in range(R):
        for c in range(S):
            want = np.maximum(want, xp[:, r:r + sh * (P - 1) + 1:sh, c:c + sw * (Q - 1) + 1:sw])
    want = np.maximum(want, float(np.finfo(dtype).min)).astype(dtype)
    np.testing.assert_array_equal(ref.get(), want)
    assert (want > 0).any() and np.isnan(x).any() and np.isneginf(x).any()


@pytest.mark.parametrize("off", [8, 4])           # 4: unaligned offset -> scalar kernel (float16)
def test_pool2d_writes_concat_buffer_at_offset(off):
    x = RNG.standard_normal((2, 9, 9, 16)).astype(np.float16)
    ref = pool_nhwc(x, "MAX", (3, 3), (2, 2), (1, 1))
    out = poison(cp, ref.shape[:3] + (32,), np.float16)
    pooling.pool2d(cp.asarray(x), "MAX", 3, stride=2, padding=1, out=out, out_channel_offset=off)
    got = out.get()
    np.testing.assert_array_equal(got[..., off:off + 16], ref.astype(np.float16))
    assert np.isnan(got[..., :off]).all() and np.isnan(got[..., off + 16:]).all()


def test_pool2d_variant_errors():
    x = cp.zeros((1, 4, 4, 12), cp.float16)
    with pytest.raises(UnsupportedError, match="multiples of 8"):
        pooling.pool2d(x, "MAX", 2, variant="vec")
    with pytest.raises(UnsupportedError, match="auto, vec, window, scalar"):
        pooling.pool2d(x, "MAX", 2, variant="fast")
    with pytest.raises(UnsupportedError, match=r"'window' is MAX over a window of 3x3, 2x2 .* got MAX 2x2 "
                                               r"\(the vector kernel does not apply\)"):
        pooling.pool2d(x, "MAX", 2, variant="window")            # C = 12 halves: no vector kernel
    x16 = cp.zeros((1, 6, 6, 16), cp.float16)
    with pytest.raises(UnsupportedError, match="got AVERAGE 3x3$"):
        pooling.pool2d(x16, "AVERAGE", 3, variant="window")
    with pytest.raises(UnsupportedError, match="got MAX 4x4$"):
        pooling.pool2d(x16, "MAX", 4, variant="window")
    with pytest.raises(UnsupportedError, match="got MAX 3x1$"):
        pooling.pool2d(cp.zeros((1, 6, 6, 16), cp.int8), "MAX", (3, 1), variant="window")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 7, 7, 2048), (5, 3, 5, 264), (2, 4, 4, 36)])
def test_global_avgpool_vector_kernel(dtype, shape):
    x = RNG.standard_normal(shape).astype(dtype)
    ref = x.astype(np.float64).mean(axis=(1, 2))
    out = pooling.global_avgpool(cp.asarray(x), keepdims=True)
    assert out.shape == (shape[0], 1, 1, shape[3])
    assert rel_l2(out.get().reshape(shape[0], -1), ref) <= TOL[np.dtype(dtype)]
    sc = pooling.global_avgpool(cp.asarray(x), variant="scalar")
    assert rel_l2(sc.get(), ref) <= TOL[np.dtype(dtype)]


def test_global_avgpool_variant_errors():
    with pytest.raises(UnsupportedError, match="multiple of 8"):
        pooling.global_avgpool(cp.zeros((1, 2, 2, 12), cp.float16), variant="vec")


@pytest.mark.parametrize("variant", ["auto", "vec"])      # auto on 3x3 / 2x2: the fixed-window kernels
@pytest.mark.parametrize("win, stride, pad", [(3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_pool2d_int8_codes_max_is_exact(win, stride, pad, variant):
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, (2, 9, 11, 32)).astype(np.int8)
    got = cp.asnumpy(pooling.pool2d(cp.asarray(x), "MAX", win, stride=stride, padding=pad, variant=variant))
    ref = cp.asnumpy(pooling.pool2d(cp.asarray(x.astype(np.float16)), "MAX", win, stride=stride,
                                    padding=pad)).astype(np.int8)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, ref)


def _maxpool_ref(x, win, stride, pad):
    """NumPy max pooling of NHWC int8 with padding that never wins (-129); a window wholly in
    the padding gives code 0 (the kernels' rule). win, stride, pad: int or (rows, columns)."""
    (R, S), (sh, sw), (ph, pw) = (v if isinstance(v, tuple) else (v, v) for v in (win, stride, pad))
    N, H, W, C = x.shape
    P, Q = (H + 2 * ph - R) // sh + 1, (W + 2 * pw - S) // sw + 1
    xp = np.full((N, H + 2 * ph + R, W + 2 * pw + S, C), -129, np.int16)
    xp[:, ph:ph + H, pw:pw + W] = x
    out = np.full((N, P, Q, C), -129, np.int16)
    for r in range(R):
        for s in range(S):
            out = np.maximum(out, xp[:, r:r + sh * (P - 1) + 1:sh, s:s + sw * (Q - 1) + 1:sw])
    out[out == -129] = 0
    return out.astype(np.int8)


def test_pool2d_int8_resnet_stem_pool_and_a_channel_slice_against_numpy():
    """ResNet's 3x3/2 pool after the stem (112 -> 56, 64 channels), every code from -128 to
    127 present, then written into channels 16..79 of a wider output."""
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (2, 112, 112, 64)).astype(np.int8)
    x[0, :, :, 5] = -128                                  # a channel at the bottom code only
    ref = _maxpool_ref(x, 3, 2, 1)
    got = pooling.pool2d(cp.asarray(x), "MAX", 3, stride=2, padding=1).get()
    np.testing.assert_array_equal(got, ref)
    assert (got[0, :, :, 5] == -128).all() and (got == 127).any()
    out = cp.full((2, 56, 56, 96), 7, cp.int8)
    pooling.pool2d(cp.asarray(x), "MAX", 3, stride=2, padding=1, out=out, out_channel_offset=16)
    o = out.get()
    np.testing.assert_array_equal(o[..., 16:80], ref)
    assert (o[..., :16] == 7).all() and (o[..., 80:] == 7).all()


@pytest.mark.parametrize("variant", ["auto", "vec"])
@pytest.mark.parametrize("shape, win, stride, pad, empty", [
    ((3, 13, 10, 48), 3, 2, 1, 0),                  # P = 7, Q = 5
    ((2, 9, 10, 32), 3, 2, (4, 1), 20),             # 3x3 windows wholly in the padding
    ((1, 7, 8, 16), 2, (1, 3), (2, 0), 6),          # 2x2, stride past the window in W
    ((2, 9, 7, 16), 3, 1, 1, 0),                    # stride 1: each row in three outputs' windows
    ((2, 10, 9, 32), (4, 2), (1, 2), (4, 0), 16),   # windows wholly in the padding: code 0
    ((1, 6, 6, 16), 1, 1, 2, 64),                   # 1x1 windows, a border of empty ones
    ((2, 11, 12, 16), (2, 3), (3, 2), (1, 1), 0),   # stride past the window: rows no output reads
])
def test_pool2d_int8_geometries_against_numpy(shape, win, stride, pad, empty, variant):
    """The int8 kernels (runtime window; fixed 3x3 and 2x2 under auto) on odd output sizes,
    rows shared by several outputs, rows no output reads, and windows in the padding only,
    every code present."""
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-128, 128, shape).astype(np.int8)
    x.reshape(-1)[:256] = np.arange(-128, 128)
    ref = _maxpool_ref(x, win, stride, pad)
    got = pooling.pool2d(cp.asarray(x), "MAX", win, stride=stride, padding=pad, variant=variant).get()
    np.testing.assert_array_equal(got, ref)
    assert (ref == 0).all(axis=-1).sum() == empty      # the empty windows the case is about


def test_pool2d_int8_refuses_average_scalar_and_unaligned_channels():
    x = cp.zeros((1, 4, 4, 32), cp.int8)
    with pytest.raises(UnsupportedError, match="int8 pooling: MAX"):
        pooling.pool2d(x, "AVERAGE", 2)
    with pytest.raises(UnsupportedError, match="int8 pooling: MAX"):
        pooling.pool2d(x, "MAX", 2, variant="scalar")
    with pytest.raises(UnsupportedError, match="multiples of 16"):
        pooling.pool2d(cp.zeros((1, 4, 4, 24), cp.int8), "MAX", 2)


def test_memory_system_reports_the_cards_dram_rate_and_l2():
    """engine/gpu/device.memory_system: the precision timing's traffic floor divides by this
    rate, so it must be the card's (H100 SXM 3.35e12 B/s, H200 4.8e12; 50 MB of L2)."""
    from engine.gpu.device import memory_system
    bandwidth, l2 = memory_system(cp.cuda.Device().id)
    assert 1e12 < bandwidth < 2e13, bandwidth
    assert 8 * 2**20 <= l2 <= 512 * 2**20, l2
