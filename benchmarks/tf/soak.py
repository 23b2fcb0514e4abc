"""Soak: one converted graph run many times in one tf.compat.v1.Session; host memory
(RSS) sampled as it runs must stay flat after warm-up, and every answer must match
TensorFlow's (issue 11, "Concurrency and soak").

The graph: conv + bias + relu, a cumsum left to TensorFlow, conv + bias + tanh: two
engine nodes with TensorFlow between them, dynamic engines (is_dynamic_op) over
batches 1, 2 and 4 (three cached engines per node). Each run feeds one of a fixed
pool of inputs and compares the output with the original graph's (rel. L2 <= 1e-5).
RSS comes from psutil when installed, else /proc/self/statm (Linux). ``--threads``
shares the session between threads; runs are counted over all of them.

    python benchmarks/tf/soak.py --runs 10000 [--threads 8] [--backend numpy|cupy]
                                 [--sample-every 100] [--json out.json]

``--backend cupy`` (a GPU host) also samples device memory: CuPy's pool (used and
held bytes) and the driver's free memory (cudaMemGetInfo).

``--engine-only`` needs no TensorFlow (the GPU machine has none): the same two
convolutions built with the engine's network API (one engine, dynamic batch 1-4, FP16
on the GPU) run through one execution context, each answer compared with the NumPy
backend's answer for that input (rel. L2 <= 1e-2 in FP16); the same RSS and device
samples. This is the GPU half of the soak:

    python benchmarks/tf/soak.py --engine-only --backend cupy --runs 100000
"""
import argparse
import json
import logging
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from engine.metrics import rel_l2  # noqa: E402  (after the repo root joins the path)

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
            logging.info("%d runs, RSS %.1f MB", done, samples[-1][1] / 2 ** 20)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sample-every", type=int, default=100)
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="where the engines run (CUPYRT_BACKEND); cupy needs a CUDA device")
    p.add_argument("--engine-only", action="store_true",
                   help="no TensorFlow: the same convolutions as one engine, run by the engine API")
    p.add_argument("--json", help="write the figures (with every RSS sample) here")
    args = p.parse_args(argv)
    if args.runs < 1 or args.threads < 1 or args.sample_every < 1:
        p.error("--runs, --threads and --sample-every must be >= 1")
    os.environ["CUPYRT_BACKEND"] = args.backend
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = (engine_soak if args.engine_only else soak)(args.runs, args.threads, args.sample_every, backend=args.backend,
                  log_every=max(args.runs // 10, 1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    brief = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(brief, indent=1))
    return 0 if result["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
