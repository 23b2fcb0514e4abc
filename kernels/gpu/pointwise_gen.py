"""Fused pointwise chains: a list of ops becomes one generated CuPy ElementwiseKernel.

An op is plain data (a tuple), applied in order to the running value ``v``
(FP32 arithmetic whatever the storage type):

    ("act", name, alpha, beta)          TensorRT activation (kernels/gpu/activation.py)
    ("unary", name)                     EXP LOG SQRT RECIP ABS NEG SIN COS TAN SINH COSH
                                        ASIN ACOS ATAN ASINH ACOSH ATANH CEIL FLOOR ERF
                                        SIGN ROUND
    ("const", op, value)                v = v op value   (op: SUM PROD MAX MIN SUB DIV POW)
    ("rconst", op, value)               v = value op v
    ("channel", scale, shift, power)    v = (v * scale[c] + shift[c]) ** power[c]; any of
                                        the three may be None (TensorRT Scale, CHANNEL mode)
    ("tensor", op, array)               v = v op t[i]    (t: same shape as x)

``channel`` needs to know where the channel axis is: ``channel_axis`` of the
call (default -1, NHWC). The generated source depends only on the op kinds
and names, not on the constants (passed as arguments), so one kernel serves
every layer with the same chain shape; kernels are memoized on that
signature, and at debug level 3 or more (``compile.set_debug_level``; the engine's
CUPYRT_DEBUG) the log shows the generated code.
"""
from __future__ import annotations

import hashlib
import logging
import math

import numpy as np

from .activation import act_code
from .compile import debug_level, read_source
from .errors import UnsupportedError

log = logging.getLogger("cupyrt.kernels.gpu")

UNARY_OPS = {
    "EXP": "expf(v)", "LOG": "logf(v)", "SQRT": "sqrtf(v)", "RECIP": "1.f / v",
    "ABS": "fabsf(v)", "NEG": "-v", "SIN": "sinf(v)", "COS": "cosf(v)", "TAN": "tanf(v)",
    "SINH": "sinhf(v)", "COSH": "coshf(v)", "ASIN": "asinf(v)", "ACOS": "acosf(v)",
    "ATAN": "atanf(v)", "ASINH": "asinhf(v)", "ACOSH": "acoshf(v)", "ATANH": "atanhf(v)",
    "CEIL": "ceilf(v)", "FLOOR": "floorf(v)", "ERF": "erff(v)",
    "SIGN": "(v > 0.f ? 1.f : (v < 0.f ? -1.f : 0.f))", "ROUND": "rintf(v)",
}
_BINARY = {
    "SUM": "({a} + {b})", "PROD": "({a} * {b})", "MAX": "max_nan({a}, {b})",
    "MIN": "min_nan({a}, {b})", "SUB": "({a} - {b})", "DIV": "({a} / {b})",
    "POW": "powf({a}, {b})",
}
# MAX/MIN: common.cuh's NaN-propagating forms (TF's Maximum/Minimum give NaN if either
# operand is NaN; fmaxf/fminf would return the other operand)
_kernels: dict = {}


def _binary(op, a, b):
    try:
        return _BINARY[op].format(a=a, b=b)
    except KeyError:
        raise UnsupportedError(f"binary op {op!r}; valid: {', '.join(_BINARY)}") from None


def generate(ops, in_dtype, out_dtype):
    """(signature, in_params, out_params, body, preamble, args-builder) for a chain."""
    # CuPy takes only single-letter type names as placeholders (longer ones
    # are parsed as dtypes: "U1" became <U1), so tensor operands get U, V, W...
    in_params = ["T x"]
    letters = iter("UVWXYZABCDEFGHIJKLMNPQRS")
    body = ["float v = (float)x;"]
    arg_fns = []
    sig = [np.dtype(in_dtype).str, np.dtype(out_dtype).str]
    for j, op in enumerate(ops):
        kind = op[0]
        if kind == "act":
            _, name, alpha, beta = (tuple(op) + (0.0, 0.0))[:4]
            code = act_code(name)
            in_params += [f"float32 a{j}", f"float32 b{j}"]
            body.append(f"v = apply_act(v, {code}, a{j}, b{j});")
            arg_fns.append(lambda cp, a=alpha, b=beta: [np.float32(a), np.float32(b)])
            sig.append(f"act{code}")
        elif kind == "unary":
            try:
                expr = UNARY_OPS[op[1]]
            except KeyError:
                raise UnsupportedError(f"unary op {op[1]!r}; valid: {', '.join(UNARY_OPS)}") from None
            body.append(f"v = {expr};")
            sig.append(op[1])
        elif kind in ("const", "rconst"):
            _, bop, value = op
            in_params.append(f"float32 k{j}")
            body.append("v = " + (_binary(bop, "v", f"k{j}") if kind == "const"
                                  else _binary(bop, f"k{j}", "v")) + ";")
            arg_fns.append(lambda cp, val=value: [np.float32(val)])
            sig.append(f"{kind}{bop}")
        elif kind == "channel":
            _, scale, shift, power = (tuple(op) + (None, None, None))[:4]
            parts = []
            for nm, arr in (("s", scale), ("h", shift), ("p", power)):
                if arr is not None:
                    in_params.append(f"raw float32 {nm}{j}")
                    arg_fns.append(lambda cp, a=arr: [cp.ascontiguousarray(cp.asarray(a, cp.float32))])
                    parts.append(nm)
            body.append("{ int c = (int)((i / inner) % nch);")
            if "s" in parts:
                body.append(f"  v = v * s{j}[c];")
            if "h" in parts:
                body.append(f"  v = v + h{j}[c];")
            if "p" in parts:
                body.append(f"  v = powf(v, p{j}[c]);")
            body.append("}")
            sig.append("ch" + "".join(parts))
        elif kind == "tensor":
            _, bop, arr = op
            in_params.append(f"{next(letters)} t{j}")
            body.append("v = " + _binary(bop, "v", f"(float)t{j}") + ";")
            arg_fns.append(lambda cp, a=arr: [a])
            sig.append(f"t{bop}{np.dtype(arr.dtype).str}")
        else:
            raise UnsupportedError(f"pointwise op kind {kind!r}; valid: act, unary, const, "
                                   f"rconst, channel, tensor")
    in_params += ["int64 inner", "int64 nch"]
    body.append("y = (O)v;")
    return tuple(sig), ", ".join(in_params), "O y", "\n".join(body), arg_fns


def pointwise_chain(x, ops, *, out_dtype=None, channel_axis=-1, out=None):
    """Apply ``ops`` to ``x`` in one kernel. x: float16/float32 CuPy array; returns new array."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    if x.dtype not in (np.float16, np.float32):
        raise UnsupportedError(f"pointwise chain: dtype {x.dtype}; valid: float16, float32")
    out_dtype = np.dtype(out_dtype or x.dtype)
    x = cp.ascontiguousarray(x)
    for op in ops:
        if op[0] == "tensor" and tuple(op[2].shape) != x.shape:
            raise UnsupportedError(f"tensor operand {op[2].shape}; expected {x.shape}")
    sig, in_params, out_params, body, arg_fns = generate(ops, x.dtype, out_dtype)
    kern = _kernels.get(sig)
    if kern is None:
        preamble = read_source("common.cuh").replace("#pragma once", "")
        name = "cupyrt_pw_" + hashlib.sha1(repr(sig).encode()).hexdigest()[:12]
        if debug_level() >= 3:
            log.debug("pointwise chain %s:\n%s", sig, body)
        kern = cp.ElementwiseKernel(in_params, out_params, body, name, preamble=preamble)
        _kernels[sig] = kern
    ax = channel_axis % x.ndim if x.ndim else 0
    nch = x.shape[ax] if x.ndim else 1
    inner = math.prod(x.shape[ax + 1:]) if x.ndim else 1
    args = [x]
    for fn in arg_fns:
        args += fn(cp)
    args += [np.int64(inner), np.int64(nch)]
    if out is None:
        out = cp.empty(x.shape, dtype=out_dtype)
    kern(*args, out)
    return out
