// pooling.cu -- max / average pooling and global average pooling over NHWC.
#include "common.cuh"

// Max / average pooling over NHWC; one thread per output element, channel
// fastest. mode 0 = max, 1 = average. exclude_pad: average divides by the
// taps inside the input (TensorRT's default), else by R*S.
// Max has TensorFlow's MaxPool NaN semantics (kernels/pooling.py): fmaxf skips a
// NaN tap and the max starts at the lowest finite value, so an all-NaN / all--inf
// window gives -FLT_MAX; in FP16 that is -65504 (TF's lowest half), not the -inf
// that -FLT_MAX rounds to, hence the clamp before the half store.
#define CUPYRT_POOL_LOWEST(T) (sizeof(T) == 2 ? -65504.f : -3.402823466e38f)
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
        else acc = fmaxf(acc, CUPYRT_POOL_LOWEST(T));
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

// ---------------------------------------------------------------------------
// Vectorised NHWC pooling (the fast path; pool2d_nhwc above is the fallback
// for C % VEC != 0 or unaligned concat offsets).
//
// Why the scalar kernel ran ~6x off the memory bound on ResNet's stem pool
// ([256,112,112,64] f16 -> [256,56,56,64]): one thread per output *element*,
// three 64-bit div/mod per element (emulated, ~70 instructions each), and nine
// 2-byte loads per element, i.e. 8x more load instructions than 16-byte loads
// need. Here one thread owns VEC consecutive channels of one output pixel
// (8 halves or 4 floats = one 16-byte load per tap), index math is 32-bit
// (the launcher checks N*P*Q*C/VEC < 2^31), and the window is clipped to the
// input once instead of testing every tap.
//
//   thread i -> (n, p, q, cv): cv fastest, so a warp reads 32 x 16 contiguous
//   bytes of one or a few pixels per tap (full 128-byte lines).
// ---------------------------------------------------------------------------
template <typename T> struct Vec16;
template <> struct Vec16<half_t> {
    static constexpr int N = 8;
    static __device__ __forceinline__ void load(const half_t* p, float (&v)[8]) {
        const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
        const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            v[2 * e] = h2f((half_t)(w[e] & 0xffffu));
            v[2 * e + 1] = h2f((half_t)(w[e] >> 16));
        }
    }
    static __device__ __forceinline__ void store(half_t* p, const float (&v)[8]) {
        uint4 u;
        u.x = pack_h2(v[0], v[1]); u.y = pack_h2(v[2], v[3]);
        u.z = pack_h2(v[4], v[5]); u.w = pack_h2(v[6], v[7]);
        *reinterpret_cast<uint4*>(p) = u;
    }
};
template <> struct Vec16<float> {
    static constexpr int N = 4;
    static __device__ __forceinline__ void load(const float* p, float (&v)[4]) {
        const float4 f = __ldg(reinterpret_cast<const float4*>(p));
        v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    }
    static __device__ __forceinline__ void store(float* p, const float (&v)[4]) {
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    }
};

// Thread i of the vector kernels: output pixel m = (n, p, q) and channel vector cv of CV, and
// the window's rows [hb, he) and columns [wb, we) clipped to the input.
struct VecWindow { int m, cv, n, hb, he, wb, we; };

__device__ __forceinline__ VecWindow vec_window(int i, int CV, int H, int W, int R, int S, int P,
                                                int Q, int sh, int sw, int ph, int pw) {
    VecWindow v;
    v.cv = i % CV;
    v.m = i / CV;
    const int q = v.m % Q, t = v.m / Q;
    const int p = t % P;
    v.n = t / P;
    const int h0 = p * sh - ph, w0 = q * sw - pw;
    v.hb = max(h0, 0); v.he = min(h0 + R, H);
    v.wb = max(w0, 0); v.we = min(w0 + S, W);
    return v;
}

// Thread i of the fixed-window kernels: output pixel m = (n, p, q), channel vector cv of CV,
// and the window's first input row and column (unclipped).
struct WindowOrigin { int m, cv, n, h0, w0; };

__device__ __forceinline__ WindowOrigin window_origin(int i, int CV, int P, int Q, int sh, int sw,
                                                      int ph, int pw) {
    WindowOrigin o;
    o.cv = i % CV; o.m = i / CV;
    const int q = o.m % Q, t = o.m / Q;
    const int p = t % P;
    o.n = t / P;
    o.h0 = p * sh - ph; o.w0 = q * sw - pw;
    return o;
}

// Launch: grid_1d(N*P*Q*C/VEC), any block size. Needs C, out_ld, out_off
// multiples of VEC and 16-byte aligned x / out.
template <typename T>
__global__ void pool2d_nhwc_vec(const T* __restrict__ x, T* __restrict__ out,
                                int N, int H, int W, int C, int R, int S, int P, int Q,
                                int sh, int sw, int ph, int pw, int mode, int exclude_pad,
                                int out_ld, int out_off) {
    constexpr int VEC = Vec16<T>::N;
    const int CV = C / VEC;
    const int total = N * P * Q * CV;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const VecWindow v0 = vec_window(i, CV, H, W, R, S, P, Q, sh, sw, ph, pw);
        const int m = v0.m, cv = v0.cv, hb = v0.hb, he = v0.he, wb = v0.wb, we = v0.we;
        const T* xn = x + (long long)v0.n * H * W * C + cv * VEC;
        float acc[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[e] = mode == 0 ? -3.402823466e38f : 0.f;
        for (int h = hb; h < he; ++h) {
            const T* xr = xn + (long long)h * W * C;
            for (int w = wb; w < we; ++w) {
                float v[VEC];
                Vec16<T>::load(xr + w * C, v);
                if (mode == 0) {
#pragma unroll
                    for (int e = 0; e < VEC; ++e) acc[e] = fmaxf(acc[e], v[e]);
                } else {
#pragma unroll
                    for (int e = 0; e < VEC; ++e) acc[e] += v[e];
                }
            }
        }
        if (mode == 1) {
            const int cnt = max(he - hb, 0) * max(we - wb, 0);
            const float inv = 1.f / (float)(exclude_pad ? (cnt > 0 ? cnt : 1) : R * S);
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[e] *= inv;
        } else {
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[e] = fmaxf(acc[e], CUPYRT_POOL_LOWEST(T));
        }
        Vec16<T>::store(out + (long long)m * out_ld + out_off + cv * VEC, acc);
    }
}

// Max pooling with a window fixed at compile time (ResNet's 3x3): pool2d_nhwc_vec's MAX with
// every tap's 16-byte load issued before the first max (each predicated on the image's
// bounds), where its runtime loop keeps one or two in flight. Taps outside the image read as
// -FLT_MAX, which no max changes (the accumulator starts there and fmaxf drops NaN), and the
// maxima run in the same (row, column) order: bit-equal to pool2d_nhwc_vec. Plain C names
// (maxpool2d_nhwc_{f16,f32}_{3x3,2x2}); arguments as maxpool2d_nhwc_i8's (the window's
// equal to the kernel's).
template <typename T, int R, int S>
__device__ __forceinline__ void maxpool_vec_window(const T* __restrict__ x, T* __restrict__ out,
                                                   int N, int H, int W, int C, int P, int Q,
                                                   int sh, int sw, int ph, int pw, int out_ld, int out_off) {
    constexpr int VEC = Vec16<T>::N;
    const int CV = C / VEC;
    const int total = N * P * Q * CV;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const WindowOrigin o = window_origin(i, CV, P, Q, sh, sw, ph, pw);
        const int m = o.m, h0 = o.h0, w0 = o.w0;
        const T* xn = x + (long long)o.n * H * W * C + o.cv * VEC;
        float v[R * S][VEC];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int s = 0; s < S; ++s) {
                const int h = h0 + r, w = w0 + s;
                if ((unsigned)h < (unsigned)H && (unsigned)w < (unsigned)W) {
                    Vec16<T>::load(xn + (long long)(h * W + w) * C, v[r * S + s]);
                } else {
#pragma unroll
                    for (int e = 0; e < VEC; ++e) v[r * S + s][e] = -3.402823466e38f;
                }
            }
        float acc[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
            acc[e] = -3.402823466e38f;
#pragma unroll
            for (int k = 0; k < R * S; ++k) acc[e] = fmaxf(acc[e], v[k][e]);
            acc[e] = fmaxf(acc[e], CUPYRT_POOL_LOWEST(T));
        }
        Vec16<T>::store(out + (long long)m * out_ld + out_off + o.cv * VEC, acc);
    }
}
#define CUPYRT_MAXPOOL_VEC_WINDOW(T, NAME, R, S)                                                         \
    extern "C" __global__ void maxpool2d_nhwc_##NAME##_##R##x##S(                                       \
        const T* __restrict__ x, T* __restrict__ out, int N, int H, int W, int C, int, int, int P,     \
        int Q, int sh, int sw, int ph, int pw, int out_ld, int out_off) {                              \
        maxpool_vec_window<T, R, S>(x, out, N, H, W, C, P, Q, sh, sw, ph, pw, out_ld, out_off);        \
    }
CUPYRT_MAXPOOL_VEC_WINDOW(half_t, f16, 3, 3)
CUPYRT_MAXPOOL_VEC_WINDOW(half_t, f16, 2, 2)
CUPYRT_MAXPOOL_VEC_WINDOW(float, f32, 3, 3)
CUPYRT_MAXPOOL_VEC_WINDOW(float, f32, 2, 2)
#undef CUPYRT_MAXPOOL_VEC_WINDOW

// Max pooling of int8 codes (an INT8 tensor: the codes keep their scale), 16 channels per
// thread as four 32-bit words: the max is taken on the packed bytes (__vmaxs4, signed per
// byte), so a window tap costs one 16-byte load and four instructions (the float path
// unpacked and converted 16 bytes a tap). An empty window (padding >= the window) writes
// code 0. Launch and requirements as pool2d_nhwc_vec.
extern "C" __global__ void maxpool2d_nhwc_i8(const signed char* __restrict__ x, signed char* __restrict__ out,
                                             int N, int H, int W, int C, int R, int S, int P, int Q,
                                             int sh, int sw, int ph, int pw, int out_ld, int out_off) {
    const int CV = C / 16;
    const int total = N * P * Q * CV;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const VecWindow v0 = vec_window(i, CV, H, W, R, S, P, Q, sh, sw, ph, pw);
        const int m = v0.m, cv = v0.cv, hb = v0.hb, he = v0.he, wb = v0.wb, we = v0.we;
        const signed char* xn = x + (long long)v0.n * H * W * C + cv * 16;
        uint4 acc = make_uint4(0x80808080u, 0x80808080u, 0x80808080u, 0x80808080u);
        for (int h = hb; h < he; ++h) {
            const signed char* xr = xn + (long long)h * W * C;
            for (int w = wb; w < we; ++w) {
                const uint4 v = __ldg(reinterpret_cast<const uint4*>(xr + (long long)w * C));
                acc.x = __vmaxs4(acc.x, v.x); acc.y = __vmaxs4(acc.y, v.y);
                acc.z = __vmaxs4(acc.z, v.z); acc.w = __vmaxs4(acc.w, v.w);
            }
        }
        if (hb >= he || wb >= we) acc = make_uint4(0u, 0u, 0u, 0u);
        *reinterpret_cast<uint4*>(out + (long long)m * out_ld + out_off + cv * 16) = acc;
    }
}

// The same max of int8 codes for a window fixed at compile time (ResNet's 3x3): the R*S
// taps' 16-byte loads are all issued before the first max (each predicated on the image's
// bounds, -128 codes outside), so a thread has R*S loads in flight where the runtime loop
// above has one or two. Launch, arguments and requirements as maxpool2d_nhwc_i8 (the
// window arguments must be the kernel's: maxpool2d_nhwc_i8_3x3 / _2x2, plain C names so that
// they build with the module's other kernels in one NVRTC run).
template <int R, int S>
__device__ __forceinline__ void maxpool_i8_window(const signed char* __restrict__ x, signed char* __restrict__ out,
                                                  int N, int H, int W, int C, int P, int Q,
                                                  int sh, int sw, int ph, int pw, int out_ld, int out_off) {
    constexpr unsigned NEG = 0x80808080u;              // four codes of -128
    const int CV = C / 16;
    const int total = N * P * Q * CV;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const WindowOrigin o = window_origin(i, CV, P, Q, sh, sw, ph, pw);
        const int m = o.m, h0 = o.h0, w0 = o.w0;
        const signed char* xn = x + (long long)o.n * H * W * C + o.cv * 16;
        uint4 v[R * S];
        bool any = false;
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int s = 0; s < S; ++s) {
                const int h = h0 + r, w = w0 + s;
                const bool ok = (unsigned)h < (unsigned)H && (unsigned)w < (unsigned)W;
                any |= ok;
                v[r * S + s] = ok ? __ldg(reinterpret_cast<const uint4*>(xn + (long long)(h * W + w) * C))
                                  : make_uint4(NEG, NEG, NEG, NEG);
            }
        uint4 acc = v[0];
#pragma unroll
        for (int k = 1; k < R * S; ++k) {
            acc.x = __vmaxs4(acc.x, v[k].x); acc.y = __vmaxs4(acc.y, v[k].y);
            acc.z = __vmaxs4(acc.z, v[k].z); acc.w = __vmaxs4(acc.w, v[k].w);
        }
        if (!any) acc = make_uint4(0u, 0u, 0u, 0u);    // an empty window: code 0
        *reinterpret_cast<uint4*>(out + (long long)m * out_ld + out_off + o.cv * 16) = acc;
    }
}
#define CUPYRT_MAXPOOL_I8_WINDOW(R, S)                                                                   \
    extern "C" __global__ void maxpool2d_nhwc_i8_##R##x##S(                                             \
        const signed char* __restrict__ x, signed char* __restrict__ out, int N, int H, int W, int C,  \
        int, int, int P, int Q, int sh, int sw, int ph, int pw, int out_ld, int out_off) {             \
        maxpool_i8_window<R, S>(x, out, N, H, W, C, P, Q, sh, sw, ph, pw, out_ld, out_off);            \
    }
CUPYRT_MAXPOOL_I8_WINDOW(3, 3)
CUPYRT_MAXPOOL_I8_WINDOW(2, 2)
#undef CUPYRT_MAXPOOL_I8_WINDOW

// Global average over HW, vectorised: block (32, 8) = 32 channel vectors x 8
// slices of HW; grid (ceil(C / VEC / 32), N). FP32 accumulation, the 8 partial
// sums of a channel vector added in shared memory in a fixed order (deterministic).
// A thread per (n, c) (the scalar kernel) left batch 1 with 2048 threads and
// every thread 49 dependent 2-byte loads.
template <typename T>
__global__ void __launch_bounds__(256)
global_avgpool_nhwc_vec(const T* __restrict__ x, T* __restrict__ out, int N, int HW, int C) {
    constexpr int VEC = Vec16<T>::N;
    __shared__ float part[8][32 * VEC + 1];
    const int CV = C / VEC;
    const int cv = blockIdx.x * 32 + threadIdx.x;
    const int n = blockIdx.y;
    float acc[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] = 0.f;
    if (cv < CV) {
        const T* p = x + (long long)n * HW * C + cv * VEC;
        for (int j = threadIdx.y; j < HW; j += 8) {
            float v[VEC];
            Vec16<T>::load(p + (long long)j * C, v);
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[e] += v[e];
        }
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) part[threadIdx.y][threadIdx.x * VEC + e] = acc[e];
    __syncthreads();
    if (threadIdx.y == 0 && cv < CV) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
            float s = 0.f;
#pragma unroll
            for (int y = 0; y < 8; ++y) s += part[y][threadIdx.x * VEC + e];
            acc[e] = s / (float)HW;
        }
        Vec16<T>::store(out + (long long)n * C + cv * VEC, acc);
    }
}

#ifdef CUPYRT_NVCC_INSTANTIATE
template __global__ void pool2d_nhwc<half_t>(const half_t*, half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void pool2d_nhwc<float>(const float*, float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void global_avgpool_nhwc<half_t>(const half_t*, half_t*, int, int, int);
template __global__ void global_avgpool_nhwc<float>(const float*, float*, int, int, int);
template __global__ void pool2d_nhwc_vec<half_t>(const half_t*, half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void pool2d_nhwc_vec<float>(const float*, float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void global_avgpool_nhwc_vec<half_t>(const half_t*, half_t*, int, int, int);
template __global__ void global_avgpool_nhwc_vec<float>(const float*, float*, int, int, int);
#endif
