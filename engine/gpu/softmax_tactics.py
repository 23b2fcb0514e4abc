"""GPU tactic for SoftMax: one kernel over any axis (kernels.gpu.softmax), read in
place from an NHWC buffer when the axis is the channel axis."""
import numpy as np

from kernels.gpu import softmax

from .base import Tactic, nchw_view


class SoftmaxKernel(Tactic):
    name = "softmax.kernel"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if in_dtypes[0] not in ("float16", "float32"):
            return "floating input only"
        return None

    def run(self, state, layer, inputs, precision, out_dtypes):
        x = inputs[0]
        axis = layer.axes.bit_length() - 1
        dt = np.float16 if precision.name == "HALF" else np.float32
        if x.ndim == 4 and axis == 1 and x.transpose(0, 2, 3, 1).flags.c_contiguous:
            y = nchw_view(softmax.softmax(x.transpose(0, 2, 3, 1).astype(dt, copy=False), axis=-1))
        else:
            y = softmax.softmax(x.astype(dt, copy=False), axis=axis)
        return [y.astype(out_dtypes[0].to_numpy(), copy=False)]


# The SOFTMAX tactics.
TACTICS = (SoftmaxKernel(),)
