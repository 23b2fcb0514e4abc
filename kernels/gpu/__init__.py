"""GPU kernels: CUDA sources in kernels/cuda, compiled through CuPy, with launchers.

Launchers take CuPy arrays (NHWC activations) and plain parameters; tactic
descriptors are plain dataclasses. Importing this package never needs a GPU
(CuPy is imported lazily by the launchers).

    conv_tc      tensor-core implicit-GEMM convolution tactics (IGEMM_TACTICS)
    conv_gemm    cuBLAS 1x1 / FC, im2col + GEMM fallback, depthwise, epilogue
    pointwise_gen  fused pointwise chains
    pooling      max/avg pooling, global average pool
    softmax      softmax over any axis
    reformat     NCHW <-> NHWC, concat into a preallocated buffer
    rnn          RNN / LSTM / GRU: cuBLAS GEMMs + one fused gate kernel per step
"""
from .activation import ACT_CODES, act_code
from .errors import KernelError, UnsupportedError
