"""Device copies of layers, and what the GPU is (for timing-cache keys and the builder's
bounds on what a kernel could do)."""
import copy
import functools
import math

import numpy as np


def cupy():
    import cupy as cp  # optional dependency: the engine imports anywhere, runs here with a GPU
    return cp


def available():
    try:
        return cupy().cuda.is_available()
    except Exception:          # noqa: BLE001  (no driver, no library: not available)
        return False


@functools.lru_cache(maxsize=None)
def gpu_info(device_id=0):
    """(name, 'sm_XY') of a device."""
    cp = cupy()
    props = cp.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return name, f"sm_{props['major']}{props['minor']}"


@functools.lru_cache(maxsize=None)
def memory_system(device_id=0):
    """(peak DRAM bytes per second, L2 bytes) of a device, from its attributes: two transfers
    a memory clock over the bus width (the CUDA samples' figure: 3.35e12 on an H100 SXM);
    (inf, 0) where the driver does not say (nothing is then bounded by memory traffic)."""
    attrs = cupy().cuda.Device(device_id).attributes
    clock_khz, bus_bits = attrs.get("MemoryClockRate"), attrs.get("GlobalMemoryBusWidth")
    if not clock_khz or not bus_bits:
        return math.inf, 0
    return 2.0 * clock_khz * 1e3 * bus_bits / 8, attrs.get("L2CacheSize") or 0


def device_clone(layer, xp):
    """A shallow copy of ``layer`` whose array attributes live on ``xp``'s device,
    uploaded once; the NumPy adapters then run unchanged on device arrays."""
    def move(value):
        if isinstance(value, np.ndarray):
            return xp.asarray(value)
        if isinstance(value, dict) and any(isinstance(v, np.ndarray) for v in value.values()):
            return {k: xp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in value.items()}
        return value

    clone = copy.copy(layer)       # attributes set directly: the network hears nothing
    clone._attrs = {name: move(value) for name, value in layer._attrs.items()}
    return clone
