// f16_epilogue.cuh -- the FP16 convolutions' staged epilogue (conv_igemm.cu's V2 epilogue,
// which conv_wgmma.cu's FP16 kernels repeat): the same operations in the same order, so a
// kernel that includes it writes what those write, bit for bit (same compile options: the
// `v * scale + bias` below contracts to one FMA there as here).
//
// Per output element (m, k), float32 accumulators:
//   v = acc * scale[k] + bias[k];  v += residual (has_res; the output's type);  act;  store
// The accumulators sit in shared memory as a BM x BN tile with a row stride of BN + 8 floats;
// each thread takes 8 adjacent channels of one row (16 / 32-byte stores) when out_ld, out_off,
// K and res_ld are multiples of 8, else one element at a time (the same values: the split
// into two loops keeps the rare element path from costing the vector path registers).
// sR (optional): the tile's residual already in shared memory, BM x BN row-major.
#pragma once
#include "int8_epilogue.cuh"   // put8 / res8: the 8-channel float32 / float16 loads and stores

namespace cupyrt_f16 {

template <int F32> struct OutSel { typedef half_t T; };
template <> struct OutSel<1> { typedef float T; };

template <int BM, int BN, int THREADS, typename OutT>
__device__ __forceinline__ void
epilogue_staged_f16(const float* sC, int tid, int m0, int n0, int M, int K,
                    OutT* __restrict__ out, const float* __restrict__ scale,
                    const float* __restrict__ bias, const OutT* __restrict__ res,
                    int out_ld, int out_off, int res_ld, int has_res,
                    int act, float alpha, float beta, const OutT* sR = nullptr) {
    using cupyrt_int8::put8;
    using cupyrt_int8::res8;
    constexpr int LDC = BN + 8;                       // floats
    constexpr int CPR = BN / 8;                       // 8-channel groups per row
    constexpr int RES_KIND = sizeof(OutT) == 4 ? 2 : 3;   // res8's float32 / float16
    const ActLin actf(act, alpha, beta);
    // vector path: every group lies inside K and every row's 8 channels are 16-byte aligned
    // (the element path computes the same values one at a time)
    if (((out_ld | out_off | K | (has_res ? res_ld : 0)) & 7) == 0) {
        for (int idx = tid; idx < BM * CPR; idx += THREADS) {
            const int r = idx / CPR, cg = idx - r * CPR;
            const int m = m0 + r, col = n0 + cg * 8;
            if (m >= M || col >= K) continue;
            const float4 a0 = *reinterpret_cast<const float4*>(sC + r * LDC + cg * 8);
            const float4 a1 = *reinterpret_cast<const float4*>(sC + r * LDC + cg * 8 + 4);
            float v[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
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
                res8(sR ? sR + r * BN + cg * 8 : res + (long long)m * res_ld + col, 0, RES_KIND,
                     0.f, rv);
#pragma unroll
                for (int e = 0; e < 8; ++e) v[e] += rv[e];
            }
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] = actf(v[e]);
            put8(out + (long long)m * out_ld + out_off + col, v, 0.f);
        }
        return;
    }
    for (int idx = tid; idx < BM * BN; idx += THREADS) {       // element by element
        const int r = idx / BN, c = idx - r * BN;
        const int m = m0 + r, col = n0 + c;
        if (m >= M || col >= K) continue;
        float t = sC[r * LDC + c] * scale[col] + bias[col];
        if (has_res) t += io<OutT>::load(sR ? sR + r * BN + c : res + (long long)m * res_ld + col);
        io<OutT>::store(out + (long long)m * out_ld + out_off + col, actf(t));
    }
}

}  // namespace cupyrt_f16
