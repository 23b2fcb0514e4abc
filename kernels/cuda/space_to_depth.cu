// space_to_depth.cu -- the input of a stride-2 convolution rewritten as a stride-1 one
// (kernels/gpu/space_to_depth.py): 2x2 blocks of an NCHW float/half tensor (any element
// strides) become the channels of one NHWC half pixel, zero-padded to CP channels.
//
//   x[n, c, 2P + bh, 2Q + bw]  ->  y[n, P, Q, c*4 + bh*2 + bw]      (bh, bw in {0, 1})
//
//   x plane c:   row 2P   | a b |       y pixel (P, Q):  | a b c d | (c = 0)
//                row 2P+1 | c d |                        | ... c = 1..C-1 | 0 ... 0 |  CP halves
//
// One thread per output pixel: it reads its 4*C input values through the strides (zero
// where 2P+1 >= H or 2Q+1 >= W; 2P < H and 2Q < W hold since Hs <= ceil(H/2), Ws <=
// ceil(W/2)), casts them to half and writes CP halves (CP = 16: 32 bytes). Neighbouring
// threads take neighbouring Q, so in contiguous NCHW a warp reads 64 consecutive
// elements of each (c, row) pair. VEC = 1 (the launcher checked: unit w-stride, W and
// every other stride even, an aligned base) reads the two columns of a block as one pair
// (float2 / half2 loads) instead of two strided scalars.
// Stores: CP/8 16-byte stores where the pixel is 16-byte aligned (a buffer aligned to 16
// bytes: the pixel is 2*CP bytes), else one 2-byte store per channel.
// Launch: grid (ceil(Hs*Ws / 256), N), block 256; Hs*Ws < 2**31 (launcher checks).
//
// space_to_depth_q8<TI, VEC>: the same fold for the INT8 convolutions (C % 16 == 0), int8
// codes out, 16 channels per pixel (one 16-byte store; the launcher checks alignment).
// Float input (TI float / half_t) is quantised on the way with the INT8 input path's
// arithmetic (quantize_int8.cu: q8(__fmul_rn(x, inv)), inv = float32(1) / float32(s)), so
// the codes are those of quantize_nchw_to_nhwc bit for bit; int8 input (TI i8_t: codes an
// INT8 layer wrote) is only folded. Input channel c is one 32-bit word of the pixel:
//
//   word c = | x(2P, 2Q) | x(2P, 2Q+1) | x(2P+1, 2Q) | x(2P+1, 2Q+1) |   (bytes 0..3)
//   words C..3 = 0 (zero codes: quantize(0) = 0, so padding and outside pixels agree)
#include "int8_epilogue.cuh"   // q8, i8_t (includes common.cuh)

template <typename TI> struct S2dLoad;
template <> struct S2dLoad<float> {
    static __device__ __forceinline__ float one(const float* p) { return __ldg(p); }
    static __device__ __forceinline__ void pair(const float* p, float& a, float& b) {
        const float2 f = __ldg(reinterpret_cast<const float2*>(p));
        a = f.x; b = f.y;
    }
};
template <> struct S2dLoad<half_t> {
    static __device__ __forceinline__ float one(const half_t* p) { return h2f(__ldg(p)); }
    static __device__ __forceinline__ void pair(const half_t* p, float& a, float& b) {
        const unsigned u = __ldg(reinterpret_cast<const unsigned*>(p));
        a = h2f((half_t)(u & 0xffffu)); b = h2f((half_t)(u >> 16));
    }
};

template <typename TI, int CP, int VEC>
__global__ void __launch_bounds__(256)
space_to_depth_pad(const TI* __restrict__ x, half_t* __restrict__ y, int C, int H, int W, int Hs,
                   int Ws, long long sn, long long sc, long long sh, long long sw) {
    static_assert(CP == 8 || CP == 16, "CP: 8 or 16 channels");
    constexpr int CMAX = CP / 4;           // input channels that fit in CP
    const int pix = blockIdx.x * 256 + threadIdx.x;
    if (pix >= Hs * Ws) return;
    const int p = pix / Ws, q = pix - p * Ws;
    const TI* xn = x + (long long)blockIdx.y * sn;
    const bool h1 = 2 * p + 1 < H, w1 = 2 * q + 1 < W;
    float v[CP];
#pragma unroll
    for (int i = 0; i < CP; ++i) v[i] = 0.f;
#pragma unroll
    for (int c = 0; c < CMAX; ++c) {
        if (c >= C) break;
#pragma unroll
        for (int bh = 0; bh < 2; ++bh) {
            if (bh == 1 && !h1) break;
            const TI* row = xn + c * sc + (long long)(2 * p + bh) * sh;
            float* o = v + c * 4 + bh * 2;
            if (VEC) {                     // W even: the pair is always inside the row
                S2dLoad<TI>::pair(row + 2 * q, o[0], o[1]);
            } else {
                o[0] = S2dLoad<TI>::one(row + (long long)(2 * q) * sw);
                if (w1) o[1] = S2dLoad<TI>::one(row + (long long)(2 * q + 1) * sw);
            }
        }
    }
    half_t* yp = y + ((long long)blockIdx.y * Hs * Ws + pix) * CP;
    unsigned u[CP / 2];
#pragma unroll
    for (int k = 0; k < CP / 2; ++k) u[k] = pack_h2(v[2 * k], v[2 * k + 1]);
    if ((reinterpret_cast<unsigned long long>(yp) & 15) == 0) {
        uint4* o = reinterpret_cast<uint4*>(yp);
#pragma unroll
        for (int k = 0; k < CP / 8; ++k) o[k] = make_uint4(u[4 * k], u[4 * k + 1], u[4 * k + 2], u[4 * k + 3]);
    } else {
        // a buffer only 2-byte aligned (a view at an odd offset): channel by channel
#pragma unroll
        for (int k = 0; k < CP / 2; ++k) {
            yp[2 * k] = (half_t)(u[k] & 0xffffu);
            yp[2 * k + 1] = (half_t)(u[k] >> 16);
        }
    }
}

// one code per element: float input quantised (the INT8 input path's q8), int8 passed on
template <typename TI> struct S2dCode;
template <> struct S2dCode<float> {
    static __device__ __forceinline__ unsigned one(const float* p, float inv) {
        return (unsigned)cupyrt_int8::q8(__fmul_rn(__ldg(p), inv)) & 0xffu;
    }
    static __device__ __forceinline__ void pair(const float* p, float inv, unsigned& a, unsigned& b) {
        const float2 f = __ldg(reinterpret_cast<const float2*>(p));
        a = (unsigned)cupyrt_int8::q8(__fmul_rn(f.x, inv)) & 0xffu;
        b = (unsigned)cupyrt_int8::q8(__fmul_rn(f.y, inv)) & 0xffu;
    }
};
template <> struct S2dCode<half_t> {
    static __device__ __forceinline__ unsigned one(const half_t* p, float inv) {
        return (unsigned)cupyrt_int8::q8(__fmul_rn(h2f(__ldg(p)), inv)) & 0xffu;
    }
    static __device__ __forceinline__ void pair(const half_t* p, float inv, unsigned& a, unsigned& b) {
        const unsigned u = __ldg(reinterpret_cast<const unsigned*>(p));
        a = (unsigned)cupyrt_int8::q8(__fmul_rn(h2f((half_t)(u & 0xffffu)), inv)) & 0xffu;
        b = (unsigned)cupyrt_int8::q8(__fmul_rn(h2f((half_t)(u >> 16)), inv)) & 0xffu;
    }
};
template <> struct S2dCode<i8_t> {
    static __device__ __forceinline__ unsigned one(const i8_t* p, float) {
        return (unsigned)(unsigned char)__ldg(p);
    }
    static __device__ __forceinline__ void pair(const i8_t* p, float, unsigned& a, unsigned& b) {
        const unsigned short u = __ldg(reinterpret_cast<const unsigned short*>(p));
        a = u & 0xffu; b = u >> 8;
    }
};

template <typename TI, int VEC>
__global__ void __launch_bounds__(256)
space_to_depth_q8(const TI* __restrict__ x, i8_t* __restrict__ y, int C, int H, int W, int Hs,
                  int Ws, long long sn, long long sc, long long sh, long long sw, float inv) {
    const int pix = blockIdx.x * 256 + threadIdx.x;
    if (pix >= Hs * Ws) return;
    const int p = pix / Ws, q = pix - p * Ws;
    const TI* xn = x + (long long)blockIdx.y * sn;
    const bool h1 = 2 * p + 1 < H, w1 = 2 * q + 1 < W;
    unsigned wd[4] = {0u, 0u, 0u, 0u};
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        if (c >= C) break;
#pragma unroll
        for (int bh = 0; bh < 2; ++bh) {
            if (bh == 1 && !h1) break;
            const TI* row = xn + c * sc + (long long)(2 * p + bh) * sh;
            unsigned a = 0u, b = 0u;
            if (VEC) {                     // W even: the pair is always inside the row
                S2dCode<TI>::pair(row + 2 * q, inv, a, b);
            } else {
                a = S2dCode<TI>::one(row + (long long)(2 * q) * sw, inv);
                if (w1) b = S2dCode<TI>::one(row + (long long)(2 * q + 1) * sw, inv);
            }
            wd[c] |= (a | (b << 8)) << (16 * bh);
        }
    }
    *reinterpret_cast<uint4*>(y + ((long long)blockIdx.y * Hs * Ws + pix) * 16) =
        make_uint4(wd[0], wd[1], wd[2], wd[3]);
}

#ifdef CUPYRT_NVCC_INSTANTIATE
#define S2D_INST(TI, CP, VEC) \
    template __global__ void space_to_depth_pad<TI, CP, VEC>(const TI*, half_t*, int, int, int, int, int, \
                                                             long long, long long, long long, long long);
S2D_INST(float, 16, 1)
S2D_INST(float, 16, 0)
S2D_INST(float, 8, 1)
S2D_INST(float, 8, 0)
S2D_INST(half_t, 16, 1)
S2D_INST(half_t, 16, 0)
S2D_INST(half_t, 8, 1)
S2D_INST(half_t, 8, 0)
#define S2D_Q8_INST(TI, VEC) \
    template __global__ void space_to_depth_q8<TI, VEC>(const TI*, i8_t*, int, int, int, int, int, \
                                                        long long, long long, long long, long long, float);
S2D_Q8_INST(float, 1)
S2D_Q8_INST(float, 0)
S2D_Q8_INST(half_t, 1)
S2D_Q8_INST(half_t, 0)
S2D_Q8_INST(i8_t, 1)
S2D_Q8_INST(i8_t, 0)
#endif
