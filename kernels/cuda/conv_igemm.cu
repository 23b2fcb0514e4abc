// conv_igemm.cu -- tensor-core implicit-GEMM convolution, NHWC, FP16 in,
// FP32 accumulate, fused epilogue.
//
// The convolution is the GEMM  out[M, K] = A[M, Kr] * B[K, Kr]^T  with
//   M  = N*P*Q  (one row per output pixel, NHWC order, so out is NHWC as is)
//   K  = output channels
//   Kr = R*S*C  (reduction, (r, s, c) order = the KRSC weight layout)
// A is never materialised: each 16-byte chunk (8 channels) of an A tile is
// gathered straight from x with cp.async, zero-filled where the filter tap
// falls in the padding.  C % 8 == 0 makes every chunk lie inside one (r, s)
// tap, so a chunk is one aligned 16-byte load.
//
//   block tile BM x BN, k-step BK, STAGES-deep cp.async ring in shared memory
//
//        Kr ->                          B tile (BN x BK, KRSC rows)
//      +------+                         +------+
//   BM | A    |  x  B^T    =   BM x BN  | B    | BN
//      +------+                         +------+
//   warps: WM x WN grid, each a (BM/WM) x (BN/WN) sub-tile of
//   mma.sync.m16n8k16 (row.col) fed by ldmatrix.x4.
//
// Shared rows are padded to BK+8 halves so that the 8 row addresses of one
// ldmatrix phase fall in 8 different 16-byte bank groups (no conflicts).
//
// Epilogue, per output element (m, k), in FP32:
//   v = acc * scale[k] + bias[k]            (folded batch norm / conv bias)
//   v += residual[m * res_ld + k]           (if has_res)
//   v = act(v; alpha, beta)                 (codes: common.cuh)
//   out[m * out_ld + out_off + k] = v       (out_ld/out_off: concat elision)
#include "common.cuh"
#include "ptx.cuh"
#include "f16_epilogue.cuh"   // OutSel, load8 / store8, store_tile (the FP16 epilogue)
#include "mma_mainloop.cuh"   // the V2 tiles' mainloop and accumulator staging

namespace cupyrt_igemm {

using namespace cupyrt_ptx;   // smem_u32, cp.async, ldmatrix, mma.sync (ptx.cuh)
using cupyrt_f16::OutSel;
using cupyrt_f16::load8;
using cupyrt_f16::store8;

// Store two adjacent channels (col, col+1) of row m.
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

}  // namespace cupyrt_igemm

// Launch: grid = (ceil(M/BM) * ceil(K/BN),), block = WM*WN*32 threads,
// dynamic shared memory = max(STAGES * (BM + BN) * (BK + 8) * 2,
//                             V2 ? BM * (BN + 8) * 4 : 0) bytes.
// V2 = 1: fragment double-buffering + shared-memory-staged 16-byte epilogue;
// V2 = 0: the first version (fragments loaded then used; epilogue stores two
// channels per thread straight from the accumulators).
// MINB: __launch_bounds__ min blocks per SM (0 = no hint).
//
// The body is shared by three kernels (MODE):
//   0 conv_igemm_f16        the fused convolution above
//   1 conv_igemm_splitk_f16 split-K: blockIdx.y = split s takes k-tiles
//                           [s*kt_per_split, (s+1)*kt_per_split) and writes its raw
//                           FP32 partial sums to ws[s][M][K]; splitk_epilogue
//                           (below) adds the splits and applies the epilogue.
//                           For batch-1 / small-M layers whose M x K tiles cannot
//                           fill 132 SMs (7x7 at batch 1: one M tile).
//   2 conv_igemm_smallc_f16 small-C (the stem): each 16-byte chunk of the A row
//                           holds two horizontally adjacent taps (s, s+1) x 4
//                           channels, gathered with two 8-byte cp.async from x
//                           (x has C = 4 or 8 stored channels, only 0..3 are
//                           read); the weights are [K, R, S2*2, 4], S2 = ceil(S/2)
//                           pairs (tap S of an odd S is zero). Reduction length
//                           R*S2*8 = 224 for 7x7 instead of R*S*8 = 392 with the
//                           per-tap padding of RGB to 8 channels.
//                           S passed to the kernel = 2*S2 (the padded width).
template <int BM, int BN, int BK, int WM, int WN, int STAGES, int OUT_F32, int V2, int MODE>
__device__ __forceinline__ void
conv_igemm_body(const half_t* __restrict__ x,        // [N, H, W, C]
               const half_t* __restrict__ w,        // [K, R, S, C]
               typename cupyrt_igemm::OutSel<OUT_F32>::T* __restrict__ out,
               const float* __restrict__ scale,     // [K]
               const float* __restrict__ bias,      // [K]
               const typename cupyrt_igemm::OutSel<OUT_F32>::T* __restrict__ res,
               int N, int H, int W, int C, int K, int R, int S, int P, int Q,
               int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
               int out_ld, int out_off, int res_ld, int has_res,
               int act, float alpha, float beta,
               float* __restrict__ ws, int kt_per_split) {
    using namespace cupyrt_igemm;
    typedef typename OutSel<OUT_F32>::T OutT;
    constexpr int THREADS = WM * WN * 32;
    constexpr int LDS = BK + 8;          // padded row, halves
    constexpr int CH = BK / 8;           // 16-byte chunks per row
    constexpr int ROWS_PER_PASS = THREADS / CH;
    constexpr int A_IT = BM / ROWS_PER_PASS;
    constexpr int B_IT = BN / ROWS_PER_PASS;
    constexpr int WTM = BM / WM, WTN = BN / WN;
    constexpr int MT = WTM / 16, NT = WTN / 8;
    static_assert(THREADS % CH == 0, "threads must cover whole rows");
    static_assert(BM % ROWS_PER_PASS == 0 && BN % ROWS_PER_PASS == 0, "tile/threads");
    static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be 16x16 multiples");
    static_assert(BK % 16 == 0, "BK multiple of 16");
    static_assert(!V2 || (BK / 16) % 2 == 0, "V2 double-buffers fragments: BK/16 must be even");

    extern __shared__ __align__(128) unsigned char smem_raw[];
    half_t* sA = reinterpret_cast<half_t*>(smem_raw);
    half_t* sB = sA + STAGES * BM * LDS;

    const int M = N * P * Q;
    const int S2 = (S + 1) >> 1;     // MODE 2: tap pairs per filter row
    const int Kr = MODE == 2 ? R * S2 * 8 : R * S * C;
    const int tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;

    // Tile order: the BN (output-channel) tiles of one BM row-block are
    // neighbours, so they reuse that activation tile from L2.
    const int n_tiles = (K + BN - 1) / BN;
    const int m0 = (blockIdx.x / n_tiles) * BM;
    const int n0 = (blockIdx.x % n_tiles) * BN;

    // ---- per-thread gather state --------------------------------------
    const int kc = tid % CH;             // this thread's chunk column
    const int row0 = tid / CH;
    const half_t* a_ptr[A_IT];
    int a_h0[A_IT], a_w0[A_IT];
    cupyrt_mma::pixel_rows<A_IT, ROWS_PER_PASS>(x, m0, row0, M, P, Q, H, W, C, stride_h, stride_w, pad_h,
                                                pad_w, a_ptr, a_h0, a_w0);
    const half_t* b_ptr[B_IT];
    bool b_ok[B_IT];
    cupyrt_mma::filter_rows<B_IT, ROWS_PER_PASS>(w, n0, row0, K, Kr, b_ptr, b_ok);
    // k-tiles of this CTA: all of them, or split blockIdx.y's share (MODE 1)
    const int KT_all = (Kr + BK - 1) / BK;
    const int kt0 = MODE == 1 ? (int)blockIdx.y * kt_per_split : 0;
    const int KT = MODE == 1 ? min(KT_all - kt0, kt_per_split) : KT_all;
    // reduction index of this thread's chunk, decomposed as (r, s, c);
    // MODE 2: c_ unused, s_ counts tap pairs (0 .. S2-1)
    int kk = kt0 * BK + kc * 8;
    int c_, r_, s_;
    if constexpr (MODE == 2) {
        const int j = kk >> 3;
        c_ = 0; r_ = j / S2; s_ = j - r_ * S2;
    } else {
        c_ = kk % C;
        const int rs = kk / C;
        r_ = rs / S; s_ = rs - r_ * S;
    }

    const unsigned sA_u = smem_u32(sA), sB_u = smem_u32(sB);

    auto load_tile = [&](int stage) {
        const bool k_ok = kk < Kr;
        if constexpr (MODE == 2) {
            const int dh = r_ * dil_h, dw = 2 * s_ * dil_w;
#pragma unroll
            for (int i = 0; i < A_IT; ++i) {
                const int h = a_h0[i] + dh, w0 = a_w0[i] + dw, w1 = w0 + dil_w;
                const bool hok = k_ok && (unsigned)h < (unsigned)H;
                const bool ok0 = hok && (unsigned)w0 < (unsigned)W;
                const bool ok1 = hok && (unsigned)w1 < (unsigned)W;
                const half_t* row = a_ptr[i] + (long long)h * W * C;
                const unsigned dst = sA_u + 2u * (unsigned)((stage * BM + row0 + i * ROWS_PER_PASS) * LDS + kc * 8);
                cp_async8(dst, ok0 ? row + (long long)w0 * C : x, ok0 ? 8 : 0);
                cp_async8(dst + 8u, ok1 ? row + (long long)w1 * C : x, ok1 ? 8 : 0);
            }
        } else {
            const int dh = r_ * dil_h, dw = s_ * dil_w;
#pragma unroll
            for (int i = 0; i < A_IT; ++i) {
                int h = a_h0[i] + dh, ww = a_w0[i] + dw;
                bool ok = k_ok && (unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W;
                const half_t* src = ok ? a_ptr[i] + ((long long)h * W + ww) * C + c_ : x;
                unsigned dst = sA_u + 2u * (unsigned)((stage * BM + row0 + i * ROWS_PER_PASS) * LDS + kc * 8);
                cp_async16(dst, src, ok ? 16 : 0);
            }
        }
#pragma unroll
        for (int i = 0; i < B_IT; ++i) {
            bool ok = k_ok && b_ok[i];
            const half_t* src = ok ? b_ptr[i] + kk : w;
            unsigned dst = sB_u + 2u * (unsigned)((stage * BN + row0 + i * ROWS_PER_PASS) * LDS + kc * 8);
            cp_async16(dst, src, ok ? 16 : 0);
        }
        // advance this thread's (r, s, c) by BK
        kk += BK;
        if constexpr (MODE == 2) {
            s_ += BK / 8;
            while (s_ >= S2) { s_ -= S2; ++r_; }
        } else {
            c_ += BK;
            while (c_ >= C) {
                c_ -= C;
                if (++s_ == S) { s_ = 0; ++r_; }
            }
        }
    };

    float acc[MT][NT][4];
    if constexpr (V2) {
        // mma_mainloop.cuh: fragments double-buffered in registers
        cupyrt_mma::mainloop<BM, BN, BK, WM, WN, STAGES, cupyrt_mma::MmaF16>(sA_u, sB_u, KT, lane, wm, wn,
                                                                          load_tile, acc);
    } else {
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int t = 0; t < 4; ++t) acc[i][j][t] = 0.f;
#pragma unroll
        for (int st = 0; st < STAGES - 1; ++st) {
            if (st < KT) load_tile(st);
            cp_async_commit();
        }
        // ldmatrix lane offsets (halves) inside a stage
        const int a_lrow = wm * WTM + (lane & 15);
        const int a_lcol = (lane >> 4) * 8;
        const int b_lrow = wn * WTN + (lane & 7) + ((lane >> 4) << 3);
        const int b_lcol = ((lane >> 3) & 1) * 8;
        for (int kt = 0; kt < KT; ++kt) {
            cp_async_wait<STAGES - 2>();
            __syncthreads();
            // refill the slot consumed in iteration kt-1 (everyone is past it)
            if (kt + STAGES - 1 < KT) load_tile((kt + STAGES - 1) % STAGES);
            cp_async_commit();

            const int stage = kt % STAGES;
            const unsigned a_base = sA_u + 2u * (unsigned)((stage * BM + a_lrow) * LDS + a_lcol);
            const unsigned b_base = sB_u + 2u * (unsigned)((stage * BN + b_lrow) * LDS + b_lcol);
    #pragma unroll
            for (int k16 = 0; k16 < BK / 16; ++k16) {
                unsigned af[MT][4];
                unsigned bf[NT][2];
    #pragma unroll
                for (int i = 0; i < MT; ++i)
                    ldmatrix_x4(af[i], a_base + 2u * (unsigned)(i * 16 * LDS + k16 * 16));
    #pragma unroll
                for (int j = 0; j < NT / 2; ++j) {
                    unsigned t[4];
                    ldmatrix_x4(t, b_base + 2u * (unsigned)(j * 16 * LDS + k16 * 16));
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
    }

    // ---- MODE 1: raw FP32 partial sums to ws[split][M][K] ---------------
    if constexpr (MODE == 1) {
        float* wsp = ws + (long long)blockIdx.y * M * K;
        const bool even = (K & 1) == 0;
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            const int col = n0 + wn * WTN + j * 8 + (lane & 3) * 2;
            if (col >= K) continue;
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const int m = m0 + wm * WTM + i * 16 + (lane >> 2) + hh * 8;
                    if (m >= M) continue;
                    float* o = wsp + (long long)m * K + col;
                    if (even) {
                        *reinterpret_cast<float2*>(o) = make_float2(acc[i][j][2 * hh], acc[i][j][2 * hh + 1]);
                    } else {
                        o[0] = acc[i][j][2 * hh];
                        if (col + 1 < K) o[1] = acc[i][j][2 * hh + 1];
                    }
                }
        }
        return;
    }

    // ---- V2 epilogue: accumulators -> shared tile -> 16-byte coalesced stores
    if constexpr (V2) {
        // the accumulators as a BM x (BN + 8) float tile (+8 keeps 64-bit writes conflict-free)
        const float* sC = cupyrt_mma::stage_acc<BM, BN, WM, WN>(smem_raw, lane, wm, wn, acc);
        cupyrt_f16::store_tile<BM, BN, THREADS, 7, false>(
            sC, tid, m0, n0, M, K, out, scale, bias, res, static_cast<const OutT*>(nullptr), out_ld, out_off,
            res_ld, has_res, ActLin(act, alpha, beta));
        return;
    }
    // ---- fused epilogue straight from the accumulators -----------------
    // accumulator (i, j): rows lane/4 and lane/4+8, channels 2*(lane%4)+{0,1}
    const bool vec = ((out_ld | out_off | K | (has_res ? res_ld : 0)) & 1) == 0;
    const ActLin actf(act, alpha, beta);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        const int col = n0 + wn * WTN + j * 8 + (lane & 3) * 2;
        if (col >= K) continue;
        const bool two = col + 1 < K;
        const float sc0 = scale[col], bi0 = bias[col];
        const float sc1 = two ? scale[col + 1] : 0.f, bi1 = two ? bias[col + 1] : 0.f;
#pragma unroll
        for (int i = 0; i < MT; ++i) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int m = m0 + wm * WTM + i * 16 + (lane >> 2) + hh * 8;
                if (m >= M) continue;
                float v0 = acc[i][j][2 * hh] * sc0 + bi0;
                float v1 = acc[i][j][2 * hh + 1] * sc1 + bi1;
                OutT* o = out + (long long)m * out_ld + out_off + col;
                if (vec && two) {
                    if (has_res) {
                        float r0, r1;
                        load2(res + (long long)m * res_ld + col, r0, r1);
                        v0 += r0; v1 += r1;
                    }
                    store2(o, actf(v0), actf(v1));
                } else {
                    const OutT* rp = res + (long long)m * res_ld + col;
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


template <int BM, int BN, int BK, int WM, int WN, int STAGES, int OUT_F32, int V2, int MINB>
__global__ void __launch_bounds__(WM * WN * 32, MINB)
conv_igemm_f16(const half_t* __restrict__ x, const half_t* __restrict__ w,
               typename cupyrt_igemm::OutSel<OUT_F32>::T* __restrict__ out,
               const float* __restrict__ scale, const float* __restrict__ bias,
               const typename cupyrt_igemm::OutSel<OUT_F32>::T* __restrict__ res,
               int N, int H, int W, int C, int K, int R, int S, int P, int Q,
               int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
               int out_ld, int out_off, int res_ld, int has_res,
               int act, float alpha, float beta) {
    conv_igemm_body<BM, BN, BK, WM, WN, STAGES, OUT_F32, V2, 0>(
        x, w, out, scale, bias, res, N, H, W, C, K, R, S, P, Q, stride_h, stride_w,
        pad_h, pad_w, dil_h, dil_w, out_ld, out_off, res_ld, has_res, act, alpha, beta,
        nullptr, 0);
}

// Split-K partial sums. Launch: grid (ceil(M/BM) * ceil(K/BN), splits), smem as
// V2 = 0 (no staged epilogue): STAGES * (BM + BN) * (BK + 8) * 2 bytes.
// ws: [splits, M, K] float32, every element written (no memset needed).
template <int BM, int BN, int BK, int WM, int WN, int STAGES, int V2, int MINB>
__global__ void __launch_bounds__(WM * WN * 32, MINB)
conv_igemm_splitk_f16(const half_t* __restrict__ x, const half_t* __restrict__ w,
                      float* __restrict__ ws,
                      int N, int H, int W, int C, int K, int R, int S, int P, int Q,
                      int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
                      int kt_per_split) {
    conv_igemm_body<BM, BN, BK, WM, WN, STAGES, 1, V2, 1>(
        x, w, nullptr, nullptr, nullptr, nullptr, N, H, W, C, K, R, S, P, Q, stride_h, stride_w,
        pad_h, pad_w, dil_h, dil_w, 0, 0, 0, 0, 0, 0.f, 0.f, ws, kt_per_split);
}

// Small-C (stem) convolution: same launch and arguments as conv_igemm_f16, with
// w = [K, R, S, 4] where S is even (tap pairs) and x's C in {4, 8} (channels
// 0..3 read).
template <int BM, int BN, int BK, int WM, int WN, int STAGES, int OUT_F32, int V2, int MINB>
__global__ void __launch_bounds__(WM * WN * 32, MINB)
conv_igemm_smallc_f16(const half_t* __restrict__ x, const half_t* __restrict__ w,
                      typename cupyrt_igemm::OutSel<OUT_F32>::T* __restrict__ out,
                      const float* __restrict__ scale, const float* __restrict__ bias,
                      const typename cupyrt_igemm::OutSel<OUT_F32>::T* __restrict__ res,
                      int N, int H, int W, int C, int K, int R, int S, int P, int Q,
                      int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
                      int out_ld, int out_off, int res_ld, int has_res,
                      int act, float alpha, float beta) {
    conv_igemm_body<BM, BN, BK, WM, WN, STAGES, OUT_F32, V2, 2>(
        x, w, out, scale, bias, res, N, H, W, C, K, R, S, P, Q, stride_h, stride_w,
        pad_h, pad_w, dil_h, dil_w, out_ld, out_off, res_ld, has_res, act, alpha, beta,
        nullptr, 0);
}

// Split-K reduction + fused epilogue: thread per 4 channels (VEC4: K, out_ld,
// out_off, res_ld multiples of 4) or per channel. Splits are added in a fixed
// order, so the result is deterministic.
//   v = sum_s ws[s][m][k];  out[m*out_ld + out_off + k] = act(v*scale + bias + res)
template <int OUT_F32, int VEC4>
__global__ void splitk_epilogue(const float* __restrict__ ws,
                                typename cupyrt_igemm::OutSel<OUT_F32>::T* __restrict__ out,
                                const float* __restrict__ scale, const float* __restrict__ bias,
                                const typename cupyrt_igemm::OutSel<OUT_F32>::T* __restrict__ res,
                                int M, int K, int splits, int out_ld, int out_off, int res_ld,
                                int has_res, int act, float alpha, float beta) {
    typedef typename cupyrt_igemm::OutSel<OUT_F32>::T OutT;
    const ActLin actf(act, alpha, beta);
    const long long MK = (long long)M * K;
    if constexpr (VEC4) {
        const int KV = K >> 2;
        const long long total = (long long)M * KV;
        for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
             i += (long long)gridDim.x * blockDim.x) {
            const int m = (int)(i / KV);
            const int k = (int)(i - (long long)m * KV) * 4;
            const float* p = ws + (long long)m * K + k;
            float4 a = *reinterpret_cast<const float4*>(p);
            for (int sp = 1; sp < splits; ++sp) {
                const float4 b = *reinterpret_cast<const float4*>(p + sp * MK);
                a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w;
            }
            const float4 sc = *reinterpret_cast<const float4*>(scale + k);
            const float4 bi = *reinterpret_cast<const float4*>(bias + k);
            float v[4] = {a.x * sc.x + bi.x, a.y * sc.y + bi.y, a.z * sc.z + bi.z, a.w * sc.w + bi.w};
            const OutT* rp = res + (long long)m * res_ld + k;
            OutT* o = out + (long long)m * out_ld + out_off + k;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                if (has_res) v[e] += io<OutT>::load(rp + e);
                v[e] = actf(v[e]);
            }
            if constexpr (OUT_F32) {
                *reinterpret_cast<float4*>(o) = make_float4(v[0], v[1], v[2], v[3]);
            } else {
                *reinterpret_cast<uint2*>(o) = make_uint2(pack_h2(v[0], v[1]), pack_h2(v[2], v[3]));
            }
        }
    } else {
        for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < MK;
             i += (long long)gridDim.x * blockDim.x) {
            const int m = (int)(i / K);
            const int k = (int)(i - (long long)m * K);
            float a = ws[i];
            for (int sp = 1; sp < splits; ++sp) a += ws[i + sp * MK];
            float v = a * scale[k] + bias[k];
            if (has_res) v += io<OutT>::load(res + (long long)m * res_ld + k);
            io<OutT>::store(out + (long long)m * out_ld + out_off + k, actf(v));
        }
    }
}

// Instantiations for nvcc's CI compile check (NVRTC instantiates through
// name_expressions instead; see kernels/gpu/conv_tc.py for the tactic list).
#ifdef CUPYRT_NVCC_INSTANTIATE
template __global__ void conv_igemm_f16<128, 128, 32, 2, 2, 4, 0, 0, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 128, 32, 2, 4, 4, 0, 0, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 128, 64, 2, 4, 3, 0, 0, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<256, 128, 32, 4, 2, 3, 0, 0, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 64, 32, 2, 2, 4, 0, 0, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<64, 64, 32, 2, 2, 4, 0, 0, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 128, 32, 2, 4, 4, 1, 0, 0>(const half_t*, const half_t*, float*, const float*, const float*, const float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 128, 32, 2, 4, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 128, 64, 2, 4, 3, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 64, 32, 2, 2, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<64, 64, 32, 2, 2, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 128, 32, 2, 4, 4, 1, 1, 0>(const half_t*, const half_t*, float*, const float*, const float*, const float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<256, 128, 32, 4, 2, 3, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 256, 32, 2, 4, 3, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 128, 64, 2, 4, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
// narrow tiles for small-C / small-K 1x1 layers (IGEMM_TACTICS_NARROW)
template __global__ void conv_igemm_f16<64, 32, 32, 2, 1, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 32, 32, 4, 1, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<256, 32, 32, 4, 1, 3, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 64, 32, 4, 1, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<256, 64, 32, 4, 2, 3, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 96, 32, 4, 1, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 64, 16, 2, 2, 4, 0, 0, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_f16<128, 128, 16, 2, 4, 4, 0, 0, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_splitk_f16<64, 64, 32, 2, 2, 4, 1, 0>(const half_t*, const half_t*, float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void conv_igemm_splitk_f16<64, 64, 64, 2, 2, 3, 1, 0>(const half_t*, const half_t*, float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void conv_igemm_splitk_f16<64, 128, 32, 2, 2, 4, 1, 0>(const half_t*, const half_t*, float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void conv_igemm_splitk_f16<128, 64, 32, 2, 2, 4, 1, 0>(const half_t*, const half_t*, float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void conv_igemm_smallc_f16<128, 64, 32, 2, 2, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_smallc_f16<128, 64, 32, 2, 2, 4, 1, 1, 0>(const half_t*, const half_t*, float*, const float*, const float*, const float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_smallc_f16<128, 64, 32, 4, 2, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void conv_igemm_smallc_f16<64, 64, 32, 2, 2, 4, 0, 1, 0>(const half_t*, const half_t*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void splitk_epilogue<0, 1>(const float*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, float, float);
template __global__ void splitk_epilogue<0, 0>(const float*, half_t*, const float*, const float*, const half_t*, int, int, int, int, int, int, int, int, float, float);
template __global__ void splitk_epilogue<1, 1>(const float*, float*, const float*, const float*, const float*, int, int, int, int, int, int, int, int, float, float);
template __global__ void splitk_epilogue<1, 0>(const float*, float*, const float*, const float*, const float*, int, int, int, int, int, int, int, int, float, float);
#endif
