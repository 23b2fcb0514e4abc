// conv_int8.cu -- INT8 tensor-core implicit-GEMM convolution, NHWC int8 in,
// exact int32 accumulation, fused INT8 epilogue (the contract of
// kernels/quantize.py, reproduced bit for bit).
//
// Same GEMM view and pipeline as conv_igemm.cu (read that header first):
//   out[M, K] = A[M, Kr] * B[K, Kr]^T,  M = N*P*Q,  Kr = R*S*C  (r, s, c)
// with 1-byte elements: a 16-byte cp.async chunk is 16 channels, so C % 16 == 0
// (the Python side pads channels). Shared rows are BK + 16 bytes (the same
// 80-byte stride as the FP16 kernel's 32 + 8 halves for BK = 64: the 8 row
// addresses of an ldmatrix phase hit 8 distinct 16-byte bank groups).
//
// mma.sync.m16n8k32.row.col.s32.s8.s8.s32 has, in bytes, exactly the fragment
// layout of m16n8k16 f16 (A: 16 rows x 32 bytes in four 8x16-byte ldmatrix
// matrices; B: 8 rows x 32 bytes; C: rows lane/4 and lane/4 + 8, columns
// 2*(lane%4) + {0, 1}), so the FP16 kernel's ldmatrix addressing is reused
// with byte offsets.
//
// Epilogue: int8_epilogue.cuh's epilogue_staged, kernels.quantize.epilogue_int8's
// float32 arithmetic bit for bit (two fused multiply-adds per element:
//   y = fma(float(acc), a[k], b[k]);  y = fma(residual, rs, y);  then the activation and
//   the int8 code, or float32 / float16; with int8 codes out and ReLU or no activation
//   the output scale is folded into a, b and rs).
#include "int8_epilogue.cuh"   // q8, put/put8, res_at/res8, epilogue_staged
#include "mma_mainloop.cuh"    // mainloop, stage_acc (shared with conv_igemm.cu, conv_int8_smallc.cu)
#include "ptx.cuh"

// Launch: grid = (ceil(M/BM) * ceil(K/BN),), block = WM*WN*32 threads,
// dynamic shared memory = max(STAGES * (BM + BN) * (BK + 16), BM * (BN + 8) * 4) bytes.
// Template: BK in bytes (= int8 elements, multiple of 64: two k32 steps per
// tile for the fragment double-buffering); OUT 0 int8 / 1 float32 / 2 float16;
// MINB: __launch_bounds__ min blocks per SM (0 = no hint).
template <int BM, int BN, int BK, int WM, int WN, int STAGES, int OUT, int MINB>
__global__ void __launch_bounds__(WM * WN * 32, MINB)
conv_int8_igemm(const i8_t* __restrict__ x,          // [N, H, W, C] int8 codes
                const i8_t* __restrict__ w,          // [K, R, S, C] int8 codes
                typename cupyrt_int8::OutSel<OUT>::T* __restrict__ out,
                const float* __restrict__ s_w,       // [K] weight scales
                const float* __restrict__ bias,      // [K] (if has_bias)
                const void* __restrict__ res,        // [M, res_ld] (res_kind != 0)
                int N, int H, int W, int C, int K, int R, int S, int P, int Q,
                int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
                int out_ld, int out_off, int res_ld, int res_kind, int has_bias,
                float s_in, float res_scale, float inv_out,
                int act, float alpha, float beta) {
    using namespace cupyrt_int8;
    using namespace cupyrt_ptx;      // smem_u32, cp.async (ptx.cuh)
    typedef typename OutSel<OUT>::T OutT;
    constexpr int THREADS = WM * WN * 32;
    constexpr int LDS = BK + 16;         // padded row, bytes
    constexpr int CH = BK / 16;          // 16-byte chunks per row
    constexpr int ROWS_PER_PASS = THREADS / CH;
    constexpr int A_IT = BM / ROWS_PER_PASS;
    constexpr int B_IT = BN / ROWS_PER_PASS;
    static_assert(THREADS % CH == 0, "threads must cover whole rows");
    static_assert(BM % ROWS_PER_PASS == 0 && BN % ROWS_PER_PASS == 0, "tile/threads");

    extern __shared__ __align__(128) unsigned char smem_raw[];
    i8_t* sA = reinterpret_cast<i8_t*>(smem_raw);
    i8_t* sB = sA + STAGES * BM * LDS;

    const int M = N * P * Q;
    const int Kr = R * S * C;
    const int tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;

    const int n_tiles = (K + BN - 1) / BN;
    const int m0 = (blockIdx.x / n_tiles) * BM;
    const int n0 = (blockIdx.x % n_tiles) * BN;

    // ---- per-thread gather state --------------------------------------
    const int kc = tid % CH;
    const int row0 = tid / CH;
    const i8_t* a_ptr[A_IT];
    int a_h0[A_IT], a_w0[A_IT];
    cupyrt_mma::pixel_rows<A_IT, ROWS_PER_PASS>(x, m0, row0, M, P, Q, H, W, C, stride_h, stride_w, pad_h,
                                                pad_w, a_ptr, a_h0, a_w0);
    const i8_t* b_ptr[B_IT];
    bool b_ok[B_IT];
    cupyrt_mma::filter_rows<B_IT, ROWS_PER_PASS>(w, n0, row0, K, Kr, b_ptr, b_ok);
    const int KT = (Kr + BK - 1) / BK;
    int kk = kc * 16;
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
            int h = a_h0[i] + dh, ww = a_w0[i] + dw;
            bool ok = k_ok && (unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W;
            const i8_t* src = ok ? a_ptr[i] + ((long long)h * W + ww) * C + c_ : x;
            unsigned dst = sA_u + (unsigned)((stage * BM + row0 + i * ROWS_PER_PASS) * LDS + kc * 16);
            cp_async16(dst, src, ok ? 16 : 0);
        }
#pragma unroll
        for (int i = 0; i < B_IT; ++i) {
            bool ok = k_ok && b_ok[i];
            const i8_t* src = ok ? b_ptr[i] + kk : w;
            unsigned dst = sB_u + (unsigned)((stage * BN + row0 + i * ROWS_PER_PASS) * LDS + kc * 16);
            cp_async16(dst, src, ok ? 16 : 0);
        }
        kk += BK;
        c_ += BK;
        while (c_ >= C) {
            c_ -= C;
            if (++s_ == S) { s_ = 0; ++r_; }
        }
    };

    static_assert(BK % 64 == 0, "BK multiple of 64 bytes (even number of k32 steps)");
    int acc[BM / WM / 16][BN / WN / 8][4];
    cupyrt_mma::mainloop<BM, BN, BK, WM, WN, STAGES, cupyrt_mma::MmaS8>(sA_u, sB_u, KT, lane, wm, wn,
                                                                         load_tile, acc);
    int* sC = cupyrt_mma::stage_acc<BM, BN, WM, WN>(smem_raw, lane, wm, wn, acc);
    epilogue_staged<BM, BN, THREADS, OUT>(sC, tid, m0, n0, M, K, out, s_w, bias, res, out_ld,
                                          out_off, res_ld, res_kind, has_bias, s_in, res_scale,
                                          inv_out, act, alpha, beta);
}

// Instantiations for nvcc's CI compile check (NVRTC instantiates through
// name_expressions; see kernels/gpu/conv_int8.py for the tactic list).
#ifdef CUPYRT_NVCC_INSTANTIATE
#define CUPYRT_I8_ARGS(OT) (const i8_t*, const i8_t*, OT*, const float*, const float*, const void*, \
    int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, \
    int, float, float, float, int, float, float)
template __global__ void conv_int8_igemm<128, 128, 64, 2, 4, 4, 0, 0> CUPYRT_I8_ARGS(i8_t);
template __global__ void conv_int8_igemm<128, 128, 64, 2, 4, 4, 1, 0> CUPYRT_I8_ARGS(float);
template __global__ void conv_int8_igemm<128, 128, 64, 2, 4, 4, 2, 0> CUPYRT_I8_ARGS(half_t);
template __global__ void conv_int8_igemm<128, 128, 128, 2, 4, 3, 0, 0> CUPYRT_I8_ARGS(i8_t);
template __global__ void conv_int8_igemm<128, 256, 64, 2, 4, 3, 0, 0> CUPYRT_I8_ARGS(i8_t);
template __global__ void conv_int8_igemm<256, 128, 64, 4, 2, 3, 0, 0> CUPYRT_I8_ARGS(i8_t);
template __global__ void conv_int8_igemm<128, 64, 64, 2, 2, 4, 0, 0> CUPYRT_I8_ARGS(i8_t);
template __global__ void conv_int8_igemm<64, 64, 64, 2, 2, 4, 0, 0> CUPYRT_I8_ARGS(i8_t);
template __global__ void conv_int8_igemm<128, 64, 64, 4, 2, 3, 0, 2> CUPYRT_I8_ARGS(i8_t);
#endif
