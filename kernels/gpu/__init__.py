"""GPU kernels: CUDA sources in kernels/cuda, compiled through CuPy, with launchers.

One module per CUDA source, named like it (``conv_igemm.py`` launches
``conv_igemm.cu``), each exporting ``FAMILY`` (family.py: the source, the tiles
precompile builds, the compile-all function, the launch functions). Launchers take
CuPy arrays (NHWC activations) and plain parameters, tiles are plain dataclasses,
and nothing here reads the environment: the engine passes every switch as an
argument. Importing this package never needs a GPU (CuPy is imported lazily).

    conv_igemm       mma.sync implicit-GEMM convolution (FP16): plain, split-K, small-C
    conv_wgmma       Hopper wgmma implicit-GEMM convolution, FP16 and INT8 (sm_90a)
    conv_tf32        FP32 convolution on tensor cores (3xTF32 / TF32)
    conv_int8        INT8 implicit-GEMM convolution with the requantising epilogue
    conv_int8_smallc INT8 stem convolution for C <= 4
    conv_stem        FP16 stem convolution for C <= 4 (input patch in shared memory)
    quantize_int8    FP32 / FP16 -> INT8 codes (scalar and vectorised)
    conv_gemm        cuBLAS 1x1 / FC, im2col + GEMM fallback, direct depthwise, epilogue
    conv_dw          register-blocked depthwise convolution
    matmul           batched GEMM for MatrixMultiply (FP16 tensor cores, FP32 SIMT)
    attention        fused (flash-style) scaled dot-product attention
    layernorm        layer norm over the trailing axes
    pooling          max/avg pooling, global average pool
    softmax          softmax over any axis
    reformat         NCHW <-> NHWC, concat into a preallocated buffer
    rnn              RNN / LSTM / GRU: cuBLAS GEMMs + one fused gate kernel per step
    pointwise_gen    fused pointwise chains (generated kernels, no .cu of their own)
    cudnn_graphs     cuDNN frontend fused graphs (optional dependency)
    cudnn_matmul     cuDNN matmul graphs (bias, residual, GELU fused)
    cudnn_int8       cuDNN INT8 convolution graphs with the INT8 epilogue
"""
from .activation import ACT_CODES, act_code
from .errors import KernelError, UnsupportedError
