"""Helpers for tests: run a network directly on the NumPy kernels (no builder
passes), compare arrays by relative L2 error, clone a layer onto a device, a float32
fused multiply-add through exact rationals.
The top of the engine's import order: nothing in engine/ imports it."""

from fractions import Fraction

import numpy as np

from .gpu.device import device_clone  # noqa: F401  (tests build device clones)
from .kernel_table import numpy_kernel
from .layers import classes  # noqa: F401  (registers every layer's NumPy kernel)
from .metrics import rel_l2  # noqa: F401  (the tests' error measure)


def interpret(network, feeds):
    """Run ``network`` layer by layer on the NumPy kernels. Returns every output
    tensor's value keyed by name. No optimisation: this is the oracle the
    builder's passes are checked against."""
    values = {}
    for t in network._inputs:
        values[id(t)] = np.asarray(feeds[t.name])
    for layer in network._layers:
        ins = [None if t is None else values[id(t)] for t in layer._inputs]
        ins = [x.astype(np.float32) if x is not None and x.dtype == np.float16 else x for x in ins]
        outs = numpy_kernel(layer)(layer, ins)
        for t, v in zip(layer._outputs, outs):
            values[id(t)] = np.asarray(v).astype(t.dtype.to_numpy(), copy=False)
    return {t.name: values[id(t)] for t in network._outputs}


def fma_f32_exact(a, b, c):
    """float32 a * b + c rounded once (ties to an even significand), elementwise with
    broadcasting, through exact rationals: slow, and independent of the float64 arithmetic
    of kernels.quantize.fma32, which the tests check against it."""
    def one(a, b, c):
        ex = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
        f = np.float32(float(ex))
        cands = (np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf)))
        return min(cands, key=lambda v: (abs(Fraction(float(v)) - ex), int(np.array(v).view(np.int32)) & 1))
    a, b, c = np.broadcast_arrays(np.float32(a), np.float32(b), np.float32(c))
    return np.array([one(*t) for t in zip(a.ravel(), b.ravel(), c.ravel())], np.float32).reshape(a.shape)
