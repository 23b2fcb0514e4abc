"""One layer on host arrays, as the NumPy backend runs it: the layer's registered
NumPy kernel (engine/kernel_table.py) with the precision emulated around it, or
the exact INT8 arithmetic (engine/int8_exec.py) for an INT8 layer.

FP16 layers are emulated exactly as a GPU FP16 kernel with FP32 accumulation
would see them: inputs rounded to float16, computed in float32, outputs rounded
to float16. The NumPy backend runs every layer through here; the GPU's host
tactic (engine/gpu/tactics.py) runs a layer nothing else can run through here.
"""
import numpy as np

from .int8_exec import can_run_int8, run_int8_layer
from .kernel_table import numpy_kernel
from .types import DataType


def run_layer(layer, inputs, precision, out_dtypes):
    """``layer`` on NumPy ``inputs`` computing in ``precision``; one NumPy array per
    output, of the storage types ``out_dtypes``."""
    if precision == DataType.INT8 and can_run_int8(layer):
        outs = run_int8_layer(layer, inputs, out_dtypes)
        return [np.asarray(v).astype(d.to_numpy(), copy=False) for v, d in zip(outs, out_dtypes)]
    ins = []
    for x in inputs:
        if x is not None and x.dtype.kind == "f":
            if precision == DataType.HALF:
                x = x.astype(np.float16)
            if x.dtype == np.float16:
                x = x.astype(np.float32)
        ins.append(x)
    outs = numpy_kernel(layer)(layer, ins)
    return [np.asarray(v).astype(d.to_numpy(), copy=False) for v, d in zip(outs, out_dtypes)]
