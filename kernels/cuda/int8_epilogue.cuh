// int8_epilogue.cuh -- the INT8 epilogue of kernels/quantize.py, bit for bit, shared by
// conv_int8.cu (mma.sync) and conv_wgmma.cu (wgmma): one copy of the numerics, so the two
// kernel families cannot drift apart.
//
// Per output element (m, k), float32, every operation rounded on its own
// (__fmul_rn / __fadd_rn: no FMA contraction), in kernels.quantize.epilogue_int8's order:
//   y = float(acc) * (s_in * s_w[k]); + bias[k]; + residual; act; then
//   OUT 0: q = clamp(rint(y * inv_out), -128, 127);  OUT 1: float32;  OUT 2: float16 (cvt.rn)
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
// four codes -> one word, byte e = code e (two byte permutes)
__device__ __forceinline__ unsigned pack4(unsigned a, unsigned b, unsigned c, unsigned d) {
    return __byte_perm(__byte_perm(a, b, 0x0040), __byte_perm(c, d, 0x0040), 0x5410);
}

// eight adjacent channels (8 / 32 / 16 bytes, aligned)
__device__ __forceinline__ void put8(i8_t* p, const float (&y)[8], float inv_out) {
    unsigned q[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) q[e] = q8_byte(__fmul_rn(y[e], inv_out));
    *reinterpret_cast<uint2*>(p) = make_uint2(pack4(q[0], q[1], q[2], q[3]),
                                              pack4(q[4], q[5], q[6], q[7]));
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

// eight adjacent int8 residual codes (8-byte aligned), dequantised: float(code) * rs each
__device__ __forceinline__ void codes8(const i8_t* p, float rs, float (&r)[8]) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    const unsigned w[2] = {u.x, u.y};
#pragma unroll
    for (int e = 0; e < 8; ++e) r[e] = __fmul_rn(code_float(w[e >> 2], e & 3), rs);
}

// epilogue_staged's row loop, specialised on the residual
enum { RES_NONE = 0, RES_SMEM_I8 = 1, RES_ANY = 2 };
template <int V> struct ResTag { static constexpr int value = V; };

// residual element e of a row: res_kind 1 int8 (dequantised), 2 float32, 3 float16
__device__ __forceinline__ float res_at(const void* res, long long i, int kind, float rs) {
    if (kind == 1) return __fmul_rn((float)reinterpret_cast<const i8_t*>(res)[i], rs);
    if (kind == 2) return reinterpret_cast<const float*>(res)[i];
    return h2f(reinterpret_cast<const half_t*>(res)[i]);
}
__device__ __forceinline__ void res8(const void* res, long long i, int kind, float rs,
                                     float (&r)[8]) {
    if (kind == 1) {
        codes8(reinterpret_cast<const i8_t*>(res) + i, rs, r);
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

// The staged epilogue: the CTA's int32 accumulators sit in shared memory as a BM x BN tile
// with a row stride of BN + 8 words; each thread takes 8 adjacent channels of one row at a
// time (16-byte-aligned stores when out_ld, out_off, K and res_ld are multiples of 8).
// sR (optional): the CTA's residual tile already in shared memory, BM rows x BN elements of
// the residual's type, row-major (conv_wgmma.cu prefetches it with cp.async while the
// mainloop runs); without it the residual is read from global memory here, one dependent
// round trip per 8-channel group.
template <int BM, int BN, int THREADS, int OUT>
__device__ __forceinline__ void
epilogue_staged(const int* sC, int tid, int m0, int n0, int M, int K,
                typename OutSel<OUT>::T* __restrict__ out,
                const float* __restrict__ s_w, const float* __restrict__ bias,
                const void* __restrict__ res,
                int out_ld, int out_off, int res_ld, int res_kind, int has_bias,
                float s_in, float res_scale, float inv_out, int act, float alpha, float beta,
                const void* sR = nullptr) {
    typedef typename OutSel<OUT>::T OutT;
    constexpr int LDC = BN + 8;          // int32 words
    const ActLin actf(act, alpha, beta);
    // Into int8 codes, ReLU is max(y, 0) and no activation is y itself: ActLin's general
    // form (a slope and a NaN-keeping clamp, 7 instructions an element) differs from them
    // only on NaN and -0, which both become code 0 either way (cvt.rni.sat.s8 takes NaN to
    // 0). The expand layers are bound by the epilogue's instruction count.
    const bool relu_to_code = OUT == 0 && act == ACT_RELU;
    const bool general_act = !(OUT == 0 && (act == ACT_RELU || act == ACT_NONE));
    const bool vec8 = ((out_ld | out_off | K | (res_kind ? res_ld : 0)) & 7) == 0;
    constexpr int CPR = BN / 8;
    // Aligned case: thread tid keeps one 8-channel group (cg = tid % CPR) for every row it
    // visits, so its per-channel factors s_in * s_w and the bias are loaded and multiplied
    // once, not once per row; the arithmetic per element is the same sequence of roundings.
    static_assert(THREADS % CPR == 0 && BM % (THREADS / CPR) == 0, "rows split evenly");
    if (vec8) {
        constexpr int RSTEP = THREADS / CPR;
        const int cg = tid % CPR, col = n0 + cg * 8;
        if (col >= K) return;
        float sc[8], bi[8];
        {
            const float4 s0 = *reinterpret_cast<const float4*>(s_w + col);
            const float4 s1 = *reinterpret_cast<const float4*>(s_w + col + 4);
            const float sw[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
#pragma unroll
            for (int e = 0; e < 8; ++e) sc[e] = __fmul_rn(s_in, sw[e]);
            const float4 b0 = has_bias ? *reinterpret_cast<const float4*>(bias + col) : make_float4(0.f, 0.f, 0.f, 0.f);
            const float4 b1 = has_bias ? *reinterpret_cast<const float4*>(bias + col + 4) : make_float4(0.f, 0.f, 0.f, 0.f);
            bi[0] = b0.x; bi[1] = b0.y; bi[2] = b0.z; bi[3] = b0.w;
            bi[4] = b1.x; bi[5] = b1.y; bi[6] = b1.z; bi[7] = b1.w;
        }
        // The row loop, specialised on the residual: none, int8 codes in shared memory (the
        // expand layers' case: a shared-memory load and no per-row dispatch on its type), or
        // any other (res8 picks the type per row). Same operations, in the same order.
        auto rows = [&](auto tag) {
            constexpr int RT = decltype(tag)::value;
            constexpr int UNROLL = RT == RES_SMEM_I8 ? 2 : 1;   // the general path: registers
#pragma unroll UNROLL
            for (int r = tid / CPR; r < BM; r += RSTEP) {
                const int m = m0 + r;
                if (m >= M) break;                   // rows only grow
                const int4 a0 = *reinterpret_cast<const int4*>(sC + r * LDC + cg * 8);
                const int4 a1 = *reinterpret_cast<const int4*>(sC + r * LDC + cg * 8 + 4);
                const int ai[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
                float y[8];
#pragma unroll
                for (int e = 0; e < 8; ++e) y[e] = __fmul_rn(__int2float_rn(ai[e]), sc[e]);
                if (has_bias) {
#pragma unroll
                    for (int e = 0; e < 8; ++e) y[e] = __fadd_rn(y[e], bi[e]);
                }
                if constexpr (RT != RES_NONE) {
                    float rv[8];
                    const long long ri = sR ? (long long)r * BN + cg * 8 : (long long)m * res_ld + col;
                    if constexpr (RT == RES_SMEM_I8)
                        codes8(reinterpret_cast<const i8_t*>(sR) + ri, res_scale, rv);
                    else
                        res8(sR ? sR : res, ri, res_kind, res_scale, rv);
#pragma unroll
                    for (int e = 0; e < 8; ++e) y[e] = __fadd_rn(y[e], rv[e]);
                }
                if (relu_to_code) {
#pragma unroll
                    for (int e = 0; e < 8; ++e) y[e] = fmaxf(y[e], 0.f);
                } else if (general_act) {
#pragma unroll
                    for (int e = 0; e < 8; ++e) y[e] = actf(y[e]);
                }
                put8(out + (long long)m * out_ld + out_off + col, y, inv_out);
            }
        };
        if (!res_kind)
            rows(ResTag<RES_NONE>());
        else if (res_kind == 1 && sR && __isShared(sR))
            rows(ResTag<RES_SMEM_I8>());
        else
            rows(ResTag<RES_ANY>());
        return;
    }
    for (int idx = tid; idx < BM * CPR; idx += THREADS) {     // unaligned rows / channels
        const int r = idx / CPR, cg = idx - r * CPR;
        const int m = m0 + r, col = n0 + cg * 8;
        if (m >= M || col >= K) continue;
        const int4 a0 = *reinterpret_cast<const int4*>(sC + r * LDC + cg * 8);
        const int4 a1 = *reinterpret_cast<const int4*>(sC + r * LDC + cg * 8 + 4);
        const int ai[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        OutT* o = out + (long long)m * out_ld + out_off + col;
        const void* rb = sR ? sR : res;
        const long long ri = sR ? (long long)r * BN + cg * 8 : (long long)m * res_ld + col;
        {                                        // unaligned: one element at a time
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                if (col + e < K) {
                    float y = __fmul_rn(__int2float_rn(ai[e]), __fmul_rn(s_in, s_w[col + e]));
                    if (has_bias) y = __fadd_rn(y, bias[col + e]);
                    if (res_kind) y = __fadd_rn(y, res_at(rb, ri + e, res_kind, res_scale));
                    put(o + e, actf(y), inv_out);
                }
            }
        }
    }
}

}  // namespace cupyrt_int8
