"""What the model suites (benchmarks/suites.py) time, both sides, and how: ResNet-50 and
MobileNetV2 from torchvision (and a BERT-base-sized encoder) rebuilt through cupyrt's
network API; the PyTorch peers timed beside them (torch_rows); the CUDA-event and
CUDA-graph timing loops every benchmark here uses (median_ms, graph_ms).

For each model and precision: one engine with a dynamic batch, tactics timed at the
largest batch (optimisation profile), built cold (empty timing cache) and again with
the cache. For each batch: rel L2 error against PyTorch FP32 on the same input, top-1
agreement, and the median latency of our engine (bound CuPy buffers,
execute_async_v3, CUDA graph replay where the engine chose it), CUDA events.
Weights: torchvision's architectures with their default random initialisation (the
GPU machine has no network to fetch pretrained files) and batch-norm statistics
randomised, so every folded constant is non-trivial.
"""
import copy
import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import report

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
log = logging.getLogger("benchmarks")
BERT_SEQ, BERT_HIDDEN = 128, 768
SYSTEMS = ("torch.eager", "torch.compile", "torch.compile.reduce-overhead")


def use_empty_kernel_cache():
    """A cold build compiles every kernel: a suite starts from an empty CuPy kernel cache
    (unless CUPY_CACHE_DIR names one) so the "cold" build time includes NVRTC, as on a
    fresh machine. Called by the suite runner before anything compiles."""
    os.environ.setdefault("CUPY_CACHE_DIR", tempfile.mkdtemp(prefix="cupyrt_bench_cupy_cache_"))


def median_ms(fn, lib, reps=30, warmup=5):
    """Median ms of ``fn()`` between two CUDA events on the current stream, after
    ``warmup`` calls; ``lib`` is the cupy or the torch module (whose events these are)."""
    for _ in range(warmup):
        fn()
    is_torch = lib.__name__ == "torch"
    times = []
    for _ in range(reps):
        a, b = (lib.cuda.Event(enable_timing=True) if is_torch else lib.cuda.Event() for _ in range(2))
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) if is_torch else lib.cuda.get_elapsed_time(a, b))
    return float(np.median(times))


def graph_ms(fn, lib, calls=20, reps=10):
    """Per-call ms of ``fn`` captured ``calls`` times into one CUDA graph and replayed
    ``reps`` times (median), so the Python launch path is out: CuPy through stream
    capture with a private pool, as the engine captures; torch through torch.cuda.graph."""
    if lib.__name__ == "torch":
        side = lib.cuda.Stream()
        side.wait_stream(lib.cuda.current_stream())
        with lib.cuda.stream(side):
            for _ in range(3):
                fn()
        lib.cuda.current_stream().wait_stream(side)
        graph = lib.cuda.CUDAGraph()
        with lib.cuda.graph(graph):
            for _ in range(calls):
                fn()
        return median_ms(graph.replay, lib, reps, warmup=1) / calls
    pool, stream = lib.cuda.MemoryPool(), lib.cuda.Stream(non_blocking=True)
    with lib.cuda.using_allocator(pool.malloc), stream:
        fn()
        stream.synchronize()
        stream.begin_capture()
        for _ in range(calls):
            fn()
        graph = stream.end_capture()
        graph.upload(stream)
        ms = median_ms(lambda: graph.launch(stream), lib, reps, warmup=1) / calls
    graph = None                  # the graph holds its pool's blocks until it goes
    pool.free_all_blocks()
    return ms


def torch_model(name):
    import torch
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def build(name, model, precision, max_batch, cache, disabled_passes=(), calibration_cache=None):
    """(plan, seconds, source layers) of ``model`` built through the network API with the
    timing cache at ``cache``; INT8 calibrates once into ``calibration_cache`` (default: beside
    the timing cache) and later builds read it, as a TensorRT user's rebuild does."""
    import engine as rt
    from workflows.from_torch import import_module
    b, net = import_module(model, (-1, 3, 224, 224))
    cfg = b.create_builder_config()
    for p in disabled_passes:
        cfg.disable_pass(p)
    cfg.backend = "cupy"
    cfg.timing_cache_path = cache
    if precision in ("fp16", "int8"):
        cfg.set_flag(rt.BuilderFlag.FP16)
    if precision == "int8":          # INT8 where a kernel exists, FP16 elsewhere
        cfg.set_flag(rt.BuilderFlag.INT8)
        rng = np.random.default_rng(100)
        # the calibration cache lives beside the timing cache: the cold build (both files new)
        # calibrates, the rebuild reads both, as a TensorRT user's rebuild does
        cfg.int8_calibrator = rt.EntropyCalibrator2(
            [rng.standard_normal((4, 3, 224, 224)).astype(np.float32) for _ in range(2)],
            cache_file=calibration_cache or cache + ".calibration")
    prof = b.create_optimization_profile()
    prof.set_shape("input", (1, 3, 224, 224), (max_batch, 3, 224, 224), (max_batch, 3, 224, 224))
    cfg.add_optimization_profile(prof)
    t0 = time.perf_counter()
    plan = b.build_serialized_network(net, cfg)
    seconds = time.perf_counter() - t0
    return plan, seconds, net.num_layers


FRESH_BUILD_TIMEOUT_S = 240


def fresh_process_build_s(name, precision, max_batch, cache, profile_path=None):
    """Seconds of the same build in a new Python process reading the timing cache (and,
    for INT8, the calibration cache) the cold build wrote, as a user's rebuild would:
    nothing this process built or compiled is reused except CuPy's on-disk kernel cache
    (the same machine). Interpreter and torch imports are outside the figure. None (and a
    warning) when that process fails. ``profile_path``: the child runs the build under
    cProfile and writes it there (``write_build_profile``)."""
    build = (f"models.build({name!r}, models.torch_model({name!r}), {precision!r}, "
             f"{int(max_batch)}, {cache!r})")
    if profile_path is None:
        body = f"_, s, _ = {build}\n"
    else:
        body = ("import cProfile\n"
                "prof = cProfile.Profile()\n"
                "with models.CompileTrace() as trace:\n"
                "    prof.enable()\n"
                f"    _, s, _ = {build}\n"
                "    prof.disable()\n"
                f"models.write_build_profile(prof, {profile_path!r}, compiles=trace.records)\n")
    code = ("import json\n"
            "from benchmarks import models\n"
            f"{body}"
            "print('FRESH_BUILD_S', json.dumps(s))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        # bounded well inside a 10-minute device call (a cold build took 34-68 s)
        done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                              timeout=FRESH_BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("[build] %s %s: the rebuild in a new process took over %d s", name, precision,
                    FRESH_BUILD_TIMEOUT_S)
        return None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("FRESH_BUILD_S "):
            return float(line.split()[1])
    log.warning("[build] %s %s: the rebuild in a new process failed (exit %s): %s", name, precision,
                done.returncode, done.stderr[-800:])
    return None


def engine_rows(name, model, precision, batches, reps, out_dir, profile=False):
    """Build ``model`` in ``precision`` (cold, then with the timing cache) and time it at
    each batch. Returns (build record, [row per batch]); rows carry system "cupyrt"."""
    import cupy as cp

    import engine as rt
    from engine.backends import cupy_backend
    import torch
    gpu_fp32 = copy.deepcopy(model).cuda().float()
    cache = os.path.join(tempfile.mkdtemp(), f"{name}_{precision}.cache")
    kernel_dir = os.environ.get("CUPY_CACHE_DIR", "")
    empty_kernel_cache = not (os.path.isdir(kernel_dir) and os.listdir(kernel_dir))
    if profile:                       # where the cold build's seconds go (cProfile adds a little)
        import cProfile
        prof = cProfile.Profile()
        with CompileTrace() as trace:
            plan, cold, src_layers = prof.runcall(build, name, model, precision, max(batches), cache)
        write_build_profile(prof, os.path.join(out_dir, f"build_profile_{name}_{precision}.txt"),
                            compiles=trace.records)
    else:
        plan, cold, src_layers = build(name, model, precision, max(batches), cache)
    from engine.gpu import precompile
    compiled = dict(precompile.last_report["items"])     # the cold build's compiles, per tile
    cupy_backend._caches.clear()
    _, warm, _ = build(name, model, precision, max(batches), cache)
    fresh = fresh_process_build_s(name, precision, max(batches), cache, profile_path=(
        os.path.join(out_dir, f"build_profile_fresh_{name}_{precision}.txt") if profile else None))
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    kinds = _count(info.kernel for info in engine.layers)
    record = {"model": name, "precision": precision, "cold_s": cold, "cached_s": warm,
              "fresh_process_cached_s": fresh,
              "layers_in": src_layers, "layers_out": engine.num_layers, "plan_mb": len(plan) / 2**20,
              "kernels": kinds, "phases": engine.meta.get("build_seconds"),
              "precisions": _count(engine.meta.get("precisions", {}).values()),
              "precision_moves": engine.meta.get("precision_moves", []),
              "precision_timing": precision_timing_summary(engine.meta.get("precision_timing", [])),
              "precision_timing_limits": engine.meta.get("precision_timing_limits"),
              "precompile_s": compiled, "precompile_tiles": engine.meta.get("precompile_tiles"),
              "kernel_cache_empty": empty_kernel_cache,
              "cold_build_profiled": bool(profile)}
    log.info("[build] %s %s: %d -> %d layers, cold %.1f s, cached %.1f s, kernels %s, cuDNN graphs %s",
             name, precision, src_layers, engine.num_layers, cold, warm, kinds, _cudnn_stats())
    ctx = engine.create_execution_context()
    rows = []
    for n in batches:
        xh = np.random.default_rng(n).standard_normal((n, 3, 224, 224)).astype(np.float32)
        x = cp.asarray(xh)
        with torch.no_grad():
            ref = gpu_fp32(torch.as_tensor(xh, device="cuda")).float().cpu().numpy()
        out_shape = engine.infer_shapes({"input": x.shape})[id(engine.network.get_tensor("output"))]
        y = cp.full(out_shape, cp.nan, cp.float32)
        ctx.set_tensor_address("input", x)
        ctx.set_tensor_address("output", y)
        stream = cp.cuda.get_current_stream()
        ctx.execute_async_v3(stream)
        stream.synchronize()
        got = cp.asnumpy(y).reshape(ref.shape)
        err = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        top1 = float((got.argmax(1) == ref.argmax(1)).mean())
        ms = median_ms(lambda: ctx.execute_async_v3(stream), cp, reps=reps)
        graphs = ctx.__dict__.get("_cuda_graphs", {}).values()
        rows.append({"system": "cupyrt", "model": name, "precision": precision, "batch": n, "ms": ms,
                     "img_s": n / ms * 1e3, "rel_l2_vs_torch_fp32": err, "top1_agreement": top1,
                     "cuda_graph": any(not isinstance(v, str) for v in graphs)})
        log.info("[run] %s %s b%d: cupyrt %.3f ms, rel L2 %.2e, top-1 %.3f", name, precision, n, ms, err, top1)
    record["graph_notes"] = list(engine.backend.graph_notes)
    record["tactics"] = {"build": tactic_table_of(engine.meta.get("kernels", {}), engine.meta.get("tactic_ms", {})),
                         "last_run": tactic_table(engine.backend)}
    record["cudnn_layers"] = sum(1 for v in engine.backend.selected.values() if report.is_cudnn(v))
    record["cudnn_graphs"] = _cudnn_stats()
    if profile:
        record["layer_ms"], record["profile_launch_gaps"] = {}, {}
        for n in batches:
            x = cp.asarray(np.random.default_rng(0).standard_normal((n, 3, 224, 224)).astype(np.float32))
            record["layer_ms"][n], record["profile_launch_gaps"][n] = write_layer_profile(
                engine, "input", x, os.path.join(out_dir, f"profile_{name}_{precision}_b{n}.txt"))
    return record, rows


def write_layer_profile(engine, in_name, x, path, runs=3):
    """Per layer on the device (CUDA events, each run issued behind a device hold: no
    launch gaps timed), the mean of ``runs`` eager runs on ``x``, written to ``path``: the
    slowest first, then in layer order with the plan's kernel and the next fastest
    candidates the build timed for it (the plan's ``tactic_ms``: how close other kernel
    families came). Returns ({layer: ms}, launch_gaps)."""
    import engine as rt
    ctx = engine.create_execution_context()
    ctx.execute({in_name: x})                 # tactics of a new batch chosen before timing
    ctx.profiler = rt.Profiler()
    for _ in range(runs):
        ctx.execute({in_name: x})
    ms = {k: v / runs for k, v in ctx.profiler.times.items()}
    with open(path, "w") as f:
        if ctx.launch_gaps:
            f.write("# the device hold expired (a layer synchronised the host): later times "
                    "include launch gaps\n")
        f.write(ctx.profiler.table())
        f.write(f"\n\nin layer order (ms a run, mean of {runs}), with the plan's kernel "
                f"(chosen at the build batch); sum {sum(ms.values()):.3f} ms\n")
        timed = engine.meta.get("tactic_ms", {})
        f.writelines(f"{info.name[:40]:40s} {ms.get(info.name, 0.0):10.4f}  {info.kernel}"
                     f"{runners_up(timed.get(info.name, {}), info.kernel)}\n" for info in engine.layers)
    return ms, ctx.launch_gaps


def runners_up(timed, chosen, n=3):
    """``  (build: chosen 0.1 ms; then a 0.2, b 0.3)``: the build's timing of ``chosen``
    and the ``n`` next fastest candidates that ran (``timed``: {tactic: ms or None}); "" when
    nothing was timed."""
    ran = sorted((v, k) for k, v in timed.items() if v is not None and k != chosen)
    if chosen not in timed and not ran:
        return ""
    mine = timed.get(chosen)
    head = f"chosen {mine:.4f} ms" if mine is not None else "chosen untimed"
    rest = ", ".join(f"{k} {v:.4f}" for v, k in ran[:n])
    return f"  (build: {head}" + (f"; then {rest})" if rest else ")")


def kernel_rows(events, calls):
    """[(kernel, launches a call, us a call)], the most time first, from profiler
    averages (``torch.profiler``'s ``key_averages()``: ``key``, ``count`` and the device
    time in us, ``self_device_time_total``; events with none, the host's, are left out)."""
    rows = []
    for e in events:
        us = getattr(e, "self_device_time_total", None)
        if us is None:                                   # torch before 2.4 named it after CUDA
            us = getattr(e, "self_cuda_time_total", 0)
        if us > 0:
            rows.append((e.key, e.count / calls, us / calls))
    return sorted(rows, key=lambda r: -r[2])


def write_kernel_trace(fn, path, calls=10):
    """Every GPU kernel ``fn()`` runs (``calls`` calls, CUDA-graph replays included: CUPTI
    sees the kernels of every library in the process, CuPy's and cuDNN's too) by name,
    with its launches and device time a call, under ``torch.profiler``; written to
    ``path``. Returns kernel_rows."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    rows = kernel_rows(prof.key_averages(), calls)
    total = sum(r[2] for r in rows)
    if not rows:
        log.warning("kernel trace %s: the profiler recorded no GPU kernel (CUPTI unavailable?)", path)
    with open(path, "w") as f:
        f.write(f"{'us a call':>10s} {'launches':>8s} {'%':>6s}  kernel (mean of {calls} calls; "
                f"sum {total:.1f} us)\n")
        f.writelines(f"{us:10.1f} {n:8.2f} {100 * us / (total or 1):6.1f}  {name}\n"
                     for name, n, us in rows)
    return rows


class CompileTrace:
    """Every NVRTC run of this process while active (``with CompileTrace() as trace``):
    ``trace.records``, [(seconds, kernel, where)], where is the innermost frame of ours
    and the engine frame that led to it. A cold build's own compiles are what precompile
    did not cover: each one runs serially in the builder."""

    def __enter__(self):
        import cupy.cuda.compiler as compiler
        self.records, self._cls = [], compiler._NVRTCProgram
        self._orig = orig = self._cls.compile
        records = self.records

        def traced(prog, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return orig(prog, *args, **kwargs)
            finally:
                records.append((time.perf_counter() - t0, _kernel_label(prog), _our_frames()))
        self._cls.compile = traced
        return self

    def __exit__(self, *exc):
        self._cls.compile = self._orig
        return False


def _kernel_label(prog):
    names = getattr(prog, "name_expressions", None)
    if names:
        return str(names[0])[:90]
    import re
    m = re.search(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)", getattr(prog, "src", "") or "")
    return m.group(1)[:90] if m else "?"


def _our_frames():
    import traceback
    ours = [f for f in traceback.extract_stack()[:-2]
            if "/site-packages/" not in f.filename and os.sep + "benchmarks" + os.sep not in f.filename
            and (os.sep + "engine" + os.sep in f.filename or os.sep + "kernels" + os.sep in f.filename)]
    if not ours:
        return "?"
    short = [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in ours]
    engine = [s for s, f in zip(short, ours) if os.sep + "engine" + os.sep in f.filename]
    outer = engine[-1] if engine else short[0]
    return short[-1] if outer == short[-1] else f"{short[-1]} < {outer}"


def write_build_profile(prof, path, lines=60, compiles=None):
    """A build's cProfile as text: the functions by cumulative time, then by own time;
    then ``compiles`` (``CompileTrace.records``), the NVRTC runs of the build's own
    process, slowest first, and their seconds by where they came from."""
    import io
    import pstats
    with open(path, "w") as f:
        for key in ("cumulative", "tottime"):
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats(key).print_stats(lines)
            f.write(f"## by {key}\n{text.getvalue()}\n")
        if compiles is not None:
            f.write(f"## NVRTC runs in the build's process: {len(compiles)}, "
                    f"{sum(r[0] for r in compiles):.2f} s\n")
            by_site = {}
            for sec, _, where in compiles:
                n, tot = by_site.get(where, (0, 0.0))
                by_site[where] = (n + 1, tot + sec)
            for where, (n, tot) in sorted(by_site.items(), key=lambda kv: -kv[1][1]):
                f.write(f"{tot:8.2f} s {n:4d}x  {where}\n")
            f.write("\n")
            for sec, kernel, where in sorted(compiles, key=lambda r: -r[0]):
                f.write(f"{sec:7.3f}  {kernel}  [{where}]\n")
    log.info("build profile: %s", path)


def torch_input(n, precision):
    """The PyTorch peer's input for batch ``n``: the same values as ours, channels_last,
    half for FP16 and INT8 rows (INT8 is compared with PyTorch's FP16, as the issue asks)."""
    import torch
    xh = np.random.default_rng(n).standard_normal((n, 3, 224, 224)).astype(np.float32)
    tx = torch.as_tensor(xh, device="cuda").to(memory_format=torch.channels_last)
    return tx.half() if precision in ("fp16", "int8") else tx


def torch_peer(name, precision):
    import torch
    m = torch_model(name).cuda().to(memory_format=torch.channels_last)
    return m.half() if precision in ("fp16", "int8") else m


def bert_rows(precision, batches, reps):
    """BERT-base-sized encoder (12 layers, hidden 768, 12 heads, seq 128) from
    torch.nn.TransformerEncoder weights. Returns (build record, rows, torch module,
    input maker) so the suite can time the same module in PyTorch."""
    import cupy as cp
    import torch

    import engine as rt
    from workflows.transformer import import_encoder
    seq, hidden = BERT_SEQ, BERT_HIDDEN
    enc = bert_encoder()
    ref_model = copy.deepcopy(enc).cuda()
    b, net = import_encoder(enc, seq, hidden)
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    if precision == "fp16":
        cfg.set_flag(rt.BuilderFlag.FP16)
    t0 = time.perf_counter()
    plan = b.build_serialized_network(net, cfg)
    record = {"model": "bert_base_encoder", "precision": precision,
              "cold_s": time.perf_counter() - t0, "layers_in": net.num_layers}
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    rows = []
    for n in batches:
        xh = np.random.default_rng(n).standard_normal((n, seq, hidden)).astype(np.float32)
        x = cp.asarray(xh)
        y = cp.full((n, seq, hidden), cp.nan, cp.float32)
        ctx.set_tensor_address("tokens", x)
        ctx.set_tensor_address("encoded", y)
        stream = cp.cuda.get_current_stream()
        ctx.execute_async_v3(stream)
        stream.synchronize()
        with torch.no_grad():
            ref = ref_model(torch.as_tensor(xh, device="cuda")).cpu().numpy()
        err = float(np.linalg.norm(cp.asnumpy(y) - ref) / np.linalg.norm(ref))
        record[f"tactics_b{n}"] = tactic_table(engine.backend)
        ms = median_ms(lambda: ctx.execute_async_v3(stream), cp, reps=reps)
        graphs = ctx.__dict__.get("_cuda_graphs", {}).values()
        rows.append({"system": "cupyrt", "model": "bert_base_encoder", "precision": precision, "batch": n,
                     "ms": ms, "img_s": n / ms * 1e3, "rel_l2_vs_torch_fp32": err,
                     "cuda_graph": any(not isinstance(v, str) for v in graphs)})
    return (record, rows) + bert_peer(precision, copy.deepcopy(enc))


def bert_peer(precision, module=None):
    """The bert suite's PyTorch peer: (the encoder on the GPU, half unless FP32; n -> its input,
    the same values as ours). ``module``: the encoder (default: ``bert_encoder()``)."""
    import torch
    module = (module if module is not None else bert_encoder()).cuda()
    if precision != "fp32":
        module = module.half()

    def make_input(n):
        xh = np.random.default_rng(n).standard_normal((n, BERT_SEQ, BERT_HIDDEN)).astype(np.float32)
        tx = torch.as_tensor(xh, device="cuda")
        return tx if precision == "fp32" else tx.half()
    return module, make_input


def tactic_table(backend):
    """{layer: {"chosen": tactic, "ms": {tactic: ms}}} of the backend's last selections,
    and a log line per chosen tactic: how many layers, and their summed timed ms."""
    return tactic_table_of(backend.selected, backend.timings)


def tactic_table_of(selected, timings):
    """tactic_table over a {layer: tactic} choice and {layer: {tactic: ms}} timings (the
    backend's, or the ones a plan records from its build)."""
    table = {name: {"chosen": tactic, "ms": timings.get(name) or {}} for name, tactic in selected.items()}
    by_tactic = {}
    for row in table.values():
        ms = row["ms"].get(row["chosen"]) or 0.0
        n, total = by_tactic.get(row["chosen"], (0, 0.0))
        by_tactic[row["chosen"]] = (n + 1, total + ms)
    for tactic, (n, total) in sorted(by_tactic.items(), key=lambda kv: -kv[1][1]):
        log.info("[tactics] %-40s %4d layers %9.3f ms timed", tactic, n, total)
    return table


def precision_timing_summary(measured, closest=5):
    """How near precision by timing came to moving layers, per direction ("INT8->HALF"): how
    many layers it timed in the other precision, how many it did not (their alternative
    could not win on its bytes alone, or failed), how many moved, and the ``closest`` ratios
    (alternative + boundary casts) / current, lowest first (a layer moves under 0.9), and the
    wall seconds spent measuring the current and the alternative sides (``current_s``,
    ``alternative_s``; plans since session 18). ``measured``: the plan's ``precision_timing``
    (``Move.as_dict``s)."""
    out = {}
    for m in measured:
        d = out.setdefault(f"{m['from']}->{m['to']}", {"timed": 0, "not_timed": 0, "moved": 0, "closest": [],
                                                       "current_s": 0.0, "alternative_s": 0.0})
        d["current_s"] += m.get("s") or 0.0
        d["alternative_s"] += m.get("alt_s") or 0.0
        if m.get("alt_ms") is None or not m.get("ms"):
            d["not_timed"] += 1
            continue
        d["timed"] += 1
        d["moved"] += bool(m.get("moved"))
        d["closest"].append([m["layer"], round((m["alt_ms"] + (m.get("boundary_ms") or 0.0)) / m["ms"], 3)])
    for d in out.values():
        d["closest"] = sorted(d["closest"], key=lambda c: c[1])[:closest]
        d["current_s"], d["alternative_s"] = round(d["current_s"], 3), round(d["alternative_s"], 3)
    return out


def _cudnn_stats():
    """How many cuDNN graphs this process built, and the seconds their plans took to build."""
    try:
        from kernels.gpu import cudnn_graphs
    except ImportError:
        return None
    return cudnn_graphs.stats()


def _count(values):
    out = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def bert_encoder():
    """The BERT-base-sized torch encoder of the bert suite (12 x 768, 12 heads, FFN 3072,
    GELU), seeded: the same weights on every call."""
    import torch
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(BERT_HIDDEN, 12, 3072, dropout=0.0, activation="gelu",
                                             batch_first=True)
    return torch.nn.TransformerEncoder(layer, 12, enable_nested_tensor=False).eval()


def _bert_build(precision, cache, disabled_passes=()):
    """The bert suite's encoder built for the A/B: (plan, seconds)."""
    import engine as rt
    from workflows.transformer import import_encoder
    b, net = import_encoder(bert_encoder(), BERT_SEQ, BERT_HIDDEN)
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    cfg.timing_cache_path = cache
    if precision == "fp16":
        cfg.set_flag(rt.BuilderFlag.FP16)
    for p in disabled_passes:
        cfg.disable_pass(p)
    t0 = time.perf_counter()
    plan = b.build_serialized_network(net, cfg)
    return plan, time.perf_counter() - t0


# per model: (input name, output name, one input's shape after the batch)
AB_IO = {"resnet50": ("input", "output", (3, 224, 224)), "mobilenet_v2": ("input", "output", (3, 224, 224)),
         "bert": ("tokens", "encoded", (BERT_SEQ, BERT_HIDDEN))}


def ab_rows(name, precision, batches, reps, setting, rounds=5, disabled_passes=(), more=(), peer=False,
            layerwise=0, profile_dir=None, trace_dir=None):
    """Same-process A/B (``python -m benchmarks ab``): engine A is built and run with the
    settings as they are, engine B with ``setting`` ({field: value}) applied through
    engine.settings.overridden and the builder passes ``disabled_passes`` off, each with
    its own empty timing cache; ``more``: further settings, engines C, D, ... (one A for
    all: each comparison in one process and one device call). Per batch, the engines are
    timed in alternating rounds (A B C A B C ...; ``reps`` calls a round) and the median of
    the round medians compared; each output is checked against A's and against the model in
    FP32 (PyTorch on the GPU: rel L2, and top-1 agreement for the classifiers), so a faster
    variant's accuracy comes from the same run. INT8: every engine reads the ranges A
    calibrated (so the engines differ in kernels and tactics only; B's, C's cold builds then
    leave calibration out). ``peer``: PyTorch eager and torch.compile are
    timed too, in the same process (``torch_rows``), under ``peers`` in each row.
    ``layerwise`` (a batch size, 0: off): every engine's layer outputs on that many images
    compared with A's tensor by tensor (``layerwise_rows``), under ``layerwise`` in the
    first row: where a variant parts from A. Returns one dict per batch (C, D, ... under
    ``variants``). ``profile_dir``: every engine's per-layer device times at every batch
    (``write_layer_profile``) as ``profile_ab_<label>_<model>_<precision>_b<N>.txt`` there.
    ``trace_dir``: every engine's GPU kernels at every batch, replayed as timed
    (``write_kernel_trace``), as ``trace_ab_<label>_<model>_<precision>_b<N>.txt`` there."""
    import cupy as cp

    import engine as rt
    from engine.settings import overridden
    in_name, out_name, item_shape = AB_IO[name]
    model = torch_model(name) if name != "bert" else None
    reference = fp32_reference(name, model)
    runs = {}
    # one calibration for every engine built from the same graph (A's, read by B, C, ...):
    # INT8 engines then differ in kernels and tactics only, not in ranges calibrated apart. An
    # engine with a pass left out has other tensors (calibration runs on the optimised
    # network): it calibrates itself, or its layers missing from A's file would stay FP16
    shared = os.path.join(tempfile.mkdtemp(), "ab.calibration")
    engines = [("A", {}, ()), ("B", setting, tuple(disabled_passes))]
    engines += [(chr(ord("C") + i), values, ()) for i, values in enumerate(more)]
    for label, values, off in engines:
        with overridden(**values):
            cache = os.path.join(tempfile.mkdtemp(), f"ab_{label}.cache")
            if model is None:
                plan, cold = _bert_build(precision, cache, off)
            else:
                plan, cold, _ = build(name, model, precision, max(batches), cache, off, None if off else shared)
            engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
            kinds = _count(info.kernel for info in engine.layers)
            log.info("[ab] %s %s: built in %.1f s%s, kernels %s", label, values or "as is", cold,
                     " (A's INT8 calibration read, not redone)" if precision == "int8" and label != "A" and not off
                     else "", kinds)
            runs[label] = {"values": values, "ctx": engine.create_execution_context(), "cold_s": cold,
                           "kernels": kinds, "layers": engine.num_layers,
                           "precisions": _count(engine.meta.get("precisions", {}).values())}
    rows = []
    stream = cp.cuda.get_current_stream()
    for n in batches:
        x = cp.asarray(np.random.default_rng(n).standard_normal((n,) + item_shape).astype(np.float32))
        outs, times = {}, {label: [] for label in runs}
        for label, r in runs.items():
            ctx = r["ctx"]
            shape = ctx.engine.infer_shapes({in_name: x.shape})[id(ctx.engine.network.get_tensor(out_name))]
            r["y"] = cp.full(shape, cp.nan, cp.float32)
            ctx.set_tensor_address(in_name, x)
            ctx.set_tensor_address(out_name, r["y"])
            with overridden(**r["values"]):      # prepared (kernels compiled) in its own settings
                for _ in range(2):               # the second call captures the CUDA graph
                    ctx.execute_async_v3(stream)
            stream.synchronize()
            outs[label] = cp.asnumpy(r["y"])
            for note in ctx.engine.backend.graph_notes:
                if "auxiliary stream" in note and f"({n}," in note:
                    log.info("[ab] %s b%d: %s", label, n, note)
        for _ in range(rounds):
            for label, r in runs.items():
                with overridden(**r["values"]):
                    times[label].append(median_ms(lambda c=r["ctx"]: c.execute_async_v3(stream), cp, reps=reps))
        for label, r in runs.items() if profile_dir or trace_dir else ():
            tag = f"ab_{label}_{name}_{precision}_b{n}.txt"
            with overridden(**r["values"]):
                if profile_dir:
                    write_layer_profile(r["ctx"].engine, in_name, x, os.path.join(profile_dir, "profile_" + tag))
                if trace_dir:
                    write_kernel_trace(lambda c=r["ctx"]: c.execute_async_v3(stream),
                                       os.path.join(trace_dir, "trace_" + tag))
        ms = {k: float(np.median(v)) for k, v in times.items()}
        err = {k: float(np.linalg.norm(outs[k] - outs["A"]) / np.linalg.norm(outs["A"])) for k in runs}
        ref = reference(cp.asnumpy(x))
        acc = {k: accuracy_against(outs[k], ref) for k in runs}
        a, b = ms["A"], ms["B"]
        row = {"model": name, "precision": precision, "batch": n, "A_ms": a, "B_ms": b,
               "B_over_A": b / a, "rel_l2_B_vs_A": err["B"], "vs_fp32": acc, "rounds_ms": times,
               "setting": setting, "disabled_passes": list(disabled_passes),
               "layers": {k: r["layers"] for k, r in runs.items()},
               "kernels": {k: r["kernels"] for k, r in runs.items()},
               "precisions": {k: r["precisions"] for k, r in runs.items()},
               "cold_s": {k: r["cold_s"] for k, r in runs.items()}}
        if more:
            row["variants"] = {k: {"setting": runs[k]["values"], "ms": ms[k], "over_A": ms[k] / a,
                                   "rel_l2_vs_A": err[k]} for k in runs if k not in ("A", "B")}
        rows.append(row)
        log.info("[ab] %s %s b%d: %s", name, precision, n, ", ".join(
            f"{k} {ms[k]:.3f} ms ({ms[k] / a:.3f}x A, rel L2 {err[k]:.2e} vs A, {acc[k]['rel_l2']:.2e} vs FP32)"
            for k in runs))
    if layerwise and rows:
        xs = np.random.default_rng(0).standard_normal((layerwise,) + item_shape).astype(np.float32)
        rows[0]["layerwise"] = layerwise_rows({k: (r["ctx"].engine, r["values"]) for k, r in runs.items()},
                                              in_name, xs)
    if peer:
        runs.clear()                       # the engines' memory goes before PyTorch's compiles
        peers = ab_peer_rows(name, precision, batches, reps)
        for row in rows:
            row["peers"] = {p["system"]: p.get("ms") for p in peers if p["batch"] == row["batch"]}
    return rows


def layerwise_rows(engines, in_name, x, worst=8):
    """{label: {"first_over_1e-3", "worst": [rows], "kernels"}} for every engine but A
    (``engines``: {label: (engine, settings)}): its layer outputs on ``x``
    (ExecutionContext.layer_outputs, float64, int8 dequantized), run under its own settings
    (a switched-off tactic is no candidate), against A's, tensor by tensor
    (engine.metrics.compare_tensors), in layer order: the first tensor whose rel L2 passes
    1e-3 (an infinite error, a NaN, included), the ``worst`` largest, and the kernels that
    ran, per layer, where they differ from A's."""
    from engine.metrics import compare_tensors
    from engine.settings import overridden
    outs, ran = {}, {}
    for k, (e, values) in engines.items():
        with overridden(**values):
            outs[k] = e.create_execution_context().layer_outputs({in_name: x})
        ran[k] = dict(getattr(e.backend, "selected", {}))     # the NumPy backend has one kernel a layer
    table = {}
    for label, values in outs.items():
        if label == "A":
            continue
        rows = compare_tensors(values, outs["A"])
        first = next((r for r in rows if r["rel_l2"] > 1e-3), None)
        table[label] = {"compared": len(rows), "first_over_1e-3": first,
                        "worst": sorted(rows, key=lambda r: -r["rel_l2"])[:worst],
                        "kernels": {n: (ran["A"].get(n), t) for n, t in ran[label].items() if ran["A"].get(n) != t}}
        log.info("[ab] layerwise %s vs A: %d tensors, first over 1e-3: %s", label, len(rows),
                 first and f"{first['tensor']} ({first['rel_l2']:.2e})")
    return table


def fp32_reference(name, model):
    """x (NumPy, float32) -> the model's output in FP32, computed by PyTorch on the GPU
    (TF32 off): the yardstick every A/B engine's accuracy is measured against."""
    import torch
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    module = (copy.deepcopy(model) if model is not None else bert_encoder()).cuda().float().eval()

    def run(xh):
        with torch.no_grad():
            return module(torch.as_tensor(xh, device="cuda")).float().cpu().numpy()
    return run


def accuracy_against(got, ref):
    """{"rel_l2": ||got - ref|| / ||ref||, "top1_agreement": share of rows whose arg-max
    agrees (2-D outputs, the classifiers; None otherwise)}."""
    from engine.metrics import rel_l2
    got = np.asarray(got, np.float64).reshape(np.shape(ref))
    ref = np.asarray(ref, np.float64)
    if not np.isfinite(got).all() or not np.linalg.norm(ref):
        return {"rel_l2": float("inf"), "top1_agreement": None if ref.ndim != 2 else 0.0}
    top1 = float((got.argmax(1) == ref.argmax(1)).mean()) if ref.ndim == 2 else None
    return {"rel_l2": rel_l2(got, ref), "top1_agreement": top1}


def ab_peer_rows(name, precision, batches, reps):
    """PyTorch's rows for an A/B run with ``--peer`` (INT8 engines against PyTorch FP16)."""
    if name == "bert":
        return torch_rows(*bert_peer(precision), "bert_base_encoder", precision, batches, reps)
    return torch_rows(torch_peer(name, precision), lambda n: torch_input(n, precision), name, precision,
                      batches, reps)


# ---- the PyTorch peers ---------------------------------------------------------------------
# Every suite times them beside cupyrt, in the same process on the same card: eager,
# torch.compile (default mode) and, at batch 1, torch.compile(mode="reduce-overhead") (CUDA
# graphs: the fair peer of our graph replay at small batch). Each compiled peer is a fresh
# ``torch.compile(module, dynamic=False)`` per batch, so a shape is compiled for itself (as a
# user serving one batch size would), warmed up until compilation (and, for reduce-overhead,
# graph recording) is done, then timed like ours. A peer that fails to compile gives a row
# with ``error`` and no time, never a crash.
def torch_rows(module, make_input, model, precision, batches, reps, compile_modes=True):
    """Rows for ``module`` (already on the GPU, eval) at each batch: eager, compiled
    default, and compiled reduce-overhead at batch 1. ``make_input(n)`` -> tensor."""
    import cupy as cp         # events on the default stream both share: timed as ours are
    import torch
    torch.backends.cudnn.benchmark = True
    # FP32 against FP32: PyTorch would otherwise run FP32 convolutions on TF32 tensor cores
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for n in batches:
        x = make_input(n)
        modes = [("torch.eager", None)]
        if compile_modes:
            modes.append(("torch.compile", "default"))
            if n == 1:
                modes.append(("torch.compile.reduce-overhead", "reduce-overhead"))
        for system, mode in modes:
            row = {"system": system, "model": model, "precision": precision, "batch": n}
            try:
                fn, compile_s = module, 0.0
                if mode is not None:
                    t0 = time.perf_counter()
                    fn = torch.compile(module, mode=mode, dynamic=False)
                    with torch.no_grad():
                        for _ in range(3):         # compile, then (reduce-overhead) record graphs
                            fn(x)
                    torch.cuda.synchronize()
                    compile_s = time.perf_counter() - t0
                with torch.no_grad():
                    ms = median_ms(lambda: fn(x), cp, reps=reps)
                row.update(ms=ms, img_s=n / ms * 1e3)
                if mode is not None:
                    row["compile_s"] = round(compile_s, 1)
            except Exception as e:          # noqa: BLE001  (a peer that cannot run is reported)
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            rows.append(row)
            log.info("[peer] %s %s b%d %s: %s", model, precision, n, system,
                     f"{row['ms']:.3f} ms" if "ms" in row else row["error"])
    return rows
