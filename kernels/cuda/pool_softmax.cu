// pool_softmax.cu -- pooling (NHWC), global average pool, softmax, and the
// batched transpose used for NCHW <-> NHWC reformats.
#include "common.cuh"

// Max / average pooling over NHWC; one thread per output element, channel
// fastest. mode 0 = max, 1 = average. exclude_pad: average divides by the
// taps inside the input (TensorRT's default), else by R*S.
template <typename T>
__global__ void pool2d_nhwc(const T* __restrict__ x, T* __restrict__ out,
                            int N, int H, int W, int C, int R, int S, int P, int Q,
                            int sh, int sw, int ph, int pw, int mode, int exclude_pad,
                            int out_ld, int out_off) {
    const long long total = (long long)N * P * Q * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int c = (int)(i % C);
        long long m = i / C;
        int q = (int)(m % Q);
        long long t = m / Q;
        int p = (int)(t % P);
        int n = (int)(t / P);
        const T* xn = x + (long long)n * H * W * C + c;
        float acc = mode == 0 ? -3.402823466e38f : 0.f;
        int cnt = 0;
        for (int r = 0; r < R; ++r) {
            int h = p * sh - ph + r;
            if ((unsigned)h >= (unsigned)H) continue;
            for (int s = 0; s < S; ++s) {
                int w = q * sw - pw + s;
                if ((unsigned)w >= (unsigned)W) continue;
                float v = io<T>::load(xn + ((long long)h * W + w) * C);
                acc = mode == 0 ? fmaxf(acc, v) : acc + v;
                ++cnt;
            }
        }
        if (mode == 1) acc = acc / (float)(exclude_pad ? (cnt > 0 ? cnt : 1) : R * S);
        io<T>::store(out + m * out_ld + out_off + c, acc);
    }
}

// [N, HW, C] -> [N, C] mean over HW, FP32 accumulation; thread per (n, c).
template <typename T>
__global__ void global_avgpool_nhwc(const T* __restrict__ x, T* __restrict__ out,
                                    int N, int HW, int C) {
    const long long total = (long long)N * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int c = (int)(i % C);
        long long n = i / C;
        const T* p = x + n * HW * C + c;
        float acc = 0.f;
        for (int j = 0; j < HW; ++j) acc += io<T>::load(p + (long long)j * C);
        io<T>::store(out + i, acc / (float)HW);
    }
}

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
template __global__ void pool2d_nhwc<half_t>(const half_t*, half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void pool2d_nhwc<float>(const float*, float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void global_avgpool_nhwc<half_t>(const half_t*, half_t*, int, int, int);
template __global__ void global_avgpool_nhwc<float>(const float*, float*, int, int, int);
template __global__ void softmax_rows<half_t>(const half_t*, half_t*, long long, int);
template __global__ void softmax_rows<float>(const float*, float*, long long, int);
template __global__ void softmax_strided<half_t>(const half_t*, half_t*, long long, int, int);
template __global__ void softmax_strided<float>(const float*, float*, long long, int, int);
template __global__ void transpose_brc<half_t>(const half_t*, half_t*, int, int);
template __global__ void transpose_brc<float>(const float*, float*, int, int);
template __global__ void transpose_brc<signed char>(const signed char*, signed char*, int, int);
template __global__ void transpose_brc<int>(const int*, int*, int, int);
#endif
