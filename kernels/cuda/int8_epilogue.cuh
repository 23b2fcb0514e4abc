// int8_epilogue.cuh -- the INT8 epilogue of kernels/quantize.py, bit for bit, shared by
// conv_int8.cu (mma.sync), conv_int8_smallc.cu, conv_wgmma.cu (wgmma) and conv_pw.cu (the
// persistent 1x1 and 3x3): one copy of the numerics, so the kernel families cannot drift apart.
//
// Per output element (m, k), float32, in kernels.quantize.epilogue_int8's order (each
// __fmul_rn / __fmaf_rn rounds once; epilogue_staged below has the per-channel coefficients):
//   y = fma(float(acc), a[k], b[k]);  y = fma(residual, rs, y);  then
//   folded (int8 out, ReLU / none): q = clamp(rint(max(y, 0) or y), -128, 127)
//   otherwise: act;  OUT 0: q = clamp(rint(y * inv_out), -128, 127);  OUT 1: float32;
//   OUT 2: float16 (cvt.rn)
#pragma once
#include "common.cuh"

typedef signed char i8_t;

namespace cupyrt_int8 {

// float -> int8 code: saturate(rint(v)), rint half to even (cvt.rni; the
// int32 conversion saturates, so +-inf and huge values clamp correctly).
__device__ __forceinline__ int q8(float v) {
    int i;
    asm("cvt.rni.sat.s32.f32 %0, %1;" : "=r"(i) : "f"(v));
    return min(max(i, -128), 127);
}

template <int OUT> struct OutSel { typedef i8_t T; };
template <> struct OutSel<1> { typedef float T; };
template <> struct OutSel<2> { typedef half_t T; };

// one output element from the finished float32 epilogue value
__device__ __forceinline__ void put(i8_t* p, float y, float inv_out) {
    *p = (i8_t)q8(__fmul_rn(y, inv_out));
}
__device__ __forceinline__ void put(float* p, float y, float) { *p = y; }
__device__ __forceinline__ void put(half_t* p, float y, float) { *p = f2h(y); }

// float -> int8 code in one conversion: the same rint-half-even and saturation as q8
// (cvt to .s8 clamps to [-128, 127]; NaN -> 0), the code in the low byte. Into a 32-bit
// register: through a 16-bit one the compiler adds two byte permutes an element.
__device__ __forceinline__ unsigned q8_byte(float v) {
    unsigned s;
    asm("cvt.rni.sat.s8.f32 %0, %1;" : "=r"(s) : "f"(v));
    return s;
}
// two values -> two int8 codes in the low half-word (byte 0 from lo, byte 1 from hi), the high
// half-word from rest's low one: rint half to even, saturated (cvt.rni to int32 saturates, NaN
// -> 0; cvt.pack.sat clamps to [-128, 127]), as q8_byte. ptxas makes the pair one F2IP, a
// max(v, 0) in front of both its .RELU: two instructions for four codes where one conversion
// an element and three byte permutes took eleven with the max
__device__ __forceinline__ unsigned codes2(float lo, float hi, unsigned rest) {
    int a, b;
    unsigned d;
    asm("cvt.rni.s32.f32 %0, %1;" : "=r"(a) : "f"(lo));
    asm("cvt.rni.s32.f32 %0, %1;" : "=r"(b) : "f"(hi));
    asm("cvt.pack.sat.s8.s32.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(b), "r"(a), "r"(rest));
    return d;
}
// four values -> one word of codes, byte e from value e
__device__ __forceinline__ unsigned codes4(float v0, float v1, float v2, float v3) {
    return codes2(v0, v1, codes2(v2, v3, 0u));
}

// eight adjacent channels (8 / 32 / 16 bytes, aligned)
__device__ __forceinline__ void put8(i8_t* p, const float (&y)[8], float inv_out) {
    float v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __fmul_rn(y[e], inv_out);
    *reinterpret_cast<uint2*>(p) = make_uint2(codes4(v[0], v[1], v[2], v[3]),
                                              codes4(v[4], v[5], v[6], v[7]));
}
__device__ __forceinline__ void put8(float* p, const float (&y)[8], float) {
    reinterpret_cast<float4*>(p)[0] = make_float4(y[0], y[1], y[2], y[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(y[4], y[5], y[6], y[7]);
}
__device__ __forceinline__ void put8(half_t* p, const float (&y)[8], float) {
    uint4 u;
    u.x = pack_h2(y[0], y[1]); u.y = pack_h2(y[2], y[3]);
    u.z = pack_h2(y[4], y[5]); u.w = pack_h2(y[6], y[7]);
    *reinterpret_cast<uint4*>(p) = u;
}

// int8 code e (0..3) of the word w as a float: one byte permute sign-extends it (PTX prmt's
// generic mode: a selector nibble with its top bit set replicates that byte's sign;
// __byte_perm masks the nibbles to 3 bits, so no sign there), and the int32 -> float32
// conversion then runs on the ALU (I2FP), not the conversion unit
__device__ __forceinline__ float code_float(unsigned w, int e) {
    int v;
    asm("prmt.b32 %0, %1, 0, %2;" : "=r"(v) : "r"(w), "r"(e | ((e | 8) * 0x1110)));
    return __int2float_rn(v);
}

// eight adjacent int8 residual codes (8-byte aligned) as floats (the scale goes into the
// fused multiply-add that adds them)
__device__ __forceinline__ void codes8(const i8_t* p, float (&r)[8]) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    const unsigned w[2] = {u.x, u.y};
#pragma unroll
    for (int e = 0; e < 8; ++e) r[e] = code_float(w[e >> 2], e & 3);
}

// epilogue_staged's row loop, specialised on the residual ...
enum { RES_NONE = 0, RES_SMEM_I8 = 1, RES_ANY = 2 };
template <int V> struct ResTag { static constexpr int value = V; };
// ... and on the activation: into int8 codes, ReLU and none with the output scale folded
// into the coefficients; anything else (or a float output) through ActLin
enum { ACT_TAG_RELU_CODE = 0, ACT_TAG_NONE_CODE = 1, ACT_TAG_GENERAL = 2 };
template <int V> struct ActTag { static constexpr int value = V; };

// residual element i as a float, before its scale (rs): res_kind 1 an int8 code,
// 2 float32, 3 float16
__device__ __forceinline__ float res_at(const void* res, long long i, int kind) {
    if (kind == 1) return (float)reinterpret_cast<const i8_t*>(res)[i];
    if (kind == 2) return reinterpret_cast<const float*>(res)[i];
    return h2f(reinterpret_cast<const half_t*>(res)[i]);
}
__device__ __forceinline__ void res8(const void* res, long long i, int kind, float (&r)[8]) {
    if (kind == 1) {
        codes8(reinterpret_cast<const i8_t*>(res) + i, r);
    } else if (kind == 2) {
        const float* p = reinterpret_cast<const float*>(res) + i;
        const float4 a = reinterpret_cast<const float4*>(p)[0];
        const float4 b = reinterpret_cast<const float4*>(p)[1];
        r[0] = a.x; r[1] = a.y; r[2] = a.z; r[3] = a.w;
        r[4] = b.x; r[5] = b.y; r[6] = b.z; r[7] = b.w;
    } else {
        const uint4 u = *reinterpret_cast<const uint4*>(reinterpret_cast<const half_t*>(res) + i);
        const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            r[2 * e] = h2f((half_t)(w[e] & 0xffffu));
            r[2 * e + 1] = h2f((half_t)(w[e] >> 16));
        }
    }
}

// eight finished values in code units -> eight int8 codes; RELU: of max(y, 0)
template <bool RELU>
__device__ __forceinline__ void put8_codes(i8_t* p, const float (&y)[8]) {
    float v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = RELU ? fmaxf(y[e], 0.f) : y[e];
    *reinterpret_cast<uint2*>(p) = make_uint2(codes4(v[0], v[1], v[2], v[3]),
                                              codes4(v[4], v[5], v[6], v[7]));
}

// The per-channel coefficients of the epilogue (kernels.quantize.epilogue_int8 computes the
// same float32 values): a = s_in * s_w[k], b = bias[k] (0 without one), rs = the residual's
// scale (an int8 residual's s_res, 1 for a float residual). Folded (int8 codes out, ReLU or
// no activation): each is also multiplied by inv_out, so the sums come out in code units.
__device__ __forceinline__ bool folds(int OUT, int act) {
    return OUT == 0 && (act == ACT_RELU || act == ACT_NONE);
}
// one channel's a and b from its weight scale sw and bias bv (0 without one)
__device__ __forceinline__ void coefficients(float sw, float bv, float s_in, float inv_out, bool fold,
                                             float& a, float& b) {
    a = __fmul_rn(s_in, sw);
    b = bv;
    if (fold) {
        a = __fmul_rn(a, inv_out);
        b = __fmul_rn(b, inv_out);
    }
}

// The coefficients a[k], b[k] of channels n0 .. n0 + count - 1 into shared memory,
// sCoef[i] = a, sCoef[count + i] = b (0 past K), folded as epilogue_staged folds them: for a
// kernel that runs many tiles of the same channels (conv_pw.cu), once, instead of loading
// s_w and the bias and multiplying them out in every tile's epilogue.
template <int OUT>
__device__ __forceinline__ void
fill_coefficients(float* sCoef, int count, int n0, int K, const float* __restrict__ s_w,
                  const float* __restrict__ bias, int has_bias, float s_in, float inv_out,
                  int act, int tid, int threads) {
    const bool fold = folds(OUT, act);
    for (int i = tid; i < count; i += threads) {
        const int k = n0 + i;
        float a = 0.f, b = 0.f;
        if (k < K) coefficients(s_w[k], has_bias ? bias[k] : 0.f, s_in, inv_out, fold, a, b);
        sCoef[i] = a;
        sCoef[count + i] = b;
    }
}

// The staged epilogue: the CTA's int32 accumulators sit in shared memory as a BM x BN tile
// with a row stride of BN + 8 words; each thread takes 8 adjacent channels of one row at a
// time (16-byte-aligned stores when out_ld, out_off, K and res_ld are multiples of 8).
// sR (optional): the CTA's residual tile already in shared memory, BM rows x BN elements of
// the residual's type, row-major (conv_wgmma.cu prefetches it with cp.async while the
// mainloop runs); without it the residual is read from global memory here, one dependent
// round trip per 8-channel group. sSc / sBi (optional): the coefficients a and b of
// columns n0 .. n0 + BN - 1 in shared memory (fill_coefficients), instead of s_w and bias.
//
// Per element, float32, two fused multiply-adds (one rounding each):
//   y = fma(float(acc), a, b);  y = fma(residual, rs, y)  (with a residual);  then
//   folded:   y = max(y, 0) (ReLU);  q = cvt.rni.sat.s8(y)
//   general:  y = act(y);  OUT 0: q = cvt.rni.sat.s8(y * inv_out);  OUT 1/2: y as float / half
// The expand layers (1x1, a short reduction, a wide int8 output) are bound by this loop's
// instructions: seven an element on the folded path (two conversions, two FMAs, the
// residual's sign extension, the max and the int8 conversion), where separate roundings
// took ten.
template <int BM, int BN, int THREADS, int OUT>
__device__ __forceinline__ void
epilogue_staged(const int* sC, int tid, int m0, int n0, int M, int K,
                typename OutSel<OUT>::T* __restrict__ out,
                const float* __restrict__ s_w, const float* __restrict__ bias,
                const void* __restrict__ res,
                int out_ld, int out_off, int res_ld, int res_kind, int has_bias,
                float s_in, float res_scale, float inv_out, int act, float alpha, float beta,
                const void* sR = nullptr, const float* sSc = nullptr, const float* sBi = nullptr) {
    typedef typename OutSel<OUT>::T OutT;
    constexpr int LDC = BN + 8;          // int32 words
    const ActLin actf(act, alpha, beta);
    // Into int8 codes, ReLU is max(y, 0) and no activation is y itself: ActLin's general
    // form (a slope and a NaN-keeping clamp, 7 instructions an element) differs from them
    // only on NaN and -0, which both become code 0 either way (cvt.rni.sat.s8 takes NaN to 0).
    const bool fold = folds(OUT, act);
    const float f_out = fold ? inv_out : 1.f;
    const float rs = res_kind == 1 ? (fold ? __fmul_rn(res_scale, inv_out) : res_scale) : f_out;
    const bool vec8 = ((out_ld | out_off | K | (res_kind ? res_ld : 0)) & 7) == 0;
    constexpr int CPR = BN / 8;
    // Aligned case: thread tid keeps one 8-channel group (cg = tid % CPR) for every row it
    // visits, so its per-channel coefficients are loaded and computed once, not once per row.
    static_assert(THREADS % CPR == 0 && BM % (THREADS / CPR) == 0, "rows split evenly");
    if (vec8) {
        constexpr int RSTEP = THREADS / CPR;
        const int cg = tid % CPR, col = n0 + cg * 8;
        if (col >= K) return;
        float sc[8], bi[8];
        if (sSc) {                               // fill_coefficients' table (column n0 first)
            const float4 a0 = *reinterpret_cast<const float4*>(sSc + cg * 8);
            const float4 a1 = *reinterpret_cast<const float4*>(sSc + cg * 8 + 4);
            const float4 b0 = *reinterpret_cast<const float4*>(sBi + cg * 8);
            const float4 b1 = *reinterpret_cast<const float4*>(sBi + cg * 8 + 4);
            sc[0] = a0.x; sc[1] = a0.y; sc[2] = a0.z; sc[3] = a0.w;
            sc[4] = a1.x; sc[5] = a1.y; sc[6] = a1.z; sc[7] = a1.w;
            bi[0] = b0.x; bi[1] = b0.y; bi[2] = b0.z; bi[3] = b0.w;
            bi[4] = b1.x; bi[5] = b1.y; bi[6] = b1.z; bi[7] = b1.w;
        } else {
            const float4 s0 = *reinterpret_cast<const float4*>(s_w + col);
            const float4 s1 = *reinterpret_cast<const float4*>(s_w + col + 4);
            const float sw[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
            const float4 b0 = has_bias ? *reinterpret_cast<const float4*>(bias + col) : make_float4(0.f, 0.f, 0.f, 0.f);
            const float4 b1 = has_bias ? *reinterpret_cast<const float4*>(bias + col + 4) : make_float4(0.f, 0.f, 0.f, 0.f);
            const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int e = 0; e < 8; ++e) coefficients(sw[e], bv[e], s_in, inv_out, fold, sc[e], bi[e]);
        }
        // The row loop, specialised on the residual (none; int8 codes in shared memory, the
        // expand layers' case: a shared-memory load and no per-row dispatch on its type; any
        // other: res8 picks the type per row) and, for the first two, on the activation, so
        // the hot rows carry no dispatch. The output pointer steps RSTEP rows at a time.
        const int rows_here = min(BM, M - m0);
        auto rows = [&](auto rtag, auto atag) {
            constexpr int RT = decltype(rtag)::value;
            constexpr int AT = decltype(atag)::value;
            constexpr int UNROLL = RT == RES_SMEM_I8 ? 2 : 1;   // the general path: registers
            int r = tid / CPR;
            OutT* o = out + (long long)(m0 + r) * out_ld + out_off + col;
            const long long o_step = (long long)RSTEP * out_ld;
#pragma unroll UNROLL
            for (; r < rows_here; r += RSTEP, o += o_step) {
                const int4 a0 = *reinterpret_cast<const int4*>(sC + r * LDC + cg * 8);
                const int4 a1 = *reinterpret_cast<const int4*>(sC + r * LDC + cg * 8 + 4);
                const int ai[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
                float y[8];
#pragma unroll
                for (int e = 0; e < 8; ++e) y[e] = __fmaf_rn(__int2float_rn(ai[e]), sc[e], bi[e]);
                if constexpr (RT != RES_NONE) {
                    float rv[8];
                    if constexpr (RT == RES_SMEM_I8) {
                        codes8(reinterpret_cast<const i8_t*>(sR) + (long long)r * BN + cg * 8, rv);
                    } else {
                        const long long ri = sR ? (long long)r * BN + cg * 8
                                                : (long long)(m0 + r) * res_ld + col;
                        res8(sR ? sR : res, ri, res_kind, rv);
                    }
#pragma unroll
                    for (int e = 0; e < 8; ++e) y[e] = __fmaf_rn(rv[e], rs, y[e]);
                }
                if constexpr (AT == ACT_TAG_GENERAL) {
                    if constexpr (OUT == 0) {
                        if (fold) {                   // RES_ANY's one loop: folded coefficients
                            if (act == ACT_RELU)
                                put8_codes<true>(o, y);
                            else
                                put8_codes<false>(o, y);
                            continue;
                        }
                    }
#pragma unroll
                    for (int e = 0; e < 8; ++e) y[e] = actf(y[e]);
                    put8(o, y, inv_out);
                } else {                              // (AT != GENERAL: OUT 0 only)
                    put8_codes<AT == ACT_TAG_RELU_CODE>(reinterpret_cast<i8_t*>(o), y);
                }
            }
        };
        auto by_act = [&](auto rtag) {
            // a residual of any other kind is rare: one loop, ActLin for every activation
            constexpr bool codes = decltype(rtag)::value != RES_ANY && OUT == 0;
            if (codes && act == ACT_RELU)
                rows(rtag, ActTag<ACT_TAG_RELU_CODE>());
            else if (codes && act == ACT_NONE)
                rows(rtag, ActTag<ACT_TAG_NONE_CODE>());
            else
                rows(rtag, ActTag<ACT_TAG_GENERAL>());
        };
        if (!res_kind)
            by_act(ResTag<RES_NONE>());
        else if (res_kind == 1 && sR && __isShared(sR))
            by_act(ResTag<RES_SMEM_I8>());
        else
            by_act(ResTag<RES_ANY>());
        return;
    }
    for (int idx = tid; idx < BM * CPR; idx += THREADS) {     // unaligned rows / channels
        const int r = idx / CPR, cg = idx - r * CPR;
        const int m = m0 + r, col = n0 + cg * 8;
        if (m >= M || col >= K) continue;
        const int* ai = sC + r * LDC + cg * 8;
        OutT* o = out + (long long)m * out_ld + out_off + col;
        const void* rb = sR ? sR : res;
        const long long ri = sR ? (long long)r * BN + cg * 8 : (long long)m * res_ld + col;
#pragma unroll 1
        for (int e = 0; e < 8; ++e) {                          // one element at a time (rare)
            if (col + e < K) {
                float a, b;
                coefficients(s_w[col + e], has_bias ? bias[col + e] : 0.f, s_in, inv_out, fold, a, b);
                float y = __fmaf_rn(__int2float_rn(ai[e]), a, b);
                if (res_kind) y = __fmaf_rn(res_at(rb, ri + e, res_kind), rs, y);
                if constexpr (OUT == 0) {
                    if (fold) {
                        o[e] = (i8_t)q8_byte(act == ACT_RELU ? fmaxf(y, 0.f) : y);
                        continue;
                    }
                }
                put(o + e, actf(y), inv_out);
            }
        }
    }
}

}  // namespace cupyrt_int8
