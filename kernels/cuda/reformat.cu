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

// The network input of a tensor-core stem: NCHW (C-contiguous) float or half ->
// NHWC half with C zero-padded to CP (4 or 8), cast + transpose + pad in one pass.
//
//   x plane c of image n:  | p0 p0+1 p0+2 p0+3 | ...     one 16-byte (float) or 8-byte
//                                                         (half) load per plane
//   y pixel p:             | c0 c1 c2 0 (| 0 0 0 0) |    CP = 4: two pixels per 16-byte
//                                                         store; CP = 8: one per store
//
// Each thread takes 4 consecutive pixels of one image (H*W flattened: NCHW is
// contiguous over h, w), so a warp reads 512 consecutive bytes of each plane and writes
// 1 KiB (CP = 4) of y. Index math is 32-bit inside an image (the launcher checks
// C*H*W and H*W*CP < 2**31), 64-bit once for the image base. VEC = 0 takes pixels one
// by one (H*W not a multiple of 4, or a misaligned plane) -- the same result.
// Launch: grid (ceil(HW / 1024), N), block 256.
template <typename TI> struct Ld4;
template <> struct Ld4<float> {
    static __device__ __forceinline__ void load(const float* p, float (&v)[4]) {
        const float4 f = __ldg(reinterpret_cast<const float4*>(p));
        v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    }
    static __device__ __forceinline__ float one(const float* p) { return __ldg(p); }
};
template <> struct Ld4<half_t> {
    static __device__ __forceinline__ void load(const half_t* p, float (&v)[4]) {
        const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
        v[0] = h2f((half_t)(u.x & 0xffffu)); v[1] = h2f((half_t)(u.x >> 16));
        v[2] = h2f((half_t)(u.y & 0xffffu)); v[3] = h2f((half_t)(u.y >> 16));
    }
    static __device__ __forceinline__ float one(const half_t* p) { return h2f(__ldg(p)); }
};

template <typename TI, int CP, int VEC>
__global__ void __launch_bounds__(256)
nchw_to_nhwc_pad(const TI* __restrict__ x, half_t* __restrict__ y, int C, int HW) {
    static_assert(CP == 4 || CP == 8, "CP: 4 or 8 channels");
    const int p0 = (blockIdx.x * 256 + threadIdx.x) * 4;
    if (p0 >= HW) return;
    const TI* xn = x + (long long)blockIdx.y * C * HW + p0;
    half_t* yn = y + ((long long)blockIdx.y * HW + p0) * CP;
    float v[CP][4];                      // [channel][pixel]
#pragma unroll
    for (int c = 0; c < CP; ++c)
#pragma unroll
        for (int e = 0; e < 4; ++e) v[c][e] = 0.f;
    const int np = min(4, HW - p0);
    if (VEC && np == 4) {
#pragma unroll
        for (int c = 0; c < CP; ++c)
            if (c < C) Ld4<TI>::load(xn + c * HW, v[c]);
    } else {
#pragma unroll
        for (int c = 0; c < CP; ++c)
#pragma unroll
            for (int e = 0; e < 4; ++e)
                if (c < C && e < np) v[c][e] = Ld4<TI>::one(xn + c * HW + e);
    }
    unsigned u[4][CP / 2];               // [pixel][channel pair], packed halves
#pragma unroll
    for (int e = 0; e < 4; ++e)
#pragma unroll
        for (int k = 0; k < CP / 2; ++k) u[e][k] = pack_h2(v[2 * k][e], v[2 * k + 1][e]);
    // 16-byte stores only where yn is 16-byte aligned: p0 % 4 == 0, but with CP = 4 the
    // image base n * HW * 8 bytes is only 8-byte aligned when H*W and n are odd
    if (np == 4 && (reinterpret_cast<unsigned long long>(yn) & 15) == 0) {
        uint4* o = reinterpret_cast<uint4*>(yn);
        if constexpr (CP == 4) {
            o[0] = make_uint4(u[0][0], u[0][1], u[1][0], u[1][1]);
            o[1] = make_uint4(u[2][0], u[2][1], u[3][0], u[3][1]);
        } else {
#pragma unroll
            for (int e = 0; e < 4; ++e) o[e] = make_uint4(u[e][0], u[e][1], u[e][2], u[e][3]);
        }
    } else {
        // 8-byte stores, 4 channels each (the last partial group, or an 8-byte-aligned yn)
        uint2* o = reinterpret_cast<uint2*>(yn);
#pragma unroll
        for (int e = 0; e < 4; ++e)
#pragma unroll
            for (int k = 0; k < CP / 4; ++k)
                if (e < np) o[e * (CP / 4) + k] = make_uint2(u[e][2 * k], u[e][2 * k + 1]);
    }
}

#ifdef CUPYRT_NVCC_INSTANTIATE
template __global__ void transpose_brc<half_t>(const half_t*, half_t*, int, int);
template __global__ void transpose_brc<float>(const float*, float*, int, int);
template __global__ void transpose_brc<signed char>(const signed char*, signed char*, int, int);
template __global__ void transpose_brc<int>(const int*, int*, int, int);
template __global__ void nchw_to_nhwc_pad<float, 4, 1>(const float*, half_t*, int, int);
template __global__ void nchw_to_nhwc_pad<float, 8, 1>(const float*, half_t*, int, int);
template __global__ void nchw_to_nhwc_pad<float, 4, 0>(const float*, half_t*, int, int);
template __global__ void nchw_to_nhwc_pad<half_t, 4, 1>(const half_t*, half_t*, int, int);
template __global__ void nchw_to_nhwc_pad<half_t, 8, 0>(const half_t*, half_t*, int, int);
#endif
