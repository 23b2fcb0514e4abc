"""Helpers for tests: run a network directly on the NumPy kernels (no builder
passes), compare arrays by relative L2 error, clone a layer onto a device."""

import numpy as np

from . import kernel_table
from .gpu.device import device_clone  # noqa: F401  (tests build device clones)
from .layers import classes  # noqa: F401  (registers every layer's NumPy kernel)


def rel_l2(got, ref):
    """||got - ref|| / ||ref|| in float64 (0 when both are all zeros)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"shape {got.shape} != reference shape {ref.shape}")
    den = np.linalg.norm(ref)
    num = np.linalg.norm(got - ref)
    return float(num / den) if den else float(num)


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
        outs = kernel_table.numpy_kernel(layer)(layer, ins)
        for t, v in zip(layer._outputs, outs):
            values[id(t)] = np.asarray(v).astype(t.dtype.to_numpy(), copy=False)
    return {t.name: values[id(t)] for t in network._outputs}


