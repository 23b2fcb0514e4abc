// matmul.cu -- batched GEMM for the MatrixMultiply layer, CUDA-graph safe
// (no cuBLAS: CuPy refuses cuBLAS calls during stream capture).
//
//   C[b] = act(alpha * op(A[b]) @ op(B[b]) + bias[n] + R[b])      b < batch
//
// op(A) is M x K, op(B) is K x N. How each operand is stored decides how its
// tile reaches the tensor cores:
//
//   A  op NONE      A[m*lda + k]   "K-major":  smem [BM][BK+8]   ldmatrix
//   A  op TRANSPOSE A[k*lda + m]   "M-major":  smem [BK][BM+8]   ldmatrix.trans
//   B  op TRANSPOSE B[n*ldb + k]   "K-major":  smem [BN][BK+8]   ldmatrix
//   B  op NONE      B[k*ldb + n]   "N-major":  smem [BK][BN+8]   ldmatrix.trans
//
// Batch b reads A + b*sa, B + b*sb and writes C + b*sc; a stride of 0 is a
// broadcast operand (a 2-D weight against a batch of activations; the
// launcher folds that case into one tall GEMM when it can).
//
// gemm_f16: FP16 in, FP32 accumulate, mma.sync.m16n8k16 fed by ldmatrix(.trans),
// STAGES-deep cp.async ring. ALIGNED = 1 needs every stored row to start on
// 16 bytes and the contiguous extent (K, M or N) to be a multiple of 8, so a
// 16-byte chunk is all in or all out of bounds (zero-filled by cp.async's
// src-size 0). ALIGNED = 0 is the slower path for any shape: each chunk is
// gathered element by element with bounds checks (plain loads, then one
// 16-byte shared store).
//
// gemm_f32: FP32 SIMT (128x128x8 tile, 8x8 outputs per thread, FFMA), any
// strides (the transposes are only strides), for FP32 layers (rel L2 1e-5).
//
// Shared rows are padded by 8 halves (16 bytes): the 8 row addresses of an
// ldmatrix phase then fall in 8 different 16-byte bank groups.
#include "common.cuh"
#include "ptx.cuh"

namespace cupyrt_mm {

using namespace cupyrt_ptx;   // smem_u32, cp.async, ldmatrix, mma.sync (ptx.cuh)

__device__ __forceinline__ void st_shared16(unsigned dst, uint4 v) {
    asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n"
                 :: "r"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w));
}

template <int F32> struct OutSel { typedef half_t T; };
template <> struct OutSel<1> { typedef float T; };

__device__ __forceinline__ void store2(half_t* p, float v0, float v1) {
    *reinterpret_cast<unsigned*>(p) = pack_h2(v0, v1);
}
__device__ __forceinline__ void store2(float* p, float v0, float v1) {
    *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
}
__device__ __forceinline__ void load2(const half_t* p, float& v0, float& v1) {
    unsigned u = *reinterpret_cast<const unsigned*>(p);
    v0 = h2f((half_t)(u & 0xffffu));
    v1 = h2f((half_t)(u >> 16));
}
__device__ __forceinline__ void load2(const float* p, float& v0, float& v1) {
    float2 f = *reinterpret_cast<const float2*>(p);
    v0 = f.x; v1 = f.y;
}

// One operand tile (ROWS x COLS halves, COLS contiguous in global and in shared
// memory) -> stage `dst` with a padded row of COLS+8 halves. Global element
// (r, c) of the tile is src[(r0 + r) * ld + c0 + c], valid for r0+r < rmax and
// c0+c < cmax.
template <int ROWS, int COLS, int THREADS, int ALIGNED>
__device__ __forceinline__ void load_tile(unsigned dst, const half_t* __restrict__ src,
                                          long long ld, int r0, int c0, int rmax, int cmax,
                                          int tid) {
    constexpr int CPR = COLS / 8;               // 16-byte chunks per row
    constexpr int CHUNKS = ROWS * CPR;
    static_assert(CHUNKS % THREADS == 0, "tile chunks must split evenly over the threads");
#pragma unroll
    for (int i = 0; i < CHUNKS / THREADS; ++i) {
        const int idx = tid + i * THREADS;
        const int r = idx / CPR, c = (idx - r * CPR) * 8;
        const int gr = r0 + r, gc = c0 + c;
        const unsigned d = dst + 2u * (unsigned)(r * (COLS + 8) + c);
        if constexpr (ALIGNED) {
            const bool ok = gr < rmax && gc < cmax;
            cp_async16(d, ok ? src + (long long)gr * ld + gc : src, ok ? 16 : 0);
        } else {
            unsigned short h[8];
            const bool rok = gr < rmax;
            const half_t* p = src + (long long)(rok ? gr : 0) * ld;
#pragma unroll
            for (int e = 0; e < 8; ++e) h[e] = (rok && gc + e < cmax) ? p[gc + e] : (half_t)0;
            st_shared16(d, make_uint4(h[0] | ((unsigned)h[1] << 16), h[2] | ((unsigned)h[3] << 16),
                                      h[4] | ((unsigned)h[5] << 16), h[6] | ((unsigned)h[7] << 16)));
        }
    }
}

}  // namespace cupyrt_mm

// Launch: grid (ceil(M/BM) * ceil(N/BN), batch), block WM*WN*32 threads,
// dynamic shared memory STAGES * (A stage + B stage) bytes with
//   K-major stage  = ROWS(BM or BN) * (BK + 8) * 2
//   MN-major stage = BK * (BM or BN + 8) * 2
// (kernels/gpu/matmul.py: MatmulTile.smem_bytes).
// vec2 = 1: ldc, ldr, sc, sr even (two-column stores); the launcher checks.
template <int BM, int BN, int BK, int WM, int WN, int STAGES, int A_KMAJOR, int B_KMAJOR,
          int ALIGNED, int OUT_F32>
__global__ void __launch_bounds__(WM * WN * 32)
gemm_f16(const half_t* __restrict__ A, const half_t* __restrict__ B,
         typename cupyrt_mm::OutSel<OUT_F32>::T* __restrict__ C,
         const float* __restrict__ bias,
         const typename cupyrt_mm::OutSel<OUT_F32>::T* __restrict__ R,
         int M, int N, int K, long long lda, long long ldb, long long ldc, long long ldr,
         long long sa, long long sb, long long sc, long long sr,
         float alpha, int has_bias, int has_res, int act, float act_alpha, float act_beta,
         int vec2) {
    using namespace cupyrt_mm;
    typedef typename OutSel<OUT_F32>::T OutT;
    constexpr int THREADS = WM * WN * 32;
    constexpr int WTM = BM / WM, WTN = BN / WN;
    constexpr int MT = WTM / 16, NT = WTN / 8;
    // shared stage sizes (halves) and padded row lengths
    constexpr int LDA_S = A_KMAJOR ? BK + 8 : BM + 8;
    constexpr int LDB_S = B_KMAJOR ? BK + 8 : BN + 8;
    constexpr int A_STAGE = A_KMAJOR ? BM * LDA_S : BK * LDA_S;
    constexpr int B_STAGE = B_KMAJOR ? BN * LDB_S : BK * LDB_S;
    static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be 16x16 multiples");
    static_assert(BK % 16 == 0, "BK multiple of 16");

    extern __shared__ __align__(128) unsigned char smem_raw[];
    const unsigned sA_u = smem_u32(smem_raw);
    const unsigned sB_u = sA_u + 2u * (unsigned)(STAGES * A_STAGE);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;
    // neighbouring CTAs share one BM row-block of A (L2 reuse)
    const int n_tiles = (N + BN - 1) / BN;
    const int m0 = (blockIdx.x / n_tiles) * BM;
    const int n0 = (blockIdx.x % n_tiles) * BN;
    const long long bz = blockIdx.y;
    A += bz * sa;
    B += bz * sb;
    C += bz * sc;
    R += bz * sr;

    const int KT = (K + BK - 1) / BK;
    auto load_stage = [&](int stage, int kt) {
        const int k0 = kt * BK;
        const unsigned da = sA_u + 2u * (unsigned)(stage * A_STAGE);
        const unsigned db = sB_u + 2u * (unsigned)(stage * B_STAGE);
        if constexpr (A_KMAJOR) load_tile<BM, BK, THREADS, ALIGNED>(da, A, lda, m0, k0, M, K, tid);
        else                    load_tile<BK, BM, THREADS, ALIGNED>(da, A, lda, k0, m0, K, M, tid);
        if constexpr (B_KMAJOR) load_tile<BN, BK, THREADS, ALIGNED>(db, B, ldb, n0, k0, N, K, tid);
        else                    load_tile<BK, BN, THREADS, ALIGNED>(db, B, ldb, k0, n0, K, N, tid);
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int t = 0; t < 4; ++t) acc[i][j][t] = 0.f;

#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        if (st < KT) load_stage(st, st);
        cp_async_commit();
    }

    // Per-lane ldmatrix offsets (halves within a stage). Matrix q = lane / 8 of
    // an x4 load takes its 8 row addresses from lanes 8q .. 8q+7.
    //  A K-major (non-trans): q -> (m +8*(q&1), k +8*(q>>1))  = a0..a3 of m16n8k16
    //  A M-major (trans):     rows are k: q -> (k +8*(q>>1), m +8*(q&1))
    //  B K-major (non-trans): q -> (n +8*(q>>1), k +8*(q&1))  = b0,b1 of n-tiles 2j, 2j+1
    //  B N-major (trans):     rows are k: q -> (k +8*(q&1), n +8*(q>>1))
    const int q = lane >> 3, l8 = lane & 7;
    const int a_off = A_KMAJOR ? (wm * WTM + l8 + 8 * (q & 1)) * LDA_S + 8 * (q >> 1)
                               : (l8 + 8 * (q >> 1)) * LDA_S + wm * WTM + 8 * (q & 1);
    const int b_off = B_KMAJOR ? (wn * WTN + l8 + 8 * (q >> 1)) * LDB_S + 8 * (q & 1)
                               : (l8 + 8 * (q & 1)) * LDB_S + wn * WTN + 8 * (q >> 1);
    // step between 16-row fragments (i / j) and between k16 steps, in halves
    constexpr int A_FRAG = A_KMAJOR ? 16 * LDA_S : 16;
    constexpr int A_K16 = A_KMAJOR ? 16 : 16 * LDA_S;
    constexpr int B_FRAG = B_KMAJOR ? 16 * LDB_S : 16;
    constexpr int B_K16 = B_KMAJOR ? 16 : 16 * LDB_S;

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        // refill the slot consumed in iteration kt-1 (every warp is past it)
        if (kt + STAGES - 1 < KT) load_stage((kt + STAGES - 1) % STAGES, kt + STAGES - 1);
        cp_async_commit();
        const int stage = kt % STAGES;
        const unsigned a_base = sA_u + 2u * (unsigned)(stage * A_STAGE + a_off);
        const unsigned b_base = sB_u + 2u * (unsigned)(stage * B_STAGE + b_off);
#pragma unroll
        for (int k16 = 0; k16 < BK / 16; ++k16) {
            unsigned af[MT][4];
            unsigned bf[NT][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const unsigned addr = a_base + 2u * (unsigned)(i * A_FRAG + k16 * A_K16);
                if constexpr (A_KMAJOR) ldmatrix_x4(af[i], addr);
                else                    ldmatrix_x4_trans(af[i], addr);
            }
#pragma unroll
            for (int j = 0; j < NT / 2; ++j) {
                unsigned t[4];
                const unsigned addr = b_base + 2u * (unsigned)(j * B_FRAG + k16 * B_K16);
                if constexpr (B_KMAJOR) ldmatrix_x4(t, addr);
                else                    ldmatrix_x4_trans(t, addr);
                bf[2 * j][0] = t[0]; bf[2 * j][1] = t[1];
                bf[2 * j + 1][0] = t[2]; bf[2 * j + 1][1] = t[3];
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j)
                    mma_16816(acc[i][j], af[i], bf[j][0], bf[j][1]);
        }
    }
    cp_async_wait<0>();

    // ---- epilogue from the accumulators: (i, j) holds rows lane/4 (+8) and
    // columns 2*(lane%4) + {0, 1} of its 16x8 block
    const ActLin actf(act, act_alpha, act_beta);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        const int col = n0 + wn * WTN + j * 8 + (lane & 3) * 2;
        if (col >= N) continue;
        const bool two = col + 1 < N;
        const float b0 = has_bias ? bias[col] : 0.f;
        const float b1 = has_bias && two ? bias[col + 1] : 0.f;
#pragma unroll
        for (int i = 0; i < MT; ++i) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int m = m0 + wm * WTM + i * 16 + (lane >> 2) + hh * 8;
                if (m >= M) continue;
                float v0 = alpha * acc[i][j][2 * hh] + b0;
                float v1 = alpha * acc[i][j][2 * hh + 1] + b1;
                OutT* o = C + (long long)m * ldc + col;
                const OutT* rp = R + (long long)m * ldr + col;
                if (vec2 && two) {
                    if (has_res) {
                        float r0, r1;
                        load2(rp, r0, r1);
                        v0 += r0; v1 += r1;
                    }
                    store2(o, actf(v0), actf(v1));
                } else {
                    if (has_res) v0 += io<OutT>::load(rp);
                    io<OutT>::store(o, actf(v0));
                    if (two) {
                        if (has_res) v1 += io<OutT>::load(rp + 1);
                        io<OutT>::store(o + 1, actf(v1));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// FP32 SIMT GEMM: 128x128 tile, BK = 8, 256 threads as a 16x16 grid, each
// thread 8x8 outputs in two 4-wide halves per axis (rows ty*4 + {0..3} and
// 64 + ty*4 + {0..3}; same for columns) so that the float4 shared reads of a
// warp hit distinct banks. Operand elements are read through strides, so any
// transpose (and any row/column stride) costs nothing but coalescing:
//   A(m, k) = A[b*sa + m*a_sm + k*a_sk],  B(k, n) = B[b*sb + k*b_sk + n*b_sn].
// The next k-tile is prefetched into registers while this one is multiplied.
// Launch: grid (ceil(M/128) * ceil(N/128), batch), block 256, no dynamic smem.
template <int OUT_F32>
__global__ void __launch_bounds__(256)
gemm_f32(const float* __restrict__ A, const float* __restrict__ B,
         typename cupyrt_mm::OutSel<OUT_F32>::T* __restrict__ C,
         const float* __restrict__ bias,
         const typename cupyrt_mm::OutSel<OUT_F32>::T* __restrict__ R,
         int M, int N, int K, long long a_sm, long long a_sk, long long b_sk, long long b_sn,
         long long ldc, long long ldr, long long sa, long long sb, long long sc, long long sr,
         float alpha, int has_bias, int has_res, int act, float act_alpha, float act_beta) {
    using namespace cupyrt_mm;
    typedef typename OutSel<OUT_F32>::T OutT;
    constexpr int BM = 128, BN = 128, BK = 8, PAD = 4;
    __shared__ __align__(16) float As[BK][BM + PAD];
    __shared__ __align__(16) float Bs[BK][BN + PAD];

    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int n_tiles = (N + BN - 1) / BN;
    const int m0 = (blockIdx.x / n_tiles) * BM;
    const int n0 = (blockIdx.x % n_tiles) * BN;
    const long long bz = blockIdx.y;
    A += bz * sa;
    B += bz * sb;
    C += bz * sc;
    R += bz * sr;
    // load mapping: 1024 elements of each tile, 4 per thread; the contiguous
    // axis of the operand runs fastest across threads (coalescing)
    const bool a_k_fast = a_sk == 1, b_n_fast = b_sn == 1 || b_sk != 1;
    float ra[4], rb[4];
    auto fetch = [&](int k0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int idx = tid + i * 256;
            const int ka = a_k_fast ? (idx & 7) : (idx >> 7);
            const int ma = a_k_fast ? (idx >> 3) : (idx & 127);
            const int gm = m0 + ma, gk = k0 + ka;
            ra[i] = (gm < M && gk < K) ? A[gm * a_sm + gk * a_sk] : 0.f;
            const int kb = b_n_fast ? (idx >> 7) : (idx & 7);
            const int nb = b_n_fast ? (idx & 127) : (idx >> 3);
            const int gn = n0 + nb, gkb = k0 + kb;
            rb[i] = (gn < N && gkb < K) ? B[gkb * b_sk + gn * b_sn] : 0.f;
        }
    };
    auto stash = [&]() {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int idx = tid + i * 256;
            As[a_k_fast ? (idx & 7) : (idx >> 7)][a_k_fast ? (idx >> 3) : (idx & 127)] = ra[i];
            Bs[b_n_fast ? (idx >> 7) : (idx & 7)][b_n_fast ? (idx & 127) : (idx >> 3)] = rb[i];
        }
    };

    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

    const int KT = (K + BK - 1) / BK;
    fetch(0);
    stash();
    __syncthreads();
    for (int kt = 0; kt < KT; ++kt) {
        if (kt + 1 < KT) fetch((kt + 1) * BK);
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            float a[8], b[8];
            const float4 a0 = *reinterpret_cast<const float4*>(&As[k][ty * 4]);
            const float4 a1 = *reinterpret_cast<const float4*>(&As[k][64 + ty * 4]);
            const float4 b0 = *reinterpret_cast<const float4*>(&Bs[k][tx * 4]);
            const float4 b1 = *reinterpret_cast<const float4*>(&Bs[k][64 + tx * 4]);
            a[0] = a0.x; a[1] = a0.y; a[2] = a0.z; a[3] = a0.w;
            a[4] = a1.x; a[5] = a1.y; a[6] = a1.z; a[7] = a1.w;
            b[0] = b0.x; b[1] = b0.y; b[2] = b0.z; b[3] = b0.w;
            b[4] = b1.x; b[5] = b1.y; b[6] = b1.z; b[7] = b1.w;
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
        if (kt + 1 < KT) {
            stash();
            __syncthreads();
        }
    }

    const ActLin actf(act, act_alpha, act_beta);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int n = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
            if (n >= N) continue;
            float v = alpha * acc[i][j] + (has_bias ? bias[n] : 0.f);
            if (has_res) v += io<OutT>::load(R + (long long)m * ldr + n);
            io<OutT>::store(C + (long long)m * ldc + n, actf(v));
        }
    }
}

// Instantiations for nvcc's CI compile check (NVRTC instantiates through
// name_expressions; kernels/gpu/matmul.py lists the tiles).
#ifdef CUPYRT_NVCC_INSTANTIATE
#define CUPYRT_MM_F16(BM, BN, BK, WM, WN, ST, AK, BKM, AL, OF)                              \
    template __global__ void gemm_f16<BM, BN, BK, WM, WN, ST, AK, BKM, AL, OF>(           \
        const half_t*, const half_t*, cupyrt_mm::OutSel<OF>::T*, const float*,           \
        const cupyrt_mm::OutSel<OF>::T*, int, int, int, long long, long long, long long,   \
        long long, long long, long long, long long, long long, float, int, int, int,       \
        float, float, int);
#define CUPYRT_MM_LAYOUTS(BM, BN, BK, WM, WN, ST, AL, OF)   \
    CUPYRT_MM_F16(BM, BN, BK, WM, WN, ST, 1, 1, AL, OF)     \
    CUPYRT_MM_F16(BM, BN, BK, WM, WN, ST, 1, 0, AL, OF)     \
    CUPYRT_MM_F16(BM, BN, BK, WM, WN, ST, 0, 1, AL, OF)     \
    CUPYRT_MM_F16(BM, BN, BK, WM, WN, ST, 0, 0, AL, OF)
// every layout and both load paths on the smallest tile; the encoder's layouts
// (A K-major; B K-major or N-major), aligned, on the larger ones
CUPYRT_MM_LAYOUTS(64, 64, 32, 2, 2, 4, 1, 0)
CUPYRT_MM_LAYOUTS(64, 64, 32, 2, 2, 4, 1, 1)
CUPYRT_MM_LAYOUTS(64, 64, 32, 2, 2, 4, 0, 0)
CUPYRT_MM_LAYOUTS(64, 64, 32, 2, 2, 4, 0, 1)
#define CUPYRT_MM_ENCODER(BM, BN, BK, WM, WN, ST)          \
    CUPYRT_MM_F16(BM, BN, BK, WM, WN, ST, 1, 1, 1, 0)      \
    CUPYRT_MM_F16(BM, BN, BK, WM, WN, ST, 1, 1, 1, 1)      \
    CUPYRT_MM_F16(BM, BN, BK, WM, WN, ST, 1, 0, 1, 0)      \
    CUPYRT_MM_F16(BM, BN, BK, WM, WN, ST, 1, 0, 1, 1)
CUPYRT_MM_ENCODER(128, 128, 32, 2, 4, 4)
CUPYRT_MM_ENCODER(128, 64, 32, 2, 2, 4)
template __global__ void gemm_f32<0>(const float*, const float*, half_t*, const float*, const half_t*, int, int, int, long long, long long, long long, long long, long long, long long, long long, long long, long long, long long, float, int, int, int, float, float);
template __global__ void gemm_f32<1>(const float*, const float*, float*, const float*, const float*, int, int, int, long long, long long, long long, long long, long long, long long, long long, long long, long long, long long, float, int, int, int, float, float);
#endif
