"""What every GPU tactic is built on: the Tactic interface, the fallbacks every layer
has (generic, INT8 emulation, host), ``register``, and the NHWC format helpers.
The table of which tactics exist per layer type is engine/gpu/tactics.py.

A tactic says whether it can run a layer at given shapes/precision
(``supports`` returns None or the reason it cannot), prepares per-layer state
once (weights uploaded, packed and cast), and runs. Every layer has at least
the generic tactic: the layer's NumPy adapter run on CuPy arrays (the kernels
are array-module generic); the host tactic (copy to the host, NumPy, copy
back) is the last resort the builder takes only when nothing else works.

Tensors on the device are CuPy arrays in the logical n c h w shape; their
*strides* are the format: a tensor a tensor-core convolution wrote is an NHWC
buffer seen through ``transpose(0, 3, 1, 2)``. A kernel that wants NHWC takes
the buffer back with a free transpose, and a reformat (a copy) happens only
where the producer wrote another layout.
"""
import numpy as np

from kernels.gpu.reformat import nchw_to_nhwc_padded
from kernels.quantize import quantize_weights

from ..int8_exec import can_run_int8, run_int8_layer
from ..kernel_table import TACTICS, numpy_kernel
from ..settings import settings
from ..layer_exec import run_layer as run_on_host
from ..types import DataType, LayerType
from .device import cupy, device_clone

_MATMUL_LAYERS = {LayerType.CONVOLUTION, LayerType.DECONVOLUTION, LayerType.FULLY_CONNECTED,
                  LayerType.MATRIX_MULTIPLY, LayerType.RNN_V2, LayerType.ATTENTION}


class Tactic:
    name = "tactic"
    capturable = True           # no cuBLAS or host sync inside: CUDA-graph safe
    int8 = False                # runs INT8 layers (int8 codes + scales), and only those
    switch = None               # a Settings field that must be on for it to be a candidate
    fallback = False            # timed only when no specialised candidate could serve (the backend)

    def supports(self, layer, in_shapes, in_dtypes, precision):
        return None

    def capturable_for(self, layer):
        return self.capturable

    def prepare(self, layer):
        return None

    def run(self, state, layer, inputs, precision, out_dtypes):
        raise NotImplementedError

    def __repr__(self):
        return f"<Tactic {self.name}>"


def compute_inputs(xs, precision):
    """What the reference adapters expect: float32 values (rounded through
    float16 first for HALF layers), other dtypes untouched."""
    cp = cupy()
    out = []
    for x in xs:
        if x is not None and x.dtype.kind == "f":
            if precision == DataType.HALF and x.dtype != np.float16:
                x = x.astype(np.float16)
            if x.dtype != np.float32:
                x = x.astype(np.float32)
        out.append(x)
    del cp
    return out


class GenericTactic(Tactic):
    """The layer's NumPy adapter over CuPy arrays."""
    fallback = True
    name = "cupy.generic"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision == DataType.INT8:
            return "an INT8 layer needs integer arithmetic (the int8 tactics)"
        return None

    def capturable_for(self, layer):
        # the reference code of these multiplies matrices through cupy.matmul (cuBLAS)
        return layer.layer_type not in _MATMUL_LAYERS

    def prepare(self, layer):
        return device_clone(layer, cupy())

    def run(self, state, layer, inputs, precision, out_dtypes):
        cp = cupy()
        outs = numpy_kernel(layer)(state, compute_inputs(inputs, precision))
        return [cp.asarray(o).astype(d.to_numpy(), copy=False) for o, d in zip(outs, out_dtypes)]


class HostTactic(Tactic):
    """Copy to the host, run the NumPy kernel, copy back. Correct, slow, last."""
    name = "numpy.host"
    capturable = False
    int8 = None                 # either: the NumPy backend routes INT8 layers itself

    def run(self, state, layer, inputs, precision, out_dtypes):
        cp = cupy()
        host = [None if x is None else cp.asnumpy(x) for x in inputs]
        outs = run_on_host(layer, host, precision, out_dtypes)
        return [cp.asarray(o) for o in outs]


class Int8Emulation(Tactic):
    """INT8 layers through engine.int8_exec's exact integer arithmetic, on
    device arrays (float64 products: exact, slow; the IMMA kernels replace it)."""
    fallback = True
    name = "int8.emulation"
    int8 = True

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.INT8 or not can_run_int8(layer):
            return "not an INT8 layer"
        return None

    def prepare(self, layer):
        clone = device_clone(layer, cupy())
        if layer.layer_type in (LayerType.CONVOLUTION, LayerType.FULLY_CONNECTED):
            # per-channel weight codes made on the host once (the same as the NumPy path)
            w = (layer.weights(layer._inputs[0].shape[1]) if layer.layer_type == LayerType.CONVOLUTION
                 else layer.kernel.reshape(layer.num_output_channels, -1))
            q, s = quantize_weights(w)
            clone._int8_weights = (clone.kernel, cupy().asarray(q), s)
        return clone

    def run(self, state, layer, inputs, precision, out_dtypes):
        cp = cupy()
        outs = run_int8_layer(state, inputs, out_dtypes)
        return [cp.asarray(o).astype(d.to_numpy(), copy=False) for o, d in zip(outs, out_dtypes)]


GENERIC, HOST, INT8_EMULATION = GenericTactic(), HostTactic(), Int8Emulation()


def register(layer_type, *tactics):
    """Add tactics to ``layer_type``'s list (engine.kernel_table.TACTICS, where plugins
    register theirs too); a name already registered for that type is not added again."""
    have = TACTICS.setdefault(layer_type, [])
    names = {t.name for t in have}
    for t in tactics:
        if t.name not in names:
            have.append(t)
            names.add(t.name)


# -- format helpers shared by the NHWC tactics ---------------------------------------

def as_nhwc(x, dtype, channels_to=1):
    """The NHWC buffer behind a logical NCHW array: free when ``x`` already is an
    NHWC view of the right dtype; else one reformat copy (and channel padding)."""
    v = x.transpose(0, 2, 3, 1)
    if v.dtype == dtype and v.flags.c_contiguous and v.shape[3] % channels_to == 0:
        return v
    return nchw_to_nhwc_padded(x, dtype, channels_to, dedicated=settings().stem_kernel)


def nchw_view(y_nhwc):
    return y_nhwc.transpose(0, 3, 1, 2)
