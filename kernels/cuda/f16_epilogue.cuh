// f16_epilogue.cuh -- the one copy of the FP16 convolutions' staged epilogue and its 8-channel
// loads and stores, shared by conv_igemm.cu (V2 tiles), conv_tf32.cu, conv_wgmma.cu (its
// general path) and conv_pw.cu (FP16), so that they write the same values bit for bit.
//
// Per output element (m, k), float32 accumulators staged in shared memory:
//   v = acc * scale[k] + bias[k];  v += residual (has_res; the output's type);  act;  store
// (`v * scale + bias` contracts to one FMA, in every kernel alike: same compile options).
// The accumulators sit as a BM x BN tile with a row stride of BN + 8 floats; THREADS threads
// walk its 8-channel groups; a group is written with 16-byte (half) / 32-byte (float) vector
// stores when its row offsets are aligned (VEC_MASK: the low bits out_ld, out_off and res_ld
// must have clear) and its 8 channels lie inside K, else element by element (same values).
// sR (may be null): the tile's residual already in shared memory, BM x BN row-major.
#pragma once
#include "common.cuh"

namespace cupyrt_f16 {

template <int F32> struct OutSel { typedef half_t T; };
template <> struct OutSel<1> { typedef float T; };

// Eight adjacent channels, 16 bytes (half) or 32 bytes (float), aligned.
__device__ __forceinline__ void store8(half_t* p, const float (&v)[8]) {
    uint4 u;
    u.x = pack_h2(v[0], v[1]); u.y = pack_h2(v[2], v[3]);
    u.z = pack_h2(v[4], v[5]); u.w = pack_h2(v[6], v[7]);
    *reinterpret_cast<uint4*>(p) = u;
}
__device__ __forceinline__ void store8(float* p, const float (&v)[8]) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void load8(const half_t* p, float (&v)[8]) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        v[2 * e] = h2f((half_t)(w[e] & 0xffffu));
        v[2 * e + 1] = h2f((half_t)(w[e] >> 16));
    }
}
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
    const float4 a = reinterpret_cast<const float4*>(p)[0];
    const float4 b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

// The staged tile sC -> out. The default walks 8-channel groups and decides per group:
// vector loads and stores when the rows are aligned and the group lies inside K, else its
// elements one by one. SPLIT decides once for the tile: a loop of elements when a row offset
// or K is not aligned, else the loop of groups without an element path, which keeps a kernel
// near its register limit (conv_pw.cu) from spilling. Same values either way. APPLY8: the
// activation through ActLin::apply8 on the 8 values (conv_wgmma.cu's form) rather than one
// call per value (the same function of each value).
template <int BM, int BN, int THREADS, int VEC_MASK, bool APPLY8, bool SPLIT = false, typename OutT>
__device__ __forceinline__ void
store_tile(const float* sC, int tid, int m0, int n0, int M, int K,
           OutT* __restrict__ out, const float* __restrict__ scale,
           const float* __restrict__ bias, const OutT* __restrict__ res, const OutT* sR,
           int out_ld, int out_off, int res_ld, int has_res, const ActLin& actf) {
    constexpr int LDC = BN + 8;          // floats
    constexpr int CPR = BN / 8;          // 8-channel groups per row
    const int rows = out_ld | out_off | (has_res ? res_ld : 0);
    if (SPLIT && ((rows | K) & VEC_MASK) != 0) {
        for (int idx = tid; idx < BM * BN; idx += THREADS) {
            const int r = idx / BN, c = idx - r * BN;
            const int m = m0 + r, col = n0 + c;
            if (m >= M || col >= K) continue;
            float t = sC[r * LDC + c] * scale[col] + bias[col];
            if (has_res) t += io<OutT>::load(sR ? sR + r * BN + c : res + (long long)m * res_ld + col);
            io<OutT>::store(out + (long long)m * out_ld + out_off + col, actf(t));
        }
        return;
    }
    const bool vec8 = (rows & VEC_MASK) == 0;
    for (int idx = tid; idx < BM * CPR; idx += THREADS) {
        const int r = idx / CPR, cg = idx - r * CPR;
        const int m = m0 + r, col = n0 + cg * 8;
        if (m >= M || col >= K) continue;
        const float4 a0 = *reinterpret_cast<const float4*>(sC + r * LDC + cg * 8);
        const float4 a1 = *reinterpret_cast<const float4*>(sC + r * LDC + cg * 8 + 4);
        float v[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        OutT* o = out + (long long)m * out_ld + out_off + col;
        const OutT* rp = sR ? sR + r * BN + cg * 8 : res + (long long)m * res_ld + col;
        if (SPLIT || (vec8 && col + 8 <= K)) {
            const float4 s0 = *reinterpret_cast<const float4*>(scale + col);
            const float4 s1 = *reinterpret_cast<const float4*>(scale + col + 4);
            const float4 b0 = *reinterpret_cast<const float4*>(bias + col);
            const float4 b1 = *reinterpret_cast<const float4*>(bias + col + 4);
            const float sc[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
            const float bi[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] = v[e] * sc[e] + bi[e];
            if (has_res) {
                float rv[8];
                load8(rp, rv);
#pragma unroll
                for (int e = 0; e < 8; ++e) v[e] += rv[e];
            }
            if constexpr (APPLY8) {
                actf.apply8(v);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) v[e] = actf(v[e]);
            }
            store8(o, v);
        } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                if (col + e < K) {
                    float t = v[e] * scale[col + e] + bias[col + e];
                    if (has_res) t += io<OutT>::load(rp + e);
                    io<OutT>::store(o + e, actf(t));
                }
            }
        }
    }
}

}  // namespace cupyrt_f16
