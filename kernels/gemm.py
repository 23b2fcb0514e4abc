"""NumPy references for the GEMM-shaped layers: fully connected (with its fused
epilogue) and batched matrix multiply. Plain arrays and plain parameters only.

The GPU tactics for these layers (cuBLAS through CuPy, our own GEMM for CUDA
graph capture) arrive with the CuPy kernels; they are tested against these.
"""
import numpy as np

from .pointwise import activation
from .xp import array_module


def fully_connected(x2d, kernel, bias=None, residual=None, act=None, alpha=0.0, beta=0.0):
    """y = act(x2d @ kernel.T + bias + residual).

    x2d (M, C), kernel (K, C) as TensorRT lays it out, bias (K,) or None,
    residual broadcastable to (M, K) or None; ``act`` is an ActivationType
    member name or None. The epilogue order is TensorRT's conv/FC fusion order:
    bias, then the residual add, then the activation.
    """
    xp = array_module(x2d, kernel)
    y = xp.matmul(x2d.astype(np.float32, copy=False), xp.asarray(kernel).astype(np.float32, copy=False).T)
    if bias is not None:
        y += xp.asarray(bias).astype(np.float32, copy=False).reshape(1, -1)
    if residual is not None:
        y = y + residual.astype(np.float32, copy=False)
    if act is not None:
        y = activation(y, act, alpha, beta)
    return y


def _as_matrix(x, op, side):
    """The operand as a stack of matrices for np.matmul.

    op is "NONE", "TRANSPOSE" (swap the last two dims) or "VECTOR" (the last
    dim is a vector: a 1 x K row on the left, a K x 1 column on the right).
    """
    if op == "TRANSPOSE":
        return x.swapaxes(-1, -2)
    if op == "VECTOR":
        return x[..., None, :] if side == 0 else x[..., :, None]
    return x


def matrix_multiply(a, b, op0="NONE", op1="NONE"):
    """TensorRT's IMatrixMultiplyLayer: op(a) @ op(b) over broadcast batch dims.

    matrix x matrix -> matrix, matrix x vector -> vector, vector x matrix ->
    vector, vector x vector -> scalar (per batch element).
    """
    xp = array_module(a, b)
    y = xp.matmul(_as_matrix(a.astype(np.float32, copy=False), op0, 0),
                  _as_matrix(b.astype(np.float32, copy=False), op1, 1))
    if op1 == "VECTOR":
        y = y[..., 0]
    if op0 == "VECTOR":
        y = y[..., 0] if op1 == "VECTOR" else y[..., 0, :]
    return y
