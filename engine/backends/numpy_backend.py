"""The NumPy backend: every layer through its NumPy kernel.

FP16 layers are emulated exactly as a GPU FP16 kernel with FP32 accumulation
would see them: inputs rounded to float16, computed in float32, outputs rounded
to float16.
"""
import numpy as np

from ..kernel_table import numpy_kernel
from ..types import DataType


class NumpyBackend:
    name = "numpy"

    @staticmethod
    def asarray(x):
        return np.asarray(x)

    @staticmethod
    def synchronize():
        pass

    @staticmethod
    def run_layer(layer, inputs, precision, out_dtypes):
        if precision == DataType.INT8:            # exact INT8 arithmetic: engine/quantization.py
            from .. import quantization as q8
            if q8.can_run_int8(layer):
                outs = q8.run_int8_layer(layer, inputs, out_dtypes)
                return [np.asarray(v).astype(d.to_numpy(), copy=False)
                        for v, d in zip(outs, out_dtypes)]
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

    @staticmethod
    def execute(context, feeds, sched, stream=None):
        return context.run_layers(feeds, sched)

    @staticmethod
    def copy_into(dst, src, stream=None):
        np.copyto(dst, src)

    @staticmethod
    def to_output(x, dtype):
        return np.asarray(x).astype(dtype.to_numpy(), copy=False)
