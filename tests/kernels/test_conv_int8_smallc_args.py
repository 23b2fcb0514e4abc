"""INT8 small-C stem on the CPU: the packed weight layout (pure NumPy), the kernel's
reduction order emulated in NumPy against the exact accumulators, and every argument
check of the new launchers before any device work (NumPy arrays stand in)."""
import numpy as np
import pytest

from kernels import quantize as Q
from kernels.gpu import UnsupportedError, conv_int8, conv_int8_smallc, quantize_int8

PERMS = {"KCRS": (0, 3, 1, 2), "RSCK": (1, 2, 3, 0), "KRSC": (0, 1, 2, 3)}   # from KRSC


def _weights(K, C, R, S, seed=0):
    return np.random.default_rng(seed).standard_normal((K, R, S, C)).astype(np.float32)  # KRSC


@pytest.mark.parametrize("layout", list(PERMS))
@pytest.mark.parametrize("C, R, S", [(3, 7, 7), (1, 3, 3), (4, 5, 5), (2, 1, 1), (3, 3, 5)])
def test_packed_layout_matches_a_plain_loop(layout, C, R, S):
    w = _weights(6, C, R, S)
    got, s_w = conv_int8_smallc.pack_weight_int8_smallc(w.transpose(PERMS[layout]), layout, host=True)
    q, s_ref = Q.quantize_weights(w)
    T = -(-R * S // 4) * 4
    ref = np.zeros((6, T, 4), np.int8)
    for k in range(6):
        for r in range(R):
            for s in range(S):
                for c in range(C):
                    ref[k, r * S + s, c] = q[k, r, s, c]
    assert got.dtype == np.int8 and got.flags.c_contiguous and got.shape == (6, T, 4)
    assert conv_int8_smallc.smallc_taps(R, S) == T and (T * 4) % 16 == 0
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(s_w, s_ref)
    assert s_w.dtype == np.float32


def _kernel_accumulators(xq, wp, R, S, stride, pad, dil, P, Qo, tactic):
    """The kernel's reduction, step by step in NumPy: per k-tile and 16-byte chunk kc, the
    four taps (r, s) advanced as load_tile advances them, the A bytes gathered with its
    bounds test, the B bytes read at kk = 16 * (kt * CH + kc)."""
    N, H, W, Cs = xq.shape
    K = wp.shape[0]
    BK = tactic.bk
    CH, TAPS = BK // 16, BK // 4
    Kr = conv_int8_smallc.smallc_taps(R, S) * 4
    wflat = wp.reshape(K, Kr).astype(np.int64)
    n, p, q = np.meshgrid(np.arange(N), np.arange(P), np.arange(Qo), indexing="ij")
    n, h0, w0 = n.ravel(), p.ravel() * stride[0] - pad[0], q.ravel() * stride[1] - pad[1]
    acc = np.zeros((n.size, K), np.int64)
    for kc in range(CH):
        tr = [(4 * kc + e) // S for e in range(4)]
        ts = [(4 * kc + e) % S for e in range(4)]
        for kt in range(-(-Kr // BK)):
            kk = kc * 16 + kt * BK
            a = np.zeros((n.size, 16), np.int64)
            for e in range(4):
                h, ww = h0 + tr[e] * dil[0], w0 + ts[e] * dil[1]
                ok = (tr[e] < R) & (h >= 0) & (h < H) & (ww >= 0) & (ww < W)
                a[ok, 4 * e:4 * e + 4] = xq[n[ok], h[ok], ww[ok], :4]
            if kk < Kr:
                acc += a @ wflat[:, kk:kk + 16].T
            for e in range(4):
                ts[e] += TAPS
                while ts[e] >= S:
                    ts[e] -= S
                    tr[e] += 1
    return acc.reshape(N, P, Qo, K)


@pytest.mark.parametrize("tactic", conv_int8_smallc.SMALLC_TACTICS[:1], ids=lambda t: t.name)
@pytest.mark.parametrize("C, R, S, stride, pad, dil, Cs", [
    (3, 7, 7, (2, 2), (3, 3), (1, 1), 4),        # the ResNet stem
    (4, 3, 3, (1, 1), (1, 1), (1, 1), 8),
    (2, 5, 5, (2, 2), (2, 2), (1, 1), 4),
    (1, 3, 3, (1, 2), (2, 1), (2, 1), 16),       # dilation, uneven stride
    (3, 11, 11, (4, 4), (2, 2), (1, 1), 4),      # reduction longer than one BK=64 tile per row
])
def test_emulated_reduction_order_gives_the_exact_accumulators(tactic, C, R, S, stride, pad, dil, Cs):
    rng = np.random.default_rng(5)
    N, H, W, K = 2, 13, 11, 8
    x = rng.integers(-128, 128, (N, H, W, C), dtype=np.int8)
    xs = np.zeros((N, H, W, Cs), np.int8)
    xs[..., :C] = x
    xs[..., 4:] = 77                                # stored channels past 4 are never read
    wp, _ = conv_int8_smallc.pack_weight_int8_smallc(_weights(K, C, R, S, 1), "KRSC", host=True)
    wq = np.zeros((K, R, S, C), np.int8)
    wq[:] = wp[:, :R * S, :C].reshape(K, R, S, C)
    P = (H + 2 * pad[0] - dil[0] * (R - 1) - 1) // stride[0] + 1
    Qo = (W + 2 * pad[1] - dil[1] * (S - 1) - 1) // stride[1] + 1
    ref = Q.conv_int8_direct(x.transpose(0, 3, 1, 2), wq.transpose(0, 3, 1, 2), stride, pad,
                             (P, Qo), dil, 1).transpose(0, 2, 3, 1)
    got = _kernel_accumulators(xs, wp, R, S, stride, pad, dil, P, Qo, tactic)
    np.testing.assert_array_equal(got, ref)


# ---- argument checks --------------------------------------------------------------------

def test_pack_rejects_wrong_rank_layout_and_channel_count():
    with pytest.raises(UnsupportedError, match="rank 3 in layout 'KCRS'; expected rank 4"):
        conv_int8_smallc.pack_weight_int8_smallc(np.zeros((8, 3, 3), np.float32), host=True)
    with pytest.raises(UnsupportedError, match="layout 'NCHW'; expected rank 4 in one of KCRS"):
        conv_int8_smallc.pack_weight_int8_smallc(np.zeros((8, 3, 3, 3), np.float32), "NCHW", host=True)
    with pytest.raises(UnsupportedError, match="1 to 4 input channels; got 5"):
        conv_int8_smallc.pack_weight_int8_smallc(np.zeros((8, 5, 3, 3), np.float32), host=True)
    with pytest.raises(UnsupportedError, match="1 to 4 input channels; got 0"):
        conv_int8_smallc.pack_weight_int8_smallc(np.zeros((8, 0, 3, 3), np.float32), host=True)


X = np.zeros((1, 8, 8, 4), np.int8)
WP = np.zeros((8, 12, 4), np.int8)                  # a packed 3x3 filter
S_W = np.ones(8, np.float32)


def _conv(x=X, w=WP, **kw):
    kw.setdefault("kernel_size", 3)
    kw.setdefault("s_out", 1.0)
    return conv_int8_smallc.conv2d_int8_smallc(x, w, 1.0, S_W, **kw)


@pytest.mark.parametrize("kw, match", [
    (dict(tactic="i8_128x128x64_w2x4_s4"), "small-C tactic 'i8_128x128x64_w2x4_s4'; valid: i8sc_"),
    (dict(tactic=conv_int8.INT8_TACTICS[0]), "expected an Int8SmallCTactic or one of i8sc_"),
    (dict(x=X.astype(np.float16)), "the INT8 conv takes int8 codes"),
    (dict(w=WP.astype(np.int32)), "the INT8 conv takes int8 codes"),
    (dict(x=X[0]), r"expected contiguous NHWC rank 4"),
    (dict(x=np.zeros((1, 8, 16, 4), np.int8)[:, :, ::2]), r"expected contiguous NHWC rank 4"),
    (dict(x=np.zeros((1, 8, 8, 3), np.int8)), "3 stored channels; the small-C kernel reads x with 4, 8, 16"),
    (dict(x=np.zeros((1, 8, 8, 32), np.int8)), "32 stored channels"),
    (dict(kernel_size=(3, 3, 3)), r"kernel_size \(3, 3, 3\); expected an int or a pair"),
    (dict(kernel_size=7), r"expected contiguous \[K, 52, 4\] for a 7x7 filter"),
    (dict(w=np.zeros((8, 9, 4), np.int8)), r"weights \(8, 9, 4\); expected contiguous \[K, 12, 4\]"),
    (dict(w=np.zeros((8, 12, 3), np.int8)), r"expected contiguous \[K, 12, 4\]"),
    (dict(w=np.zeros((8, 3, 3, 4), np.int8)), r"expected contiguous \[K, 12, 4\]"),
    (dict(stride=(1, 2, 3)), r"stride \(1, 2, 3\); expected an int or a pair"),
    (dict(kernel_size=(3, 4), w=np.zeros((8, 12, 4), np.int8), out_hw=(0, 5)),
     "output size 0x5 from input 8x8; expected positive"),
    (dict(padding=0, kernel_size=(3, 4), w=np.zeros((8, 12, 4), np.int8), x=np.zeros((1, 2, 8, 4), np.int8)),
     "output size 0x5 from input 2x8"),
    (dict(out_dtype=np.int32, s_out=None), "out dtype int32; valid: int8, float32, float16"),
    (dict(s_out=None), "int8 output needs s_out"),
    (dict(out_dtype=np.float32), "float output takes none"),
])
def test_conv_rejects_bad_arguments(kw, match):
    with pytest.raises(UnsupportedError, match=match):
        _conv(**kw)


class _Huge:
    """Stands in for an input of 2**31 codes (too large to allocate on a CPU runner)."""
    dtype, ndim, shape, size = np.dtype(np.int8), 4, (2**21, 32, 32, 1), 2**31

    class flags:
        c_contiguous = True


def test_conv_rejects_an_input_past_int32_offsets():
    huge = _Huge()
    huge.shape = (2**19, 32, 32, 4)
    with pytest.raises(UnsupportedError, match="2147483648 elements; split the batch"):
        _conv(x=huge)


@pytest.mark.parametrize("residual, scale, match", [
    (np.zeros((1, 8, 8, 4), np.int8), 1.0, r"residual \(1, 8, 8, 4\) int8; expected contiguous \(1, 8, 8, 8\)"),
    (np.zeros((1, 8, 8, 8), np.int32), None, "residual .* int32; expected"),
    (np.zeros((1, 8, 8, 8), np.int8), None, "an int8 residual needs its scale"),
    (np.zeros((1, 8, 8, 8), np.float32), 0.5, "a float one takes none"),
])
def test_conv_rejects_bad_residuals(residual, scale, match):
    out = np.zeros((1, 8, 8, 8), np.int8)             # preallocated: no device allocation
    with pytest.raises(UnsupportedError, match=match):
        _conv(padding=1, out=out, residual=residual, residual_scale=scale)


def test_quantize_variants_are_checked_first():
    x = np.zeros((1, 2, 2, 3), np.float32)
    with pytest.raises(UnsupportedError, match="quantize variant 'fast'; valid: auto, vec, scalar"):
        quantize_int8.quantize_nhwc(x, 1.0, variant="fast")


class _Out:
    def __init__(self, ptr):
        self.data = type("D", (), {"ptr": ptr})()


def test_auto_takes_the_vector_kernel_where_aligned_and_fast():
    # fast: the engine's fast_quantize setting (CUPYRT_FAST_QUANTIZE), passed as an argument
    assert not quantize_int8._use_vec_quantize("auto", _Out(256), fast=False)
    assert not quantize_int8._use_vec_quantize("scalar", _Out(256), fast=True)
    assert quantize_int8._use_vec_quantize("vec", _Out(8), fast=False)   # "vec" checks alignment itself
    assert quantize_int8._use_vec_quantize("auto", _Out(256), fast=True)
    assert not quantize_int8._use_vec_quantize("auto", _Out(8), fast=True)


@pytest.mark.parametrize("x, kw, match", [
    (np.zeros((1, 3, 4, 4), np.float64), {}, r"float64; expected contiguous NCHW float32 or float16"),
    (np.zeros((3, 4, 4), np.float32), {}, r"\(3, 4, 4\) float32; expected contiguous NCHW"),
    (np.zeros((1, 3, 4, 8), np.float32)[..., ::2], {}, "expected contiguous NCHW"),
    (np.zeros((1, 3, 4, 4), np.float32), dict(c_pad_to=1), "3 channels padded to 1: 3 is not a multiple of 4"),
    (np.zeros((1, 6, 4, 4), np.float32), dict(c_pad_to=3), "6 channels padded to 3: 6 is not"),
    (np.zeros((1, 3, 4, 4), np.float32), dict(out=np.zeros((1, 4, 4, 3), np.int8)),
     r"out \(1, 4, 4, 3\) int8; expected contiguous int8 \(1, 4, 4, 4\)"),
    (np.zeros((1, 3, 4, 4), np.float32), dict(out=np.zeros((1, 4, 4, 4), np.uint8)), "uint8; expected"),
])
def test_quantize_nchw_rejects_bad_arguments(x, kw, match):
    with pytest.raises(UnsupportedError, match=match):
        quantize_int8.quantize_nchw_to_nhwc(x, 1.0, **kw)


def test_smallc_tactics_are_their_own_family():
    """Tiles of conv_int8_smallc.cu, apart from conv_int8's, precompiled for INT8 builds only."""
    names = set(conv_int8_smallc.SMALLC_TACTICS_BY_NAME)
    assert not names & set(conv_int8.TACTICS_BY_NAME)
    assert all(t.name_expression(np.int8).startswith("conv_int8_smallc<") for t in conv_int8_smallc.SMALLC_TACTICS)
    assert len(conv_int8_smallc.SMALLC_TACTICS) == 3
    assert conv_int8_smallc.FAMILY.source == "conv_int8_smallc.cu"
    assert conv_int8_smallc.FAMILY.tiles == ()
    assert conv_int8_smallc.FAMILY.int8_tiles == conv_int8_smallc.SMALLC_TACTICS
