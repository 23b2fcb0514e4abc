"""NumPy references for pointwise layers: activations, unary ops, elementwise
binaries, scale, cast and select. Formulas follow TensorRT's layer documentation
(Developer Guide, "Layers" and the operator pages Activation, Unary, ElementWise,
Scale, Cast, Select).

Plain functions of arrays and plain parameters (operation names are the
TensorRT enum member names as strings); nothing here imports the engine.
Floating-point warnings are silenced where TensorRT silently produces inf/NaN
(log of a negative number, division by zero).
"""
import math

import numpy as np
from numpy.polynomial import chebyshev as _cheb

_SQRT2 = math.sqrt(2.0)

# ----------------------------------------------------------------------------
# erf without SciPy (scipy is not a runtime dependency)
#
# Two Chebyshev interpolants, built once at import from math.erf at the
# Chebyshev points (Trefethen, "Approximation Theory and Approximation
# Practice", ch. 4), then evaluated by Horner on blocks that stay in cache:
#
#   |x| <  X0:        erf(x)  = x * P(u),            u = x^2 mapped to [-1, 1]
#   X0 <= |x| < XMAX: erf(x)  = 1 - exp(-x^2) * Q(v), v = |x| mapped to [-1, 1]
#   |x| >= XMAX:      erf(x)  = 1  (erfc(6) < 2.2e-17, below float64 resolution)
#
# erf(x)/x is an entire function of x^2 and erfc(x)*exp(x^2) is smooth and
# slowly varying, so both series converge fast; the degrees below give a max
# abs error below 1e-13 over the real line (checked in the tests against
# math.erf), far under float32's 6e-8 resolution.

_X0, _XMAX = 2.5, 6.0
_DEG_P, _DEG_Q = 16, 18
_BLOCK = 1 << 14     # elements per block: a few float64 temporaries fit in L2


def _erf_over_x(t):
    u = (np.asarray(t) + 1.0) * (0.5 * _X0 * _X0)
    return np.array([math.erf(math.sqrt(v)) / math.sqrt(v) if v > 0 else 2.0 / math.sqrt(math.pi)
                     for v in u])


def _erfc_scaled(t):
    xs = _X0 + (np.asarray(t) + 1.0) * (0.5 * (_XMAX - _X0))
    return np.array([math.erfc(x) * math.exp(x * x) for x in xs])


# power-basis coefficients, highest degree first (Horner order); the change of
# basis on [-1, 1] costs ~1e-14 at these degrees
_P = _cheb.cheb2poly(_cheb.chebinterpolate(_erf_over_x, _DEG_P))[::-1].copy()
_Q = _cheb.cheb2poly(_cheb.chebinterpolate(_erfc_scaled, _DEG_Q))[::-1].copy()


def _horner(t, coeffs):
    y = np.full_like(t, coeffs[0])
    for c in coeffs[1:]:
        y *= t
        y += c
    return y


def _erf_block(x):
    a = np.abs(x)
    near = a < _X0
    if near.all():
        t = a * a
        t *= 2.0 / (_X0 * _X0)
        t -= 1.0
        y = _horner(t, _P)
        y *= a
    else:
        y = np.ones_like(a)
        a1 = a[near]
        y[near] = a1 * _horner(a1 * a1 * (2.0 / (_X0 * _X0)) - 1.0, _P)
        mid = ~near & (a < _XMAX)
        a2 = a[mid]
        y[mid] = 1.0 - np.exp(-a2 * a2) * _horner((a2 - _X0) * (2.0 / (_XMAX - _X0)) - 1.0, _Q)
    return np.copysign(y, x, out=y)


def erf(x):
    """Vectorised erf, accurate to ~1e-13 absolute; same dtype out as in."""
    x = np.asarray(x)
    flat = x.reshape(-1)
    out = np.empty(flat.shape, np.float64)
    for s in range(0, flat.size, _BLOCK):
        out[s:s + _BLOCK] = _erf_block(flat[s:s + _BLOCK].astype(np.float64))
    nan = np.isnan(flat)
    if nan.any():
        out[nan] = np.nan
    return out.reshape(x.shape).astype(x.dtype if x.dtype.kind == "f" else np.float64)


# ----------------------------------------------------------------------------
# activations

def activation(x, kind, alpha=0.0, beta=0.0):
    """y = f(x) for TensorRT's ActivationType names (``kind`` is the member name)."""
    with np.errstate(over="ignore"):
        y = _activation(x, kind, alpha, beta)
    return y.astype(x.dtype, copy=False)


def _activation(x, kind, alpha, beta):
    if kind == "RELU":
        return np.maximum(x, 0)
    if kind == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-x))
    if kind == "TANH":
        return np.tanh(x)
    if kind == "LEAKY_RELU":
        return np.where(x >= 0, x, alpha * x)
    if kind == "ELU":
        return np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0)))
    if kind == "SELU":
        return beta * np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0)))
    if kind == "SOFTSIGN":
        return x / (1.0 + np.abs(x))
    if kind == "SOFTPLUS":
        # alpha * log(exp(beta * x) + 1), computed without overflow
        return alpha * np.logaddexp(0.0, beta * x)
    if kind == "CLIP":
        return np.clip(x, alpha, beta)
    if kind == "HARD_SIGMOID":
        return np.clip(alpha * x + beta, 0.0, 1.0)
    if kind == "SCALED_TANH":
        return alpha * np.tanh(beta * x)
    if kind == "THRESHOLDED_RELU":
        return np.where(x > alpha, x, 0)
    if kind == "GELU_ERF":
        return 0.5 * x * (1.0 + erf(x / _SQRT2))
    if kind == "GELU_TANH":
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x ** 3)))
    raise ValueError(f"unknown activation {kind!r}")


# ----------------------------------------------------------------------------
# unary

_UNARY = {
    "EXP": np.exp, "LOG": np.log, "SQRT": np.sqrt, "RECIP": np.reciprocal,
    "ABS": np.abs, "NEG": np.negative, "SIN": np.sin, "COS": np.cos, "TAN": np.tan,
    "SINH": np.sinh, "COSH": np.cosh, "ASIN": np.arcsin, "ACOS": np.arccos,
    "ATAN": np.arctan, "ASINH": np.arcsinh, "ACOSH": np.arccosh, "ATANH": np.arctanh,
    "CEIL": np.ceil, "FLOOR": np.floor, "ERF": erf, "NOT": np.logical_not,
    "SIGN": np.sign,
    # TensorRT's ROUND (like ONNX Round) rounds halves to even: np.rint does too
    "ROUND": np.rint,
}


def unary(x, op):
    """y = op(x) for TensorRT's UnaryOperation names; dtype preserved."""
    try:
        fn = _UNARY[op]
    except KeyError:
        raise ValueError(f"unknown unary operation {op!r}") from None
    if op == "RECIP" and x.dtype.kind != "f":
        raise ValueError("RECIP needs a floating-point array")
    with np.errstate(all="ignore"):
        return np.asarray(fn(x)).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------
# elementwise binaries

def _int_div_trunc(a, b):
    """Integer division rounding toward zero (C semantics, TensorRT's kDIV on
    INT32); division by zero gives 0 rather than a trap."""
    q = np.floor_divide(a, b)
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return q + fix.astype(q.dtype)


def _int_pow(a, b):
    # float64 holds every int32 exactly; negative exponents truncate toward zero
    return np.trunc(np.power(a.astype(np.float64), b.astype(np.float64)))


_BINARY = {
    "SUM": np.add, "PROD": np.multiply, "MAX": np.maximum, "MIN": np.minimum,
    "SUB": np.subtract, "AND": np.logical_and, "OR": np.logical_or,
    "XOR": np.logical_xor, "EQUAL": np.equal, "GREATER": np.greater, "LESS": np.less,
}
_BOOL_OUT = ("AND", "OR", "XOR", "EQUAL", "GREATER", "LESS")


def elementwise(a, b, op):
    """TensorRT's ElementWise: ``a op b`` with size-1 broadcasting (equal ranks
    are the caller's business). Arithmetic keeps the input dtype; logical
    operations and comparisons return bool."""
    is_int = a.dtype.kind in "iu"
    with np.errstate(all="ignore"):
        if op in _BINARY:
            y = _BINARY[op](a, b)
        elif op == "DIV":
            y = _int_div_trunc(a, b) if is_int else np.true_divide(a, b)
        elif op == "FLOOR_DIV":
            y = np.floor_divide(a, b) if is_int else np.floor(np.true_divide(a, b))
        elif op == "POW":
            y = _int_pow(a, b) if is_int else np.power(a, b)
        else:
            raise ValueError(f"unknown elementwise operation {op!r}")
    return np.asarray(y).astype(np.bool_ if op in _BOOL_OUT else a.dtype, copy=False)


# ----------------------------------------------------------------------------
# scale

def scale(x, mode, shift=None, scale=None, power=None, channel_axis=1):
    """TensorRT's IScaleLayer: y = (x * scale + shift) ** power.

    ``mode`` is "UNIFORM" (one coefficient), "CHANNEL" (one per index of
    ``channel_axis``) or "ELEMENTWISE" (one per element of the dims from
    ``channel_axis`` on). A coefficient given as None takes its identity value.
    """
    if mode == "UNIFORM":
        shape = ()
    elif mode == "CHANNEL":
        shape = (x.shape[channel_axis],) + (1,) * (x.ndim - channel_axis - 1)
    elif mode == "ELEMENTWISE":
        shape = x.shape[channel_axis:]
    else:
        raise ValueError(f"unknown scale mode {mode!r}")

    def coeff(w):
        return None if w is None else np.asarray(w, np.float32).reshape(shape)

    shift, scale, power = coeff(shift), coeff(scale), coeff(power)
    y = x.astype(np.float32)
    if scale is not None:
        y = y * scale
    if shift is not None:
        y = y + shift
    if power is not None:
        with np.errstate(all="ignore"):
            y = np.power(y, power)
    return y.astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------
# cast and select

def cast(x, dtype):
    """TensorRT's ICastLayer. Float -> integer truncates toward zero (the
    operator page's example: 5.6 -> 5), saturates at the integer range and
    maps NaN to 0; anything -> bool is ``x != 0``."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return x != 0
    if x.dtype.kind == "f" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        y = np.nan_to_num(np.trunc(x.astype(np.float64)), nan=0.0,
                          posinf=info.max, neginf=info.min)
        return np.clip(y, info.min, info.max).astype(dtype)
    if x.dtype.kind in "iu" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(x, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def select(condition, a, b):
    """TensorRT's ISelectLayer: a where condition else b, all three broadcast."""
    return np.where(condition, a, b)
