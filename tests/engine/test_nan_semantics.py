"""NaN / Inf semantics of the NumPy references (kernels/), as TensorFlow's kernels have
them (issue 11); the same cases against TensorFlow itself are in
tests/tf_integration/test_nan_semantics.py."""
import numpy as np
import pytest

from kernels import pointwise as kpw
from kernels import pooling as kpool
from kernels import reduce as kred


def poisoned(shape=(2, 3, 4, 4), seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[[3, 20, 41]] = [np.nan, np.inf, -np.inf]
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_max_pool_skips_nan_and_all_nan_or_neg_inf_window_gives_lowest(dtype):
    x = poisoned().astype(dtype)
    x[0, 0, :2, :2] = np.nan
    x[1, 1, 2:, 2:] = -np.inf
    y = kpool.pool_nd(x, "MAX", (2, 2), (2, 2), (0, 0), (0, 0), (2, 2))
    assert y.dtype == dtype and not np.isnan(y).any()
    assert y[0, 0, 0, 0] == y[1, 1, 1, 1] == np.finfo(dtype).min
    # elsewhere: the max of the window's non-NaN taps
    win = x.reshape(2, 3, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 2, 2, 4)
    with np.errstate(invalid="ignore"):
        ref = np.nanmax(np.where(np.isnan(win).all(-1, keepdims=True), -np.inf, win), -1)
    ref = np.maximum(ref, np.finfo(dtype).min)
    np.testing.assert_array_equal(y, ref)


def test_avg_pool_and_reductions_propagate_nan_and_inf():
    x = poisoned()
    avg = kpool.pool_nd(x, "AVERAGE", (2, 2), (2, 2), (0, 0), (0, 0), (2, 2))
    assert np.isnan(avg[0, 0, 0, 1]) and np.isposinf(avg.reshape(-1)).sum() == 1
    for op, fn in (("SUM", np.sum), ("AVG", np.mean), ("MAX", np.max), ("MIN", np.min)):
        y = kred.reduce(x, op, (2, 3), False)
        np.testing.assert_array_equal(y, fn(x, axis=(2, 3)))
        assert np.isnan(y[0, 0])


def test_softmax_nan_or_pos_inf_makes_its_row_nan_neg_inf_gives_zero():
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    x[0, 1], x[1, 2], x[2, 3] = np.nan, np.inf, -np.inf
    y = kred.softmax(x, 1)
    assert np.isnan(y[:2]).all() and np.isfinite(y[2:]).all() and y[2, 3] == 0
    np.testing.assert_allclose(y[3], np.exp(x[3]) / np.exp(x[3]).sum(), rtol=1e-6)


@pytest.mark.parametrize("kind,alpha,beta", [("RELU", 0, 0), ("CLIP", -0.5, 0.5),
                                             ("LEAKY_RELU", 0.2, 0), ("HARD_SIGMOID", 0.2, 0.5),
                                             ("SOFTPLUS", 1.0, 1.0)])
def test_activations_keep_nan(kind, alpha, beta):
    y = kpw.activation(poisoned(), kind, alpha, beta)
    assert np.isnan(y.reshape(-1)[3]) and np.isnan(y).sum() == 1


@pytest.mark.parametrize("op", ["MAX", "MIN"])
def test_elementwise_max_min_nan_if_either_is_nan(op):
    a, b = poisoned(), poisoned(seed=1)[::-1].copy()
    y = kpw.elementwise(a, b, op)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(a) | np.isnan(b))
