"""GPU tactic for RNNv2 layers (RNN with ReLU/tanh, LSTM, GRU): cuBLAS GEMMs and
one fused gate kernel per time step (kernels/gpu/rnn.py, kernels/cuda/rnn.cu).

The weights are packed once per layer (gate-stacked, both directions side by
side, transposed for the GEMMs) and uploaded in FP32; the FP16 copy is made
the first time the layer runs in HALF and kept. ``run`` mirrors the NumPy
adapter of engine/layers/rnn.py: leading batch dims folded into one, the
optional initial states and sequence lengths, outputs y, h_T (and c_T).

Not CUDA-graph safe: the GEMMs go through cuBLAS via CuPy.
"""
import numpy as np

from kernels import rnn as rnn_reference
from kernels.gpu import rnn

from ..errors import ExecutionError
from ..types import DataType, RNNDirection
from .base import Tactic, cupy

_STORAGE = {DataType.FLOAT: np.dtype(np.float32), DataType.HALF: np.dtype(np.float16)}


class RnnFused(Tactic):
    name = "rnn.fused"
    capturable = False          # cuBLAS through CuPy refuses stream capture

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision not in _STORAGE:
            return f"runs FLOAT or HALF layers, not {getattr(precision, 'name', precision)}"
        if layer.missing_weights():
            return "unset gate weights"
        return None

    def prepare(self, layer):
        packed = rnn.pack_params(layer.kernel_params(), layer.op.name, layer.num_layers,
                             layer.hidden_size, layer.direction == RNNDirection.BIDIRECTION,
                             np.float32, xp=cupy())
        return {packed.dtype: packed}           # storage dtype -> PackedRNN

    def run(self, state, layer, inputs, precision, out_dtypes):
        cp = cupy()
        dt = _STORAGE[precision]
        packed = state.get(dt)
        if packed is None:
            packed = state[dt] = state[np.dtype(np.float32)].astype(dt)
        x, h0, c0, lengths = list(inputs) + [None] * (4 - len(inputs))
        batch, steps = tuple(x.shape[:-2]), x.shape[-2]
        n = int(np.prod(batch))
        if lengths is not None:
            lengths = lengths.reshape(n)
            if n:
                lo, hi = cp.stack([lengths.min(), lengths.max()]).tolist()   # one sync
                if lo < 0 or hi > steps:
                    raise ExecutionError(f"{layer.describe()}: seq_lengths range over [{lo}, {hi}]; "
                                         f"expected values in [0, {steps}] (the input's time steps)")
        states = (n, layer.num_layers * layer.num_directions, layer.hidden_size)

        def initial(s):
            # rounded through the storage dtype, as the reference's inputs are
            return None if s is None else s.astype(dt, copy=False).reshape(states)
        x = x.reshape(n, steps, -1).astype(dt, copy=False)
        if layer.reverse_input:            # the engine-only flips (engine/layers/rnn.py)
            x = rnn_reference.reverse_sequences(x, lengths)
        y, h_t, c_t = rnn.rnn_forward(x, packed,
                                      layer.op.name, layer.num_layers, layer.hidden_size,
                                      layer.direction == RNNDirection.BIDIRECTION,
                                      initial(h0), initial(c0), lengths, dtype=dt)
        if layer.reverse_output:
            y = rnn_reference.reverse_sequences(y, lengths)
        outs = [y.reshape(batch + y.shape[1:]), h_t.reshape(batch + states[1:])]
        if c_t is not None:
            outs.append(c_t.reshape(batch + states[1:]))
        return [o.astype(d.to_numpy(), copy=False) for o, d in zip(outs, out_dtypes)]


# The RNN_V2 tactics.
TACTICS = (RnnFused(),)
