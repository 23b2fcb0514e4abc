"""Compile every tensor-core tile in parallel before tactic timing.

NVRTC takes seconds per tile shape and the builder offers dozens; compiled one
after another on first use, a cold build would spend minutes compiling. A pool
of spawned processes fills CuPy's on-disk kernel cache (shared through
CUPY_CACHE_DIR) so the builder's own compiles become cache loads. Done once per
process; the precompile setting (CUPYRT_PRECOMPILE=0) turns it off,
precompile_workers (CUPYRT_PRECOMPILE_WORKERS) sets the pool size.

What is compiled is read from the kernel families' descriptors (kernels/gpu/family.py):
each family's ``tiles``, and its ``int8_tiles`` for INT8 builds, through the family's
own ``compile``; a family the device cannot run (``available``: wgmma off sm_90a)
compiles nothing.
"""
import json
import logging
import os
import subprocess
import sys
import time

from kernels.gpu import compile as kernel_compile
from kernels.gpu import conv_igemm, conv_int8, conv_tf32, conv_wgmma, matmul

from ..settings import settings

log = logging.getLogger(__name__)

# the families with tiles to build ahead of the first build
FAMILIES = (conv_igemm.FAMILY, conv_tf32.FAMILY, matmul.FAMILY, conv_wgmma.FAMILY,
            conv_int8.FAMILY)
_BY_NAME = {f.name: f for f in FAMILIES}
_done = set()


def compile_options(family, current=None):
    """The keyword arguments a family's ``compile`` takes from the settings: the FP16
    wgmma FAST instantiations only when the fast epilogue is on (else never used)."""
    s = current or settings()
    if family is conv_wgmma.FAMILY:
        return {"fast_epilogue": s.wgmma_f16_fast_epilogue}
    return {}


def _groups(int8):
    """(group key, family, tiles): every family's tiles, the INT8 tiles for INT8 builds."""
    out = []
    for f in FAMILIES:
        out.append((f.name, f, f.tiles))
        if int8:
            out.append((f.name + ".int8", f, f.int8_tiles))
    return [(key, f, tiles) for key, f, tiles in out if tiles]


def work_items(int8=False, current=None):
    """[family name, tile name, compile options] for every tile to build (none of a
    family the device cannot run)."""
    return [[f.name, t.name, compile_options(f, current)] for _, f, tiles in _groups(int8)
            if f.available() for t in tiles]


# what the last precompile cost: {"family tile": seconds} of its compiles (a cache
# load takes milliseconds), and the wall seconds of the whole
last_report = {"seconds": 0.0, "items": {}}
_TIMED = "compiled-in"


def _worker(items):
    """One subprocess: compile each item; a failure is reported (family, tile, the
    compiler's first error lines) and the rest still compile. Each item's seconds go
    to stderr as ``compiled-in <seconds> <family> <tile>``."""
    kernel_compile.set_debug_level(settings().debug)
    for family_name, tile_name, options in items:
        t0 = time.perf_counter()
        try:
            family = _BY_NAME[family_name]
            family.compile((family.tile(tile_name),), **options)
        except Exception as e:        # noqa: BLE001  (reported; compiles again on first use)
            errs = [ln for ln in str(e).splitlines() if "error" in ln][:2] or str(e).splitlines()[:2]
            print(f"{family_name} {tile_name}: {type(e).__name__}: {' | '.join(errs)}", file=sys.stderr)
            continue
        print(f"{_TIMED} {time.perf_counter() - t0:.2f} {family_name} {tile_name}", file=sys.stderr)


def report_lines(report=None):
    """The per-family compile seconds of a precompile report, slowest family first."""
    report = report or last_report
    fams = {}
    for item, sec in report["items"].items():
        fam = item.split(" ", 1)[0]
        n, total = fams.get(fam, (0, 0.0))
        fams[fam] = (n + 1, total + sec)
    return [f"{fam}: {n} tiles, {total:.1f} s of compile" for fam, (n, total)
            in sorted(fams.items(), key=lambda kv: -kv[1][1])]


def precompile(int8=False):
    """Fill the kernel cache with every tile (and the INT8 tiles when asked)."""
    s = settings()
    todo = {key for key, _, _ in _groups(int8)} - _done
    if not todo or not s.precompile:
        return 0.0
    items = [item for key, f, tiles in _groups(int8) if key in todo and f.available()
             for item in ([f.name, t.name, compile_options(f, s)] for t in tiles)]
    workers = s.precompile_workers
    t0 = time.perf_counter()
    timed = {}
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
                            [ln for ln in lines if not ln.startswith(_TIMED)][-1:] or "")
            for line in lines:
                parts = line.split()
                if len(parts) == 4 and parts[0] == _TIMED:
                    timed[f"{parts[2]} {parts[3]}"] = float(parts[1])
                elif ": " in line and line.split(" ", 1)[0] in _BY_NAME:
                    log.warning("precompile: %s (compiles again on first use)", line)
    _done.update(todo)
    seconds = time.perf_counter() - t0
    last_report.update(seconds=seconds, items=timed)
    log.info("precompiled %d tile shapes in %.1f s with %d processes", len(items), seconds, workers)
    return seconds

