// conv_dw.cu -- depthwise convolution (groups == C, multiplier 1), NHWC,
// register-blocked: the MobileNet / EfficientNet depthwise layers.
//
// One thread = 8 channels (one 16-byte FP16 vector) x QT adjacent output
// pixels of one output row:
//
//   output row p, strip qs:   q = qs*QT .. qs*QT+QT-1, channels c0 .. c0+7
//
//   input row h = p*sh - ph + r*dh   (r = 0..R-1), columns (SW > 0)
//       w0 = qs*QT*SW - pw
//       |<------------- NCOL = (QT-1)*SW + S ------------->|
//       [w0][w0+1] ...                                      input columns
//        \____ q=0 taps (s=0..S-1) ____/
//              \____ q=1 taps, shifted by SW ____/   ...
//
// so each input vector of a row is loaded once and used by every output of
// the strip that covers it (S/SW times on average instead of once per tap).
// The R*S x 8 weights of the thread's channels are converted to FP32 once and
// kept in registers; accumulation is FP32; the epilogue (per-channel
// scale/bias, activation, cast) is fused and stores 16 bytes per pixel.
//
// SW = 1 or 2: compile-time stride along W, dilation along W must be 1 (the
// launcher checks). SW = 0: generic path, runtime stride/dilation along W, no
// column reuse (each output loads its own S taps).
// Rows (stride/dilation along H) are runtime in every variant; R and S are
// template arguments so the weights live in registers (NVRTC instantiates any
// R x S the launcher asks for).
//
// Work items: N * P * ceil(Q/QT) * (C/8), channel group fastest (a warp reads
// 32 consecutive 16-byte vectors of one pixel when C >= 256, coalesced).
// Requirements (checked by kernels/gpu/conv_dw.py): C % 8 == 0; H*W*C and
// P*Q*out_ld < 2^31 (per-image offsets are 32-bit, the image base 64-bit).
#include "common.cuh"
#include "f16_epilogue.cuh"   // store8

namespace cupyrt_dw {

// Eight consecutive elements (16-byte aligned for half, 32-byte for float) as floats.
__device__ __forceinline__ void load8(const half_t* p, float (&v)[8]) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        v[2 * e] = h2f((half_t)(w[e] & 0xffffu));
        v[2 * e + 1] = h2f((half_t)(w[e] >> 16));
    }
}
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
using cupyrt_f16::store8;           // the FP16 convolutions' 8-channel stores

}  // namespace cupyrt_dw

// Launch: grid = ceil(N*P*ceil(Q/QT)*(C/8) / 128), block = 128.
template <typename T, typename WT, int R, int S, int SW, int QT>
__global__ void __launch_bounds__(128)
dwconv_nhwc_v2(const T* __restrict__ x,          // [N, H, W, C]
               const WT* __restrict__ wt,        // [R, S, C]
               T* __restrict__ out,              // [N, P, Q, out_ld], channels at out_off
               const float* __restrict__ scale,  // [C], 16-byte aligned
               const float* __restrict__ bias,   // [C], 16-byte aligned
               int N, int H, int W, int C, int P, int Q,
               int sh, int sw, int ph, int pw, int dh, int dw,
               int out_ld, int out_off, int act, float alpha, float beta) {
    using namespace cupyrt_dw;
    const int CG = C >> 3;
    const int QS = (Q + QT - 1) / QT;
    const long long total = (long long)N * P * QS * CG;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int cg = (int)(i % CG);
    long long t = i / CG;
    const int qs = (int)(t % QS);
    t /= QS;
    const int p = (int)(t % P);
    const int n = (int)(t / P);
    const int c0 = cg * 8;
    const int q0 = qs * QT;

    float wv[R * S][8];
#pragma unroll
    for (int k = 0; k < R * S; ++k) load8(wt + k * C + c0, wv[k]);

    float acc[QT][8];
#pragma unroll
    for (int q = 0; q < QT; ++q)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[q][e] = 0.f;

    const T* xn = x + (long long)n * H * W * C + c0;
    const int h0 = p * sh - ph;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int h = h0 + r * dh;
        const bool hok = (unsigned)h < (unsigned)H;
        const T* row = xn + (hok ? h : 0) * W * C;
        if constexpr (SW > 0) {
            constexpr int NCOL = (QT - 1) * SW + S;
            const int w0 = q0 * SW - pw;
#pragma unroll
            for (int j = 0; j < NCOL; ++j) {
                const int wi = w0 + j;
                float xv[8];
                if (hok && (unsigned)wi < (unsigned)W) {
                    load8(row + wi * C, xv);
                } else {
#pragma unroll
                    for (int e = 0; e < 8; ++e) xv[e] = 0.f;
                }
#pragma unroll
                for (int q = 0; q < QT; ++q) {
                    const int s = j - q * SW;
                    if (s >= 0 && s < S) {
#pragma unroll
                        for (int e = 0; e < 8; ++e) acc[q][e] = fmaf(xv[e], wv[r * S + s][e], acc[q][e]);
                    }
                }
            }
        } else {
#pragma unroll
            for (int q = 0; q < QT; ++q) {
                const int wq = (q0 + q) * sw - pw;
#pragma unroll
                for (int s = 0; s < S; ++s) {
                    const int wi = wq + s * dw;
                    if (hok && (unsigned)wi < (unsigned)W) {
                        float xv[8];
                        load8(row + wi * C, xv);
#pragma unroll
                        for (int e = 0; e < 8; ++e) acc[q][e] = fmaf(xv[e], wv[r * S + s][e], acc[q][e]);
                    }
                }
            }
        }
    }

    // ---- fused epilogue ----------------------------------------------------
    const ActLin actf(act, alpha, beta);
    const float4 s0 = *reinterpret_cast<const float4*>(scale + c0);
    const float4 s1 = *reinterpret_cast<const float4*>(scale + c0 + 4);
    const float4 b0 = *reinterpret_cast<const float4*>(bias + c0);
    const float4 b1 = *reinterpret_cast<const float4*>(bias + c0 + 4);
    const float sc[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
    const float bi[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
    const bool vec = ((out_ld | out_off) & 7) == 0;
    T* orow = out + ((long long)n * P + p) * Q * out_ld + out_off + c0;
#pragma unroll
    for (int q = 0; q < QT; ++q) {
        if (q0 + q >= Q) break;
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = actf(acc[q][e] * sc[e] + bi[e]);
        T* o = orow + (q0 + q) * out_ld;
        if (vec) {
            store8(o, v);
        } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) io<T>::store(o + e, v[e]);
        }
    }
}

// Instantiations for nvcc's CI compile check (NVRTC instantiates the
// launcher's name expressions on demand; see kernels/gpu/conv_dw.py).
#ifdef CUPYRT_NVCC_INSTANTIATE
#define CUPYRT_DW_INST(T, WT, R, S, SW, QT)                                                   \
    template __global__ void dwconv_nhwc_v2<T, WT, R, S, SW, QT>(                             \
        const T*, const WT*, T*, const float*, const float*, int, int, int, int, int, int,   \
        int, int, int, int, int, int, int, int, int, float, float);
CUPYRT_DW_INST(half_t, half_t, 3, 3, 1, 4)
CUPYRT_DW_INST(half_t, half_t, 3, 3, 2, 4)
CUPYRT_DW_INST(half_t, half_t, 3, 3, 1, 7)
CUPYRT_DW_INST(half_t, half_t, 3, 3, 2, 7)
CUPYRT_DW_INST(half_t, half_t, 3, 3, 1, 2)
CUPYRT_DW_INST(half_t, half_t, 3, 3, 2, 2)
CUPYRT_DW_INST(half_t, half_t, 3, 3, 0, 4)
CUPYRT_DW_INST(half_t, half_t, 5, 5, 1, 4)
CUPYRT_DW_INST(half_t, half_t, 5, 5, 2, 4)
CUPYRT_DW_INST(half_t, half_t, 7, 7, 1, 4)
CUPYRT_DW_INST(half_t, half_t, 7, 7, 2, 4)
CUPYRT_DW_INST(half_t, float, 3, 3, 1, 4)
CUPYRT_DW_INST(float, float, 3, 3, 1, 4)
CUPYRT_DW_INST(float, float, 3, 3, 2, 4)
#undef CUPYRT_DW_INST
#endif
