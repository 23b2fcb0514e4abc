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


def _compile(item):
    kind, name = item
    if kind == "fp16":
        from kernels.gpu import conv_tc
        conv_tc.compile_all((conv_tc.TACTICS_BY_NAME[name],))
    else:
        import numpy as np

        from kernels.gpu import conv_int8
        conv_int8.compile_all((conv_int8.TACTICS_BY_NAME[name],), out_dtypes=(np.int8, np.float32))
    return name


def work_items(int8=False):
    from kernels.gpu import conv_tc
    items = [("fp16", name) for name in sorted(conv_tc.TACTICS_BY_NAME)]
    if int8:
        from kernels.gpu import conv_int8
        items += [("int8", name) for name in sorted(conv_int8.TACTICS_BY_NAME)]
    return items


def precompile(int8=False):
    """Fill the kernel cache with every tile (and the INT8 tiles when asked)."""
    todo = ({"fp16", "int8"} if int8 else {"fp16"}) - _done
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
                                   "import json, sys; from engine.gpu.precompile import _compile; "
                                   "[_compile(tuple(i)) for i in json.loads(sys.argv[1])]",
                                   json.dumps(chunk)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
                 for chunk in chunks]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode:           # compiling on first use still works
                log.warning("precompile worker failed (%s); its kernels compile on first use",
                            err.decode(errors="replace").strip().splitlines()[-1:] or "")
    _done.update(todo)
    seconds = time.perf_counter() - t0
    log.info("precompiled %d tile shapes in %.1f s with %d processes", len(items), seconds, workers)
    return seconds
