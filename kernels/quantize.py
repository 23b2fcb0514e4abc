"""INT8: calibration statistics and the exact integer arithmetic of INT8 layers.

Two halves, plain arrays and plain parameters only (kernels/ is a leaf):

Calibration (NumPy, host side) -- the thresholds TensorRT's calibrators pick:

* ``abs_histogram``: 2048 equal bins of |x| over [0, amax].
* ``kl_threshold``: TensorRT's EntropyCalibrator2 (Migacz, "8-bit Inference
  with TensorRT", GTC 2017): for every candidate i in [128, 2048], the reference
  P is the first i bins with the tail mass folded into bin i-1; the candidate Q
  is the first i bins (without the tail) merged into 128 levels and expanded
  back uniformly over the bins that were non-empty; threshold = (argmin_i
  KL(P||Q) + 0.5) * bin_width.
* ``percentile_threshold``: the upper edge of the bin where the cumulative
  count reaches the percentile.

The INT8 contract (array-module generic: the same bodies run on CuPy arrays,
and a GPU kernel must reproduce them bit for bit)::

    scale s of a tensor    s = float32(amax) / float32(127)    amax = max(|lo|, |hi|)
    quantize x -> q        inv = float32(1) / s ;  v = float32(x) * inv   (float32 ops)
                           q = saturate_int8(rint(v))   rint: half to even (cvt.rni)
                           saturate to [-128, 127]
    dequantize q -> x      float32(q) * s
    weights (per output channel k, done once on the host by ``quantize_weights``)
                           s_w[k] = float32(max|w_k|) / float32(127)   (1 if w_k == 0)
                           q_w = clip(rint(w / s_w), -127, 127)          (float32 ops)
    accumulate             acc = sum q_x * q_w  exactly (int32 on the GPU)
    epilogue (float32; fma32 is a fused multiply-add, one rounding: __fmaf_rn)
                           a[k] = float32(s_in) * s_w[k] ; b[k] = bias[k] (0 without)
                           rs = s_res (an INT8 residual: its codes are the values),
                                1 (a float residual)
                           folded (int8 out, ReLU or no activation): a, b and rs are
                                each multiplied by inv = float32(1) / s_out, so y is
                                in code units
                           y = fma32(float32(acc), a[k], b[k])
                           y = fma32(residual, rs, y)   (with a residual)
                           folded: q = saturate_int8(rint(max(y, 0) or y))
                           else:   y = act(y) ; then quantize(y, s_out) or keep float
"""
import itertools

import numpy as np

from .conv import im2col_matmul
from .pointwise import activation
from .xp import array_module, errstate

NUM_BINS = 2048          # TensorRT's histogram resolution
NUM_LEVELS = 128         # quantized levels of |x| (symmetric INT8: 0..127)
START_BIN = 128          # the smallest candidate threshold, in bins
KL_EPS = 1e-4            # smoothing of empty Q bins where P has mass (see kl_divergence)
QMIN, QMAX = -128, 127


# ----------------------------------------------------------------------------
# calibration statistics (NumPy or CuPy arrays in, host numbers out)

def abs_histogram(x, amax, bins=NUM_BINS, drop_zeros=False):
    """Counts of |x| in ``bins`` equal bins over [0, amax]; values at or above
    amax land in the last bin. amax <= 0 puts everything in bin 0.

    ``drop_zeros``: leave exact zeros out. The entropy calibrator uses it: a
    ReLU output's spike of zeros sits in bin 0, and once candidates merge two
    bins per level (i >= 256) that spike alone dominates KL(P||Q), pulling the
    threshold under 256 bins whatever the rest of the distribution looks like.
    Exact zeros quantize exactly at every scale, so they carry no information
    about the threshold (pytorch-quantization patches bin 0 for the same reason).
    """
    if array_module(x) is not np:
        if amax > 0 and x.dtype in (np.float32, np.float16) and bins <= 8192:
            # counted on the device in one kernel; the counts come back
            from .gpu.quantize_int8 import abs_histogram as on_device
            return on_device(x, amax, bins, drop_zeros)
        x = x.get()                 # the rare rest (an all-zero tensor) on the host
    a = np.abs(np.asarray(x, dtype=np.float32)).ravel()
    if drop_zeros:
        a = a[a != 0]
    if amax <= 0:
        out = np.zeros(bins, np.int64)
        out[0] = a.size
        return out
    idx = np.minimum((a * np.float32(bins / amax)).astype(np.int64), bins - 1)
    return np.bincount(idx, minlength=bins).astype(np.int64)


def abs_max(x):
    """max |x| as a Python float (0.0 for an empty array; nan when x holds one), on the
    array's own device."""
    if x.size == 0:
        return 0.0
    xp = array_module(x)
    return float(xp.max(xp.abs(x)))


def _smooth(p, eps=KL_EPS):
    """Give empty bins ``eps`` of mass, taken evenly from the non-empty ones
    (MXNet's _smooth_distribution, on normalised distributions)."""
    zeros = p == 0
    nz = p.size - int(zeros.sum())
    if nz == 0 or not zeros.any():
        return p
    return p + eps * zeros - (eps * (p.size - nz) / nz) * (~zeros)


def kl_divergence(p, q):
    """KL(P || Q) of two count vectors, each normalised; Q smoothed where P has
    mass and Q none (else the divergence is infinite)."""
    p = p / p.sum()
    q = q / q.sum() if q.sum() > 0 else q
    q = np.where((p > 0) & (q == 0), KL_EPS, q)
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def candidate_distributions(hist, i, levels=NUM_LEVELS):
    """(P, Q) for candidate threshold bin count ``i``, as counts.

    Merging i bins into ``levels`` levels: level j covers bins
    [j*m, (j+1)*m), m = i // levels, the last level also the remainder
    (MXNet's and the GTC talk's layout)::

        bins  |0 .. m-1|m .. 2m-1| ... |(L-1)m .. i-1|
        level     0          1             L-1
    """
    hist = np.asarray(hist, dtype=np.float64)
    p = hist[:i].copy()
    p[i - 1] += hist[i:].sum()
    q_src = hist[:i]
    m = i // levels
    starts = np.arange(levels) * m
    stops = np.append(starts[1:], i)
    cs = np.concatenate(([0.0], np.cumsum(q_src)))
    nz = np.concatenate(([0], np.cumsum(q_src != 0)))
    sums, counts = cs[stops] - cs[starts], nz[stops] - nz[starts]
    level_of_bin = np.minimum(np.arange(i) // m, levels - 1)
    per_bin = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)[level_of_bin]
    q = np.where(q_src != 0, per_bin, 0.0)
    return p, q


def kl_divergences(hist, start=START_BIN, levels=NUM_LEVELS):
    """KL(P_i || Q_i) for every candidate i in [start, len(hist)]: what
    ``kl_divergence(*candidate_distributions(hist, i, levels))`` gives for each i, from
    prefix sums instead of two distributions per candidate (ResNet-50's calibration
    computes about 2,000 candidates for each of its tensors).

    With h the counts, T their total, S_i = h[0] + ... + h[i-1] and a_j the mean of the
    non-empty bins of level j (P normalised by T, Q by S_i, as the per-candidate form):
    every bin b < i - 1 with h_b > 0 adds (h_b / T) (log h_b - log a_lev(b) + log S_i - log T),
    so their sum is (1/T) (sum h log h - sum_j L_j log a_j + h_{i-1} log a_last
    + (log S_i - log T) sum h), with L_j a level's count; the last bin, which also holds
    the clipped tail, is added on its own (Q's smoothing where it is empty). Candidates
    whose distributions are equal (thresholds inside an empty stretch of the histogram)
    get equal values here, so ``kl_threshold`` takes the first of them; the definition
    (``kl_divergences_by_definition``) left them 1e-16 apart in an order set by rounding."""
    h = np.asarray(hist, dtype=np.float64)
    n = len(h)
    total = h.sum()
    cands = np.arange(start, n + 1)
    if total == 0 or len(cands) == 0:
        return np.zeros(len(cands))
    cs = np.concatenate(([0.0], np.cumsum(h)))
    nz = np.concatenate(([0], np.cumsum(h != 0)))
    hlogh = np.concatenate(([0.0], np.cumsum(np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0))))
    m = cands // levels                                             # bins per level
    lo = np.arange(levels)[None, :] * m[:, None]                    # [candidate, level]
    hi = np.where(np.arange(levels)[None, :] == levels - 1, cands[:, None], lo + m[:, None])
    lsum, lcnt = cs[hi] - cs[lo], nz[hi] - nz[lo]
    mean = np.where(lcnt > 0, lsum / np.maximum(lcnt, 1), 1.0)
    lsumlog = (np.where(lcnt > 0, lsum * np.log(mean), 0.0)).sum(axis=1)
    last = h[cands - 1]                                             # bin i - 1 (in the last level)
    s = cs[cands]
    k = cands - 1                                                   # bins before the last
    inner = np.zeros(len(cands))
    ok = s > 0
    log_st = np.log(np.where(ok, s, 1.0)) - np.log(total)
    inner[ok] = ((hlogh[k] - (lsumlog - np.where(last > 0, last * np.log(mean[:, -1]), 0.0))
                  + log_st * cs[k]) / total)[ok]
    p_last = (last + (total - s)) / total
    q_last = np.where(last > 0, mean[:, -1] / np.where(ok, s, 1.0), KL_EPS)
    tail = np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0) / q_last), 0.0)
    return inner + tail


def kl_divergences_by_definition(hist, start=START_BIN, levels=NUM_LEVELS):
    """``kl_divergences`` by its definition: each candidate's two distributions built
    and compared (``candidate_distributions``, ``kl_divergence``), one candidate at a
    time; the reference the fast form is tested and timed against."""
    return np.array([kl_divergence(*candidate_distributions(hist, i, levels))
                     for i in range(start, len(hist) + 1)])


MAX_CLIPPED = 0.01


def kl_threshold(hist, bin_width, start=START_BIN, levels=NUM_LEVELS, divergences=kl_divergences):
    """TensorRT's entropy threshold: (argmin_i KL + 0.5) * bin_width (the first
    minimum on ties). A histogram shorter than ``start`` bins is not clipped.
    ``divergences``: how the candidates' KL values are computed (the definition, to
    compare)."""
    hist = np.asarray(hist)
    if len(hist) < start or hist.sum() == 0:
        return len(hist) * bin_width
    # Guard (our deviation from TensorRT): never consider a threshold that clips more
    # than MAX_CLIPPED of the values. On a coarsely discrete tensor (8-bit pixels
    # scaled to [0, 1] take 17 values) every candidate holding one spike has
    # divergence 0 and the published algorithm keeps 1/16 of the range, clipping
    # almost everything; on continuous data the optimum clips far less than this.
    cum = np.cumsum(hist)
    first = int(np.searchsorted(cum, (1.0 - MAX_CLIPPED) * cum[-1]))
    start = max(start, min(first, len(hist) - 1))
    div = divergences(hist, start, levels)
    return (start + int(np.argmin(div)) + 0.5) * bin_width


def percentile_threshold(hist, bin_width, percentile):
    """Upper edge of the first bin at which the cumulative count reaches
    ``percentile`` percent of the total."""
    cum = np.cumsum(np.asarray(hist, dtype=np.float64))
    if cum[-1] == 0:
        return len(cum) * bin_width
    k = int(np.searchsorted(cum, cum[-1] * percentile / 100.0))
    return (min(k, len(cum) - 1) + 1) * bin_width


# ----------------------------------------------------------------------------
# the INT8 contract (array-module generic)

def scale_from_amax(amax):
    return np.float32(amax) / np.float32(127.0)


def quantize(x, scale):
    """float -> int8: saturate(rint(x * (1/s))), float32 throughout."""
    xp = array_module(x)
    inv = np.float32(1.0) / np.float32(scale)
    v = xp.asarray(x, dtype=xp.float32) * inv
    return xp.clip(xp.rint(v), QMIN, QMAX).astype(xp.int8)


def dequantize(q, scale):
    xp = array_module(q)
    return q.astype(xp.float32) * np.float32(scale)


def quantize_weights(w):
    """Symmetric per-output-channel (axis 0) weights: (q int8, s_w float32 (K,))."""
    w = np.asarray(w, dtype=np.float32)
    k = w.shape[0]
    amax = np.abs(w.reshape(k, -1)).max(axis=1)
    s = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(w / s.reshape((k,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
    return q, s


def conv_int8(xq, wq, stride, pre, out_spatial, dilation, groups):
    """Exact integer accumulators of a convolution of int8 x (N, C, *S) with int8
    w (K, C/groups, *window), as float64 (integer-valued: every partial sum is
    below 2^53, so float64 BLAS is exact); the float path's im2col + matmul."""
    return im2col_matmul(xq, wq, stride, pre, out_spatial, dilation, groups, np.float64)


def conv_int8_direct(xq, wq, stride, pre, out_spatial, dilation, groups):
    """The same accumulators by a direct loop in int64 (NumPy): the test oracle."""
    x = np.asarray(xq, np.int64)
    w = np.asarray(wq, np.int64)
    n, c = x.shape[:2]
    k, window = w.shape[0], w.shape[2:]
    cg, kg = c // groups, k // groups
    acc = np.zeros((n, k) + tuple(out_spatial), np.int64)
    for o in itertools.product(*(range(d) for d in out_spatial)):
        for tap in itertools.product(*(range(r) for r in window)):
            pos = [oi * s + ti * d - p for oi, s, ti, d, p in zip(o, stride, tap, dilation, pre)]
            if any(q < 0 or q >= dim for q, dim in zip(pos, x.shape[2:])):
                continue
            for g in range(groups):
                xs = x[(slice(None), slice(g * cg, (g + 1) * cg)) + tuple(pos)]     # (N, cg)
                ws = w[(slice(g * kg, (g + 1) * kg), slice(None)) + tap]           # (kg, cg)
                acc[(slice(None), slice(g * kg, (g + 1) * kg)) + o] += xs @ ws.T
    return acc


def gemm_int8(xq2d, wq2d):
    """Exact accumulators of (M, C) int8 x (K, C) int8 -> (M, K), as float64."""
    xp = array_module(xq2d, wq2d)
    return xp.matmul(xp.asarray(xq2d).astype(xp.float64), xp.asarray(wq2d).astype(xp.float64).T)


def fma32(a, b, c):
    """float32 a * b + c with one rounding (a fused multiply-add, the GPU's ``__fmaf_rn``),
    exactly, from float64: a * b is exact there (24 + 24 significant bits); the sum is
    rounded to odd (TwoSum's error term says which way the float64 sum was rounded), and a
    value rounded to odd with 29 extra bits rounds to float32 as the exact sum would."""
    xp = array_module(a)
    a64, b64, c64 = (xp.asarray(v, dtype=xp.float32).astype(xp.float64) for v in (a, b, c))
    p = a64 * b64
    with errstate(xp, invalid="ignore", over="ignore"):
        s = p + c64
        bb = s - p
        err = (p - (s - bb)) + (c64 - bb)
        even = (s.view(xp.int64) & 1) == 0
        step = xp.isfinite(s) & (err != 0) & even
        s = xp.where(step, xp.nextafter(s, xp.where(err > 0, xp.inf, -xp.inf)), s)
        return s.astype(xp.float32)


def epilogue_coefficients(s_in, s_w, bias=None, s_res=None, s_out=None, act=None):
    """The per-channel float32 coefficients of ``epilogue_int8`` (and of the GPU's
    int8_epilogue.cuh): (a, b, rs, folded). rs is the residual's multiplier: s_res for an
    INT8 residual's codes, else 1; folded (int8 out with ReLU or no activation) multiplies
    a, b and rs by float32(1) / s_out."""
    a = (np.float32(s_in) * np.asarray(s_w, np.float32)).astype(np.float32)
    b = np.zeros_like(a) if bias is None else np.asarray(bias, np.float32).reshape(a.shape)
    rs = np.float32(1.0) if s_res is None else np.float32(s_res)
    folded = s_out is not None and act in (None, "RELU")
    if folded:
        inv = np.float32(1.0) / np.float32(s_out)
        a, b, rs = (a * inv).astype(np.float32), (b * inv).astype(np.float32), np.float32(rs * inv)
    return a, b, rs, folded


def epilogue_int8(acc, s_in, s_w, bias=None, residual=None, act=None, alpha=0.0, beta=0.0,
                  s_out=None, channel_axis=1):
    """The fused tail of an INT8 conv/FC (see the module docstring): per-channel
    dequantisation, bias, residual, activation, then int8 at ``s_out`` (or float32
    when ``s_out`` is None). ``residual``: float, or a pair (int8 q, scale)."""
    xp = array_module(acc)
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    s_res = None
    if isinstance(residual, tuple):
        residual, s_res = residual
    a, b, rs, folded = epilogue_coefficients(s_in, s_w, bias, s_res, s_out, act)
    y = fma32(acc.astype(xp.float32), xp.asarray(a).reshape(shape), xp.asarray(b).reshape(shape))
    if residual is not None:
        y = fma32(residual.astype(xp.float32, copy=False), rs, y)
    if folded:
        if act == "RELU":
            y = xp.fmax(y, np.float32(0.0))
        return xp.clip(xp.rint(y), QMIN, QMAX).astype(xp.int8)
    if act is not None:
        y = activation(y, act, alpha, beta)
    return y if s_out is None else quantize(y, s_out)
