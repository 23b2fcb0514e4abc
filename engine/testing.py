"""Helpers for tests: run a network directly on the NumPy kernels (no builder
passes), compare arrays by relative L2 error, clone a layer onto a device.
The top of the engine's import order: nothing in engine/ imports it."""

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


