// quantize_int8.cu -- float32 / float16 activations -> int8 codes: the scalar
// quantize_nhwc (one byte per thread, 64-bit division per element) and its vectorised
// variants. Per element the arithmetic is the scalar kernel's, so the codes
// are bit-identical:
//   q = q8(__fmul_rn(x, inv))      saturate(rint(x * inv)), rint half to even
//   padded channels (c >= C) are 0
//
// quantize_nhwc_vec<T, DENSE, I>   NHWC [pixels, C] -> NHWC [pixels, Cp]
//   one thread per 16-byte chunk of the output (one uint4 store). The chunk's first
//   byte b0 gives (pixel, channel) by one division; the 16 bytes then walk the channels
//   with a counter, so a chunk may straddle pixels (Cp = 4: four pixels per chunk).
//   DENSE (C == Cp): the 16 codes come from 16 consecutive inputs, read as 16-byte
//   vectors (x 16-byte aligned: the launcher checks).
//
// quantize_nchw_nhwc<T, CB, I>     NCHW [N, C, H*W] -> NHWC [N, H*W, Cp], Cp % 4 == 0
//   the network input without the separate NCHW -> NHWC reformat. One thread per four
//   pixels of one image:
//
//        x plane c:  [p0 p0+1 p0+2 p0+3]  one float4 (half: 8 bytes) per channel plane
//        q:          pixel p0: c0 c1 c2 0 | p0+1: c0 c1 c2 0 | ...   (Cp = 4: one uint4)
//
//   CB = 4: four channels (one 32-bit word per pixel) at a time; Cp == 4 with VEC
//   stores the four pixels as one uint4. CB = 16 (Cp % 16 == 0): one uint4 per pixel
//   and 16-channel block. VEC: H*W % 4 == 0 and x, q aligned (the launcher checks), so
//   the four pixels are one aligned vector in every plane; else scalar loads.
//
// I: the index type, int where every offset fits (the launcher's choice), else long long.
#include "int8_epilogue.cuh"   // q8, i8_t

namespace cupyrt_quant {

__device__ __forceinline__ unsigned code_byte(float v, float inv, int shift) {
    return ((unsigned)cupyrt_int8::q8(__fmul_rn(v, inv)) & 0xffu) << shift;
}

// 16 consecutive elements, 16-byte-aligned vector loads
__device__ __forceinline__ void load16(const float* p, float (&v)[16]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const float4 f = reinterpret_cast<const float4*>(p)[j];
        v[4 * j] = f.x; v[4 * j + 1] = f.y; v[4 * j + 2] = f.z; v[4 * j + 3] = f.w;
    }
}
__device__ __forceinline__ void load16(const half_t* p, float (&v)[16]) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const uint4 u = reinterpret_cast<const uint4*>(p)[j];
        const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            v[8 * j + 2 * e] = h2f((half_t)(w[e] & 0xffffu));
            v[8 * j + 2 * e + 1] = h2f((half_t)(w[e] >> 16));
        }
    }
}

// 4 consecutive elements: one aligned vector (float4 / 8 bytes of half) when vec, else
// n <= 4 scalar loads (elements n.. read as 0, never stored)
__device__ __forceinline__ void load4(const float* p, float (&v)[4], int n, bool vec) {
    if (vec) {
        const float4 f = *reinterpret_cast<const float4*>(p);
        v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) v[e] = e < n ? p[e] : 0.f;
    }
}
__device__ __forceinline__ void load4(const half_t* p, float (&v)[4], int n, bool vec) {
    if (vec) {
        const uint2 u = *reinterpret_cast<const uint2*>(p);
        v[0] = h2f((half_t)(u.x & 0xffffu)); v[1] = h2f((half_t)(u.x >> 16));
        v[2] = h2f((half_t)(u.y & 0xffffu)); v[3] = h2f((half_t)(u.y >> 16));
    } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) v[e] = e < n ? h2f(p[e]) : 0.f;
    }
}

}  // namespace cupyrt_quant

// Launch: 1-D grid-stride, any grid; q 16-byte aligned.
template <typename T, int DENSE, typename I>
__global__ void quantize_nhwc_vec(const T* __restrict__ x, i8_t* __restrict__ q,
                                  I pixels, int C, int Cp, float inv) {
    using namespace cupyrt_quant;
    const I total = pixels * (I)Cp;                  // output bytes
    const I chunks = (total + 15) / 16;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < chunks; i += (I)gridDim.x * blockDim.x) {
        const I b0 = i * 16;
        const bool full = b0 + 16 <= total;
        unsigned wd[4] = {0u, 0u, 0u, 0u};
        if (DENSE && full) {
            float v[16];
            load16(x + b0, v);
#pragma unroll
            for (int e = 0; e < 16; ++e) wd[e >> 2] |= code_byte(v[e], inv, 8 * (e & 3));
        } else {
            I p = b0 / Cp;
            int c = (int)(b0 - p * Cp);
#pragma unroll
            for (int e = 0; e < 16; ++e) {
                if (c < C && b0 + e < total)
                    wd[e >> 2] |= code_byte(io<T>::load(x + p * C + c), inv, 8 * (e & 3));
                if (++c == Cp) { c = 0; ++p; }
            }
        }
        if (full) {
            *reinterpret_cast<uint4*>(q + b0) = make_uint4(wd[0], wd[1], wd[2], wd[3]);
        } else {
            // the last, partial chunk: fixed trip count, so wd stays in registers
#pragma unroll
            for (int e = 0; e < 16; ++e)
                if (b0 + e < total) q[b0 + e] = (i8_t)(wd[e >> 2] >> (8 * (e & 3)));
        }
    }
}

// Launch: 1-D grid-stride over N * ceil(HW / 4) pixel groups; Cp % CB == 0, Cp % 4 == 0;
// q 4-byte aligned (CB = 16 or vec: 16-byte aligned); vec: HW % 4 == 0, x aligned.
template <typename T, int CB, typename I>
__global__ void quantize_nchw_nhwc(const T* __restrict__ x, i8_t* __restrict__ q,
                                   int N, int C, int HW, int Cp, float inv, int vec) {
    using namespace cupyrt_quant;
    static_assert(CB == 4 || CB == 16, "channel block of 4 or 16 codes");
    constexpr int WPB = CB / 4;                      // 32-bit words per pixel and block
    const int G = (HW + 3) >> 2;
    const I total = (I)N * G;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)gridDim.x * blockDim.x) {
        const I n = i / G;
        const int p0 = (int)(i - n * G) * 4;
        const int np = min(4, HW - p0);
        const bool v4 = vec && np == 4;
        const T* xs = x + n * C * (I)HW + p0;
        i8_t* qs = q + (n * HW + p0) * (I)Cp;
        for (int c0 = 0; c0 < Cp; c0 += CB) {
            unsigned wd[4][WPB];
#pragma unroll
            for (int e = 0; e < 4; ++e)
#pragma unroll
                for (int j = 0; j < WPB; ++j) wd[e][j] = 0u;
#pragma unroll
            for (int cc = 0; cc < CB; ++cc) {
                const int c = c0 + cc;
                if (c < C) {
                    float v[4];
                    load4(xs + (I)c * HW, v, np, v4);
#pragma unroll
                    for (int e = 0; e < 4; ++e) wd[e][cc >> 2] |= code_byte(v[e], inv, 8 * (cc & 3));
                }
            }
            if constexpr (CB == 16) {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (e < np)
                        *reinterpret_cast<uint4*>(qs + e * Cp + c0) =
                            make_uint4(wd[e][0], wd[e][1], wd[e][2], wd[e][3]);
            } else if (Cp == 4 && v4) {              // four pixels = 16 contiguous bytes
                *reinterpret_cast<uint4*>(qs) = make_uint4(wd[0][0], wd[1][0], wd[2][0], wd[3][0]);
            } else {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (e < np) *reinterpret_cast<unsigned*>(qs + e * Cp + c0) = wd[e][0];
            }
        }
    }
}

// float (float32 / float16) NHWC -> int8 codes at scale 1/inv, with the
// channels zero-padded from C to Cp (Cp >= C): q = clamp(rint(x * inv)).
template <typename T>
__global__ void quantize_nhwc(const T* __restrict__ x, i8_t* __restrict__ q,
                              long long pixels, int C, int Cp, float inv) {
    const long long total = pixels * Cp;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long p = i / Cp;
        const int c = (int)(i - p * Cp);
        q[i] = c < C ? (i8_t)cupyrt_int8::q8(__fmul_rn(io<T>::load(x + p * C + c), inv)) : (i8_t)0;
    }
}

// Calibration: counts of |x| in `bins` equal bins over [0, amax) (bin = trunc(|x| * scale),
// scale = bins / amax, float32 math as the NumPy reference; at or past the last bin, inf
// included, in the last; NaN in bin 0); exact zeros left out when skip_zeros. Each block
// counts into shared memory (bins 32-bit counters), then adds its counts to the 64-bit totals.
template <typename T>
__global__ void abs_histogram(const T* __restrict__ x, long long n, float scale, int bins,
                              int skip_zeros, unsigned long long* __restrict__ counts) {
    extern __shared__ unsigned int hist[];
    for (int i = threadIdx.x; i < bins; i += blockDim.x) hist[i] = 0u;
    __syncthreads();
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float a = fabsf(io<T>::load(x + i));
        if (skip_zeros && a == 0.0f) continue;
        const float f = __fmul_rn(a, scale);
        // the saturating float -> int conversion sends inf past the last bin, NaN to 0
        const int b = f >= (float)bins ? bins - 1 : (int)f;
        atomicAdd(&hist[b], 1u);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < bins; i += blockDim.x)
        if (hist[i]) atomicAdd(&counts[i], (unsigned long long)hist[i]);
}

// Instantiations for nvcc's CI compile check (NVRTC instantiates through
// name_expressions; see kernels/gpu/quantize_int8.py, quantize_nhwc / quantize_nchw_to_nhwc).
#ifdef CUPYRT_NVCC_INSTANTIATE
template __global__ void quantize_nhwc<float>(const float*, i8_t*, long long, int, int, float);
template __global__ void quantize_nhwc<half_t>(const half_t*, i8_t*, long long, int, int, float);
template __global__ void abs_histogram<float>(const float*, long long, float, int, int, unsigned long long*);
template __global__ void abs_histogram<half_t>(const half_t*, long long, float, int, int, unsigned long long*);
#define CUPYRT_QV(T, D, I) template __global__ void quantize_nhwc_vec<T, D, I>(const T*, i8_t*, I, int, int, float);
#define CUPYRT_QC(T, B, I) template __global__ void quantize_nchw_nhwc<T, B, I>(const T*, i8_t*, int, int, int, int, float, int);
CUPYRT_QV(float, 0, int) CUPYRT_QV(float, 1, int) CUPYRT_QV(half_t, 0, int) CUPYRT_QV(half_t, 1, int)
CUPYRT_QV(float, 0, long long) CUPYRT_QV(float, 1, long long)
CUPYRT_QV(half_t, 0, long long) CUPYRT_QV(half_t, 1, long long)
CUPYRT_QC(float, 4, int) CUPYRT_QC(float, 16, int) CUPYRT_QC(half_t, 4, int) CUPYRT_QC(half_t, 16, int)
CUPYRT_QC(float, 4, long long) CUPYRT_QC(float, 16, long long)
CUPYRT_QC(half_t, 4, long long) CUPYRT_QC(half_t, 16, long long)
#endif
