"""The INT8 epilogue (int8_epilogue.cuh) at the limits of its int32 -> float32 and int8
residual conversions, in every kernel family that runs it (mma.sync, wgmma, the persistent
1x1). Float32 output with unit scales shows the converted values themselves:
- extreme accumulators: every code -128 times -128 (acc = +2^22 at C = 256) and 127 times
  -128 (acc = -4161536); at C = 272, acc = 272 * 16384;
- an int8 residual holding every one of the 256 codes, dequantised and added;
- random codes against NumPy's exact int64 sums, 1x1 and 3x3.
(Session 13 also ran these against a conversion-free variant of the epilogue, which was
exact and no faster on an H100, and is not kept: benchmarks/KERNEL_NOTES.md.)"""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from kernels.gpu import conv_int8, conv_pw, conv_wgmma  # noqa: E402

FAMILIES = {
    "mma": (conv_int8.conv2d_int8, conv_int8.INT8_TACTICS[0]),
    "wgmma": (conv_wgmma.conv2d_wgmma_int8, conv_wgmma.INT8_TACTICS[0]),
    "pw": (conv_pw.conv2d_pw_int8, conv_pw.PW_TACTICS[0]),
}


def _wgmma_ok():
    return int(cp.cuda.Device().compute_capability) >= 90


def _run(family, xq, wq, **kw):
    if family == "wgmma" and not _wgmma_ok():
        pytest.skip("wgmma needs compute capability 9.0")
    fn, tactic = FAMILIES[family]
    K = wq.shape[0]
    ones = cp.ones(K, cp.float32)
    out = cp.full(xq.shape[:3] + (K,), cp.nan, cp.float32)
    fn(xq, wq, np.float32(1.0), ones, out_dtype=np.float32, out=out, tactic=tactic, **kw)
    return out.get()


def _codes(shape, value):
    return cp.full(shape, value, cp.int8)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("xv, wv, want", [(-128, -128, 1 << 22), (127, -128, -4161536),
                                          (-128, 127, -4161536)])
def test_extreme_accumulators_convert_exactly(family, xv, wv, want):
    xq, wq = _codes((2, 4, 5, 256), xv), _codes((32, 1, 1, 256), wv)
    y = _run(family, xq, wq)
    assert np.all(y == np.float32(want)), (np.unique(y), want)


@pytest.mark.parametrize("family", FAMILIES)
def test_accumulators_past_two_to_the_22_convert_exactly(family):
    xq, wq = _codes((1, 3, 7, 272), -128), _codes((16, 1, 1, 272), -128)
    y = _run(family, xq, wq)
    assert np.all(y == np.float32(272 * 16384))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_residual_code_dequantised_exactly(family):
    rng = np.random.default_rng(5)
    N, H, W, C, K = 2, 8, 16, 64, 128              # 256 pixels x 128 channels: every code 128 times
    x = rng.integers(-128, 128, (N, H, W, C), dtype=np.int8)
    w = rng.integers(-128, 128, (K, 1, 1, C), dtype=np.int8)
    codes = np.resize(np.arange(-128, 128, dtype=np.int8), N * H * W * K)
    res = rng.permutation(codes).reshape(N, H, W, K)
    rs = np.float32(0.037)
    y = _run(family, cp.asarray(x), cp.asarray(w), residual=cp.asarray(res), residual_scale=rs)
    acc = np.einsum("nhwc,kc->nhwk", x.astype(np.int64), w[:, 0, 0, :].astype(np.int64))
    # the epilogue's order: fma(float(acc), 1 * 1, 0) (exact), then fma(float(code), rs, y),
    # one rounding (kernels.quantize.fma32: exact against rationals, tests/kernels)
    from kernels import quantize as Q
    want = Q.fma32(res.astype(np.float32), rs, acc.astype(np.float32))
    assert np.array_equal(y, want)
    # the product alone is not exactly representable for most codes: a separately rounded
    # product and sum would differ somewhere, so this pins the fused form
    assert not np.array_equal(want, acc.astype(np.float32) + res.astype(np.float32) * rs)
    assert set(np.unique(res)) == set(range(-128, 128))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("C, R", [(64, 1), (256, 1), (16, 3), (64, 3)])
def test_random_codes_equal_exact_sums(family, C, R):
    if family == "pw" and R != 1:
        pytest.skip("the persistent kernel runs 1x1 convolutions")
    rng = np.random.default_rng(C + R)
    N, H, W, K = 2, 9, 11, 48
    x = rng.integers(-128, 128, (N, H, W, C), dtype=np.int8)
    w = rng.integers(-128, 128, (K, R, R, C), dtype=np.int8)
    y = _run(family, cp.asarray(x), cp.asarray(w), padding=R // 2)
    xp = np.pad(x.astype(np.int64), ((0, 0), (R // 2, R // 2), (R // 2, R // 2), (0, 0)))
    acc = sum(np.einsum("nhwc,kc->nhwk", xp[:, i:i + H, j:j + W], w[:, i, j, :].astype(np.int64))
              for i in range(R) for j in range(R))
    assert np.array_equal(y, acc.astype(np.float32))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("act, alpha, beta", [(None, 0.0, 0.0), ("RELU", 0.0, 0.0), ("CLIP", -1.0, 3.0),
                                              ("LEAKY_RELU", 0.25, 0.0)])
def test_int8_codes_for_each_activation_form(family, act, alpha, beta):
    """ReLU and no activation into int8 codes take the folded forms (int8_epilogue.cuh: the
    output scale in the coefficients, ReLU as a max), CLIP and leaky ReLU the general one: all
    equal the emulation's codes, with negative, saturating and zero values present."""
    from kernels import quantize as Q
    if family == "wgmma" and not _wgmma_ok():
        pytest.skip("wgmma needs compute capability 9.0")
    rng = np.random.default_rng(17)
    N, H, W, C, K = 2, 7, 9, 64, 96
    x = rng.integers(-128, 128, (N, H, W, C), dtype=np.int8)
    w = rng.integers(-128, 128, (K, 1, 1, C), dtype=np.int8)
    s_in, s_w = np.float32(0.02), (0.001 + 0.01 * rng.random(K)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    rq, s_r = rng.integers(-128, 128, (N, H, W, K), dtype=np.int8), np.float32(0.05)
    acc = np.einsum("nhwc,kc->nhwk", x.astype(np.int64), w[:, 0, 0, :].astype(np.int64))
    s_out = np.float32(6.0 / 127)
    ref = Q.epilogue_int8(acc, s_in, s_w, bias, (rq, s_r), act, alpha, beta, s_out=s_out,
                          channel_axis=3)
    assert (ref == 127).any() == (act != "CLIP") and (ref == 0).any()
    if act is None:
        assert (ref == -128).any() and (ref < 0).mean() > 0.2
    fn, tactic = FAMILIES[family]
    out = cp.full((N, H, W, K), 99, cp.int8)
    fn(cp.asarray(x), cp.asarray(w), s_in, cp.asarray(s_w), bias=cp.asarray(bias),
       residual=cp.asarray(rq), residual_scale=s_r, act=act, alpha=alpha, beta=beta, s_out=s_out,
       out=out, tactic=tactic)
    np.testing.assert_array_equal(out.get(), ref)


_CODES_PROBE = r'''
extern "C" __global__ void codes_probe(const float* v, unsigned* plain, unsigned* relu,
                                       unsigned short* pair, int n4) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    const float* p = v + 4 * i;
    plain[i] = cupyrt_int8::codes4(p[0], p[1], p[2], p[3]);
    relu[i] = cupyrt_int8::codes4(fmaxf(p[0], 0.f), fmaxf(p[1], 0.f), fmaxf(p[2], 0.f),
                                  fmaxf(p[3], 0.f));
    pair[i] = (unsigned short)cupyrt_int8::codes2(p[0], p[1], 0xabcd1234u);
}
'''


def test_code_packing_rounds_half_even_saturates_and_keeps_byte_order():
    """codes2 / codes4 (int8_epilogue.cuh: cvt.rni to int32, then cvt.pack.sat two at a time,
    which every INT8 epilogue and the stem use): ties to even, saturation at both ends and for
    +-inf, NaN -> 0, byte e from value e, and only the low half-word of codes2 is its codes."""
    from kernels.gpu.compile import read_source
    rng = np.random.default_rng(3)
    special = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -127.5, -128.5, 128.0, -129.0,
                        1e10, -1e10, np.inf, -np.inf, np.nan, -0.0, 3.49999, -3.50001], np.float32)
    v = np.concatenate([special, (rng.standard_normal(4000) * 90).astype(np.float32)])
    v = rng.permutation(v)                         # the specials at every byte position
    v = v[: len(v) // 4 * 4]
    mod = cp.RawModule(code=read_source("int8_epilogue.cuh") + _CODES_PROBE, options=("-std=c++17",))
    n4 = len(v) // 4
    plain, relu = cp.zeros(n4, cp.uint32), cp.zeros(n4, cp.uint32)
    pair = cp.zeros(n4, cp.uint16)
    mod.get_function("codes_probe")(((n4 + 127) // 128,), (128,),
                                    (cp.asarray(v), plain, relu, pair, np.int32(n4)))

    def want(a):
        with np.errstate(invalid="ignore"):
            q = np.clip(np.rint(np.nan_to_num(a, nan=0.0, posinf=1e9, neginf=-1e9)), -128, 127)
        return q.astype(np.int8)

    got = plain.get().view(np.int8)               # little-endian: byte e of word i = code 4i + e
    np.testing.assert_array_equal(got, want(v))
    np.testing.assert_array_equal(relu.get().view(np.int8), want(np.maximum(np.nan_to_num(v), 0)))
    np.testing.assert_array_equal(pair.get().view(np.int8).reshape(-1, 2), want(v).reshape(-1, 4)[:, :2])
    assert set(np.isin(special[:8], v)) == {True} and (got == -128).any() and (got == 127).any()
