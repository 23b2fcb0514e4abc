"""Compile CUDA sources of kernels/cuda through CuPy's RawModule, once.

Sources are read from ``kernels/cuda``; ``#include "x.cuh"`` lines naming a
file of that folder are inlined (NVRTC gets no include path from us, and the
same files compile unchanged under nvcc, which resolves them itself).

Modules are cached in memory per (source hash, arch, options, name
expressions, device), the key tinygrad and cupyx use; CuPy additionally keeps
its own on-disk cache of the compiled cubins (``~/.cupy/kernel_cache``), so a
second process pays only the load.

Templates are instantiated through ``name_expressions`` (cupyx's way):
``get_function("conv_igemm.cu", "conv_igemm_f16<128,128,32,2,4,4,0>")``.
``pick_by_dtype`` is the one helper that maps an array dtype to an
instantiation, with an error listing the valid dtypes.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np

from .errors import KernelError, UnsupportedError

log = logging.getLogger("cupyrt.kernels.gpu")

CUDA_DIR = Path(__file__).resolve().parent.parent / "cuda"
# --use_fast_math stays off: epilogues use expf/erff/tanhf and the FP32
# tolerance (rel L2 1e-5) leaves no room for the approximate versions.
DEFAULT_OPTIONS = ("-std=c++17",)

# a local include, a trailing // comment allowed (NVRTC gets the inlined text: it has
# no include path to kernels/cuda)
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*(?://[^\n]*)?$', re.M)
_lock = threading.Lock()
_modules: dict = {}
_functions: dict = {}
_debug = 0           # diagnostics level, set by the engine (set_debug_level)


def set_debug_level(level: int) -> None:
    """Diagnostics level: at 3 or more every compiled source (and every generated
    pointwise chain) is logged at DEBUG. Kernels read no environment: the engine passes
    its ``debug`` setting (CUPYRT_DEBUG) here."""
    global _debug
    _debug = int(level)


def debug_level() -> int:
    return _debug


def read_source(name: str) -> str:
    """Text of kernels/cuda/<name> with local ``#include "x"`` lines inlined (once each)."""
    seen: set[str] = set()

    def expand(fname: str) -> str:
        path = CUDA_DIR / fname
        if not path.is_file():
            raise KernelError(f"CUDA source {fname!r} not found in {CUDA_DIR}; "
                              f"expected one of {sorted(p.name for p in CUDA_DIR.glob('*.cu*'))}")
        if fname in seen:
            return ""
        seen.add(fname)
        text = path.read_text()

        def sub(m):
            return f"// ---- begin {m.group(1)}\n{expand(m.group(1))}\n// ---- end {m.group(1)}"
        return _INCLUDE.sub(sub, text)

    return expand(name)


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def device_arch(device=None) -> str:
    """'sm_90' for the current (or given) CuPy device."""
    import cupy  # optional dependency: CuPy only where a kernel is compiled or launched
    dev = cupy.cuda.Device(device)
    return "sm_" + dev.compute_capability


def _load_text(source: str) -> str:
    # a file name of kernels/cuda, or CUDA text (generated kernels)
    if "\n" not in source and source.endswith((".cu", ".cuh")):
        return read_source(source)
    return source


def nvrtc_library():
    """CuPy's binding of the NVRTC library, loaded (its version read), or None where there
    is none to load: no CuPy, or no libnvrtc (the nvidia-cuda-nvrtc wheel on a host without
    the CUDA toolkit). What ``offline`` compiles with; tests skip on None."""
    try:
        # optional dependency: CuPy's binding of the NVRTC library, only where a kernel is compiled
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
        return nvrtc
    except Exception:  # noqa: BLE001  (no CuPy, or no libnvrtc to load: said by returning None)
        return None


class OfflineCompiles:
    """What ``offline`` compiled: ``runs``, one (seconds, source, name expressions, cubin
    bytes) per NVRTC run, in order."""

    def __init__(self, arch, cudnn=True):
        self.arch, self.cudnn = arch, cudnn
        self.runs = []

    def compile(self, source, options, name_expressions):
        """One NVRTC run as CuPy makes it on a device of ``arch`` (our options, then its
        ``-arch``, its default execution space and, on NVRTC 12.8 or newer, ``--pch``)."""
        nvrtc = nvrtc_library()
        if nvrtc is None:
            raise KernelError("offline compiles need the NVRTC library (CuPy and the nvidia-cuda-nvrtc wheel)")
        text = _load_text(source)
        opts = list(DEFAULT_OPTIONS) + list(options) + [f"-arch={self.arch}", "--device-as-default-execution-space"]
        if nvrtc.getVersion() >= (12, 8):
            opts.append("--pch")
        generated = text is source            # CUDA text, not a kernels/cuda file name
        label = "<generated>" if generated else source
        prog = nvrtc.createProgram(text, "generated.cu" if generated else source, (), ())
        try:
            for name in name_expressions:
                nvrtc.addNameExpression(prog, name)
            t0 = time.perf_counter()
            try:
                nvrtc.compileProgram(prog, opts)
            except Exception as exc:        # noqa: BLE001  (NVRTC's own type: re-raised as ours)
                raise KernelError(f"compiling {label} for {self.arch} failed:\n"
                                  f"{nvrtc.getProgramLog(prog)}") from exc
            seconds = time.perf_counter() - t0
            size = len(nvrtc.getCUBIN(prog))
        finally:
            nvrtc.destroyProgram(prog)
        self.runs.append((seconds, label, tuple(name_expressions), size))

    @property
    def seconds(self):
        return sum(r[0] for r in self.runs)


_offline = None       # an OfflineCompiles while ``offline`` is on


@contextlib.contextmanager
def offline(arch="sm_90", cudnn=True):
    """Compile without a device: inside, ``get_module`` and ``get_function`` run NVRTC for
    ``arch`` directly (no cache, the CuPy binding of the NVRTC library only), record each run
    in the yielded ``OfflineCompiles`` and return None; the availability checks answer for
    such a device (``offline_arch``), with the cuDNN frontend installed or not (``cudnn``).
    What a build on that device would compile, timed on this machine's CPU
    (benchmarks/host.py ``compiles``)."""
    global _offline
    with _lock:
        if _offline is not None:
            raise KernelError("offline compiles do not nest")
        _offline = OfflineCompiles(arch, cudnn)
    try:
        yield _offline
    finally:
        _offline = None


def offline_arch():
    """The arch ``offline`` compiles for while it is on, else None (availability checks of
    arch-specific kernels answer for it instead of asking the device)."""
    off = _offline
    return None if off is None else off.arch


def offline_cudnn():
    """While ``offline`` is on, whether the device it stands for has the cuDNN frontend;
    else None (ask the frontend)."""
    off = _offline
    return None if off is None else off.cudnn


def get_module(source: str, *, options=(), name_expressions=(), device=None):
    """The compiled ``cupy.RawModule`` for ``source`` (a kernels/cuda file name or CUDA text)."""
    if _offline is not None:
        _offline.compile(source, options, name_expressions)
        return None
    import cupy  # optional dependency: CuPy only where a kernel is compiled or launched
    text = _load_text(source)
    opts = tuple(DEFAULT_OPTIONS) + tuple(options)
    dev = cupy.cuda.Device(device)
    arch = device_arch(dev.id)
    names = tuple(name_expressions)
    key = (source_hash(text), arch, opts, names, dev.id)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            log.debug("compiling %s for %s with %s (%d instantiations)",
                      source if len(source) < 80 else "<generated>", arch, opts, len(names))
            if _debug >= 3:
                log.debug("source:\n%s", text)
            with dev:
                try:
                    mod = cupy.RawModule(code=text, options=opts, name_expressions=names or None)
                    mod.compile()
                except cupy.cuda.compiler.CompileException as exc:
                    raise KernelError(f"compiling {source if len(source) < 80 else 'generated source'} "
                                      f"for {arch} failed:\n{exc}") from exc
            _modules[key] = mod
        return mod


SMEM_DEFAULT_CAP = 48 * 1024    # dynamic shared memory a launch gets without opting in
_smem_opt_in: dict = {}         # get_function key -> the opt-in set on that kernel


def get_function(source: str, name: str, *, options=(), name_expressions=None, device=None,
                 smem_bytes=0):
    """One kernel (``cupy.RawKernel``) of a module; templates by their name expression.

    ``name_expressions`` defaults to ``(name,)`` when ``name`` has template
    arguments; pass the full list to compile several instantiations in one go.
    ``smem_bytes``: the most dynamic shared memory a launch of it asks for; past CUDA's
    default cap of 48 KiB the kernel is opted in to that much (once per kernel and device,
    raised when a later call asks for more).
    """
    if name_expressions is None:
        name_expressions = (name,) if "<" in name else ()
    if _offline is not None:
        _offline.compile(source, options, name_expressions)
        return None
    import cupy  # optional dependency: CuPy only where a kernel is compiled or launched
    dev_id = cupy.cuda.Device(device).id
    key = (source, name, tuple(options), tuple(name_expressions), dev_id)
    fn = _functions.get(key)
    if fn is None:
        mod = get_module(source, options=options, name_expressions=name_expressions, device=dev_id)
        fn = mod.get_function(name)
        _functions[key] = fn
    if smem_bytes > SMEM_DEFAULT_CAP and _smem_opt_in.get(key, 0) < smem_bytes:
        fn.max_dynamic_shared_size_bytes = smem_bytes
        _smem_opt_in[key] = smem_bytes
    return fn


# dtype -> template argument text used by our sources
CTYPES = {np.dtype(np.float16): "half_t", np.dtype(np.float32): "float"}


def pick_by_dtype(table: dict, dtype, what: str = "kernel"):
    """``table[dtype]`` with a clear error listing the dtypes that have an instantiation."""
    dt = np.dtype(dtype)
    try:
        return table[dt]
    except KeyError:
        valid = ", ".join(sorted(str(np.dtype(k)) for k in table))
        raise UnsupportedError(f"{what}: dtype {dt} has no instantiation; valid dtypes: {valid}") from None


def ctype(dtype, what: str = "kernel") -> str:
    """The C type name (``half_t`` / ``float``) our sources use for ``dtype``."""
    return pick_by_dtype(CTYPES, dtype, what)


def i32(v) -> np.int32:
    """Kernel scalar argument as int32 (CuPy passes a bare Python int as long long)."""
    v = int(v)
    if not -2**31 <= v < 2**31:
        raise UnsupportedError(f"kernel argument {v} does not fit int32")
    return np.int32(v)


def f32(v) -> np.float32:
    return np.float32(v)


def clear_cache():
    """Forget compiled modules (tests; a changed source is picked up by its hash anyway)."""
    with _lock:
        _modules.clear()
        _functions.clear()
