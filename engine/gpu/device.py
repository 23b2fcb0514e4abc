"""Device copies of layers, and what the GPU is (for timing-cache keys)."""
import copy
import functools

import numpy as np


def cupy():
    import cupy as cp
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


def device_clone(layer, xp):
    """A shallow copy of ``layer`` whose array attributes live on ``xp``'s device,
    uploaded once; the NumPy adapters then run unchanged on device arrays."""
    clone = copy.copy(layer)
    attrs = {}
    for key, value in layer._attrs.items():
        if isinstance(value, np.ndarray):
            value = xp.asarray(value)
        elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
            value = {k: xp.asarray(v) for k, v in value.items()}
        attrs[key] = value
    clone._attrs = attrs
    return clone
