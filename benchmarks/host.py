"""Host-side checks: a converted graph (TensorFlow where the machine has it), and entropy
calibration's thresholds:

    python benchmarks/host.py soak --runs 10000 [--threads 8] [--backend numpy|cupy]
                                   [--sample-every 100] [--json out.json]
    python benchmarks/host.py soak --engine-only --backend cupy --runs 100000
    unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE CUPYRT_BACKEND
    python benchmarks/host.py resnet50 [--saved-model] [--batches 1,8] [--reps 5] [--json out.json]
    python benchmarks/host.py calibration [--tensors 120] [--json out.json]

``soak`` (issue 11, "Concurrency and soak"): one converted graph run many times in one
tf.compat.v1.Session; host memory (RSS) sampled as it runs must stay flat after warm-up,
and every answer must match TensorFlow's. The graph: conv + bias + relu, a cumsum left to
TensorFlow, conv + bias + tanh: two engine nodes with TensorFlow between them, dynamic
engines (is_dynamic_op) over batches 1, 2 and 4 (three cached engines per node). Each run
feeds one of a fixed pool of inputs and compares the output with the original graph's
(rel. L2 <= 1e-5). RSS comes from psutil when installed, else /proc/self/statm (Linux).
``--threads`` shares the session between threads; runs are counted over all of them.
``--backend cupy`` (a GPU host) also samples device memory: CuPy's pool (used and held
bytes) and the driver's free memory (cudaMemGetInfo). ``--engine-only`` needs no
TensorFlow (the GPU machine has none): the same two convolutions built with the engine's
network API (one engine, dynamic batch 1-4, FP16 on the GPU) run through one execution
context, each answer compared with the NumPy backend's answer for that input (rel. L2 <=
1e-2 in FP16); the same RSS and device samples. This is the GPU half of the soak.

``resnet50`` (issue 10, points 6 and 8): a converted model on a host without a CUDA
device is as fast as TensorFlow and no larger than 1.5x on disk. Keras ResNet50
(weights=None, fixed seed, 128x128x3) is frozen, converted with default settings
(TrtGraphConverter: FP32 and FP16, static engines) and saved; the original and the
converted graph are then timed in one process, each in its own tf.compat.v1.Session, runs
interleaved, median of --reps runs per batch size. With no CUDA device and no
CUPYRT_BACKEND, engine nodes run their TensorFlow segments (inlined at import): the
converted graph must run at >= 0.9x TF. With --saved-model the same holds for the TF2
path: the model is exported with ``model.export``, converted with TrtGraphConverterV2
(FP32 and FP16, each without and with build() at every batch size given), saved, and the
directory sizes compared with the original's; the original SavedModel is then timed
against the converted FP32 one loaded through ``load_saved_model`` (engine nodes inlined
as their TF ops) and through plain ``tf.saved_model.load`` after ``import
tf_integration`` (engine nodes called through EagerPyFunc, running their TF segment),
runs interleaved, median of --reps.

``calibration``: entropy calibration's thresholds on the host (kernels/quantize.py
``kl_threshold``) over --tensors histograms of 2,048 bins (100k-value samples: |normal|
and scaled ReLU'd normal, three values of each multiplied by 8: outliers past an empty
stretch), timed against the definition (two distributions built and compared per
candidate threshold); reports both times and how many thresholds agree.

``compiles`` (issue 14, the cold build): what a cold build of the suites' ResNet-50 or
MobileNetV2 (torchvision's layer shapes, built here through the network API with random
weights; INT8 calibrated on the NumPy backend as the int8 suite does) compiles for an
H100's arch with the cuDNN frontend present (``--no-cudnn``: without), and with ``--time``
each of those NVRTC runs timed on this machine's CPU, one after another
(kernels/gpu/compile.py ``offline``; no GPU needed). The list is precompile's: the tiles
the build's own selection times (``own``) and those compiled in the background for
precision by timing (``background``), and the cuDNN graphs it queues on its plan workers
(``cudnn_graphs``: each compiles the plans of its ``plan_window``, in the workers, which this
cannot time without a GPU). ``--set name=value`` applies a setting
(engine/settings.py) first, so the cost of a switch is read on a CPU before a device run:

    python benchmarks/host.py compiles --model resnet50 --precision int8 --time
    python benchmarks/host.py compiles --precision int8 --time --set tiles_where_specialised=0

``precision-timing`` (issue 14, the cold build): which layers a build of the suites'
ResNet-50 or MobileNetV2 would time in the next precision down for precision by timing (an
INT8 build: FP16; ``--precision fp16``: FP32), replayed on the CPU from the times a device
build recorded (a suite file's ``builds[0].tactics.build``: each layer's chosen tactic; a
layer the file lacks counts as timed): how many the floor of bytes (and, for FP32, of
FLOPs) alone leaves, how many with the device's FP16 tensor ceiling too (INT8 builds), and
how many with the casts at each layer's edges and the pairs (engine/precision_timing.py
``worth_timing``), the last being what the build times. The device's memory system and
ceiling are arguments (an H100 SXM's by default):

    python benchmarks/host.py precision-timing --from benchmarks/results/logs/FILE.json \
        --bandwidth 4.8e12 --half-flops 1.07e15
"""
import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.tf_path import folder_bytes  # noqa: E402  (after the repo root joins the path)
from engine.metrics import rel_l2  # noqa: E402

log = logging.getLogger("benchmarks.host")


# ---- soak ----------------------------------------------------------------------------------
BATCHES = (1, 2, 4)
POOL = 12                    # distinct inputs, cycled
SHAPE = (8, 8, 4)            # NHWC after the batch


def rss_bytes():
    """Resident set size of this process in bytes."""
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def device_bytes():
    """(pool used, pool held, driver free) in bytes on the current device."""
    import cupy as cp
    pool = cp.get_default_memory_pool()
    free, _ = cp.cuda.runtime.memGetInfo()
    return pool.used_bytes(), pool.total_bytes(), free


def make_model(seed=0):
    """(original GraphDef, converted GraphDef, converter, output names); the seed
    picks the weights, so two models never share engine-node statistics."""
    import tensorflow as tf

    from tf_integration import TrtGraphConverter
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((3, 3, 4, 6)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((3, 3, 6, 5)) * 0.3).astype(np.float32)
    b1, b2 = (rng.standard_normal(6).astype(np.float32), rng.standard_normal(5).astype(np.float32))
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None,) + SHAPE, name="x")
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w1, 1, "SAME"), b1))
        y = tf.math.cumsum(y, axis=1, name="left_to_tf")
        y = tf.nn.tanh(tf.nn.bias_add(tf.nn.conv2d(y, w2, 1, "SAME"), b2))
        out = tf.identity(y, name="out")
    gd = g.as_graph_def()
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out"], minimum_segment_size=1,
                             is_dynamic_op=True, maximum_cached_engines=len(BATCHES),
                             max_batch_size=max(BATCHES))
    return gd, conv.convert(), conv, [out.name]


def input_pool(seed=1, size=POOL):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((BATCHES[i % len(BATCHES)],) + SHAPE).astype(np.float32)
            for i in range(size)]


def run_graph(graph_def, fetches, feeds_list, converted):
    """Outputs of ``graph_def`` for each feed of ``feeds_list``, single-threaded."""
    import tensorflow as tf

    from tf_integration import import_graph_def
    g = tf.Graph()
    with g.as_default():
        (import_graph_def if converted else tf.compat.v1.import_graph_def)(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return [sess.run(fetches, {"x:0": x})[0] for x in feeds_list]


def soak(runs, threads=1, sample_every=100, seed=0, backend="numpy", log_every=0):
    """Run the converted model ``runs`` times; returns a dict of figures (see main)."""
    import tensorflow as tf

    from tf_integration import import_graph_def
    from tf_integration.engine_node import runtime_stats
    gd, converted, conv, fetches = make_model(seed)
    pool = input_pool(seed + 1)
    refs = run_graph(gd, fetches, pool, converted=False)
    g = tf.Graph()
    with g.as_default():
        import_graph_def(converted, name="")
    sess = tf.compat.v1.Session(graph=g)
    out = g.get_tensor_by_name(fetches[0])
    seconds, samples, device, worst, mismatches = drive(
        lambda k: sess.run(out, {"x:0": pool[k]}), refs, 1e-5, runs, threads, sample_every,
        backend, log_every)
    sess.close()
    stats = runtime_stats(converted)
    return summarise(runs, threads, backend, seconds, samples, device, worst, mismatches, {
        "engine_runs": sum(s["engine_runs"] for s in stats.values()),
        "native_runs": sum(s["native_runs"] for s in stats.values()),
        "engines_built": sum(s["engines_built"] for s in stats.values()),
        "fallbacks": {n: s["fallbacks"] for n, s in stats.items() if s["fallbacks"]}})


def engine_model(seed=0):
    """An engine network: conv 3x3 + bias + relu, conv 3x3 + bias + tanh, NCHW,
    dynamic batch 1-4 (the engine-only stand-in for make_model's two engine nodes)."""
    import engine as rt
    rng = np.random.default_rng(seed)
    builder = rt.Builder()
    net = builder.create_network()
    c = SHAPE[2]
    t = net.add_input("x", rt.float32, (-1, c, SHAPE[0], SHAPE[1]))
    for act in (rt.ActivationType.RELU, rt.ActivationType.TANH):
        w = (rng.standard_normal((8, t.shape[1], 3, 3)) * 0.2).astype(np.float32)
        b = (rng.standard_normal(8) * 0.1).astype(np.float32)
        conv = net.add_convolution_nd(t, 8, (3, 3), kernel=w, bias=b)
        conv.padding_nd = (1, 1)
        t = net.add_activation(conv.get_output(0), act).get_output(0)
    t.name = "y"
    net.mark_output(t)
    return builder, net


def engine_soak(runs, threads=1, sample_every=100, seed=0, backend="numpy", log_every=0):
    """The engine-only soak (see the module text); returns figures like soak()."""
    import engine as rt
    from engine.settings import configure
    pool = [np.moveaxis(a, -1, 1).copy() for a in input_pool(seed + 1)]
    plans = {}
    for name in ("numpy", backend):
        configure(backend=name)
        builder, net = engine_model(seed)
        config = builder.create_builder_config()
        if name == "cupy":
            config.set_flag(rt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape("x", (1,) + pool[0].shape[1:], (BATCHES[-1],) + pool[0].shape[1:],
                          (BATCHES[-1],) + pool[0].shape[1:])
        config.add_optimization_profile(profile)
        plans[name] = rt.Runtime().deserialize_cuda_engine(builder.build_serialized_network(net, config))
    configure(backend="numpy")
    ref_ctx = plans["numpy"].create_execution_context()
    refs = [np.asarray(ref_ctx.execute({"x": a})["y"], np.float32) for a in pool]
    configure(backend=backend)
    tol = 1e-2 if backend == "cupy" else 1e-5
    contexts = threading.local()          # one execution context per thread
    engine = plans[backend]

    def answer(k):
        ctx = getattr(contexts, "ctx", None) or engine.create_execution_context()
        contexts.ctx = ctx
        got = ctx.execute({"x": pool[k]})["y"]
        return np.asarray(got.get() if hasattr(got, "get") else got, np.float32)
    seconds, samples, device, worst, mismatches = drive(
        answer, refs, tol, runs, threads, sample_every, backend, log_every)
    return summarise(runs, threads, backend, seconds, samples, device, worst, mismatches,
                     {"mode": "engine-only", "tolerance": tol})


def drive(answer, refs, tol, runs, threads, sample_every, backend, log_every):
    """Run ``answer(k)`` (the output for pool input k) ``runs`` times over ``threads``
    threads, inputs cycled, each compared with refs[k]; RSS (and device memory on cupy)
    sampled every ``sample_every`` runs. Returns (seconds, samples, device samples, worst
    rel. L2, answers off by more than ``tol``)."""
    worst, mismatches, done = 0.0, 0, 0
    lock = threading.Lock()

    def work(first, count):
        nonlocal worst, mismatches
        for i in range(first, first + count):
            k = i % len(refs)
            err = rel_l2(answer(k), refs[k])
            with lock:
                worst = max(worst, err)
                mismatches += err > tol
    samples, device = [], []
    t0 = time.perf_counter()
    while done < runs:
        chunk = min(sample_every, runs - done)
        if threads == 1:
            work(done, chunk)
        else:
            share = [chunk // threads + (j < chunk % threads) for j in range(threads)]
            starts = np.cumsum([done] + share[:-1])
            ts = [threading.Thread(target=work, args=(int(s), n)) for s, n in zip(starts, share)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        done += chunk
        samples.append((done, rss_bytes()))
        if backend == "cupy":
            device.append((done,) + device_bytes())
        if log_every and done % log_every < chunk:
            log.info("%d runs, RSS %.1f MB", done, samples[-1][1] / 2 ** 20)
    return time.perf_counter() - t0, samples, device, worst, mismatches


def summarise(runs, threads, backend, seconds, samples, device, worst, mismatches, extra):
    """The figures both soaks report (RSS after the first 20% of runs, device pool)."""
    after = [r for n, r in samples if n > runs // 5] or [samples[-1][1]]
    at_20 = min(samples, key=lambda s: abs(s[0] - runs // 5))[1]
    result = {
        "runs": runs, "threads": threads, "backend": backend, "seconds": round(seconds, 2),
        "runs_per_s": round(runs / seconds, 1),
        "rss_mb_first_sample": round(samples[0][1] / 2 ** 20, 2),
        "rss_mb_at_20pct": round(at_20 / 2 ** 20, 2),
        "rss_mb_end": round(samples[-1][1] / 2 ** 20, 2),
        "growth_mb_last_80pct": round((samples[-1][1] - at_20) / 2 ** 20, 3),
        "spread_mb_last_80pct": round((max(after) - min(after)) / 2 ** 20, 3),
        "max_rel_l2": worst, "mismatches": int(mismatches)} | extra
    result["samples"] = [(n, round(r / 2 ** 20, 2)) for n, r in samples]
    if device:
        used = [d[1] for d in device if d[0] > runs // 5]
        result["device_pool_used_mb_end"] = round(device[-1][1] / 2 ** 20, 2)
        result["device_pool_used_growth_mb_last_80pct"] = round(
            (max(used) - min(used)) / 2 ** 20, 3)
        result["device_free_mb_end"] = round(device[-1][3] / 2 ** 20, 1)
        free = [d[3] for d in device if d[0] > runs // 5]
        result["device_free_spread_mb_last_80pct"] = round((max(free) - min(free)) / 2 ** 20, 1)
    return result


# ---- a converted ResNet50 on a host without CUDA (TensorFlow) --------------------------
def model_graph(size):
    import keras

    from tf_integration import freeze_keras_model
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    return freeze_keras_model(model)


def session(graph_def, converted):
    import tensorflow as tf

    from tf_integration import import_graph_def
    g = tf.Graph()
    with g.as_default():
        (import_graph_def if converted else tf.compat.v1.import_graph_def)(graph_def, name="")
    return tf.compat.v1.Session(graph=g)


def interleaved_ms(fns, reps):
    """Median run time (ms) of each callable (a session run, a SavedModel signature call),
    runs interleaved (ABBA...) so that the load of a shared host falls on all alike."""
    for fn in fns:
        fn()                                    # warm-up: graph optimisation, allocation
    times = [[] for _ in fns]
    for i in range(reps):
        order = list(enumerate(fns))
        for k, fn in (order if i % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            fn()
            times[k].append(1e3 * (time.perf_counter() - t0))
    return [statistics.median(t) for t in times]


def saved_model_main(args, batches):
    """``resnet50 --saved-model`` (module docstring): sizes and speeds, as a dict."""
    import keras
    import tensorflow as tf

    from tf_integration import TrtGraphConverterV2, load_saved_model
    from tf_integration.engine_node import runtime_mode

    tmp = tempfile.mkdtemp(prefix="host_resnet50_")
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
    src = os.path.join(tmp, "src")
    model.export(src, verbose=False)
    del model
    result = {"model": f"ResNet50 weights=None {args.size}x{args.size}, model.export",
              "tensorflow": tf.__version__, "mode": runtime_mode(),
              "original_dir_bytes": folder_bytes(src), "sizes": {}, "speed": {}}
    rng = np.random.default_rng(0)
    inputs = {b: rng.uniform(-1, 1, (b, args.size, args.size, 3)).astype(np.float32)
              for b in batches}
    for precision in ("FP32", "FP16"):
        for build in (False, True):
            t0 = time.perf_counter()
            conv = TrtGraphConverterV2(input_saved_model_dir=src, precision_mode=precision,
                                       maximum_cached_engines=max(1, len(batches)))
            conv.convert()
            if build:
                conv.build(lambda: iter([inputs[b] for b in batches]))
            out = conv.save(os.path.join(tmp, f"{precision}{'_built' if build else ''}"))
            size = folder_bytes(out)
            label = f"{precision}" + (f" built b{'+'.join(map(str, batches))}" if build else "")
            report = conv.report["serving_default"]
            result["sizes"][label] = {"dir_bytes": size,
                                      "ratio": size / result["original_dir_bytes"],
                                      "engines": len(report["engines"]),
                                      "seconds": round(time.perf_counter() - t0, 1)}
            log.warning("%s: %s", label, result["sizes"][label])
    key = "serving_default"
    ref = tf.saved_model.load(src).signatures[key]
    conv_dir = os.path.join(tmp, "FP32")
    inlined = load_saved_model(conv_dir).signatures[key]
    plain = tf.saved_model.load(conv_dir).signatures[key]
    for batch in batches:
        x = tf.constant(inputs[batch])
        (name,) = ref.structured_input_signature[1]
        fns = [lambda f=f: f(**{name: x}) for f in (ref, inlined, plain)]
        t, c_inl, c_plain = interleaved_ms(fns, args.reps)
        want = tf.nest.flatten(fns[0]())[0].numpy()
        errs = [float(np.linalg.norm(tf.nest.flatten(fn())[0].numpy() - want)
                      / np.linalg.norm(want)) for fn in fns[1:]]
        result["speed"][batch] = {
            "tf_ms": t, "load_saved_model_ms": c_inl, "tf_saved_model_load_ms": c_plain,
            "speed_vs_tf": {"load_saved_model": t / c_inl, "tf_saved_model_load": t / c_plain},
            "rel_l2": {"load_saved_model": errs[0], "tf_saved_model_load": errs[1]}}
        log.warning("batch %d: %s", batch, result["speed"][batch])
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return result

def frozen_graph_main(args, batches):
    """``resnet50`` (module docstring): the frozen graph's sizes and speeds, as a dict."""
    import tensorflow as tf

    from tf_integration import TrtGraphConverter
    from tf_integration.engine_node import runtime_mode
    gd, ins, outs = model_graph(args.size)
    result = {"model": f"ResNet50 weights=None {args.size}x{args.size}",
              "tensorflow": tf.__version__, "mode": runtime_mode(),
              "original_pb_bytes": len(gd.SerializeToString()), "sizes": {}, "speed": {}}
    converted = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("FP32", "FP16"):
            conv = TrtGraphConverter(input_graph_def=gd, precision_mode=precision)
            converted[precision] = conv.convert()
            path = conv.save(os.path.join(tmp, f"{precision}.pb"))
            size = os.path.getsize(path)
            result["sizes"][precision] = {"pb_bytes": size,
                                          "ratio": size / result["original_pb_bytes"],
                                          "engines": len(conv.report["engines"])}
    rng = np.random.default_rng(0)
    ref_sess, conv_sess = session(gd, False), session(converted["FP32"], True)
    for batch in batches:
        x = rng.uniform(-1, 1, (batch, args.size, args.size, 3)).astype(np.float32)
        feeds = {ins[0]: x}
        t, c = interleaved_ms([lambda s=s: s.run(outs[0], feeds) for s in (ref_sess, conv_sess)], args.reps)
        ref, got = ref_sess.run(outs[0], feeds), conv_sess.run(outs[0], feeds)
        err = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        result["speed"][batch] = {"tf_ms": t, "converted_ms": c, "speed_vs_tf": t / c,
                                  "rel_l2": err}
    return result


def calibration_main(tensors, seed=1):
    """Seconds of ``kl_threshold`` over ``tensors`` histograms, against the per-candidate
    definition, and how many thresholds the two agree on (the others: exact ties, which
    the prefix-sum form breaks toward the first candidate)."""
    from kernels import quantize as Q
    rng = np.random.default_rng(seed)
    hists = []
    for k in range(tensors):
        x = (np.maximum(rng.standard_normal(100_000) * rng.uniform(0.3, 3), 0) if k % 2
             else np.abs(rng.standard_normal(100_000)))
        x[rng.integers(0, x.size, 3)] *= 8
        hists.append(Q.abs_histogram(x, float(x.max()), drop_zeros=True))
    t0 = time.perf_counter()
    ref = [Q.kl_threshold(h, 1.0, divergences=Q.kl_divergences_by_definition) for h in hists]
    t1 = time.perf_counter()
    got = [Q.kl_threshold(h, 1.0) for h in hists]
    t2 = time.perf_counter()
    return {"tensors": tensors, "bins": Q.NUM_BINS, "definition_s": round(t1 - t0, 3),
            "kl_threshold_s": round(t2 - t1, 3), "thresholds_equal": sum(a == b for a, b in zip(ref, got))}


# ---- compiles ------------------------------------------------------------------------------
def _conv_bn(net, rng, h, k, ks, stride=1, groups=1, act=None):
    """conv (no bias) -> batch norm as a per-channel scale -> ``act`` ("relu", "relu6")."""
    import engine as rt
    c = h.shape[1]
    w = rng.standard_normal((k, c // groups, ks, ks)) * np.sqrt(2.0 / (c // groups * ks * ks))
    conv = net.add_convolution_nd(h, k, (ks, ks), kernel=w.astype(np.float32), bias=None)
    conv.stride_nd, conv.padding_nd, conv.num_groups = (stride, stride), (ks // 2, ks // 2), groups
    scale = (rng.random(k) * 0.5 + 0.75).astype(np.float32)
    shift = (rng.standard_normal(k) * 0.1).astype(np.float32)
    y = net.add_scale(conv.get_output(0), rt.ScaleMode.CHANNEL, shift, scale, None).get_output(0)
    if act == "relu":
        y = net.add_activation(y, rt.ActivationType.RELU).get_output(0)
    elif act == "relu6":
        clip = net.add_activation(y, rt.ActivationType.CLIP)
        clip.alpha, clip.beta = 0.0, 6.0
        y = clip.get_output(0)
    return y


def _classifier(net, rng, h):
    import engine as rt
    g = net.add_reduce(h, rt.ReduceOperation.AVG, 0b1100, True).get_output(0)
    c = g.shape[1]
    fc = net.add_fully_connected(g, 1000, (rng.standard_normal((1000, c)) * 0.02).astype(np.float32),
                                 np.zeros(1000, np.float32)).get_output(0)
    fc.name = "output"
    net.mark_output(fc)


def resnet50_network(net, x, rng):
    """torchvision's ResNet-50 (v1.5: the stride on the 3x3), batch norms as scales."""
    import engine as rt
    h = _conv_bn(net, rng, x, 64, 7, 2, act="relu")
    pool = net.add_pooling_nd(h, rt.PoolingType.MAX, (3, 3))
    pool.stride_nd, pool.padding_nd = (2, 2), (1, 1)
    h = pool.get_output(0)
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            y = _conv_bn(net, rng, h, width, 1, act="relu")
            y = _conv_bn(net, rng, y, width, 3, s, act="relu")
            y = _conv_bn(net, rng, y, width * 4, 1)
            skip = _conv_bn(net, rng, h, width * 4, 1, s) if i == 0 else h
            h = net.add_elementwise(y, skip, rt.ElementWiseOperation.SUM).get_output(0)
            h = net.add_activation(h, rt.ActivationType.RELU).get_output(0)
    _classifier(net, rng, h)


def mobilenet_v2_network(net, x, rng):
    """torchvision's MobileNetV2 (width 1.0): inverted residuals, ReLU6, batch norms as scales."""
    import engine as rt
    h, c = _conv_bn(net, rng, x, 32, 3, 2, act="relu6"), 32
    for t, out, n, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                              (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            s = stride if i == 0 else 1
            y = _conv_bn(net, rng, h, c * t, 1, act="relu6") if t != 1 else h
            y = _conv_bn(net, rng, y, c * t, 3, s, groups=c * t, act="relu6")
            y = _conv_bn(net, rng, y, out, 1)
            h = net.add_elementwise(y, h, rt.ElementWiseOperation.SUM).get_output(0) if s == 1 and c == out else y
            c = out
    _classifier(net, rng, _conv_bn(net, rng, h, 1280, 1, act="relu6"))


COMPILE_MODELS = {"resnet50": resnet50_network, "mobilenet_v2": mobilenet_v2_network}


def compile_list(model, precision, batch, arch="sm_90a", cudnn=True, built=None):
    """(own, background): precompile's items ([family, tile, options]) for a cold build of
    ``model`` in ``precision`` ("fp16", "int8") at batch ``batch`` on a device of ``arch``
    (with the cuDNN frontend or not): the tiles its own selection times, then those compiled
    in the background for precision by timing (not already in the first list). ``built``:
    ``_listing_engine``'s (engine, config) for these arguments, when the caller has it."""
    from engine import builder as B
    from engine.gpu import precompile
    from engine.precision_timing import enabled as precision_timing_enabled
    from kernels.gpu import compile as kernel_compile
    e, cfg = built or _listing_engine(model, precision, batch)
    shapes = {"input": (batch, 3, 224, 224)}
    with kernel_compile.offline(arch, cudnn):
        own = precompile.network_items(e.network, e.meta, shapes)
        later = B._refine_alternatives(e.network, e.meta, cfg) if precision_timing_enabled(cfg) else {}
        extra = precompile.network_items(e.network, e.meta, shapes, later, scheduled=False) if later else []
    seen = {precompile._item_key(i) for i in own}
    return own, [i for i in extra if precompile._item_key(i) not in seen]


def cudnn_graphs_listed(model, precision, batch, built=None):
    """{"int8": graphs, "fp16": graphs}: the distinct cuDNN graphs a cold build of ``model``
    queues on its plan workers, and how many plans they compile at most (each graph its
    ``cudnn_graphs.plan_window``: ``cudnn_max_plans`` plans, an int8-output INT8 graph one fewer):
    an INT8 build its
    INT8 convolutions' (engine/gpu/cudnn_int8_tactics.py ``int8_specs``) and, once precision
    by timing asks about FP16, every convolution's FP16 graph, as an FP16 build does
    (engine/gpu/cudnn_tactics.py ``PREFETCH_SPECS``). ``built`` as ``compile_list``'s."""
    from engine.gpu import cudnn_int8_tactics, cudnn_tactics
    from engine.settings import settings
    from engine.types import BuilderFlag
    from kernels.gpu import compile as kernel_compile
    from kernels.gpu import cudnn_graphs
    e, cfg = built or _listing_engine(model, precision, batch)
    net = e.network
    with kernel_compile.offline("sm_90a", True):
        fp16 = {spec for layer in net._layers for make in cudnn_tactics.PREFETCH_SPECS
                for spec in (make(layer, batch),) if spec is not None}
        int8 = set(cudnn_int8_tactics.int8_specs(net, batch, cfg.get_flag(BuilderFlag.FP16))) \
            if precision == "int8" else set()
    most = settings().cudnn_max_plans
    return {"int8": len(int8), "fp16": len(fp16),
            "plans_at_most": sum(len(cudnn_graphs.plan_window(s, most)) for s in int8 | fp16)}


def _listing_engine(model, precision, batch):
    """(engine built on the NumPy backend, its config): ``model``'s optimised network with
    the precisions (and, for INT8, the calibrated ranges) a GPU build of it would have."""
    import engine as rt
    rng = np.random.default_rng(0)
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("input", rt.float32, (-1, 3, 224, 224))
    COMPILE_MODELS[model](net, x, rng)
    cfg = b.create_builder_config()
    cfg.backend = "numpy"          # the engine's precisions and layers, no device
    cfg.set_flag(rt.BuilderFlag.FP16)
    if precision == "int8":        # as the int8 suite: INT8 where a kernel exists, FP16 elsewhere
        cfg.set_flag(rt.BuilderFlag.INT8)
        data = np.random.default_rng(100)
        cfg.int8_calibrator = rt.EntropyCalibrator2(
            [data.standard_normal((4, 3, 224, 224)).astype(np.float32) for _ in range(2)],
            cache_file=os.path.join(tempfile.mkdtemp(), "calibration"))
    prof = b.create_optimization_profile()
    prof.set_shape("input", (1, 3, 224, 224), (batch, 3, 224, 224), (batch, 3, 224, 224))
    cfg.add_optimization_profile(prof)
    return b.build_engine(net, cfg), cfg


def time_compiles(items, arch="sm_90a", cudnn=True):
    """Each item's NVRTC runs, compiled one after another on this CPU: a list of
    {family, tile, options, seconds, runs}."""
    from engine.gpu import precompile
    from kernels.gpu import compile as kernel_compile
    out = []
    with kernel_compile.offline(arch, cudnn) as off:
        for item in items:
            first = len(off.runs)
            precompile._build(item)
            runs = off.runs[first:]
            out.append({"family": item[0], "tile": item[1], "options": item[2],
                        "seconds": round(sum(r[0] for r in runs), 3), "runs": len(runs)})
    return out


def compiles_main(args):
    from engine.settings import overridden, settings, tactic_key
    values = dict(v.split("=", 1) for v in args.set)
    with overridden(**values):
        built = _listing_engine(args.model, args.precision, args.batch)    # built (and calibrated) once
        own, background = compile_list(args.model, args.precision, args.batch, args.arch, not args.no_cudnn, built)
        switches = tactic_key()
        rows = []
        for where, items in (("own", own), ("background", background)):
            timed = time_compiles(items, args.arch, not args.no_cudnn) if args.time else \
                [{"family": f, "tile": t, "options": o} for f, t, o in items]
            rows += [dict(r, list=where) for r in timed]
        graphs = None
        if not args.no_cudnn and settings().cudnn:
            graphs = cudnn_graphs_listed(args.model, args.precision, args.batch, built)
    result = {"model": args.model, "precision": args.precision, "batch": args.batch, "arch": args.arch,
              "cudnn": not args.no_cudnn, "settings": values, "switches": switches,
              "tiles": {"own": len(own), "background": len(background)}, "cudnn_graphs": graphs, "items": rows}
    if args.time:
        fams = {}
        for r in rows:
            n, runs, sec = fams.get((r["list"], r["family"]), (0, 0, 0.0))
            fams[(r["list"], r["family"])] = (n + 1, runs + r["runs"], sec + r["seconds"])
        result["families"] = [{"list": k[0], "family": k[1], "tiles": v[0], "nvrtc_runs": v[1],
                               "seconds": round(v[2], 1)} for k, v in sorted(fams.items())]
        result["seconds"] = {w: round(sum(r["seconds"] for r in rows if r["list"] == w), 1)
                             for w in ("own", "background")}
        result["nvrtc_runs"] = sum(r["runs"] for r in rows)
    return result


UNKNOWN_MS = 1e9       # the replayed time of a layer the file lacks: slow enough to be timed


class _Replayed:
    """Plays CupyBackend.measure from a suite file's per-layer times: the current
    precision's recorded time (``default_ms`` where the file lacks the layer), 1 ms for an
    alternative (only counted here)."""

    def __init__(self, ms, precisions, default_ms):
        self.ms, self.precisions, self.default_ms, self.missing = ms, precisions, default_ms, []

    def measure(self, layer, inputs, precision, out_dtypes, bound_ms=math.inf):
        if precision != self.precisions[layer.name]:
            return "replayed", 1.0
        if layer.name not in self.ms:
            self.missing.append(layer.name)
        return "replayed", self.ms.get(layer.name, self.default_ms)


def precision_timing_main(args):
    """{counts, layers}: which alternatives a build's precision by timing times (module docstring)."""
    from engine import precision_timing as pt
    from engine.types import DataType
    with open(args.source) as f:
        doc = json.load(f)
    picks = doc["builds"][0]["tactics"]["build"]
    ms = {name: t["ms"][t["chosen"]] for name, t in picks.items()
          if t.get("chosen") in t.get("ms", {}) and t["ms"][t["chosen"]] is not None}
    e, cfg = _listing_engine(args.model, args.precision, args.batch)
    precisions = {name: DataType[p] for name, p in e.meta["precisions"].items()}
    alts = pt.alternatives(e.network, precisions, cfg)
    e.backend = _Replayed(ms, precisions, UNKNOWN_MS)     # a layer the file lacks: timed
    memory = (args.bandwidth, args.l2_mib * 2**20)
    # the bounds with and without the FP16 ceiling (as before session 17: bytes, FP32's FLOPs)
    bounds, uncapped = [], []
    for half_flops, out in ((args.half_flops, bounds), (None, uncapped)):
        pt.measure(e, {"input": (args.batch, 3, 224, 224)}, alts, xp=np, timer=lambda fn, reps: 0.0,
                   memory=memory, half_flops=half_flops, bounds=out)
    kept = pt.worth_timing(e.network, bounds)
    traffic = {b.layer for b in uncapped if b.alternative_ms < pt.MARGIN * b.current_ms}
    ceiling = {b.layer for b in bounds if b.alternative_ms < pt.MARGIN * b.current_ms}
    rows = [{"layer": b.layer, "current_ms": None if b.current_ms == UNKNOWN_MS else round(b.current_ms, 4),
             "alternative_floor_ms": round(b.alternative_ms, 4), "edges_floor_ms": round(b.boundary_ms, 4),
             "timed": b.layer in kept} for b in bounds]
    return {"source": os.path.basename(args.source), "card": doc.get("card"), "model": args.model,
            "batch": args.batch, "memory": {"bytes_per_s": args.bandwidth, "l2_mib": args.l2_mib},
            "half_flops": args.half_flops, "alternatives": len(alts),
            "missing_from_file": sorted(set(e.backend.missing)),
            "precision": args.precision,
            "timed": {"traffic floor": len(traffic), "+ FP16 ceiling": len(ceiling),
                      "+ edge casts and pairs (the build)": len(kept)},
            "layers": rows}


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="check", required=True)
    s = sub.add_parser("soak", help="one converted graph run many times: memory flat, answers right")
    s.add_argument("--runs", type=int, default=10000)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--sample-every", type=int, default=100)
    s.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="where the engines run (CUPYRT_BACKEND); cupy needs a CUDA device")
    s.add_argument("--engine-only", action="store_true",
                   help="no TensorFlow: the same convolutions as one engine, run by the engine API")
    s.add_argument("--json", help="write the figures (with every RSS sample) here")
    r = sub.add_parser("resnet50", help="Keras ResNet50 converted, on a host without CUDA: size and speed vs TF")
    r.add_argument("--size", type=int, default=128)
    r.add_argument("--batches", default="1,8")
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--json", help="write the figures here")
    r.add_argument("--saved-model", action="store_true",
                   help="the TF2 SavedModel path (module docstring) instead of frozen graphs")
    c = sub.add_parser("calibration", help="entropy thresholds on the host: time against the definition")
    c.add_argument("--tensors", type=int, default=120)
    c.add_argument("--json", help="write the figures here")
    k = sub.add_parser("compiles", help="what a cold build compiles for an H100, timed on this CPU (no GPU)")
    k.add_argument("--model", choices=sorted(COMPILE_MODELS), default="resnet50")
    k.add_argument("--precision", choices=("fp16", "int8"), default="int8")
    k.add_argument("--batch", type=int, default=256)
    k.add_argument("--arch", default="sm_90a", help="the device's arch (sm_90a: H100 / H200)")
    k.add_argument("--no-cudnn", action="store_true", help="a device without the cuDNN frontend")
    k.add_argument("--time", action="store_true", help="compile each tile with NVRTC here, one after another")
    k.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting of engine/settings.py for this listing (repeatable)")
    k.add_argument("--json", help="write the figures (every tile) here")
    t = sub.add_parser("precision-timing", help="which alternatives precision by timing times, from a device file")
    t.add_argument("--from", dest="source", required=True, help="a suite file (benchmarks/results/...json)")
    t.add_argument("--model", choices=sorted(COMPILE_MODELS), default="resnet50")
    t.add_argument("--precision", choices=("int8", "fp16"), default="int8",
                   help="the build the file holds (int8: FP16 alternatives; fp16: FP32 ones)")
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--bandwidth", type=float, default=3.35e12, help="peak DRAM bytes/s (H100 SXM: 3.35e12)")
    t.add_argument("--l2-mib", type=float, default=50.0, help="L2 MiB (H100 / H200: 50)")
    t.add_argument("--half-flops", type=float, default=132 * 1.98e9 * 4096,
                   help="FP16 tensor FLOP/s ceiling (engine/gpu/device.py half_tensor_flops; H100 SXM: 1.07e15)")
    t.add_argument("--json", help="write the figures (every layer) here")
    return p, s


def main(argv=None):
    p, soak_parser = parser()
    args = p.parse_args(argv)
    if args.check == "soak":
        if args.runs < 1 or args.threads < 1 or args.sample_every < 1:
            soak_parser.error("--runs, --threads and --sample-every must be >= 1")
        os.environ["CUPYRT_BACKEND"] = args.backend
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        result = (engine_soak if args.engine_only else soak)(
            args.runs, args.threads, args.sample_every, backend=args.backend, log_every=max(args.runs // 10, 1))
        shown = {k: v for k, v in result.items() if k != "samples"}
    elif args.check == "calibration":
        result = shown = calibration_main(args.tensors)
    elif args.check == "precision-timing":
        if args.batch < 1 or min(args.bandwidth, args.half_flops) <= 0 or args.l2_mib < 0:
            p.error("--batch, --bandwidth and --half-flops must be positive, --l2-mib >= 0")
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        result = precision_timing_main(args)
        shown = {k: v for k, v in result.items() if k != "layers"}
    elif args.check == "compiles":
        bad = [v for v in args.set if "=" not in v]
        if bad or args.batch < 1:
            p.error(f"--set takes NAME=VALUE (got {bad}) and --batch must be >= 1" if bad else "--batch must be >= 1")
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        result = compiles_main(args)
        shown = {k: v for k, v in result.items() if k != "items"}
    else:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        batches = [int(b) for b in args.batches.split(",")]
        result = shown = (saved_model_main if args.saved_model else frozen_graph_main)(args, batches)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(shown, indent=1))
    return 0 if result.get("mismatches", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
