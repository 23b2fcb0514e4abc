// common.cuh -- shared helpers for every cupyrt CUDA source.
//
// No system headers on purpose: NVRTC (through CuPy's RawModule) and nvcc must
// both compile these files with no include path, so half precision is handled
// as raw 16-bit storage (`half_t`) converted with PTX `cvt`, and the math
// functions used are the NVRTC built-ins (expf, tanhf, erff, ...).
//
// The Python side (kernels/gpu/compile.py) inlines `#include "x.cuh"` lines
// of this folder before handing a source to NVRTC; nvcc resolves them itself.
#pragma once

typedef unsigned short half_t;   // IEEE binary16 bits

__device__ __forceinline__ float h2f(half_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ half_t f2h(float f) {
    half_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Two adjacent 4-byte accumulators (int32 or float32) in one 8-byte store of their bits;
// p 8-byte aligned.
__device__ __forceinline__ unsigned acc_bits(int v) { return (unsigned)v; }
__device__ __forceinline__ unsigned acc_bits(float v) { return __float_as_uint(v); }
template <typename Acc>
__device__ __forceinline__ void store_pair(Acc* p, Acc a, Acc b) {
    *reinterpret_cast<uint2*>(p) = make_uint2(acc_bits(a), acc_bits(b));
}

// Two floats -> one register holding {lo, hi} halves (lo in bits 0..15).
__device__ __forceinline__ unsigned pack_h2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// Load/store one element of either storage type as float.
template <typename T> struct io;
template <> struct io<float> {
    static __device__ __forceinline__ float load(const float* p) { return *p; }
    static __device__ __forceinline__ void store(float* p, float v) { *p = v; }
};
template <> struct io<half_t> {
    static __device__ __forceinline__ float load(const half_t* p) { return h2f(*p); }
    static __device__ __forceinline__ void store(half_t* p, float v) { *p = f2h(v); }
};

// ---------------------------------------------------------------------------
// Activations, by the codes of kernels/gpu/activation.py (TensorRT's
// ActivationType plus the usual extras). alpha/beta follow TensorRT's meaning
// for each type (e.g. CLIP: alpha=min, beta=max; LEAKY_RELU: alpha=slope).
// ---------------------------------------------------------------------------
enum ActCode {
    ACT_NONE = 0, ACT_RELU = 1, ACT_SIGMOID = 2, ACT_TANH = 3, ACT_LEAKY_RELU = 4,
    ACT_ELU = 5, ACT_SELU = 6, ACT_SOFTSIGN = 7, ACT_SOFTPLUS = 8, ACT_CLIP = 9,
    ACT_HARD_SIGMOID = 10, ACT_SCALED_TANH = 11, ACT_THRESHOLDED_RELU = 12,
    ACT_GELU_ERF = 13, ACT_GELU_TANH = 14, ACT_SILU = 15, ACT_HARD_SWISH = 16,
    ACT_RELU6 = 17
};

// NaN-propagating max / min / clamp, TensorFlow's semantics (Relu(NaN) = NaN,
// Maximum(NaN, x) = NaN, ClipByValue(NaN) = NaN). fmaxf/fminf follow IEEE
// maxNum and *drop* a NaN operand, so relu/clip written with them turned NaN
// into 0 or a bound. A comparison with NaN is false, so the select keeps v.
__device__ __forceinline__ float max_nan(float a, float b) {
    return (a != a || b != b) ? a + b : fmaxf(a, b);
}
__device__ __forceinline__ float min_nan(float a, float b) {
    return (a != a || b != b) ? a + b : fminf(a, b);
}
__device__ __forceinline__ float clamp_nan(float v, float lo, float hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

__device__ __forceinline__ float apply_act(float x, int code, float alpha, float beta) {
    switch (code) {
    case ACT_NONE: return x;
    case ACT_RELU: return x < 0.f ? 0.f : x;
    case ACT_SIGMOID: return 1.f / (1.f + expf(-x));
    case ACT_TANH: return tanhf(x);
    case ACT_LEAKY_RELU: return x >= 0.f ? x : alpha * x;
    case ACT_ELU: return x >= 0.f ? x : alpha * (expf(x) - 1.f);
    case ACT_SELU: return beta * (x >= 0.f ? x : alpha * (expf(x) - 1.f));
    case ACT_SOFTSIGN: return x / (1.f + fabsf(x));
    case ACT_SOFTPLUS:  // TensorRT: alpha * log(exp(beta * x) + 1), stable form
        { float t = beta * x;
          return alpha * (fmaxf(t, 0.f) + log1pf(expf(-fabsf(t)))); }
    case ACT_CLIP: return clamp_nan(x, alpha, beta);
    case ACT_HARD_SIGMOID: return clamp_nan(alpha * x + beta, 0.f, 1.f);
    case ACT_SCALED_TANH: return alpha * tanhf(beta * x);
    case ACT_THRESHOLDED_RELU: return x > alpha ? x : 0.f;
    case ACT_GELU_ERF: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case ACT_GELU_TANH:
        return 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case ACT_SILU: return x / (1.f + expf(-x));
    case ACT_HARD_SWISH: return x * clamp_nan(x + 3.f, 0.f, 6.f) * (1.f / 6.f);
    case ACT_RELU6: return clamp_nan(x, 0.f, 6.f);
    default: return x;
    }
}

// Out-of-line copy for epilogues: the unrolled epilogue of a GEMM tile calls
// the activation dozens of times, and inlining an 18-way switch there costs
// minutes of compile time and code size.  Epilogues take the fast path below
// for the piecewise-linear activations (the common case) and call this
// otherwise.
__device__ __noinline__ float apply_act_outline(float x, int code, float alpha, float beta) {
    return apply_act(x, code, alpha, beta);
}

// Eight values at once, for the vectorised epilogue of the wgmma kernel (the one the
// transformer GEMMs run; elsewhere the array's trip through local memory cost 25% more
// compile time for conv_igemm.cu's 66 instantiations): one call per eight elements
// instead of eight, the switch taken once, and the eight independent evaluations
// free to overlap. GELU has its own loop: a transformer FFN's epilogue applies it to
// every element, and one call per element cost BERT's 3072-wide GEMM about a third
// of its time (H200, batch 32: 91 us against 61 us for the same GEMM without it).
__device__ __noinline__ void apply_act8_outline(float* v, int code, float alpha, float beta) {
    if (code == ACT_GELU_ERF) {
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = 0.5f * v[e] * (1.f + erff(v[e] * 0.70710678118654752f));
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = apply_act(v[e], code, alpha, beta);
}

// Piecewise-linear activations as v -> clamp(v >= 0 ? v : slope * v, lo, hi).
struct ActLin {
    bool lin; float slope, lo, hi; int code; float alpha, beta;
    __device__ __forceinline__ ActLin(int code_, float alpha_, float beta_)
        : lin(true), slope(1.f), lo(0.f), hi(0.f), code(code_), alpha(alpha_), beta(beta_) {
        // +-inf bounds: a +-FLT_MAX bound clamped inf to FLT_MAX (TF keeps inf)
        lo = __int_as_float(0xff800000);
        hi = __int_as_float(0x7f800000);
        switch (code_) {
        case ACT_NONE: break;
        case ACT_RELU: lo = 0.f; break;
        case ACT_RELU6: lo = 0.f; hi = 6.f; break;
        case ACT_CLIP: lo = alpha_; hi = beta_; break;
        case ACT_LEAKY_RELU: slope = alpha_; break;
        default: lin = false;
        }
    }
    __device__ __forceinline__ float operator()(float v) const {
        if (lin) return clamp_nan(v >= 0.f ? v : slope * v, lo, hi);
        return apply_act_outline(v, code, alpha, beta);
    }
    __device__ __forceinline__ void apply8(float (&v)[8]) const {
        if (lin) {
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] = clamp_nan(v[e] >= 0.f ? v[e] : slope * v[e], lo, hi);
        } else {
            apply_act8_outline(v, code, alpha, beta);
        }
    }
};
