// conv_gemm.cu -- the convolution tactics around the tensor-core kernel:
//   epilogue_nhwc  : scale/bias/residual/activation/cast after a cuBLAS GEMM
//   im2col_nhwc    : NHWC -> [M, R*S*Cg] columns, (r, s, c) order = KRSC
//   dwconv_nhwc    : direct depthwise convolution with fused epilogue
// All index over NHWC with the channel fastest, so a warp touches 32
// consecutive channels of one pixel (coalesced).
#include "common.cuh"

// y: [M, K] GEMM result with row stride y_ld (any of half_t/float);
// out[m * out_ld + out_off + k] = act((y * scale[k] + bias[k]) + res[m * res_ld + k])
template <typename InT, typename OutT>
__global__ void epilogue_nhwc(const InT* __restrict__ y, OutT* __restrict__ out,
                              const float* __restrict__ scale, const float* __restrict__ bias,
                              const OutT* __restrict__ res,
                              long long M, int K, int y_ld, int out_ld, int out_off, int res_ld,
                              int has_res, int act, float alpha, float beta) {
    const ActLin actf(act, alpha, beta);
    const long long total = M * K;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long m = i / K;
        int k = (int)(i - m * K);
        float v = io<InT>::load(y + m * y_ld + k) * scale[k] + bias[k];
        if (has_res) v += io<OutT>::load(res + m * res_ld + k);
        io<OutT>::store(out + m * out_ld + out_off + k, actf(v));
    }
}

// col[m, (r*S + s)*Cg + c] = x[n, h, w, c0 + c]  (0 in the padding)
template <typename T>
__global__ void im2col_nhwc(const T* __restrict__ x, T* __restrict__ col,
                            int N, int H, int W, int C, int R, int S, int P, int Q,
                            int sh, int sw, int ph, int pw, int dh, int dw, int c0, int Cg) {
    const int RSC = R * S * Cg;
    const long long total = (long long)N * P * Q * RSC;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long m = i / RSC;
        int kk = (int)(i - m * RSC);
        int c = kk % Cg, rs = kk / Cg;
        int r = rs / S, s = rs - r * S;
        int q = (int)(m % Q);
        long long t = m / Q;
        int p = (int)(t % P);
        int n = (int)(t / P);
        int h = p * sh - ph + r * dh, w = q * sw - pw + s * dw;
        T v = (T)0;
        if ((unsigned)h < (unsigned)H && (unsigned)w < (unsigned)W)
            v = x[(((long long)n * H + h) * W + w) * C + c0 + c];
        col[i] = v;
    }
}

// Depthwise (groups == C, multiplier 1): wt is float32 [R, S, C].
template <typename T>
__global__ void dwconv_nhwc(const T* __restrict__ x, const float* __restrict__ wt,
                            T* __restrict__ out, const float* __restrict__ scale,
                            const float* __restrict__ bias,
                            int N, int H, int W, int C, int R, int S, int P, int Q,
                            int sh, int sw, int ph, int pw, int dh, int dw,
                            int out_ld, int out_off, int act, float alpha, float beta) {
    const ActLin actf(act, alpha, beta);
    const long long total = (long long)N * P * Q * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int c = (int)(i % C);
        long long m = i / C;
        int q = (int)(m % Q);
        long long t = m / Q;
        int p = (int)(t % P);
        int n = (int)(t / P);
        const T* xn = x + (long long)n * H * W * C + c;
        float acc = 0.f;
        for (int r = 0; r < R; ++r) {
            int h = p * sh - ph + r * dh;
            if ((unsigned)h >= (unsigned)H) continue;
            for (int s = 0; s < S; ++s) {
                int w = q * sw - pw + s * dw;
                if ((unsigned)w >= (unsigned)W) continue;
                acc += io<T>::load(xn + ((long long)h * W + w) * C) * wt[(r * S + s) * C + c];
            }
        }
        float v = acc * scale[c] + bias[c];
        io<T>::store(out + m * out_ld + out_off + c, actf(v));
    }
}

#ifdef CUPYRT_NVCC_INSTANTIATE
template __global__ void epilogue_nhwc<half_t, half_t>(const half_t*, half_t*, const float*, const float*, const half_t*, long long, int, int, int, int, int, int, int, float, float);
template __global__ void epilogue_nhwc<float, float>(const float*, float*, const float*, const float*, const float*, long long, int, int, int, int, int, int, int, float, float);
template __global__ void im2col_nhwc<half_t>(const half_t*, half_t*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void im2col_nhwc<float>(const float*, float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int);
template __global__ void dwconv_nhwc<half_t>(const half_t*, const float*, half_t*, const float*, const float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
template __global__ void dwconv_nhwc<float>(const float*, const float*, float*, const float*, const float*, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, float, float);
#endif
