// conv_pw.cu -- persistent, weight-resident 1x1 stride-1 convolution for short reductions
// (C <= 512), INT8 and FP16: ResNet's bottleneck expand layers, C -> 4C plus residual and ReLU.
//
// GEMM view in NHWC: out[M, K] = X[M, C] * W[K, C]^T, M = N*H*W (rows contiguous, C bytes).
// With C of 64..512 a CTA's k-loop is 1-16 k32 steps: a one-tile-per-CTA kernel spends its
// life waiting for its loads and its epilogue, nothing overlaps them. Here:
//
//   grid.x = K / BN slices        a CTA loads its BN x C weight slice into shared memory
//   grid.y = CTAs per slice       once, then walks M tiles t = blockIdx.y, += gridDim.y
//
//   shared: [ INT8 only: the slice's epilogue coefficients, a[BN] and b[BN] (float32) ]
//           [ sC: one 16 x (WTN + 8) int32 / float32 staging tile per warp ]
//           [ sW: BN rows x LDS bytes (LDS = row bytes + 16: the 8 row addresses of an
//                 ldmatrix phase fall in 8 distinct 16-byte bank groups when the row
//                 bytes are a multiple of 32) ]
//           [ ring, STAGES x { X tile BM x LDS bytes | residual tile BM x BN elements } ]
//
// The loads of tiles i+1 .. i+STAGES-1 (cp.async) are in flight while tile i is multiplied
// and its epilogue runs, so the SM streams memory without gaps. One __syncthreads per tile:
// stage (i-1) % STAGES, read by every warp in tile i-1, is refilled only after it.
// The epilogue is per warp (16 rows of its warp tile at a time, staged through the warp's
// own sC; no CTA barrier) and is int8_epilogue.cuh's epilogue_staged, so the numerics are
// those of conv_int8.cu / conv_wgmma.cu bit for bit. The residual tile sits in the ring
// blocked per warp ([WM*WN][WTM][WTN] elements), so a warp's 16-row slice of it is a plain
// row-major tile for epilogue_staged's sR.
//
// TAPS = 3 (conv_pw3_int8): 3x3, stride 1, padding 1, INT8. In NHWC a tap (r, s) of output
// pixel m reads input pixel m + (r - 1) W + (s - 1) of the same image whenever that pixel is
// inside the image, so a stage holds the rows [m0 - W - 1, m0 + BM + W + 1) once (BM + 2W + 2
// rows: a halo of one image row and one pixel each side) and the nine taps read it at nine
// row offsets, instead of nine im2col tiles of BM rows from L2. The weight slice is BN rows of
// 9C bytes (KRSC). Each lane's ldmatrix row address is masked per tap: a row whose tap falls
// outside the image (or past M) reads a zeroed row instead, which is the zero padding.
//
// Row bytes % 32 == 16 (int8 C % 32 == 16, half C % 16 == 8): the last 32-byte k-step reads
// the 16 pad bytes of every row. Both pads (W slice and every ring stage's X rows) are zeroed
// once and never written again, so they add exact zeros (a garbage half could be NaN).
#include "int8_epilogue.cuh"   // OutSel, epilogue_staged (the one copy of the INT8 numerics)
#include "f16_epilogue.cuh"    // store_tile: the FP16 convolutions' epilogue (conv_igemm.cu's)
#include "ptx.cuh"             // smem_u32, cp.async, ldmatrix, mma.sync
#include "mma_mainloop.cuh"    // MmaS8 / MmaF16: the tensor-core step per element type

namespace cupyrt_pw {

using namespace cupyrt_ptx;

// The tensor-core step per element type (mma_mainloop.cuh): in bytes the fragments of
// m16n8k32 s8 and m16n8k16 f16 are laid out alike, so one k-step is 32 bytes of a row either
// way and the ldmatrix addressing below serves both.
using cupyrt_mma::MmaS8;
using cupyrt_mma::MmaF16;

// The persistent mainloop (layout and protocol: the header above). x [M, CB bytes] and
// w [K, TAPS * TAPS * CB bytes] rows; CB % 16 == 0 (TAPS = 3: CB % 32 == 0, so no k-step
// crosses a tap). H, W: the image (TAPS = 3 only). resb: bytes per residual element when the
// host asked for the residual tile in the ring, else 0. epi(sC, lane, m0, n0, sR): the
// epilogue of 16 rows x WTN channels of one warp, accumulators at sC (row stride WTN + 8),
// residual at sR (16 x WTN row-major, nullptr when not prefetched).
template <int BM, int BN, int WM, int WN, int STAGES, int TAPS, typename Mma, typename Epi>
__device__ __forceinline__ void
persistent(const unsigned char* __restrict__ x, const unsigned char* __restrict__ w,
           int M, int CB, int K, int H, int W, const void* __restrict__ res, int res_ld, int resb,
           const Epi& epi, int lead = 0) {
    typedef typename Mma::Acc Acc;
    constexpr int THREADS = WM * WN * 32;
    constexpr int WTM = BM / WM, WTN = BN / WN;
    constexpr int MT = WTM / 16, NT = WTN / 8;
    constexpr int LDC = WTN + 8;                      // staging row, 4-byte words
    static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be 16x16 multiples");
    static_assert(STAGES >= 2, "a ring of two stages at least");
    static_assert(TAPS == 1 || TAPS == 3, "1x1 or 3x3 windows");
    constexpr int NTAP = TAPS * TAPS;

    extern __shared__ __align__(128) unsigned char smem_raw[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;
    const int LDS = CB + 16;                          // bytes per X row
    const int LDW = NTAP * CB + 16;                   // bytes per weight row
    const int CCH = CB >> 4;                          // 16-byte chunks per X row
    const int WCH = NTAP * CCH;                       // ... per weight row
    const int halo = TAPS == 3 ? W + 1 : 0;           // rows of the stage before m0 (and past the tile)
    const int XR = BM + 2 * halo;                     // X rows per stage
    const int res_tile = BM * BN * resb;              // bytes per stage (0: not prefetched)
    const int stage_bytes = XR * LDS + res_tile;

    Acc* sC = reinterpret_cast<Acc*>(smem_raw + lead) + warp * 16 * LDC;
    unsigned char* sW = smem_raw + lead + (THREADS / 32) * 16 * LDC * 4;
    unsigned char* sZ = sW + BN * LDW;                // TAPS = 3: one zero row (LDS bytes)
    unsigned char* ring = sZ + (TAPS == 3 ? LDS : 0);
    const unsigned sW_u = smem_u32(sW), ring_u = smem_u32(ring), sZ_u = smem_u32(sZ);

    const int n0 = blockIdx.x * BN;
    const int m_tiles = (M + BM - 1) / BM;

    // ---- the weight slice, once (rows past K and the pad bytes: zeros) --------------------
    for (int idx = tid; idx < BN * WCH; idx += THREADS) {
        const int r = idx / WCH, c = idx - r * WCH;
        const bool ok = n0 + r < K;
        cp_async16(sW_u + (unsigned)(r * LDW + c * 16),
                   ok ? w + (long long)(n0 + r) * (NTAP * CB) + c * 16 : w, ok ? 16 : 0);
    }
    for (int r = tid; r < BN; r += THREADS)
        *reinterpret_cast<uint4*>(sW + r * LDW + NTAP * CB) = make_uint4(0u, 0u, 0u, 0u);
    for (int r = tid; r < STAGES * XR; r += THREADS)
        *reinterpret_cast<uint4*>(ring + (r / XR) * stage_bytes + (r % XR) * LDS + CB) =
            make_uint4(0u, 0u, 0u, 0u);
    if (TAPS == 3)
        for (int c = tid; c < LDS / 16; c += THREADS)
            *reinterpret_cast<uint4*>(sZ + c * 16) = make_uint4(0u, 0u, 0u, 0u);

    // ---- one ring stage: the X rows (and the residual tile) of this CTA's i-th M tile -----
    // No division a chunk (a per-chunk division ran a fifth of the stage-1 expand layer's
    // instructions, ncu at 925e87f). X chunk idx of a stage: row idx / CCH, source byte
    // g0 * CB + 16 idx (the rows are contiguous); CCH (C / 16) is a power of two for 64, 128,
    // 256, 512 channels, so the row is a shift there.
    const int cch_lg = (CCH & (CCH - 1)) == 0 ? __ffs(CCH) - 1 : -1;
    // a residual row's chunks rch = BN * resb / 16 <= BN / 4 <= THREADS, both powers of two: a
    // thread keeps one chunk column for the whole tile and steps down the rows by a stride
    static_assert((BN & (BN - 1)) == 0 && BN / 4 <= THREADS, "residual chunks a row divide the block");
    auto load_stage = [&](int i) {
        const int t = blockIdx.y + i * gridDim.y;
        if (t >= m_tiles) return;
        const int m0 = t * BM, g0 = m0 - halo;        // the pixel of the stage's row 0
        const unsigned st = ring_u + (unsigned)((i % STAGES) * stage_bytes);
        const unsigned char* xg = x + (long long)g0 * CB;
        for (int idx = tid; idx < XR * CCH; idx += THREADS) {
            const int r = cch_lg >= 0 ? idx >> cch_lg : idx / CCH;
            const bool ok = g0 + r >= 0 && g0 + r < M;
            cp_async16(st + (unsigned)(idx * 16 + r * 16), ok ? xg + idx * 16 : x, ok ? 16 : 0);
        }
        if (resb) {
            // chunk (row r, bytes [16 q, 16 q + 16) of its BN * resb) -> the warp block of
            // (r / WTM, col / WTN): K * resb % 16 == 0, so a chunk is wholly in or past K
            const unsigned rs = st + (unsigned)(XR * LDS);
            const int rch = BN * resb / 16, per = 16 / resb;
            const int r_lg = __ffs(rch) - 1;          // BN and resb are powers of two
            const int col = (tid & (rch - 1)) * per, r_step = THREADS >> r_lg;
            const bool col_ok = n0 + col < K;
            const int col_off = (col / WTN) * WTM * WTN + col % WTN;
            const long long row_bytes = (long long)res_ld * resb;
            int r = tid >> r_lg;
            const char* src = reinterpret_cast<const char*>(res) + (m0 + r) * row_bytes +
                              (long long)(n0 + col) * resb;
            for (; r < BM; r += r_step, src += r_step * row_bytes) {
                const bool ok = col_ok && m0 + r < M;
                const int off = (r / WTM) * WN * WTM * WTN + (r % WTM) * WTN + col_off;
                cp_async16(rs + (unsigned)(off * resb), ok ? src : res, ok ? 16 : 0);
            }
        }
    };

    load_stage(0);
    cp_async_commit();                                // group 0: W slice + the first tile
#pragma unroll
    for (int s = 1; s < STAGES - 1; ++s) {
        load_stage(s);
        cp_async_commit();
    }

    // ldmatrix lane offsets (bytes), as conv_int8.cu
    const int a_lrow = wm * WTM + (lane & 15), a_lcol = (lane >> 4) * 16;
    const int b_lrow = wn * WTN + (lane & 7) + ((lane >> 4) << 3), b_lcol = ((lane >> 3) & 1) * 16;
    const int KS = (CB + 31) >> 5;                    // 32-byte k-steps (per tap)

    int i = 0;
    for (int t = blockIdx.y; t < m_tiles; t += gridDim.y, ++i) {
        cp_async_wait<STAGES - 2>();                  // tile i (and the W slice) landed ...
        __syncthreads();                              // ... for every thread; stage i-1 is free
        load_stage(i + STAGES - 1);
        cp_async_commit();                            // always: the wait counts groups

        const int stage = i % STAGES;
        const unsigned sX_u = ring_u + (unsigned)(stage * stage_bytes);
        // INT8: no zeroing, the first k-step writes the accumulators (Mma::first, C = 0); the
        // zeroing took 64 moves a warp a tile, about 5 % of the kernel's instructions (ncu at
        // 925e87f). FP16 keeps it: the peeled loop cost ptxas up to 34 more registers there.
        constexpr bool FIRST = Mma::ESZ == 1;
        Acc acc[MT][NT][4];
        if (!FIRST) {
#pragma unroll
            for (int a = 0; a < MT; ++a)
#pragma unroll
                for (int b = 0; b < NT; ++b)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[a][b][e] = 0;
        }
        const unsigned a_base = sX_u + (unsigned)((a_lrow + halo) * LDS + a_lcol);
        const unsigned b_base = sW_u + (unsigned)(b_lrow * LDW + b_lcol);
        // one k-step: A rows at a_row[a] (+ the k offset), B at the tap's columns
        auto kstep = [&](const unsigned (&a_row)[MT], int kb, int k, bool first = false) {
            unsigned af[MT][4], bf[NT][2];
#pragma unroll
            for (int a = 0; a < MT; ++a) ldmatrix_x4(af[a], a_row[a] + (unsigned)(k * 32));
#pragma unroll
            for (int b = 0; b < NT / 2; ++b) {
                unsigned q[4];
                ldmatrix_x4(q, b_base + (unsigned)(b * 16 * LDW + kb + k * 32));
                bf[2 * b][0] = q[0]; bf[2 * b][1] = q[1];
                bf[2 * b + 1][0] = q[2]; bf[2 * b + 1][1] = q[3];
            }
#pragma unroll
            for (int a = 0; a < MT; ++a)
#pragma unroll
                for (int b = 0; b < NT; ++b) {
                    if constexpr (FIRST) {             // (MmaS8 only has first)
                        if (first) {
                            Mma::first(acc[a][b], af[a], bf[b][0], bf[b][1]);
                            continue;
                        }
                    }
                    Mma::mma(acc[a][b], af[a], bf[b][0], bf[b][1]);
                }
        };
        if (TAPS == 1) {
            unsigned a_row[MT];
#pragma unroll
            for (int a = 0; a < MT; ++a) a_row[a] = a_base + (unsigned)(a * 16 * LDS);
            if (FIRST) kstep(a_row, 0, 0, true);      // KS >= 1: CB >= 16
#pragma unroll 2
            for (int k = FIRST ? 1 : 0; k < KS; ++k) kstep(a_row, 0, k);
        } else {
            // per ldmatrix row of this lane: which of the 3 row taps and 3 column taps stay
            // inside the image (bit r of vh, bit s of vw); rows past M read zeros
            unsigned vh[MT], vw[MT];
#pragma unroll
            for (int a = 0; a < MT; ++a) {
                const int m = t * BM + a_lrow + a * 16;
                const int p = m % (H * W), h = p / W, c = p - h * W;
                vh[a] = m < M ? (h > 0 ? 1u : 0u) | 2u | (h < H - 1 ? 4u : 0u) : 0u;
                vw[a] = (c > 0 ? 1u : 0u) | 2u | (c < W - 1 ? 4u : 0u);
            }
            const unsigned z_row = sZ_u + (unsigned)a_lcol;
#pragma unroll
            for (int r = 0; r < 3; ++r)
#pragma unroll
                for (int s = 0; s < 3; ++s) {
                    const int shift = ((r - 1) * W + (s - 1)) * LDS;
                    unsigned a_row[MT];
#pragma unroll
                    for (int a = 0; a < MT; ++a)
                        a_row[a] = ((vh[a] >> r) & (vw[a] >> s) & 1u)
                                       ? a_base + (unsigned)(a * 16 * LDS + shift) : z_row;
                    const int kb = (r * 3 + s) * CB;
                    const int k0 = FIRST && r == 0 && s == 0 ? 1 : 0;
                    if (k0) kstep(a_row, kb, 0, true);
#pragma unroll 2
                    for (int k = k0; k < KS; ++k) kstep(a_row, kb, k);
                }
        }

        // ---- epilogue, per warp, 16 rows at a time -----------------------------------------
        const int m0 = t * BM + wm * WTM, nw = n0 + wn * WTN;
        const unsigned char* sRw =
            resb ? ring + stage * stage_bytes + XR * LDS + (wm * WN + wn) * WTM * WTN * resb : nullptr;
#pragma unroll
        for (int a = 0; a < MT; ++a) {
#pragma unroll
            for (int b = 0; b < NT; ++b)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const int r = (lane >> 2) + hh * 8, cc = b * 8 + (lane & 3) * 2;
                    store_pair(sC + r * LDC + cc, acc[a][b][2 * hh], acc[a][b][2 * hh + 1]);
                }
            __syncwarp();
            epi(sC, lane, m0 + a * 16, nw, resb ? sRw + a * 16 * WTN * resb : nullptr);
            __syncwarp();                             // sC is rewritten by the next 16 rows
        }
    }
    cp_async_wait<0>();                               // nothing left in flight at exit
}

}  // namespace cupyrt_pw

// Launch (both kernels): grid = (ceil(K / BN), CTAs per slice), block = WM*WN*32 threads,
// dynamic shared memory = kernels/gpu/conv_pw.py PwTactic.smem_bytes(C, residual bytes if
// prefetched).

namespace cupyrt_pw {

// Shared memory in front of persistent()'s layout in the INT8 kernels: the epilogue
// coefficients of the weight slice, a[BN] then b[BN] (kernels/gpu/conv_pw.py smem_bytes)
template <int BN> constexpr int COEF_BYTES = 2 * BN * 4;

// The INT8 kernels' body (TAPS 1 or 3): int8_epilogue.cuh's epilogue on the persistent mainloop.
template <int BM, int BN, int WM, int WN, int STAGES, int TAPS, int OUT>
__device__ __forceinline__ void
int8_body(const i8_t* __restrict__ x, const i8_t* __restrict__ w,
          typename cupyrt_int8::OutSel<OUT>::T* __restrict__ out, const float* __restrict__ s_w,
          const float* __restrict__ bias, const void* __restrict__ res, int M, int C, int K, int H,
          int W, int out_ld, int out_off, int res_ld, int res_kind, int has_bias, float s_in,
          float res_scale, float inv_out, int act, float alpha, float beta) {
    constexpr int WTN = BN / WN, THREADS = WM * WN * 32;
    const int rkind = res_kind & 3;
    const int resb = (res_kind & 4) ? (rkind == 1 ? 1 : rkind == 2 ? 4 : 2) : 0;
    // the slice's epilogue coefficients, once, in front of persistent()'s shared memory
    // (its first barrier comes before any epilogue)
    extern __shared__ __align__(128) unsigned char smem_raw[];
    float* sCoef = reinterpret_cast<float*>(smem_raw);
    const int n0 = blockIdx.x * BN;
    cupyrt_int8::fill_coefficients<OUT>(sCoef, BN, n0, K, s_w, bias, has_bias, s_in, inv_out, act,
                                        threadIdx.x, THREADS);
    auto epi = [=](const int* sC, int lane, int m0, int n0w, const unsigned char* sR) {
        const float* sSc = reinterpret_cast<const float*>(smem_raw) + (n0w - n0);   // this warp's columns
        cupyrt_int8::epilogue_staged<16, WTN, 32, OUT>(
            sC, lane, m0, n0w, M, K, out, s_w, bias, res, out_ld, out_off, res_ld, rkind, has_bias,
            s_in, res_scale, inv_out, act, alpha, beta, sR, sSc, sSc + BN);
    };
    persistent<BM, BN, WM, WN, STAGES, TAPS, MmaS8>(
        reinterpret_cast<const unsigned char*>(x), reinterpret_cast<const unsigned char*>(w), M, C,
        K, H, W, res, res_ld, resb, epi, COEF_BYTES<BN>);
}

}  // namespace cupyrt_pw

// INT8: int8 codes in, exact int32 accumulation, int8_epilogue.cuh's epilogue (conv_int8.cu's
// numerics and argument list past the window geometry). res_kind: 1 int8 / 2 float32 /
// 3 float16, | 4 when the residual tile is prefetched into the ring (K * element size % 16 == 0
// and a 16-byte-aligned residual: decided on the host). OUT 0 int8 / 1 float32 / 2 float16.
template <int BM, int BN, int WM, int WN, int STAGES, int OUT, int MINB>
__global__ void __launch_bounds__(WM * WN * 32, MINB)
conv_pw_int8(const i8_t* __restrict__ x,          // [M, C] int8 codes (NHWC)
             const i8_t* __restrict__ w,          // [K, C] int8 codes
             typename cupyrt_int8::OutSel<OUT>::T* __restrict__ out,
             const float* __restrict__ s_w,       // [K] weight scales
             const float* __restrict__ bias,      // [K] (if has_bias)
             const void* __restrict__ res,        // [M, res_ld] (res_kind != 0)
             int M, int C, int K, int out_ld, int out_off, int res_ld, int res_kind,
             int has_bias, float s_in, float res_scale, float inv_out,
             int act, float alpha, float beta) {
    cupyrt_pw::int8_body<BM, BN, WM, WN, STAGES, 1, OUT>(
        x, w, out, s_w, bias, res, M, C, K, 0, 0, out_ld, out_off, res_ld, res_kind, has_bias, s_in,
        res_scale, inv_out, act, alpha, beta);
}

// INT8 3x3, stride 1, padding 1, dilation 1 (TAPS = 3): conv_pw_int8's arguments and numerics,
// the image's H and W after K; w [K, 3, 3, C] codes (KRSC), C % 32 == 0; out [N, H, W, ...].
template <int BM, int BN, int WM, int WN, int STAGES, int OUT, int MINB>
__global__ void __launch_bounds__(WM * WN * 32, MINB)
conv_pw3_int8(const i8_t* __restrict__ x,         // [M, C] int8 codes (NHWC), M = N H W
              const i8_t* __restrict__ w,         // [K, 3, 3, C] int8 codes
              typename cupyrt_int8::OutSel<OUT>::T* __restrict__ out,
              const float* __restrict__ s_w, const float* __restrict__ bias,
              const void* __restrict__ res,
              int M, int C, int K, int H, int W, int out_ld, int out_off, int res_ld, int res_kind,
              int has_bias, float s_in, float res_scale, float inv_out,
              int act, float alpha, float beta) {
    cupyrt_pw::int8_body<BM, BN, WM, WN, STAGES, 3, OUT>(
        x, w, out, s_w, bias, res, M, C, K, H, W, out_ld, out_off, res_ld, res_kind, has_bias, s_in,
        res_scale, inv_out, act, alpha, beta);
}

// FP16: half in, float32 accumulation, f16_epilogue.cuh's epilogue (conv_igemm.cu's numerics;
// argument list of conv_igemm_f16 past the window geometry). has_res: 1 residual (the output's
// type), | 4 prefetched into the ring. OUT_F32 0 float16 / 1 float32 output.
template <int BM, int BN, int WM, int WN, int STAGES, int OUT_F32, int MINB>
__global__ void __launch_bounds__(WM * WN * 32, MINB)
conv_pw_f16(const half_t* __restrict__ x,         // [M, C] (NHWC), C % 8 == 0
            const half_t* __restrict__ w,         // [K, C]
            typename cupyrt_f16::OutSel<OUT_F32>::T* __restrict__ out,
            const float* __restrict__ scale,      // [K]
            const float* __restrict__ bias,       // [K]
            const typename cupyrt_f16::OutSel<OUT_F32>::T* __restrict__ res,   // [M, res_ld]
            int M, int C, int K, int out_ld, int out_off, int res_ld, int has_res,
            int act, float alpha, float beta) {
    typedef typename cupyrt_f16::OutSel<OUT_F32>::T OutT;
    constexpr int WTN = BN / WN;
    const int resb = (has_res & 5) == 5 ? (int)sizeof(OutT) : 0;
    auto epi = [=](const float* sC, int lane, int m0, int n0, const unsigned char* sR) {
        cupyrt_f16::store_tile<16, WTN, 32, 7, false, true>(
            sC, lane, m0, n0, M, K, out, scale, bias, res, reinterpret_cast<const OutT*>(sR), out_ld,
            out_off, res_ld, has_res & 1, ActLin(act, alpha, beta));
    };
    cupyrt_pw::persistent<BM, BN, WM, WN, STAGES, 1, cupyrt_pw::MmaF16>(
        reinterpret_cast<const unsigned char*>(x), reinterpret_cast<const unsigned char*>(w), M,
        C * 2, K, 0, 0, res, res_ld, resb, epi);
}

// Instantiations for nvcc's CI compile check (NVRTC instantiates through name_expressions;
// kernels/gpu/conv_pw.py lists the tactics).
#ifdef CUPYRT_NVCC_INSTANTIATE
#define CUPYRT_PW_ARGS(OT) (const i8_t*, const i8_t*, OT*, const float*, const float*, const void*, \
    int, int, int, int, int, int, int, int, float, float, float, int, float, float)
#define CUPYRT_PW16_ARGS(OT) (const half_t*, const half_t*, OT*, const float*, const float*, \
    const OT*, int, int, int, int, int, int, int, int, float, float)
template __global__ void conv_pw_int8<64, 128, 2, 2, 3, 0, 1> CUPYRT_PW_ARGS(i8_t);
template __global__ void conv_pw_int8<64, 128, 2, 2, 3, 1, 1> CUPYRT_PW_ARGS(float);
template __global__ void conv_pw_int8<64, 128, 2, 2, 3, 2, 1> CUPYRT_PW_ARGS(half_t);
template __global__ void conv_pw_int8<128, 128, 4, 2, 2, 0, 0> CUPYRT_PW_ARGS(i8_t);
template __global__ void conv_pw_int8<64, 256, 2, 4, 2, 0, 0> CUPYRT_PW_ARGS(i8_t);
#define CUPYRT_PW3_ARGS(OT) (const i8_t*, const i8_t*, OT*, const float*, const float*, const void*, \
    int, int, int, int, int, int, int, int, int, int, float, float, float, int, float, float)
template __global__ void conv_pw3_int8<128, 64, 2, 2, 3, 0, 1> CUPYRT_PW3_ARGS(i8_t);
template __global__ void conv_pw3_int8<128, 64, 2, 2, 3, 1, 1> CUPYRT_PW3_ARGS(float);
template __global__ void conv_pw3_int8<256, 64, 4, 2, 2, 0, 1> CUPYRT_PW3_ARGS(i8_t);
template __global__ void conv_pw3_int8<64, 64, 2, 2, 4, 0, 1> CUPYRT_PW3_ARGS(i8_t);
template __global__ void conv_pw_f16<64, 128, 2, 2, 3, 0, 0> CUPYRT_PW16_ARGS(half_t);
template __global__ void conv_pw_f16<64, 128, 2, 2, 3, 1, 0> CUPYRT_PW16_ARGS(float);
template __global__ void conv_pw_f16<128, 64, 4, 1, 2, 0, 0> CUPYRT_PW16_ARGS(half_t);
template __global__ void conv_pw_f16<128, 64, 4, 1, 2, 1, 0> CUPYRT_PW16_ARGS(float);
template __global__ void conv_pw_f16<64, 64, 2, 2, 2, 0, 0> CUPYRT_PW16_ARGS(half_t);
template __global__ void conv_pw_f16<64, 64, 2, 2, 2, 1, 0> CUPYRT_PW16_ARGS(float);
#endif
