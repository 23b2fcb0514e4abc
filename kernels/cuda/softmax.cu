// softmax.cu -- softmax along any axis, FP32 arithmetic (kernels/gpu/softmax.py).
#include "common.cuh"

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Softmax over contiguous rows of length L: one warp per row.
template <typename T>
__global__ void softmax_rows(const T* __restrict__ x, T* __restrict__ y, long long rows, int L) {
    const int lane = threadIdx.x & 31;
    const long long row = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) return;
    const T* xr = x + row * L;
    T* yr = y + row * L;
    float mx = -3.402823466e38f;
    for (int j = lane; j < L; j += 32) mx = fmaxf(mx, io<T>::load(xr + j));
    mx = warp_max(mx);
    float sum = 0.f;
    for (int j = lane; j < L; j += 32) sum += expf(io<T>::load(xr + j) - mx);
    sum = warp_sum(sum);
    const float inv = 1.f / sum;
    for (int j = lane; j < L; j += 32) io<T>::store(yr + j, expf(io<T>::load(xr + j) - mx) * inv);
}

// Softmax over a middle axis: x viewed as [outer, L, inner], inner > 1;
// one thread per (outer, inner) column, neighbours read neighbouring columns.
template <typename T>
__global__ void softmax_strided(const T* __restrict__ x, T* __restrict__ y,
                                long long outer, int L, int inner) {
    const long long total = outer * inner;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long o = i / inner;
        int in = (int)(i - o * inner);
        const long long base = o * L * inner + in;
        float mx = -3.402823466e38f;
        for (int j = 0; j < L; ++j) mx = fmaxf(mx, io<T>::load(x + base + (long long)j * inner));
        float sum = 0.f;
        for (int j = 0; j < L; ++j) sum += expf(io<T>::load(x + base + (long long)j * inner) - mx);
        const float inv = 1.f / sum;
        for (int j = 0; j < L; ++j)
            io<T>::store(y + base + (long long)j * inner,
                         expf(io<T>::load(x + base + (long long)j * inner) - mx) * inv);
    }
}

#ifdef CUPYRT_NVCC_INSTANTIATE
template __global__ void softmax_rows<half_t>(const half_t*, half_t*, long long, int);
template __global__ void softmax_rows<float>(const float*, float*, long long, int);
template __global__ void softmax_strided<half_t>(const half_t*, half_t*, long long, int, int);
template __global__ void softmax_strided<float>(const float*, float*, long long, int, int);
#endif
