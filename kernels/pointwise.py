"""NumPy references for pointwise layers: activations, unary ops, elementwise
binaries, scale, cast and select. Formulas follow TensorRT's layer documentation
(Developer Guide, "Layers" and the operator pages Activation, Unary, ElementWise,
Scale, Cast, Select).

Plain functions of arrays and plain parameters (operation names are the
TensorRT enum member names as strings); nothing here imports the engine.
Floating-point warnings are silenced where TensorRT silently produces inf/NaN
(log of a negative number, division by zero).

Every function is array-module generic (``kernels.xp``): given CuPy arrays it
computes on the device with the same code.
"""
import math

import numpy as np
from numpy.polynomial import chebyshev as _cheb

from .xp import array_module, errstate

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
# math.erf), far under float32's 6e-8 resolution. The coefficients are host
# constants (Python floats), usable by either array module.

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
_P = tuple(float(c) for c in _cheb.cheb2poly(_cheb.chebinterpolate(_erf_over_x, _DEG_P))[::-1])
_Q = tuple(float(c) for c in _cheb.cheb2poly(_cheb.chebinterpolate(_erfc_scaled, _DEG_Q))[::-1])


def _horner(xp, t, coeffs):
    y = xp.full_like(t, coeffs[0])
    for c in coeffs[1:]:
        y *= t
        y += c
    return y


def _erf_block(xp, x):
    """erf of a float64 block. Both series are plain elementwise arithmetic, so
    evaluating them everywhere and choosing with ``where`` gives, element by
    element, the same bits as evaluating each on its own subset; NaN falls
    through to the tail series and stays NaN. NumPy skips the tail series
    when no element needs it (the usual case: activations are small); that
    test would cost the device a host synchronisation, so it always pays."""
    a = xp.abs(x)
    near = a < _X0
    t = a * a
    t *= 2.0 / (_X0 * _X0)
    t -= 1.0
    y = _horner(xp, t, _P)
    y *= a
    if xp is not np or not near.all():
        tail = 1.0 - xp.exp(-a * a) * _horner(xp, (a - _X0) * (2.0 / (_XMAX - _X0)) - 1.0, _Q)
        y = xp.where(near, y, xp.where(a >= _XMAX, 1.0, tail))
    return xp.copysign(y, x, out=y)


def erf(x):
    """Vectorised erf, accurate to ~1e-13 absolute; same dtype out as in."""
    xp = array_module(x)
    x = xp.asarray(x)
    flat = x.reshape(-1)
    out = xp.empty(flat.shape, xp.float64)
    # NumPy works block by block to stay in cache; the device takes it in one pass
    block = _BLOCK if xp is np else max(1, flat.size)
    with errstate(xp, over="ignore", invalid="ignore"):    # series far outside their range
        for s in range(0, flat.size, block):
            out[s:s + block] = _erf_block(xp, flat[s:s + block].astype(xp.float64))
    return out.reshape(x.shape).astype(x.dtype if x.dtype.kind == "f" else xp.float64)


# ----------------------------------------------------------------------------
# activations

def activation(x, kind, alpha=0.0, beta=0.0):
    """y = f(x) for TensorRT's ActivationType names (``kind`` is the member name)."""
    xp = array_module(x)
    # NaN/Inf inputs give NaN/Inf outputs as in TensorFlow, without warnings
    with errstate(xp, over="ignore", invalid="ignore"):
        y = _activation(xp, x, kind, alpha, beta)
    return y.astype(x.dtype, copy=False)


def _activation(xp, x, kind, alpha, beta):
    if kind == "RELU":
        return xp.maximum(x, 0)
    if kind == "SIGMOID":
        return 1.0 / (1.0 + xp.exp(-x))
    if kind == "TANH":
        return xp.tanh(x)
    if kind == "LEAKY_RELU":
        return xp.where(x >= 0, x, alpha * x)
    if kind == "ELU":
        return xp.where(x >= 0, x, alpha * xp.expm1(xp.minimum(x, 0)))
    if kind == "SELU":
        return beta * xp.where(x >= 0, x, alpha * xp.expm1(xp.minimum(x, 0)))
    if kind == "SOFTSIGN":
        return x / (1.0 + xp.abs(x))
    if kind == "SOFTPLUS":
        # alpha * log(exp(beta * x) + 1), computed without overflow
        return alpha * xp.logaddexp(0.0, beta * x)
    if kind == "CLIP":
        return xp.clip(x, alpha, beta)
    if kind == "HARD_SIGMOID":
        return xp.clip(alpha * x + beta, 0.0, 1.0)
    if kind == "SCALED_TANH":
        return alpha * xp.tanh(beta * x)
    if kind == "THRESHOLDED_RELU":
        return xp.where(x > alpha, x, 0)
    if kind == "GELU_ERF":
        return 0.5 * x * (1.0 + erf(x / _SQRT2))
    if kind == "GELU_TANH":
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + xp.tanh(c * (x + 0.044715 * x ** 3)))
    raise ValueError(f"unknown activation {kind!r}")


# ----------------------------------------------------------------------------
# unary

# operation -> name of the ufunc in the array module (NumPy and CuPy agree), or
# a function of this module
_UNARY = {
    "EXP": "exp", "LOG": "log", "SQRT": "sqrt", "RECIP": "reciprocal",
    "ABS": "abs", "NEG": "negative", "SIN": "sin", "COS": "cos", "TAN": "tan",
    "SINH": "sinh", "COSH": "cosh", "ASIN": "arcsin", "ACOS": "arccos",
    "ATAN": "arctan", "ASINH": "arcsinh", "ACOSH": "arccosh", "ATANH": "arctanh",
    "CEIL": "ceil", "FLOOR": "floor", "ERF": erf, "NOT": "logical_not",
    "SIGN": "sign",
    # TensorRT's ROUND (like ONNX Round) rounds halves to even: rint does too
    "ROUND": "rint",
}


def unary(x, op):
    """y = op(x) for TensorRT's UnaryOperation names; dtype preserved."""
    try:
        fn = _UNARY[op]
    except KeyError:
        raise ValueError(f"unknown unary operation {op!r}") from None
    if op == "RECIP" and x.dtype.kind != "f":
        raise ValueError("RECIP needs a floating-point array")
    xp = array_module(x)
    if isinstance(fn, str):
        fn = getattr(xp, fn)
    with errstate(xp, all="ignore"):
        return xp.asarray(fn(x)).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------
# elementwise binaries

def _int_div_trunc(xp, a, b):
    """Integer division rounding toward zero (C semantics, TensorRT's kDIV on
    INT32); division by zero gives 0 rather than a trap."""
    q = xp.floor_divide(a, b)
    fix = (xp.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return q + fix.astype(q.dtype)


def _int_pow(xp, a, b):
    # float64 holds every int32 exactly; negative exponents truncate toward zero.
    # A non-negative exponent gives an integer, which the device's pow may miss
    # by an ulp (CUDA: (-19.0) ** 3.0 = -6858.999...), so it is rounded, not
    # truncated (NumPy's pow is exact there: the same result).
    p = xp.power(a.astype(xp.float64), b.astype(xp.float64))
    return xp.where(b >= 0, xp.rint(p), xp.trunc(p))


# operation -> ufunc name in the array module
_BINARY = {
    "SUM": "add", "PROD": "multiply", "MAX": "maximum", "MIN": "minimum",
    "SUB": "subtract", "AND": "logical_and", "OR": "logical_or",
    "XOR": "logical_xor", "EQUAL": "equal", "GREATER": "greater", "LESS": "less",
}
_BOOL_OUT = ("AND", "OR", "XOR", "EQUAL", "GREATER", "LESS")


def elementwise(a, b, op):
    """TensorRT's ElementWise: ``a op b`` with size-1 broadcasting (equal ranks
    are the caller's business). Arithmetic keeps the input dtype; logical
    operations and comparisons return bool."""
    xp = array_module(a, b)
    is_int = a.dtype.kind in "iu"
    with errstate(xp, all="ignore"):
        if op in _BINARY:
            y = getattr(xp, _BINARY[op])(a, b)
        elif op == "DIV":
            y = _int_div_trunc(xp, a, b) if is_int else xp.true_divide(a, b)
        elif op == "FLOOR_DIV":
            y = xp.floor_divide(a, b) if is_int else xp.floor(xp.true_divide(a, b))
        elif op == "POW":
            y = _int_pow(xp, a, b) if is_int else xp.power(a, b)
        else:
            raise ValueError(f"unknown elementwise operation {op!r}")
    return xp.asarray(y).astype(xp.bool_ if op in _BOOL_OUT else a.dtype, copy=False)


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

    xp = array_module(x, shift, scale, power)

    def coeff(w):
        # host coefficients (a layer not cloned to the device) move over here
        return None if w is None else xp.asarray(w, xp.float32).reshape(shape)

    shift, scale, power = coeff(shift), coeff(scale), coeff(power)
    y = x.astype(xp.float32)
    if scale is not None:
        y = y * scale
    if shift is not None:
        y = y + shift
    if power is not None:
        with errstate(xp, all="ignore"):
            y = xp.power(y, power)
    return y.astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------
# cast and select

def cast(x, dtype):
    """TensorRT's ICastLayer. Float -> integer truncates toward zero (the
    operator page's example: 5.6 -> 5), saturates at the integer range and
    maps NaN to 0; anything -> bool is ``x != 0``."""
    xp = array_module(x)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return x != 0
    if x.dtype.kind == "f" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        y = xp.nan_to_num(xp.trunc(x.astype(xp.float64)), nan=0.0,
                          posinf=info.max, neginf=info.min)
        return xp.clip(y, info.min, info.max).astype(dtype)
    if x.dtype.kind in "iu" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        return xp.clip(x, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def select(condition, a, b):
    """TensorRT's ISelectLayer: a where condition else b, all three broadcast."""
    return array_module(condition, a, b).where(condition, a, b)
