"""Hold a stream until the host releases it (kernels/cuda/device_hold.cu).

The per-layer profiler records two CUDA events around each layer. Issued eagerly, a
layer's Python launch path (tens of microseconds) is often longer than its kernels at
small batch or late in a network, so the device waits for the host and the events time
the launch path. ``hold_stream`` puts a one-thread kernel at the head of the stream that
polls a word of pinned host memory; the host issues every layer and its events behind
it, then calls ``release()``, and the device runs the whole queue back to back: the
events then time the device's work only.

The hold gives up after ``max_ms`` (a layer that synchronises the host inside the loop
would otherwise wait for a release that comes only after it); ``expired`` then says so,
and the times after that point include launch gaps again. Hold only warm work: under
CUDA's lazy module loading a kernel's first launch may wait for the kernels running on
the device, the hold among them (one such wait is the likely cause of the one GPU test
failure seen, whose kernels ran for the first time behind the hold), and so may a
first device allocation.
"""
from __future__ import annotations

import math

import numpy as np

from .compile import get_function
from .errors import UnsupportedError
from .family import KernelFamily

SOURCE = "device_hold.cu"


class DeviceHold:
    """One hold on one stream (``hold_stream``)."""

    def __init__(self, words, memory):
        self._words = words           # [release, expired]: pinned host memory, mapped
        self._memory = memory         # keeps the pinned allocation alive

    def release(self):
        """Let the held stream run (idempotent)."""
        self._words[0] = 1

    @property
    def expired(self):
        """True where the hold gave up before ``release()``; read it once the stream has
        passed the hold (after synchronising on any later event)."""
        return bool(self._words[1])


def hold_stream(max_ms=250.0, stream=None):
    """Hold ``stream`` (default: the current one) until ``release()`` on the returned
    DeviceHold, or until ``max_ms`` of device time pass."""
    import cupy as cp  # optional dependency: CuPy only where a kernel is compiled or launched
    if not (isinstance(max_ms, (int, float)) and math.isfinite(max_ms) and max_ms > 0):
        raise UnsupportedError(f"hold_stream: max_ms {max_ms!r}; expected a finite number > 0")
    memory = cp.cuda.alloc_pinned_memory(8)
    words = np.frombuffer(memory, np.uint32, 2)
    words[:] = 0
    # with unified addressing the pinned host pointer is also the device's pointer to it
    kern = get_function(SOURCE, "hold_until_released")
    with (stream or cp.cuda.get_current_stream()):
        kern((1,), (1,), (np.uint64(memory.ptr), np.uint64(int(max_ms * 1e6))))
    return DeviceHold(words, memory)


FAMILY = KernelFamily(SOURCE, launch=(hold_stream,))
