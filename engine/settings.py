"""Every ``CUPYRT_*`` switch of the package, in one table, read once.

    from engine.settings import settings
    if settings().cuda_graphs: ...

``settings()`` parses the environment once and returns the same frozen object until
a CUPYRT_* variable changes (it compares the raw strings it was parsed from, a few
dictionary lookups), so every module sees one consistent set of values at any moment.
Code that changes a switch on purpose says so: ``configure(backend="numpy")`` sets
values for this process and its children (through the environment);
``overridden(...)`` does it for a block.

Kernels (kernels/gpu) never read switches: the engine passes the values they need
as arguments. Switches marked ``tactics`` change which tactics exist or how fast one
runs; their values away from the default join the timing-cache key
(``tactic_key()``), so tiles timed one way are not reused the other way.

The README's table of switches is generated from SETTINGS (``markdown_table()``;
``python -m tf_integration.ops_doc`` writes it, a test checks it is current).
"""
import contextlib
import dataclasses
import os
import threading

from .errors import BuildError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(name, text):
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BuildError(f"{name}={text!r}: expected one of 1/0, true/false, yes/no, on/off")


def _number(kind):
    def parse(name, text):
        try:
            value = kind(text)
        except ValueError:
            raise BuildError(f"{name}={text!r}: expected {'an integer' if kind is int else 'a number'}") from None
        if value < 0:
            raise BuildError(f"{name}={text!r}: expected a value >= 0")
        return value
    return parse


def _backend(name, text):
    # the message engine/backends gives for a backend name passed in code, so both say the same
    value = text.strip().lower() or "auto"
    if value not in ("auto", "numpy", "cupy"):
        raise BuildError(f"backend {text!r} is not available ({name}); valid: auto, numpy, cupy")
    return value


def _path(name, text):
    return text or None


def _default_workers():
    return min(16, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class Switch:
    """One switch: its field on Settings, its variable, parser, default, and whether it
    changes the tactics a build times (then it joins the timing-cache key)."""
    field: str
    parse: object
    default: object
    doc: str
    tactics: bool = False

    @property
    def env(self):
        return "CUPYRT_" + self.field.upper()

    def default_value(self):
        return self.default() if callable(self.default) else self.default


SETTINGS = (
    Switch("backend", _backend, "auto",
           "Backend engines run on: `auto` (CuPy with a CUDA device; engine nodes in TensorFlow run "
           "their TensorFlow segment on hosts without one), `numpy` (the reference), `cupy`."),
    Switch("cuda_graphs", _flag, True,
           "Replay each engine's kernels as one CUDA graph per input shape (0: launch them one by one)."),
    Switch("aux_streams", _flag, True,
           "Inside a captured CUDA graph, run single-layer side branches (ResNet's projection shortcuts: "
           "a layer whose output only a later join reads, beside main-stream work the join also waits for) "
           "on a second stream, forked after their inputs are made and joined before their reader "
           "(engine/aux_streams.py). Same outputs; ResNet-50 FP16 0.958x the time at batch 1, 0.986x at 32, "
           "0.998x at 256, INT8 b256 0.997x (H100 A/B); 0: one stream."),
    Switch("concat_elision", _flag, True,
           "Let producers of a Concatenation write into its output buffer instead of copying."),
    Switch("timing_cache", _path, None,
           "Timing-cache file shared by builds (`config.timing_cache_path` takes precedence)."),
    Switch("precompile", _flag, True,
           "Compile the kernel tiles a build will time, in parallel, before it times tactics."),
    Switch("precompile_during_calibration", _flag, True,
           "An INT8 build starts compiling the tiles it will time while its calibration passes run, listed "
           "with the precisions calibration is expected to leave (a wrong guess only moves a compile); 0: "
           "after calibration, as before. Scheduling only: the plan is the same either way."),
    Switch("precompile_workers", _number(int), _default_workers,
           "Processes precompile uses (default: the CPU count, at most 16)."),
    Switch("wgmma", _flag, True, "Hopper wgmma convolution tactics.", tactics=True),
    Switch("int8_smallc", _flag, True, "The INT8 stem tactic for convolutions with C <= 4.", tactics=True),
    Switch("stem_kernel", _flag, True,
           "FP16 stem tactics for convolutions with C <= 4 (kernels/cuda/conv_stem.cu: the input patch "
           "of each tile in shared memory, the NCHW network input read directly) and the dedicated "
           "NCHW -> padded NHWC input reformat (ResNet-50 FP16 b256 0.896x the time without; H200 A/B).",
           tactics=True),
    Switch("stem_int8", _flag, True,
           "INT8 stem layers (C <= 4) may run on the FP16 stem kernel from the float input, writing "
           "int8 codes (conv.stem_*_i8; timed beside the INT8 kernels; not bit-exact with the INT8 "
           "emulation; ResNet-50 INT8 b256 0.944x the time without; H100 A/B).", tactics=True),
    Switch("fast_quantize", _flag, True, "Vectorised FP16 -> INT8 quantize kernel.", tactics=True),
    Switch("wgmma_f16_fast_epilogue", _flag, True,
           "FP16 wgmma epilogue that prefetches the residual into shared memory (ResNet-50 FP16 "
           "b256 0.94x the time of the plain epilogue, same outputs; H200 A/B).", tactics=True),
    Switch("calibrate_on_gpu", _flag, True,
           "INT8 calibration runs the network in FP32 on the GPU when the build does (maxima and "
           "histograms taken there); 0: NumPy on the host."),
    Switch("cudnn", _flag, True, "cuDNN frontend fused graphs as tactics (when the frontend is installed).",
           tactics=True),
    Switch("cudnn_int8", _flag, True,
           "cuDNN INT8 convolution graphs as INT8 tactics (conv.cudnn_i8; needs cudnn on), timed beside "
           "our INT8 kernels; 0: ours only.", tactics=True),
    Switch("cudnn_s2d", _flag, False,
           "The RGB stem (stride-2 convolutions over 1-4 channels) as a space-to-depth pass and a "
           "stride-1 cuDNN graph (conv.cudnn_s2d; needs cudnn on); off until its GPU tests have passed.",
           tactics=True),
    Switch("s2d_stem", _flag, False,
           "The INT8 RGB stem (stride-2 convolutions over 1-4 channels) as a space-to-depth pass "
           "and a stride-1 convolution on our own INT8 kernels (conv.s2d_wgi8_*, conv.s2d_i8_*; no "
           "cuDNN); off until its GPU tests have passed.", tactics=True),
    Switch("s2d_stem_f16", _flag, False,
           "The same space-to-depth stem on our FP16 kernels (conv.s2d_wg_*, conv.s2d_igemm2_*); off "
           "until a whole-network A/B against the FP16 stem kernel.", tactics=True),
    Switch("pw_persistent", _flag, True,
           "Persistent, weight-resident INT8 kernel for 1x1 stride-1 convolutions with short "
           "reductions (conv.pwi8_*: ResNet's bottleneck expand layers), timed beside the other "
           "INT8 tactics; 0: not a candidate.", tactics=True),
    Switch("pw3_persistent", _flag, False,
           "The persistent INT8 kernel for 3x3 stride-1 padding-1 convolutions with C % 32 == 0 "
           "(conv.pw3i8_*: a stage holds the tile's rows and a one-row halo, read by all nine "
           "taps; ResNet's stage-1 3x3); off until its GPU tests have passed.", tactics=True),
    Switch("wgmma_int8_3cta", _flag, True,
           "The INT8 wgmma tile conv.wgi8_128x64_s3_3cta (a three-stage ring, registers capped for three "
           "CTAs an SM; for ResNet's stage-1 3x3 layers, which ran latency-bound at two), timed beside the "
           "other INT8 tactics; 0: not a candidate. Same-process ResNet-50 INT8 b256 A/B on an H100 "
           "(session 22): 5.044 ms at 0, 4.969 ms at 1 (the three stage-1 3x3 layers took it; each of five "
           "rounds faster), outputs identical.", tactics=True),
    Switch("pw_persistent_f16", _flag, False,
           "The same persistent 1x1 kernel in FP16 (conv.pw16_*); off until a whole-network A/B "
           "against cuDNN's FP16 graphs.", tactics=True),
    Switch("mma_sync_where_wgmma", _flag, False,
           "Time the plain mma.sync convolution tiles (conv.igemm_*, conv.igemm2_*, conv.i8_*) also for "
           "layers the wgmma tactic of the same precision takes; 0 (default): only where wgmma declines "
           "(split-K, small-C, narrow and persistent tiles are timed either way). wgmma was ahead on 12 of 14 "
           "ResNet-50 layer classes (H200, FP16 and INT8), and the ResNet-50 and MobileNetV2 builds at batch "
           "256 recorded since session 7 picked none of them (one INT8 layer in session 6); at 0 a ResNet-50 INT8 "
           "build leaves out its 12 plain FP16 igemm and 6-7 conv_int8 tiles. Same-process ResNet-50 INT8 A/B "
           "on an H200 (session 16): 4.980 ms at 0 against 4.964 ms at 1, top-1 equal.",
           tactics=True),
    Switch("tiles_where_specialised", _flag, False,
           "Time our general convolution tiles (FP16: conv.igemm*, conv.wg_*; INT8: conv.i8*, conv.wgi8_*) also "
           "for convolutions a kernel that outran them takes: in FP16 cuDNN's graphs (channels multiples of 8), in "
           "FP16 and INT8 our stem kernel (C <= 4); 0 (default): only where none does, or where none then runs the "
           "layer (every cuDNN plan failed: the tiles are timed after all). In the FP16 records (ResNet-50, "
           "MobileNetV2; H100 and H200, sessions 7-15) cuDNN won 544 of the 546 convolutions both could run and "
           "these tiles none (the closest 1.04x behind); the stem kernel beat them on every stem (FP16 by 2.3x or "
           "more, INT8 by 1.69x or more). At 0 a ResNet-50 FP16 build lists 14 tiles to compile instead of 41 and "
           "an INT8 build 30 instead of 60 (`python benchmarks/host.py compiles`); with mma_sync_where_wgmma 0 "
           "too, the ResNet-50 INT8 cold build took 29.2 s instead of 40.5 s on an H200 (session 16), at the "
           "same speed (4.986 against 4.964 ms).", tactics=True),
    Switch("cudnn_max_plans", _number(int), 4, "cuDNN engine plans timed per graph.", tactics=True),
    Switch("batch_tiles", _number(int), 0,
           "Run the leading batch-local layers (convolutions, pooling, pointwise) in this many batch chunks, "
           "joined where that prefix ends, so a chunk's activations can stay in L2 (0 or 1: off; ResNet-50 "
           "INT8 b256 took 1.05-1.11x the time with 4-8 chunks of its first 2-3 layers, H100 A/B of session 12). "
           "Read when an execution context is created."),
    Switch("batch_tile_layers", _number(int), 0,
           "The most leading layers batch_tiles runs in chunks (0: as many as are batch-local)."),
    Switch("cudnn_build_budget_s", _number(float), 6.0,
           "Seconds one layer may spend compiling cuDNN plans before the rest are skipped.", tactics=True),
    Switch("cudnn_plan_cache", _path, None, "File of cuDNN plan choices kept between processes."),
    Switch("debug", _number(int), 0, "Diagnostics: 3 or more dumps generated CUDA sources that fail to compile."),
    Switch("report_json", _path, None, "Also write every conversion report as JSON to this file."),
)
_BY_FIELD = {s.field: s for s in SETTINGS}

Settings = dataclasses.make_dataclass(
    "Settings", [(s.field, object) for s in SETTINGS], frozen=True,
    namespace={"__doc__": "The values of every CUPYRT_* switch (see SETTINGS)."})

_lock = threading.Lock()
_current = None
_raw = None          # the CUPYRT_* strings _current was parsed from


def _snapshot(environ=None):
    env = os.environ if environ is None else environ
    return tuple(env.get(s.env) for s in SETTINGS)


def from_environ(environ=None):
    """A Settings read from ``environ`` (default os.environ); unset or empty variables
    take their defaults, malformed ones raise BuildError naming the variable."""
    env = os.environ if environ is None else environ
    values = {}
    for s in SETTINGS:
        text = env.get(s.env)
        values[s.field] = s.default_value() if text in (None, "") else s.parse(s.env, text)
    return Settings(**values)


def settings():
    """The settings of this process (parsed again only when a CUPYRT_* variable changed)."""
    global _current, _raw
    raw = _snapshot()
    current = _current
    if current is None or raw != _raw:
        with _lock:
            if _current is None or raw != _raw:
                _current, _raw = from_environ(), raw
            current = _current
    return current


def reload(environ=None):
    """Parse ``environ`` (default: the environment) again; returns the new settings."""
    global _current, _raw
    with _lock:
        _current, _raw = from_environ(environ), _snapshot(environ)
        return _current


def configure(**values):
    """Replace switches for this process (and its children, through the environment);
    returns the new settings. Unknown names raise BuildError."""
    unknown = sorted(set(values) - set(_BY_FIELD))
    if unknown:
        raise BuildError("unknown setting(s) " + ", ".join(unknown) + "; valid: " + ", ".join(_BY_FIELD))
    global _current, _raw
    with _lock:
        # every value checked first, as the environment's would be, so a refused call
        # leaves nothing behind (a bad value in os.environ would make every later
        # settings() raise); then the environment is the one record of them
        for field, value in values.items():
            if value is not None:
                _BY_FIELD[field].parse(_BY_FIELD[field].env, _text(value))
        for field, value in values.items():
            s = _BY_FIELD[field]
            if value is None or value == s.default_value():
                os.environ.pop(s.env, None)
            else:
                os.environ[s.env] = _text(value)
        _current, _raw = from_environ(), _snapshot()
        return _current


@contextlib.contextmanager
def overridden(**values):
    """``configure(**values)`` for a block; the environment and settings come back after."""
    saved = {s.env: os.environ.get(s.env) for s in SETTINGS}
    try:
        yield configure(**values)
    finally:
        for env, text in saved.items():
            if text is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = text
        reload()


def _text(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def tactic_key(current=None):
    """{variable: value} of the tactic-changing switches set away from their default
    (part of every timing-cache key)."""
    current = current or settings()
    return {s.env: getattr(current, s.field) for s in SETTINGS
            if s.tactics and getattr(current, s.field) != s.default_value()}


def markdown_table():
    """The README's table of switches."""
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for s in SETTINGS:
        default = "CPU count, at most 16" if callable(s.default) else _text(s.default) if s.default is not None else "unset"
        rows.append(f"| `{s.env}` | {default} | {s.doc}{' Joins the timing-cache key.' if s.tactics else ''} |")
    return "\n".join(rows)
