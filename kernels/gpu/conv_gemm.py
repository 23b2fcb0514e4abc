"""Convolution tactics around cuBLAS, plus the depthwise direct kernel.

- ``conv2d_1x1_cublas``: a 1x1 convolution (any stride) or a fully-connected
  layer is one GEMM  [M, C] x [K, C]^T  through ``cupy.matmul`` (cuBLAS),
  followed by one fused epilogue kernel (scale, bias, residual, activation,
  cast, channel offset). cuBLAS cannot be captured in a CUDA graph from CuPy,
  so the builder weighs these against the tensor-core kernels.
- ``conv2d_im2col``: the fallback for everything (FP32 and FP16, any C, any
  groups): im2col into a workspace, GEMM, epilogue; the batch is processed in
  chunks so the workspace stays under ``workspace_bytes``.
- ``conv2d_depthwise``: direct NHWC kernel for groups == C (multiplier 1).

Shapes: x NHWC; weights KRSC ([K, R, S, C/groups]); out NHWC, optionally a
preallocated wider buffer written at ``out_channel_offset`` (concat elision).
"""
from __future__ import annotations

import numpy as np

from ._launch import BLOCK, check_nhwc, grid_1d, templated
from .activation import act_code
from .compile import f32, i32
from .conv_igemm import _epilogue_vectors, _pair, conv_out_size, prepare_output
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "conv_gemm.cu"


def gemm_epilogue(y, out, *, scale=None, bias=None, residual=None, act=None, alpha=0.0,
                  beta=0.0, out_channel_offset=0):
    """out[m, off + k] = act(y[m, k] * scale[k] + bias[k] + residual[m, k]).

    y: [M, K] (rows may be strided: y.strides[0] is honoured, columns contiguous);
    out: [..., Ctot] contiguous with prod(shape[:-1]) == M; residual [M, K]-shaped
    contiguous, dtype of out.
    """
    M, K = y.shape
    if y.strides[1] != y.itemsize:
        raise UnsupportedError("epilogue input needs contiguous columns")
    sc, bi = _epilogue_vectors(K, scale, bias)
    out_ld = out.shape[-1]
    if out.size // out_ld != M:
        raise UnsupportedError(f"out {out.shape} has {out.size // out_ld} rows; expected {M}")
    res_ld = K if residual is not None else 0
    if residual is not None and (residual.size != M * K or residual.dtype != out.dtype
                                 or not residual.flags.c_contiguous):
        raise UnsupportedError(f"residual {residual.shape} {residual.dtype}; expected contiguous "
                               f"{M}x{K} {out.dtype}")
    kern = templated(SOURCE, "epilogue_nhwc", (y.dtype, out.dtype), "conv epilogue")
    res = residual if residual is not None else out
    kern(grid_1d(M * K), (BLOCK,),
         (y, out, sc, bi, res, np.int64(M), i32(K), i32(y.strides[0] // y.itemsize),
          i32(out_ld), i32(out_channel_offset), i32(res_ld), i32(residual is not None),
          i32(act_code(act)), f32(alpha), f32(beta)))
    return out


def conv2d_1x1_cublas(x, w_kc, *, stride=1, scale=None, bias=None, residual=None, act=None,
                      alpha=0.0, beta=0.0, out=None, out_dtype=None, out_channel_offset=0):
    """1x1 convolution (no padding) as a cuBLAS GEMM + fused epilogue.

    x: [N, H, W, C] float16/float32 contiguous; w_kc: [K, C] (or [K, 1, 1, C]) of x's dtype.
    Output [N, P, Q, K] (P = ceil(H / sh)) in ``out_dtype`` (default x's dtype).
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    check_nhwc(x, "conv2d_1x1_cublas")
    w = w_kc.reshape(w_kc.shape[0], -1)
    N, H, W, C = x.shape
    K = w.shape[0]
    if w.shape[1] != C or w.dtype != x.dtype:
        raise UnsupportedError(f"weights {w_kc.shape} {w_kc.dtype}; expected [K, {C}] {x.dtype}")
    sh, sw = _pair(stride, "stride")
    if (sh, sw) != (1, 1):
        x = cp.ascontiguousarray(x[:, ::sh, ::sw, :])
    N, P, Q, _ = x.shape
    out_dtype = np.dtype(out.dtype if out is not None else (out_dtype or x.dtype))
    out, _, _ = prepare_output(N, P, Q, K, out, out_dtype, out_channel_offset, residual)
    y = cp.matmul(x.reshape(N * P * Q, C), w.T)
    return gemm_epilogue(y, out, scale=scale, bias=bias, residual=residual, act=act,
                         alpha=alpha, beta=beta, out_channel_offset=out_channel_offset)


def fully_connected(x2d, w_kc, **kw):
    """[M, C] x [K, C]^T + epilogue; same keywords as conv2d_1x1_cublas; returns [M, K]."""
    M, C = x2d.shape
    out = conv2d_1x1_cublas(x2d.reshape(M, 1, 1, C), w_kc, **kw)
    return out.reshape(M, out.shape[-1])


def im2col(x, R, S, stride, padding, dilation, out_hw, c0=0, cg=None, col=None):
    """[N*P*Q, R*S*cg] columns of NHWC ``x`` channels [c0, c0+cg), KRSC order."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    N, H, W, C = x.shape
    cg = C - c0 if cg is None else cg
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    P, Q = out_hw
    if col is None:
        col = cp.empty((N * P * Q, R * S * cg), dtype=x.dtype)
    kern = templated(SOURCE, "im2col_nhwc", (x.dtype,), "im2col")
    kern(grid_1d(col.size), (BLOCK,),
         (x, col, i32(N), i32(H), i32(W), i32(C), i32(R), i32(S), i32(P), i32(Q),
          i32(sh), i32(sw), i32(ph), i32(pw), i32(dh), i32(dw), i32(c0), i32(cg)))
    return col


def conv2d_im2col(x, w_krsc, *, stride=1, padding=0, dilation=1, out_hw=None, groups=1,
                  scale=None, bias=None, residual=None, act=None, alpha=0.0, beta=0.0,
                  out=None, out_dtype=None, out_channel_offset=0, workspace_bytes=256 << 20):
    """Any 2-D convolution: im2col + cuBLAS GEMM per group + fused epilogue.

    x: [N, H, W, C] float16/float32; w_krsc: [K, R, S, C // groups] of x's dtype.
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    check_nhwc(x, "conv2d_im2col")
    N, H, W, C = x.shape
    K, R, S, Cg = w_krsc.shape
    if groups < 1 or C % groups or K % groups or Cg != C // groups:
        raise UnsupportedError(f"groups={groups} with C={C}, K={K}, weights {w_krsc.shape}; "
                               f"expected C and K divisible by groups and weights [K, R, S, C/groups]")
    if w_krsc.dtype != x.dtype:
        raise UnsupportedError(f"weights dtype {w_krsc.dtype}; expected {x.dtype}")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if out_hw is None:
        out_hw = (conv_out_size(H, R, sh, ph, ph, dh), conv_out_size(W, S, sw, pw, pw, dw))
    P, Q = out_hw
    out_dtype = np.dtype(out.dtype if out is not None else (out_dtype or x.dtype))
    out, _, _ = prepare_output(N, P, Q, K, out, out_dtype, out_channel_offset, residual)
    sc, bi = _epilogue_vectors(K, scale, bias)
    Kg = K // groups
    wmat = w_krsc.reshape(K, R * S * Cg)
    per_image = P * Q * R * S * Cg * x.itemsize
    nb = max(1, min(N, workspace_bytes // max(per_image, 1)))
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        xs = x[n0:n1]
        for g in range(groups):
            col = im2col(xs, R, S, (sh, sw), (ph, pw), (dh, dw), (P, Q), c0=g * Cg, cg=Cg)
            y = cp.matmul(col, wmat[g * Kg:(g + 1) * Kg].T)
            res = None
            if residual is not None:
                res = cp.ascontiguousarray(residual[n0:n1, ..., g * Kg:(g + 1) * Kg])
            gemm_epilogue(y, out[n0:n1], scale=sc[g * Kg:(g + 1) * Kg],
                          bias=bi[g * Kg:(g + 1) * Kg], residual=res, act=act, alpha=alpha,
                          beta=beta, out_channel_offset=out_channel_offset + g * Kg)
    return out


def conv2d_depthwise(x, w_rsc, *, stride=1, padding=0, dilation=1, out_hw=None,
                     scale=None, bias=None, act=None, alpha=0.0, beta=0.0,
                     out=None, out_channel_offset=0):
    """Depthwise convolution (groups == C, one filter per channel), NHWC, fused epilogue.

    x: [N, H, W, C] float16/float32; w_rsc: [R, S, C] (TF's [R, S, C, 1] or
    [C, 1, R, S] reshaped by the caller), stored float32 on the device.
    Output [N, P, Q, C] of x's dtype.
    """
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    check_nhwc(x, "conv2d_depthwise")
    N, H, W, C = x.shape
    if w_rsc.ndim != 3 or w_rsc.shape[2] != C:
        raise UnsupportedError(f"depthwise weights {w_rsc.shape}; expected [R, S, {C}]")
    R, S, _ = w_rsc.shape
    wt = cp.ascontiguousarray(cp.asarray(w_rsc, dtype=cp.float32))
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if out_hw is None:
        out_hw = (conv_out_size(H, R, sh, ph, ph, dh), conv_out_size(W, S, sw, pw, pw, dw))
    P, Q = out_hw
    out, out_ld, _ = prepare_output(N, P, Q, C, out, x.dtype, out_channel_offset, None)
    sc, bi = _epilogue_vectors(C, scale, bias)
    kern = templated(SOURCE, "dwconv_nhwc", (x.dtype,), "depthwise conv")
    kern(grid_1d(N * P * Q * C), (BLOCK,),
         (x, wt, out, sc, bi, i32(N), i32(H), i32(W), i32(C), i32(R), i32(S), i32(P), i32(Q),
          i32(sh), i32(sw), i32(ph), i32(pw), i32(dh), i32(dw), i32(out_ld),
          i32(out_channel_offset), i32(act_code(act)), f32(alpha), f32(beta)))
    return out


# compiled on first use (one instantiation per dtype)
FAMILY = KernelFamily(SOURCE, launch=(conv2d_1x1_cublas, fully_connected, conv2d_im2col,
                                      conv2d_depthwise, gemm_epilogue))
