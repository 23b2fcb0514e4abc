// rnn.cu -- the fused gate kernel of one RNN / LSTM / GRU time step.
//
// The launcher (kernels/gpu/rnn.py) does the matrix work through cuBLAS:
//   once per layer:  gx = X W^T        all time steps, both directions
//   once per step:   gh = h_{t-1} R^T  one (batched) GEMM for both directions
// and this kernel does everything else for the step in one pass: both biases,
// the gate nonlinearities, the cell update, the sequence-length mask, the new
// state and the output row.  Equations (TensorRT's IRNNv2Layer, as
// kernels/rnn.py spells them; sigma(x) = 0.5 * (1 + tanh(x / 2)) as there):
//
//   RELU/TANH  h' = f(Wx + Rh + Wb + Rb)
//   LSTM       gates stacked i, f, c, o:  c' = sigma(f) c + sigma(i) tanh(c~)
//                                         h' = sigma(o) tanh(c')
//   GRU        gates stacked z, r, h:     n  = tanh(Wh x + Wbh + r * (Rh h + Rbh))
//              ("reset after")            h' = (1 - z) n + z h
//
// One thread = one (direction d, sequence n, unit j):
//
//   tt = t (forward) or steps-1-t (backward: d == 1)
//   gx[(n*steps + tt)*gx_row + d*gx_dir + g*gx_gate + j]   gate g's x part
//   gh[((d*N + n)*G + g)*H + j]                             gate g's h part
//   state h, c, hg at (d*N + n)*H + j;  y[(n*steps + tt)*D*H + d*H + j]
//
// gx_row/gx_dir/gx_gate are strides so that SKIP input mode (every gate sees
// x itself, input size == H) reads the input directly: gx = x, gx_row = H,
// gx_dir = gx_gate = 0.  Steps at or past a sequence's length (tt >= lens[n])
// leave the state alone and write zeros to y, as the reference does.
//
// Math is FP32.  The state is kept in FP32 (h, c); hg is h in the storage
// type T, the next step's GEMM operand (for T = float the launcher passes the
// same buffer as h: each thread reads and writes only its own element, so
// the aliasing is safe and nothing here is __restrict__).
#include "common.cuh"

enum RnnOp { RNN_RELU = 0, RNN_TANH = 1, RNN_LSTM = 2, RNN_GRU = 3 };

namespace cupyrt_rnn {

__device__ __forceinline__ float sigm(float x) { return 0.5f * (1.f + tanhf(0.5f * x)); }

}  // namespace cupyrt_rnn

// Launch: grid-stride over D*N*H threads, block = 256.
template <typename T, int OP>
__global__ void __launch_bounds__(256)
rnn_gates_step(const T* gx, long long gx_row, int gx_dir, int gx_gate,
               const T* gh,                       // [D, N, G*H]
               const float* bw, const float* br,  // [D, G*H]
               float* h, float* c,                // [D, N, H] FP32 state (c: LSTM only)
               T* hg,                             // [D, N, H] h in storage type
               T* y,                              // [N, steps, D*H]
               const int* lens,                   // [N]
               int N, int H, int steps, int t, int D) {
    using namespace cupyrt_rnn;
    constexpr int G = OP == RNN_LSTM ? 4 : (OP == RNN_GRU ? 3 : 1);
    const long long total = (long long)D * N * H;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int j = (int)(i % H);
        const long long dn = i / H;          // d*N + n
        const int n = (int)(dn % N);
        const int d = (int)(dn / N);
        const int tt = d == 1 ? steps - 1 - t : t;
        T* yp = y + ((long long)n * steps + tt) * D * H + (long long)d * H + j;
        if (tt >= lens[n]) {                  // past this sequence's end
            io<T>::store(yp, 0.f);
            continue;
        }
        const T* xp = gx + ((long long)n * steps + tt) * gx_row + (long long)d * gx_dir + j;
        const T* hp = gh + dn * G * H + j;
        const float* bwp = bw + (long long)d * G * H + j;
        const float* brp = br + (long long)d * G * H + j;
        const long long s = dn * H + j;
        float hn;
        if constexpr (OP == RNN_LSTM) {
            float a[4];
#pragma unroll
            for (int g = 0; g < 4; ++g)
                a[g] = (io<T>::load(xp + (long long)g * gx_gate) + bwp[g * H])
                     + (io<T>::load(hp + g * H) + brp[g * H]);
            const float cn = sigm(a[1]) * c[s] + sigm(a[0]) * tanhf(a[2]);
            hn = sigm(a[3]) * tanhf(cn);
            c[s] = cn;
        } else if constexpr (OP == RNN_GRU) {
            const float z = sigm((io<T>::load(xp) + bwp[0]) + (io<T>::load(hp) + brp[0]));
            const float r = sigm((io<T>::load(xp + gx_gate) + bwp[H])
                               + (io<T>::load(hp + H) + brp[H]));
            const float nn = tanhf((io<T>::load(xp + 2LL * gx_gate) + bwp[2 * H])
                                   + r * (io<T>::load(hp + 2 * H) + brp[2 * H]));
            hn = (1.f - z) * nn + z * h[s];
        } else {
            const float a = (io<T>::load(xp) + bwp[0]) + (io<T>::load(hp) + brp[0]);
            hn = OP == RNN_RELU ? (a < 0.f ? 0.f : a) : tanhf(a);   // relu keeps NaN (TF, NumPy)
        }
        h[s] = hn;
        io<T>::store(hg + s, hn);
        io<T>::store(yp, hn);
    }
}

#ifdef CUPYRT_NVCC_INSTANTIATE
#define RNN_INST(T, OP)                                                                    \
    template __global__ void rnn_gates_step<T, OP>(const T*, long long, int, int, const T*, \
        const float*, const float*, float*, float*, T*, T*, const int*, int, int, int, int, int);
RNN_INST(float, 0) RNN_INST(float, 1) RNN_INST(float, 2) RNN_INST(float, 3)
RNN_INST(half_t, 0) RNN_INST(half_t, 1) RNN_INST(half_t, 2) RNN_INST(half_t, 3)
#undef RNN_INST
#endif
