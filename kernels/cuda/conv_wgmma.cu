// cupyrt-arch: sm_90a
// conv_wgmma.cu -- Hopper warpgroup-MMA implicit-GEMM convolution (FP16 and INT8), NHWC.
//
// Same GEMM view as conv_igemm.cu (read that header first):
//   out[M, K] = A[M, Kr] * B[K, Kr]^T,  M = N*P*Q,  Kr = R*S*C in (r, s, c) order,
// A gathered from x 16 bytes at a time with cp.async (zero-fill for padding taps and
// out-of-range rows / k), B = the KRSC weights. What changes is the MMA: one
// `wgmma.mma_async` per warpgroup (4 warps, 128 threads) computes a 64 x BN x k16 (f16) or
// 64 x BN x k32 (s8) product straight from shared memory, asynchronously, instead of 8 warps
// each feeding mma.sync from ldmatrix fragments (PTX ISA 9.7.15, "warpgroup MMA"; the
// pipeline shape follows CUTLASS's sm90 "cp.async + GMMA" multistage mainloop). wgmma exists
// only on sm_90a: the marker on the first line makes every build compile this file with
// -arch=sm_90a (tests/kernels/test_cuda_compile.py, kernels/gpu/conv_wgmma.py).
//
// Shared memory, one stage (k-tile of 128 bytes: 64 halves or 128 int8 per row):
//
//   stage base (1024-byte aligned)
//   +-----------------------------+  A: BM rows (output pixels) x 128 bytes, K-major
//   | row r: 8 chunks of 16 bytes |     chunk c of row r at  r*128 + ((c ^ (r & 7)) * 16)
//   | ...                         |     (the 128-byte swizzle: the 8 rows of one 1024-byte
//   +-----------------------------+      atom put chunk c in 8 different bank groups)
//   | B: BN rows (out channels)   |  B: same layout, at base + BM*128
//   +-----------------------------+
//
// wgmma smem matrix descriptor (64 bits; CUTLASS GmmaDescriptor):
//   bits  0-13  start address >> 4        bits 16-29  leading byte offset >> 4 (unused
//   bits 32-45  stride byte offset >> 4               for swizzled K-major: 1)
//               = 1024 (8 rows x 128 B)   bits 62-63  layout: 1 = 128-byte swizzle
// One wgmma reads k16 halves (k32 int8) = 32 bytes of every row; the next k-step starts
// 32 bytes further (+2 in the address field): the hardware applies the swizzle XOR on the
// absolute address bits, which is why every tile is 1024-byte aligned.
//
// Threads: BM / 64 warpgroups; warpgroup g owns output rows [64g, 64g + 64) of the tile and
// all BN columns (accumulators: BN/2 registers per thread). Every thread also gathers.
//
// Pipeline (STAGES-deep ring, PF = STAGES - 2 tiles prefetched ahead):
//   iteration kt:  cp.async.wait (tile kt landed for this thread)
//                  fence.proxy.async (generic-proxy smem writes -> visible to wgmma's
//                                     async proxy)
//                  __syncthreads    (everyone's tile kt landed; every warpgroup has
//                                    retired its wgmmas of tile kt-2: see below)
//                  cp.async tile kt+PF -> stage (kt+PF) % STAGES  (= the stage of kt-2)
//                  wgmma x 4 on stage kt % STAGES; commit; wgmma.wait_group 1
// wait_group 1 at the end of iteration kt-1 retires the group of tile kt-2, before that
// thread reaches the barrier of iteration kt; so after the barrier no wgmma of any warpgroup
// still reads the stage being refilled. The wgmma of tile kt overlaps the barrier and the
// cp.async issue of iteration kt+1.
//
// Accumulator fragment of m64nN (PTX ISA, "wgmma .m64nNk16 register fragment layout"):
// warp w of the warpgroup owns rows 16w .. 16w+15; per n8 block j, registers 4j .. 4j+3 are
//   (g, 8j+2t), (g, 8j+2t+1), (g+8, 8j+2t), (g+8, 8j+2t+1),   g = lane/4, t = lane%4
// (the mma.sync m16n8 C layout, once per n8 block). They are staged through shared memory
// and the epilogue stores 8 channels per thread: conv_igemm.cu's V2 epilogue (FP16) and
// int8_epilogue.cuh's epilogue_staged (INT8, bit for bit the conv_int8.cu numerics).
#include "common.cuh"
#include "int8_epilogue.cuh"
#include "wgmma_ops.cuh"     // PTX wrappers, smem descriptor, the wgmma shapes
#include "f16_epilogue.cuh"   // OutSel, load8 / store8, store_tile (the FP16 epilogue)

namespace cupyrt_wgmma {

using cupyrt_f16::OutSel;
using cupyrt_f16::load8;
using cupyrt_f16::store8;

// Shared-memory bytes of one launch: the pipeline ring or the staged accumulator tile,
// whichever is larger, plus 1024 bytes to align the base (see conv_wgmma.py smem_bytes).
template <int BM, int BN, int STAGES>
struct Smem {
    static constexpr int STAGE = (BM + BN) * 128;
    static constexpr int PIPE = STAGES * STAGE;
    static constexpr int EPI = BM * (BN + 8) * 4;
    static constexpr int BYTES = (PIPE > EPI ? PIPE : EPI) + 1024;
};

// The mainloop shared by both element types. ELEM: bytes per element (2: f16, 1: s8).
// acc comes in uninitialised (the tile's first wgmma has scale-d = 0). On return it holds
// this thread's fragment of the BM x BN tile (m0, n0) and every warpgroup's wgmmas have
// completed; shared memory is free for the epilogue once the caller has passed a barrier.
template <int BM, int BN, int STAGES, int ELEM, typename Acc>
__device__ __forceinline__ void
mainloop(const unsigned char* __restrict__ x, const unsigned char* __restrict__ w,
         unsigned sbase, int m0, int n0,
         int N, int H, int W, int C, int K, int R, int S, int P, int Q,
         int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
         Acc (&acc)[BN / 2]) {
    constexpr int THREADS = BM * 2;          // BM / 64 warpgroups of 128
    constexpr int CHE = 16 / ELEM;           // elements per 16-byte chunk
    constexpr int BKE = 128 / ELEM;          // elements per k-tile (one 128-byte row)
    constexpr int RPP = THREADS / 8;         // rows per gather pass (8 chunks per row)
    constexpr int A_IT = BM / RPP;
    constexpr int B_IT = BN / RPP;
    constexpr int PF = STAGES - 2;           // tiles in flight ahead of the one computed
    constexpr int STAGE = Smem<BM, BN, STAGES>::STAGE;
    static_assert(BM == 64 || BM == 128, "one or two consumer warpgroups");
    static_assert(BN == 64 || BN == 128 || BN == 256, "wgmma n in {64, 128, 256}");
    static_assert(STAGES >= 3, "the ring holds the tile computed, the one retiring and PF >= 1");
    static_assert(RPP % 8 == 0 && BN % RPP == 0, "rows of a pass keep their swizzle phase");

    const int M = N * P * Q;
    const int Kr = R * S * C;
    const int tid = threadIdx.x;

    // ---- per-thread gather state (conv_igemm.cu's, in bytes) --------------------------
    const int kc = tid & 7;                  // this thread's chunk column
    const int row0 = tid >> 3;
    // swizzled destination of (row0 + i*RPP, kc): the phase row & 7 is the same for all i
    const unsigned dst0 = (unsigned)(row0 * 128 + ((kc ^ (row0 & 7)) << 4));
    // A 1x1 stride-1 unpadded convolution (the bottleneck expand and reduce layers; then P = H,
    // Q = W) reads row m at pixel m: no division at all. Otherwise two unsigned divisions a
    // row. With a reduction of one or two k-tiles this setup was 41 % of the instructions of
    // the stage-2 expand layer (ncu, benchmarks/KERNEL_NOTES.md "Session 22"): an integer
    // division by a runtime divisor is some 20 instructions, three on the conversion pipes.
    // a_ptr[i]: row i's first tap (pixel (h0, w0) of its image; outside the image where
    // padding puts it, never read there), so a k-tile's gather adds one offset shared by
    // all rows instead of a 64-bit multiply chain a row.
    const bool pointwise = R == 1 && S == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
    const unsigned char* a_ptr[A_IT];
    int a_h0[A_IT], a_w0[A_IT];
    const unsigned PQ = (unsigned)(P * Q), uQ = (unsigned)Q;
#pragma unroll
    for (int i = 0; i < A_IT; ++i) {
        const int m = m0 + row0 + i * RPP;
        if (m >= M) {                        // rows past M: always zero-filled
            a_ptr[i] = x;
            a_h0[i] = -(1 << 28);
            a_w0[i] = 0;
        } else if (pointwise) {
            a_ptr[i] = x + (long long)m * C * ELEM;
            a_h0[i] = 0;
            a_w0[i] = 0;
        } else {
            const unsigned n = (unsigned)m / PQ, pq = (unsigned)m - n * PQ;
            const unsigned p = pq / uQ, q = pq - p * uQ;
            a_h0[i] = (int)p * stride_h - pad_h;
            a_w0[i] = (int)q * stride_w - pad_w;
            a_ptr[i] = x + (((long long)n * H + a_h0[i]) * W + a_w0[i]) * C * ELEM;
        }
    }
    // weights: row n0 + row0 + i*RPP of the [K, Kr] matrix; rows past K zero-filled
    const unsigned char* b_ptr = w + (long long)min(n0 + row0, K - 1) * Kr * ELEM;
    const long long b_step = (long long)RPP * Kr * ELEM;
    const int b_rows = K - n0 - row0;        // row i*RPP is valid iff i*RPP < b_rows

    const int KT = (Kr + BKE - 1) / BKE;
    int kk = kc * CHE;                       // reduction index of this thread's chunk
    int c_ = kk, r_ = 0, s_ = 0;             // pointwise: kk < C = Kr, or the chunk is past Kr
    if (!pointwise) {
        const unsigned rs = (unsigned)kk / (unsigned)C;
        c_ = kk - (int)rs * C;
        r_ = (int)(rs / (unsigned)S); s_ = (int)rs - r_ * S;
    }

    auto load_tile = [&](int stage) {
        const bool k_ok = kk < Kr;
        const unsigned sa = sbase + (unsigned)(stage * STAGE) + dst0;
        const int dh = r_ * dil_h, dw = s_ * dil_w;
        const long long tap = (long long)((dh * W + dw) * C + c_) * ELEM;   // the same for every row
#pragma unroll
        for (int i = 0; i < A_IT; ++i) {
            const int h = a_h0[i] + dh, ww = a_w0[i] + dw;
            const bool ok = k_ok && (unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W;
            cp_async16(sa + (unsigned)(i * RPP * 128), ok ? a_ptr[i] + tap : x, ok ? 16 : 0);
        }
        const unsigned sb = sa + (unsigned)(BM * 128);
        const unsigned char* bq = b_ptr + (long long)kk * ELEM;
#pragma unroll
        for (int i = 0; i < B_IT; ++i, bq += b_step) {
            const bool ok = k_ok && i * RPP < b_rows;
            cp_async16(sb + (unsigned)(i * RPP * 128), ok ? bq : w, ok ? 16 : 0);
        }
        // advance this thread's (r, s, c) by one k-tile
        kk += BKE;
        c_ += BKE;
        while (c_ >= C) {
            c_ -= C;
            if (++s_ == S) { s_ = 0; ++r_; }
        }
    };

    // no zeroing of acc: the tile's first wgmma writes it (scale-d = 0), which took 32 register
    // moves a thread a tile

#pragma unroll
    for (int st = 0; st < PF; ++st) {
        if (st < KT) load_tile(st);
        cp_async_commit();
    }

    // descriptors of stage 0; a stage is STAGE >> 4 further in the address field
    const int wg = tid >> 7;
    const unsigned long long da0 = smem_desc(sbase + (unsigned)(wg * 64 * 128));
    const unsigned long long db0 = smem_desc(sbase + (unsigned)(BM * 128));
    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<PF - 1>();             // this thread's copies of tile kt landed
        fence_proxy_async();
        __syncthreads();
        if (kt + PF < KT) load_tile((kt + PF) % STAGES);
        cp_async_commit();                   // (an empty group at the tail keeps the count)

        const unsigned long long soff = (unsigned long long)((kt % STAGES) * (STAGE >> 4));
        fence_acc(acc);
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < 4; ++k)          // 4 x 32 bytes = the 128-byte k-tile
            Wgmma<ELEM == 2 ? 0 : 1, BN>::mma(acc, da0 + soff + 2 * k, db0 + soff + 2 * k,
                                              kt > 0 || k > 0);
        wgmma_commit();
        wgmma_wait<1>();                     // the group of tile kt-1 has retired
        fence_acc(acc);
    }
    wgmma_wait<0>();
    fence_acc(acc);
    cp_async_wait<0>();
}

// Accumulator fragment -> shared tile [BM][BN + 8] (4-byte words; +8 keeps the 8-byte
// stores of a half-warp on 32 distinct banks).
template <int BM, int BN, typename Acc>
__device__ __forceinline__ void stage_acc(Acc* sC, const Acc (&acc)[BN / 2]) {
    constexpr int LDC = BN + 8;
    const int tid = threadIdx.x, lane = tid & 31;
    const int r = (tid >> 7) * 64 + ((tid >> 5) & 3) * 16 + (lane >> 2);
    const int c = (lane & 3) * 2;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {       // 8-byte stores (c even, LDC even, sC 8-aligned)
        Acc* p = sC + r * LDC + 8 * j + c;
        store_pair(p, acc[4 * j], acc[4 * j + 1]);
        store_pair(p + 8 * LDC, acc[4 * j + 2], acc[4 * j + 3]);
    }
}

// 1024-byte-aligned shared address of the dynamic buffer, and its generic pointer
__device__ __forceinline__ unsigned char* aligned_smem(unsigned char* raw, unsigned& sbase) {
    const unsigned s = smem_u32(raw);
    sbase = (s + 1023u) & ~1023u;
    return raw + (sbase - s);
}

}  // namespace cupyrt_wgmma

// ---------------------------------------------------------------------------------------
// FP16: x [N, H, W, C] half (C % 8 == 0), w [K, R, S, C] half; arguments exactly those of
// conv_igemm_f16 (kernels/gpu/conv_tc.py _Geometry.args). Epilogue per (m, k) in FP32:
//   v = acc * scale[k] + bias[k];  v += res[m * res_ld + k] (has_res);  v = act(v)
//   out[m * out_ld + out_off + k] = v   (half or float)
// Launch: grid (ceil(M/BM) * ceil(K/BN),), block 2*BM threads, dynamic smem
// Smem<BM, BN, STAGES>::BYTES, or less where the reduction has fewer k-tiles than STAGES:
// the ring only fills stages [0, k-tiles) (WgmmaTactic.smem_for).
template <int BM, int BN, int STAGES, int OUT_F32, int FAST = 0>
__global__ void __launch_bounds__(BM * 2, 1)
conv_wgmma_f16(const half_t* __restrict__ x, const half_t* __restrict__ w,
               typename cupyrt_wgmma::OutSel<OUT_F32>::T* __restrict__ out,
               const float* __restrict__ scale, const float* __restrict__ bias,
               const typename cupyrt_wgmma::OutSel<OUT_F32>::T* __restrict__ res,
               int N, int H, int W, int C, int K, int R, int S, int P, int Q,
               int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
               int out_ld, int out_off, int res_ld, int has_res,
               int act, float alpha, float beta) {
    using namespace cupyrt_wgmma;
    typedef typename OutSel<OUT_F32>::T OutT;
    constexpr int THREADS = BM * 2;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned sbase;
    unsigned char* smem = aligned_smem(smem_raw, sbase);

    // tile order: the BN tiles of one BM row-block are neighbours (A reuse from L2)
    const unsigned n_tiles = (unsigned)(K + BN - 1) / BN, mt = blockIdx.x / n_tiles;
    const int m0 = (int)mt * BM;
    const int n0 = (int)(blockIdx.x - mt * n_tiles) * BN;
    const int M = N * P * Q;

    // FAST = 1 (the default; CUPYRT_WGMMA_F16_FAST_EPILOGUE=0 turns it off): the INT8
    // kernel's residual prefetch (has_res bit 2: the BM x BN residual tile in shared memory
    // past the ring) and fixed-column epilogue; ResNet-50 FP16 b256 0.94x the time of
    // FAST = 0, bit-equal outputs (H200, benchmarks/RESULTS.md). FAST = 0: has_res 0 / 1,
    // the residual read from global memory per row.
    const int hres = FAST ? (has_res & 1) : has_res;
    const bool res_pf = FAST && hres && (has_res & 2) != 0;
    int res_off = 0;
    if (res_pf) {
        constexpr int STAGE = Smem<BM, BN, STAGES>::STAGE, EPI = Smem<BM, BN, STAGES>::EPI;
        const int used = min(STAGES, (R * S * C * 2 + 127) / 128);
        res_off = max(used * STAGE, EPI);
        constexpr int RB = (int)sizeof(OutT);
        constexpr int ROW_CHUNKS = BN * RB / 16;
        const int k_bytes = K * RB, n0b = n0 * RB;
        const unsigned sr = sbase + (unsigned)res_off;
        const unsigned char* rsrc = reinterpret_cast<const unsigned char*>(res);
        for (int idx = threadIdx.x; idx < BM * ROW_CHUNKS; idx += THREADS) {
            const int r = idx / ROW_CHUNKS, cb = (idx - r * ROW_CHUNKS) * 16;
            const bool ok = m0 + r < M && n0b + cb < k_bytes;
            const unsigned char* src =
                ok ? rsrc + ((long long)(m0 + r) * res_ld * RB + n0b + cb) : rsrc;
            cp_async16(sr + (unsigned)(r * BN * RB + cb), src, ok ? 16 : 0);
        }
        cp_async_commit();
    }
    float acc[BN / 2];
    mainloop<BM, BN, STAGES, 2>(reinterpret_cast<const unsigned char*>(x),
                                reinterpret_cast<const unsigned char*>(w), sbase, m0, n0,
                                N, H, W, C, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w,
                                dil_h, dil_w, acc);
    constexpr int LDC = BN + 8;
    float* sC = reinterpret_cast<float*>(smem);
    __syncthreads();                         // every warpgroup is done with the ring
    stage_acc<BM, BN>(sC, acc);
    __syncthreads();

    // conv_igemm.cu's V2 epilogue, the same math in the same order
    const int tid = threadIdx.x;
    const ActLin actf(act, alpha, beta);
    const bool vec8 = ((out_ld | out_off | (hres ? res_ld : 0)) & 7) == 0;
    constexpr int CPR = BN / 8;              // 8-channel groups per row
    const OutT* sR = res_pf ? reinterpret_cast<const OutT*>(smem + res_off) : nullptr;
    if (FAST && vec8 && (K & 7) == 0) {
        // one 8-channel group per thread for all its rows: scale and bias loaded once
        static_assert(THREADS % CPR == 0 && BM % (THREADS / CPR) == 0, "rows split evenly");
        const int cg = tid % CPR, col = n0 + cg * 8;
        if (col >= K) return;
        const float4 s0 = *reinterpret_cast<const float4*>(scale + col);
        const float4 s1 = *reinterpret_cast<const float4*>(scale + col + 4);
        const float4 b0 = *reinterpret_cast<const float4*>(bias + col);
        const float4 b1 = *reinterpret_cast<const float4*>(bias + col + 4);
        const float sc[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
        const float bi[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll 2
        for (int r = tid / CPR; r < BM; r += THREADS / CPR) {
            const int m = m0 + r;
            if (m >= M) break;
            const float4 a0 = *reinterpret_cast<const float4*>(sC + r * LDC + cg * 8);
            const float4 a1 = *reinterpret_cast<const float4*>(sC + r * LDC + cg * 8 + 4);
            float v[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] = v[e] * sc[e] + bi[e];
            if (hres) {
                float rv[8];
                load8(sR ? sR + r * BN + cg * 8 : res + (long long)m * res_ld + col, rv);
#pragma unroll
                for (int e = 0; e < 8; ++e) v[e] += rv[e];
            }
            actf.apply8(v);
            store8(out + (long long)m * out_ld + out_off + col, v);
        }
        return;
    }
    cupyrt_f16::store_tile<BM, BN, THREADS, 7, true>(sC, tid, m0, n0, M, K, out, scale, bias, res, sR,
                                                     out_ld, out_off, res_ld, hres, actf);
}

// ---------------------------------------------------------------------------------------
// INT8: x [N, H, W, C] int8 codes (C % 16 == 0), w [K, R, S, C] int8; arguments exactly
// those of conv_int8_igemm (kernels/gpu/conv_int8.py); exact s32 accumulation, then
// int8_epilogue.cuh's epilogue_staged (OUT 0 int8 / 1 float32 / 2 float16).
// res_kind | 4 (wgmma only): the residual tile is prefetched into shared memory at
// max(ring stages filled, staging tile) bytes past the aligned base; the launcher sets it
// only where rows are 16-byte aligned (K * element size % 16 == 0, aligned pointer) and
// reserves BM * BN * element size more bytes.
// MINB: CTAs an SM the registers must allow (__launch_bounds__; 3 for the 128x64 s3 tile: 73 KiB
// of ring on a 3x3 64-channel layer, 78 registers, so three CTAs an SM instead of two).
// Launch: grid (ceil(M/BM) * ceil(K/BN),), block 2*BM threads, smem Smem<BM,BN,STAGES>::BYTES.
template <int BM, int BN, int STAGES, int OUT, int MINB = 1>
__global__ void __launch_bounds__(BM * 2, MINB)
conv_wgmma_s8(const i8_t* __restrict__ x, const i8_t* __restrict__ w,
              typename cupyrt_int8::OutSel<OUT>::T* __restrict__ out,
              const float* __restrict__ s_w, const float* __restrict__ bias,
              const void* __restrict__ res,
              int N, int H, int W, int C, int K, int R, int S, int P, int Q,
              int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
              int out_ld, int out_off, int res_ld, int res_kind, int has_bias,
              float s_in, float res_scale, float inv_out,
              int act, float alpha, float beta) {
    using namespace cupyrt_wgmma;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned sbase;
    unsigned char* smem = aligned_smem(smem_raw, sbase);

    const unsigned n_tiles = (unsigned)(K + BN - 1) / BN, mt = blockIdx.x / n_tiles;
    const int m0 = (int)mt * BM;
    const int n0 = (int)(blockIdx.x - mt * n_tiles) * BN;
    const int M = N * P * Q;

    // res_kind | 4: the launcher reserved BM x BN residual elements of shared memory past
    // the ring / staging area (WgmmaTactic.smem_for): fetch this CTA's residual tile now,
    // one cp.async group older than the mainloop's, so it lands while the MMAs run and the
    // epilogue reads it from shared memory instead of waiting on global memory per group.
    const int rk = res_kind & 3;
    const bool res_pf = (res_kind & 4) != 0;
    int res_off = 0;
    if (res_pf) {
        constexpr int STAGE = Smem<BM, BN, STAGES>::STAGE, EPI = Smem<BM, BN, STAGES>::EPI;
        const int used = min(STAGES, (R * S * C + 127) / 128);     // stages the ring fills
        res_off = max(used * STAGE, EPI);
        const int rbytes = rk == 1 ? 1 : (rk == 2 ? 4 : 2);
        const int row_chunks = BN * rbytes / 16;                   // 16-byte chunks per row
        const int lg = __ffs(row_chunks) - 1;      // a power of two: a shift, not a division
        // row_chunks divides the block (at most 256 * 4 / 16 = 64 chunks a row): a thread keeps
        // its chunk column and steps down the rows, its source and destination by constant strides
        const int cb = (threadIdx.x & (row_chunks - 1)) * 16, r_step = (BM * 2) >> lg;
        const bool col_ok = n0 * rbytes + cb < K * rbytes;
        const long long row_bytes = (long long)res_ld * rbytes;
        const unsigned char* rsrc = reinterpret_cast<const unsigned char*>(res);
        int r = threadIdx.x >> lg;
        const unsigned char* src = rsrc + (m0 + r) * row_bytes + n0 * rbytes + cb;
        unsigned dst = sbase + (unsigned)(res_off + r * BN * rbytes + cb);
        for (; r < BM; r += r_step, src += r_step * row_bytes, dst += (unsigned)(r_step * BN * rbytes)) {
            const bool ok = col_ok && m0 + r < M;
            cp_async16(dst, ok ? src : rsrc, ok ? 16 : 0);
        }
        cp_async_commit();
    }
    int acc[BN / 2];
    mainloop<BM, BN, STAGES, 1>(reinterpret_cast<const unsigned char*>(x),
                                reinterpret_cast<const unsigned char*>(w), sbase, m0, n0,
                                N, H, W, C, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w,
                                dil_h, dil_w, acc);
    int* sC = reinterpret_cast<int*>(smem);
    __syncthreads();
    stage_acc<BM, BN>(sC, acc);
    __syncthreads();
    cupyrt_int8::epilogue_staged<BM, BN, BM * 2, OUT>(
        sC, threadIdx.x, m0, n0, M, K, out, s_w, bias, res, out_ld, out_off, res_ld, rk,
        has_bias, s_in, res_scale, inv_out, act, alpha, beta, res_pf ? smem + res_off : nullptr);
}

// Instantiations for nvcc's CI compile check (NVRTC instantiates through name_expressions;
// kernels/gpu/conv_wgmma.py holds the tactic list: keep the two in step).
#ifdef CUPYRT_NVCC_INSTANTIATE
#define CUPYRT_WG_F16_ARGS(OT) (const half_t*, const half_t*, OT*, const float*, const float*, \
    const OT*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, \
    int, int, int, int, float, float)
#define CUPYRT_WG_S8_ARGS(OT) (const i8_t*, const i8_t*, OT*, const float*, const float*, \
    const void*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, \
    int, int, int, int, int, float, float, float, int, float, float)
template __global__ void conv_wgmma_f16<128, 128, 4, 0> CUPYRT_WG_F16_ARGS(half_t);
template __global__ void conv_wgmma_f16<128, 128, 4, 1> CUPYRT_WG_F16_ARGS(float);
template __global__ void conv_wgmma_f16<128, 256, 4, 0> CUPYRT_WG_F16_ARGS(half_t);
template __global__ void conv_wgmma_f16<128, 128, 3, 0> CUPYRT_WG_F16_ARGS(half_t);
template __global__ void conv_wgmma_f16<64, 128, 4, 0> CUPYRT_WG_F16_ARGS(half_t);
template __global__ void conv_wgmma_f16<128, 64, 4, 0> CUPYRT_WG_F16_ARGS(half_t);
template __global__ void conv_wgmma_f16<64, 64, 4, 0> CUPYRT_WG_F16_ARGS(half_t);
template __global__ void conv_wgmma_f16<128, 128, 4, 0, 1> CUPYRT_WG_F16_ARGS(half_t);
template __global__ void conv_wgmma_f16<64, 128, 4, 1, 1> CUPYRT_WG_F16_ARGS(float);
template __global__ void conv_wgmma_s8<128, 128, 4, 0> CUPYRT_WG_S8_ARGS(i8_t);
template __global__ void conv_wgmma_s8<128, 128, 4, 1> CUPYRT_WG_S8_ARGS(float);
template __global__ void conv_wgmma_s8<128, 128, 4, 2> CUPYRT_WG_S8_ARGS(half_t);
template __global__ void conv_wgmma_s8<128, 256, 4, 0> CUPYRT_WG_S8_ARGS(i8_t);
template __global__ void conv_wgmma_s8<128, 128, 3, 0> CUPYRT_WG_S8_ARGS(i8_t);
template __global__ void conv_wgmma_s8<64, 128, 4, 0> CUPYRT_WG_S8_ARGS(i8_t);
template __global__ void conv_wgmma_s8<128, 64, 4, 0> CUPYRT_WG_S8_ARGS(i8_t);
template __global__ void conv_wgmma_s8<64, 64, 4, 0> CUPYRT_WG_S8_ARGS(i8_t);
template __global__ void conv_wgmma_s8<128, 64, 3, 0, 3> CUPYRT_WG_S8_ARGS(i8_t);
#endif
