// mma_mainloop.cuh -- the mma.sync implicit-GEMM mainloop and accumulator staging shared by
// conv_igemm.cu (FP16, its V2 tiles), conv_int8.cu and conv_int8_smallc.cu (INT8): the
// kernels differ in how a k-tile's rows are gathered (their load_tile) and in the epilogue.
//
// In bytes the fragments of mma.sync m16n8k16 f16 and m16n8k32 s8 are laid out alike
// (conv_int8.cu's header), so one k-step is 32 bytes of a row for either element type and
// one ldmatrix addressing serves both; the Mma policy (MmaF16: float32 accumulators, MmaS8:
// exact int32) is the only difference. conv_pw.cu's persistent mainloop uses the policies.
//
// Shared memory: STAGES stages of A (BM rows) then STAGES stages of B (BN rows), rows of BK
// elements (a k-tile) + 16 bytes of padding. load_tile(stage) issues the cp.async
// copies of the next k-tile into `stage` (one commit group per call of the ring, empty past
// the last tile). Fragments come from ldmatrix, double-buffered in registers: the ldmatrix
// of k-step s + 1 is issued before the mma of step s, and the wait + barrier for tile kt + 1
// sits in the last step of tile kt, so the next tile's first fragments load before this
// tile's last mma (CUTLASS's multistage mainloop).
#pragma once
#include "ptx.cuh"

namespace cupyrt_mma {

// The tensor-core step per element type.
struct MmaS8 {
    typedef int Acc;
    static constexpr int ESZ = 1;                // bytes per element
    static __device__ __forceinline__ void mma(int (&d)[4], const unsigned (&a)[4], unsigned b0,
                                               unsigned b1) { cupyrt_ptx::mma_16832(d, a, b0, b1); }
    static __device__ __forceinline__ void first(int (&d)[4], const unsigned (&a)[4], unsigned b0,
                                                 unsigned b1) { cupyrt_ptx::mma_16832_first(d, a, b0, b1); }
};
struct MmaF16 {
    typedef float Acc;
    static constexpr int ESZ = 2;
    static __device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                               unsigned b1) { cupyrt_ptx::mma_16816(d, a, b0, b1); }
};

// Addresses are computed in elements and scaled by ESZ at the end, as each kernel did before
// they shared this loop (the same code from the compiler: benchmarks/KERNEL_NOTES.md).
template <int BM, int BN, int BK, int WM, int WN, int ESZ>
struct MmaTile {
    static constexpr int THREADS = WM * WN * 32;
    static constexpr int LDS = BK + 16 / ESZ;    // padded shared row, elements
    static constexpr int KE = 32 / ESZ;          // elements per mma k-step (32 bytes)
    static constexpr int WTM = BM / WM, WTN = BN / WN;
    static constexpr int MT = WTM / 16, NT = WTN / 8;
    static constexpr int KS = BK / KE;           // mma k-steps per tile
    static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be 16x16 multiples");
    static_assert(BK % KE == 0, "a k-tile is whole 32-byte mma k-steps");
};

// The implicit GEMM's rows a thread loads (rows row0, row0 + ROWS_PER_PASS, ...): of A, output
// pixels m0 + row as (image base, top-left input corner), h0 far out of range past M so every
// tap reads zeros; of B, output channels n0 + row as weight rows of Kr elements, and whether
// they exist (row 0 stands in for the others).
template <int IT, int ROWS_PER_PASS, typename T>
__device__ __forceinline__ void
pixel_rows(const T* x, int m0, int row0, int M, int P, int Q, int H, int W, int C, int stride_h,
           int stride_w, int pad_h, int pad_w, const T* (&a_ptr)[IT], int (&a_h0)[IT], int (&a_w0)[IT]) {
    const int PQ = P * Q;
#pragma unroll
    for (int i = 0; i < IT; ++i) {
        int m = m0 + row0 + i * ROWS_PER_PASS;
        if (m < M) {
            int n = m / PQ, pq = m - n * PQ;
            int p = pq / Q, q = pq - p * Q;
            a_ptr[i] = x + (long long)n * H * W * C;
            a_h0[i] = p * stride_h - pad_h;
            a_w0[i] = q * stride_w - pad_w;
        } else {
            a_ptr[i] = x;
            a_h0[i] = -(1 << 28);        // every tap out of bounds
            a_w0[i] = 0;
        }
    }
}
template <int IT, int ROWS_PER_PASS, typename T>
__device__ __forceinline__ void
filter_rows(const T* w, int n0, int row0, int K, int Kr, const T* (&b_ptr)[IT], bool (&b_ok)[IT]) {
#pragma unroll
    for (int i = 0; i < IT; ++i) {
        int kout = n0 + row0 + i * ROWS_PER_PASS;
        b_ok[i] = kout < K;
        b_ptr[i] = w + (long long)(b_ok[i] ? kout : 0) * Kr;
    }
}

// The ring: the first STAGES - 1 k-tiles loaded, then per k-tile kt the refill of the slot
// tile kt - 1 left, and its KS k-steps, each on fragments loaded one step ahead:
// step(a, b, ks) gets the A fragments [MT][4] and B fragments [NT][2] of k-step ks (ldmatrix
// of ESZ-byte elements: raw bits for the kernel's MMA, or to convert first, as TF32 does).
template <int BM, int BN, int BK, int WM, int WN, int STAGES, int ESZ_, typename LoadTile, typename Step>
__device__ __forceinline__ void
pipeline(unsigned sA_u, unsigned sB_u, int KT, int lane, int wm, int wn, LoadTile& load_tile, Step& step) {
    using namespace cupyrt_ptx;
    typedef MmaTile<BM, BN, BK, WM, WN, ESZ_> T;
    constexpr int LDS = T::LDS, WTM = T::WTM, WTN = T::WTN, MT = T::MT, NT = T::NT, KS = T::KS;
    constexpr int KE = T::KE, E16 = 16 / ESZ_;
    constexpr unsigned ESZ = ESZ_;
    // the fragment buffer of k-step ks is ks & 1 in every tile: the next tile's first
    // fragments (loaded in the last step) land in buffer 0 only when KS is even
    static_assert(KS % 2 == 0, "an even number of mma k-steps per k-tile");
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        if (st < KT) load_tile(st);
        cp_async_commit();
    }

    // ldmatrix lane offsets (elements) inside a stage
    const int a_lrow = wm * WTM + (lane & 15);
    const int a_lcol = (lane >> 4) * E16;
    const int b_lrow = wn * WTN + (lane & 7) + ((lane >> 4) << 3);
    const int b_lcol = ((lane >> 3) & 1) * E16;

    unsigned af[2][MT][4];
    unsigned bf[2][NT][2];
    auto load_frags = [&](int buf, int stage, int ks) {
        const unsigned a_base = sA_u + ESZ * (unsigned)((stage * BM + a_lrow) * LDS + a_lcol + ks * KE);
        const unsigned b_base = sB_u + ESZ * (unsigned)((stage * BN + b_lrow) * LDS + b_lcol + ks * KE);
#pragma unroll
        for (int i = 0; i < MT; ++i) ldmatrix_x4(af[buf][i], a_base + ESZ * (unsigned)(i * 16 * LDS));
#pragma unroll
        for (int j = 0; j < NT / 2; ++j) {
            unsigned t[4];
            ldmatrix_x4(t, b_base + ESZ * (unsigned)(j * 16 * LDS));
            bf[buf][2 * j][0] = t[0]; bf[buf][2 * j][1] = t[1];
            bf[buf][2 * j + 1][0] = t[2]; bf[buf][2 * j + 1][1] = t[3];
        }
    };
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    load_frags(0, 0, 0);
    for (int kt = 0; kt < KT; ++kt) {
        const int stage = kt % STAGES;
        if (kt + STAGES - 1 < KT) load_tile((kt + STAGES - 1) % STAGES);
        cp_async_commit();
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
            const int cur = ks & 1;
            if (ks + 1 < KS) {
                load_frags(cur ^ 1, stage, ks + 1);
            } else {
                cp_async_wait<STAGES - 2>();
                __syncthreads();
                if (kt + 1 < KT) load_frags(cur ^ 1, (kt + 1) % STAGES, 0);
            }
            step(af[cur], bf[cur], ks);
        }
    }
    cp_async_wait<0>();
}

// acc = A[m0.., :] * B[n0.., :]^T over KT k-tiles: the pipeline with the policy's MMA.
template <int BM, int BN, int BK, int WM, int WN, int STAGES, typename Mma, typename LoadTile>
__device__ __forceinline__ void
mainloop(unsigned sA_u, unsigned sB_u, int KT, int lane, int wm, int wn, LoadTile& load_tile,
         typename Mma::Acc (&acc)[MmaTile<BM, BN, BK, WM, WN, Mma::ESZ>::MT]
                                 [MmaTile<BM, BN, BK, WM, WN, Mma::ESZ>::NT][4]) {
    typedef MmaTile<BM, BN, BK, WM, WN, Mma::ESZ> T;
    constexpr int MT = T::MT, NT = T::NT;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int t = 0; t < 4; ++t) acc[i][j][t] = 0;
    auto step = [&](const unsigned (&a)[MT][4], const unsigned (&b)[NT][2], int) {
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < NT; ++j)
                Mma::mma(acc[i][j], a[i], b[j][0], b[j][1]);
    };
    pipeline<BM, BN, BK, WM, WN, STAGES, Mma::ESZ>(sA_u, sB_u, KT, lane, wm, wn, load_tile, step);
}

// two accumulators as one 8-byte store
__device__ __forceinline__ int2 pair(int a, int b) { return make_int2(a, b); }
__device__ __forceinline__ float2 pair(float a, float b) { return make_float2(a, b); }

// The warps' accumulators into shared memory as a BM x (BN + 8) tile at smem_raw (the ring's
// memory, once every warp is past it): what the staged epilogues read (int8_epilogue.cuh's
// epilogue_staged, f16_epilogue.cuh's store_tile).
template <int BM, int BN, int WM, int WN, typename Acc>
__device__ __forceinline__ Acc*
stage_acc(unsigned char* smem_raw, int lane, int wm, int wn,
          const Acc (&acc)[BM / WM / 16][BN / WN / 8][4]) {
    constexpr int WTM = BM / WM, WTN = BN / WN, MT = WTM / 16, NT = WTN / 8;
    constexpr int LDC = BN + 8;          // 4-byte words
    Acc* sC = reinterpret_cast<Acc*>(smem_raw);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int r = wm * WTM + i * 16 + (lane >> 2) + hh * 8;
                const int cc = wn * WTN + j * 8 + (lane & 3) * 2;
                *reinterpret_cast<decltype(pair(Acc(), Acc()))*>(sC + r * LDC + cc) =
                    pair(acc[i][j][2 * hh], acc[i][j][2 * hh + 1]);
            }
    __syncthreads();
    return sC;
}

}  // namespace cupyrt_mma
