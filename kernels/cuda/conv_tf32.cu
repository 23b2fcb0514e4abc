// conv_tf32.cu -- FP32 implicit-GEMM convolution on tensor cores, NHWC, fused
// epilogue; FP32-accurate through error-compensated TF32 ("3xTF32").
//
// Same GEMM view, gather, cp.async ring and smem-staged epilogue as
// conv_igemm.cu (read that file's header first), with float32 operands:
//   out[M, K] = A[M, Kr] * B[K, Kr]^T,  M = N*P*Q,  Kr = R*S*C  ((r, s, c) order)
// One 16-byte cp.async chunk is 4 channels, so C % 4 == 0 keeps every chunk
// inside one filter tap (RGB is padded 3 -> 4).
//
// Precision. mma.m16n8k8 .tf32 multiplies operands with 10 explicit mantissa
// bits (1e-3 relative error per product, too coarse for an FP32 engine). The
// 3xTF32 scheme (CUTLASS's "fast accurate" FP32 GEMMs, OpMultiplyAddFastF32;
// NVIDIA's "TF32 error correction" for A100) splits each operand
//     x = big + small,   big = tf32(x),   small = tf32(x - big)
// (x - big is exact in FP32) and accumulates in FP32
//     a*b ~= a_small*b_big + a_big*b_small + a_big*b_big
// dropping only a_small*b_small (~2^-22 relative). The small terms go first
// so they are not added to a large partial sum they cannot change. About 21
// bits of each product survive, i.e. FP32-class results at 3 MMAs per step.
// PRECISE = 0 runs the plain TF32 product (one MMA; the engine's TF32 flag).
//
// Promotion (PROMOTE = P > 0, 3xTF32 only). The tensor cores do not add in IEEE
// FP32: an mma aligns its addends (the running C and the 8 products) to the
// largest exponent and keeps only ~21 bits below it, truncating (measured on
// H200: a 4608-long 3xTF32 reduction lost 3e-5 rel L2; the NumPy model in
// kernels/gpu/conv_tf32.py, mma_tf32_model, reproduces it with 21 bits). The
// loss is relative to |C|, the whole partial sum, and biased (towards zero), so
// it grows linearly with the reduction length. As DeepGEMM does for FP8
// (github.com/deepseek-ai/DeepGEMM, "promotion" to CUDA-core accumulators),
// each window of P k8 steps accumulates into `part`, fresh from zero (its
// first MMA takes C = 0), and is then added into `acc` with FADD (round to
// nearest): the truncation is now relative to one window's partial sum. Model,
// 4608-long N(0,1) reduction: 3.0e-5 without, 1.5e-6 with P = 2, 2.4e-6 with P = 4.
//   k8 step:   0    1  |  2    3  |  4 ...
//   part:     =mma +mma | =mma +mma | ...     (3 MMAs per step, small terms first)
//   acc:            +=part     +=part
// The cost is a second accumulator set: only tiles of 32 accumulators per
// thread (32x32 warp tiles) stay under 255 registers without spilling.
//
// Fragments of m16n8k8 .tf32 (g = lane / 4, t = lane % 4), 32-bit elements:
//   A 16x8 row:  a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4)
//   B 8x8  col:  b0 (k=t, n=g)          b1 (k=t+4, n=g)
//   C 16x8:      c0,c1 (g, 2t..2t+1)    c2,c3 (g+8, 2t..2t+1)
// ldmatrix.m8n8.b16 hands lane L the 4-byte word L%4 of row L/4 of an 8 x 16-byte
// matrix, i.e. element (L/4, L%4) of an 8x4 tile of 32-bit words. So .x4 over
// the four 8x4 quarters of a 16x8 float tile, in the order (rows 0-7, cols 0-3),
// (rows 8-15, cols 0-3), (rows 0-7, cols 4-7), (rows 8-15, cols 4-7), returns
// exactly a0..a3; over the B tile stored [n][k] it returns b0/b1 of two n-tiles.
// The lane addressing is therefore byte-for-byte that of conv_igemm.cu
// (16-byte column offsets, k-step of 32 bytes = 8 floats instead of 16 halves).
//
// Shared rows are padded to BK+4 floats (16 bytes) so the 8 row addresses of
// one ldmatrix phase land in 8 different 16-byte bank groups.
//
// Epilogue (as conv_igemm_f16 V2), per output element (m, k), in FP32:
//   v = acc * scale[k] + bias[k];  v += residual[m*res_ld + k] (has_res);
//   v = act(v);  out[m*out_ld + out_off + k] = v   (float or half)
#include "common.cuh"
#include "ptx.cuh"
#include "f16_epilogue.cuh"   // OutSel, store_tile (the FP16 convolutions' epilogue)
#include "mma_mainloop.cuh"   // pipeline: the cp.async ring and double-buffered fragments

// The shared PTX wrappers come from ptx.cuh; the TF32 conversions below are this file's.
namespace cupyrt_tf32 {

using namespace cupyrt_ptx;   // smem_u32, cp.async, ldmatrix, mma.sync (ptx.cuh)

// FP32 bits -> TF32 (round to nearest, ties away; low 13 bits zero).
__device__ __forceinline__ unsigned to_tf32(unsigned x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(__uint_as_float(x)));
    return r;
}

// x = big + small (3xTF32 operand split); x - big is exact in FP32. For the weights (B),
// which are taken finite.
__device__ __forceinline__ void split_tf32(unsigned x, unsigned& big, unsigned& small) {
    big = to_tf32(x);
    small = to_tf32(__float_as_uint(__uint_as_float(x) - __uint_as_float(big)));
}

// The same for the activations (A), which can be +-inf: there x - big is inf - inf = NaN,
// and a_big * b_small is NaN where b_small is 0 (weights exact in TF32) or an infinity of
// the wrong sign where b_small and b_big differ in sign. An infinite x is split as big 0,
// small x: the products are then 0 * b_big, 0 * b_small and inf * b_big, which is what
// FP32 gives (NaN for b = 0, as inf * 0). A NaN stays NaN in big. Both conversions run and
// selects pick the parts: a cvt (inline asm) under a condition compiles to a branch.
__device__ __forceinline__ void split_tf32_inf(unsigned x, unsigned& big, unsigned& small) {
    const unsigned b = to_tf32(x);
    const unsigned rest = to_tf32(__float_as_uint(__uint_as_float(x) - __uint_as_float(b)));
    const bool inf = (b & 0x7fffffffu) == 0x7f800000u;
    big = inf ? 0u : b;
    small = inf ? b : rest;
}

__device__ __forceinline__ void mma_1688(float (&d)[4], const unsigned (&a)[4],
                                         const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The same with C = 0 (the first MMA of a promotion window: no reset of `part`).
__device__ __forceinline__ void mma_1688_zc(float (&d)[4], const unsigned (&a)[4],
                                            const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(0.f));
}

using cupyrt_f16::OutSel;


}  // namespace cupyrt_tf32

// Launch: grid = (ceil(M/BM) * ceil(K/BN),), block = WM*WN*32 threads,
// dynamic shared memory = max(STAGES*(BM+BN)*(BK+4)*4, BM*(BN+8)*4) bytes.
// Arguments: those of conv_igemm_f16, with float x and w.
// The mainloop is conv_igemm.cu's V2 one: fragments double-buffered in
// registers, the next tile's first fragments loaded before this tile's last
// MMAs; the big/small split happens in registers right before the MMAs.
template <int BM, int BN, int BK, int WM, int WN, int STAGES, int PRECISE, int PROMOTE,
          int OUT_F32>
__global__ void __launch_bounds__(WM * WN * 32)
conv_tf32(const float* __restrict__ x,        // [N, H, W, C]
          const float* __restrict__ w,        // [K, R, S, C]
          typename cupyrt_tf32::OutSel<OUT_F32>::T* __restrict__ out,
          const float* __restrict__ scale,    // [K]
          const float* __restrict__ bias,     // [K]
          const typename cupyrt_tf32::OutSel<OUT_F32>::T* __restrict__ res,
          int N, int H, int W, int C, int K, int R, int S, int P, int Q,
          int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
          int out_ld, int out_off, int res_ld, int has_res,
          int act, float alpha, float beta) {
    using namespace cupyrt_tf32;
    typedef typename OutSel<OUT_F32>::T OutT;
    constexpr int THREADS = WM * WN * 32;
    constexpr int LDS = BK + 4;          // padded row, floats
    constexpr int CH = BK / 4;           // 16-byte chunks per row
    constexpr int ROWS_PER_PASS = THREADS / CH;
    constexpr int A_IT = BM / ROWS_PER_PASS;
    constexpr int B_IT = BN / ROWS_PER_PASS;
    constexpr int WTM = BM / WM, WTN = BN / WN;
    constexpr int MT = WTM / 16, NT = WTN / 8;
    constexpr int KS = BK / 8;           // k8 steps per tile
    static_assert(THREADS % CH == 0, "threads must cover whole rows");
    static_assert(BM % ROWS_PER_PASS == 0 && BN % ROWS_PER_PASS == 0, "tile/threads");
    static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be 16x16 multiples");
    static_assert(BK % 16 == 0, "BK: a multiple of 16 floats (an even number of k8 steps)");
    static_assert(PROMOTE == 0 || (PRECISE && KS % PROMOTE == 0),
                  "PROMOTE: 3xTF32 only, a divisor of the k8 steps per tile");

    extern __shared__ __align__(128) unsigned char smem_raw[];
    float* sA = reinterpret_cast<float*>(smem_raw);
    float* sB = sA + STAGES * BM * LDS;

    const int M = N * P * Q;
    const int Kr = R * S * C;
    const int tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;

    // BN tiles of one BM row-block are neighbours: they share the A tile in L2.
    const int n_tiles = (K + BN - 1) / BN;
    const int m0 = (blockIdx.x / n_tiles) * BM;
    const int n0 = (blockIdx.x % n_tiles) * BN;

    // ---- per-thread gather state (32-bit image offsets: x.size < 2**31) ----
    const int kc = tid % CH;
    const int row0 = tid / CH;
    int a_img[A_IT], a_h0[A_IT], a_w0[A_IT];
    const int PQ = P * Q;
#pragma unroll
    for (int i = 0; i < A_IT; ++i) {
        const int m = m0 + row0 + i * ROWS_PER_PASS;
        if (m < M) {
            const int n = m / PQ, pq = m - n * PQ;
            const int p = pq / Q, q = pq - p * Q;
            a_img[i] = n * H * W * C;
            a_h0[i] = p * stride_h - pad_h;
            a_w0[i] = q * stride_w - pad_w;
        } else {
            a_img[i] = 0;
            a_h0[i] = -(1 << 28);        // every tap out of bounds
            a_w0[i] = 0;
        }
    }
    const float* b_ptr[B_IT];
    bool b_ok[B_IT];
#pragma unroll
    for (int i = 0; i < B_IT; ++i) {
        const int kout = n0 + row0 + i * ROWS_PER_PASS;
        b_ok[i] = kout < K;
        b_ptr[i] = w + (long long)(b_ok[i] ? kout : 0) * Kr;
    }
    const int KT = (Kr + BK - 1) / BK;
    // reduction index of this thread's chunk as (r, s, c)
    int kk = kc * 4;
    int c_ = kk % C;
    int r_, s_;
    {
        const int rs = kk / C;
        r_ = rs / S; s_ = rs - r_ * S;
    }

    const unsigned sA_u = smem_u32(sA), sB_u = smem_u32(sB);

    auto load_tile = [&](int stage) {
        const bool k_ok = kk < Kr;
        const int dh = r_ * dil_h, dw = s_ * dil_w;
#pragma unroll
        for (int i = 0; i < A_IT; ++i) {
            const int h = a_h0[i] + dh, ww = a_w0[i] + dw;
            const bool ok = k_ok && (unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W;
            const float* src = ok ? x + a_img[i] + (h * W + ww) * C + c_ : x;
            const unsigned dst = sA_u + 4u * (unsigned)((stage * BM + row0 + i * ROWS_PER_PASS) * LDS + kc * 4);
            cp_async16(dst, src, ok ? 16 : 0);
        }
#pragma unroll
        for (int i = 0; i < B_IT; ++i) {
            const bool ok = k_ok && b_ok[i];
            const float* src = ok ? b_ptr[i] + kk : w;
            const unsigned dst = sB_u + 4u * (unsigned)((stage * BN + row0 + i * ROWS_PER_PASS) * LDS + kc * 4);
            cp_async16(dst, src, ok ? 16 : 0);
        }
        // advance this thread's (r, s, c) by BK
        kk += BK;
        c_ += BK;
        while (c_ >= C) {
            c_ -= C;
            if (++s_ == S) { s_ = 0; ++r_; }
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int t = 0; t < 4; ++t) acc[i][j][t] = 0.f;

    // One k8 step on fragments af, bf (raw FP32 bits) into accumulator set `c`; `fresh`: the
    // step's first MMA takes C = 0 (a promotion window starts; a compile-time constant once
    // the k8 loop is unrolled). Each pass runs all MT x NT MMAs, so consecutive MMAs into one
    // accumulator are MT*NT instructions apart.
    auto mma_step = [&](const unsigned (&af)[MT][4], const unsigned (&bf)[NT][2], float (&c)[MT][NT][4],
                        bool fresh) {
        unsigned ab[MT][4], bb[NT][2];
        if constexpr (PRECISE) {
            unsigned as[MT][4], bs[NT][2];
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) split_tf32_inf(af[i][e], ab[i][e], as[i][e]);
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) split_tf32(bf[j][e], bb[j][e], bs[j][e]);
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j) {
                    if (fresh) mma_1688_zc(c[i][j], as[i], bb[j]);
                    else mma_1688(c[i][j], as[i], bb[j]);
                }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j) mma_1688(c[i][j], ab[i], bs[j]);
        } else {
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) ab[i][e] = to_tf32(af[i][e]);
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) bb[j][e] = to_tf32(bf[j][e]);
        }
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < NT; ++j) mma_1688(c[i][j], ab[i], bb[j]);
    };
    float part[PROMOTE ? MT : 1][PROMOTE ? NT : 1][4];   // the promotion window's sum

    // the ring and the fragments: mma_mainloop.cuh's pipeline (ldmatrix of 4-byte elements, the
    // rows' 16-byte padding as every mma.sync kernel's)
    auto step = [&](const unsigned (&af)[MT][4], const unsigned (&bf)[NT][2], int k8) {
        if constexpr (PROMOTE) {
            mma_step(af, bf, part, k8 % PROMOTE == 0);
            if (k8 % PROMOTE == PROMOTE - 1) {
#pragma unroll
                for (int i = 0; i < MT; ++i)
#pragma unroll
                    for (int j = 0; j < NT; ++j)
#pragma unroll
                        for (int t = 0; t < 4; ++t) acc[i][j][t] += part[i][j][t];
            }
        } else {
            mma_step(af, bf, acc, false);
        }
    };
    cupyrt_mma::pipeline<BM, BN, BK, WM, WN, STAGES, 4>(sA_u, sB_u, KT, lane, wm, wn, load_tile, step);

    // ---- epilogue: accumulators -> shared tile (BN + 8 floats a row) -> 8-channel stores
    const float* sC = cupyrt_mma::stage_acc<BM, BN, WM, WN>(smem_raw, lane, wm, wn, acc);
    // 8 channels = 32 bytes (float) / 16 bytes (half): rows and offsets must keep
    // every group aligned to its vector width
    cupyrt_f16::store_tile<BM, BN, THREADS, OUT_F32 ? 3 : 7, false>(
        sC, tid, m0, n0, M, K, out, scale, bias, res, static_cast<const OutT*>(nullptr), out_ld, out_off,
        res_ld, has_res, ActLin(act, alpha, beta));
}

// Instantiations for nvcc's CI compile check (NVRTC instantiates through
// name_expressions; see kernels/gpu/conv_tf32.py for the tactic list).
#ifdef CUPYRT_NVCC_INSTANTIATE
#define CUPYRT_TF32_INST(BM, BN, BK, WM, WN, ST, PR, PM, F32, OUTT)                           \
    template __global__ void conv_tf32<BM, BN, BK, WM, WN, ST, PR, PM, F32>(                  \
        const float*, const float*, OUTT*, const float*, const float*, const OUTT*,          \
        int, int, int, int, int, int, int, int, int, int, int, int, int, int, int,           \
        int, int, int, int, int, float, float);
// plain TF32 tiles (PRECISE = 0) and promoting 3xTF32 tiles (PRECISE = 1, PROMOTE = PM)
#define CUPYRT_TF32_TILE(BM, BN, BK, WM, WN, ST)                                              \
    CUPYRT_TF32_INST(BM, BN, BK, WM, WN, ST, 0, 0, 1, float)                                 \
    CUPYRT_TF32_INST(BM, BN, BK, WM, WN, ST, 0, 0, 0, half_t)
#define CUPYRT_3XTF32_TILE(BM, BN, BK, WM, WN, ST, PM)                                        \
    CUPYRT_TF32_INST(BM, BN, BK, WM, WN, ST, 1, PM, 1, float)                                \
    CUPYRT_TF32_INST(BM, BN, BK, WM, WN, ST, 1, PM, 0, half_t)
CUPYRT_TF32_TILE(128, 128, 32, 2, 4, 3)
CUPYRT_TF32_TILE(128, 64, 32, 2, 2, 4)
CUPYRT_TF32_TILE(64, 64, 32, 2, 2, 4)
CUPYRT_TF32_TILE(128, 128, 16, 2, 4, 4)
CUPYRT_3XTF32_TILE(128, 64, 32, 4, 2, 4, 2)
CUPYRT_3XTF32_TILE(64, 128, 32, 2, 4, 4, 2)
CUPYRT_3XTF32_TILE(64, 64, 32, 2, 2, 4, 2)
CUPYRT_3XTF32_TILE(128, 64, 32, 4, 2, 4, 4)
#endif
