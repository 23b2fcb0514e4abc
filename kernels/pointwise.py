"""NumPy references for pointwise layers: activations, unary ops, elementwise
binaries, scale. Formulas follow TensorRT's layer documentation."""
import math

import numpy as np

_SQRT2 = math.sqrt(2.0)


def _erf(x):
    # vectorised erf without SciPy (scipy is not a runtime dependency)
    return np.frompyfunc(math.erf, 1, 1)(x).astype(x.dtype) if x.size < 4096 else _erf_fast(x)


def _erf_fast(x):
    # Abramowitz & Stegun 7.1.26 is only 1.5e-7 accurate; refine with float64
    # math.erf on a vectorised path keeps FP32 exact enough: use np.vectorize.
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


def erf(x):
    x = np.asarray(x)
    return _erf(x.astype(np.float64)).astype(x.dtype)


def activation(x, kind, alpha=0.0, beta=0.0):
    """y = f(x) for TensorRT's ActivationType names (``kind`` is the member name)."""
    if kind == "RELU":
        return np.maximum(x, 0).astype(x.dtype)
    if kind == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)
    if kind == "TANH":
        return np.tanh(x)
    if kind == "LEAKY_RELU":
        return np.where(x >= 0, x, alpha * x).astype(x.dtype)
    if kind == "ELU":
        return np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype)
    if kind == "SELU":
        return (beta * np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0)))).astype(x.dtype)
    if kind == "SOFTSIGN":
        return (x / (1.0 + np.abs(x))).astype(x.dtype)
    if kind == "SOFTPLUS":
        # alpha * log(exp(beta * x) + 1), computed without overflow
        return (alpha * np.logaddexp(0.0, beta * x)).astype(x.dtype)
    if kind == "CLIP":
        return np.clip(x, alpha, beta).astype(x.dtype)
    if kind == "HARD_SIGMOID":
        return np.clip(alpha * x + beta, 0.0, 1.0).astype(x.dtype)
    if kind == "SCALED_TANH":
        return (alpha * np.tanh(beta * x)).astype(x.dtype)
    if kind == "THRESHOLDED_RELU":
        return np.where(x > alpha, x, 0).astype(x.dtype)
    if kind == "GELU_ERF":
        return (0.5 * x * (1.0 + erf(x / _SQRT2))).astype(x.dtype)
    if kind == "GELU_TANH":
        c = math.sqrt(2.0 / math.pi)
        return (0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x ** 3)))).astype(x.dtype)
    raise ValueError(f"unknown activation {kind!r}")
