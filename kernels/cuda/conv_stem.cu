// conv_stem.cu -- the FP16 stem convolution (C <= 4 input channels, e.g. ResNet's 7x7/2
// RGB stem) on mma.sync, with the input patch of each output tile staged once in shared
// memory and the A operand built from it (im2col on the fly).
//
// Why not conv_igemm.cu's small-C path: there every 16-byte chunk of the A tile (two
// taps x 4 channels) is gathered from global memory by two 8-byte cp.async, 28 chunks
// per output pixel for a 7x7 filter -- 14x the input bytes go through the load units,
// and a 7-k-tile pipeline per 128x64 tile never reaches steady state. Here one CTA tile
// is TP output rows x 16 output columns of one image, x 64 output channels:
//
//   input patch, PH = (TP-1)*SH + R rows, PW = 15*SW + S columns, 4 halves per pixel,
//   loaded once per tile (cp.async, 8 bytes per pixel, zeros in the padding), double
//   buffered: the next tile's patch loads while this one is multiplied;
//   weights [64][KR] resident in shared memory for the CTA's lifetime (persistent CTAs
//   loop over tiles), KR = 16 * ceil(R*S / 4): taps flattened over (r, s), 4 per k16
//   step (7x7: 13 steps, 208 = 196 real + 12 zero);
//   mma.sync.m16n8k16 with FP32 accumulators: one m16 fragment = the 16 output columns
//   of one output row, each warp MT rows x all 64 channels (8 n8 fragments).
//
// A fragment of k16 step ks, lane (g = lane/4, t = lane%4) -- PTX's m16n8k16 layout:
//   a0 = A[row g][cols 2t, 2t+1]     -> tap 4ks + t/2,     channels 2(t%2), 2(t%2)+1
//   a2 = A[row g][cols 2t+8, 2t+9]   -> tap 4ks + t/2 + 2  (a1, a3: row g + 8)
// so each register is one 32-bit shared load: half a pixel of the patch at
//   pixel (row*SH + tap/S, col*SW + tap%S),  word (t%2).
// A warp's 32 lanes of one load read 16g + 4t bytes past a common base: 128 contiguous
// bytes when the tap pair stays in one filter row (no bank conflict).
// Taps past R*S read pixel 0 and are zeroed (the weights there are zero too, but a NaN
// or inf in the input must not leak into 0 * x).
//
// Epilogue: v = act(acc * scale[k] + bias[k]) (ActLin: ReLU & co inline). OUT 0, half:
// packed into a per-warp shared tile, then 16-byte stores (the 16 pixels of an output row
// are contiguous in NHWC); OUT 1, float32: float2 stores straight from the accumulators;
// OUT 2, int8 codes q = sat(rint(v * inv_out)) (int8_epilogue.cuh's codes2: an INT8
// layer's output computed in FP16 from the float input, no input quantisation), staged
// like half, 16 channels per 16-byte store (K % 16 == 0); with ReLU or no activation
// inv_out is folded into scale and bias instead (q = sat(rint(max(v', 0) or v'))).
// out[((n*P + p)*Q + q) * out_ld + out_off + k]: out_ld / out_off place it in a wider
// (concat) buffer.
//
// Input kinds (IN):
//   0  x NHWC half with CS = 4 or 8 stored channels per pixel (channels 0..3 are read)
//   1  x NCHW float32 (C-contiguous, C <= 4): the reformat pass is skipped; each thread
//      loads its pixels of the next tile into registers before this tile's MMAs and
//      converts + stores them after (the loads' latency hidden behind the MMAs). The
//      patch is fetched by columns: thread tid < FT * PW (FT = THREADS / PW) takes patch
//      column tid % PW and rows tid / PW + FT j, so its column offset and column bounds
//      check are tile-invariant and its rows one 32-bit index stepping by FT image rows
//   2  x NCHW float16, the same
//
// Launch: grid (min(tiles, persistent CTAs), ceil(K / 64)), block WARPS*32,
// dynamic shared memory conv_stem.py's stem_smem_bytes (the layout below).
#include "int8_epilogue.cuh"   // i8_t, codes2
#include "ptx.cuh"

namespace cupyrt_stem {

using namespace cupyrt_ptx;

template <int OUT> struct OutSel { typedef half_t T; };   // OUT 0: half
template <> struct OutSel<1> { typedef float T; };
template <> struct OutSel<2> { typedef i8_t T; };

template <typename T> struct InLd;
template <> struct InLd<float> {
    static __device__ __forceinline__ float load(const float* p) { return __ldg(p); }
};
template <> struct InLd<half_t> {
    static __device__ __forceinline__ float load(const half_t* p) { return h2f(__ldg(p)); }
};

// The shape constants shared by the kernel and (as arithmetic) conv_stem.py.
template <int R, int S, int SH, int SW, int TP, int WARPS, int OUT>
struct Geo {
    static constexpr int TQ = 16;                        // output columns per tile
    static constexpr int BN = 64;                        // output channels per CTA
    static constexpr int PH = (TP - 1) * SH + R;         // patch rows
    static constexpr int PW = (TQ - 1) * SW + S;         // patch columns
    static constexpr int RS = R * S;
    static constexpr int KS = (RS + 3) / 4;              // k16 steps
    static constexpr int KR = KS * 16;                   // packed reduction (halves)
    static constexpr int LDB = KR + 8;                   // weight row stride (halves): ldmatrix rows
                                                         // 16 bytes apart mod 128 (no conflicts)
    static constexpr int MT = TP / WARPS;                // m16 fragments (output rows) per warp
    static constexpr int LDC = BN + 8;                   // staging row stride (halves)
    static constexpr int LDC8 = BN + 16;                 // int8 staging row stride (bytes)
    static constexpr int W_BYTES = BN * LDB * 2;
    static constexpr int X_BYTES = (PH * PW * 8 + 15) / 16 * 16;
    static constexpr int C_BYTES = OUT == 1 ? 0 : WARPS * MT * 16 * (OUT == 2 ? LDC8 : LDC * 2);
    static constexpr int SMEM = W_BYTES + 2 * X_BYTES + C_BYTES + 2 * BN * 4;
};

template <int M> struct EpiMode { static constexpr int value = M; };   // the epilogue's form

// byte offset of tap `tap` in the patch (pixel (tap / S, tap % S)); taps past R*S: 0
template <int S, int PW, int RS>
__device__ __forceinline__ constexpr int tap_off(int tap) {
    return tap < RS ? ((tap / S) * PW + tap % S) * 8 : 0;
}

}  // namespace cupyrt_stem

template <int R, int S, int SH, int SW, int TP, int WARPS, int IN, int OUT, int MINB>
__global__ void __launch_bounds__(WARPS * 32, MINB)
conv_stem_f16(const void* __restrict__ xv,              // IN 0: [N,H,W,CS] half; 1/2: [N,C,H,W]
              const half_t* __restrict__ w,             // [K, KR] packed (pack_weight_stem)
              typename cupyrt_stem::OutSel<OUT>::T* __restrict__ out,
              const float* __restrict__ scale,          // [K]
              const float* __restrict__ bias,           // [K]
              int N, int H, int W, int C, int K, int P, int Q, int pad_h, int pad_w,
              int out_ld, int out_off, int act, float alpha, float beta,
              float inv_out) {                          // OUT 2: 1 / the output's scale
    using namespace cupyrt_stem;
    typedef Geo<R, S, SH, SW, TP, WARPS, OUT> G;
    typedef typename OutSel<OUT>::T OutT;
    typedef typename cupyrt_stem::OutSel<IN == 1>::T InT;   // IN 1: float, else half
    constexpr int THREADS = WARPS * 32;
    constexpr int TQ = G::TQ, BN = G::BN, PH = G::PH, PW = G::PW, KS = G::KS, KR = G::KR;
    constexpr int LDB = G::LDB, MT = G::MT, LDC = G::LDC, RS = G::RS;
    constexpr int PIX = PH * PW;
    constexpr int FT = THREADS / PW;                     // IN 1/2: fetching threads per patch column
    constexpr int PF = IN ? (PH + FT - 1) / FT : 1;      // prefetched pixels (rows) / thread
    static_assert(FT >= 1, "a patch row no wider than the block");
    static_assert(TP % WARPS == 0, "whole output rows per warp");
    static_assert(IN >= 0 && IN <= 2, "input kind 0, 1 or 2");
    static_assert(OUT >= 0 && OUT <= 2, "output half, float32 or int8");

    extern __shared__ __align__(128) unsigned char smem_raw[];
    half_t* sW = reinterpret_cast<half_t*>(smem_raw);
    unsigned char* sX = smem_raw + G::W_BYTES;                       // two patch buffers
    unsigned char* sC = sX + 2 * G::X_BYTES;                         // per-warp staging
    float* sScale = reinterpret_cast<float*>(sX + 2 * G::X_BYTES + G::C_BYTES);
    float* sBias = sScale + BN;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n0 = blockIdx.y * BN;
    const int kn = min(BN, K - n0);                      // channels of this CTA (K % 8 == 0)
    const int tiles_q = (Q + TQ - 1) / TQ, tiles_p = (P + TP - 1) / TP;
    const int tiles = N * tiles_p * tiles_q;
    const unsigned sW_u = smem_u32(sW), sX_u = smem_u32(sX);

    // ---- resident weights and epilogue vectors ------------------------------------
    constexpr int WCH = KR / 8;                          // 16-byte chunks per weight row
    for (int i = tid; i < BN * WCH; i += THREADS) {
        const int row = i / WCH, ch = i - row * WCH;
        const bool ok = row < kn;
        cp_async16(sW_u + 2u * (unsigned)(row * LDB + ch * 8),
                   ok ? w + (long long)(n0 + row) * KR + ch * 8 : w, ok ? 16 : 0);
    }
    // OUT 2 with ReLU or no activation: 1 / the output's scale is folded into the vectors
    // (the values come out in code units; max(v, 0) is ReLU there), so an element's epilogue
    // is one FMA, one max and the conversion
    const bool fold = OUT == 2 && (act == ACT_RELU || act == ACT_NONE);
    const float f_out = fold ? inv_out : 1.f;
    for (int i = tid; i < BN; i += THREADS) {
        sScale[i] = i < kn ? __fmul_rn(scale[n0 + i], f_out) : 0.f;
        sBias[i] = i < kn ? __fmul_rn(bias[n0 + i], f_out) : 0.f;
    }

    // ---- the patch of a tile --------------------------------------------------------
    //   tile -> (n, tp, tq); patch pixel (ph, pw) = input (tp*TP*SH - pad_h + ph,
    //                                                      tq*TQ*SW - pad_w + pw)
    //   a CTA's tiles are blockIdx.x + i gridDim.x: the first decoded by division, each next
    //   one by adding gridDim.x's own (n, tp, tq) digits with carries (no division a tile)
    auto decode = [&](int tile, int& n, int& tp, int& tq) {
        tq = tile % tiles_q; const int r = tile / tiles_q;
        tp = r % tiles_p; n = r / tiles_p;
    };
    int step_n, step_p, step_q;
    decode(gridDim.x, step_n, step_p, step_q);
    auto advance = [&](int& n, int& tp, int& tq) {
        tq += step_q;
        const bool cq = tq >= tiles_q;
        tq = cq ? tq - tiles_q : tq;                     // tq, step_q < tiles_q: one carry at most
        tp += step_p + (cq ? 1 : 0);
        const bool cp = tp >= tiles_p;
        tp = cp ? tp - tiles_p : tp;
        n += step_n + (cp ? 1 : 0);
    };
    // IN 0: one 8-byte cp.async per pixel (zero-filled outside the image)
    auto load_patch_async = [&](int n, int p0, int q0, int buf) {
        const int h0 = p0 * SH - pad_h, w0 = q0 * SW - pad_w;
        const half_t* xn = reinterpret_cast<const half_t*>(xv) + (long long)n * H * W * C;
        const unsigned dst0 = sX_u + (unsigned)(buf * G::X_BYTES);
        for (int i = tid; i < PIX; i += THREADS) {
            const int ph = i / PW, pw = i - ph * PW;
            const int h = h0 + ph, ww = w0 + pw;
            const bool ok = (unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W;
            cp_async8(dst0 + 8u * (unsigned)i, ok ? xn + (h * W + ww) * C : xn, ok ? 8 : 0);
        }
    };
    // IN 1/2: this thread's pixels of a tile's patch, C planes each, into registers: patch
    // column f_pw, rows f_ph0 + FT j (threads past FT * PW fetch nothing)
    float pf[PF][4];
    const int f_pw = tid % PW, f_ph0 = tid / PW;         // tile-invariant
    const bool f_on = tid < FT * PW;
    auto fetch_patch = [&](int n, int p0, int q0) {
        const int h0 = p0 * SH - pad_h + f_ph0, ww = q0 * SW - pad_w + f_pw;
        const bool col_ok = f_on && (unsigned)ww < (unsigned)W;
        // the image's base pointer once, in registers, and 32-bit element indices into it
        // (C * H * W < 2^31, conv_stem.py): a load's address is one IMAD.WIDE.U32
        const InT* xn = reinterpret_cast<const InT*>(xv) + (long long)n * C * H * W;
        asm("" : "+l"(xn));
        const unsigned HW = (unsigned)(H * W);
        unsigned idx = (unsigned)(h0 * W + ww);          // row j: idx + FT W j (unread where out of range)
#pragma unroll
        for (int j = 0; j < PF; ++j, idx += (unsigned)(FT * W)) {
            const bool ok = col_ok && (PH % FT == 0 || f_ph0 + FT * j < PH) && (unsigned)(h0 + FT * j) < (unsigned)H;
#pragma unroll
            for (int c = 0; c < 4; ++c)
                pf[j][c] = ok && c < C ? InLd<InT>::load(xn + (idx + (unsigned)c * HW)) : 0.f;
        }
    };
    auto store_patch = [&](int buf) {
        uint2* dst = reinterpret_cast<uint2*>(sX + buf * G::X_BYTES) + f_ph0 * PW + f_pw;
#pragma unroll
        for (int j = 0; j < PF; ++j) {
            if (f_on && (PH % FT == 0 || f_ph0 + FT * j < PH))
                dst[FT * j * PW] = make_uint2(pack_h2(pf[j][0], pf[j][1]), pack_h2(pf[j][2], pf[j][3]));
        }
    };

    // ---- per-lane fragment addressing ----------------------------------------------
    const int g = lane >> 2, t = lane & 3;
    const bool hi = (t >> 1) != 0;                       // odd tap of the pair
    // word index of (warp's first output row, column g, word t%2) in a patch buffer
    const int a_word = ((warp * MT * SH) * PW + g * SW) * 2 + (t & 1);
    // ldmatrix rows/cols for B (n-fragments 2jj, 2jj+1 per x4), as conv_igemm.cu
    const int b_row = (lane & 7) + ((lane >> 4) << 3);
    const int b_col = ((lane >> 3) & 1) * 8;
    const unsigned b_base = sW_u + 2u * (unsigned)(b_row * LDB + b_col);
    const ActLin actf(act, alpha, beta);

    // (n, tp, tq) of this tile and of the next
    int tile = blockIdx.x, n, tp, tq;
    decode(tile, n, tp, tq);
    if (tile < tiles) {
        if constexpr (IN == 0) load_patch_async(n, tp * TP, tq * TQ, 0);
        else { fetch_patch(n, tp * TP, tq * TQ); store_patch(0); }
    }
    cp_async_commit();

    for (int it = 0; tile < tiles; ++it, tile += gridDim.x) {
        const int buf = it & 1;
        const int next = tile + gridDim.x;
        const int p0 = tp * TP, q0 = tq * TQ;
        int n_next = n, tp_next = tp, tq_next = tq;
        advance(n_next, tp_next, tq_next);
        if constexpr (IN == 0) {
            if (next < tiles) load_patch_async(n_next, tp_next * TP, tq_next * TQ, buf ^ 1);
        } else {
            if (next < tiles) fetch_patch(n_next, tp_next * TP, tq_next * TQ);
        }
        cp_async_commit();
        cp_async_wait<1>();                              // this tile's patch (and the weights)
        __syncthreads();

        float acc[MT][8][4];
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

        const unsigned* xw = reinterpret_cast<const unsigned*>(sX + buf * G::X_BYTES) + a_word;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
            unsigned bf[8][2];
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
                unsigned r4[4];
                ldmatrix_x4(r4, b_base + 2u * (unsigned)(jj * 16 * LDB + ks * 16));
                bf[2 * jj][0] = r4[0]; bf[2 * jj][1] = r4[1];
                bf[2 * jj + 1][0] = r4[2]; bf[2 * jj + 1][1] = r4[3];
            }
            // taps of this lane: tA = 4ks + hi (a0, a1), tB = tA + 2 (a2, a3)
            const int tA = 4 * ks, tB = 4 * ks + 2;
            const int offA = (hi ? tap_off<S, PW, RS>(tA + 1) : tap_off<S, PW, RS>(tA)) / 4;
            const int offB = (hi ? tap_off<S, PW, RS>(tB + 1) : tap_off<S, PW, RS>(tB)) / 4;
            const bool okA = hi ? tA + 1 < RS : tA < RS;
            const bool okB = hi ? tB + 1 < RS : tB < RS;
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                constexpr int ROW8 = 8 * SW * 2;                 // words from column g to g + 8
                const unsigned* xr = xw + i * SH * PW * 2;
                unsigned af[4];
                af[0] = okA ? xr[offA] : 0u;
                af[1] = okA ? xr[offA + ROW8] : 0u;
                af[2] = okB ? xr[offB] : 0u;
                af[3] = okB ? xr[offB + ROW8] : 0u;
#pragma unroll
                for (int j = 0; j < 8; ++j) mma_16816(acc[i][j], af, bf[j][0], bf[j][1]);
            }
        }

        if constexpr (IN != 0) {
            if (next < tiles) store_patch(buf ^ 1);      // read at the next iteration, after its barrier
        }

        // ---- epilogue ------------------------------------------------------------------
        const int pw0 = p0 + warp * MT;                  // this warp's first output row
        if constexpr (OUT == 1) {
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int c = j * 8 + 2 * t;
                if (c >= kn) continue;
                const float s0 = sScale[c], s1 = sScale[c + 1], b0 = sBias[c], b1 = sBias[c + 1];
#pragma unroll
                for (int i = 0; i < MT; ++i)
#pragma unroll
                    for (int hh = 0; hh < 2; ++hh) {
                        const int p = pw0 + i, q = q0 + g + 8 * hh;
                        if (p >= P || q >= Q) continue;
                        OutT* o = out + ((long long)(n * P + p) * Q + q) * out_ld + out_off + n0 + c;
                        *reinterpret_cast<float2*>(o) = make_float2(
                            actf(acc[i][j][2 * hh] * s0 + b0), actf(acc[i][j][2 * hh + 1] * s1 + b1));
                    }
            }
        } else {
            // staged: OUT 0 half (2 bytes a channel), OUT 2 int8 codes (1 byte); a staged row
            // is one output pixel's 64 channels, then 16-byte chunks of it stored by
            // consecutive lanes (half: 8 lanes a pixel, int8: 4), 512 contiguous bytes per
            // warp instruction when out_ld == 64
            constexpr int EB = OUT == 2 ? 1 : 2;                 // bytes per channel
            constexpr int ROWB = OUT == 2 ? G::LDC8 : G::LDC * 2; // staged row stride (bytes)
            constexpr int CPR = BN * EB / 16;                     // 16-byte chunks per row
            unsigned char* cw = sC + warp * (MT * 16 * ROWB);
            // the int8 epilogue's form is chosen once a tile, outside the element loops
            // (EpiMode: 1 folded ReLU, 2 folded identity, 0 any activation), so that a folded
            // ReLU's max goes into the conversion (F2IP.RELU) and no element branches
            auto stage = [&](auto mode) {
                constexpr int M = decltype(mode)::value;
                static_assert(M >= 0 && M <= 2, "epilogue form 0, 1 or 2");
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    const int c = j * 8 + 2 * t;
                    const float s0 = sScale[c], s1 = sScale[c + 1], b0 = sBias[c], b1 = sBias[c + 1];
#pragma unroll
                    for (int i = 0; i < MT; ++i)
#pragma unroll
                        for (int hh = 0; hh < 2; ++hh) {
                            const int r = i * 16 + g + 8 * hh;
                            const float u0 = acc[i][j][2 * hh] * s0 + b0;
                            const float u1 = acc[i][j][2 * hh + 1] * s1 + b1;
                            unsigned char* dst = cw + r * ROWB + c * EB;
                            if constexpr (OUT == 2) {
                                float va, vb;
                                if constexpr (M == 1) {
                                    va = fmaxf(u0, 0.f); vb = fmaxf(u1, 0.f);
                                } else if constexpr (M == 2) {
                                    va = u0; vb = u1;
                                } else {
                                    va = __fmul_rn(actf(u0), inv_out);
                                    vb = __fmul_rn(actf(u1), inv_out);
                                }
                                *reinterpret_cast<unsigned short*>(dst) =
                                    (unsigned short)cupyrt_int8::codes2(va, vb, 0u);
                            } else {
                                *reinterpret_cast<unsigned*>(dst) = pack_h2(actf(u0), actf(u1));
                            }
                        }
                }
            };
            if (fold && act == ACT_RELU) stage(EpiMode<1>{});          // fold: OUT 2 only
            else if (fold) stage(EpiMode<2>{});
            else stage(EpiMode<0>{});
            __syncwarp();
            // store k: staged rows RPK k + lr, chunk lch of each (RPK = 32 / CPR rows a store,
            // 16 % RPK == 0): output pixel (pw0 + RPK k / 16, q0 + RPK k % 16 + lr), so a
            // lane's address is one base plus compile-time multiples of the row strides
            constexpr int RPK = 32 / CPR;
            static_assert(16 % RPK == 0, "a store's rows within one output row");
            const int lr = lane / CPR, lch = lane % CPR;
            OutT* ob = out + ((long long)(n * P + pw0) * Q + q0 + lr) * out_ld + out_off + n0 + lch * (16 / EB);
            long long prow = (long long)Q * out_ld;                         // one output row
            asm("" : "+l"(ob), "+l"(prow));              // computed once a tile, kept in registers
            const bool ch_ok = lch * (16 / EB) < kn;
#pragma unroll
            for (int k = 0; k < MT * 16 * CPR / 32; ++k) {
                const int dp = (RPK * k) >> 4, dq = (RPK * k) & 15;          // compile-time
                if (ch_ok && pw0 + dp < P && q0 + dq + lr < Q) {
                    const uint4 v = *reinterpret_cast<const uint4*>(cw + (RPK * k + lr) * ROWB + lch * 16);
                    st_global16(ob + (dp * prow + dq * out_ld), v);
                }
            }
            __syncwarp();
        }
        n = n_next; tp = tp_next; tq = tq_next;
        __syncthreads();                                 // buf is refilled next iteration
    }
    cp_async_wait<0>();
}

#ifdef CUPYRT_NVCC_INSTANTIATE
#define STEM_TAIL const float*, const float*, int, int, int, int, int, int, int, int, int, int, int, int, float, float, float
#define STEM_ARGS const void*, const half_t*, half_t*, STEM_TAIL
#define STEM_ARGS_F32 const void*, const half_t*, float*, STEM_TAIL
#define STEM_ARGS_I8 const void*, const half_t*, i8_t*, STEM_TAIL
template __global__ void conv_stem_f16<7, 7, 2, 2, 8, 4, 0, 0, 3>(STEM_ARGS);
template __global__ void conv_stem_f16<7, 7, 2, 2, 16, 4, 0, 0, 2>(STEM_ARGS);
template __global__ void conv_stem_f16<7, 7, 2, 2, 8, 4, 1, 0, 3>(STEM_ARGS);
template __global__ void conv_stem_f16<7, 7, 2, 2, 16, 4, 1, 0, 2>(STEM_ARGS);
template __global__ void conv_stem_f16<7, 7, 2, 2, 8, 4, 2, 0, 3>(STEM_ARGS);
template __global__ void conv_stem_f16<7, 7, 2, 2, 8, 4, 0, 1, 3>(STEM_ARGS_F32);
template __global__ void conv_stem_f16<7, 7, 2, 2, 8, 4, 1, 1, 3>(STEM_ARGS_F32);
template __global__ void conv_stem_f16<7, 7, 2, 2, 16, 4, 0, 1, 2>(STEM_ARGS_F32);
template __global__ void conv_stem_f16<3, 3, 1, 1, 8, 4, 0, 0, 3>(STEM_ARGS);
template __global__ void conv_stem_f16<5, 5, 2, 1, 8, 4, 1, 1, 3>(STEM_ARGS_F32);
template __global__ void conv_stem_f16<7, 7, 2, 2, 8, 4, 1, 2, 3>(STEM_ARGS_I8);
template __global__ void conv_stem_f16<7, 7, 2, 2, 16, 4, 1, 2, 2>(STEM_ARGS_I8);
template __global__ void conv_stem_f16<7, 7, 2, 2, 8, 4, 0, 2, 3>(STEM_ARGS_I8);
#undef STEM_ARGS
#undef STEM_ARGS_F32
#undef STEM_ARGS_I8
#undef STEM_TAIL
#endif
