// attention.cu -- fused scaled dot-product attention for the Attention layer,
// flash-style (Dao et al., FlashAttention-2, 2023): the Sq x Sk scores never
// leave the registers.
//
//   O[b] = softmax(scale * Q[b] K[b]^T, last axis) V[b]        b = n * heads + h
//
// Q (Sq x D), K (Sk x D), V (Sk x D) FP16, O FP16 or FP32; FP32 accumulation.
// Each of Q, K, V, O is addressed through (n, h, row) strides in elements, the
// head dim contiguous: the engine's (N, heads, S, D) tensors, or views of an
// (N, S, heads * D) buffer, read in place.
//
// One CTA per (b, BM = 16 * WARPS query rows); warp w owns query rows
// [16w, 16w + 16) of the tile and keeps them in registers as mma.sync A
// fragments. K/V tiles of BN keys stream through shared memory in a two-stage
// cp.async ring (tile j + 1 loads while tile j is multiplied):
//
//   S  = Q K^T          mma.m16n8k16, K rows read by ldmatrix (K is B "col")
//   online softmax      running row max m and row sum l, in base 2:
//                       p = 2^(s * scale * log2 e - m), acc *= 2^(m_old - m)
//   O += P V            P re-packed from S's accumulators as FP16 A fragments,
//                       V read by ldmatrix.trans
//   O /= l              at the end, after l is summed over the row's 4 lanes
//
// Semantics are SoftMax's (kernels/reduce.py, TensorFlow's): a NaN score makes
// its row NaN (2^(NaN) poisons l), +Inf makes it NaN (Inf - Inf), -Inf weighs 0,
// a row of -Inf only is NaN (0 / 0). The usual guard: while a row's running max
// is still -Inf the exponent uses 0 instead, so a tile of -Inf scores before a
// finite one adds 0, not NaN. Keys past Sk are -Inf; their V rows are zero-filled.
//
// mma.m16n8k16 fragments (g = lane / 4, t = lane % 4): A a0 (g, 2t..2t+1),
// a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..); B b0 (k 2t..2t+1, n g),
// b1 (k 2t+8.., n g); C c0,c1 (g, 2t..2t+1), c2,c3 (g+8, 2t..2t+1).
// Shared rows are padded by 8 halves: the 8 rows of an ldmatrix phase then fall
// in 8 different 16-byte bank groups.
#include "common.cuh"
#include "ptx.cuh"

namespace cupyrt_attn {

using namespace cupyrt_ptx;   // smem_u32, cp.async, ldmatrix, mma.sync (ptx.cuh)

// -Inf without math.h (NVRTC gets no system headers)
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ void store2(half_t* p, float v0, float v1) {
    *reinterpret_cast<unsigned*>(p) = pack_h2(v0, v1);
}
__device__ __forceinline__ void store2(float* p, float v0, float v1) {
    *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
}

// ROWS rows of D halves from src (row stride ld) into smem [ROWS][D + 8]; rows
// at or past `valid` are zero-filled (cp.async src-size 0; the address stays a
// valid one, row 0).
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void load_rows(half_t* dst, const half_t* src, long long ld, int valid) {
    constexpr int CHUNKS = D / 8;
    for (int c = threadIdx.x; c < ROWS * CHUNKS; c += THREADS) {
        const int r = c / CHUNKS, col = (c % CHUNKS) * 8;
        const bool ok = r < valid;
        cp_async16(smem_u32(dst + r * (D + 8) + col), src + (ok ? r * ld : 0) + col, ok ? 16 : 0);
    }
}

}  // namespace cupyrt_attn

template <int D, int WARPS, int BN, typename OutT>
__global__ void __launch_bounds__(WARPS * 32, 1)
attention_f16(const half_t* __restrict__ q, const half_t* __restrict__ k,
              const half_t* __restrict__ v, OutT* __restrict__ o, int heads, int sq, int sk,
              long long q_sn, long long q_sh, long long q_ss,
              long long k_sn, long long k_sh, long long k_ss,
              long long v_sn, long long v_sh, long long v_ss,
              long long o_sn, long long o_sh, long long o_ss, float scale_log2) {
    using namespace cupyrt_attn;
    static_assert(D % 32 == 0 && BN % 16 == 0, "head dim a multiple of 32, BN of 16");
    constexpr int BM = 16 * WARPS, THREADS = 32 * WARPS, LDS = D + 8;
    constexpr int KS = D / 16;        // k-steps of S = Q K^T
    constexpr int NT = BN / 8;        // 8-key column tiles of S
    constexpr int DT = D / 8;         // 8-wide column tiles of O
    extern __shared__ __align__(16) unsigned char smem_raw[];
    half_t* sQ = reinterpret_cast<half_t*>(smem_raw);     // [BM][LDS]
    half_t* sK = sQ + BM * LDS;                             // [2][BN][LDS]
    half_t* sV = sK + 2 * BN * LDS;                         // [2][BN][LDS]

    const int b = blockIdx.x;
    const int n = b / heads, h = b - n * heads;
    const int m0 = blockIdx.y * BM;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const half_t* qb = q + n * q_sn + h * q_sh + (long long)m0 * q_ss;
    const half_t* kb = k + n * k_sn + h * k_sh;
    const half_t* vb = v + n * v_sn + h * v_sh;
    const int tiles = (sk + BN - 1) / BN;

    load_rows<BM, D, THREADS>(sQ, qb, q_ss, sq - m0);
    load_rows<BN, D, THREADS>(sK, kb, k_ss, sk);
    load_rows<BN, D, THREADS>(sV, vb, v_ss, sk);
    cp_async_commit();

    unsigned qf[KS][4];
    float acc[DT][4];
#pragma unroll
    for (int i = 0; i < DT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    float row_max[2] = {neg_inf(), neg_inf()}, row_sum[2] = {0.f, 0.f};

    for (int j = 0; j < tiles; ++j) {
        const int st = j & 1;
        if (j + 1 < tiles) {          // the next tile's K/V into the other stage
            const long long key = (long long)(j + 1) * BN;
            load_rows<BN, D, THREADS>(sK + (st ^ 1) * BN * LDS, kb + key * k_ss, k_ss, sk - (j + 1) * BN);
            load_rows<BN, D, THREADS>(sV + (st ^ 1) * BN * LDS, vb + key * v_ss, v_ss, sk - (j + 1) * BN);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (j == 0) {                 // this warp's 16 query rows, kept as A fragments
#pragma unroll
            for (int ks = 0; ks < KS; ++ks)
                ldmatrix_x4(qf[ks], smem_u32(sQ + (warp * 16 + (lane & 15)) * LDS + ks * 16 + (lane >> 4) * 8));
        }
        const half_t* Ks = sK + st * BN * LDS;
        const half_t* Vs = sV + st * BN * LDS;

        // S = Q K^T: one ldmatrix.x4 gives an 8-key tile's B fragments for two k-steps
        float s[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < KS; ks += 2) {
                unsigned r[4];
                ldmatrix_x4(r, smem_u32(Ks + (nt * 8 + (lane & 7)) * LDS + ks * 16 + (lane >> 3) * 8));
                mma_16816(s[nt], qf[ks], r[0], r[1]);
                mma_16816(s[nt], qf[ks + 1], r[2], r[3]);
            }
        }

        // online softmax, rows g (i = 0) and g + 8 (i = 1) of the warp's 16
        const int key0 = j * BN + 2 * t;
        float tile_max[2] = {neg_inf(), neg_inf()};
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const bool valid = key0 + nt * 8 + (e & 1) < sk;
                s[nt][e] = valid ? s[nt][e] * scale_log2 : neg_inf();
                tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[nt][e]);   // drops NaN: 2^NaN poisons l
            }
        }
        float m_use[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 1));
            tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 2));
            const float m_new = fmaxf(row_max[i], tile_max[i]);
            m_use[i] = m_new == neg_inf() ? 0.f : m_new;
            const float rescale = exp2f(row_max[i] - m_use[i]);
            row_max[i] = m_new;
            row_sum[i] *= rescale;
#pragma unroll
            for (int dt = 0; dt < DT; ++dt) {
                acc[dt][2 * i] *= rescale;
                acc[dt][2 * i + 1] *= rescale;
            }
        }
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[nt][e] = exp2f(s[nt][e] - m_use[e >> 1]);
                row_sum[e >> 1] += s[nt][e];
            }
        }

        // O += P V: the accumulators of key tiles 2kk and 2kk+1 are the A fragment of k-step kk
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            unsigned pa[4];
            pa[0] = pack_h2(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack_h2(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack_h2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack_h2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < DT / 2; ++dp) {
                unsigned r[4];
                const int mi = lane >> 3;
                ldmatrix_x4_trans(r, smem_u32(Vs + (kk * 16 + (lane & 7) + (mi & 1) * 8) * LDS
                                                 + dp * 16 + (mi >> 1) * 8));
                mma_16816(acc[2 * dp], pa, r[0], r[1]);
                mma_16816(acc[2 * dp + 1], pa, r[2], r[3]);
            }
        }
        __syncthreads();              // this stage is refilled by the next iteration
    }

    // O = acc / l, l summed over the 4 lanes of a row (0 / 0 for a row of -Inf: NaN)
    OutT* ob = o + n * o_sn + h * o_sh;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        float l = row_sum[i];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = 1.f / l;
        const int row = m0 + warp * 16 + g + 8 * i;
        if (row < sq) {
#pragma unroll
            for (int dt = 0; dt < DT; ++dt)
                store2(ob + (long long)row * o_ss + dt * 8 + 2 * t, acc[dt][2 * i] * inv,
                       acc[dt][2 * i + 1] * inv);
        }
    }
}

#ifdef CUPYRT_NVCC_INSTANTIATE
#define CUPYRT_ATTN(D, W, OUT)                                                               \
    template __global__ void attention_f16<D, W, 64, OUT>(                                 \
        const half_t*, const half_t*, const half_t*, OUT*, int, int, int, long long,        \
        long long, long long, long long, long long, long long, long long, long long,        \
        long long, long long, long long, long long, float);
#define CUPYRT_ATTN_D(D)                                                                     \
    CUPYRT_ATTN(D, 2, half_t) CUPYRT_ATTN(D, 4, half_t) CUPYRT_ATTN(D, 8, half_t)            \
    CUPYRT_ATTN(D, 2, float) CUPYRT_ATTN(D, 4, float) CUPYRT_ATTN(D, 8, float)
CUPYRT_ATTN_D(32)
CUPYRT_ATTN_D(64)
CUPYRT_ATTN_D(128)
#endif
