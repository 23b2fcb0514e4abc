"""Device copies of layers, and what the GPU is (for timing-cache keys and the builder's
bounds on what a kernel could do)."""
import copy
import functools
import math

import numpy as np

from kernels.gpu.compile import offline_arch


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


# Dense FP16 tensor-core multiply-adds x 2 per SM per clock, by compute capability, at
# or above each architecture's published peaks (V100 / T4 1024; A100 2048; the GeForce and
# workstation parts of 8.6 / 8.9 / 12.x at most 1024 with FP16 accumulation, taken as 2048
# for 12.x; H100 / H200 4096: 989 TFLOP/s at 132 SMs and 1.83 GHz; B200 about 7,700, taken
# as 8192). A ceiling: no FP16 kernel computes faster on that device.
HALF_FLOPS_PER_SM_CLOCK = {7: 1024, 8: 2048, 9: 4096, 10: 8192, 12: 2048}


# cudaDevAttr values read through the runtime where CuPy's attribute dict lacks them (an
# H100 build under CuPy 14 / CUDA 13 applied no FP16 ceiling: one of them was missing there)
_ATTR_ENUM = {"ClockRate": 13, "MultiProcessorCount": 16, "ComputeCapabilityMajor": 75}
# no GPU's SMs clock past this: the ceiling's clock when the driver reports none
FALLBACK_CLOCK_KHZ = 3_000_000


def _attributes(device_id):
    """A device's attribute dict (CuPy's names), the runtime asked for those it lacks."""
    cp = cupy()
    attrs = dict(cp.cuda.Device(device_id).attributes)
    for name, enum in _ATTR_ENUM.items():
        if not attrs.get(name):
            try:
                attrs[name] = cp.cuda.runtime.deviceGetAttribute(enum, device_id)
            except Exception:    # noqa: BLE001  (an older or newer runtime: left unknown)
                pass
    return attrs


def sm_count(device_id=0):
    """A device's SM count; None without a device, or while kernels are listed for another
    one (kernels/gpu/compile.py ``offline``)."""
    if offline_arch() is not None:
        return None
    return _sm_count(device_id)


@functools.lru_cache(maxsize=None)
def _sm_count(device_id):
    if not available():
        return None
    return int(_attributes(device_id).get("MultiProcessorCount") or 0) or None


@functools.lru_cache(maxsize=None)
def half_tensor_flops(device_id=0):
    """An upper bound of the FP16 FLOP/s a device's tensor cores can reach: SMs x peak SM
    clock x HALF_FLOPS_PER_SM_CLOCK of its architecture (H100 SXM: 132 x 1.98 GHz x 4096 =
    1.07e15). An attribute CuPy's dict lacks is asked of the runtime; a clock nobody reports
    is FALLBACK_CLOCK_KHZ. None where the SM count or the architecture is unknown (nothing
    is then bounded by FP16 compute)."""
    return half_flops_from(_attributes(device_id))


def half_flops_from(attrs):
    """``half_tensor_flops`` from a device's attribute dict (CuPy's names)."""
    sms = attrs.get("MultiProcessorCount")
    clock_khz = attrs.get("ClockRate") or FALLBACK_CLOCK_KHZ
    per = HALF_FLOPS_PER_SM_CLOCK.get(attrs.get("ComputeCapabilityMajor"))
    if not sms or not per:
        return None
    return float(sms) * clock_khz * 1e3 * per


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
