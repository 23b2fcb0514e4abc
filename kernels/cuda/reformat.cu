// reformat.cu -- the batched transpose of NCHW <-> NHWC reformats (kernels/gpu/reformat.py).
#include "common.cuh"

// Batched transpose [B, R, C] -> [B, C, R] through a 32x33 shared tile.
// NCHW -> NHWC: (B, R, C) = (N, C, H*W); NHWC -> NCHW: (N, H*W, C).
// Launch: grid (ceil(C/32), ceil(R/32), B), block (32, 8).
template <typename T>
__global__ void transpose_brc(const T* __restrict__ x, T* __restrict__ y, int R, int C) {
    __shared__ T tile[32][33];
    const long long b = blockIdx.z;
    const T* xb = x + b * R * C;
    T* yb = y + b * R * C;
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int j = threadIdx.y; j < 32; j += 8) {
        int r = r0 + j, c = c0 + threadIdx.x;
        if (r < R && c < C) tile[j][threadIdx.x] = xb[(long long)r * C + c];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += 8) {
        int c = c0 + j, r = r0 + threadIdx.x;
        if (r < R && c < C) yb[(long long)c * R + r] = tile[threadIdx.x][j];
    }
}

#ifdef CUPYRT_NVCC_INSTANTIATE
template __global__ void transpose_brc<half_t>(const half_t*, half_t*, int, int);
template __global__ void transpose_brc<float>(const float*, float*, int, int);
template __global__ void transpose_brc<signed char>(const signed char*, signed char*, int, int);
template __global__ void transpose_brc<int>(const int*, int*, int, int);
#endif
