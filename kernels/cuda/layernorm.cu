// layernorm.cu -- INormalizationLayer over the trailing axes, one pass per row.
//
//   y[r, i] = (x[r, i] - mean_r) / sqrt(var_r + eps) * scale[i] + bias[i]
//
// x is viewed as [rows, L] (L = the product of the normalised trailing axes;
// the launcher declines any other axes mask). Statistics in FP32, two passes
// over the row (mean, then the centred sum of squares: no cancellation of
// E[x^2] - E[x]^2); the row is re-read from L1/L2, not kept in registers, so
// any L works. scale and bias are float32 [L].
//
//   layernorm_warp:  one warp per row (L up to a few thousand: BERT's 768)
//   layernorm_block: one 256-thread block per row (long rows, few of them)
#include "common.cuh"

namespace cupyrt_ln {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();                 // red may still be read by a previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.f;
    return warp_sum(v);
}

}  // namespace cupyrt_ln

// Launch: block 256 (8 rows per block), grid ceil(rows / 8).
template <typename TI, typename TO>
__global__ void __launch_bounds__(256)
layernorm_warp(const TI* __restrict__ x, TO* __restrict__ y, const float* __restrict__ scale,
               const float* __restrict__ bias, long long rows, int L, float eps) {
    using namespace cupyrt_ln;
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const TI* xr = x + row * L;
    TO* yr = y + row * L;
    float s = 0.f;
    for (int i = lane; i < L; i += 32) s += io<TI>::load(xr + i);
    const float mean = warp_sum(s) / (float)L;
    float ss = 0.f;
    for (int i = lane; i < L; i += 32) {
        const float d = io<TI>::load(xr + i) - mean;
        ss += d * d;
    }
    const float rstd = rsqrtf(warp_sum(ss) / (float)L + eps);
    for (int i = lane; i < L; i += 32)
        io<TO>::store(yr + i, (io<TI>::load(xr + i) - mean) * rstd * scale[i] + bias[i]);
}

// Launch: block 256, grid rows.
template <typename TI, typename TO>
__global__ void __launch_bounds__(256)
layernorm_block(const TI* __restrict__ x, TO* __restrict__ y, const float* __restrict__ scale,
                const float* __restrict__ bias, long long rows, int L, float eps) {
    using namespace cupyrt_ln;
    __shared__ float red[32];
    const long long row = blockIdx.x;
    const TI* xr = x + row * L;
    TO* yr = y + row * L;
    float s = 0.f;
    for (int i = threadIdx.x; i < L; i += blockDim.x) s += io<TI>::load(xr + i);
    const float mean = block_sum(s, red) / (float)L;
    float ss = 0.f;
    for (int i = threadIdx.x; i < L; i += blockDim.x) {
        const float d = io<TI>::load(xr + i) - mean;
        ss += d * d;
    }
    const float rstd = rsqrtf(block_sum(ss, red) / (float)L + eps);
    for (int i = threadIdx.x; i < L; i += blockDim.x)
        io<TO>::store(yr + i, (io<TI>::load(xr + i) - mean) * rstd * scale[i] + bias[i]);
}

#ifdef CUPYRT_NVCC_INSTANTIATE
#define CUPYRT_LN(TI, TO)                                                                   \
    template __global__ void layernorm_warp<TI, TO>(const TI*, TO*, const float*, const float*, \
                                                    long long, int, float);                 \
    template __global__ void layernorm_block<TI, TO>(const TI*, TO*, const float*, const float*, \
                                                     long long, int, float);
CUPYRT_LN(half_t, half_t)
CUPYRT_LN(half_t, float)
CUPYRT_LN(float, half_t)
CUPYRT_LN(float, float)
#endif
