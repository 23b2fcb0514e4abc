"""The engine's GPU side: tactics (candidate kernels per layer), the timing
cache, and the device copies of layer weights. Imports CuPy lazily, so the
package imports anywhere; using it needs a CUDA device.

One module per layer family, precision variants as named siblings; each tactic
names the kernels/gpu function it launches:

    tactics.py            the table: which tactics exist per layer type; candidates()
    base.py               Tactic, the generic / host / INT8-emulation fallbacks, NHWC helpers
    conv_common.py        what the conv / FC / pool tactics share (epilogue, geometry)
    conv_tactics.py       Convolution FP16 / FP32 (mma.sync, wgmma, cuBLAS, im2col, depthwise)
    conv_int8_tactics.py  Convolution INT8 (mma.sync, wgmma, small-C stem)
    conv_tf32_tactics.py  Convolution FP32 on tensor cores (3xTF32 / TF32)
    cudnn_tactics.py      Convolution through cuDNN frontend graphs
    fc_tactics.py         FullyConnected, every precision
    matmul_tactics.py     MatrixMultiply (our GEMM, conv-backed GEMM, cuBLAS)
    attention_tactics.py  Attention (flash kernel, unfused path)
    pool_tactics.py       Pooling, and Reduce AVG over H, W (global average pool)
    norm_tactics.py       Normalization as a layer norm
    softmax_tactics.py    SoftMax
    pointwise_tactics.py  the builder's fused pointwise chains
    constant_tactics.py   Constant (uploaded once)
    rnn_tactics.py        RNNv2
    concat.py             Concatenation and concat elision
    timing.py             tactic timing and the timing cache
    precompile.py         the tiles a build times, compiled in parallel before timing
    device.py             device copies of layers, GPU identity
"""
