"""The INT8 epilogue's float32 arithmetic (kernels/quantize.py), the contract every INT8 GPU
kernel reproduces bit for bit (kernels/cuda/int8_epilogue.cuh; on a GPU:
tests/gpu/test_int8_epilogue_exact_gpu.py and the kernels' own tests):
- ``fma32`` is a float32 fused multiply-add with one rounding, checked against exact rational
  arithmetic, including sums that land on a float32 midpoint in float64 (where rounding the
  float64 sum to float32 goes the wrong way);
- ``epilogue_coefficients`` folds the output scale into a, b and rs only for int8 codes out
  with ReLU or no activation;
- ``epilogue_int8`` follows the documented order, and stays within a code of the exact
  real-number result."""
import numpy as np
import pytest

from engine.testing import fma_f32_exact
from kernels import quantize as Q


def test_fma32_rounds_once_like_a_fused_multiply_add():
    rng = np.random.default_rng(3)
    n = 4000
    a, b, c = (rng.standard_normal(n) * 10.0 ** rng.integers(-4, 5, n) for _ in range(3))
    a, b, c = (v.astype(np.float32) for v in (a, b, c))
    got = Q.fma32(a, b, c)
    want = fma_f32_exact(a, b, c)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("c, ulps", [(2.0 ** -60, 4097), (-(2.0 ** -60), 4096), (0.0, 4096)])
def test_fma32_at_a_float32_midpoint(c, ulps):
    # (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24: a float32 midpoint. A tiny c decides the rounding;
    # float64 loses it (its sum is the midpoint itself), fma32 keeps it.
    a = np.float32(1 + 2.0 ** -12)
    c = np.float32(c)
    got = Q.fma32(np.array([a]), np.array([a]), np.array([c]))[0]
    assert got == fma_f32_exact(a, a, c)
    assert (float(got) - 1.0) * 2 ** 23 == ulps
    naive = np.float32(np.float64(a) * np.float64(a) + np.float64(c))
    if c > 0:
        assert naive != got                      # what the float64 shortcut would get wrong


def test_fma32_keeps_infinities_and_nan():
    got = Q.fma32(np.float32([np.inf, 2.0, np.nan, 3e38]), np.float32([1.0, -np.inf, 1.0, 10.0]),
                  np.float32([1.0, 0.0, 0.0, 0.0]))
    assert got[0] == np.inf and got[1] == -np.inf and np.isnan(got[2]) and got[3] == np.inf


def test_coefficients_fold_the_output_scale_only_for_relu_or_none_into_codes():
    s_w = np.float32([0.013, 0.7])
    a, b, rs, folded = Q.epilogue_coefficients(0.05, s_w, [1.0, -2.0], s_res=0.2, s_out=0.3, act="RELU")
    inv = np.float32(1) / np.float32(0.3)
    assert folded
    np.testing.assert_array_equal(a, (np.float32(0.05) * s_w) * inv)
    np.testing.assert_array_equal(b, np.float32([1.0, -2.0]) * inv)
    assert rs == np.float32(np.float32(0.2) * inv)
    for kw in (dict(s_out=0.3, act="CLIP"), dict(s_out=None, act="RELU"), dict(s_out=None, act=None)):
        a, b, rs, folded = Q.epilogue_coefficients(0.05, s_w, [1.0, -2.0], s_res=0.2, **kw)
        assert not folded and rs == np.float32(0.2)
        np.testing.assert_array_equal(a, np.float32(0.05) * s_w)
    a, b, rs, folded = Q.epilogue_coefficients(0.05, s_w, s_out=0.3)   # no bias, float residual
    assert folded and rs == inv and not b.any()


def _case(rng, k=24, n=600):
    acc = rng.integers(-40000, 40000, (n, k)).astype(np.int32)
    s_w = rng.uniform(0.5, 1.5, k).astype(np.float32) / np.float32(127 * 10)
    bias = rng.standard_normal(k).astype(np.float32)
    res = rng.integers(-128, 128, (n, k)).astype(np.int8)
    return acc, np.float32(0.021), s_w, bias, res, np.float32(0.037)


@pytest.mark.parametrize("act", [None, "RELU", "CLIP"])
def test_epilogue_follows_the_documented_order(act):
    acc, s_in, s_w, bias, res, s_res = _case(np.random.default_rng(11))
    alpha, beta = (0.0, 6.0) if act == "CLIP" else (0.0, 0.0)
    s_out = np.float32(0.05)
    got = Q.epilogue_int8(acc, s_in, s_w, bias, (res, s_res), act, alpha, beta, s_out, channel_axis=1)
    a, b, rs, folded = Q.epilogue_coefficients(s_in, s_w, bias, s_res, s_out, act)
    y = Q.fma32(res.astype(np.float32), rs, Q.fma32(acc.astype(np.float32), a, b))
    if folded:
        want = np.clip(np.rint(np.fmax(y, 0) if act == "RELU" else y), -128, 127).astype(np.int8)
    else:
        want = Q.quantize(np.clip(y, alpha, beta), s_out)
    assert got.dtype == np.int8 and np.unique(got).size > 100
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("act", [None, "RELU"])
def test_epilogue_codes_within_one_of_the_real_number_result(act):
    acc, s_in, s_w, bias, res, s_res = _case(np.random.default_rng(12))
    s_out = np.float32(0.05)
    got = Q.epilogue_int8(acc, s_in, s_w, bias, (res, s_res), act, s_out=s_out, channel_axis=1)
    real = (acc * (np.float64(s_in) * s_w.astype(np.float64)) + bias + res * np.float64(s_res))
    if act == "RELU":
        real = np.maximum(real, 0)
    want = np.clip(np.rint(real / np.float64(s_out)), -128, 127)
    d = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert d.max() <= 1 and np.mean(d > 0) < 1e-3


def test_float_output_and_float_residual():
    acc, s_in, s_w, bias, _, _ = _case(np.random.default_rng(13))
    r = np.random.default_rng(14).standard_normal(acc.shape).astype(np.float32)
    got = Q.epilogue_int8(acc, s_in, s_w, bias, r, "RELU", channel_axis=1)
    a = (np.float32(s_in) * s_w).astype(np.float32)
    want = np.maximum(Q.fma32(r, np.float32(1), Q.fma32(acc.astype(np.float32), a, bias)), 0)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    # a float residual adds with one rounding: fma with multiplier 1 is a plain float32 add
    np.testing.assert_array_equal(Q.fma32(r, np.float32(1), want), r + want)
