"""Compile every tensor-core tile in parallel before tactic timing.

NVRTC takes seconds per tile shape and the builder offers dozens; compiled one
after another on first use, a cold build would spend minutes compiling. A pool
of spawned processes fills CuPy's on-disk kernel cache (shared through
CUPY_CACHE_DIR) so the builder's own compiles become cache loads. Done once per
process; CUPYRT_PRECOMPILE=0 turns it off, CUPYRT_PRECOMPILE_WORKERS sets the
pool size (default: the CPU count, at most 16).
"""
import json
import logging
import os
import subprocess
import sys
import time

log = logging.getLogger(__name__)
_done = set()


def _compile_fp16(name):
    from kernels.gpu import conv_tc
    conv_tc.compile_all((conv_tc.TACTICS_BY_NAME[name],))


def _compile_int8(name):
    import numpy as np

    from kernels.gpu import conv_int8
    conv_int8.compile_all((conv_int8.TACTICS_BY_NAME[name],),
                          out_dtypes=(np.int8, np.float32, np.float16))


def _compile_tf32(name):
    from kernels.gpu import conv_tf32
    conv_tf32.compile_all((conv_tf32.TACTICS_BY_NAME[name],))


def _names_fp16():
    from kernels.gpu import conv_tc
    return sorted(conv_tc.TACTICS_BY_NAME)


def _names_int8():
    from kernels.gpu import conv_int8
    return sorted(conv_int8.TACTICS_BY_NAME)


def _names_tf32():
    from kernels.gpu import conv_tf32
    return sorted(conv_tf32.TACTICS_BY_NAME)


def _compile_matmul(name):
    from kernels.gpu import matmul
    matmul.compile_all((matmul.TILES_BY_NAME[name],))


def _names_matmul():
    from kernels.gpu import matmul
    return sorted(matmul.TILES_BY_NAME)


def _wgmma_names(kind):
    from kernels.gpu import conv_wgmma
    if not conv_wgmma.available():        # sm_90a only: nothing to compile elsewhere
        return []
    return sorted(t.name for t in conv_wgmma.TACTICS_BY_NAME.values() if t.kind == kind)


def _compile_wgmma(name):
    import numpy as np

    from kernels.gpu import conv_wgmma
    t = conv_wgmma.TACTICS_BY_NAME[name]
    dts = (np.float16, np.float32) if t.kind == "wgmma" else (np.int8, np.float16, np.float32)
    # FAST too: CUPYRT_WGMMA_F16_FAST_EPILOGUE, and the GPU test comparing it with the default
    conv_wgmma.compile_all((t,), out_dtypes=dts, fast=True)


# kind -> (tile names, compile one tile); the "int8" kinds only for INT8 builds
KINDS = {"fp16": (_names_fp16, _compile_fp16), "tf32": (_names_tf32, _compile_tf32),
         "matmul": (_names_matmul, _compile_matmul),
         "wgmma": (lambda: _wgmma_names("wgmma"), _compile_wgmma),
         "int8": (_names_int8, _compile_int8),
         "wgmma_int8": (lambda: _wgmma_names("wgmma_int8"), _compile_wgmma)}


def _int8_kind(kind):
    return kind.endswith("int8")


def _compile(item):
    kind, name = item
    KINDS[kind][1](name)
    return name


def _worker(items):
    """One subprocess: compile each item; a failure is reported (kind, tile, the
    compiler's first error lines) and the rest still compile."""
    for item in items:
        try:
            _compile(tuple(item))
        except Exception as e:        # noqa: BLE001  (reported; compiles again on first use)
            errs = [ln for ln in str(e).splitlines() if "error" in ln][:2] or str(e).splitlines()[:2]
            print(f"{item[0]} {item[1]}: {type(e).__name__}: {' | '.join(errs)}", file=sys.stderr)


def work_items(int8=False):
    return [(kind, name) for kind, (names, _) in KINDS.items() if int8 or not _int8_kind(kind)
            for name in names()]


def precompile(int8=False):
    """Fill the kernel cache with every tile (and the INT8 tiles when asked)."""
    todo = {k for k in KINDS if int8 or not _int8_kind(k)} - _done
    if not todo or os.environ.get("CUPYRT_PRECOMPILE", "1") == "0":
        return 0.0
    items = [i for i in work_items(int8=True) if i[0] in todo]
    workers = int(os.environ.get("CUPYRT_PRECOMPILE_WORKERS", min(16, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    if workers > 1 and len(items) > 1:
        # plain subprocesses, not multiprocessing: a spawned pool re-imports the
        # user's __main__ module, which would run an unguarded script again per worker
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        chunks = [items[i::workers] for i in range(min(workers, len(items)))]
        procs = [subprocess.Popen([sys.executable, "-c",
                                   "import json, sys; from engine.gpu.precompile import _worker; "
                                   "_worker(json.loads(sys.argv[1]))",
                                   json.dumps(chunk)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
                 for chunk in chunks]
        for proc in procs:
            _, err = proc.communicate()
            lines = err.decode(errors="replace").strip().splitlines()
            if proc.returncode:           # compiling on first use still works
                log.warning("precompile worker failed (%s); its kernels compile on first use",
                            lines[-1:] or "")
            for line in lines:
                if ": " in line and line.split(" ", 1)[0] in KINDS:
                    log.warning("precompile: %s (compiles again on first use)", line)
    _done.update(todo)
    seconds = time.perf_counter() - t0
    log.info("precompiled %d tile shapes in %.1f s with %d processes", len(items), seconds, workers)
    return seconds
