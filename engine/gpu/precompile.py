"""Compile tensor-core tiles in parallel before tactic timing.

NVRTC takes seconds per tile shape and the builder offers dozens; compiled one
after another on first use, a cold build would spend minutes compiling. A pool
of spawned processes fills CuPy's on-disk kernel cache (shared through
CUPY_CACHE_DIR) so the builder's own compiles become cache loads. The precompile
setting (CUPYRT_PRECOMPILE=0) turns it off, precompile_workers
(CUPYRT_PRECOMPILE_WORKERS) sets the pool size.

Two entry points:

- ``precompile_for(network, meta, input_shapes)``: the builder's. Only the tiles the
  build will time: for every layer at the build shapes, in its precision and on the
  storage types the engine feeds it (engine/execution.py's schedule, the one tactic
  selection runs), the candidates whose ``supports`` accepts it
  (engine/gpu/tactics.py ``supported``) that launch a tile of a family below. A
  ResNet-50 FP16 build lists no FP32 (tf32) and no matmul tile, the small-C stem
  tiles only for the stem. ``start_for`` compiles, in the background, the tiles of the
  layers precision by timing times in other precisions after that selection.
- ``precompile(int8=...)``: every tile of every family (benchmarks, tests).

What a family builds is read from its descriptor (kernels/gpu/family.py): its
``tiles`` and ``int8_tiles``, through its own ``compile``; a family the device cannot
run (``available``: wgmma off sm_90a) compiles nothing. Tiles of other kernels
(attention) and tactics without tiles (cuBLAS, cuDNN,
generic, pointwise) compile on first use, as before.
"""
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from kernels.gpu import compile as kernel_compile
from kernels.gpu import conv_igemm, conv_int8, conv_int8_smallc, conv_pw, conv_stem, conv_tf32, conv_wgmma, matmul

from ..execution import EngineSchedule, moved_storage
from ..settings import settings
from ..types import DataType
from . import tactics as T

log = logging.getLogger(__name__)

# the families with tiles to build ahead of the first build; a worker takes the next
# unclaimed tile, so the families that run several NVRTC compiles per tile (one per
# output type: int8, wgmma) go first and the pool ends on the short ones
FAMILIES = (conv_igemm.FAMILY, conv_tf32.FAMILY, matmul.FAMILY, conv_wgmma.FAMILY,
            conv_int8.FAMILY, conv_int8_smallc.FAMILY, conv_pw.FAMILY, conv_stem.FAMILY)
_FIRST = ("conv_int8", "conv_pw", "conv_wgmma", "matmul", "conv_stem", "conv_int8_smallc", "conv_tf32",
          "conv_igemm")
_BY_NAME = {f.name: f for f in FAMILIES}
_done = set()           # precompile(): the groups (family, family.int8) compiled
_compiled = set()       # every entry point: the items compiled in this process
_listed_keys = set()    # precompile_for: the items of the build it listed last


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


# -- the tiles one network's build times ------------------------------------------------

def _tile_key(tile):
    # tile types differ per family (ConvTactic, Int8Tactic, ...); names are unique in one
    return type(tile), getattr(tile, "name", None)


def _tile_index():
    return {_tile_key(t): f for f in FAMILIES for t in f.tiles + f.int8_tiles}


def tactic_tile(tactic, index=None):
    """(family, tile) of a tactic that launches a tile precompile builds, else None."""
    tile = getattr(tactic, "tile", None)
    if tile is None:
        return None
    f = (index if index is not None else _tile_index()).get(_tile_key(tile))
    return None if f is None else (f, tile)


def layer_items(layer, in_shapes, in_dtypes, precision, tf32=False, current=None, index=None, only=None):
    """The items (as ``work_items``) of the tiles the builder would time for ``layer`` at
    these input shapes and dtype names in ``precision``; ``only``: a set of tactic names
    (those the timing cache already chose: nothing else runs)."""
    s = current or settings()
    index = index if index is not None else _tile_index()
    out = []
    for t in T.supported(layer, in_shapes, in_dtypes, precision, tf32,
                         where=lambda t: (only is None or t.name in only)
                         and tactic_tile(t, index) is not None):
        f, tile = tactic_tile(t, index)
        if f.available():
            options = compile_options(f, s)
            per_layer = getattr(t, "compile_options", None)    # a tile built per layer geometry
            if per_layer is not None:
                options = dict(options, **per_layer(layer, in_shapes, in_dtypes))
            out.append([f.name, tile.name, options])
    return out


def network_items(network, meta, input_shapes, alternatives=None, scheduled=True, current=None,
                  cached=None, answered=None):
    """The items of every tile the build of ``network`` times at ``input_shapes``
    ({input name: shape}) under the plan metadata ``meta`` (precisions, flags): each
    layer in its precision on the storage types the engine feeds it; with
    ``alternatives`` ({layer name: a precision or a list of them}) also those layers in
    those precisions (``scheduled=False``: only those). ``cached(layer, in_shapes, dtype names, precision,
    out dtypes)``: the tactic names the timing cache holds for that selection (the
    backend's ``cached_tactics``), or None; a layer the cache answers lists only the tiles
    of those (a rebuild from the timing cache compiles the chosen tiles, not every one).
    ``answered`` (a dict, optional) gets "selections" and "cached": how many layer
    selections the build makes and how many of them need no compile from this list (the
    cache answers them, or the layer has no tile candidate). Each item once, in the order
    first met."""
    s = current or settings()
    engine = EngineSchedule(network, meta, backend=None)
    stores = {}        # item key -> the output dtypes its layers store (families that take them)
    shapes = engine.infer_shapes(input_shapes)
    tf32 = "TF32" in meta.get("flags", ())
    alternatives = alternatives or {}
    index = _tile_index()
    stored = {id(t): t.dtype for t in network._inputs}
    items, seen = [], set()
    for layer, precision, out_dtypes in engine.schedule():
        for t, d in zip(layer._outputs, out_dtypes):
            stored[id(t)] = d
        in_shapes = tuple(None if t is None else shapes[id(t)] for t in layer._inputs)
        dtypes = [None if t is None else stored[id(t)] for t in layer._inputs]
        outs = {np.dtype(d.to_numpy()).name for d in out_dtypes[:1]}
        runs = [(precision, dtypes, out_dtypes, outs)] if scheduled else []
        alts = alternatives.get(layer.name, ())
        for alt in (alts,) if isinstance(alts, DataType) else alts:
            if alt == precision:
                continue
            alt_in, alt_out = moved_storage(layer, dtypes, out_dtypes, alt)
            # out of its precision a layer may store either float type (its consumers decide)
            runs.append((alt, alt_in, alt_out, {"float16", "float32"}))
        for p, ds, stores_as, out_names in runs:
            names = tuple(None if d is None else np.dtype(d.to_numpy()).name for d in ds)
            only = cached(layer, in_shapes, names, p, stores_as) if cached is not None else None
            layer_tiles = layer_items(layer, in_shapes, names, p, tf32, s, index, only)
            if answered is not None:
                # answered: the cache chose, or the layer has no tile to compile either way (a
                # pooling layer; a concat the engine elides, which the cache never records)
                answered["selections"] = answered.get("selections", 0) + 1
                answered["cached"] = answered.get("cached", 0) + (only is not None or not layer_tiles)
            for item in layer_tiles:
                key = _item_key(item)
                if key not in seen:
                    seen.add(key)
                    items.append(item)
                stores.setdefault(key, set()).update(out_names)
    for item in items:
        if item[0] in _BY_OUTPUT:
            item[2] = dict(item[2], out_dtypes=_BY_OUTPUT[item[0]](stores[_item_key(item)]))
    return items


def _float_outputs(names):
    return sorted(n for n in names if n in ("float16", "float32")) or ["float16"]


def _int8_outputs(names):
    return sorted(names) or ["int8"]


def _stored_outputs(names):
    return sorted(names) or ["float16"]


# families whose compile takes the output dtypes to build (one NVRTC run each): the
# dtypes a network's layers store, as that family's tiles can write them (the stem's
# INT8 flavour writes codes: listed as float16 it compiled 3.5 s in an INT8 build's own
# process, H100, session 15). INT8 layers
# store int8 codes but where a float layer reads them: one NVRTC run a tile instead of
# three (the persistent 1x1 tiles took about 10 s each for three)
_BY_OUTPUT = {"conv_igemm": _float_outputs, "conv_wgmma": _stored_outputs,
              "conv_int8_smallc": _int8_outputs, "conv_stem": _stored_outputs,
              "conv_int8": _int8_outputs, "conv_pw": _int8_outputs}


def _item_key(item):
    return item[0], item[1], json.dumps(item[2], sort_keys=True)


# -- compiling: a pool of subprocesses --------------------------------------------------

# what the last precompile cost: {"family tile": seconds} of its compiles (a cache
# load takes milliseconds), the wall seconds of the whole, and (precompile_for) the
# tiles it listed ("tiles") of how many the families have ("of"), how many were not
# compiled in this process before ("compiled"), and what the background list added
# ("later_tiles", "later_seconds": how long the build waited for it)
last_report = {"seconds": 0.0, "items": {}}
_TIMED = "compiled-in"
_NICENESS = "worker-niceness"


def _build(item):
    """Compile one item (family name, tile name, options) in this process."""
    family_name, tile_name, options = item
    family = _BY_NAME[family_name]
    family.compile((family.tile(tile_name),), **options)


def _failure(e):
    """A failed compile in one line: the exception's type and its first compiler error lines."""
    errs = [ln for ln in str(e).splitlines() if "error" in ln][:2] or str(e).splitlines()[:2]
    return f"{type(e).__name__}: {' | '.join(errs)}"


def _worker(items, claims=None):
    """One subprocess: compile each item; a failure is reported (family, tile, the
    compiler's first error lines) and the rest still compile. Each item's seconds go
    to stderr as ``compiled-in <seconds> <family> <tile>``. ``claims``: a folder the
    workers share; an item is compiled by the worker that first creates its file
    there, so a worker done early takes the items others have not reached."""
    kernel_compile.set_debug_level(settings().debug)
    print(f"{_NICENESS} {os.nice(0)}", file=sys.stderr)
    for i, (family_name, tile_name, options) in enumerate(items):
        if claims is not None:
            try:
                os.close(os.open(os.path.join(claims, str(i)), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
        t0 = time.perf_counter()
        try:
            _build((family_name, tile_name, options))
        except Exception as e:        # noqa: BLE001  (reported; compiles again on first use)
            print(f"{family_name} {tile_name}: {_failure(e)}", file=sys.stderr)
            continue
        print(f"{_TIMED} {time.perf_counter() - t0:.2f} {family_name} {tile_name}", file=sys.stderr)


def _one_run_each(items):
    """Each item of a family compiled per output type (``_BY_OUTPUT``) with several types as
    one item per type: one NVRTC run each, so the runs of one tile go to several workers.
    A two-type tile was the early compile's long pole: conv_pw pwi8_64x128_s3, 10.5 s of
    one worker while an H200 INT8 build waited 5.7 s after its calibration for the pool
    (session 16); 3.1 s here for its two runs (``benchmarks/host.py compiles --time``)."""
    out = []
    for family, tile, options in items:
        types = options.get("out_dtypes") if family in _BY_OUTPUT else None
        if types and len(types) > 1:
            out += [[family, tile, dict(options, out_dtypes=[t])] for t in types]
        else:
            out.append([family, tile, options])
    return out


def _ordered(items):
    """Longest first (families with several NVRTC compiles per tile), stable within."""
    rank = {name: i for i, name in enumerate(_FIRST)}
    return sorted(items, key=lambda it: rank.get(it[0], len(rank)))


# the niceness of a background compile's workers (``start_for``): they compile tiles needed
# only after the build's own selection, which meanwhile times candidates and waits for the
# cuDNN plan workers on the same cores (16 compile workers beside 8 plan workers on 16 CPUs
# in an H100 INT8 build), so they take what CPU time those leave
BACKGROUND_NICE = 10


class _Pool:
    """Worker subprocesses compiling ``items`` (each claimed once); ``wait`` collects
    their per-tile seconds. A reader thread drains their stderr as they go, so a
    worker never stalls on a full pipe while the builder does other work. ``nice``: the
    workers lower their own CPU priority by that much first (0: as the builder's)."""

    def __init__(self, items, workers, nice=0):
        self.items, self.timed, self.seconds = _ordered(_one_run_each(items)), {}, 0.0
        self.niceness = set()        # what the workers said they run at
        self._t0 = time.perf_counter()
        self._claims = tempfile.mkdtemp(prefix="cupyrt_precompile_")
        # plain subprocesses, not multiprocessing: a spawned pool re-imports the
        # user's __main__ module, which would run an unguarded script again per worker
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        code = ("import json, os, sys; os.nice(int(sys.argv[3])); from engine.gpu.precompile import _worker; "
                "_worker(json.loads(sys.argv[1]), sys.argv[2])")
        self._procs = [subprocess.Popen([sys.executable, "-c", code, json.dumps(self.items),
                                         self._claims, str(int(nice))], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
                       for _ in range(min(workers, len(self.items)))]
        self._reader = threading.Thread(target=self._collect, name="precompile", daemon=True)
        self._reader.start()

    def _collect(self):
        for proc in self._procs:
            _, err = proc.communicate()
            lines = err.decode(errors="replace").strip().splitlines()
            if proc.returncode:           # compiling on first use still works
                log.warning("precompile worker failed (%s); its kernels compile on first use",
                            [ln for ln in lines if not ln.startswith((_TIMED, _NICENESS))][-1:] or "")
            for line in lines:
                parts = line.split()
                if len(parts) == 4 and parts[0] == _TIMED:
                    key = f"{parts[2]} {parts[3]}"          # a tile's runs, summed
                    self.timed[key] = round(self.timed.get(key, 0.0) + float(parts[1]), 2)
                elif len(parts) == 2 and parts[0] == _NICENESS:
                    self.niceness.add(int(parts[1]))
                elif ": " in line and line.split(" ", 1)[0] in _BY_NAME:
                    log.warning("precompile: %s (compiles again on first use)", line)
        shutil.rmtree(self._claims, ignore_errors=True)
        self.seconds = time.perf_counter() - self._t0

    def wait(self):
        """Seconds spent waiting here for the workers to finish."""
        t0 = time.perf_counter()
        self._reader.join()
        return time.perf_counter() - t0


def _compile(items, workers):
    """Compile ``items`` now in ``workers`` processes: ({"family tile": seconds}, wall
    seconds). One item or one worker: nothing (it compiles on first use all the same)."""
    if workers <= 1 or len(items) <= 1:
        return {}, 0.0
    pool = _Pool(items, workers)
    pool.wait()
    return pool.timed, pool.seconds


# a tile whose compile returns faster than this came from CuPy's on-disk kernel cache
CACHE_LOAD_S = 0.3


def _compile_here(item):
    """Compile one item in this process; its seconds, or None when it failed (it compiles
    again on first use, where the error surfaces)."""
    t0 = time.perf_counter()
    try:
        _build(item)
    except Exception as e:        # noqa: BLE001  (reported; compiles again on first use)
        log.warning("precompile: %s %s: %s", item[0], item[1], _failure(e))
        return None
    return time.perf_counter() - t0


def _compile_cached(items, workers):
    """``_compile`` for a rebuild whose every selection the timing cache answers: the few
    chosen tiles are most likely in CuPy's on-disk kernel cache already (the same machine),
    where loading one takes milliseconds and starting worker processes (a Python with
    CuPy imported, each) would cost more than everything else. So they load here, one by
    one, until one takes CACHE_LOAD_S or more (a real compile: another machine, or a
    cleared cache); the rest then go to the worker pool as in a cold build."""
    t0 = time.perf_counter()
    timed = {}
    for i, item in enumerate(items):
        sec = _compile_here(item)
        if sec is None:
            continue
        timed[f"{item[0]} {item[1]}"] = sec
        if sec >= CACHE_LOAD_S and i + 1 < len(items):
            log.info("precompile: %s %s compiled (%.1f s), not loaded: the other %d tiles go to "
                     "worker processes", item[0], item[1], sec, len(items) - i - 1)
            rest, _ = _compile(items[i + 1:], workers)
            timed.update(rest)
            break
    return timed, time.perf_counter() - t0


def _new(items):
    """The items not compiled in this process before, marked as compiled now."""
    out = [it for it in items if _item_key(it) not in _compiled]
    _compiled.update(_item_key(it) for it in out)
    return out


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
    items = _new([item for key, f, tiles in _groups(int8) if key in todo and f.available()
                  for item in ([f.name, t.name, compile_options(f, s)] for t in tiles)])
    timed, seconds = _compile(items, s.precompile_workers)
    _done.update(todo)
    last_report.clear()
    last_report.update(seconds=seconds, items=timed)
    log.info("precompiled %d tile shapes in %.1f s with %d processes", len(items), seconds,
             s.precompile_workers)
    return seconds


def _answers_all(answered):
    """Whether ``network_items``' ``answered`` counts say the timing cache answers every
    selection of the build (a rebuild: its few chosen tiles load in-process)."""
    return bool(answered.get("selections")) and answered.get("cached") == answered["selections"]


def precompile_for(network, meta, input_shapes, cached=None):
    """Fill the kernel cache with the tiles the build of ``network`` times at
    ``input_shapes`` (``network_items``; ``cached``: what the timing cache already
    chose) and return the wall
    seconds it took. Fills ``last_report``."""
    s = settings()
    last_report.clear()
    last_report.update(seconds=0.0, items={})
    if not s.precompile:
        return 0.0
    answered = {}
    try:
        listed = network_items(network, meta, input_shapes, current=s, cached=cached, answered=answered)
    except Exception as e:     # noqa: BLE001  (a listing bug must not fail the build)
        answered.clear()       # partial counts: not a rebuild's short list (every tile follows)
        int8 = any(str(p).endswith("INT8") for p in (meta.get("precisions") or {}).values())
        log.warning("precompile: the tiles of this build could not be listed (%s: %s); compiling "
                    "every tile%s", type(e).__name__, e, " (INT8 ones too)" if int8 else "")
        listed = work_items(int8=int8, current=s)
    items = _new(listed)
    rebuild = _answers_all(answered)
    compile_items = _compile_cached if rebuild else _compile
    timed, seconds = compile_items(items, s.precompile_workers)
    _listed_keys.clear()
    _listed_keys.update(_item_key(it) for it in listed)
    last_report.update(seconds=seconds, items=timed, tiles=len(listed), compiled=len(items), rebuild=rebuild,
                       of=len(work_items(int8=True, current=s)), later_tiles=0, later_seconds=0.0)
    log.info("precompiled %d of the %d tiles this build times (%d exist) in %.1f s with %d "
             "processes", len(items), len(listed), last_report["of"], seconds, s.precompile_workers)
    return seconds


def start_early(network, meta, input_shapes, cached=None):
    """Start compiling, in the background, the tiles of ``network_items(network, meta,
    input_shapes)`` that nothing compiled yet: the builder's, before INT8 calibration, with
    the precisions calibration is expected to leave (``meta``), so the compile overlaps the
    calibration passes. ``precompile_for`` then compiles only what the guess missed, and the
    builder joins this with ``finish_early``. Nothing starts where the timing cache answers
    every selection (a rebuild loads its few tiles in-process), with no worker processes to
    spare or precompile off, or for one tile."""
    s = settings()
    if not s.precompile or s.precompile_workers <= 1:
        return _Later()
    answered = {}
    try:
        listed = network_items(network, meta, input_shapes, current=s, cached=cached, answered=answered)
    except Exception as e:     # noqa: BLE001  (precompile_for lists and compiles them instead)
        log.info("precompile: the tiles could not be listed before calibration (%s: %s)", type(e).__name__, e)
        return _Later()
    if _answers_all(answered):
        return _Later()
    items = _new(listed)
    if len(items) <= 1:
        _compiled.difference_update(_item_key(it) for it in items)
        return _Later()
    log.info("compiling %d tiles while the INT8 calibration runs", len(items))
    return _Later(_Pool(items, s.precompile_workers), len(items), "early_tiles", "early_wait_seconds",
                  keys={_item_key(it) for it in items})


def finish_early(early):
    """Wait for ``start_early``'s compile and add it to ``last_report`` (its tiles' seconds,
    ``early_tiles`` and ``early_wait_seconds``: how long the build waited for it; the tiles
    of the build's list it compiled join ``compiled``, which ``precompile_for`` counted
    without them). Seconds."""
    if early.pool is not None:
        last_report["compiled"] = last_report.get("compiled", 0) + len(early.keys & _listed_keys)
    return early.wait()


class _Later:
    """A background compile (``start_for``, ``start_early``); ``wait`` joins it and adds its
    tile count and the seconds waited to ``last_report`` under the two keys given."""

    def __init__(self, pool=None, count=0, tiles_key="later_tiles", seconds_key="later_seconds", keys=frozenset()):
        self.pool, self.count, self.keys = pool, count, keys      # keys: its items' (_item_key)
        self.tiles_key, self.seconds_key = tiles_key, seconds_key

    def wait(self):
        """Seconds waited for the background compile (0 when there was none); its
        per-tile seconds join ``last_report``."""
        if self.pool is None:
            return 0.0
        waited = self.pool.wait()
        last_report.setdefault("items", {}).update(self.pool.timed)
        # summed over the build's background compiles (precision by timing's rounds)
        last_report.update({self.tiles_key: last_report.get(self.tiles_key, 0) + self.count,
                            self.seconds_key: last_report.get(self.seconds_key, 0.0) + waited})
        self.pool = None
        return waited


def start_for(network, meta, input_shapes, alternatives, cached=None):
    """Start compiling, in the background, the tiles of ``alternatives`` ({layer name: a
    precision or a list}: layers the build may time in other precisions later) that nothing
    compiled yet; ``wait()`` on the result before timing them. With no worker
    processes to spare (or precompile off) nothing starts: they compile on first use."""
    s = settings()
    if not s.precompile or not alternatives or s.precompile_workers <= 1:
        return _Later()
    if last_report.get("rebuild"):
        # the timing cache answered the build's own selections: the alternatives it timed
        # are cached too, and those it ruled out from those times are ruled out again, so
        # nothing here is likely to run; what does compiles on first use (no worker start)
        return _Later()
    try:
        items = _new(network_items(network, meta, input_shapes, alternatives, scheduled=False,
                                   current=s, cached=cached))
    except Exception as e:     # noqa: BLE001  (they compile on first use instead)
        log.warning("precompile: the other precisions' tiles could not be listed (%s: %s); they "
                    "compile on first use", type(e).__name__, e)
        items = []
    if len(items) <= 1:        # one tile: compiled on first use beats starting a worker
        return _Later()
    log.info("compiling %d tiles of other precisions in the background (niceness +%d)", len(items),
             BACKGROUND_NICE)
    return _Later(_Pool(items, s.precompile_workers, nice=BACKGROUND_NICE), len(items))
