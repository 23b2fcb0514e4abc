// conv_int8_smallc.cu -- INT8 implicit-GEMM convolution for C <= 4 input channels (the
// RGB stem), reduction packed densely: four taps x four channels per 16-byte chunk.
//
// conv_int8.cu takes C % 16 == 0 (a 16-byte chunk = 16 channels of one tap), so RGB is
// padded 3 -> 16 and a 7x7 reduction is 784 bytes for 147 real products. Here C is
// padded 3 -> 4 only and the taps are flattened over (r, s), across filter rows (the
// FP16 small-C kernel pairs taps inside one row instead; flattening wastes less on 5x5):
//
//   reduction byte k = 16*j + 4*e + c:  chunk j, tap t = 4*j + e (e = 0..3), channel c
//   tap t -> (r, s) = (t / S, t % S);   taps t >= R*S are zero (weights 0, A zero-filled)
//   Kr = 16 * ceil(R*S / 4):  7x7 -> 208 bytes (784 padded), 5x5 -> 112, 3x3 -> 48
//
//   A row m (output pixel):  | t0 c0..c3 | t1 c0..c3 | t2 c0..c3 | t3 c0..c3 | t4 ...
//                            '------------------ chunk 0 -------------------'
//
// Each tap of an A chunk is its own 4-byte cp.async (zero-filled in the padding): the
// taps of a chunk are not adjacent in x where they cross a filter row, and adjacent ones
// are 4-byte aligned only (the stride-2, pad-3 stem starts at odd columns). x stores Cs
// in {4, 8, 16} channels per pixel (the Python side pads 3 -> 4); bytes 0..3 are read.
// The weights are [K, Kr] (kernels/gpu/conv_int8.py, pack_weight_int8_smallc).
//
// Everything after the gather is conv_int8.cu's: shared rows of BK + 16 bytes, ldmatrix +
// mma.sync.m16n8k32 s8.s8.s32 with fragments double-buffered in registers (BK % 64 == 0
// keeps the buffer parity a compile-time constant), int32 accumulators staged in shared
// memory, then int8_epilogue.cuh's epilogue_staged. The padded channels and taps add
// exact zeros to exact int32 sums, so the result is bit-identical to conv_int8_igemm on
// x padded to 16 channels.
#include "int8_epilogue.cuh"   // q8, OutSel, epilogue_staged
#include "mma_mainloop.cuh"    // mainloop, stage_acc (shared with conv_igemm.cu, conv_int8.cu)
#include "ptx.cuh"

// Launch: grid = (ceil(M/BM) * ceil(K/BN),), block = WM*WN*32 threads, dynamic shared
// memory = max(STAGES * (BM + BN) * (BK + 16), BM * (BN + 8) * 4) bytes (conv_int8.cu's).
// Arguments as conv_int8_igemm's, with C = the stored channels of x (4, 8 or 16) and
// R, S the true filter size (the packed reduction length follows from them).
template <int BM, int BN, int BK, int WM, int WN, int STAGES, int OUT, int MINB>
__global__ void __launch_bounds__(WM * WN * 32, MINB)
conv_int8_smallc(const i8_t* __restrict__ x,          // [N, H, W, Cs] int8 codes
                 const i8_t* __restrict__ w,          // [K, Kr] packed taps
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
    constexpr int THREADS = WM * WN * 32;
    constexpr int LDS = BK + 16;         // padded row, bytes
    constexpr int CH = BK / 16;          // 16-byte chunks (4 taps each) per row
    constexpr int TAPS = BK / 4;         // taps per k-tile
    constexpr int ROWS_PER_PASS = THREADS / CH;
    constexpr int A_IT = BM / ROWS_PER_PASS;
    constexpr int B_IT = BN / ROWS_PER_PASS;
    static_assert(THREADS % CH == 0, "threads must cover whole rows");
    static_assert(BM % ROWS_PER_PASS == 0 && BN % ROWS_PER_PASS == 0, "tile/threads");

    extern __shared__ __align__(128) unsigned char smem_raw[];
    i8_t* sA = reinterpret_cast<i8_t*>(smem_raw);
    i8_t* sB = sA + STAGES * BM * LDS;

    const int M = N * P * Q;
    const int Kr = ((R * S + 3) >> 2) * 16;
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
    int kk = kc * 16;                    // this thread's reduction byte (B)
    // the (r, s) of this thread's four taps t = 4*kc + e, advanced by TAPS per k-tile;
    // r >= R marks a tap past R*S (zero)
    int tr[4], ts[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const int t = kc * 4 + e;
        tr[e] = t / S;
        ts[e] = t - tr[e] * S;
    }
    const unsigned sA_u = smem_u32(sA), sB_u = smem_u32(sB);

    auto load_tile = [&](int stage) {
        int dh[4], dw[4];
        bool tok[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            tok[e] = tr[e] < R;
            dh[e] = tr[e] * dil_h;
            dw[e] = ts[e] * dil_w;
        }
#pragma unroll
        for (int i = 0; i < A_IT; ++i) {
            const unsigned dst = sA_u + (unsigned)((stage * BM + row0 + i * ROWS_PER_PASS) * LDS + kc * 16);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int h = a_h0[i] + dh[e], ww = a_w0[i] + dw[e];
                const bool ok = tok[e] && (unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W;
                const i8_t* src = ok ? a_ptr[i] + (h * W + ww) * C : x;
                cp_async4(dst + 4u * e, src, ok ? 4 : 0);
            }
        }
        const bool k_ok = kk < Kr;
#pragma unroll
        for (int i = 0; i < B_IT; ++i) {
            bool ok = k_ok && b_ok[i];
            const i8_t* src = ok ? b_ptr[i] + kk : w;
            unsigned dst = sB_u + (unsigned)((stage * BN + row0 + i * ROWS_PER_PASS) * LDS + kc * 16);
            cp_async16(dst, src, ok ? 16 : 0);
        }
        kk += BK;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            ts[e] += TAPS;
            while (ts[e] >= S) { ts[e] -= S; ++tr[e]; }
        }
    };

    static_assert(BK % 64 == 0, "BK multiple of 64 bytes (even number of k32 steps)");
    int acc[BM / WM / 16][BN / WN / 8][4];
    cupyrt_mma::mainloop<BM, BN, BK, WM, WN, STAGES, cupyrt_mma::MmaS8>(sA_u, sB_u, KT, lane, wm, wn,
                                                                         load_tile, acc);
    int* sC = cupyrt_mma::stage_acc<BM, BN, WM, WN>(smem_raw, lane, wm, wn, acc);
    epilogue_staged<BM, BN, THREADS, OUT>(
        sC, tid, m0, n0, M, K, out, s_w, bias, res, out_ld, out_off, res_ld, res_kind, has_bias,
        s_in, res_scale, inv_out, act, alpha, beta);
}

// Instantiations for nvcc's CI compile check (NVRTC instantiates through
// name_expressions; see kernels/gpu/conv_int8.py, SMALLC_TACTICS).
#ifdef CUPYRT_NVCC_INSTANTIATE
#define CUPYRT_I8SC_ARGS(OT) (const i8_t*, const i8_t*, OT*, const float*, const float*, const void*, \
    int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, \
    int, float, float, float, int, float, float)
template __global__ void conv_int8_smallc<128, 64, 64, 2, 2, 4, 0, 0> CUPYRT_I8SC_ARGS(i8_t);
template __global__ void conv_int8_smallc<128, 64, 64, 2, 2, 4, 1, 0> CUPYRT_I8SC_ARGS(float);
template __global__ void conv_int8_smallc<128, 64, 64, 2, 2, 4, 2, 0> CUPYRT_I8SC_ARGS(half_t);
template __global__ void conv_int8_smallc<128, 64, 64, 4, 2, 3, 0, 0> CUPYRT_I8SC_ARGS(i8_t);
template __global__ void conv_int8_smallc<128, 64, 64, 4, 2, 3, 1, 0> CUPYRT_I8SC_ARGS(float);
template __global__ void conv_int8_smallc<128, 64, 64, 4, 2, 3, 2, 0> CUPYRT_I8SC_ARGS(half_t);
template __global__ void conv_int8_smallc<64, 64, 64, 2, 2, 4, 0, 0> CUPYRT_I8SC_ARGS(i8_t);
template __global__ void conv_int8_smallc<64, 64, 64, 2, 2, 4, 1, 0> CUPYRT_I8SC_ARGS(float);
template __global__ void conv_int8_smallc<64, 64, 64, 2, 2, 4, 2, 0> CUPYRT_I8SC_ARGS(half_t);
#endif
