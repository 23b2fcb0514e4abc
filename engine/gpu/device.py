"""Device copies of layers, and what the GPU is (for timing-cache keys)."""
import copy
import functools

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
